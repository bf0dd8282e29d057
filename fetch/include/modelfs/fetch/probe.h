// Asking a source what it has before downloading: size, content hash, range support.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "modelfs/fetch/config.h"
#include "modelfs/store/hash.h"

namespace modelfs::fetch {

struct RemoteInfo {
    std::optional<std::uint64_t> size;
    // Only where the server states it: Hugging Face's X-Linked-Etag / ETag of LFS files (the
    // SHA-256), x-amz-checksum-sha256 or x-amz-meta-sha256 on S3, a Digest/Repr-Digest sha-256.
    std::optional<Sha256> sha256;
    std::string etag;
    bool accepts_ranges = false;
    std::string final_url;  // after redirects (redacted)
};

// HEAD (or, when the server refuses HEAD, a GET of byte 0) of `url`. Throws StoreError:
// not_found for 404/410, bad_input for 401/403 (with a hint about HF_TOKEN / AWS_* credentials),
// io for other failures; the message names the URL and the HTTP status.
RemoteInfo probe(std::string_view url, const FetchConfig& cfg);

// The first `length` bytes of `url` (one ranged GET, redirects followed as probe() follows them;
// at most `length` bytes are kept whatever the server sends): a file's header, read before
// deciding what to download. Fewer bytes when the file is shorter. Throws StoreError as probe().
std::string fetch_prefix(std::string_view url, std::uint64_t length, const FetchConfig& cfg);

}  // namespace modelfs::fetch
