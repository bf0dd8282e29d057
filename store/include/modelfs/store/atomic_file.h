// Replacing a small file whole or not at all: records, download progress, lock files. The one
// place that knows the steps, so no caller forgets one (the folder's fsync is the one forgotten).
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <string_view>

namespace modelfs {

// Writes `text` to `file` atomically: a temporary file in the same folder (`file` + ".tmp" + this
// process's id, so two processes writing the same file never share one; created with `mode`, a
// stale one of that name removed first and never reused, no link followed), fsync of it, rename
// over `file`, fsync of the folder. What a crash leaves, by step:
//   before the rename: `file` as it was (old content, or absent), and maybe the temporary file,
//     whole or not, which nothing reads (a later call of the same process id replaces it);
//   after the rename, before the folder's fsync: either the old or the new `file`, each whole;
//   after: the new `file`, whole.
// A failure removes the temporary file and throws StoreError naming the path (no_space on ENOSPC).
void write_file_atomically(const std::filesystem::path& file, std::string_view text,
                           mode_t mode = 0644);

}  // namespace modelfs
