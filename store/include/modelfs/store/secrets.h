// Secrets: what of a URL is one (user:password@ and the query parameters of presigned or token
// URLs: X-Amz-*, sig, token, ...), used for what is shown, logged, catalogued as a version's
// source and written to lock files and --json; and the mode of the files that can hold them.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <string>
#include <string_view>

namespace modelfs {

// Whether a query parameter of this name (case-insensitive) carries a credential: X-Amz-* and
// X-Goog-* (presigned S3/GCS), sig, signature, token, access_token, key, api_key, password,
// secret, credential, Policy and Key-Pair-Id (CloudFront), and any name containing "token",
// "secret", "signature", "password" or "credential".
bool is_secret_query_param(std::string_view name);

// For people and logs: without user:password@, without query or fragment.
std::string redact_url(std::string_view url);

struct StrippedUrl {
    std::string url;
    bool removed = false;  // something secret was taken out: the URL may not work without it
};

// For lock files and --json: without user:password@, without the fragment and without the secret
// query parameters; the other parameters are kept in order (a public URL stays as it was).
StrippedUrl strip_url_secrets(std::string_view url);

// The mode of a file that can hold credentials (the catalog, lock files written with
// --with-secrets, partial download states): 0600, or 0640 when `folder` (the store's root) is
// group-readable, as a multi-user store's is (the .deb's /var/lib/modelfs, 0750 group modelfs:
// the group is the trusted readers). store/FORMAT.md, "File modes".
mode_t secret_file_mode(const std::filesystem::path& folder);

// Takes from an existing such file the permission bits secret_file_mode(folder) does not allow
// (never adds any). Returns false when it could not (not the file's owner); quiet.
bool tighten_secret_file(const std::filesystem::path& file, const std::filesystem::path& folder);

}  // namespace modelfs
