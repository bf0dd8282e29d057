#include "curl_util.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <mutex>
#include <stdexcept>

#include "modelfs/store/text.h"

namespace modelfs::fetch::detail {
namespace {

std::string_view trim(std::string_view s) {
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
    return s;
}

std::optional<std::string> base64_decode(std::string_view in) {
    auto val = [](char c) -> int {
        if (c >= 'A' && c <= 'Z') return c - 'A';
        if (c >= 'a' && c <= 'z') return c - 'a' + 26;
        if (c >= '0' && c <= '9') return c - '0' + 52;
        if (c == '+' || c == '-') return 62;
        if (c == '/' || c == '_') return 63;
        return -1;
    };
    std::string out;
    unsigned acc = 0;
    int bits = 0;
    for (char c : in) {
        if (c == '=') break;
        int v = val(c);
        if (v < 0) return std::nullopt;
        acc = (acc << 6) | static_cast<unsigned>(v);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out += static_cast<char>((acc >> bits) & 0xff);
        }
    }
    return out;
}

std::optional<Sha256> from_base64(std::string_view b64) {
    auto raw = base64_decode(trim(b64));
    if (!raw || raw->size() != 32) return std::nullopt;
    Sha256 h;
    std::copy(raw->begin(), raw->end(), reinterpret_cast<char*>(h.bytes.data()));
    return h;
}

// An ETag that is a bare SHA-256 (Hugging Face LFS files): 64 hex digits, quoted or not, maybe
// weak.
std::optional<Sha256> from_etag(std::string_view v) {
    v = trim(v);
    if (v.substr(0, 2) == "W/") v.remove_prefix(2);
    if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
    if (v.size() != 64) return std::nullopt;
    return Sha256::from_hex(lower(v));
}

// "sha-256=BASE64" in Digest, "sha-256=:BASE64:" in Repr-Digest, among other algorithms.
std::optional<Sha256> from_digest_header(std::string_view v) {
    while (!v.empty()) {
        auto comma = v.find(',');
        std::string_view item = trim(v.substr(0, comma));
        auto eq = item.find('=');
        if (eq != std::string_view::npos && lower(trim(item.substr(0, eq))) == "sha-256") {
            std::string_view val = trim(item.substr(eq + 1));
            if (val.size() >= 2 && val.front() == ':' && val.back() == ':')
                val = val.substr(1, val.size() - 2);
            if (auto h = from_base64(val)) return h;
        }
        if (comma == std::string_view::npos) break;
        v.remove_prefix(comma + 1);
    }
    return std::nullopt;
}

}  // namespace

void curl_global() {
    static std::once_flag once;
    std::call_once(once, [] {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
            throw std::runtime_error("libcurl could not be initialised");
    });
}

std::optional<std::string> Response::get(std::string_view name) const {
    for (const auto& [n, v] : headers)
        if (n == name) return v;
    return std::nullopt;
}

void add_header_line(std::vector<Response>& chain, std::string_view line) {
    line = trim(line);
    if (line.empty()) return;
    if (line.substr(0, 5) == "HTTP/") {
        Response r;
        auto sp = line.find(' ');
        if (sp != std::string_view::npos) {
            std::string_view code = line.substr(sp + 1, 3);
            std::from_chars(code.data(), code.data() + code.size(), r.status);
        }
        chain.push_back(std::move(r));
        return;
    }
    if (chain.empty()) return;
    auto colon = line.find(':');
    if (colon == std::string_view::npos) return;
    chain.back().headers.emplace_back(lower(trim(line.substr(0, colon))),
                                      std::string(trim(line.substr(colon + 1))));
}

std::optional<std::uint64_t> parse_u64(std::string_view s) {
    s = trim(s);
    std::uint64_t v = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || p != s.data() + s.size() || s.empty()) return std::nullopt;
    return v;
}

std::optional<ContentRange> parse_content_range(std::string_view v) {
    v = trim(v);
    if (v.substr(0, 6) != "bytes ") return std::nullopt;
    v.remove_prefix(6);
    auto dash = v.find('-');
    auto slash = v.find('/');
    if (dash == std::string_view::npos || slash == std::string_view::npos || dash > slash)
        return std::nullopt;
    ContentRange cr;
    auto a = parse_u64(v.substr(0, dash));
    auto b = parse_u64(v.substr(dash + 1, slash - dash - 1));
    if (!a || !b || *b < *a) return std::nullopt;
    cr.first = *a;
    cr.last = *b;
    std::string_view tot = v.substr(slash + 1);
    if (tot != "*") {
        cr.total = parse_u64(tot);
        if (!cr.total) return std::nullopt;
    }
    return cr;
}

std::optional<Sha256> stated_sha256(const std::vector<Response>& chain) {
    // Hugging Face answers an LFS file with a redirect carrying X-Linked-Etag (the SHA-256); the
    // CDN it redirects to knows nothing of it. So look at every response, the first ones first.
    for (const auto& r : chain)
        if (auto v = r.get("x-linked-etag"))
            if (auto h = from_etag(*v)) return h;
    for (const auto& r : chain) {
        if (auto v = r.get("x-amz-checksum-sha256"))
            if (auto h = from_base64(*v)) return h;
        if (auto v = r.get("x-amz-meta-sha256"))
            if (auto h = Sha256::from_hex(lower(trim(*v)))) return h;
        if (auto v = r.get("repr-digest"))
            if (auto h = from_digest_header(*v)) return h;
        if (auto v = r.get("digest"))
            if (auto h = from_digest_header(*v)) return h;
    }
    for (const auto& r : chain)
        if (auto v = r.get("etag"))
            if (auto h = from_etag(*v)) return h;
    return std::nullopt;
}

SlistPtr setup_request(CURL* c, const HttpTarget& t, const FetchConfig& cfg,
                       const std::vector<std::string>& extra) {
    curl_easy_setopt(c, CURLOPT_URL, t.url.c_str());
    curl_slist* list = nullptr;
    for (const auto& h : t.headers) list = curl_slist_append(list, h.c_str());
    for (const auto& h : extra) list = curl_slist_append(list, h.c_str());
    SlistPtr headers(list);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers.get());
    if (!t.aws_sigv4.empty()) {
        curl_easy_setopt(c, CURLOPT_AWS_SIGV4, t.aws_sigv4.c_str());
        curl_easy_setopt(c, CURLOPT_USERPWD, t.userpwd.c_str());
    }
    // Redirects are followed by the caller, through redirect_target(): libcurl would send our
    // custom headers (x-amz-security-token, ...) to wherever a server points it.
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_USERAGENT, cfg.user_agent.c_str());
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS,
                     static_cast<long>(std::chrono::milliseconds(cfg.connect_timeout).count()));
    curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
    return headers;
}

}  // namespace modelfs::fetch::detail
