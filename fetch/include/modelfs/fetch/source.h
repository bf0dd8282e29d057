// Remote sources: what a source URL means as an HTTP request. No network here.
//
//   https://host/path, http://host/path   as is
//   hf://OWNER/REPO[@REVISION]/PATH       HF_ENDPOINT/OWNER/REPO/resolve/REVISION/PATH
//                                         (REVISION default "main"), Bearer HF_TOKEN
//   s3://BUCKET/KEY                       S3 endpoint, signed with AWS SigV4
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "modelfs/fetch/config.h"
#include "modelfs/store/secrets.h"

namespace modelfs::fetch {

// One HTTP request target with what it needs to be accepted.
struct HttpTarget {
    std::string url;                   // http(s) URL actually requested
    std::vector<std::string> headers;  // "Name: value" (Authorization, ...); its origin only
    std::string aws_sigv4;             // CURLOPT_AWS_SIGV4 ("aws:amz:REGION:s3"); empty: none
    std::string userpwd;               // CURLOPT_USERPWD for SigV4 ("ACCESS:SECRET")
    std::string host;                  // for per-host limits and messages
};

// True when `s` looks like a URL modelfs can fetch (http://, https://, hf://, s3://).
bool is_remote_url(std::string_view s);

// Checks the URL's syntax; throws StoreError bad_input naming the URL and the expected form.
void check_source_url(std::string_view url);

// What to request for `url` under `cfg`. Throws StoreError bad_input for malformed URLs.
HttpTarget resolve_source(std::string_view url, const FetchConfig& cfg);

// The URL with credentials and query strings that may carry them removed, for logs and the
// catalog's `source` field: the store's one rule (modelfs/store/secrets.h).
using modelfs::redact_url;

}  // namespace modelfs::fetch
