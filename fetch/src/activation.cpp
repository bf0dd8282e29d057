// The queue of downloads and their start: the partial file's lock (or waiting for another process
// that holds it), resuming from its .state, and the end of a download.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>

#include <spdlog/spdlog.h>

#include "engine.h"
#include "modelfs/fetch/team_store.h"
#include "modelfs/store/blob_store.h"
#include "modelfs/store/errors.h"
#include "modelfs/store/store_folders.h"
#include "modelfs/store/text.h"
#include "reuse.h"

namespace modelfs::fetch::detail {

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
    if (stdfs::create_directories(partial_dir, ec))
        make_store_folders_private(partial_dir.parent_path());
    stdfs::path part = part_path(partial_dir, dl->key_);
    stdfs::path statef = state_path(partial_dir, dl->key_);
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
    // s3:// sources of a team remote go with that remote's endpoint and keys, read now so that a
    // remote added after this process started (a long-running mount) counts.
    std::optional<FetchConfig> with_remotes;
    for (const auto& s : dl->sources_)
        if (istarts_with(s.url, "s3://") && !with_remotes)
            with_remotes = with_team_remotes(store, cfg);
    for (const auto& s : dl->sources_) {
        SourceState st;
        st.url = s.url;
        st.shown = redact_url(s.url);
        try {
            st.target = resolve_source(s.url, with_remotes ? *with_remotes : cfg);
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
    // A fresh download of a file whose tensor map is known starts from the pieces the store
    // holds (reuse.h); a resumed one has them already.
    RangeSet reused;
    if (!saved && a->size_known && !dl->placeholder_ && a->size > 0)
        reused = reuse_stored_pieces(store, dl->key_, a->fd.get());
    {
        std::lock_guard lk(dl->m_);
        dl->done_.clear();
        dl->reused_ = reused.total();
        for (const auto& [b, e] : reused.ranges()) dl->done_.add(b, e);
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

}  // namespace modelfs::fetch::detail
