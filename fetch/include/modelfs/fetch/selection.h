// Which blobs `modelfs fetch [PATTERNS]` downloads: the files of the current versions of the
// matching models (what their views show, so what a tool opens), each blob once.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "modelfs/store/catalog.h"
#include "modelfs/store/hash.h"

namespace modelfs::fetch {

struct WantedBlob {
    Sha256 key;
    std::string name;  // "lora/foo", "diffusers/x/unet/y.safetensors": the first that uses it
    std::uint64_t size = 0;
};

struct BlobSelection {
    std::vector<WantedBlob> wanted;    // remote or partly downloaded, with a source
    std::vector<Sha256> matched;       // every catalogued blob of those versions (what --keep pins)
    std::size_t present = 0;           // already in the store
    std::vector<std::string> skipped;  // cannot be downloaded: "NAME: why, and what to do"
};

// `patterns` are fnmatch(3) shell patterns matched against CATEGORY/NAME or NAME; none selects
// every model. Throws StoreError not_found naming the first pattern that matches no model.
BlobSelection select_blobs(const Txn& txn, const std::vector<std::string>& patterns);

}  // namespace modelfs::fetch
