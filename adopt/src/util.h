// Small file-system helpers shared by the adopt sources.
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <filesystem>
#include <string>

#include "modelfs/store/progress.h"

namespace modelfs::adopt::detail {

inline std::int64_t ns_of(const struct timespec& t) {
    return static_cast<std::int64_t>(t.tv_sec) * 1000000000 + t.tv_nsec;
}
std::int64_t unix_now();
// Writes `text` to `p` atomically (tmp + fsync + rename + fsync of the folder).
void write_atomic(const std::filesystem::path& p, const std::string& text);
// Copies `from` to a new file `to` (O_EXCL) with mode `mode`, fsynced; returns the bytes copied.
// Throws StoreError naming both paths.
std::uint64_t copy_file_durable(const std::filesystem::path& from, const std::filesystem::path& to,
                                unsigned mode, Progress* progress = nullptr);
bool same_filesystem(const std::filesystem::path& a, const std::filesystem::path& b);
// Is `p` inside `dir` (lexically, both absolute)? Returns the relative path when it is.
bool is_under(const std::filesystem::path& p, const std::filesystem::path& dir,
              std::filesystem::path* rel = nullptr);

}  // namespace modelfs::adopt::detail
