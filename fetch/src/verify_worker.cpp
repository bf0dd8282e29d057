// The worker of one download hashes the arrived prefix, persists progress and commits; the fetcher
// thread handles what it posts back (a mismatch, the result).
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>

#include <spdlog/spdlog.h>

#include "engine.h"
#include "modelfs/store/blob_store.h"

namespace modelfs::fetch::detail {

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
