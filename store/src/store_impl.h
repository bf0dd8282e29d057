// Private parts of Store shared by its source files.
#pragma once

#include <sys/file.h>

#include <filesystem>
#include <string>

#include "modelfs/store/errors.h"
#include "modelfs/store/store.h"
#include "modelfs/store/unique_fd.h"

namespace modelfs {

struct Store::Impl {
    std::filesystem::path root;
    BlobStore blobs;
    Catalog catalog;

    Impl(std::filesystem::path r, Catalog c) : root(r), blobs(r), catalog(std::move(c)) {}
};

// The store-wide lock: shared while blobs are being added and catalogued, exclusive for gc, so
// gc never removes a blob that an import has placed but not yet catalogued.
class StoreLock {
  public:
    enum Mode { shared = LOCK_SH, exclusive = LOCK_EX };
    StoreLock(const std::filesystem::path& root, Mode mode);

  private:
    UniqueFd fd_;
};

std::int64_t unix_now();

// Throws StoreError (bad_input) for a model name no view could show: empty, NUL, empty or
// '.'/'..' components, components over 200 bytes, '@' (reserved for version labels).
void check_model_name(const std::string& name);

// Move journals: a file in staging/ recording where a moved file came from, so that a crash in
// the middle of a move puts the user's file back (see store/FORMAT.md).
inline constexpr const char* kJournalSuffix = ".journal";
inline constexpr const char* kMovedSuffix = ".move";
void recover_moves(Store::Impl& s);

// Before bytes known to hash to `h` are deduplicated against the stored blob `h` (and the caller
// then drops its copy), a blob catalogued `unverified` (on its source's name, see
// commit_trusted_tree) is read: matched, the flag goes; not matched, it is quarantined like
// `verify` does, so the caller's verified bytes become the blob. A lying cache name must never
// cost the user a file.
void settle_unverified(Store::Impl& s, const Sha256& h);

// Moves blob `h`'s file to quarantine/ and marks its record `quarantined` (verify, check_blob,
// settle_unverified: one way to do it). Returns where the bytes went. Throws StoreError.
std::filesystem::path quarantine_blob(Store::Impl& s, const Sha256& h);

// Tensor-level dedup at ingest (tensor_split.cpp): when the open file `src` (a safetensors or
// GGUF file, of which a sample of tensors is in the tensors index) shares at least
// kMinSharedBytes with stored blobs, it is read once (SHA-256, XXH3-128, each piece's XXH3) and
// stored composed: only its new pieces are written. std::nullopt when it is not such a file (the
// caller copies it whole). Content already present comes back with stored_new false and nothing
// written. Call under the shared store lock, like any ingest.
struct ComposedIngest {
    Ingested ingested;
    SplitReport split;
};
std::optional<ComposedIngest> ingest_composed(Store::Impl& s, int src, const std::string& name,
                                              Progress* progress);

}  // namespace modelfs
