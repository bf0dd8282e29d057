// Small file-system helpers shared by the adopt sources.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>

#include "modelfs/adopt/adopt.h"
#include "modelfs/store/progress.h"
#include "modelfs/store/unique_fd.h"

namespace modelfs::adopt::detail {

// A value's name and back, by a table of rows {value, name, ...} (a pair or a tuple): the one
// place each enum of the records and reports is put into words, read both ways the same.
template <class Table, class Value>
std::optional<std::string_view> name_in(const Table& rows, Value v) {
    for (const auto& row : rows)
        if (std::get<0>(row) == v) return std::string_view(std::get<1>(row));
    return std::nullopt;
}
template <class Table>
auto value_in(const Table& rows, std::string_view name)
    -> std::optional<std::decay_t<decltype(std::get<0>(rows[0]))>> {
    for (const auto& row : rows)
        if (std::get<1>(row) == name) return std::get<0>(row);
    return std::nullopt;
}

inline std::int64_t ns_of(const struct timespec& t) {
    return static_cast<std::int64_t>(t.tv_sec) * 1000000000 + t.tv_nsec;
}
std::int64_t unix_now();
// Copies `from` to a new file `to` (O_EXCL) with mode `mode`, fsynced; returns the bytes copied.
// Throws StoreError naming both paths.
std::uint64_t copy_file_durable(const std::filesystem::path& from, const std::filesystem::path& to,
                                unsigned mode, Progress* progress = nullptr);
// The same, from the open file `in` to the new open file `out` (names for messages only).
std::uint64_t copy_fd_durable(int in, int out, const std::string& from, const std::string& to,
                              unsigned mode, Progress* progress = nullptr);
// Opens a scanned file by its real path (links resolved at scan time) with no link in any
// component (modelfs/store/safe_open.h): a link made there since the scan is not followed.
UniqueFd open_real(const std::filesystem::path& real, int flags = O_RDONLY);
bool same_filesystem(const std::filesystem::path& a, const std::filesystem::path& b);
// Is `p` inside `dir` (lexically, both absolute)? Returns the relative path when it is.
bool is_under(const std::filesystem::path& p, const std::filesystem::path& dir,
              std::filesystem::path* rel = nullptr);

// Can adopt give the file at `real` (reached as `path`) to the store by moving it, zero copy?
// Only a file that lives inside the models folder under its own name (no link on the way, so
// its name ends up in the backup, which adopt empties of it), on the store's filesystem, and
// that BlobStore::why_not_take lets the store have. Anything else is copied into the store and
// left alone. `why` (optional) says why not.
bool movable(const std::filesystem::path& path, const std::filesystem::path& real,
             const std::filesystem::path& models_dir, const std::filesystem::path& store_root,
             std::string* why = nullptr);

// How a file of a record from before records named it (no "left") was left, read from its
// note's words (states.cpp, which makes those words).
Left left_of_legacy_note(std::string_view note);

}  // namespace modelfs::adopt::detail
