// Which blobs a mount opens, for the cache quota's least-recently-used order. Opens only queue
// the blob here; a background thread writes the queue to the catalog in one transaction per
// period, so no request waits for a catalog write and a busy mount costs at most one write every
// few seconds (each write also makes every mount of the store rebuild its snapshot).
#pragma once

#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "modelfs/store/store.h"

namespace modelfs::fs {

class AccessLog {
  public:
    // `store` must outlive this object. A blob written once is not written again for `quiet`:
    // LRU order needs minutes, not seconds.
    explicit AccessLog(Store& store, std::chrono::milliseconds period = std::chrono::seconds(5),
                       std::chrono::milliseconds quiet = std::chrono::seconds(60));
    // Writes what is queued, then joins.
    ~AccessLog();
    AccessLog(const AccessLog&) = delete;
    AccessLog& operator=(const AccessLog&) = delete;

    void touch(const Sha256& blob);

  private:
    void run(std::stop_token stop);
    void flush();

    Store& store_;
    std::chrono::milliseconds period_, quiet_;
    std::mutex mu_;
    std::condition_variable_any cv_;
    std::set<Sha256> queued_;
    std::map<Sha256, std::chrono::steady_clock::time_point> written_;  // within `quiet`
    bool warned_ = false;
    std::jthread thread_;  // last: starts after the members it uses, stops first
};

}  // namespace modelfs::fs
