#include "access_log.h"

#include <vector>

#include <spdlog/spdlog.h>

#include "modelfs/store/errors.h"

namespace modelfs::fs {

AccessLog::AccessLog(Store& store, std::chrono::milliseconds period,
                     std::chrono::milliseconds quiet)
    : store_(store), period_(period), quiet_(quiet) {
    thread_ = std::jthread([this](std::stop_token st) { run(st); });
}

AccessLog::~AccessLog() {
    thread_.request_stop();
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
    flush();  // opens of the last period count too
}

void AccessLog::touch(const Sha256& blob) {
    std::lock_guard lk(mu_);
    auto it = written_.find(blob);
    if (it != written_.end() && std::chrono::steady_clock::now() - it->second < quiet_) return;
    queued_.insert(blob);
}

void AccessLog::run(std::stop_token stop) {
    while (!stop.stop_requested()) {
        {
            std::unique_lock lk(mu_);
            cv_.wait_for(lk, stop, period_, [] { return false; });
        }
        if (stop.stop_requested()) break;
        flush();
    }
}

void AccessLog::flush() {
    std::vector<Sha256> batch;
    {
        std::lock_guard lk(mu_);
        const auto now = std::chrono::steady_clock::now();
        std::erase_if(written_, [&](const auto& kv) { return now - kv.second >= quiet_; });
        for (const auto& b : queued_) written_[b] = now;
        batch.assign(queued_.begin(), queued_.end());
        queued_.clear();
    }
    if (batch.empty()) return;
    try {
        store_.touch_accessed(batch);
        spdlog::debug("recorded the use of {} blob(s)", batch.size());
    } catch (const std::exception& e) {
        // A read-only store, a full disk: the quota's order gets less exact, nothing else.
        std::lock_guard lk(mu_);
        if (!warned_)
            spdlog::warn("cannot record which models were used (for the cache quota): {}",
                         e.what());
        warned_ = true;
    }
}

}  // namespace modelfs::fs
