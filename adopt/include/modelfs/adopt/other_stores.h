// Importing the model caches of other programs that already name their files by content: the
// Hugging Face hub cache and Ollama's models folder (`modelfs import --hf-cache` / `--ollama`).
// Their SHA-256 names are trusted, so no big file is read: on the store's filesystem each blob
// is hard-linked into the store (Store::commit_trusted_tree) and `modelfs verify` checks it
// later. The caches keep working: nothing there is renamed, written or deleted; the only change
// is that linked files become read-only (0444), which neither huggingface_hub nor Ollama minds
// (both replace files by rename and delete them by unlink, never write them in place).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "modelfs/store/progress.h"
#include "modelfs/store/store.h"

namespace modelfs::adopt {

// $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub (huggingface_hub's own order).
std::filesystem::path default_hf_cache();
// $OLLAMA_MODELS, else ~/.ollama/models when it exists, else /usr/share/ollama/.ollama/models
// (the Linux service's folder) when that exists, else ~/.ollama/models.
std::filesystem::path default_ollama_models();

// One model version found in the cache (an HF snapshot, an Ollama tag) and what became of it.
struct OtherStoreItem {
    std::string source;  // "models--org--name/snapshots/<commit>", "registry/ns/model:tag"
    std::string model_key;
    std::string label;
    enum class Outcome {
        added,        // a new model
        new_version,  // a new version of a model the store had
        unchanged,    // the store already had it (a second import)
        skipped,      // incomplete in the cache (a missing blob): see detail; nothing imported
        failed,       // refused or an I/O error: see detail; nothing imported
    } outcome = Outcome::added;
    bool current = false;  // it is the model's current version now
    std::size_t files = 0;
    std::size_t linked = 0, copied = 0, hashed = 0, unverified = 0;
    std::uint64_t size = 0;       // bytes of the version
    std::uint64_t new_bytes = 0;  // bytes of the blobs it added to the store
    std::string detail;           // why skipped or failed; labels given to refs
};

struct OtherStoreReport {
    std::filesystem::path dir;
    std::vector<OtherStoreItem> items;
    std::vector<std::string> notes;  // things left out on purpose (datasets, odd files)
    bool ok() const;                 // nothing failed (skipped versions are only reported)
    bool nothing_new() const;        // every item unchanged: a repeated import
};

std::string_view to_string(OtherStoreItem::Outcome o);

// Hugging Face hub cache: every models--ORG--NAME folder becomes the tree model "ORG/NAME"
// (category diffusers when the snapshot has model_index.json, else other), each snapshot a
// version labelled by its short commit, the one refs/main names made current. Blob names of 64
// hex digits are LFS SHA-256 (trusted); 40 hex digits are git SHA-1 of small files (hashed).
// datasets--*, spaces--*, .no_exist/ and *.incomplete are left out. Throws StoreError
// (not_found) when `dir` is not a folder.
OtherStoreReport import_hf_cache(Store& store, const std::filesystem::path& dir,
                                 Progress* progress = nullptr);

// Ollama models folder: every manifest manifests/REGISTRY/NAMESPACE/MODEL/TAG becomes a version
// (label TAG; `latest` current, else the newest manifest) of the tree model "ollama/MODEL"
// ("ollama/NAMESPACE/MODEL" outside the library namespace, with the registry in front when it
// is not registry.ollama.ai). Files are named after their layer's media type: model.gguf,
// projector.gguf, adapter.gguf, template, system, params.json, messages.json, license,
// config.json. A tag that moved to other content gets the label TAG-<short content id>.
OtherStoreReport import_ollama(Store& store, const std::filesystem::path& dir,
                               Progress* progress = nullptr);

}  // namespace modelfs::adopt
