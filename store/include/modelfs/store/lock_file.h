// Lock files: the exact set of model versions a view shows, as plain diff-friendly JSON, so a
// project can be reproduced on another machine (`modelfs lock`, `modelfs apply`,
// `modelfs mount --lock`). One model per entry, sorted by model key, keys in a fixed order:
//
//   {
//     "modelfs_lock": 1,
//     "view": "comfyui",
//     "models": [
//       {"model": "lora/sdxl/foo", "label": "v2", "ext": ".safetensors",
//        "sha256": "<64 hex>", "size": 123,
//        "sources": ["https://example.org/foo.safetensors"]},
//       {"model": "lora/bar", ..., "sources": ["https://host/bar.safetensors"],
//        "secrets_removed": true},
//       {"model": "diffusers/sd15", "label": "v1", "sha256": "<content id, 64 hex>",
//        "size": 456,
//        "files": [{"path": "unet/diffusion_pytorch_model.safetensors", "sha256": "<64 hex>",
//                   "size": 400, "sources": []}, ...]}
//     ]
//   }
//
// "sha256" of a single-file model is its file's SHA-256; of a multi-file model it is the
// version's content id (ModelVersion::content_id). Pure data and text: no store access.
// Sources lose user:password@ and presigned/token query parameters unless the lock is written
// with --with-secrets; "secrets_removed" says so, and apply refuses to register such a file as a
// download (it would fail) unless this store has a source of its own for it. Model names and
// file paths follow names.h; a lock breaking it is refused whole, before anything changes.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "modelfs/store/catalog.h"
#include "modelfs/store/category.h"
#include "modelfs/store/hash.h"

namespace modelfs {

inline constexpr int kLockFormatVersion = 1;

struct LockedFile {
    std::string path;  // inside a multi-file model; empty for a single file
    Sha256 sha256;
    std::uint64_t size = 0;
    std::vector<std::string> sources;  // URLs, mirrors in order; may be empty
    // The sources were written without their credentials (user:password@, X-Amz-Signature,
    // token=...; modelfs/store/secrets.h), so they may not work as they are: "secrets_removed".
    bool secrets_removed = false;
};

struct LockedModel {
    Category category = Category::other;
    std::string name;
    std::string label;
    std::string ext;    // single-file model: ".safetensors"; empty for a tree
    bool tree = false;  // files[i].path set; else exactly one file with an empty path
    Sha256 content_id;  // ModelVersion::content_id of the locked version
    std::uint64_t size = 0;
    std::vector<LockedFile> files;

    std::string key() const { return model_key(category, name); }
};

struct LockFile {
    std::string view;                 // the view it was made for; may be empty (every model)
    std::vector<LockedModel> models;  // sorted by key(), unique keys

    // The text as described above; ends with a newline. parse(to_text()) == *this.
    std::string to_text() const;
    // Throws StoreError bad_input naming `source` and what is wrong (not JSON, unknown format
    // version, a bad hash, a duplicate model, a content id that does not match its files).
    static LockFile parse(std::string_view text, const std::string& source);
    // SHA-256 of to_text(), first 16 hex digits: the id a registered lock has (LockHold::id).
    std::string id() const;
    // What a LockHold records of it.
    std::vector<std::pair<std::string, Sha256>> versions() const;
};

// The entry for version `index` of `m`; sources come from the blob records `txn` has, without
// their credentials unless `with_secrets` (`modelfs lock --with-secrets`).
LockedModel lock_entry(const Txn& txn, const Model& m, std::size_t index,
                       bool with_secrets = false);

// The version of a model a lock keeps (an index into Model::versions), or nullopt to leave the
// model out: the one a view shows there, or the current one for a lock of every model.
using LockedVersion = std::function<std::optional<std::size_t>(const Model&)>;

struct MadeLock {
    LockFile lock;
    // Models left out, one message each: a name an older modelfs let in that breaks names.h
    // (`apply` would refuse the whole lock for it), or a version not downloaded yet when asked
    // to skip those.
    std::vector<std::string> left_out;
};

// What `modelfs lock` writes: every model `version_of` keeps, at that version, sorted by key,
// for `view` (empty: every model, each at its current version when `version_of` is empty).
// A version with a remote file not downloaded yet has no SHA-256 to lock: with `skip_unhashed`
// it is left out (named in left_out), else this throws as lock_entry does, saying how to skip.
MadeLock make_lock(const Txn& txn, const std::string& view, const LockedVersion& version_of,
                   bool with_secrets, bool skip_unhashed = false);

}  // namespace modelfs
