// Reads a file once, in large chunks, and hands every chunk to two consumers: one on the calling
// thread and one on a worker thread. Ingest uses it to copy + XXH3 on one core while SHA-256 runs
// on the other, so a copy-and-hash pass costs about as much as the hash alone.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>

#include "modelfs/store/progress.h"

namespace modelfs {

using ChunkFn = std::function<void(std::span<const std::byte>)>;

// Reads `fd` from `offset` to end of file. `local` runs on the calling thread, `remote` on a
// worker, each seeing the chunks in file order. Either may be empty. An exception thrown by
// either consumer or by a read stops the pass and is rethrown here. Returns the bytes read.
// `what` names the file in error messages.
std::uint64_t read_chunks(int fd, std::uint64_t offset, const ChunkFn& local, const ChunkFn& remote,
                          Progress* progress, const char* what);

inline constexpr std::size_t kChunkBytes = 1 << 20;

}  // namespace modelfs
