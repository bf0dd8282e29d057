// A version's `source` text (store/FORMAT.md "Version sources"): the one place that writes its
// prefixes and reads them back. Pure text, no store.
#pragma once

#include <string>
#include <string_view>

namespace modelfs {

enum class SourceKind {
    path_or_url,  // an imported file's absolute path, or an added URL (no prefix)
    mount,        // "mount:PATH": saved through a mount, PATH in the mount
    adopt,        // "adopt:TOOL:VIEW_PATH": catalogued by adopt of an install of TOOL
    hf_cache,     // "hf-cache:FOLDER": a Hugging Face cache snapshot folder
    ollama,       // "ollama:FILE": an Ollama manifest
    lock,         // "lock": a version a lock file named that the store lacked
    remote,       // "remote:NAME": registered by a pull from team remote NAME
};

struct VersionSource {
    SourceKind kind = SourceKind::path_or_url;
    std::string tool;   // adopt: the view's name; empty otherwise
    std::string where;  // what follows the prefix (all of a path or URL; empty for lock)
};

std::string to_source(const VersionSource& s);
// Text without a known prefix, or "adopt:" without a second ':', is a path or URL.
VersionSource parse_source(std::string_view text);

}  // namespace modelfs
