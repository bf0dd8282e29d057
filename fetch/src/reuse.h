// Diff-only downloads: before a fresh download of a blob whose tensor map is known
// (store/tensor_map.h), the pieces the store already holds are copied into the partial file and
// count as arrived; only the rest is requested (the ranged requests cover the gaps). The whole
// file's SHA-256 is checked at the end like any download's.
#pragma once

#include <cstdint>

#include "modelfs/store/store.h"
#include "partial_state.h"

namespace modelfs::fetch::detail {

// Copies the stored pieces of blob `key` into `part_fd` (sized already), each checked against
// its XXH3-128 in the map as it is copied (a piece that does not match is left to download),
// then fsyncs. Returns the ranges written. Never throws for a piece it cannot use; throws
// std::system_error when writing the partial file fails.
RangeSet reuse_stored_pieces(Store& store, const Sha256& key, int part_fd);

}  // namespace modelfs::fetch::detail
