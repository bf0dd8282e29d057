// Tensor maps: a model file's pieces (tensor_split.h) as XXH3-128 and length, in file order. The
// store keeps one per model file it has cut (meta `tensor_map/<hex>`, FORMAT.md), a team remote's
// snapshots carry them, and a download of a file whose map is known starts from the pieces the
// store already holds (only the rest crosses the network; the whole file's SHA-256 is checked at
// the end as for any download, so a map that lies costs bytes, never correctness).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "modelfs/store/catalog.h"
#include "modelfs/store/hash.h"

namespace modelfs {

class Store;

struct PieceSum {
    Xxh128 xxh3;
    std::uint64_t length = 0;
    bool operator==(const PieceSum&) const = default;
};

// CBOR: an array of [bytes(16), uint]. decode throws StoreError corrupt on anything else.
std::string encode_tensor_map(const std::vector<PieceSum>& map);
std::vector<PieceSum> decode_tensor_map(std::string_view bytes);

// The meta key of blob `h`'s map.
std::string tensor_map_key(const Sha256& h);
std::optional<std::vector<PieceSum>> tensor_map(const Txn& txn, const Sha256& h);
// Refuses (StoreError bad_input) a map whose lengths do not add up to `size`.
void put_tensor_map(Txn& txn, const Sha256& h, std::uint64_t size,
                    const std::vector<PieceSum>& map);

// A piece of a file being downloaded that a stored blob holds: `length` bytes at `offset` of the
// file are those at `source_offset` of blob `source` (by the tensors index; XXH3-128 and length
// equal, bytes to be checked by whoever copies them).
struct LocalPiece {
    std::uint64_t offset = 0;
    std::uint64_t length = 0;
    Sha256 source;
    std::uint64_t source_offset = 0;
    Xxh128 xxh3;
};
// The pieces of blob `h` (by its map) that present, non-composed stored blobs hold.
std::vector<LocalPiece> local_pieces(Store& store, const Sha256& h);

// What a safetensors header says about reuse before anything else of the file is downloaded
// (`modelfs add` reads it with fetch_prefix): its tensors that have the name, dtype, shape and
// length of a tensor in a stored safetensors file. Only their bytes can tell whether they are the
// same, so a download without a tensor map reuses nothing on this evidence: the file comes
// whole, and is stored sharing the tensors that do turn out identical.
struct HeaderMatch {
    std::size_t tensors = 0;
    std::uint64_t tensor_bytes = 0;
    std::size_t matching = 0;
    std::uint64_t matching_bytes = 0;
    std::vector<std::string> models;  // model keys whose current file has such tensors
};
// Throws StoreError bad_input when `header_json` is not a safetensors header.
HeaderMatch match_header(Store& store, std::string_view header_json);

}  // namespace modelfs
