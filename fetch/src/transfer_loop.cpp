// The fetcher thread: its loop over the libcurl multi handle, its shutdown, and what it does each
// round besides transfers (bandwidth tokens, stalled transfers, speeds).
#include <algorithm>
#include <cmath>
#include <cstdio>

#include <spdlog/spdlog.h>

#include "engine.h"
#include "modelfs/store/errors.h"
#include "transfer_limits.h"

namespace modelfs::fetch::detail {

Engine::Engine(Store& s, FetchConfig c)
    : store(s), cfg(std::move(c)), partial_dir(s.partial_dir()) {
    curl_global();
    if (cfg.max_connections == 0) cfg.max_connections = 1;
    if (cfg.max_per_host == 0) cfg.max_per_host = 1;
    if (cfg.connections_per_blob == 0) cfg.connections_per_blob = 1;
    if (cfg.max_blobs == 0) cfg.max_blobs = 1;
    if (cfg.chunk_size < (64 << 10)) cfg.chunk_size = 64 << 10;
    limit_rate = rate = cfg.limit_rate;
    multi.reset(curl_multi_init());
    if (!multi) throw StoreError(ErrorKind::io, "libcurl could not create a transfer handle");
    curl_multi_setopt(multi.get(), CURLMOPT_MAX_HOST_CONNECTIONS,
                      static_cast<long>(cfg.max_per_host));
    curl_multi_setopt(multi.get(), CURLMOPT_MAX_TOTAL_CONNECTIONS,
                      static_cast<long>(cfg.max_connections));
    curl_multi_setopt(multi.get(), CURLMOPT_MAXCONNECTS, static_cast<long>(cfg.max_connections));
    thread = std::thread([this] { run(); });
}

Engine::~Engine() {
    {
        std::lock_guard lk(mu);
        stopping = true;
    }
    curl_multi_wakeup(multi.get());
    if (thread.joinable()) thread.join();
}

void Engine::post(std::function<void()> fn) {
    {
        std::lock_guard lk(mu);
        if (stopping) return;
        posted.push_back(std::move(fn));
    }
    curl_multi_wakeup(multi.get());
}

void Engine::run_posted() {
    std::vector<std::function<void()>> todo;
    {
        std::lock_guard lk(mu);
        todo.swap(posted);
    }
    for (auto& f : todo) {
        try {
            f();
        } catch (const std::exception& e) {
            spdlog::error("downloader: {}", e.what());
        }
    }
}

void Engine::run() {
    for (;;) {
        {
            std::lock_guard lk(mu);
            if (stopping) break;
        }
        try {
            run_posted();
            auto now = Clock::now();
            activate_queued();
            poll_waiting();
            refill_tokens(now);
            schedule();
            int running = 0;
            curl_multi_perform(multi.get(), &running);
            int left = 0;
            while (CURLMsg* m = curl_multi_info_read(multi.get(), &left)) {
                if (m->msg != CURLMSG_DONE) continue;
                Request* r = nullptr;
                curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, reinterpret_cast<char**>(&r));
                request_done(r, m->data.result);
            }
            check_stalls(Clock::now());
            check_deadlines(Clock::now());
            sweep();
            for (auto& a : actives) {
                if (a->new_bytes) {
                    a->new_bytes = false;
                    a->dl->cv_.notify_all();
                    fire_waiters(*a->dl);
                }
                check_complete(*a);
            }
            update_speeds(Clock::now());
            // Fill the connections that just finished before sleeping: nothing else would wake
            // the poll for them. (A new handle makes libcurl's timeout zero, so the poll below
            // returns at once to start it.)
            activate_queued();
            schedule();
            // Sleep until curl has something to do, a posted task, a retry falls due, the next
            // check on another process, or the bandwidth bucket refills.
            now = Clock::now();
            milliseconds wait(500);
            auto until = [&](Clock::time_point t) {
                auto d = std::chrono::duration_cast<milliseconds>(t - now) + milliseconds(1);
                wait = std::min(wait, std::max(d, milliseconds(0)));
            };
            // (Tasks that are due but wait for a connection start when a request ends, which
            // wakes the poll; counting them here would spin.)
            for (auto& a : actives)
                if (!a->over)
                    for (const auto& t : a->pending)
                        if (t.not_before > now) until(t.not_before);
            for (auto& w : waiting) until(w.next_poll);
            if (!paused.empty() && rate > 0) {
                double need = -tokens + 1;
                until(now + milliseconds(static_cast<long>(std::ceil(need * 1000.0 / rate))));
            }
            if (!queue.empty() && actives.size() < cfg.max_blobs) wait = milliseconds(0);
            int fds = 0;
            curl_multi_poll(multi.get(), nullptr, 0, static_cast<int>(wait.count()), &fds);
        } catch (const std::exception& e) {
            spdlog::error("downloader: {}", e.what());
            std::this_thread::sleep_for(milliseconds(50));
        }
    }
    shutdown();
}

void Engine::shutdown() {
    std::vector<std::shared_ptr<DownloadImpl>> interrupted;
    for (auto& a : actives) {
        for (auto& r : a->requests) {
            curl_multi_remove_handle(multi.get(), r->easy.get());
        }
        a->requests.clear();
        {
            std::lock_guard lk(a->dl->m_);
            a->dl->cmd_ = DownloadImpl::Cmd::stop;
        }
        a->stop_flag = true;
        a->dl->cv_.notify_all();
    }
    for (auto& a : actives) {
        if (a->worker.joinable()) a->worker.join();
        a->fd.reset();
        // The worker may have committed the blob just before it saw the stop.
        try {
            if (auto real = blob_present(*a->dl)) a->dl->finish({true, *real, {}});
        } catch (const std::exception&) {
        }
        interrupted.push_back(a->dl);
    }
    actives.clear();
    paused.clear();
    for (auto& w : waiting) interrupted.push_back(w.dl);
    waiting.clear();
    for (auto& d : queue) interrupted.push_back(d);
    queue.clear();
    {
        std::lock_guard lk(mu);
        for (auto& [k, d] : live) interrupted.push_back(d);
        live.clear();
        posted.clear();
    }
    for (auto& d : interrupted)
        d->finish({false, d->key_,
                   "interrupted: the downloader stopped (the partial download is kept and "
                   "resumes next time)"});
}

void Engine::refill_tokens(Clock::time_point now) {
    {
        std::lock_guard lk(mu);
        rate = limit_rate;
    }
    double dt = std::chrono::duration<double>(now - refilled).count();
    refilled = now;
    if (rate == 0) {
        tokens = 0;
    } else {
        // A quarter second of burst: smooth enough, and a paused transfer resumes with a
        // useful amount to read.
        double cap = std::max(static_cast<double>(rate) / 4, static_cast<double>(kCurlBuffer));
        tokens = std::min(cap, tokens + dt * static_cast<double>(rate));
    }
    if (!paused.empty() && (rate == 0 || tokens > 0)) {
        std::vector<Request*> resume;
        resume.swap(paused);
        for (Request* r : resume) {
            r->paused = false;
            r->last_data = now;
            // Time held back by our own bandwidth limit does not count against its deadline.
            r->started += now - r->paused_at;
            // May deliver the held data (and pause again) right here.
            curl_easy_pause(r->easy.get(), CURLPAUSE_CONT);
        }
    }
}

// libcurl's low-speed check averages over several seconds, so a transfer that stops after a burst
// is noticed late; this notices it stall_timeout after its last byte. (The low-speed check stays
// as the guard for connections that never send anything.)
void Engine::check_stalls(Clock::time_point now) {
    std::vector<Request*> stalled;
    for (auto& a : actives)
        for (auto& r : a->requests)
            if (!r->cancelled && !r->paused && r->checked && r->accepted &&
                now - r->last_data >= cfg.stall_timeout)
                stalled.push_back(r.get());
    for (Request* r : stalled) {
        std::snprintf(r->errbuf, sizeof r->errbuf, "no data for %lld s",
                      static_cast<long long>(cfg.stall_timeout.count()));
        request_done(r, CURLE_OPERATION_TIMEDOUT);
    }
}

void Engine::check_deadlines(Clock::time_point now) {
    std::vector<std::pair<Request*, milliseconds>> late;
    for (auto& a : actives)
        for (auto& r : a->requests) {
            if (r->cancelled || r->paused) continue;
            // What it carries: its range; a stream of unknown length earns time as it arrives.
            const std::uint64_t bytes =
                r->end != kUnknown ? r->end - r->begin : r->pos - r->begin + cfg.chunk_size;
            const milliseconds allowed = request_deadline(cfg, bytes);
            if (now - r->started >= allowed) late.emplace_back(r.get(), allowed);
        }
    for (auto [r, allowed] : late) {
        r->past_deadline = true;
        std::snprintf(r->errbuf, sizeof r->errbuf, "%s", deadline_message(cfg, allowed).c_str());
        request_done(r, CURLE_OPERATION_TIMEDOUT);
    }
}

void Engine::update_speeds(Clock::time_point now) {
    double dt = std::chrono::duration<double>(now - speed_at).count();
    if (dt < 0.5) return;
    speed_at = now;
    for (auto& a : actives) {
        double inst = static_cast<double>(a->window_bytes) / dt;
        a->window_bytes = 0;
        std::lock_guard lk(a->dl->m_);
        a->dl->bps_ =
            static_cast<std::uint64_t>(a->dl->bps_ ? 0.5 * a->dl->bps_ + 0.5 * inst : inst);
    }
}

}  // namespace modelfs::fetch::detail
