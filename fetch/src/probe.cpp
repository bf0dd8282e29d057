#include "modelfs/fetch/probe.h"

#include "curl_util.h"
#include "modelfs/fetch/redirect.h"
#include "modelfs/fetch/source.h"
#include "modelfs/store/errors.h"
#include "transfer_limits.h"

namespace modelfs::fetch {
namespace {

using namespace detail;

size_t on_header(char* data, size_t size, size_t n, void* user) {
    add_header_line(*static_cast<std::vector<Response>*>(user), std::string_view(data, size * n));
    return size * n;
}

size_t discard_body(char*, size_t size, size_t n, void*) {
    return size * n;
}

// A body kept up to a limit; the transfer stops once it is reached.
struct Prefix {
    std::string bytes;
    std::uint64_t limit = 0;
};
size_t keep_prefix(char* data, size_t size, size_t n, void* user) {
    auto* p = static_cast<Prefix*>(user);
    const std::uint64_t room = p->limit - std::min<std::uint64_t>(p->limit, p->bytes.size());
    p->bytes.append(data, static_cast<std::size_t>(std::min<std::uint64_t>(room, size * n)));
    return p->bytes.size() >= p->limit ? 0 : size * n;  // 0: enough, stop
}

struct Answer {
    std::vector<Response> chain;
    long status = 0;
    std::string effective_url;
    std::string location;  // of a redirect
};

bool is_redirect(long status) {
    return status == 301 || status == 302 || status == 303 || status == 307 || status == 308;
}

Answer ask_once(const HttpTarget& t, const FetchConfig& cfg, bool head, std::string_view shown,
                Prefix* body = nullptr) {
    EasyPtr c(curl_easy_init());
    if (!c) throw StoreError(ErrorKind::io, "libcurl could not create a request");
    std::vector<std::string> extra;
    if (body)
        extra.push_back("Range: bytes=0-" + std::to_string(body->limit ? body->limit - 1 : 0));
    else if (!head)
        extra.push_back("Range: bytes=0-0");
    // S3 states an object's SHA-256 (when it was uploaded with one) only when asked.
    if (!t.aws_sigv4.empty()) extra.push_back("x-amz-checksum-mode: ENABLED");
    SlistPtr headers = setup_request(c.get(), t, cfg, extra);
    Answer a;
    char err[CURL_ERROR_SIZE] = {};
    curl_easy_setopt(c.get(), CURLOPT_ERRORBUFFER, err);
    curl_easy_setopt(c.get(), CURLOPT_NOBODY, head ? 1L : 0L);
    curl_easy_setopt(c.get(), CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c.get(), CURLOPT_HEADERDATA, &a.chain);
    if (body) {
        body->bytes.clear();
        curl_easy_setopt(c.get(), CURLOPT_WRITEFUNCTION, keep_prefix);
        curl_easy_setopt(c.get(), CURLOPT_WRITEDATA, body);
    } else {
        curl_easy_setopt(c.get(), CURLOPT_WRITEFUNCTION, discard_body);
    }
    curl_easy_setopt(c.get(), CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(c.get(), CURLOPT_LOW_SPEED_TIME, static_cast<long>(cfg.stall_timeout.count()));
    curl_easy_setopt(c.get(), CURLOPT_TIMEOUT_MS,
                     static_cast<long>(request_deadline(cfg, 0).count()));
    CURLcode rc = curl_easy_perform(c.get());
    if (rc == CURLE_WRITE_ERROR && body && body->bytes.size() >= body->limit) rc = CURLE_OK;
    if (rc != CURLE_OK)
        throw StoreError(ErrorKind::io, std::string(head ? "HEAD " : "GET ") + std::string(shown) +
                                            ": " + (err[0] ? err : curl_easy_strerror(rc)));
    curl_easy_getinfo(c.get(), CURLINFO_RESPONSE_CODE, &a.status);
    char* eff = nullptr;
    curl_easy_getinfo(c.get(), CURLINFO_EFFECTIVE_URL, &eff);
    if (eff) a.effective_url = eff;
    char* loc = nullptr;
    curl_easy_getinfo(c.get(), CURLINFO_REDIRECT_URL, &loc);
    if (loc) a.location = loc;
    return a;
}

// ask_once, following redirects with the credentials redirect_target() allows; the chain has
// every response.
Answer ask(const HttpTarget& first, const FetchConfig& cfg, bool head, std::string_view shown,
           Prefix* body = nullptr) {
    HttpTarget t = first;
    std::vector<Response> chain;
    for (unsigned hops = 0;; ++hops) {
        Answer a = ask_once(t, cfg, head, shown, body);
        chain.insert(chain.end(), a.chain.begin(), a.chain.end());
        if (!is_redirect(a.status) || a.location.empty()) {
            a.chain = std::move(chain);
            return a;
        }
        if (hops + 1 > kMaxRedirects)
            throw StoreError(ErrorKind::io, std::string(head ? "HEAD " : "GET ") +
                                                std::string(shown) + ": more than " +
                                                std::to_string(kMaxRedirects) + " redirects");
        auto next = redirect_target(t, a.location);
        if (!next)
            throw StoreError(ErrorKind::io, std::string(head ? "HEAD " : "GET ") +
                                                std::string(shown) + ": redirected to " +
                                                redact_url(a.location) +
                                                ", which is no http(s) URL");
        t = std::move(*next);
    }
}

}  // namespace

RemoteInfo probe(std::string_view url, const FetchConfig& cfg) {
    curl_global();
    HttpTarget t = resolve_source(url, cfg);
    const std::string shown = redact_url(url);
    Answer a = ask(t, cfg, /*head=*/true, shown);
    bool head = true;
    // Some servers (and presigned URLs, signed for GET only) refuse HEAD.
    if (a.status == 405 || a.status == 501 ||
        (a.status == 403 && t.aws_sigv4.empty() && url.find('?') != std::string_view::npos)) {
        a = ask(t, cfg, /*head=*/false, shown);
        head = false;
    }
    const std::string what = std::string(head ? "HEAD " : "GET ") + shown;
    if (a.status == 404 || a.status == 410)
        throw StoreError(ErrorKind::not_found,
                         what + ": HTTP " + std::to_string(a.status) + " (no such file there)");
    if (a.status == 401 || a.status == 403)
        throw StoreError(ErrorKind::unauthorized, what + ": HTTP " + std::to_string(a.status) +
                                                      "; " + std::string(refused_hint(url)));
    if (a.status < 200 || a.status >= 300)
        throw StoreError(ErrorKind::io, what + ": HTTP " + std::to_string(a.status));

    RemoteInfo info;
    const Response* last = a.chain.empty() ? nullptr : &a.chain.back();
    for (const auto& r : a.chain)
        if (auto v = r.get("x-linked-size")) {
            info.size = parse_u64(*v);
            break;
        }
    if (last) {
        if (!info.size) {
            if (a.status == 206) {
                if (auto cr = last->get("content-range"))
                    if (auto p = parse_content_range(*cr)) info.size = p->total;
            } else if (auto cl = last->get("content-length")) {
                info.size = parse_u64(*cl);
            }
        }
        if (auto e = last->get("etag")) info.etag = *e;
        if (auto ar = last->get("accept-ranges"))
            info.accepts_ranges = ar->find("bytes") != std::string::npos;
        if (a.status == 206) info.accepts_ranges = true;
    }
    if (info.size)
        if (auto why = size_refusal(*info.size, {}))
            throw StoreError(ErrorKind::bad_input, what + ": announces " + *why + "; refused");
    info.sha256 = stated_sha256(a.chain);
    info.final_url = redact_url(a.effective_url);
    return info;
}

std::string fetch_prefix(std::string_view url, std::uint64_t length, const FetchConfig& cfg) {
    curl_global();
    HttpTarget t = resolve_source(url, cfg);
    const std::string what = "GET " + redact_url(url);
    Prefix body;
    body.limit = length;
    Answer a = ask(t, cfg, /*head=*/false, what, &body);
    if (a.status == 404 || a.status == 410)
        throw StoreError(ErrorKind::not_found,
                         what + ": HTTP " + std::to_string(a.status) + " (no such file there)");
    if (a.status == 401 || a.status == 403)
        throw StoreError(ErrorKind::unauthorized, what + ": HTTP " + std::to_string(a.status) +
                                                      "; " + std::string(refused_hint(url)));
    if (a.status != 200 && a.status != 206)
        throw StoreError(ErrorKind::io, what + ": HTTP " + std::to_string(a.status));
    return std::move(body.bytes);
}

}  // namespace modelfs::fetch
