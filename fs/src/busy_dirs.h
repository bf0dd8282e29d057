// Which folders requests are working in right now, so that the invalidator can wait for a gap
// before it tells the kernel to drop a name in one of them.
//
// The kernel holds a folder's lock while it waits for our answer to a request in it (lookup,
// create, rename, unlink, ...), and a notification about a name in that folder waits for the same
// lock. In a live daemon that only delays the notification; but when the daemon is killed then
// (kill -9, the OOM killer), its notifying thread sleeps uninterruptibly in the kernel, the
// process cannot exit, /dev/fuse stays open and the tool's request hangs until someone aborts
// the connection. Waiting for a gap keeps the notifying thread out of the kernel while requests
// in that folder are under way (not all of them: a request the kernel has locked the folder for
// but not yet handed to us is not counted).
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>

namespace modelfs::fs {

class BusyDirs {
  public:
    // Marks folders `a` and `b` (0: none) busy for the life of the returned object, which must
    // outlive the reply to the request.
    class Hold {
      public:
        Hold(BusyDirs& d, std::uint64_t a, std::uint64_t b) : d_(d), a_(a), b_(b) {
            d_.slot(a_).fetch_add(1);
            if (b_ && b_ != a_) d_.slot(b_).fetch_add(1);
        }
        ~Hold() {
            d_.slot(a_).fetch_sub(1);
            if (b_ && b_ != a_) d_.slot(b_).fetch_sub(1);
        }
        Hold(const Hold&) = delete;
        Hold& operator=(const Hold&) = delete;

      private:
        BusyDirs& d_;
        std::uint64_t a_, b_;
    };
    Hold hold(std::uint64_t a, std::uint64_t b = 0) { return Hold(*this, a, b); }

    // Waits until no request is working in `dir`, at most `limit`; false when it never was idle.
    bool wait_idle(std::uint64_t dir, std::chrono::microseconds limit) {
        const auto until = std::chrono::steady_clock::now() + limit;
        while (slot(dir).load() != 0) {
            if (std::chrono::steady_clock::now() >= until) return false;
            std::this_thread::sleep_for(std::chrono::microseconds(100));
        }
        return true;
    }

  private:
    // Folders share counters by hash: a shared one only makes the invalidator wait a little more.
    std::atomic<int>& slot(std::uint64_t dir) { return n_[(dir * 0x9E3779B97F4A7C15ull) >> 56]; }
    std::array<std::atomic<int>, 256> n_{};
};

}  // namespace modelfs::fs
