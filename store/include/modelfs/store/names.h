// The one rule for names that become paths in every view: model names (import -n, add, a
// manifest's "as", lock files, renames, files saved through the mount), the files inside a
// multi-file model (manifests, lock files, the catalog) and hf:// paths. Pure text, no store.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace modelfs {

// NAME_MAX of every filesystem a view may be copied to.
inline constexpr std::size_t kMaxPathComponent = 255;
// A model name's components leave room for "@label" and an extension within NAME_MAX.
inline constexpr std::size_t kMaxNameComponent = 200;
// The whole of a name or path; far below PATH_MAX once a view's folders come in front.
inline constexpr std::size_t kMaxRelativePath = 1024;

// Valid UTF-8: no stray continuation bytes, no overlong forms, no surrogates, nothing above
// U+10FFFF.
bool is_valid_utf8(std::string_view s);
// The length (1 to 4) of the valid UTF-8 sequence that starts at s[i], or 0 when none does.
std::size_t utf8_sequence_length(std::string_view s, std::size_t i);

// Why `p` is not an acceptable relative path, or "" when it is: valid UTF-8; no control
// character (C0, DEL, C1); not absolute; no empty, '.' or '..' component; components at most
// `max_component` bytes, the whole at most kMaxRelativePath. The reason names the offending
// component or byte, escaped (terminal_safe), so it can be shown as is.
std::string relative_path_problem(std::string_view p,
                                  std::size_t max_component = kMaxPathComponent);

// Throws StoreError bad_input "<what> '<p, escaped>': <problem>" when relative_path_problem
// finds one.
void check_relative_path(std::string_view p, std::string_view what);

}  // namespace modelfs
