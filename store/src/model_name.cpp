#include "modelfs/store/model_name.h"

#include <algorithm>
#include <cctype>

#include "modelfs/store/text.h"

namespace modelfs {
namespace {

// Extensions a tool matches as one unit, so the stem stops before them (Fooocus's
// modules/config.py lists inpaint patches as "*.fooocus.patch").
constexpr std::string_view kCompoundExtensions[] = {".fooocus.patch"};

}  // namespace

std::string_view leaf_of(std::string_view path) {
    auto slash = path.rfind('/');
    return slash == std::string_view::npos ? path : path.substr(slash + 1);
}

std::pair<std::string, std::string> split_extension(std::string_view path) {
    const auto slash = path.rfind('/');
    const std::size_t leaf = slash == std::string_view::npos ? 0 : slash + 1;
    const std::string_view l = path.substr(leaf);
    for (auto ce : kCompoundExtensions)
        if (l.size() > ce.size() && iends_with(l, ce))
            return {std::string(path.substr(0, path.size() - ce.size())),
                    std::string(path.substr(path.size() - ce.size()))};
    const auto dot = l.rfind('.');
    if (dot == std::string_view::npos || dot == 0) return {std::string(path), {}};
    return {std::string(path.substr(0, leaf + dot)), std::string(path.substr(leaf + dot))};
}

SingleFileName single_file_name(std::string_view name, std::string_view ext) {
    // Nothing to append to ("", "dir/"): the name rule refuses the name as it is.
    if (ext.empty() || name.empty() || name.back() == '/') return {std::string(name), {}};
    if (name.size() > ext.size() && iends_with(name, ext) &&
        name[name.size() - ext.size() - 1] != '/')
        return {std::string(name), std::string(name.substr(name.size() - ext.size()))};
    return {std::string(name) + std::string(ext), std::string(ext)};
}

SingleFileName file_model_name(std::string_view leaf) {
    return single_file_name(leaf, split_extension(leaf).second);
}

std::string_view name_stem(std::string_view name, std::string_view ext) {
    if (ext.empty() || name.size() <= ext.size() || !name.ends_with(ext)) return name;
    return name.substr(0, name.size() - ext.size());
}

}  // namespace modelfs
