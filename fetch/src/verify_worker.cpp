// The worker of one download hashes the arrived prefix, persists progress and commits; the fetcher
// thread handles what it posts back (a mismatch, the result).
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>

#include <spdlog/spdlog.h>

#include "engine.h"
#include "modelfs/store/blob_store.h"
#include "modelfs/store/quarantine.h"

namespace modelfs::fetch::detail {

// ---------------------------------------------------------------------------------------------
// The worker of one download: waits, hashes the arrived prefix, verifies, commits; progress is
// persisted meanwhile.

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

namespace {

// The download's model name, for display (a download started by a blob's hash alone has none).
void name_download(Store& store, DownloadImpl& dl) {
    try {
        if (std::string name = model_name_for(store, dl.key_); !name.empty()) {
            std::lock_guard lk(dl.m_);
            dl.name_ = std::move(name);
        }
    } catch (const std::exception& e) {
        spdlog::debug("no model name for blob {}: {}", dl.key_.hex(), e.what());
    }
}

// Progress is saved on a thread of its own: an fdatasync of the partial file can take a while,
// and hashing must keep up with the network meanwhile.
class Persister {
  public:
    Persister(Engine& e, Active& a) {
        t_ = std::thread([this, &e, &a] {
            std::unique_lock lk(m_);
            while (!cv_.wait_for(lk, kPersistEvery, [&] { return stop_; })) {
                lk.unlock();
                e.persist(a);
                lk.lock();
            }
        });
    }
    ~Persister() {
        {
            std::lock_guard lk(m_);
            stop_ = true;
        }
        cv_.notify_all();
        t_.join();
    }
    Persister(const Persister&) = delete;
    Persister& operator=(const Persister&) = delete;

  private:
    std::mutex m_;
    std::condition_variable cv_;
    bool stop_ = false;
    std::thread t_;
};

// The partial file mapped, so hashing reads the page cache without copying it; a download of
// unknown size (growing) is read with pread instead.
class PartialMap {
  public:
    explicit PartialMap(const Active& a) : size_(a.size_known ? a.size : 0) {
        if (size_ == 0) return;
        len_ = static_cast<std::size_t>(size_);
        p_ = ::mmap(nullptr, len_, PROT_READ, MAP_SHARED, a.fd.get(), 0);
        if (p_ != MAP_FAILED) ::madvise(p_, len_, MADV_SEQUENTIAL);
    }
    ~PartialMap() {
        if (p_ != MAP_FAILED) ::munmap(p_, len_);
    }
    PartialMap(const PartialMap&) = delete;
    PartialMap& operator=(const PartialMap&) = delete;

    // Bytes [off, off + n) when mapped, else nullptr.
    const char* at(std::uint64_t off, std::size_t n) const {
        if (p_ == MAP_FAILED || off + n > size_) return nullptr;
        return static_cast<const char*>(p_) + off;
    }

  private:
    std::uint64_t size_;
    void* p_ = MAP_FAILED;
    std::size_t len_ = 0;
};

// The hash of the arrived prefix, for one generation of the download (a restart from zero
// begins a new one).
struct PrefixHash {
    Sha256Hasher sha;
    Xxh128Hasher xxh;
    std::uint64_t hashed = 0;
    std::uint64_t gen = kUnknown;
    bool tried = false;   // the current generation was checked already
    bool broken = false;  // reading the partial file failed; the fetcher thread ends it
};

// What the worker learns of its download each time it wakes.
struct WorkerView {
    std::uint64_t target = 0, size = 0, done_total = 0;
    bool complete = false;
    DownloadImpl::Cmd cmd = DownloadImpl::Cmd::none;
    std::string msg;
    bool discard = false;
};

// Waits (at most kPersistEvery) for a command, a new generation, more arrived bytes or the
// end of the transfer; starts the hash over on a new generation.
WorkerView wait_for_work(DownloadImpl& dl, PrefixHash& h) {
    std::unique_lock lk(dl.m_);
    dl.cv_.wait_for(lk, kPersistEvery, [&] {
        return dl.cmd_ != DownloadImpl::Cmd::none || dl.gen_ != h.gen ||
               (!h.broken && dl.done_.prefix() > h.hashed) || (dl.complete_ && !h.tried);
    });
    if (dl.gen_ != h.gen) {
        const bool broken = h.broken;  // stays: the fetcher thread was told and ends it
        h = PrefixHash();
        h.gen = dl.gen_;
        h.broken = broken;
    }
    return {dl.done_.prefix(), dl.size_,    dl.done_.total(), dl.complete_,
            dl.cmd_,           dl.cmd_msg_, dl.cmd_discard_};
}

// Moves the verified partial file into the store; the result the fetcher thread reports.
FetchResult commit_verified(Engine& eng, Active& a, const FileDigests& d) {
    DownloadImpl& dl = *a.dl;
    try {
        Sha256 real = eng.store.commit_download(dl.key_, a.fd.get(), a.part, d);
        ::unlink(a.state.c_str());
        if (real != dl.key_)
            spdlog::info("blob {} is {} (the placeholder was replaced)", dl.key_.hex(), real.hex());
        if (eng.cfg.cache_max_bytes > 0) {
            // Still holding the partial file's lock, which is the new blob's inode: the quota
            // never evicts what was just downloaded for someone.
            std::lock_guard ev(eng.evict_mu);
            try {
                eng.store.evict(eng.cfg.cache_max_bytes, false);
            } catch (const std::exception& e) {
                spdlog::warn("cache quota: {}", e.what());
            }
        }
        return {true, real, {}};
    } catch (const std::exception& e) {
        std::string m = e.what();
        try {
            eng.store.record_fetch_error(dl.key_, m);
        } catch (const std::exception&) {
        }
        ::unlink(a.state.c_str());
        ::unlink(a.part.c_str());
        return {false, dl.key_, m};
    }
}

}  // namespace

void Engine::worker_main(Active& a) {
    DownloadImpl& dl = *a.dl;
    name_download(store, dl);
    PrefixHash h;
    std::optional<Persister> persister;
    persister.emplace(*this, a);
    PartialMap map(a);
    std::vector<char> buf;

    auto post_result = [&](FetchResult r) {
        Active* ap = &a;
        post([this, ap, r] { worker_finished(ap, r); });
    };

    for (;;) {
        const WorkerView w = wait_for_work(dl, h);
        if (w.cmd == DownloadImpl::Cmd::stop) {
            persister.reset();
            persist(a);
            return;
        }
        if (w.cmd == DownloadImpl::Cmd::fail) {
            persister.reset();
            std::string msg = w.msg;
            if (w.discard) {
                // Content that did not match its hash (twice): kept in quarantine/, never a blob.
                std::lock_guard pl(a.persist_mu);
                ::unlink(a.state.c_str());
                try {
                    msg += "; the bytes are in " +
                           quarantine_download(store, dl.key_, a.part).string();
                } catch (const std::exception& e) {
                    ::unlink(a.part.c_str());
                    spdlog::warn("could not quarantine {}: {}", a.part.string(), e.what());
                }
            } else if (w.done_total == 0) {
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

        // Hash what arrived since the last wake-up.
        while (!h.broken && h.hashed < w.target && a.gen_atomic == h.gen && !a.stop_flag) {
            std::size_t n =
                static_cast<std::size_t>(std::min<std::uint64_t>(kHashBlock, w.target - h.hashed));
            const char* data = map.at(h.hashed, n);
            if (!data) {
                buf.resize(kHashBlock);
                ssize_t got = ::pread(a.fd.get(), buf.data(), n, static_cast<off_t>(h.hashed));
                if (got <= 0) {
                    std::string m = "reading back " + a.part.string() + ": " +
                                    (got < 0 ? std::strerror(errno) : "unexpected end of file");
                    Active* ap = &a;
                    post([this, ap, m] { transfer_failed(*ap, m, true); });
                    h.broken = true;
                    break;
                }
                n = static_cast<std::size_t>(got);
                data = buf.data();
            }
            h.sha.update(data, n);
            h.xxh.update(data, n);
            // Start writing hashed bytes to disk now (without waiting for it), so the fsync that
            // makes the blob durable at commit finds little left to write, instead of the
            // second or so of data since the last saved progress.
            ::sync_file_range(a.fd.get(), static_cast<off64_t>(h.hashed), static_cast<off64_t>(n),
                              SYNC_FILE_RANGE_WRITE);
            h.hashed += n;
        }
        if (!w.complete || h.tried || h.broken || h.hashed != w.size || a.gen_atomic != h.gen)
            continue;

        // Verify the whole file.
        h.tried = true;
        FileDigests d{h.sha.finish(), h.xxh.finish(), w.size};
        if (!dl.placeholder_ && d.sha256 != dl.key_) {
            std::string m =
                "downloaded content has SHA-256 " + d.sha256.hex() + ", expected " + dl.key_.hex();
            Active* ap = &a;
            post([this, ap, m] { verify_failed(*ap, m); });
            continue;
        }

        // Commit it.
        persister.reset();
        post_result(commit_verified(*this, a, d));
        return;
    }
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

}  // namespace modelfs::fetch::detail
