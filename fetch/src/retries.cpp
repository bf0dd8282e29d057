// The end of a request: done, retried with backoff, the next source, or the download failed; and
// starting over when the file changed.
#include <unistd.h>

#include <algorithm>
#include <cmath>

#include <spdlog/spdlog.h>

#include "engine.h"
#include "modelfs/fetch/redirect.h"

namespace modelfs::fetch::detail {

milliseconds Engine::backoff(unsigned attempt, long retry_after_s) {
    double base = static_cast<double>(cfg.backoff_initial.count());
    double d = base * std::pow(2.0, std::min(attempt, 20u) - 1.0);
    d = std::min(d, static_cast<double>(cfg.backoff_max.count()));
    // Jitter: clients that failed together do not all come back together.
    d *= std::uniform_real_distribution<double>(0.5, 1.0)(rng);
    if (retry_after_s > 0) d = std::max(d, retry_after_s * 1000.0);
    d = std::min(d, static_cast<double>(cfg.backoff_max.count()));
    return milliseconds(static_cast<long>(d));
}

void Engine::request_done(Request* r, CURLcode rc) {
    Active& a = *r->a;
    if (!r->checked && !r->cancelled && r->verdict == Verdict::ok) check_response(a, *r);
    if (r->cancelled || r->gen != a.gen || a.over) {
        drop_request(r);
        return;
    }
    curl_off_t retry_after = 0;
    curl_easy_getinfo(r->easy.get(), CURLINFO_RETRY_AFTER, &retry_after);
    const SourceState& src = a.srcs[r->source];
    const std::string what = "GET " + src.shown;
    // Copy what is needed: dropping the request frees it.
    const Verdict verdict = r->verdict;
    const std::string message = r->message;
    const long status = r->status;
    const bool accepted = r->accepted;
    const std::uint64_t begin = r->begin, pos = r->pos, end = r->end;
    const unsigned attempts = r->attempts;
    const bool priority = r->priority;
    const std::string curl_error = r->errbuf[0] ? r->errbuf : curl_easy_strerror(rc);
    const bool past_deadline = r->past_deadline;
    std::string body = r->error_body;
    if (!accepted && verdict == Verdict::ok && rc == CURLE_OK &&
        (status == 301 || status == 302 || status == 303 || status == 307 || status == 308)) {
        char* loc = nullptr;
        curl_easy_getinfo(r->easy.get(), CURLINFO_REDIRECT_URL, &loc);
        const std::string location = loc ? loc : "";
        const HttpTarget from = r->target;
        const unsigned redirects = r->redirects;
        drop_request(r);
        follow_redirect(a, from, location, redirects, Task{begin, end, attempts, {}, priority});
        return;
    }
    drop_request(r);

    switch (verdict) {
        case Verdict::fatal:
            transfer_failed(a, message, false);
            return;
        case Verdict::restart:
            spdlog::warn("{}; starting over", message);
            ++a.validator_resets;
            reset_all(a, nullptr);
            return;
        case Verdict::source_bad:
            source_failed(a, message);
            return;
        default:
            break;
    }
    if (rc == CURLE_OK && accepted && (end == kUnknown || pos >= end)) {
        if (end == kUnknown) {
            // A stream of unknown length ended: that was the file.
            a.size = pos;
            a.size_known = true;
            std::lock_guard lk(a.dl->m_);
            a.dl->size_ = pos;
        }
        return;  // check_complete notices the end
    }

    std::string why;
    if (!accepted && status >= 400) {
        why = what + ": HTTP " + std::to_string(status);
        while (!body.empty() && (body.back() == '\n' || body.back() == '\r')) body.pop_back();
        if (status == 404 || status == 410) {
            source_failed(a, why + " (no such file there)");
            return;
        }
        if (status == 401 || status == 403) {
            source_failed(a, why + "; " + std::string(refused_hint(src.url)));
            return;
        }
        if (status == 416) {
            source_failed(a, why + " (the file there is smaller than the catalog says)");
            return;
        }
        if (status < 500 && status != 408 && status != 429) {
            source_failed(a, why);
            return;
        }
        if (retry_after > 0) why += " (Retry-After: " + std::to_string(retry_after) + " s)";
    } else if (verdict == Verdict::transient) {
        why = message;
    } else if (rc != CURLE_OK) {
        why = what + ": " + curl_error;
        if (rc == CURLE_OPERATION_TIMEDOUT && !past_deadline) why += " (stalled)";
    } else if (accepted) {
        why = what + ": the connection closed after " + std::to_string(pos - begin) + " of " +
              std::to_string(end - begin) + " bytes";
    } else {
        why = what + ": unexpected HTTP status " + std::to_string(status);
    }

    unsigned next = attempts + 1;
    // It was making progress, unless too slowly: a trickle must not buy endless retries.
    if (pos - begin >= kProgressResetsRetries && !past_deadline) next = 1;
    if (next > cfg.retries) {
        source_failed(a, why + " (gave up after " + std::to_string(next) + " attempts)");
        return;
    }
    auto delay = backoff(next, static_cast<long>(retry_after));
    spdlog::info("{}; retrying in {} ms", why, delay.count());
    Task t{pos, end, next, Clock::now() + delay, priority};
    if (!a.size_known || a.srcs[a.cur].ranges == RangeSupport::no) {
        // No ranges here: the only way to resume is from the start.
        reset_all(a, nullptr);
        a.pending.clear();
        t.begin = 0;
        t.end = a.size_known ? a.size : kUnknown;
    }
    a.pending.push_front(t);
}

void Engine::follow_redirect(Active& a, const HttpTarget& from, const std::string& location,
                             unsigned redirects, const Task& t) {
    const std::string what = "GET " + a.srcs[a.cur].shown;
    if (location.empty()) {
        source_failed(a, what + ": a redirect without a Location");
        return;
    }
    if (redirects >= kMaxRedirects) {
        source_failed(a, what + ": more than " + std::to_string(kMaxRedirects) + " redirects");
        return;
    }
    auto next = redirect_target(from, location);
    if (!next) {
        source_failed(
            a, what + ": redirected to " + redact_url(location) + ", which is no http(s) URL");
        return;
    }
    spdlog::debug("{} redirected to {}{}", what, redact_url(location),
                  next->headers.empty() && next->aws_sigv4.empty() ? "" : " (same origin)");
    start_request(a, t, &*next, redirects + 1);
}

void Engine::reset_all(Active& a, Request* keep) {
    DownloadImpl& dl = *a.dl;
    {
        std::lock_guard pl(a.persist_mu);
        ::unlink(a.state.c_str());
        std::lock_guard lk(dl.m_);
        ++dl.gen_;
        a.gen = dl.gen_;
        a.gen_atomic = a.gen;
        dl.done_.clear();
        dl.complete_ = false;
    }
    for (auto& r : a.requests)
        if (r.get() != keep) r->cancelled = true;
    a.pending.clear();
    if (keep) {
        keep->gen = a.gen;
        keep->begin = keep->pos = 0;
        keep->end = a.size_known ? a.size : kUnknown;
    } else {
        replan(a);
    }
    dl.cv_.notify_all();
}

void Engine::source_failed(Active& a, const std::string& msg) {
    SourceState& src = a.srcs[a.cur];
    src.failed = true;
    a.errors.push_back(msg);
    for (auto& r : a.requests) r->cancelled = true;
    std::size_t next = a.srcs.size();
    for (std::size_t i = 1; i <= a.srcs.size(); ++i) {
        std::size_t j = (a.cur + i) % a.srcs.size();
        if (!a.srcs[j].failed) {
            next = j;
            break;
        }
    }
    if (next == a.srcs.size()) {
        transfer_failed(a, join(a.errors, "; "), false);
        return;
    }
    spdlog::warn("{}; trying {}", msg, a.srcs[next].shown);
    a.cur = next;
    {
        std::lock_guard lk(a.dl->m_);
        a.dl->source_ = next;
        a.dl->validator_ = a.srcs[next].validator;
    }
    // Mirrors of a known hash hold the same bytes: keep what arrived. A placeholder's mirror may
    // hold another file, so that starts over.
    if (a.dl->placeholder_)
        reset_all(a, nullptr);
    else
        replan(a);
}

void Engine::transfer_failed(Active& a, const std::string& msg, bool discard) {
    if (a.over && a.failed) return;
    a.over = true;
    a.failed = true;
    for (auto& r : a.requests) r->cancelled = true;
    a.pending.clear();
    // Debug only: every caller gets the message (the mount logs it with the path, `modelfs
    // fetch` prints it in its summary) and it is recorded for `modelfs status`; logged once.
    spdlog::debug("download of blob {} failed: {}", a.dl->key_.hex(), msg);
    {
        std::lock_guard lk(a.dl->m_);
        a.dl->cmd_ = DownloadImpl::Cmd::fail;
        a.dl->cmd_msg_ = msg;
        a.dl->cmd_discard_ = discard;
    }
    a.stop_flag = true;
    a.dl->cv_.notify_all();
}

void Engine::check_complete(Active& a) {
    if (a.over || !a.size_known || a.live_requests() > 0) return;
    {
        std::lock_guard lk(a.dl->m_);
        if (!a.dl->done_.contains(0, a.size)) return;
        a.dl->complete_ = true;
    }
    a.over = true;
    a.pending.clear();
    a.dl->cv_.notify_all();
}

}  // namespace modelfs::fetch::detail
