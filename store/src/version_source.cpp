#include "modelfs/store/version_source.h"

#include <array>
#include <utility>

namespace modelfs {
namespace {

// One row per prefixed kind.
constexpr std::array<std::pair<SourceKind, std::string_view>, 5> kPrefixes{{
    {SourceKind::mount, "mount:"},
    {SourceKind::adopt, "adopt:"},
    {SourceKind::hf_cache, "hf-cache:"},
    {SourceKind::ollama, "ollama:"},
    {SourceKind::remote, "remote:"},
}};
constexpr std::string_view kLock = "lock";

}  // namespace

std::string to_source(const VersionSource& s) {
    if (s.kind == SourceKind::lock) return std::string(kLock);
    if (s.kind == SourceKind::path_or_url) return s.where;
    std::string out;
    for (const auto& [k, prefix] : kPrefixes)
        if (k == s.kind) out = prefix;
    if (s.kind == SourceKind::adopt) out += s.tool + ":";
    return out + s.where;
}

VersionSource parse_source(std::string_view text) {
    if (text == kLock) return {SourceKind::lock, {}, {}};
    for (const auto& [k, prefix] : kPrefixes) {
        if (!text.starts_with(prefix)) continue;
        std::string_view rest = text.substr(prefix.size());
        if (k != SourceKind::adopt) return {k, {}, std::string(rest)};
        const auto colon = rest.find(':');
        if (colon == std::string_view::npos) break;
        return {k, std::string(rest.substr(0, colon)), std::string(rest.substr(colon + 1))};
    }
    return {SourceKind::path_or_url, {}, std::string(text)};
}

}  // namespace modelfs
