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

// One URL scheme modelfs fetches from, as the table in source.cpp has it (one row each: adding a
// source is adding a row there, with its check and resolve functions).
struct SchemeInfo {
    std::string_view name;          // "hf": the URL starts "hf://" (any case)
    std::string_view form;          // "hf://OWNER/REPO[@REVISION]/PATH", as messages show it
    std::string_view credentials;   // how credentials go with a request, in words
    std::string_view refused_hint;  // what to tell the user when the server refuses (401, 403)
    std::string_view example;       // a URL of the scheme that resolves
};
// Every scheme, in the order messages list them.
std::vector<SchemeInfo> source_schemes();
// "http://HOST/PATH, ..., hf://OWNER/REPO[@REVISION]/PATH or s3://BUCKET/KEY".
std::string source_forms();

// True when `s` names a scheme of the table (http://, https://, hf://, s3://).
bool is_remote_url(std::string_view s);

// Checks the URL's syntax; throws StoreError bad_input naming the URL and the expected form (an
// unknown scheme: the known ones).
void check_source_url(std::string_view url);

// What to request for `url` under `cfg`. Throws StoreError bad_input for malformed URLs.
HttpTarget resolve_source(std::string_view url, const FetchConfig& cfg);

// What to tell the user when a server refuses `url` (HTTP 401, 403): its scheme's credentials.
std::string_view refused_hint(std::string_view url);

// Percent-encodes every byte but ASCII letters, digits and those of `keep`, with upper-case hex
// (what SigV4's canonical forms require).
std::string percent_encode(std::string_view s, std::string_view keep);

// The URL with credentials and query strings that may carry them removed, for logs and the
// catalog's `source` field: the store's one rule (modelfs/store/secrets.h).
using modelfs::redact_url;

}  // namespace modelfs::fetch
