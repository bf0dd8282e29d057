// Shared by hf_cache.cpp and ollama.cpp: committing one found version and reporting it.
#pragma once

#include <string>

#include "modelfs/adopt/other_stores.h"

namespace modelfs::adopt::detail {

// Commits `t` (Store::commit_trusted_tree); a refusal or an I/O error becomes a failed item
// naming `item.source`, never an exception, so one bad version does not stop the others.
void commit_version(Store& store, const TrustedTree& t, OtherStoreItem& item, Progress* progress);

// A file's SHA-256 (and XXH3) when its name does not give it: small files, read once.
FileDigests hash_file(const std::filesystem::path& p);

// Is `s` `n` lower-case hex digits?
bool is_hex_name(std::string_view s, std::size_t n);

// The value of an environment variable, or empty.
std::string env(const char* name);
std::filesystem::path home_dir();

}  // namespace modelfs::adopt::detail
