// libcurl ownership and the header parsing probe() and the Fetcher share.
#pragma once

#include <curl/curl.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "modelfs/fetch/config.h"
#include "modelfs/fetch/source.h"
#include "modelfs/store/hash.h"

namespace modelfs::fetch::detail {

// curl_global_init, once per process, before any other thread uses libcurl.
void curl_global();

struct EasyDeleter {
    void operator()(CURL* c) const { curl_easy_cleanup(c); }
};
using EasyPtr = std::unique_ptr<CURL, EasyDeleter>;

struct SlistDeleter {
    void operator()(curl_slist* s) const { curl_slist_free_all(s); }
};
using SlistPtr = std::unique_ptr<curl_slist, SlistDeleter>;

struct MultiDeleter {
    void operator()(CURLM* m) const { curl_multi_cleanup(m); }
};
using MultiPtr = std::unique_ptr<CURLM, MultiDeleter>;

// The headers of one HTTP response (a redirect chain has several).
struct Response {
    long status = 0;
    std::vector<std::pair<std::string, std::string>> headers;     // name lower-cased
    std::optional<std::string> get(std::string_view name) const;  // `name` lower-case
};

// Feeds one header line (as libcurl's header callback gets it) into `chain`: a status line starts
// a new response.
void add_header_line(std::vector<Response>& chain, std::string_view line);

// "bytes A-B/TOTAL" -> {A, B, TOTAL}; TOTAL nullopt for "*".
struct ContentRange {
    std::uint64_t first = 0, last = 0;
    std::optional<std::uint64_t> total;
};
std::optional<ContentRange> parse_content_range(std::string_view v);

// The SHA-256 a response chain states for the content (see RemoteInfo::sha256).
std::optional<Sha256> stated_sha256(const std::vector<Response>& chain);

std::optional<std::uint64_t> parse_u64(std::string_view s);

// The options every request of ours has: target URL, headers (+ `extra`), SigV4, timeouts, user
// agent. Redirects are not followed: the caller follows them with redirect_target(). The slist
// must outlive the request.
SlistPtr setup_request(CURL* c, const HttpTarget& t, const FetchConfig& cfg,
                       const std::vector<std::string>& extra);

}  // namespace modelfs::fetch::detail
