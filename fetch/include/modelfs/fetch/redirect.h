// Where credentials may go when a server redirects: the one rule, used by probe() and the
// downloader, which follow redirects themselves (libcurl's own following would carry our custom
// headers, such as x-amz-security-token, to any host).
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "modelfs/fetch/source.h"

namespace modelfs::fetch {

// Redirects followed per request before the source counts as failed.
inline constexpr unsigned kMaxRedirects = 10;

// "scheme://host:port" of an http(s) URL, lower-cased, the port always written ("https://h:443");
// nullopt for anything else. Two URLs with the same origin may share credentials.
std::optional<std::string> origin_of(std::string_view url);

// The request a redirect from `from` to `location` (absolute, as libcurl resolves it) makes.
// The credentials of `from` (its headers: Authorization, x-amz-security-token, ...; and its
// SigV4 signing) go along only when `location` has the same origin (scheme, host and port), so
// never to another host and never from https to http; elsewhere the request is the bare URL (a
// presigned URL carries its own authorisation in its query). nullopt when `location` is not an
// http(s) URL.
std::optional<HttpTarget> redirect_target(const HttpTarget& from, std::string_view location);

}  // namespace modelfs::fetch
