// Tensor-level deduplication (FORMAT.md "Composed blobs"). Fine-tunes, merges and re-saves of a
// checkpoint share most of their tensors byte for byte while their files differ, so file-level
// dedup saves nothing there. A model file is cut into pieces at its tensors' boundaries; a new
// file that shares enough pieces with stored blobs is stored as a *composed* blob: its extents
// are ranges of those blobs plus one new `pieces` blob holding what nothing stored had (its
// header, its new tensors). Reads rebuild the exact bytes, so the file's SHA-256 (and AutoV2/V3)
// is unchanged.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "modelfs/store/catalog.h"
#include "modelfs/store/hash.h"

namespace modelfs {

// A tensor of at least this many bytes is a piece of its own; smaller ones (biases, norms) and
// the bytes between tensors are merged with their small neighbours, up to kSmallRunBytes, so a
// file of thousands of tiny tensors does not become thousands of extents.
inline constexpr std::uint64_t kMinTensorPiece = 64 * 1024;
inline constexpr std::uint64_t kSmallRunBytes = 1024 * 1024;
// THE rule (FORMAT.md): a file is composed only when at least this many of its bytes are pieces
// the store already holds. Below it, whole-file storage costs little and reads stay passthrough.
inline constexpr std::uint64_t kMinSharedBytes = 4 * 1024 * 1024;

// One piece of a model file: bytes [offset, offset + length).
struct Piece {
    std::uint64_t offset = 0;
    std::uint64_t length = 0;
    bool tensor = false;  // one tensor's bytes (else a header, a run of small ones, or a gap)
};

// The pieces of an open safetensors or GGUF file of `size` bytes, in file order, covering every
// byte exactly once: the header first, then tensors and runs. Empty when the file is neither (or
// is malformed): such a file is only ever stored whole.
std::vector<Piece> model_file_pieces(int fd, std::uint64_t size);

// What a split did (Store::split_tensors, `modelfs dedupe`).
struct SplitReport {
    Sha256 blob;
    std::uint64_t size = 0;
    bool composed = false;           // the blob is stored as extents now
    std::uint64_t shared_bytes = 0;  // bytes found in other stored blobs (byte-compared)
    std::uint64_t new_bytes = 0;     // bytes written to its `pieces` blob
    std::size_t extents = 0;
    std::size_t pieces = 0;  // pieces the file was cut into
    std::string why_not;     // when not composed: why ("shares 1.2 MiB, below 4 MiB")
};

// What `modelfs show` says about how a blob is stored.
struct StorageInfo {
    enum class How { whole, composed, materialised } how = How::whole;
    std::uint64_t size = 0;
    std::uint64_t own_bytes = 0;  // bytes in its own `pieces` blob (composed) or file (whole)
    // Bytes of the file that are ranges of blobs models use, per model key using them.
    std::vector<std::pair<std::string, std::uint64_t>> shared_with;
    std::uint64_t shared_bytes = 0;
    std::size_t extents = 0;
    // For a whole blob: composed blobs whose extents use its bytes.
    std::size_t used_by_composed = 0;
};

// Reads `length` bytes at `offset` of a composed blob described by `extents`, whose source blobs
// are open as `fds` (one per extent, in order). Short only at the end.
std::size_t read_extents(const std::vector<Extent>& extents, const std::vector<int>& fds,
                         std::uint64_t offset, char* buf, std::size_t length);

}  // namespace modelfs
