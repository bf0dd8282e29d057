// One background thread working through a queue of paths, each at most once in the queue at a
// time. The mount's ingester: files closed after writing are hashed and stored here, so that a
// close() never waits for a multi-gigabyte hash.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <set>
#include <string>
#include <thread>

namespace modelfs::fs {

class WorkQueue {
  public:
    explicit WorkQueue(std::function<void(const std::string&)> work) : work_(std::move(work)) {
        thread_ = std::jthread([this](std::stop_token st) { run(st); });
    }
    ~WorkQueue() {
        thread_.request_stop();
        cv_.notify_all();
    }
    WorkQueue(const WorkQueue&) = delete;
    WorkQueue& operator=(const WorkQueue&) = delete;

    void push(const std::string& item) {
        {
            std::lock_guard lk(mu_);
            if (!queued_.insert(item).second) return;
            items_.push_back(item);
        }
        cv_.notify_all();
    }

  private:
    void run(std::stop_token stop) {
        std::unique_lock lk(mu_);
        while (!stop.stop_requested()) {
            cv_.wait(lk, stop, [&] { return !items_.empty(); });
            if (stop.stop_requested()) break;
            std::string item = std::move(items_.front());
            items_.pop_front();
            queued_.erase(item);
            lk.unlock();
            work_(item);
            lk.lock();
        }
    }

    std::function<void(const std::string&)> work_;
    std::mutex mu_;
    std::condition_variable_any cv_;
    std::deque<std::string> items_;
    std::set<std::string> queued_;
    std::jthread thread_;
};

}  // namespace modelfs::fs
