#include "remote.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>

#include <spdlog/spdlog.h>

#include "daemon.h"
#include "modelfs/fetch/source.h"
#include "modelfs/store/errors.h"

namespace modelfs::fs {

// A handle answered before its blob arrived (a `stream` source).
struct RemoteFiles::Stream {
    std::shared_ptr<fetch::Download> dl;
    UniqueFd fd;  // a duplicate of the partial file's descriptor; the handle's fh
    std::string path;
    Sha256 key;
    std::uint64_t ino = 0;
    std::uint64_t size = 0;

    std::mutex mu;
    enum class State { streaming, done, failed } state = State::streaming;
    // Once verified: the blob, opened (and locked against eviction) like any stored blob. The
    // partial file is the same inode by then, but holds no lock of ours.
    UniqueFd blob;

    int read_fd() {
        std::lock_guard lk(mu);
        return blob ? blob.get() : fd.get();
    }
};

namespace {

void interrupted(fuse_req_t req, void* data) {
    auto& dm = *static_cast<Daemon*>(fuse_req_userdata(req));
    const auto id = static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(data));
    // Called with the request's lock held and a reference on it: answering here is safe.
    if (dm.remote && dm.remote->pending().claim(id)) fuse_reply_err(req, EINTR);
}

void reply_range(fuse_req_t req, int fd, size_t size, off_t off) {
    fuse_bufvec buf = FUSE_BUFVEC_INIT(size);
    buf.buf[0].flags = static_cast<fuse_buf_flags>(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
    buf.buf[0].fd = fd;
    buf.buf[0].pos = off;
    fuse_reply_data(req, &buf, static_cast<fuse_buf_copy_flags>(0));
}

}  // namespace

std::uint64_t PendingReplies::add(fuse_req_t req) {
    std::lock_guard lk(mu_);
    const std::uint64_t id = next_++;
    reqs_.emplace(id, req);
    return id;
}

fuse_req_t PendingReplies::claim(std::uint64_t id) {
    std::lock_guard lk(mu_);
    auto it = reqs_.find(id);
    if (it == reqs_.end()) return nullptr;
    fuse_req_t req = it->second;
    reqs_.erase(it);
    return req;
}

std::vector<fuse_req_t> PendingReplies::claim_all() {
    std::lock_guard lk(mu_);
    std::vector<fuse_req_t> out;
    for (const auto& [id, req] : reqs_) out.push_back(req);
    reqs_.clear();
    return out;
}

RemoteFiles::RemoteFiles(Daemon& dm, fetch::FetchConfig cfg) : dm_(dm), cfg_(std::move(cfg)) {}

RemoteFiles::~RemoteFiles() {
    // The fetcher's thread runs our callbacks: it goes first. Openers still waiting get EIO
    // (their partial downloads resume with the next mount or `modelfs fetch`).
    stopping_ = true;
    {
        std::lock_guard lk(fetcher_mu_);
        fetcher_.reset();
    }
    for (fuse_req_t req : pending_.claim_all()) fuse_reply_err(req, EIO);
    std::lock_guard lk(streams_mu_);
    streams_.clear();
}

fetch::Fetcher& RemoteFiles::fetcher() {
    std::lock_guard lk(fetcher_mu_);
    if (!fetcher_) fetcher_ = std::make_unique<fetch::Fetcher>(*dm_.store, cfg_);
    return *fetcher_;
}

std::uint64_t RemoteFiles::keep(fuse_req_t req) {
    const std::uint64_t id = pending_.add(req);
    fuse_req_interrupt_func(req, interrupted,
                            reinterpret_cast<void*>(static_cast<std::uintptr_t>(id)));
    return id;
}

bool RemoteFiles::open(fuse_req_t req, fuse_file_info* fi, const Entry& e) {
    std::optional<BlobRecord> rec = dm_.store->catalog().read().get_blob(e.blob);
    if (!rec) {
        std::optional<Sha256> real;
        {
            std::lock_guard lk(mu_);
            if (auto it = fetched_.find(e.blob); it != fetched_.end()) real = it->second;
        }
        if (real) {
            finish_open(req, *fi, e, *real);
            return true;
        }
        // Gone from the catalog: a placeholder another process downloaded (its record now has
        // the real hash), or an old version gc removed. When the name shows other content by
        // now, ESTALE has the kernel look it up again and open that.
        Entry now = dm_.resolve(e.path);
        if (now.kind == Entry::Kind::tree_file && now.blob != e.blob) {
            fuse_reply_err(req, ESTALE);
            return true;
        }
        return false;
    }
    if (rec->sources.empty() || !rec->extents.empty()) return false;

    std::shared_ptr<fetch::Download> dl = fetcher().fetch(e.blob);
    watch(dl, e, *rec);
    const fetch::FetchState state = dl->status().state;
    if (dl->streamable() && e.st.st_size > 0 && state != fetch::FetchState::done &&
        state != fetch::FetchState::failed) {
        open_stream(req, fi, e, std::move(dl));
        return true;
    }
    const std::uint64_t id = keep(req);
    dl->on_done([this, id, fi = *fi, e](const fetch::FetchResult& r) {
        fuse_req_t waiting = pending_.claim(id);
        if (!waiting) return;                                  // interrupted
        if (!r.ok) return (void)fuse_reply_err(waiting, EIO);  // watch() logs why, once
        finish_open(waiting, fi, e, r.blob);
    });
    return true;
}

void RemoteFiles::watch(const std::shared_ptr<fetch::Download>& dl, const Entry& e,
                        const BlobRecord& rec) {
    {
        std::lock_guard lk(mu_);
        auto& seen = watched_[e.blob];
        if (seen.lock() == dl) return;
        seen = dl;
    }
    const fetch::FetchStatus st = dl->status();
    if (st.state == fetch::FetchState::done) return;
    if (st.state != fetch::FetchState::failed)
        spdlog::info("open {}: fetching blob {} ({} bytes) from {}{}", e.path, e.blob.hex(),
                     rec.size, fetch::redact_url(rec.sources.front().url),
                     dl->streamable() ? ", streaming" : "");
    dl->on_done([this, key = e.blob, path = e.path](const fetch::FetchResult& r) {
        if (r.ok) {
            if (r.blob != key) {
                std::lock_guard lk(mu_);
                fetched_[key] = r.blob;
            }
            spdlog::info("fetched {}: blob {}", path, r.blob.hex());
        } else if (stopping_) {
            spdlog::info("unmounting: the download of {} stops here and resumes on the next open",
                         path);
        } else {
            spdlog::error("fetching {} (blob {}) failed: {}; reads get EIO (`modelfs status`)",
                          path, key.hex(), r.error);
        }
    });
}

void RemoteFiles::finish_open(fuse_req_t req, fuse_file_info fi, const Entry& e,
                              const Sha256& blob) {
    // Runs on the fetcher's thread: nothing may escape.
    try {
        UniqueFd fd = dm_.open_blob(blob);
        // Stored as extents of blobs it shares tensors with (tensor_split.h): served from them.
        if (!fd && errno == ENOENT && dm_.composed->open(req, e.ino, &fi, e)) return;
        if (!fd) {
            spdlog::error("open {}: blob {} was fetched but is missing now ({})", e.path,
                          blob.hex(), std::strerror(errno));
            return (void)fuse_reply_err(req, EIO);
        }
        struct stat st;
        if (::fstat(fd.get(), &st) != 0 || st.st_size != e.st.st_size) {
            spdlog::error("open {}: blob {} has {} bytes, the catalog says {}", e.path, blob.hex(),
                          st.st_size, e.st.st_size);
            return (void)fuse_reply_err(req, EIO);
        }
        dm_.access->touch(blob);
        dm_.reply_read_open(req, e.ino, &fi, std::move(fd), e, /*overlay=*/false);
    } catch (const std::exception& ex) {
        spdlog::error("open {}: {}", e.path, ex.what());
        fuse_reply_err(req, EIO);
    }
}

void RemoteFiles::open_stream(fuse_req_t req, fuse_file_info* fi, const Entry& e,
                              std::shared_ptr<fetch::Download> dl) {
    // Answered once the first byte is there: the partial file exists from then on, and a
    // source that fails at once fails the open rather than every read.
    const std::uint64_t id = keep(req);
    dl->on_range(0, 1, [this, id, fi = *fi, e, dl](bool arrived) mutable {
        fuse_req_t waiting = pending_.claim(id);
        if (!waiting) return;                                     // interrupted
        if (!arrived) return (void)fuse_reply_err(waiting, EIO);  // watch() logs why
        try {
            reply_stream(waiting, fi, e, dl);
        } catch (const std::exception& ex) {
            spdlog::error("open {}: {}", e.path, ex.what());
            fuse_reply_err(waiting, EIO);
        }
    });
}

void RemoteFiles::reply_stream(fuse_req_t req, fuse_file_info fi, const Entry& e,
                               const std::shared_ptr<fetch::Download>& dl) {
    // Served by the daemon while it downloads. Readers pass the inode through only once the
    // blob is here: then it is, so open that.
    const std::uint64_t hold = dm_.reader->hold_daemon_io(e.ino);
    if (!hold) return finish_open(req, fi, e, e.blob);
    auto s = std::make_shared<Stream>();
    // Our own descriptor: its number is the handle, unique while open (getattr and release
    // look handles up by it), and it outlives the fetcher's.
    s->fd = UniqueFd(::fcntl(dl->partial_fd(), F_DUPFD_CLOEXEC, 0));
    if (!s->fd) {
        spdlog::error("open {}: cannot read the partial download of blob {}: {}", e.path,
                      e.blob.hex(), std::strerror(errno));
        dm_.reader->release(nullptr, hold, /*close_fd=*/false);
        return (void)fuse_reply_err(req, EIO);
    }
    s->dl = dl;
    s->path = e.path;
    s->key = e.blob;
    s->ino = e.ino;
    s->size = static_cast<std::uint64_t>(e.st.st_size);
    const int fd = s->fd.get();
    {
        std::lock_guard lk(streams_mu_);
        streams_.emplace(static_cast<std::uint64_t>(fd), s);
        ++stream_count_;
    }
    dm_.files.add_read(fd, e.st, /*overlay=*/false);
    dl->on_done([this, w = std::weak_ptr<Stream>(s)](const fetch::FetchResult& r) {
        if (auto s = w.lock()) stream_done(s, r);
    });
    fi.fh = static_cast<std::uint64_t>(fd);
    dm_.reader->bind(hold, fi.fh);
    // Pages read before verification must not outlive a failed one: the next open drops them
    // (and a failure drops them at once, stream_done). Not direct_io, so mmap still works.
    fi.keep_cache = 0;
    fi.direct_io = 0;
    if (fuse_reply_open(req, &fi) != 0) {  // the opener is gone
        dm_.reader->release(nullptr, fi.fh, /*close_fd=*/false);
        dm_.files.remove_read(fd);
        std::lock_guard lk(streams_mu_);
        streams_.erase(static_cast<std::uint64_t>(fd));
        --stream_count_;
    }
}

void RemoteFiles::stream_done(const std::shared_ptr<Stream>& s, const fetch::FetchResult& r) {
    try {
        if (r.ok) {
            UniqueFd blob = dm_.open_blob(r.blob);
            if (blob) dm_.access->touch(r.blob);
            std::lock_guard lk(s->mu);
            s->blob = std::move(blob);
            s->state = Stream::State::done;
            return;
        }
        {
            std::lock_guard lk(s->mu);
            s->state = Stream::State::failed;
        }
        if (dm_.invalidator) dm_.invalidator->forget_pages(s->ino);
    } catch (const std::exception& ex) {
        spdlog::error("reading {} while it downloads: {}", s->path, ex.what());
    }
}

bool RemoteFiles::is_stream(std::uint64_t fh) {
    if (stream_count_.load(std::memory_order_relaxed) == 0) return false;
    std::lock_guard lk(streams_mu_);
    return streams_.count(fh) > 0;
}

void RemoteFiles::read(fuse_req_t req, fuse_file_info* fi, size_t size, off_t off) {
    std::shared_ptr<Stream> s;
    {
        std::lock_guard lk(streams_mu_);
        if (auto it = streams_.find(fi->fh); it != streams_.end()) s = it->second;
    }
    if (!s) return (void)fuse_reply_err(req, EBADF);
    if (off < 0 || static_cast<std::uint64_t>(off) >= s->size)
        return (void)fuse_reply_buf(req, nullptr, 0);
    const size_t n = static_cast<size_t>(
        std::min<std::uint64_t>(size, s->size - static_cast<std::uint64_t>(off)));
    Stream::State state;
    {
        std::lock_guard lk(s->mu);
        state = s->state;
    }
    if (state == Stream::State::failed) return (void)fuse_reply_err(req, EIO);
    if (state == Stream::State::done) return reply_range(req, s->read_fd(), n, off);
    const std::uint64_t id = keep(req);
    s->dl->on_range(static_cast<std::uint64_t>(off), n, [this, s, id, n, off](bool arrived) {
        fuse_req_t waiting = pending_.claim(id);
        if (!waiting) return;  // interrupted
        if (!arrived) return (void)fuse_reply_err(waiting, EIO);
        reply_range(waiting, s->read_fd(), n, off);
    });
}

void RemoteFiles::release(fuse_file_info* fi) {
    std::shared_ptr<Stream> s;
    {
        std::lock_guard lk(streams_mu_);
        auto it = streams_.find(fi->fh);
        if (it == streams_.end()) return;
        s = std::move(it->second);
        streams_.erase(it);
        --stream_count_;
    }
    // Reads still waiting for a range hold the stream (and its descriptor) until answered.
}

}  // namespace modelfs::fs
