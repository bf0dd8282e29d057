// Requests: the ranges still to fetch, starting requests within the connection limits, judging a
// response when its body starts, and writing the body into the partial file.
#include <fcntl.h>

#include <algorithm>

#include <spdlog/spdlog.h>

#include "engine.h"
#include "modelfs/fetch/redirect.h"
#include "modelfs/store/blob_store.h"
#include "modelfs/store/errors.h"
#include "transfer_limits.h"

namespace modelfs::fetch::detail {

// Requests

namespace {

// The validator of a response for If-Range and change detection: a strong ETag as sent, else
// "lm:" + Last-Modified (compared, never sent).
std::string validator_of(const Response* r) {
    if (!r) return {};
    if (auto e = r->get("etag"); e && !e->empty() && e->rfind("W/", 0) != 0) return *e;
    if (auto lm = r->get("last-modified"); lm && !lm->empty()) return "lm:" + *lm;
    return {};
}

}  // namespace

void Engine::replan(Active& a) {
    a.pending.clear();
    if (a.over) return;
    if (!a.size_known) {
        if (a.live_requests() == 0) a.pending.push_back({0, kUnknown});
        return;
    }
    RangeSet covered;
    {
        std::lock_guard lk(a.dl->m_);
        covered = a.dl->done_;
    }
    for (const auto& r : a.requests)
        if (!r->cancelled) covered.add(r->pos, r->end);
    const std::uint64_t chunk = cfg.chunk_size;
    for (auto [b, e] : covered.gaps(a.size)) {
        while (b < e) {
            std::uint64_t next = std::min(e, (b / chunk + 1) * chunk);
            a.pending.push_back({b, next});
            b = next;
        }
    }
}

void Engine::schedule() {
    auto now = Clock::now();
    for (auto& ap : actives) {
        Active& a = *ap;
        if (a.over) continue;
        const SourceState& src = a.srcs[a.cur];
        unsigned live = a.live_requests();
        // Until a server has answered a range with 206 it may not support them: one request.
        unsigned limit = src.ranges == RangeSupport::yes ? cfg.connections_per_blob : 1;
        while (!a.pending.empty()) {
            auto it = std::find_if(a.pending.begin(), a.pending.end(),
                                   [&](const Task& t) { return t.not_before <= now; });
            if (it == a.pending.end()) break;
            // A range a reader waits for may use one connection more than the blob's share.
            if (live >= limit + (it->priority && src.ranges == RangeSupport::yes ? 1 : 0)) break;
            if (total_inflight >= cfg.max_connections) return;
            if (host_inflight[src.target->host] >= cfg.max_per_host) break;
            Task t = *it;
            a.pending.erase(it);
            start_request(a, t);
            ++live;
        }
    }
}

void Engine::start_request(Active& a, const Task& t, const HttpTarget* via, unsigned redirects) {
    SourceState& src = a.srcs[a.cur];
    auto r = std::make_unique<Request>();
    r->impl = this;
    r->a = &a;
    r->begin = r->pos = t.begin;
    r->end = t.end;
    r->attempts = t.attempts;
    r->priority = t.priority;
    r->source = a.cur;
    r->gen = a.gen;
    r->target = via ? *via : *src.target;
    r->redirects = redirects;
    r->host = r->target.host;
    r->ranged = a.size_known && src.ranges != RangeSupport::no;
    r->easy.reset(curl_easy_init());
    if (!r->easy) throw StoreError(ErrorKind::io, "libcurl could not create a request");
    std::vector<std::string> extra;
    if (r->ranged) {
        extra.push_back("Range: bytes=" + std::to_string(t.begin) + "-" +
                        std::to_string(t.end - 1));
        // A strong ETag: if the file changed, the server sends all of the new one (200)
        // instead of a range of it, and we start over.
        if (!src.validator.empty() && src.validator.front() == '"')
            extra.push_back("If-Range: " + src.validator);
    }
    CURL* c = r->easy.get();
    r->headers = setup_request(c, r->target, cfg, extra);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, r->errbuf);
    curl_easy_setopt(c, CURLOPT_PRIVATE, r.get());
    curl_easy_setopt(c, CURLOPT_BUFFERSIZE, kCurlBuffer);
    // Parallel connections, not HTTP/2 streams sharing one: that is what makes ranges faster.
    curl_easy_setopt(c, CURLOPT_HTTP_VERSION, static_cast<long>(CURL_HTTP_VERSION_1_1));
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME,
                     std::max(1L, static_cast<long>(cfg.stall_timeout.count())));
    curl_easy_setopt(
        c, CURLOPT_HEADERFUNCTION, +[](char* d, size_t s, size_t n, void* u) -> size_t {
            add_header_line(static_cast<Request*>(u)->chain, std::string_view(d, s * n));
            return s * n;
        });
    curl_easy_setopt(c, CURLOPT_HEADERDATA, r.get());
    curl_easy_setopt(
        c, CURLOPT_WRITEFUNCTION, +[](char* d, size_t s, size_t n, void* u) -> size_t {
            auto* req = static_cast<Request*>(u);
            return req->impl->on_data(*req, d, s * n);
        });
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r.get());
    CURLMcode mc = curl_multi_add_handle(multi.get(), c);
    if (mc != CURLM_OK)
        throw StoreError(ErrorKind::io, std::string("libcurl: ") + curl_multi_strerror(mc));
    ++total_inflight;
    ++host_inflight[r->host];
    {
        std::lock_guard lk(a.dl->m_);
        ++a.dl->requests_;
    }
    spdlog::debug("GET {} {}", src.shown,
                  r->ranged ? "bytes=" + std::to_string(t.begin) + "-" + std::to_string(t.end - 1)
                            : std::string("(whole file)"));
    a.requests.push_back(std::move(r));
}

// Looks at the response headers when the body starts (or the request ends without one) and
// decides whether its bytes go to the partial file.
void Engine::check_response(Active& a, Request& r) {
    r.checked = true;
    curl_easy_getinfo(r.easy.get(), CURLINFO_RESPONSE_CODE, &r.status);
    if (r.status != 200 && r.status != 206) return;  // judged when the request ends
    SourceState& src = a.srcs[r.source];
    const Response* last = r.chain.empty() ? nullptr : &r.chain.back();
    auto header = [&](const char* n) { return last ? last->get(n) : std::nullopt; };
    const std::string validator = validator_of(last);
    const std::string what = "GET " + src.shown;

    if (r.status == 206) {
        std::optional<ContentRange> cr;
        if (auto v = header("content-range")) cr = parse_content_range(*v);
        if (!r.ranged || !cr || cr->first != r.pos) {
            r.verdict = Verdict::source_bad;
            r.message = what + ": answered a range that was not asked for";
            return;
        }
        if (cr->total && *cr->total != a.size) {
            r.verdict = Verdict::source_bad;
            r.message = what + ": the file has " + std::to_string(*cr->total) +
                        " bytes there, the catalog says " + std::to_string(a.size);
            return;
        }
        if (!src.validator.empty() && !validator.empty() && validator != src.validator &&
            a.validator_resets < 3) {
            r.verdict = Verdict::restart;
            r.message = what + ": the file changed on the server (" + src.validator + " -> " +
                        validator + ")";
            src.validator = validator;
            return;
        }
        if (src.validator.empty() && !validator.empty()) {
            src.validator = validator;
            std::lock_guard lk(a.dl->m_);
            a.dl->validator_ = validator;
        }
        src.ranges = RangeSupport::yes;
        r.accepted = true;
        return;
    }

    // 200: the whole file from its first byte, whatever was asked.
    std::optional<std::uint64_t> length;
    if (auto v = header("content-length")) length = parse_u64(*v);
    if (a.size_known && length && *length != a.size) {
        r.verdict = Verdict::source_bad;
        r.message = what + ": the file has " + std::to_string(*length) +
                    " bytes there, the catalog says " + std::to_string(a.size);
        return;
    }
    if (!a.size_known && length) {
        if (auto why = size_refusal(*length, partial_dir)) {
            r.verdict = Verdict::source_bad;
            r.message = what + ": announces " + *why + "; refused";
            return;
        }
        a.size = *length;
        a.size_known = true;
        if (a.size > 0) ::posix_fallocate(a.fd.get(), 0, static_cast<off_t>(a.size));
        std::lock_guard lk(a.dl->m_);
        a.dl->size_ = a.size;
    }
    if (r.ranged) {
        // The server ignores ranges (or, with If-Range, the file changed): this response is the
        // one stream the blob comes from, from byte 0.
        src.ranges = RangeSupport::no;
        spdlog::info("{} does not answer ranges; downloading it in one stream", src.shown);
    }
    src.validator = validator;
    reset_all(a, &r);
    {
        std::lock_guard lk(a.dl->m_);
        a.dl->validator_ = validator;
    }
    r.accepted = true;
}

std::size_t Engine::on_data(Request& r, const char* data, std::size_t len) {
    try {
        Active& a = *r.a;
        if (r.cancelled || r.gen != a.gen) return 0;
        if (!r.checked) check_response(a, r);
        if (r.verdict != Verdict::ok) return 0;
        if (!r.accepted) {
            // An error page: keep its start for the message.
            if (r.error_body.size() < 300)
                r.error_body.append(data, std::min(len, 300 - r.error_body.size()));
            return len;
        }
        if (rate > 0) {
            if (tokens <= 0) {
                r.paused = true;
                r.paused_at = Clock::now();
                paused.push_back(&r);
                return CURL_WRITEFUNC_PAUSE;
            }
            tokens -= static_cast<double>(len);
        }
        // Nothing past what was asked (or, for a file of unknown size, past what a file may be)
        // is written: a server sending more is refused at once, not retried.
        if (r.end != kUnknown && len > r.end - r.pos) {
            r.verdict = Verdict::source_bad;
            r.message = "GET " + a.srcs[r.source].shown + ": the server sent more than " +
                        std::to_string(r.end - r.begin) + " bytes" +
                        (a.size_known && r.end == a.size ? " (the size of the file); refused"
                                                         : " (what was asked); refused");
            return 0;
        }
        // (The free space shrinks as this writes: past the size check, a full disk is ENOSPC.)
        if (r.end == kUnknown)
            if (auto why = size_refusal(r.pos + len, {})) {
                r.verdict = Verdict::source_bad;
                r.message = "GET " + a.srcs[r.source].shown + ": sent " + *why + "; refused";
                return 0;
            }
        pwrite_all(a.fd.get(), data, len, r.pos, a.part.string());
        r.last_data = Clock::now();
        {
            std::lock_guard lk(a.dl->m_);
            a.dl->done_.add(r.pos, r.pos + len);
        }
        r.pos += len;
        a.window_bytes += len;
        a.new_bytes = true;
        return len;
    } catch (const StoreError& e) {
        r.verdict = Verdict::fatal;
        r.message = e.what();
        return 0;
    } catch (const std::exception& e) {
        r.verdict = Verdict::fatal;
        r.message = e.what();
        return 0;
    }
}

void Engine::drop_request(Request* r) {
    curl_multi_remove_handle(multi.get(), r->easy.get());
    if (total_inflight) --total_inflight;
    if (auto it = host_inflight.find(r->host); it != host_inflight.end() && it->second)
        --it->second;
    std::erase(paused, r);
    auto& reqs = r->a->requests;
    reqs.remove_if([&](const std::unique_ptr<Request>& p) { return p.get() == r; });
}

void Engine::sweep() {
    std::vector<Request*> gone;
    for (auto& a : actives)
        for (auto& r : a->requests)
            if (r->cancelled) gone.push_back(r.get());
    for (auto* r : gone) drop_request(r);
}

void Engine::prioritize(const std::shared_ptr<DownloadImpl>& dl, std::uint64_t off,
                        std::uint64_t len) {
    auto it = std::find_if(actives.begin(), actives.end(),
                           [&](const std::unique_ptr<Active>& a) { return a->dl == dl; });
    if (it == actives.end()) {
        auto q = std::find(queue.begin(), queue.end(), dl);
        if (q != queue.end() && q != queue.begin()) {
            queue.erase(q);
            queue.push_front(dl);
        }
        return;
    }
    Active& a = **it;
    if (a.over) return;
    const std::uint64_t end = off + len;
    for (const auto& r : a.requests)
        if (!r->cancelled && r->pos <= off && off < r->end) return;  // arriving now
    // Move the tasks holding [off, end) to the front, split so the wanted part starts at once.
    std::deque<Task> front, rest;
    for (auto& t : a.pending) {
        if (t.end <= off || t.begin >= end) {
            rest.push_back(t);
            continue;
        }
        Task wanted = t;
        std::uint64_t cut = std::max(t.begin, off & ~std::uint64_t{0xffff});
        if (cut > t.begin) {
            Task head = t;
            head.end = cut;
            rest.push_back(head);
            wanted.begin = cut;
        }
        wanted.priority = true;
        wanted.not_before = std::min(wanted.not_before, Clock::now());
        front.push_back(wanted);
    }
    std::sort(rest.begin(), rest.end(),
              [](const Task& x, const Task& y) { return x.begin < y.begin; });
    for (auto t = front.rbegin(); t != front.rend(); ++t) rest.push_front(*t);
    a.pending.swap(rest);
}

}  // namespace modelfs::fetch::detail
