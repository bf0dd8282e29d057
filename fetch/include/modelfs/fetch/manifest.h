// Manifests: a pack of remote models registered in one go (`modelfs add --manifest FILE.json`).
// The format is documented in README.md ("Lazy fetch"). No network here.
#pragma once

#include <cstddef>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "modelfs/store/category.h"
#include "modelfs/store/store.h"

namespace modelfs::fetch {

// One model of a manifest, with what the manifest left for `add` to find out.
struct ManifestEntry {
    RemoteModel model;
    std::size_t index = 0;         // position in "models", for messages
    std::string as;                // the entry's "as", for messages
    std::vector<bool> size_given;  // per file of model.files: the manifest stated its size
    bool keep = false;             // "keep": never evicted by the cache quota
};

// Parses manifest text. Throws StoreError bad_input naming `source`, the entry (index and name)
// and the field at fault: "packs/loras.json: models[3] (lora/foo): 'sha256': ...". URLs are
// checked for syntax (check_source_url).
std::vector<ManifestEntry> parse_manifest(std::string_view json_text,
                                          const std::filesystem::path& source);
// Reads and parses one file; a file that cannot be read is StoreError not_found / io.
std::vector<ManifestEntry> load_manifest(const std::filesystem::path& file);

// What `--as` and a manifest's "as" say: "lora/sdxl/foo@v2", "lora/foo.safetensors".
struct ModelRef {
    Category category = Category::other;
    std::string name;                  // without a model file extension
    std::string ext;                   // ".safetensors" when the name ended with one, else ""
    std::optional<std::string> label;  // after '@'
};
// Throws StoreError bad_input: unknown category (listing them), bad name, empty label.
ModelRef parse_model_ref(std::string_view as);

// The extension of the file a URL names (".safetensors"), from the last part of its path; "" when
// it has none (a Civitai download URL, say).
std::string extension_of_url(std::string_view url);

}  // namespace modelfs::fetch
