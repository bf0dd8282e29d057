// Where content that failed verification goes: STORE/quarantine/, kept for inspection and never
// served (store/FORMAT.md "Downloads", "verify and gc").
#pragma once

#include <filesystem>

#include "modelfs/store/hash.h"

namespace modelfs {

class Store;

// Moves a download whose content did not match `key` (a partial file in Store::partial_dir()) to
// quarantine/<key hex>.<unix time>.download. Returns where it went ("(deleted)" when it could not
// be moved: then it is unlinked).
std::filesystem::path quarantine_download(Store& s, const Sha256& key,
                                          const std::filesystem::path& path);

}  // namespace modelfs
