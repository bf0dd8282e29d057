// The FUSE low-level daemon. Every operation is in the table at the bottom of this file; each one
// catches everything, because a daemon that dies turns every model a tool has mmapped into SIGBUS.
#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

#include <fcntl.h>
#include <spawn.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <memory>
#include <mutex>

#include <spdlog/spdlog.h>

#include "modelfs/fs/mount.h"
#include "modelfs/fs/view_tree.h"
#include "modelfs/store/errors.h"
#include "modelfs/store/store.h"

namespace modelfs::fs {
namespace {

// Attributes and names are valid this long in the kernel. Short until the daemon invalidates
// kernel caches itself on catalog changes; then they can grow.
constexpr double kTimeout = 1.0;

struct Daemon {
    MountOptions opts;
    std::vector<ViewLayout> views;
    std::int64_t store_mtime = 0;
    std::unique_ptr<Store> store;  // opened after daemonizing (LMDB must not cross fork())

    std::mutex mu;
    std::shared_ptr<const ViewTree> tree;
    std::uint64_t tree_txn = ~0ull;

    // The current snapshot, rebuilt when any process has committed to the catalog since.
    std::shared_ptr<const ViewTree> snapshot() {
        std::lock_guard lk(mu);
        std::uint64_t txn = store->catalog().last_txn_id();
        if (!tree || txn != tree_txn) {
            auto rtxn = store->catalog().read();
            tree = std::make_shared<const ViewTree>(
                ViewTree::build(rtxn, views, opts.view.empty(), store_mtime));
            tree_txn = txn;
        }
        return tree;
    }
};

Daemon& daemon_of(fuse_req_t req) {
    return *static_cast<Daemon*>(fuse_req_userdata(req));
}

struct stat attr_of(const Node& n) {
    struct stat st {};
    st.st_ino = n.ino;
    st.st_uid = ::getuid();
    st.st_gid = ::getgid();
    st.st_mtim.tv_sec = st.st_ctim.tv_sec = st.st_atim.tv_sec = n.mtime;
    if (n.kind == Node::Kind::dir) {
        st.st_mode = S_IFDIR | 0755;
        st.st_nlink = 2;
    } else {
        st.st_mode = S_IFREG | 0444;
        st.st_nlink = 1;
        st.st_size = static_cast<off_t>(n.size);
        st.st_blocks = static_cast<blkcnt_t>((n.size + 511) / 512);
    }
    st.st_blksize = 1 << 20;
    return st;
}

// Runs an operation body; any exception becomes EIO for this request only.
template <typename F>
void guarded(fuse_req_t req, const char* op, F&& body) {
    try {
        body();
    } catch (const std::exception& e) {
        spdlog::error("{}: {}", op, e.what());
        fuse_reply_err(req, EIO);
    }
}

void op_init(void* userdata, fuse_conn_info* conn) {
    (void)userdata;
    // Let libfuse splice blob pages straight to the kernel instead of copying them.
    if (conn->capable & FUSE_CAP_SPLICE_WRITE) conn->want |= FUSE_CAP_SPLICE_WRITE;
    if (conn->capable & FUSE_CAP_SPLICE_MOVE) conn->want |= FUSE_CAP_SPLICE_MOVE;
    conn->max_readahead = 1 << 20;
}

void op_lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
    guarded(req, "lookup", [&] {
        auto tree = daemon_of(req).snapshot();
        const Node* n = tree->child(parent, name);
        if (!n) return (void)fuse_reply_err(req, ENOENT);
        fuse_entry_param e{};
        e.ino = n->ino;
        e.attr = attr_of(*n);
        e.attr_timeout = e.entry_timeout = kTimeout;
        fuse_reply_entry(req, &e);
    });
}

void op_getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
    guarded(req, "getattr", [&] {
        auto tree = daemon_of(req).snapshot();
        const Node* n = tree->find(ino);
        if (!n) return (void)fuse_reply_err(req, ENOENT);
        struct stat st = attr_of(*n);
        fuse_reply_attr(req, &st, kTimeout);
    });
}

void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
    guarded(req, "readdir", [&] {
        auto tree = daemon_of(req).snapshot();
        const Node* d = tree->find(ino);
        if (!d) return (void)fuse_reply_err(req, ENOENT);
        if (d->kind != Node::Kind::dir) return (void)fuse_reply_err(req, ENOTDIR);
        std::vector<char> buf(size);
        std::size_t used = 0;
        off_t i = 0;
        auto emit = [&](const char* name, const struct stat& st) {
            if (i++ < off) return true;
            std::size_t n = fuse_add_direntry(req, buf.data() + used, size - used, name, &st, i);
            if (n > size - used) return false;
            used += n;
            return true;
        };
        struct stat self = attr_of(*d);
        struct stat parent {};
        parent.st_ino = d->parent;
        parent.st_mode = S_IFDIR;
        bool more = emit(".", self) && emit("..", parent);
        for (auto it = d->children.begin(); more && it != d->children.end(); ++it)
            more = emit(it->first.c_str(), attr_of(*tree->find(it->second)));
        fuse_reply_buf(req, buf.data(), used);
    });
}

void op_open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
    guarded(req, "open", [&] {
        Daemon& dm = daemon_of(req);
        auto tree = dm.snapshot();
        const Node* n = tree->find(ino);
        if (!n) return (void)fuse_reply_err(req, ENOENT);
        if (n->kind == Node::Kind::dir) return (void)fuse_reply_err(req, EISDIR);
        if ((fi->flags & O_ACCMODE) != O_RDONLY) return (void)fuse_reply_err(req, EROFS);
        UniqueFd fd = dm.store->blobs().open_blob(n->blob);
        if (!fd) {
            spdlog::error("open {}: blob {} is missing ({}); run `modelfs verify`", n->name,
                          n->blob.hex(), std::strerror(errno));
            return (void)fuse_reply_err(req, EIO);
        }
        // A blob of the wrong size would read short or long: refuse it rather than serve it.
        struct stat st;
        if (::fstat(fd.get(), &st) != 0 || static_cast<std::uint64_t>(st.st_size) != n->size) {
            spdlog::error(
                "open {}: blob {} has {} bytes, the catalog says {}; run `modelfs verify`", n->name,
                n->blob.hex(), st.st_size, n->size);
            return (void)fuse_reply_err(req, EIO);
        }
        fi->fh = static_cast<std::uint64_t>(fd.get());
        fi->keep_cache = 1;  // blobs never change, so the page cache stays valid across opens
        if (fuse_reply_open(req, fi) == 0) fd.release();
    });
}

void op_read(fuse_req_t req, fuse_ino_t, size_t size, off_t off, fuse_file_info* fi) {
    guarded(req, "read", [&] {
        // Reply with the blob's fd itself: libfuse splices the pages to the kernel.
        fuse_bufvec buf = FUSE_BUFVEC_INIT(size);
        buf.buf[0].flags = static_cast<fuse_buf_flags>(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
        buf.buf[0].fd = static_cast<int>(fi->fh);
        buf.buf[0].pos = off;
        fuse_reply_data(req, &buf, FUSE_BUF_SPLICE_MOVE);
    });
}

void op_release(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
    ::close(static_cast<int>(fi->fh));
    fuse_reply_err(req, 0);
}

void op_statfs(fuse_req_t req, fuse_ino_t) {
    guarded(req, "statfs", [&] {
        struct statvfs sv;
        if (::statvfs(daemon_of(req).opts.store.c_str(), &sv) != 0)
            return (void)fuse_reply_err(req, errno);
        fuse_reply_statfs(req, &sv);
    });
}

// user.modelfs.* attributes of a model file; by-hash files have the hashes only.
std::vector<std::pair<std::string, std::string>> xattrs_of(Daemon& dm, const Node& n) {
    std::vector<std::pair<std::string, std::string>> out;
    if (n.kind != Node::Kind::file) return out;
    out.emplace_back("user.modelfs.sha256", n.blob.hex());
    out.emplace_back("user.modelfs.autov2", n.blob.autov2());
    if (auto v3 = dm.store->autov3(n.blob)) out.emplace_back("user.modelfs.autov3", v3->hex());
    if (n.category) out.emplace_back("user.modelfs.category", std::string(to_string(*n.category)));
    if (!n.version.empty()) out.emplace_back("user.modelfs.version", n.version);
    return out;
}

void reply_sized(fuse_req_t req, const std::string& value, size_t size) {
    if (size == 0)
        fuse_reply_xattr(req, value.size());
    else if (size < value.size())
        fuse_reply_err(req, ERANGE);
    else
        fuse_reply_buf(req, value.data(), value.size());
}

void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
    guarded(req, "getxattr", [&] {
        Daemon& dm = daemon_of(req);
        auto tree = dm.snapshot();
        const Node* n = tree->find(ino);
        if (!n) return (void)fuse_reply_err(req, ENOENT);
        for (const auto& [k, v] : xattrs_of(dm, *n))
            if (k == name) return reply_sized(req, v, size);
        fuse_reply_err(req, ENODATA);
    });
}

void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
    guarded(req, "listxattr", [&] {
        Daemon& dm = daemon_of(req);
        auto tree = dm.snapshot();
        const Node* n = tree->find(ino);
        if (!n) return (void)fuse_reply_err(req, ENOENT);
        std::string names;
        for (const auto& [k, v] : xattrs_of(dm, *n)) names += k + '\0';
        reply_sized(req, names, size);
    });
}

const fuse_lowlevel_ops kOps = [] {
    fuse_lowlevel_ops ops{};
    ops.init = op_init;
    ops.lookup = op_lookup;
    ops.getattr = op_getattr;
    ops.readdir = op_readdir;
    ops.open = op_open;
    ops.read = op_read;
    ops.release = op_release;
    ops.statfs = op_statfs;
    ops.getxattr = op_getxattr;
    ops.listxattr = op_listxattr;
    return ops;
}();

struct SessionDeleter {
    void operator()(fuse_session* s) const { fuse_session_destroy(s); }
};
struct LoopConfigDeleter {
    void operator()(fuse_loop_config* c) const { fuse_loop_cfg_destroy(c); }
};

}  // namespace

std::vector<ViewLayout> views_to_serve(const MountOptions& opts) {
    std::vector<ViewLayout> all;
    for (const auto& name : ViewLayout::builtin_names()) all.push_back(*ViewLayout::builtin(name));
    for (const auto& user : opts.layouts) {
        auto same = std::find_if(all.begin(), all.end(),
                                 [&](const ViewLayout& v) { return v.name() == user.name(); });
        if (same != all.end())
            *same = user;
        else
            all.push_back(user);
    }
    if (opts.view.empty()) return all;
    auto lower = [](std::string s) {
        for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        return s;
    };
    for (const auto& v : all)
        if (lower(v.name()) == lower(opts.view)) return {v};
    if (auto b = ViewLayout::builtin(opts.view)) return {*b};  // aliases ("automatic1111")
    std::string names;
    for (const auto& v : all) names += " " + v.name();
    throw StoreError(ErrorKind::bad_input, "unknown view '" + opts.view + "'; views are:" + names);
}

int serve_mount(const MountOptions& given) {
    // fuse_daemonize() changes to "/", even in the foreground: make every path absolute first.
    MountOptions opts = given;
    opts.store = std::filesystem::absolute(opts.store).lexically_normal();
    opts.mountpoint = std::filesystem::absolute(opts.mountpoint).lexically_normal();
    auto dm = std::make_unique<Daemon>();
    dm->opts = opts;
    dm->views = views_to_serve(opts);
    // Check the store before mounting, so a bad --store fails here, visibly.
    { Store probe = Store::open(opts.store); }
    struct stat st;
    if (::stat(opts.store.c_str(), &st) == 0) dm->store_mtime = st.st_ctim.tv_sec;

    std::string o = "ro,default_permissions,fsname=modelfs,subtype=modelfs";
    if (opts.allow_other) o += ",allow_other";
    std::vector<std::string> argv_s{"modelfs", "-o", o};
    if (opts.debug) argv_s.push_back("-d");
    std::vector<char*> argv;
    for (auto& a : argv_s) argv.push_back(a.data());
    fuse_args args = FUSE_ARGS_INIT(static_cast<int>(argv.size()), argv.data());

    std::unique_ptr<fuse_session, SessionDeleter> se(
        fuse_session_new(&args, &kOps, sizeof kOps, dm.get()));
    fuse_opt_free_args(&args);  // the session keeps what it needs
    if (!se) throw StoreError(ErrorKind::io, "could not start a FUSE session");
    if (fuse_set_signal_handlers(se.get()) != 0)
        throw StoreError(ErrorKind::io, "could not install signal handlers");
    if (fuse_session_mount(se.get(), opts.mountpoint.c_str()) != 0) {
        fuse_remove_signal_handlers(se.get());
        throw StoreError(ErrorKind::io, "could not mount on " + opts.mountpoint.string() +
                                            " (is it an existing, empty folder? is /dev/fuse "
                                            "there? is something already mounted?)");
    }
    // From here on every way out unmounts: a mount without its daemon is a dead folder.
    struct Unmount {
        fuse_session* se;
        ~Unmount() {
            fuse_session_unmount(se);
            fuse_remove_signal_handlers(se);
        }
    } unmount_on_exit{se.get()};
    fuse_daemonize(opts.foreground ? 1 : 0);
    dm->store = std::make_unique<Store>(Store::open(opts.store));
    spdlog::info("serving {} on {}", opts.store.string(), opts.mountpoint.string());

    std::unique_ptr<fuse_loop_config, LoopConfigDeleter> cfg(fuse_loop_cfg_create());
    fuse_loop_cfg_set_max_threads(cfg.get(), 16);
    return fuse_session_loop_mt(se.get(), cfg.get()) == 0 ? 0 : 1;
}

int unmount(const std::filesystem::path& mountpoint) {
    std::string mp = mountpoint.string();
    const char* argv[] = {"fusermount3", "-u", mp.c_str(), nullptr};
    pid_t pid;
    if (posix_spawnp(&pid, "fusermount3", nullptr, nullptr, const_cast<char**>(argv), environ) !=
        0) {
        spdlog::error("cannot run fusermount3 (install the fuse3 package)");
        return 1;
    }
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}

}  // namespace modelfs::fs
