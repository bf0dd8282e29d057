#include "composed.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "daemon.h"

namespace modelfs::fs {

ComposedFiles::ComposedFiles(Daemon& dm) : dm_(dm) {
    materialiser_ = std::make_unique<WorkQueue>([this](const std::string& hex) {
        auto h = Sha256::from_hex(hex);
        if (!h) return;
        try {
            MaterialiseResult r = dm_.store->materialise(*h);
            if (r.materialised)
                spdlog::info(
                    "blob {} materialised ({} bytes): opened often, now read like any "
                    "blob",
                    hex.substr(0, 12), r.size);
            else if (!r.already)
                spdlog::info("blob {} not materialised: {}", hex.substr(0, 12), r.why_not);
        } catch (const std::exception& e) {
            spdlog::warn("materialising blob {}: {}", hex.substr(0, 12), e.what());
        }
    });
}

bool ComposedFiles::open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi, const Entry& e) {
    auto rec = dm_.store->catalog().read().get_blob(e.blob);
    if (!rec || !rec->composed() || rec->state != BlobState::present) return false;
    auto h = std::make_shared<Handle>();
    h->extents = rec->extents;
    h->size = rec->size;
    std::uint64_t at = 0;
    for (const auto& x : rec->extents) {
        h->starts.push_back(at);
        at += x.length;
        auto it = h->files.find(x.blob);
        if (it == h->files.end()) {
            // Checked and flock'ed like any blob a mount serves (Daemon::open_blob).
            UniqueFd fd = dm_.open_blob(x.blob);
            if (!fd) {
                spdlog::error(
                    "open {}: blob {} it is made of cannot be opened ({}); run "
                    "`modelfs verify`",
                    e.path, x.blob.hex(), std::strerror(errno));
                fuse_reply_err(req, EIO);
                return true;
            }
            it = h->files.emplace(x.blob, std::move(fd)).first;
        }
        h->fds.push_back(it->second.get());
    }
    if (at != rec->size || at != static_cast<std::uint64_t>(e.st.st_size)) {
        spdlog::error(
            "open {}: its extents hold {} bytes, the catalog says {}; run `modelfs "
            "verify`",
            e.path, at, e.st.st_size);
        fuse_reply_err(req, EIO);
        return true;
    }
    // The handle's number: a descriptor of its own, unique while it is open.
    UniqueFd token(::dup(h->fds.front()));
    if (!token) {
        fuse_reply_err(req, errno);
        return true;
    }
    const std::uint64_t fh = static_cast<std::uint64_t>(token.get());
    bool materialise = false;
    {
        std::lock_guard lk(mu_);
        handles_[fh] = h;
        ++count_;
        materialise = ++opens_[e.blob] == kMaterialiseAfterOpens;
    }
    dm_.access->touch(e.blob);
    // As Daemon::reply_read_open: what getattr on the handle answers once the name is another's.
    dm_.files.add_read(static_cast<int>(fh), e.st, false);
    if (!dm_.reader->open(req, ino, fi, std::move(token), /*immutable=*/true, e.path,
                          /*may_pass_through=*/false)) {
        dm_.files.remove_read(static_cast<int>(fh));
        release(fh);
        return true;
    }
    if (materialise) materialiser_->push(e.blob.hex());
    return true;
}

bool ComposedFiles::is_composed(std::uint64_t fh) {
    if (count_.load() == 0) return false;
    std::lock_guard lk(mu_);
    return handles_.count(fh) > 0;
}

void ComposedFiles::read(fuse_req_t req, fuse_file_info* fi, size_t size, off_t off) {
    std::shared_ptr<const Handle> h;
    {
        std::lock_guard lk(mu_);
        auto it = handles_.find(fi->fh);
        if (it == handles_.end()) return (void)fuse_reply_err(req, EBADF);
        h = it->second;
    }
    const std::uint64_t begin = std::min<std::uint64_t>(static_cast<std::uint64_t>(off), h->size);
    const std::uint64_t end = std::min<std::uint64_t>(begin + size, h->size);
    // The extents the range touches, each as one file range of the blob it lies in.
    std::size_t i = static_cast<std::size_t>(
        std::upper_bound(h->starts.begin(), h->starts.end(), begin) - h->starts.begin());
    i = i == 0 ? 0 : i - 1;
    std::size_t n = 0;
    for (std::size_t k = i; k < h->extents.size() && h->starts[k] < end; ++k) ++n;
    if (n == 0) {
        fuse_bufvec empty = FUSE_BUFVEC_INIT(0);
        return (void)fuse_reply_data(req, &empty, static_cast<fuse_buf_copy_flags>(0));
    }
    // fuse_bufvec ends in a one-element array that holds as many buffers as were allocated.
    std::vector<std::max_align_t> storage(
        (sizeof(fuse_bufvec) + n * sizeof(fuse_buf) + sizeof(std::max_align_t) - 1) /
        sizeof(std::max_align_t));
    auto* bv = reinterpret_cast<fuse_bufvec*>(storage.data());
    bv->count = n;
    bv->idx = 0;
    bv->off = 0;
    for (std::size_t k = 0; k < n; ++k) {
        const std::size_t x = i + k;
        const std::uint64_t from = std::max(begin, h->starts[x]);
        const std::uint64_t to = std::min(end, h->starts[x] + h->extents[x].length);
        fuse_buf& b = bv->buf[k];
        b = fuse_buf{};
        b.size = static_cast<size_t>(to - from);
        b.flags = static_cast<fuse_buf_flags>(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
        b.fd = h->fds[x];
        b.pos = static_cast<off_t>(h->extents[x].offset + (from - h->starts[x]));
    }
    // Not FUSE_BUF_SPLICE_MOVE: moving would take the pages out of the blobs' page cache.
    fuse_reply_data(req, bv, static_cast<fuse_buf_copy_flags>(0));
}

void ComposedFiles::release(std::uint64_t fh) {
    std::lock_guard lk(mu_);
    if (handles_.erase(fh)) --count_;
}

}  // namespace modelfs::fs
