// The downloader's transfers, worker and public API over the Engine of engine.h.
#include "modelfs/fetch/fetcher.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>

#include <spdlog/spdlog.h>

#include "engine.h"
#include "modelfs/fetch/source.h"
#include "modelfs/store/blob_store.h"
#include "modelfs/store/errors.h"
#include "modelfs/store/unique_fd.h"
#include "partial_state.h"

namespace modelfs::fetch::detail {

FetchStatus DownloadImpl::status() const {
    std::lock_guard lk(m_);
    FetchStatus s;
    s.key = key_;
    if (result_ && result_->ok)
        s.blob = result_->blob;
    else if (!placeholder_)
        s.blob = key_;
    s.name = name_;
    s.size = size_;
    s.state = state_;
    if (result_ && result_->ok)
        s.done_bytes = size_;
    else
        s.done_bytes = other_process_ ? other_done_ : done_.total();
    s.bytes_per_second = bps_;
    if (source_ < sources_.size()) s.source = redact_url(sources_[source_].url);
    if (result_ && !result_->ok) s.error = result_->error;
    s.requests = requests_;
    s.other_process = other_process_;
    return s;
}

int DownloadImpl::partial_fd() const {
    std::lock_guard lk(m_);
    if (!read_fd_ && result_ && result_->ok) {
        // Done before this process opened a partial file (present already, or downloaded by
        // another process): the blob holds the same bytes at the same offsets.
        std::string hex = result_->blob.hex();
        fs::path p = store_.root() / "blobs" / "sha256" / hex.substr(0, 2) / hex;
        read_fd_.reset(::open(p.c_str(), O_RDONLY | O_CLOEXEC));
    }
    return read_fd_ ? read_fd_.get() : -1;
}

bool DownloadImpl::finish(FetchResult r) {
    std::vector<std::function<void(const FetchResult&)>> fns;
    std::vector<Waiter> ws;
    {
        std::lock_guard lk(m_);
        if (result_) return false;
        result_ = r;
        state_ = r.ok ? FetchState::done : FetchState::failed;
        owner_ = nullptr;
        bps_ = 0;
        fns.swap(done_fns_);
        ws.swap(waiters_);
    }
    for (auto& w : ws) {
        try {
            w.fn(r.ok);
        } catch (const std::exception& e) {
            spdlog::error("a range callback of blob {} threw: {}", key_.hex(), e.what());
        }
    }
    for (auto& f : fns) {
        try {
            f(r);
        } catch (const std::exception& e) {
            spdlog::error("a completion callback of blob {} threw: {}", key_.hex(), e.what());
        }
    }
    // Whoever waits sees the callbacks' effects.
    {
        std::lock_guard lk(m_);
        settled_ = true;
    }
    cv_.notify_all();
    return true;
}

// ---------------------------------------------------------------------------------------------

void DownloadImpl::on_range(std::uint64_t offset, std::uint64_t length,
                            std::function<void(bool)> fn) {
    std::unique_lock lk(m_);
    if (result_) {
        bool ok = result_->ok;
        lk.unlock();
        fn(ok);
        return;
    }
    std::uint64_t end = size_ ? std::min(size_, offset + length) : offset + length;
    if (offset >= end || done_.contains(offset, end)) {
        lk.unlock();
        fn(true);
        return;
    }
    waiters_.push_back({offset, end, std::move(fn)});
    // The download may be queued or in flight; the fetcher thread moves the range to the front.
    // owner_ is valid while m_ is held (the Fetcher clears it, under m_, before it goes away).
    // Lock order: a download's m_, then the Fetcher's mu; nothing takes them the other way.
    if (Engine* owner = owner_)
        owner->post([owner, self = shared_from_this(), offset, end] {
            owner->prioritize(self, offset, end - offset);
        });
}

// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// Queue, activation, other processes

void Engine::enqueue(std::shared_ptr<DownloadImpl> dl) {
    queue.push_back(std::move(dl));
}

void Engine::activate_queued() {
    while (!queue.empty() && actives.size() < cfg.max_blobs) {
        auto dl = queue.front();
        queue.pop_front();
        try {
            activate(dl);
        } catch (const std::exception& e) {
            spdlog::error("download of blob {}: {}", dl->key_.hex(), e.what());
            try {
                store.record_fetch_error(dl->key_, e.what());
            } catch (const std::exception&) {
            }
            complete(dl, {false, dl->key_, e.what()});
        }
    }
}

std::optional<Sha256> Engine::blob_present(const DownloadImpl& dl) {
    auto txn = store.catalog().read();
    if (auto rec = txn.get_blob(dl.key_)) {
        if (rec->state == BlobState::present && !rec->placeholder && store.blobs().exists(dl.key_))
            return dl.key_;
        return std::nullopt;
    }
    if (!dl.placeholder_ || dl.sources_.empty()) return std::nullopt;
    // The placeholder record is gone: another download replaced it by the real hash. Find the
    // blob by the URL the placeholder stood for.
    std::optional<Sha256> found;
    const std::string& url = dl.sources_.front().url;
    txn.for_each_blob([&](const Sha256& h, const BlobRecord& r) {
        if (found || r.state != BlobState::present) return;
        for (const auto& s : r.sources)
            if (s.url == url) found = h;
    });
    return found;
}

void Engine::activate(const std::shared_ptr<DownloadImpl>& dl) {
    std::error_code ec;
    fs::create_directories(partial_dir, ec);
    fs::path part = part_path(partial_dir, dl->key_);
    fs::path statef = state_path(partial_dir, dl->key_);
    if (auto real = blob_present(*dl)) {
        complete(dl, {true, *real, {}});
        return;
    }
    UniqueFd fd;
    for (int attempt = 0;; ++attempt) {
        fd.reset(::open(part.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
        if (!fd && errno == EACCES && attempt == 0) {
            // Read-only: linked into blobs/ by a commit that crashed before the catalog had it.
            // The orphan blob stays for gc; this download starts afresh.
            ::unlink(part.c_str());
            ::unlink(statef.c_str());
            continue;
        }
        if (!fd) throw_errno("opening " + part.string(), errno);
        if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
            if (errno != EWOULDBLOCK) throw_errno("locking " + part.string(), errno);
            // Another process downloads it: wait for that one instead of downloading twice.
            {
                std::lock_guard lk(dl->m_);
                dl->other_process_ = true;
                dl->state_ = FetchState::queued;
            }
            spdlog::info("blob {} is being downloaded by another process; waiting for it",
                         dl->key_.hex());
            waiting.push_back({dl, std::move(fd), Clock::now(), Clock::now()});
            return;
        }
        // The holder may have finished (and unlinked the file) between our open and flock.
        struct stat a, b;
        if (::fstat(fd.get(), &a) == 0 && ::stat(part.c_str(), &b) == 0 && a.st_ino == b.st_ino &&
            a.st_dev == b.st_dev)
            break;
        if (attempt > 10) throw StoreError(ErrorKind::io, "could not lock " + part.string());
    }
    if (auto real = blob_present(*dl)) {
        ::unlink(statef.c_str());
        ::unlink(part.c_str());
        complete(dl, {true, *real, {}});
        return;
    }

    auto a = std::make_unique<Active>();
    a->dl = dl;
    a->part = part;
    a->state = statef;
    a->fd = std::move(fd);
    {
        std::lock_guard lk(dl->m_);
        a->size = dl->size_;
        a->gen = dl->gen_;
        a->gen_atomic = a->gen;
    }
    a->size_known = a->size > 0 || !dl->placeholder_;
    for (const auto& s : dl->sources_) {
        SourceState st;
        st.url = s.url;
        st.shown = redact_url(s.url);
        try {
            st.target = resolve_source(s.url, cfg);
        } catch (const StoreError& e) {
            st.failed = true;
            a->errors.push_back(e.what());
        }
        a->srcs.push_back(std::move(st));
    }
    auto first = std::find_if(a->srcs.begin(), a->srcs.end(),
                              [](const SourceState& s) { return !s.failed; });
    if (first == a->srcs.end()) {
        std::string msg = a->errors.empty() ? "no usable source" : join(a->errors, "; ");
        ::unlink(part.c_str());
        a->fd.reset();
        store.record_fetch_error(dl->key_, msg);
        complete(dl, {false, dl->key_, msg});
        return;
    }
    a->cur = static_cast<std::size_t>(first - a->srcs.begin());

    // Resume from what an earlier run left, when it still fits.
    struct stat st;
    if (::fstat(a->fd.get(), &st) != 0) throw_errno("reading " + part.string(), errno);
    std::optional<PartialState> saved;
    if (a->size_known) saved = read_state(statef);
    if (saved && (saved->key != dl->key_ || saved->size != a->size ||
                  static_cast<std::uint64_t>(st.st_size) != a->size))
        saved.reset();
    if (saved && dl->placeholder_ && saved->source != a->srcs[a->cur].url) saved.reset();
    if (!saved) ::unlink(statef.c_str());
    if (a->size_known) {
        if (static_cast<std::uint64_t>(st.st_size) > a->size &&
            ::ftruncate(a->fd.get(), static_cast<off_t>(a->size)) != 0)
            throw_errno("truncating " + part.string(), errno);
        if (a->size > 0) {
            int rc = ::posix_fallocate(a->fd.get(), 0, static_cast<off_t>(a->size));
            if (rc == ENOSPC || rc == EDQUOT)
                throw_errno("reserving " + std::to_string(a->size) + " bytes for " + part.string(),
                            rc);
            if (rc != 0 && ::ftruncate(a->fd.get(), static_cast<off_t>(a->size)) != 0)
                throw_errno("sizing " + part.string(), errno);
        }
    }
    {
        std::lock_guard lk(dl->m_);
        dl->done_.clear();
        if (saved) {
            dl->done_ = saved->done;
            for (auto& s : a->srcs)
                if (s.url == saved->source) s.validator = saved->validator;
        }
        dl->validator_ = a->srcs[a->cur].validator;
        dl->source_ = a->cur;
        dl->other_process_ = false;
        dl->state_ = FetchState::running;
        dl->complete_ = false;
        dl->cmd_ = DownloadImpl::Cmd::none;
        dl->read_fd_.reset(::open(part.c_str(), O_RDONLY | O_CLOEXEC));
    }
    if (saved)
        spdlog::info("resuming blob {}: {} of {} bytes already there", dl->key_.hex(),
                     saved->done.total(), a->size);
    replan(*a);
    Active& ref = *a;
    actives.push_back(std::move(a));
    ref.worker = std::thread([this, &ref] { worker_main(ref); });
    fire_waiters(*dl);
    check_complete(ref);
}

void Engine::poll_waiting() {
    auto now = Clock::now();
    for (auto it = waiting.begin(); it != waiting.end();) {
        if (now < it->next_poll) {
            ++it;
            continue;
        }
        it->next_poll = now + kOtherProcessPoll;
        auto dl = it->dl;
        if (auto real = blob_present(*dl)) {
            it = waiting.erase(it);
            complete(dl, {true, *real, {}});
            continue;
        }
        if (::flock(it->fd.get(), LOCK_EX | LOCK_NB) == 0) {
            // The other process is gone (or gave up) without the blob: take over, resuming
            // from what it left.
            it->fd.reset();
            {
                std::lock_guard lk(dl->m_);
                dl->other_process_ = false;
            }
            queue.push_front(dl);
            it = waiting.erase(it);
            continue;
        }
        if (now >= it->next_progress) {
            it->next_progress = now + milliseconds(1000);
            if (auto s = read_state(state_path(partial_dir, dl->key_))) {
                std::lock_guard lk(dl->m_);
                dl->other_done_ = s->done.total();
            }
        }
        ++it;
    }
}

void Engine::complete(const std::shared_ptr<DownloadImpl>& dl, FetchResult r) {
    {
        std::lock_guard lk(mu);
        auto it = live.find(dl->key_);
        if (it != live.end() && it->second == dl) live.erase(it);
        finished[dl->key_] = dl;
        if (finished.size() % 256 == 0)
            std::erase_if(finished, [](const auto& kv) { return kv.second.expired(); });
    }
    if (r.ok) {
        std::lock_guard lk(dl->m_);
        dl->done_.add(0, dl->size_);
    }
    dl->finish(r);
    FetchStatus st = dl->status();  // not under mu: see the lock order in on_range
    std::lock_guard lk(mu);
    history.push_back(std::move(st));
    if (history.size() > kHistory) history.pop_front();
}

// ---------------------------------------------------------------------------------------------
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

void Engine::start_request(Active& a, const Task& t) {
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
    r->host = src.target->host;
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
    r->headers = setup_request(c, *src.target, cfg, extra);
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
                paused.push_back(&r);
                return CURL_WRITEFUNC_PAUSE;
            }
            tokens -= static_cast<double>(len);
        }
        if (r.end != kUnknown && len > r.end - r.pos) {
            r.verdict = Verdict::transient;
            r.message = "GET " + a.srcs[r.source].shown + ": the server sent more bytes than asked";
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
    std::string body = r->error_body;
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
            source_failed(a, why + "; " + auth_hint(src.url));
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
        if (rc == CURLE_OPERATION_TIMEDOUT) why += " (stalled)";
    } else if (accepted) {
        why = what + ": the connection closed after " + std::to_string(pos - begin) + " of " +
              std::to_string(end - begin) + " bytes";
    } else {
        why = what + ": unexpected HTTP status " + std::to_string(status);
    }

    unsigned next = attempts + 1;
    if (pos - begin >= kProgressResetsRetries) next = 1;  // it was making progress
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

void Engine::verify_failed(Active& a, const std::string& msg) {
    if (a.failed) return;
    ++a.mismatches;
    const std::string full = msg + " (from " + a.srcs[a.cur].shown + ")";
    a.errors.push_back(full);
    std::size_t next = a.srcs.size();
    for (std::size_t j = a.cur + 1; j < a.srcs.size(); ++j)
        if (!a.srcs[j].failed) {
            next = j;
            break;
        }
    if (next == a.srcs.size()) {
        if (a.mismatches >= 2) {
            transfer_failed(a, join(a.errors, "; "), /*discard=*/true);
            return;
        }
        next = a.cur;  // one more try from the same place
    }
    spdlog::warn("{}; downloading it again from {}", full, a.srcs[next].shown);
    a.cur = next;
    a.srcs[next].validator.clear();
    {
        std::lock_guard lk(a.dl->m_);
        a.dl->source_ = next;
        a.dl->validator_.clear();
    }
    a.over = false;
    reset_all(a, nullptr);
}

void Engine::worker_finished(Active* a, FetchResult r) {
    if (a->worker.joinable()) a->worker.join();
    auto dl = a->dl;
    for (auto& req : a->requests) req->cancelled = true;
    sweep();
    a->fd.reset();  // releases the lock: the files are in their final state
    actives.remove_if([&](const std::unique_ptr<Active>& p) { return p.get() == a; });
    complete(dl, std::move(r));
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

void Engine::fire_waiters(DownloadImpl& dl) {
    std::vector<std::function<void(bool)>> ready;
    {
        std::lock_guard lk(dl.m_);
        for (auto it = dl.waiters_.begin(); it != dl.waiters_.end();) {
            if (dl.done_.contains(it->begin, it->end)) {
                ready.push_back(std::move(it->fn));
                it = dl.waiters_.erase(it);
            } else {
                ++it;
            }
        }
    }
    for (auto& f : ready) {
        try {
            f(true);
        } catch (const std::exception& e) {
            spdlog::error("a range callback of blob {} threw: {}", dl.key_.hex(), e.what());
        }
    }
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

// ---------------------------------------------------------------------------------------------
// The worker of one download: hashes the arrived prefix, persists progress, commits.

void Engine::persist(Active& a) {
    std::lock_guard pl(a.persist_mu);
    DownloadImpl& dl = *a.dl;
    PartialState s;
    std::uint64_t gen;
    {
        std::lock_guard lk(dl.m_);
        if (dl.done_.empty() || dl.size_ == 0 || dl.complete_) return;
        if (dl.gen_ == a.persisted_gen && dl.done_.total() == a.persisted_bytes) return;
        s.key = dl.key_;
        s.size = dl.size_;
        s.source = dl.sources_.at(dl.source_).url;
        s.validator = dl.validator_;
        s.done = dl.done_;
        gen = dl.gen_;
    }
    // Only ranges that are on disk may be listed.
    if (::fdatasync(a.fd.get()) != 0) {
        spdlog::warn("could not flush {}: {}", a.part.string(), std::strerror(errno));
        return;
    }
    {
        std::lock_guard lk(dl.m_);
        if (dl.gen_ != gen) return;
    }
    try {
        write_state(a.state, s);
        a.persisted_gen = gen;
        a.persisted_bytes = s.done.total();
    } catch (const std::exception& e) {
        spdlog::warn("could not save download progress: {}", e.what());
    }
}

void Engine::worker_main(Active& a) {
    DownloadImpl& dl = *a.dl;
    try {
        if (std::string name = model_name_for(store, dl.key_); !name.empty()) {
            std::lock_guard lk(dl.m_);
            dl.name_ = std::move(name);
        }
    } catch (const std::exception& e) {
        spdlog::debug("no model name for blob {}: {}", dl.key_.hex(), e.what());
    }
    Sha256Hasher sha;
    Xxh128Hasher xxh;
    std::uint64_t hashed = 0;
    std::uint64_t gen = kUnknown;
    bool tried = false;   // the current generation was checked already
    bool broken = false;  // reading the partial file failed; the fetcher thread ends it

    // Progress is saved on a thread of its own: an fdatasync of the partial file can take a
    // while, and hashing must keep up with the network meanwhile.
    struct Persister {
        Engine& e;
        Active& a;
        std::mutex m;
        std::condition_variable cv;
        bool stop = false;
        std::thread t;
        Persister(Engine& en, Active& ac) : e(en), a(ac) {
            t = std::thread([this] {
                std::unique_lock lk(m);
                while (!cv.wait_for(lk, kPersistEvery, [&] { return stop; })) {
                    lk.unlock();
                    e.persist(a);
                    lk.lock();
                }
            });
        }
        ~Persister() {
            {
                std::lock_guard lk(m);
                stop = true;
            }
            cv.notify_all();
            t.join();
        }
    };
    std::optional<Persister> persister;
    persister.emplace(*this, a);

    // The partial file mapped, so hashing reads the page cache without copying it; a download
    // of unknown size (growing) is read with pread instead.
    struct Map {
        void* p = MAP_FAILED;
        std::size_t len = 0;
        ~Map() {
            if (p != MAP_FAILED) ::munmap(p, len);
        }
    } map;
    std::uint64_t mapped_size = a.size_known ? a.size : 0;
    if (mapped_size > 0) {
        map.len = static_cast<std::size_t>(mapped_size);
        map.p = ::mmap(nullptr, map.len, PROT_READ, MAP_SHARED, a.fd.get(), 0);
        if (map.p != MAP_FAILED) ::madvise(map.p, map.len, MADV_SEQUENTIAL);
    }
    std::vector<char> buf;

    auto post_result = [&](FetchResult r) {
        Active* ap = &a;
        post([this, ap, r] { worker_finished(ap, r); });
    };

    for (;;) {
        std::uint64_t target, size, done_total;
        bool complete;
        DownloadImpl::Cmd cmd;
        std::string msg;
        bool discard;
        {
            std::unique_lock lk(dl.m_);
            dl.cv_.wait_for(lk, kPersistEvery, [&] {
                return dl.cmd_ != DownloadImpl::Cmd::none || dl.gen_ != gen ||
                       (!broken && dl.done_.prefix() > hashed) || (dl.complete_ && !tried);
            });
            if (dl.gen_ != gen) {
                gen = dl.gen_;
                sha = Sha256Hasher();
                xxh = Xxh128Hasher();
                hashed = 0;
                tried = false;
            }
            target = dl.done_.prefix();
            size = dl.size_;
            complete = dl.complete_;
            cmd = dl.cmd_;
            msg = dl.cmd_msg_;
            discard = dl.cmd_discard_;
            done_total = dl.done_.total();
        }
        if (cmd == DownloadImpl::Cmd::stop) {
            persister.reset();
            persist(a);
            return;
        }
        if (cmd == DownloadImpl::Cmd::fail) {
            persister.reset();
            if (discard || done_total == 0) {
                std::lock_guard pl(a.persist_mu);
                ::unlink(a.state.c_str());
                ::unlink(a.part.c_str());
            } else {
                persist(a);
            }
            try {
                store.record_fetch_error(dl.key_, msg);
            } catch (const std::exception& e) {
                spdlog::warn("could not record the failure of blob {}: {}", dl.key_.hex(),
                             e.what());
            }
            post_result({false, dl.key_, msg});
            return;
        }
        while (!broken && hashed < target && a.gen_atomic == gen && !a.stop_flag) {
            std::size_t n =
                static_cast<std::size_t>(std::min<std::uint64_t>(kHashBlock, target - hashed));
            const char* data;
            if (map.p != MAP_FAILED && hashed + n <= mapped_size) {
                data = static_cast<const char*>(map.p) + hashed;
            } else {
                buf.resize(kHashBlock);
                ssize_t got = ::pread(a.fd.get(), buf.data(), n, static_cast<off_t>(hashed));
                if (got <= 0) {
                    std::string m = "reading back " + a.part.string() + ": " +
                                    (got < 0 ? std::strerror(errno) : "unexpected end of file");
                    Active* ap = &a;
                    post([this, ap, m] { transfer_failed(*ap, m, true); });
                    broken = true;
                    break;
                }
                n = static_cast<std::size_t>(got);
                data = buf.data();
            }
            sha.update(data, n);
            xxh.update(data, n);
            // Start writing hashed bytes to disk now (without waiting for it), so the fsync that
            // makes the blob durable at commit finds little left to write, instead of the
            // second or so of data since the last saved progress.
            ::sync_file_range(a.fd.get(), static_cast<off64_t>(hashed), static_cast<off64_t>(n),
                              SYNC_FILE_RANGE_WRITE);
            hashed += n;
        }
        if (!complete || tried || broken || hashed != size || a.gen_atomic != gen) continue;

        tried = true;
        FileDigests d{sha.finish(), xxh.finish(), size};
        if (!dl.placeholder_ && d.sha256 != dl.key_) {
            std::string m =
                "downloaded content has SHA-256 " + d.sha256.hex() + ", expected " + dl.key_.hex();
            Active* ap = &a;
            post([this, ap, m] { verify_failed(*ap, m); });
            continue;
        }
        persister.reset();
        try {
            Sha256 real = store.commit_download(dl.key_, a.fd.get(), a.part, d);
            ::unlink(a.state.c_str());
            if (real != dl.key_)
                spdlog::info("blob {} is {} (the placeholder was replaced)", dl.key_.hex(),
                             real.hex());
            if (cfg.cache_max_bytes > 0) {
                // Still holding the partial file's lock, which is the new blob's inode: the
                // quota never evicts what was just downloaded for someone.
                std::lock_guard ev(evict_mu);
                try {
                    store.evict(cfg.cache_max_bytes, false);
                } catch (const std::exception& e) {
                    spdlog::warn("cache quota: {}", e.what());
                }
            }
            post_result({true, real, {}});
        } catch (const std::exception& e) {
            std::string m = e.what();
            try {
                store.record_fetch_error(dl.key_, m);
            } catch (const std::exception&) {
            }
            ::unlink(a.state.c_str());
            ::unlink(a.part.c_str());
            post_result({false, dl.key_, m});
        }
        return;
    }
}

}  // namespace modelfs::fetch::detail

namespace fs = std::filesystem;

namespace modelfs::fetch {

using namespace detail;

// ---------------------------------------------------------------------------------------------
// Public API

struct Fetcher::Impl {
    Impl(Store& s, FetchConfig c) : engine(s, std::move(c)) {}
    Engine engine;
};

Fetcher::Fetcher(Store& store, FetchConfig cfg)
    : impl_(std::make_unique<Impl>(store, std::move(cfg))) {}

Fetcher::~Fetcher() = default;

const FetchConfig& Fetcher::config() const {
    return impl_->engine.cfg;
}

void Fetcher::set_limit_rate(std::uint64_t bytes_per_second) {
    Engine& e = impl_->engine;
    {
        std::lock_guard lk(e.mu);
        e.limit_rate = bytes_per_second;
    }
    curl_multi_wakeup(e.multi.get());
}

std::shared_ptr<Download> Fetcher::fetch(const Sha256& key) {
    Engine& e = impl_->engine;
    {
        std::lock_guard lk(e.mu);
        if (e.stopping) throw StoreError(ErrorKind::io, "the downloader is stopping");
        if (auto it = e.live.find(key); it != e.live.end()) return it->second;
    }
    std::shared_ptr<DownloadImpl> earlier;
    {
        std::lock_guard lk(e.mu);
        if (auto it = e.finished.find(key); it != e.finished.end()) earlier = it->second.lock();
    }
    if (earlier) {
        // A finished download is shared while its blob is still there; a failed one is tried
        // again. (status() is not called under mu: see the lock order in on_range.)
        auto st = earlier->status();
        if (st.state == FetchState::done && st.blob &&
            (*st.blob != key || e.store.blobs().exists(key)))
            return earlier;
    }
    std::optional<BlobRecord> rec = e.store.catalog().read().get_blob(key);
    if (!rec)
        throw StoreError(
            ErrorKind::not_found,
            "no blob " + key.hex() + " in the catalog (add it with `modelfs add URL`)");
    // The model's name is found by the worker (a scan of every model: not on a mount's open).
    if (rec->state == BlobState::present && !rec->placeholder && e.store.blobs().exists(key)) {
        auto d = std::make_shared<DownloadImpl>(nullptr, e.store, key, *rec, "");
        d->finish({true, key, {}});
        std::lock_guard lk(e.mu);
        e.finished[key] = d;
        return d;
    }
    if (rec->sources.empty())
        throw StoreError(ErrorKind::bad_input,
                         "blob " + key.hex() + " (" + model_name_for(e.store, key) +
                             ") is not in the store and has no source to download it from");
    std::lock_guard lk(e.mu);
    // Another thread may have started it meanwhile.
    if (auto it = e.live.find(key); it != e.live.end()) return it->second;
    auto d = std::make_shared<DownloadImpl>(&e, e.store, key, *rec, "");
    e.live[key] = d;
    e.posted.push_back([&e, d] { e.enqueue(d); });
    curl_multi_wakeup(e.multi.get());
    return d;
}

std::vector<FetchStatus> Fetcher::downloads() const {
    Engine& e = impl_->engine;
    std::vector<std::shared_ptr<DownloadImpl>> live;
    std::vector<FetchStatus> out;
    {
        std::lock_guard lk(e.mu);
        out.assign(e.history.begin(), e.history.end());
        for (auto& [k, d] : e.live) live.push_back(d);
    }
    for (auto& d : live) out.push_back(d->status());
    return out;
}

// ---------------------------------------------------------------------------------------------

std::vector<FetchStatus> stored_fetch_states(Store& store) {
    std::map<Sha256, FetchStatus> found;
    std::error_code ec;
    const fs::path dir = store.partial_dir();
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
        const fs::path& p = it->path();
        if (p.extension() != ".part") continue;
        auto key = Sha256::from_hex(p.stem().string());
        if (!key) continue;
        FetchStatus s;
        s.key = *key;
        UniqueFd fd(::open(p.c_str(), O_RDONLY | O_CLOEXEC));
        if (!fd) continue;
        if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
            s.other_process = true;
            s.state = FetchState::running;
        } else {
            s.state = FetchState::queued;  // interrupted: resumes on the next fetch
            ::flock(fd.get(), LOCK_UN);
        }
        if (auto st = read_state(state_path(dir, *key)); st && st->key == *key) {
            s.size = st->size;
            s.done_bytes = st->done.total();
            s.source = redact_url(st->source);
        }
        found[*key] = s;
    }
    std::map<Sha256, std::string> names;
    {
        auto txn = store.catalog().read();
        txn.for_each_blob([&](const Sha256& h, const BlobRecord& r) {
            auto it = found.find(h);
            if (it != found.end()) {
                if (!it->second.size) it->second.size = r.size;
                if (it->second.source.empty() && !r.sources.empty())
                    it->second.source = redact_url(r.sources.front().url);
                if (!r.placeholder) it->second.blob = h;
            }
            if (r.state == BlobState::present || r.fetch_error.empty()) return;
            FetchStatus& s = found[h];
            s.key = h;
            if (!r.placeholder) s.blob = h;
            s.size = r.size;
            if (!s.other_process) s.state = FetchState::failed;
            s.error = r.fetch_error;
            if (s.source.empty() && !r.sources.empty())
                s.source = redact_url(r.sources.front().url);
        });
        txn.for_each_model([&](const Model& m) {
            for (const auto& v : m.versions)
                for (const auto& b : v.blobs())
                    if (found.count(b) && !names.count(b)) names[b] = m.key();
        });
    }
    std::vector<FetchStatus> out;
    for (auto& [k, s] : found) {
        if (auto n = names.find(k); n != names.end()) s.name = n->second;
        out.push_back(std::move(s));
    }
    return out;
}

}  // namespace modelfs::fetch
