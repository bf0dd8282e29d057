// Progress of long operations. The store only bumps atomic counters; whoever shows progress (the
// CLI's progress bar) polls them from its own thread, so the hot loops never call out to UI code.
#pragma once

#include <atomic>
#include <cstdint>

namespace modelfs {

struct Progress {
    std::atomic<std::uint64_t> total_bytes{0};
    std::atomic<std::uint64_t> done_bytes{0};
    std::atomic<std::uint64_t> total_items{0};
    std::atomic<std::uint64_t> done_items{0};

    void add_bytes(std::uint64_t n) { done_bytes.fetch_add(n, std::memory_order_relaxed); }
};

inline void add_progress(Progress* p, std::uint64_t bytes) {
    if (p) p->add_bytes(bytes);
}

}  // namespace modelfs
