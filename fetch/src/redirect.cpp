#include "modelfs/fetch/redirect.h"

#include <curl/curl.h>

#include <algorithm>
#include <memory>

#include "modelfs/store/text.h"

namespace modelfs::fetch {
namespace {

struct UrlDeleter {
    void operator()(CURLU* u) const { curl_url_cleanup(u); }
};

// One part of a parsed URL, owned.
std::optional<std::string> part(CURLU* u, CURLUPart which, unsigned flags = 0) {
    char* p = nullptr;
    if (curl_url_get(u, which, &p, flags) != CURLUE_OK || !p) return std::nullopt;
    std::string s(p);
    curl_free(p);
    return s;
}

}  // namespace

std::optional<std::string> origin_of(std::string_view url) {
    std::unique_ptr<CURLU, UrlDeleter> u(curl_url());
    if (!u) return std::nullopt;
    // libcurl's parser, the one that sends the request: what it calls the host is the host.
    if (curl_url_set(u.get(), CURLUPART_URL, std::string(url).c_str(), 0) != CURLUE_OK)
        return std::nullopt;
    auto scheme = part(u.get(), CURLUPART_SCHEME);
    auto host = part(u.get(), CURLUPART_HOST);
    auto port = part(u.get(), CURLUPART_PORT, CURLU_DEFAULT_PORT);
    if (!scheme || !host || !port) return std::nullopt;
    std::string s = lower(*scheme);
    if (s != "http" && s != "https") return std::nullopt;
    return s + "://" + lower(*host) + ":" + *port;
}

std::optional<HttpTarget> redirect_target(const HttpTarget& from, std::string_view location) {
    auto to = origin_of(location);
    if (!to) return std::nullopt;
    auto was = origin_of(from.url);
    if (was && *was == *to) {
        HttpTarget same = from;
        same.url = std::string(location);
        return same;
    }
    HttpTarget bare;
    bare.url = std::string(location);
    // host[:port] as resolve_source() writes it, for the per-host connection limits.
    std::string_view rest = location.substr(location.find("://") + 3);
    rest = rest.substr(0, rest.find_first_of("/?#"));
    if (auto at = rest.rfind('@'); at != std::string_view::npos) rest = rest.substr(at + 1);
    bare.host = lower(std::string(rest));
    return bare;
}

}  // namespace modelfs::fetch
