#include "modelfs/store/view_files.h"

#include <algorithm>
#include <array>
#include <cctype>

#include "modelfs/store/model_name.h"
#include "modelfs/store/text.h"

namespace modelfs {

bool stored_by_content(std::string_view rel_path, std::uint64_t size) {
    if (size < kViewFileMinSize) return false;
    // Edited in place or written in pieces: text and configs (tools rewrite them), databases and
    // logs (random writes, appends), and the names downloaders give files under way.
    static constexpr std::array<std::string_view, 24> kEdited{
        ".txt",  ".md",   ".json",    ".jsonl",      ".yaml",       ".yml",
        ".toml", ".ini",  ".cfg",     ".conf",       ".csv",        ".info",
        ".py",   ".log",  ".db",      ".sqlite",     ".sqlite3",    ".lock",
        ".tmp",  ".part", ".partial", ".incomplete", ".crdownload", ".download"};
    const std::string leaf = lower(leaf_of(rel_path));
    return std::none_of(kEdited.begin(), kEdited.end(),
                        [&](std::string_view e) { return leaf.ends_with(e); });
}

std::string view_file_name(std::string_view view, std::string_view rel_path) {
    std::string out(view);
    out += '/';
    out += rel_path;
    return out;
}

std::optional<std::string> view_file_path(std::string_view name, std::string_view view) {
    if (name.size() <= view.size() + 1 || !name.starts_with(view) || name[view.size()] != '/')
        return std::nullopt;
    return std::string(name.substr(view.size() + 1));
}

std::string view_file_ext(std::string_view rel_path) {
    return split_extension(rel_path).second;
}

}  // namespace modelfs
