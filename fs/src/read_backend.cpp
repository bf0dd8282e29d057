#include "read_backend.h"

#include <linux/capability.h>
#include <spdlog/spdlog.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "modelfs/store/errors.h"
#include "modelfs/store/text.h"

namespace modelfs::fs {
namespace {

#if FUSE_VERSION >= FUSE_MAKE_VERSION(3, 17)
constexpr bool kBuiltWithPassthrough = true;
#else
constexpr bool kBuiltWithPassthrough = false;
#endif

// Registering a backing file needs CAP_SYS_ADMIN in the daemon (Linux, fs/fuse/backing.c).
bool has_sys_admin() {
    __user_cap_header_struct head{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3]{};
    if (::syscall(SYS_capget, &head, data) != 0) return false;
    return data[CAP_TO_INDEX(CAP_SYS_ADMIN)].effective & CAP_TO_MASK(CAP_SYS_ADMIN);
}

}  // namespace

ReadBackendChoice read_backend_choice(std::string_view asked) {
    std::string_view v = asked;
    const char* env = std::getenv("MODELFS_READ_BACKEND");
    if (env && *env) v = env;
    const std::string low = lower(v);
    if (low.empty() || low == "auto" || low == "passthrough") return ReadBackendChoice::automatic;
    if (low == "splice") return ReadBackendChoice::splice;
    throw StoreError(ErrorKind::bad_input,
                     "unknown read backend '" + std::string(v) + "' (from " +
                         (env && *env ? "MODELFS_READ_BACKEND" : "read_backend=") +
                         "); use auto (passthrough where the kernel and the daemon allow it) or "
                         "splice (the daemon serves every read)");
}

void ReadBackend::init(fuse_conn_info* conn) {
#if FUSE_VERSION >= FUSE_MAKE_VERSION(3, 17)
    const bool capable = conn->capable_ext & FUSE_CAP_PASSTHROUGH;
#else
    const bool capable = false;
    (void)conn;
#endif
    if (choice_ == ReadBackendChoice::splice)
        why_not_ = "splice asked for (read_backend=splice or MODELFS_READ_BACKEND=splice)";
    else if (!kBuiltWithPassthrough)
        why_not_ = "built with libfuse " + std::to_string(FUSE_VERSION / 100) + "." +
                   std::to_string(FUSE_VERSION % 100) +
                   ", which has no FUSE passthrough (needs 3.17: packaging/build-libfuse3)";
    else if (!capable)
        why_not_ =
            "the kernel does not offer FUSE passthrough (Linux 6.9 or newer, "
            "CONFIG_FUSE_PASSTHROUGH)";
    else if (!has_sys_admin())
        why_not_ =
            "the daemon lacks CAP_SYS_ADMIN, which the kernel asks for to pass reads "
            "through (mount as root, from fstab, or with the systemd unit)";
#if FUSE_VERSION >= FUSE_MAKE_VERSION(3, 17)
    if (why_not_.empty()) {
        // The kernel refuses passthrough with a writeback cache; backing files are on a plain
        // filesystem, not a stacked one (FUSE_BACKING_STACKED_UNDER).
        fuse_unset_feature_flag(conn, FUSE_CAP_WRITEBACK_CACHE);
        if (fuse_set_feature_flag(conn, FUSE_CAP_PASSTHROUGH)) {
            conn->max_backing_stack_depth = 0;
            passthrough_ = true;
        } else {
            why_not_ = "the kernel would not take FUSE passthrough";
        }
    }
#endif
    if (passthrough_)
        spdlog::info("reads of stored models pass through to their blobs (FUSE passthrough)");
    else
        spdlog::info(
            "reads are served by the daemon (splice backend): {}; expect lower read "
            "speed and a second page-cache copy of each model read",
            why_not_);
}

std::string ReadBackend::why_not() const {
    return passthrough_ ? std::string() : why_not_;
}

int ReadBackend::refuse_writer(const std::string& path) {
    std::lock_guard lk(mu_);
    if (refused_.insert(path).second)
        spdlog::warn(
            "open {} for writing: refused (ETXTBSY) while other processes read it "
            "through FUSE passthrough; the kernel does not mix the two on one file. "
            "Close the readers, or write a new file and rename it over this one",
            path);
    return ETXTBSY;
}

std::uint64_t ReadBackend::hold_daemon_io(fuse_ino_t ino) {
    std::lock_guard lk(mu_);
    const std::uint64_t hold = next_hold_++;
    if (!passthrough_) return hold;  // nothing is passed through: no rule to keep
    InodeIo& io = inodes_[ino];
    if (io.backing.opens > 0) return 0;
    ++io.daemon_opens;
    handles_[hold] = Handle{ino, false};
    return hold;
}

void ReadBackend::bind(std::uint64_t hold, std::uint64_t fh) {
    std::lock_guard lk(mu_);
    auto node = handles_.extract(hold);
    if (node.empty()) return;
    node.key() = fh;
    handles_.insert(std::move(node));
}

void ReadBackend::reply_spliced(fuse_file_info* fi, int fd, bool immutable) {
    fi->fh = static_cast<std::uint64_t>(fd);
    fi->keep_cache = immutable ? 1 : 0;
    fi->direct_io = 0;
}

bool ReadBackend::open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi, UniqueFd fd,
                       bool immutable, const std::string& path, bool may_pass_through) {
    const std::uint64_t fh = static_cast<std::uint64_t>(fd.get());
    if (!passthrough_) {
        reply_spliced(fi, fd.get(), immutable);
        if (fuse_reply_open(req, fi) != 0) return false;
        fd.release();  // closed in release()
        return true;
    }
#if FUSE_VERSION >= FUSE_MAKE_VERSION(3, 17)
    struct stat st;
    if (::fstat(fd.get(), &st) != 0) return fuse_reply_err(req, errno), false;
    bool through = false;
    {
        std::lock_guard lk(mu_);
        close_unused(req);
        InodeIo& io = inodes_[ino];
        Backing& b = io.backing;
        if (b.opens > 0 && (!may_pass_through || b.dev != st.st_dev || b.real != st.st_ino)) {
            // The inode's open files read another file: the kernel takes one backing file per
            // inode, and no spliced open beside it.
            spdlog::warn(
                "open {}: its inode is open on other bytes; try again once they are "
                "closed",
                path);
            return fuse_reply_err(req, EBUSY), false;
        }
        // Only blobs start passing an inode through: an overlay file may be opened for writing
        // while read, and a writer would then be refused (see the header).
        if (b.opens == 0 && io.daemon_opens == 0 && immutable && may_pass_through) {
            const int id = fuse_passthrough_open(req, fd.get());
            if (id > 0) {
                b = Backing{id, st.st_dev, st.st_ino, 0};
            } else if (!failed_logged_) {
                failed_logged_ = true;
                spdlog::warn(
                    "open {}: the kernel did not take its blob for passthrough ({}); "
                    "the daemon serves it, and any other open that fails so",
                    path, std::strerror(errno));
            }
        }
        through = b.id > 0;
        if (through) {
            ++b.opens;
            fi->backing_id = b.id;
            fi->fh = fh;
            fi->keep_cache = 0;
            fi->direct_io = 0;
        } else {
            ++io.daemon_opens;
            reply_spliced(fi, fd.get(), immutable);
        }
        handles_[fh] = Handle{ino, through};
    }
    if (fuse_reply_open(req, fi) != 0) {
        release(nullptr, fh, false);
        return false;  // fd closes here
    }
    fd.release();
    return true;
#else
    (void)ino;
    (void)path;
    (void)may_pass_through;
    (void)fh;
    return false;
#endif
}

void ReadBackend::read(fuse_req_t req, fuse_file_info* fi, size_t size, off_t off) {
    fuse_bufvec buf = FUSE_BUFVEC_INIT(size);
    buf.buf[0].flags = static_cast<fuse_buf_flags>(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
    buf.buf[0].fd = static_cast<int>(fi->fh);
    buf.buf[0].pos = off;
    // Not FUSE_BUF_SPLICE_MOVE: moving would take the pages out of the blob's page cache.
    fuse_reply_data(req, &buf, static_cast<fuse_buf_copy_flags>(0));
}

void ReadBackend::release(fuse_req_t req, std::uint64_t fh, bool close_fd) {
    if (passthrough_) {
        std::lock_guard lk(mu_);
        if (auto h = handles_.find(fh); h != handles_.end()) {
            auto it = inodes_.find(h->second.ino);
            if (it != inodes_.end()) {
                InodeIo& io = it->second;
                if (!h->second.passthrough) {
                    --io.daemon_opens;
                } else if (--io.backing.opens == 0) {
                    to_close_.push_back(io.backing.id);
                    io.backing = Backing{};
                }
                if (io.daemon_opens == 0 && io.backing.opens == 0) inodes_.erase(it);
            }
            handles_.erase(h);
        }
        if (req) close_unused(req);
    }
    if (close_fd) ::close(static_cast<int>(fh));
}

void ReadBackend::close_unused(fuse_req_t req) {
#if FUSE_VERSION >= FUSE_MAKE_VERSION(3, 17)
    for (int id : to_close_)
        if (fuse_passthrough_close(req, id) < 0)
            spdlog::debug("closing backing id {}: {}", id, std::strerror(errno));
#else
    (void)req;
#endif
    to_close_.clear();
}

}  // namespace modelfs::fs
