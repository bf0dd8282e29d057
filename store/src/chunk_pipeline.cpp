#include "chunk_pipeline.h"

#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "modelfs/store/errors.h"

namespace modelfs {
namespace {

constexpr std::size_t kRing = 8;  // chunks in flight: enough to keep both cores busy

struct AlignedDelete {
    void operator()(std::byte* p) const { std::free(p); }
};
using AlignedBuffer = std::unique_ptr<std::byte, AlignedDelete>;

AlignedBuffer make_buffer() {
    void* p = std::aligned_alloc(4096, kChunkBytes);
    if (!p) throw std::bad_alloc();
    return AlignedBuffer(static_cast<std::byte*>(p));
}

// Fills buf from fd at offset; short only at end of file.
std::size_t read_full(int fd, std::byte* buf, std::size_t len, std::uint64_t offset,
                      const char* what) {
    std::size_t got = 0;
    while (got < len) {
        ssize_t n = ::pread(fd, buf + got, len - got, static_cast<off_t>(offset + got));
        if (n < 0) {
            if (errno == EINTR) continue;
            throw_errno(std::string("reading ") + what, errno);
        }
        if (n == 0) break;
        got += static_cast<std::size_t>(n);
    }
    return got;
}

// The worker side: a queue of (slot, length) handed over in order.
class Worker {
public:
    explicit Worker(const ChunkFn& fn, std::array<AlignedBuffer, kRing>& bufs) : fn_(fn), bufs_(bufs) {
        thread_ = std::thread([this] { run(); });
    }
    ~Worker() { stop(); }

    // Blocks until slot `seq % kRing` is free again (its previous chunk consumed).
    void wait_slot_free(std::uint64_t seq) {
        std::unique_lock lk(mu_);
        cv_.wait(lk, [&] { return failed_ || seq < consumed_ + kRing; });
        rethrow_locked();
    }
    void submit(std::uint64_t seq, std::size_t len) {
        std::lock_guard lk(mu_);
        lens_[seq % kRing] = len;
        submitted_ = seq + 1;
        cv_.notify_all();
    }
    // Waits for every submitted chunk, then stops the thread; rethrows the worker's error.
    void finish() {
        stop();
        std::lock_guard lk(mu_);
        rethrow_locked();
    }

private:
    void run() {
        std::uint64_t seq = 0;
        for (;;) {
            std::size_t len;
            {
                std::unique_lock lk(mu_);
                cv_.wait(lk, [&] { return done_ || seq < submitted_; });
                if (seq >= submitted_) return;  // done_ and drained
                len = lens_[seq % kRing];
            }
            try {
                fn_(std::span<const std::byte>(bufs_[seq % kRing].get(), len));
            } catch (...) {
                std::lock_guard lk(mu_);
                error_ = std::current_exception();
                failed_ = true;
                cv_.notify_all();
                return;
            }
            std::lock_guard lk(mu_);
            consumed_ = ++seq;
            cv_.notify_all();
        }
    }
    void stop() {
        {
            std::lock_guard lk(mu_);
            done_ = true;
            cv_.notify_all();
        }
        if (thread_.joinable()) thread_.join();
    }
    void rethrow_locked() {
        if (error_) std::rethrow_exception(error_);
    }

    const ChunkFn& fn_;
    std::array<AlignedBuffer, kRing>& bufs_;
    std::mutex mu_;
    std::condition_variable cv_;
    std::array<std::size_t, kRing> lens_{};
    std::uint64_t submitted_ = 0;
    std::uint64_t consumed_ = 0;
    bool done_ = false;
    bool failed_ = false;
    std::exception_ptr error_;
    std::thread thread_;
};

}  // namespace

std::uint64_t read_chunks(int fd, std::uint64_t offset, const ChunkFn& local, const ChunkFn& remote,
                          Progress* progress, const char* what) {
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    // Kept per thread and reused: fresh buffers for every file cost a page fault and a zeroed
    // page per 4 KiB, which on a folder of small models took more time than the reads.
    thread_local std::array<AlignedBuffer, kRing> bufs;
    if (!bufs[0])
        for (auto& b : bufs) b = make_buffer();

    std::uint64_t total = 0;
    if (!remote) {
        for (;;) {
            std::size_t n = read_full(fd, bufs[0].get(), kChunkBytes, offset + total, what);
            if (n == 0) break;
            if (local) local(std::span<const std::byte>(bufs[0].get(), n));
            total += n;
            add_progress(progress, n);
            if (n < kChunkBytes) break;
        }
        return total;
    }

    Worker worker(remote, bufs);
    for (std::uint64_t seq = 0;; ++seq) {
        worker.wait_slot_free(seq);
        std::byte* buf = bufs[seq % kRing].get();
        std::size_t n = read_full(fd, buf, kChunkBytes, offset + total, what);
        if (n == 0) break;
        worker.submit(seq, n);
        if (local) local(std::span<const std::byte>(buf, n));
        total += n;
        add_progress(progress, n);
        if (n < kChunkBytes) break;
    }
    worker.finish();
    return total;
}

}  // namespace modelfs
