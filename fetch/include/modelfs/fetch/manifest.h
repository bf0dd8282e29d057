// Manifests: a pack of remote models registered in one go (`modelfs add --manifest FILE.json`).
// The format is documented in README.md ("Lazy fetch"). No network here.
#pragma once

#include <filesystem>
#include <string_view>
#include <vector>

#include "modelfs/store/store.h"

namespace modelfs::fetch {

// Parses manifest text. Throws StoreError bad_input naming `source`, the entry (index and name)
// and the field at fault.
std::vector<RemoteModel> parse_manifest(std::string_view json_text,
                                        const std::filesystem::path& source);
std::vector<RemoteModel> load_manifest(const std::filesystem::path& file);

}  // namespace modelfs::fetch
