// Download objects: what callers of Fetcher::fetch hold (status, waiting, range callbacks).
#include <fcntl.h>

#include <algorithm>

#include <spdlog/spdlog.h>

#include "engine.h"
#include "modelfs/fetch/source.h"

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
    s.reused_bytes = reused_;
    return s;
}

int DownloadImpl::partial_fd() const {
    std::lock_guard lk(m_);
    if (!read_fd_ && result_ && result_->ok) {
        // Done before this process opened a partial file (present already, or downloaded by
        // another process): the blob holds the same bytes at the same offsets.
        std::string hex = result_->blob.hex();
        stdfs::path p = store_.root() / "blobs" / "sha256" / hex.substr(0, 2) / hex;
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

}  // namespace modelfs::fetch::detail
