// The FUSE low-level operations, all in the table at the bottom. Each one catches everything: a
// daemon that dies turns every model a tool has mmapped into SIGBUS.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <functional>
#include <new>
#include <optional>

#include <spdlog/spdlog.h>

#include "daemon.h"
#include "modelfs/store/errors.h"
#include "overlay_writes.h"

namespace modelfs::fs {
namespace {

Daemon& daemon_of(fuse_req_t req) {
    return *static_cast<Daemon*>(fuse_req_userdata(req));
}

// The errno for an inode current() no longer knows. When its name leads to something else now
// (the kernel still had the name bound to what was there before), ESTALE: the kernel then looks
// the name up again and retries the call once, as on NFS. Otherwise the file is gone: ENOENT.
int gone(Daemon& dm, fuse_ino_t ino) {
    auto known = dm.inodes.get(ino);
    return known && dm.resolve(known->path).exists() ? ESTALE : ENOENT;
}

// Runs an operation body; an exception becomes an errno reply for this request only. The one
// place where errors thrown below reach a tool: a StoreError's errno is its kind's
// (errno_for, modelfs/store/errors.h), so a tool sees EINVAL for a refused name, EEXIST for a
// conflict, and so on, as the CLI's exit code comes from the same row.
template <typename F>
void guarded(fuse_req_t req, const char* op, F&& body) {
    try {
        body();
    } catch (const StoreError& e) {
        spdlog::error("{}: {}", op, e.what());
        fuse_reply_err(req, errno_for(e.kind()));
    } catch (const std::bad_alloc&) {
        spdlog::error("{}: out of memory", op);
        fuse_reply_err(req, ENOMEM);
    } catch (const std::exception& e) {
        spdlog::error("{}: {}", op, e.what());
        fuse_reply_err(req, EIO);
    }
}

// 0, or the errno a name gets: the kernel passes names up to 1024 bytes, tools expect NAME_MAX.
int check_name(const char* name) {
    std::size_t len = std::strlen(name);
    if (len == 0 || std::strcmp(name, ".") == 0 || std::strcmp(name, "..") == 0 ||
        std::strchr(name, '/'))
        return EINVAL;
    if (len > NAME_MAX) return ENAMETOOLONG;
    return 0;
}

double timeout_of(const Entry& e) {
    // Aliases are briefly cached too: the invalidator only knows the tree's own nodes, and a
    // version can be dropped (`modelfs retain`) or made current under an alias.
    return e.in_overlay || e.kind == Entry::Kind::overlay_file || e.read_only ? kOverlayTimeout
                                                                              : kCatalogTimeout;
}

fuse_entry_param entry_param(Daemon& dm, const Entry& e) {
    const std::uint64_t ino = dm.inodes.number_for(e);
    dm.inodes.handed_out(ino, e);
    fuse_entry_param p{};
    p.ino = ino;
    p.attr = e.st;
    p.attr.st_ino = static_cast<ino_t>(ino);
    p.attr_timeout = p.entry_timeout = timeout_of(e);
    return p;
}

// Version aliases and `.versions/` show stored versions; changing one would change history.
int refuse_alias(const char* op, const std::string& path) {
    spdlog::warn(
        "{} {}: version aliases and .versions/ are read-only; write NAME.EXT to add a "
        "version, `modelfs use NAME@LABEL` to make one current",
        op, path);
    return EROFS;
}

// Where new things may be made: inside a view, outside aliases. by-hash/ is read-only; the root
// in root mode holds only the views.
int writable_area(Daemon& dm, const std::string& path, const char* op = "write") {
    Location loc = dm.names()->locate(path);
    if (loc.area == Location::Area::by_hash) return EROFS;
    if (loc.area != Location::Area::view) return EPERM;
    auto tree = dm.snapshot();
    for (const std::string& p : {path, parent_of(path)})
        if (!tree->find_path(p) && tree->virtual_node(p)) return refuse_alias(op, path);
    return 0;
}

// 0, or ELOOP when a folder on the way to `path` in the overlay is a link: a user swapped a
// folder for one (to /etc, say) after the kernel looked the name up, and the daemon must never
// act through it. Checked under the edit lock, which every change this daemon makes to the overlay
// holds, so the answer stands until the caller lets go. (Making entries goes further: through
// the folder's own descriptor, Namespace::open_overlay_dir.)
int links_on_the_way(Daemon& dm, const std::string& path) {
    const Location loc = dm.names()->locate(parent_of(path));
    if (loc.area != Location::Area::view) return 0;
    UniqueFd folder = dm.names()->open_overlay_dir(loc);
    if (folder || errno == ENOENT) return 0;  // ENOENT: only the catalog has that folder
    spdlog::warn("{}: refused, a folder on the way to it in the store is a link now ({})", path,
                 std::strerror(errno));
    return ELOOP;
}

std::string child_path(Daemon& dm, fuse_ino_t parent, const char* name, int* err) {
    auto p = dm.current(parent);
    if (!p) {
        *err = gone(dm, parent);
        return {};
    }
    if (!p->is_dir()) {
        *err = ENOTDIR;
        return {};
    }
    *err = check_name(name);
    return join_path(p->path, name);
}

// The path of `name` in `parent` where a change (`op`) makes or removes it: *err is 0, else
// child_path's or writable_area's refusal.
std::string path_to_change(Daemon& dm, fuse_ino_t parent, const char* name, const char* op,
                           int* err) {
    std::string path = child_path(dm, parent, name, err);
    if (!*err) *err = writable_area(dm, path, op);
    return path;
}

// Asks for (or, with on = false, declines) a capability the kernel offers. libfuse 3.17 keeps
// them in the 64-bit want_ext and refuses an init that changed both it and the old 32-bit want.
void want(fuse_conn_info* conn, std::uint64_t flag, bool on = true) {
#if FUSE_VERSION >= FUSE_MAKE_VERSION(3, 17)
    if (on)
        fuse_set_feature_flag(conn, flag);
    else
        fuse_unset_feature_flag(conn, flag);
#else
    if (!on)
        conn->want &= ~static_cast<unsigned>(flag);
    else if (conn->capable & flag)
        conn->want |= static_cast<unsigned>(flag);
#endif
}

void op_init(void* userdata, fuse_conn_info* conn) {
    // Let libfuse splice blob pages straight to the kernel instead of copying them, but not
    // move them: a move takes the pages out of the blob's own page cache (measured: first
    // reads 0.25 -> 0.34 of native warm without it, tests/bench/mount-read).
    want(conn, FUSE_CAP_SPLICE_WRITE);
    want(conn, FUSE_CAP_SPLICE_MOVE, false);
    want(conn, FUSE_CAP_SPLICE_READ);
    // readdirplus (with the kernel's AUTO heuristic, measured best): a listing brings every
    // entry's attributes, so `find`/`ls -l` cost no lookup per file.
    want(conn, FUSE_CAP_READDIRPLUS);
    // The daemon clears set-id bits itself on write, truncate and chown (drop_set_id): it has
    // CAP_FSETID, so the backing filesystem would keep them. libfuse 3.14 passes none of the
    // kernel's hints (FUSE_WRITE_KILL_SUIDGID, FATTR_KILL_SUIDGID), so the daemon decides.
    want(conn, FUSE_CAP_HANDLE_KILLPRIV);
    // 1 MiB requests (libfuse derives max_pages from max_write) and as much readahead.
    conn->max_write = 1 << 20;
    conn->max_readahead = 1 << 20;
    // Passthrough, where it can be had (read_backend.h).
    static_cast<Daemon*>(userdata)->reader->init(conn);
}

void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
    daemon_of(req).inodes.forget(ino, nlookup);
    fuse_reply_none(req);
}

void op_forget_multi(fuse_req_t req, size_t count, fuse_forget_data* forgets) {
    Daemon& dm = daemon_of(req);
    for (size_t i = 0; i < count; ++i) dm.inodes.forget(forgets[i].ino, forgets[i].nlookup);
    fuse_reply_none(req);
}

void op_lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
    auto busy = daemon_of(req).busy.hold(parent);
    guarded(req, "lookup", [&] {
        Daemon& dm = daemon_of(req);
        int err = 0;
        std::string path = child_path(dm, parent, name, &err);
        if (err) return (void)fuse_reply_err(req, err);
        Entry e = dm.resolve(path);
        if (!e.exists()) {
            spdlog::debug("lookup {}: no such entry", path);
            return (void)fuse_reply_err(req, ENOENT);
        }
        fuse_entry_param p = entry_param(dm, e);
        fuse_reply_entry(req, &p);
    });
}

void op_getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
    guarded(req, "getattr", [&] {
        Daemon& dm = daemon_of(req);
        auto e = dm.current(ino);
        if (fi) {
            // An open file: its own descriptor knows (an unlinked or replaced file, too).
            const int fd = static_cast<int>(fi->fh);
            const bool writer = dm.files.is_writer(fd);
            const std::optional<OpenRead> reader = dm.files.read_of(fd);
            if (writer || (reader && !e)) {
                struct stat st = reader ? reader->st : (e ? e->st : (struct stat){});
                struct stat now;
                if ((writer || reader->overlay) && ::fstat(fd, &now) == 0) {
                    if (writer) st = now;
                    st.st_size = now.st_size;
                    st.st_blocks = now.st_blocks;
                    st.st_mtim = now.st_mtim;
                }
                st.st_ino = ino;
                st.st_blksize = 1 << 20;
                return (void)fuse_reply_attr(req, &st, kOverlayTimeout);
            }
        }
        if (!e) return (void)fuse_reply_err(req, gone(dm, ino));
        fuse_reply_attr(req, &e->st, timeout_of(*e));
    });
}

// The permission bits a request may set: set-user-ID and set-group-ID only for root. The
// daemon makes every file, so a set-id bit from anyone else would run as the daemon's user (a
// root mount: as root) for whoever reaches the file. (The kernel's own filesystems clear them
// on write and chown; here they are never set to begin with.)
mode_t allowed_mode(fuse_req_t req, mode_t mode) {
    const fuse_ctx* ctx = fuse_req_ctx(req);
    return (ctx && ctx->uid == 0) ? (mode & 07777) : (mode & 01777);
}

// The set-id bits a change of a file's content or owner takes away, as the kernel's own
// filesystems do (should_remove_suid): set-user-ID, and set-group-ID where the file is
// group-executable (without group-execute the bit marks mandatory locking, no privilege).
mode_t set_id_bits_lost(mode_t mode) {
    if (!S_ISREG(mode)) return 0;
    mode_t lost = mode & S_ISUID;
    if ((mode & (S_ISGID | S_IXGRP)) == (S_ISGID | S_IXGRP)) lost |= S_ISGID;
    return lost;
}

// Does a write or truncate by this request keep a file's set-id bits? Only root's (the kernel
// asks for CAP_FSETID, which the request does not carry; uid 0 stands for it).
bool keeps_set_id(fuse_req_t req) {
    const fuse_ctx* ctx = fuse_req_ctx(req);
    return ctx && ctx->uid == 0;
}

// Clears what set_id_bits_lost says on the open file `fd` (a write, truncate or chown was made
// to it); 0 or an errno.
int drop_set_id(int fd) {
    struct stat st;
    if (::fstat(fd, &st) != 0) return errno;
    const mode_t lost = set_id_bits_lost(st.st_mode);
    if (lost && ::fchmod(fd, st.st_mode & 07777 & ~lost) != 0) return errno;
    return 0;
}

// The same for an overlay entry by its real path (not followed: links have no set-id bits).
int drop_set_id(const std::filesystem::path& real) {
    struct stat st;
    if (::lstat(real.c_str(), &st) != 0) return errno;
    if (!set_id_bits_lost(st.st_mode)) return 0;
    UniqueFd fd(::open(real.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
    return fd ? drop_set_id(fd.get()) : errno;
}

// Who a new entry belongs to: the requesting user, and its group, or the folder's group when
// the folder is set-group-ID, as the kernel's own filesystems do (inode_init_owner). Only a
// daemon running as root can give files away: one running as a user makes everything that
// user's (std::nullopt), who is then the owner every user of the mount sees.
struct Owner {
    uid_t uid;
    gid_t gid;
};
std::optional<Owner> owner_for(fuse_req_t req, Daemon& dm, fuse_ino_t parent) {
    if (::geteuid() != 0) return std::nullopt;
    const fuse_ctx* ctx = fuse_req_ctx(req);
    if (!ctx) return std::nullopt;
    auto folder = dm.current(parent);
    const bool inherit = folder && (folder->st.st_mode & S_ISGID);
    return Owner{ctx->uid, inherit ? folder->st.st_gid : ctx->gid};
}

// Gives the entry `leaf` just made in `folder` (Namespace::open_overlay_dir) to `owner`; 0 or
// an errno. `fd`: the entry, open (a regular file), else -1 (`leaf` is not followed).
int give_to(const std::optional<Owner>& owner, int folder, const char* leaf, int fd = -1) {
    if (!owner) return 0;
    struct stat st;
    const int rc = fd >= 0 ? ::fstat(fd, &st) : ::fstatat(folder, leaf, &st, AT_SYMLINK_NOFOLLOW);
    if (rc != 0) return errno;
    // Unchanged owners keep root's own set-id bits: a chown, even by root, clears them.
    if (st.st_uid == owner->uid && st.st_gid == owner->gid) return 0;
    const int done = fd >= 0
                         ? ::fchown(fd, owner->uid, owner->gid)
                         : ::fchownat(folder, leaf, owner->uid, owner->gid, AT_SYMLINK_NOFOLLOW);
    return done == 0 ? 0 : errno;
}

// The times a setattr asks for, as utimensat takes them; false when it sets none.
bool times_to_set(const struct stat* attr, int to_set, struct timespec ts[2]) {
    ts[0].tv_nsec = ts[1].tv_nsec = UTIME_OMIT;
    if (to_set & FUSE_SET_ATTR_ATIME_NOW)
        ts[0].tv_nsec = UTIME_NOW;
    else if (to_set & FUSE_SET_ATTR_ATIME)
        ts[0] = attr->st_atim;
    if (to_set & FUSE_SET_ATTR_MTIME_NOW)
        ts[1].tv_nsec = UTIME_NOW;
    else if (to_set & FUSE_SET_ATTR_MTIME)
        ts[1] = attr->st_mtim;
    return ts[0].tv_nsec != UTIME_OMIT || ts[1].tv_nsec != UTIME_OMIT;
}

// setattr on an open overlay descriptor; 0 or an errno. `st` gets the result.
int set_attrs_of_fd(fuse_req_t req, int fd, const struct stat* attr, int to_set, struct stat* st) {
    if (to_set & FUSE_SET_ATTR_SIZE) {
        if (::ftruncate(fd, attr->st_size) != 0) return errno;
        if (!keeps_set_id(req))
            if (int err = drop_set_id(fd)) return err;
    }
    if ((to_set & FUSE_SET_ATTR_MODE) && ::fchmod(fd, attr->st_mode) != 0) return errno;
    if (to_set & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) {
        uid_t uid = (to_set & FUSE_SET_ATTR_UID) ? attr->st_uid : static_cast<uid_t>(-1);
        gid_t gid = (to_set & FUSE_SET_ATTR_GID) ? attr->st_gid : static_cast<gid_t>(-1);
        if (::fchown(fd, uid, gid) != 0) return errno;
        if (int err = drop_set_id(fd)) return err;
    }
    struct timespec ts[2];
    if (times_to_set(attr, to_set, ts) && ::futimens(fd, ts) != 0) return errno;
    return ::fstat(fd, st) == 0 ? 0 : errno;
}

void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set, fuse_file_info* fi) {
    guarded(req, "setattr", [&] {
        Daemon& dm = daemon_of(req);
        auto e = dm.current(ino);
        if (!e) return (void)fuse_reply_err(req, gone(dm, ino));
        if (e->read_only) return (void)fuse_reply_err(req, refuse_alias("setattr", e->path));
        if (int err = writable_area(dm, e->path, "setattr")) return (void)fuse_reply_err(req, err);
        OpenFiles::Edit edit = dm.files.edit();
        if (int err = links_on_the_way(dm, e->path)) return (void)fuse_reply_err(req, err);
        // Current contents of the path (a catalogued file may have an overlay copy by now).
        Entry now = dm.resolve(e->path);
        if (e->kind == Entry::Kind::overlay_file && !now.same_object(*e)) {
            // An open file whose name is gone (ftruncate after unlink): its descriptor.
            edit.unlock();
            struct stat st {};
            attr->st_mode = allowed_mode(req, attr->st_mode);
            auto rc = dm.files.with_overlay_fd(
                ino, (to_set & FUSE_SET_ATTR_SIZE) != 0,
                [&](int fd) { return set_attrs_of_fd(req, fd, attr, to_set, &st); });
            if (!rc) return (void)fuse_reply_err(req, ENOENT);
            if (*rc) return (void)fuse_reply_err(req, *rc);
            st.st_ino = ino;
            st.st_blksize = 1 << 20;
            return (void)fuse_reply_attr(req, &st, kOverlayTimeout);
        }
        if (!now.exists()) return (void)fuse_reply_err(req, ENOENT);
        const bool writer_fd = fi && dm.files.is_writer(edit, static_cast<int>(fi->fh));

        if (to_set & FUSE_SET_ATTR_SIZE) {
            if (now.is_dir()) return (void)fuse_reply_err(req, EISDIR);
            int rc = 0;
            if (writer_fd)
                rc = ::ftruncate(static_cast<int>(fi->fh), attr->st_size);
            else if (now.kind == Entry::Kind::overlay_file && !S_ISREG(now.st.st_mode))
                return (void)fuse_reply_err(req, EINVAL);
            else if (now.kind == Entry::Kind::overlay_file)
                rc = ::truncate(now.real.c_str(), attr->st_size);
            else {
                dm.copy_up(now, static_cast<std::uint64_t>(attr->st_size));
                dm.ingester->push(now.path);
            }
            if (rc != 0) return (void)fuse_reply_err(req, errno);
            if (!keeps_set_id(req)) {
                const int err = writer_fd ? drop_set_id(static_cast<int>(fi->fh))
                                          : drop_set_id(dm.resolve(e->path).real);
                if (err) return (void)fuse_reply_err(req, err);
            }
            if (!writer_fd && now.kind == Entry::Kind::overlay_file) dm.ingester->push(now.path);
            now = dm.resolve(e->path);
        }
        const bool in_catalog =
            now.kind == Entry::Kind::tree_file || (now.kind == Entry::Kind::dir && !now.in_overlay);
        if (in_catalog && now.kind == Entry::Kind::dir &&
            (to_set &
             (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID | FUSE_SET_ATTR_ATIME |
              FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_ATIME_NOW | FUSE_SET_ATTR_MTIME_NOW))) {
            // A catalogued folder gets an overlay twin that carries its mode, owner and times.
            dm.names()->make_overlay_dirs(dm.names()->locate(now.path));
            now = dm.resolve(e->path);
        }
        if (to_set & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) {
            uid_t uid = (to_set & FUSE_SET_ATTR_UID) ? attr->st_uid : static_cast<uid_t>(-1);
            gid_t gid = (to_set & FUSE_SET_ATTR_GID) ? attr->st_gid : static_cast<gid_t>(-1);
            if (now.in_overlay || now.kind == Entry::Kind::overlay_file) {
                if (::lchown(now.real.c_str(), uid, gid) != 0)
                    return (void)fuse_reply_err(req, errno);
                if (int err = drop_set_id(now.real)) return (void)fuse_reply_err(req, err);
            } else if ((uid != static_cast<uid_t>(-1) && uid != now.st.st_uid) ||
                       (gid != static_cast<gid_t>(-1) && gid != now.st.st_gid)) {
                return (void)fuse_reply_err(req, EPERM);  // catalogued files have one owner
            }
        }
        std::optional<std::uint32_t> mode;
        std::optional<std::int64_t> mtime;
        if (to_set & FUSE_SET_ATTR_MODE) mode = allowed_mode(req, attr->st_mode);
        if (to_set & FUSE_SET_ATTR_MTIME_NOW)
            mtime = ::time(nullptr);
        else if (to_set & FUSE_SET_ATTR_MTIME)
            mtime = attr->st_mtim.tv_sec;
        if (now.kind == Entry::Kind::overlay_file || now.in_overlay) {
            // chmod follows links, and a link's own mode means nothing on Linux.
            if (mode && S_ISLNK(now.st.st_mode)) return (void)fuse_reply_err(req, EOPNOTSUPP);
            if (mode && ::chmod(now.real.c_str(), *mode) != 0)
                return (void)fuse_reply_err(req, errno);
            struct timespec ts[2];
            if (times_to_set(attr, to_set, ts) &&
                ::utimensat(AT_FDCWD, now.real.c_str(), ts, AT_SYMLINK_NOFOLLOW) != 0)
                return (void)fuse_reply_err(req, errno);
        } else if (now.kind == Entry::Kind::tree_file && (mode || mtime)) {
            if (now.by_hash) return (void)fuse_reply_err(req, EROFS);
            dm.store->set_shown_attrs(now.model_key, mtime, mode, now.version);
        }
        edit.unlock();
        if (writer_fd) {
            struct stat st;
            if (::fstat(static_cast<int>(fi->fh), &st) != 0)
                return (void)fuse_reply_err(req, errno);
            st.st_ino = ino;
            return (void)fuse_reply_attr(req, &st, kOverlayTimeout);
        }
        auto after = dm.resolve(e->path);
        if (!after.exists()) return (void)fuse_reply_err(req, ENOENT);
        dm.inodes.update(ino, after);
        after.st.st_ino = ino;
        fuse_reply_attr(req, &after.st, timeout_of(after));
    });
}

// --- directories ------------------------------------------------------------------------------

void op_opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
    guarded(req, "opendir", [&] {
        Daemon& dm = daemon_of(req);
        auto e = dm.current(ino);
        if (!e) return (void)fuse_reply_err(req, gone(dm, ino));
        if (!e->is_dir()) return (void)fuse_reply_err(req, ENOTDIR);
        auto h = std::make_unique<DirHandle>();
        h->path = e->path;
        // The kernel may keep the listing: the invalidator drops it when the catalog changes the
        // folder, and the kernel itself when this mount changes it or its mtime moves.
        // Not for aliases: the invalidator knows only the tree's own folders.
        const bool lists_aliases =
            e->read_only ||
            (e->view >= 0 &&
             dm.names()->views().at(static_cast<std::size_t>(e->view)).show_versions());
        fi->cache_readdir = lists_aliases ? 0 : 1;
        fi->keep_cache = lists_aliases ? 0 : 1;
        fi->fh = dm.files.add_dir(std::move(h));
        fuse_reply_open(req, fi);
    });
}

void op_releasedir(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
    daemon_of(req).files.remove_dir(fi->fh);
    fuse_reply_err(req, 0);
}

void readdir_common(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi,
                    bool plus) {
    guarded(req, plus ? "readdirplus" : "readdir", [&] {
        Daemon& dm = daemon_of(req);
        DirHandle* h = dm.files.dir(fi->fh);
        if (!h) return (void)fuse_reply_err(req, EBADF);
        if (!h->listed) {  // one request at a time per open folder: the kernel holds its lock
            h->entries = dm.names()->list(*dm.snapshot(), h->path);
            h->listed = true;
        }
        std::vector<char> buf(size);
        std::size_t used = 0;
        // Offsets: 1 = after ".", 2 = after "..", 2 + i + 1 = after entry i.
        const off_t total = 2 + static_cast<off_t>(h->entries.size());
        for (off_t i = off; i < total; ++i) {
            std::size_t room = size - used, n = 0;
            if (i < 2) {
                struct stat st {};
                st.st_ino = i == 0 ? ino : 1;
                st.st_mode = S_IFDIR;
                const char* name = i == 0 ? "." : "..";
                if (plus) {
                    fuse_entry_param p{};  // ino 0: the kernel makes no entry for these
                    p.attr = st;
                    n = fuse_add_direntry_plus(req, buf.data() + used, room, name, &p, i + 1);
                } else {
                    n = fuse_add_direntry(req, buf.data() + used, room, name, &st, i + 1);
                }
            } else {
                const auto& [name, e] = h->entries[static_cast<std::size_t>(i - 2)];
                if (plus) {
                    fuse_entry_param p{};
                    p.ino = dm.inodes.number_for(e);
                    p.attr = e.st;
                    p.attr.st_ino = static_cast<ino_t>(p.ino);
                    p.attr_timeout = p.entry_timeout = timeout_of(e);
                    n = fuse_add_direntry_plus(req, buf.data() + used, room, name.c_str(), &p,
                                               i + 1);
                    if (n <= room) dm.inodes.handed_out(p.ino, e);  // the kernel now knows it
                } else {
                    n = fuse_add_direntry(req, buf.data() + used, room, name.c_str(), &e.st, i + 1);
                }
            }
            if (n > room) break;
            used += n;
        }
        fuse_reply_buf(req, buf.data(), used);
    });
}

void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
    readdir_common(req, ino, size, off, fi, false);
}
void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
    readdir_common(req, ino, size, off, fi, true);
}

// Makes a new entry `name` in folder `parent` with `make(overlay folder, name)` (0 or -1 with
// errno), gives it to the requesting user (owner_for) and answers with it: every kind of entry a
// tool makes goes into the view's overlay.
void make_entry(fuse_req_t req, fuse_ino_t parent, const char* name, const char* op,
                const std::function<int(int, const char*)>& make) {
    auto busy = daemon_of(req).busy.hold(parent);
    guarded(req, op, [&] {
        Daemon& dm = daemon_of(req);
        int err = 0;
        std::string path = path_to_change(dm, parent, name, op, &err);
        if (!err && dm.names()->locate(path).rel.empty()) err = EEXIST;  // a view's own folder
        if (err) return (void)fuse_reply_err(req, err);
        const OpenFiles::Edit edit = dm.files.edit();
        if (dm.resolve(path).exists()) return (void)fuse_reply_err(req, EEXIST);
        dm.make_overlay_parents(path);
        UniqueFd folder = dm.names()->open_overlay_dir(dm.names()->locate(parent_of(path)));
        if (!folder || make(folder.get(), name) != 0) return (void)fuse_reply_err(req, errno);
        if (int gave = give_to(owner_for(req, dm, parent), folder.get(), name)) {
            // Nobody may see it as the daemon's.
            if (::unlinkat(folder.get(), name, 0) != 0)
                ::unlinkat(folder.get(), name, AT_REMOVEDIR);
            spdlog::error("{} {}: cannot give it to its maker: {}", op, path, std::strerror(gave));
            return (void)fuse_reply_err(req, gave);
        }
        Entry made = dm.resolve(path);
        if (!made.exists()) return (void)fuse_reply_err(req, EIO);
        fuse_entry_param p = entry_param(dm, made);
        fuse_reply_entry(req, &p);
    });
}

void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) {
    make_entry(req, parent, name, "mkdir", [&](int folder, const char* leaf) {
        return ::mkdirat(folder, leaf, allowed_mode(req, mode));
    });
}

// Regular files, fifos and sockets, as tools make them (mkfifo, a socket bound in a cache
// folder). Device nodes are refused as in any folder of a filesystem without them: models have
// no use for them and the mount is nodev anyway.
void op_mknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t) {
    if (S_ISCHR(mode) || S_ISBLK(mode)) return (void)fuse_reply_err(req, EPERM);
    if (!S_ISREG(mode) && !S_ISFIFO(mode) && !S_ISSOCK(mode))
        return (void)fuse_reply_err(req, EINVAL);
    make_entry(req, parent, name, "mknod", [&](int folder, const char* leaf) {
        return ::mknodat(folder, leaf, (mode & S_IFMT) | allowed_mode(req, mode), 0);
    });
}

// A link in a view stays a link in its overlay: the kernel follows it on the caller's side, so a
// tool reads the target itself (nothing is stored or deduplicated; README "Links").
void op_symlink(fuse_req_t req, const char* target, fuse_ino_t parent, const char* name) {
    make_entry(req, parent, name, "symlink",
               [&](int folder, const char* leaf) { return ::symlinkat(target, folder, leaf); });
}

void op_readlink(fuse_req_t req, fuse_ino_t ino) {
    guarded(req, "readlink", [&] {
        Daemon& dm = daemon_of(req);
        auto e = dm.current(ino);
        if (!e) return (void)fuse_reply_err(req, gone(dm, ino));
        if (e->kind != Entry::Kind::overlay_file || !S_ISLNK(e->st.st_mode))
            return (void)fuse_reply_err(req, EINVAL);
        std::vector<char> buf(PATH_MAX + 1);
        ssize_t n = ::readlink(e->real.c_str(), buf.data(), buf.size() - 1);
        if (n < 0) return (void)fuse_reply_err(req, errno);
        buf[static_cast<std::size_t>(n)] = '\0';
        fuse_reply_readlink(req, buf.data());
    });
}

// A second name for a file of the same view. A catalogued file first becomes an overlay file
// (copy-on-write) since the catalog knows one name per model; a file with two names stays a
// plain file of the view until one of them goes (Daemon::ingest).
void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char* newname) {
    auto busy = daemon_of(req).busy.hold(newparent);
    guarded(req, "link", [&] {
        Daemon& dm = daemon_of(req);
        auto e = dm.current(ino);
        if (!e) return (void)fuse_reply_err(req, gone(dm, ino));
        if (e->is_dir()) return (void)fuse_reply_err(req, EPERM);
        if (e->by_hash) return (void)fuse_reply_err(req, EROFS);
        if (e->read_only) return (void)fuse_reply_err(req, refuse_alias("link", e->path));
        int err = 0;
        std::string to = path_to_change(dm, newparent, newname, "link", &err);
        if (!err && dm.names()->locate(to).view != dm.names()->locate(e->path).view) err = EXDEV;
        if (err) return (void)fuse_reply_err(req, err);
        const OpenFiles::Edit edit = dm.files.edit();
        for (const std::string& p : {e->path, to})
            if (int err = links_on_the_way(dm, p)) return (void)fuse_reply_err(req, err);
        if (dm.resolve(to).exists()) return (void)fuse_reply_err(req, EEXIST);
        Entry src = dm.resolve(e->path);
        if (!src.same_object(*e)) return (void)fuse_reply_err(req, ENOENT);  // its name is gone
        if (src.kind == Entry::Kind::tree_file) {
            dm.copy_up(src, static_cast<std::uint64_t>(src.st.st_size));
            src = dm.resolve(e->path);
            if (src.kind != Entry::Kind::overlay_file) return (void)fuse_reply_err(req, EIO);
            dm.inodes.update(ino, src);
        }
        dm.make_overlay_parents(to);
        if (::link(src.real.c_str(), dm.names()->real_path(dm.names()->locate(to)).c_str()) != 0)
            return (void)fuse_reply_err(req, errno);
        Entry made = dm.resolve(to);
        fuse_entry_param p = entry_param(dm, made);
        fuse_reply_entry(req, &p);
    });
}

// rmdir and unlink: finds `name` in `parent` under the edit lock, with no link on the way, and
// hands it to `remove`, which replies; what is refused before that is answered here. Outside the
// views (writable_area's EPERM) sit only the mount's own folders, which rmdir calls busy, as for
// a mount point.
void remove_entry(fuse_req_t req, fuse_ino_t parent, const char* name, const char* op,
                  int outside_views,
                  const std::function<void(Daemon&, const std::string&, const Entry&)>& remove) {
    auto busy = daemon_of(req).busy.hold(parent);
    guarded(req, op, [&] {
        Daemon& dm = daemon_of(req);
        int err = 0;
        std::string path = path_to_change(dm, parent, name, op, &err);
        if (err) return (void)fuse_reply_err(req, err == EPERM ? outside_views : err);
        const OpenFiles::Edit edit = dm.files.edit();
        if (int err = links_on_the_way(dm, path)) return (void)fuse_reply_err(req, err);
        Entry e = dm.resolve(path);
        if (!e.exists()) return (void)fuse_reply_err(req, ENOENT);
        remove(dm, path, e);
    });
}

void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char* name) {
    remove_entry(req, parent, name, "rmdir", EBUSY,
                 [&](Daemon& dm, const std::string& path, const Entry& e) {
                     if (!e.is_dir()) return (void)fuse_reply_err(req, ENOTDIR);
                     if (dm.names()->locate(path).rel.empty())
                         return (void)fuse_reply_err(req, EBUSY);
                     if (!dm.names()->list(*dm.snapshot(), path).empty())
                         return (void)fuse_reply_err(req, ENOTEMPTY);
                     // A layout's folders always exist: the tool expects them.
                     if (dm.snapshot()->find_path(path)) return (void)fuse_reply_err(req, EBUSY);
                     if (::rmdir(e.real.c_str()) != 0) return (void)fuse_reply_err(req, errno);
                     fuse_reply_err(req, 0);
                 });
}

// --- files ------------------------------------------------------------------------------------

bool wants_write(int flags) {
    return (flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC);
}

// A write to an overlay file failed: the file is not what its writer meant, so it stays a plain
// file when closed (overlay_writes::end).
void note_write_error(Daemon& dm, fuse_file_info* fi, const char* what, int err) {
    dm.files.note_write_error(static_cast<int>(fi->fh), std::string(what) + " to it failed (" +
                                                            std::strerror(err) +
                                                            "); write it again to store it");
}

// Registers an overlay descriptor open for writing (overlay_writes::begin took its share of the
// lock and marked the file) and replies. `hold`: the read backend's hold on `ino`
// (ReadBackend::hold_daemon_io), which the handle keeps until released.
void reply_write_open(fuse_req_t req, Daemon& dm, const OpenFiles::Edit& edit, fuse_ino_t ino,
                      UniqueFd fd, fuse_file_info* fi, const fuse_entry_param* created,
                      std::uint64_t hold) {
    struct stat st;
    if (::fstat(fd.get(), &st) != 0) {
        dm.reader->release(nullptr, hold, /*close_fd=*/false);
        return (void)fuse_reply_err(req, errno);
    }
    // A write-only descriptor (dd, cp, a tool saving a model) writes straight through: large
    // requests, no second copy in the page cache (measured: 1 GiB dd conv=fsync 0.15x native
    // through the page cache, tests/bench/mount-write). One that can also read may be mapped
    // MAP_SHARED, which the kernel refuses on direct_io files: it goes through the page cache
    // like reads. Without keep_cache the kernel drops what it had cached of the inode at this
    // open: after a copy-up its pages were the stored version's.
    fi->direct_io = (fi->flags & O_ACCMODE) == O_WRONLY ? 1 : 0;
    fi->keep_cache = 0;
    fi->fh = static_cast<std::uint64_t>(fd.get());
    dm.reader->bind(hold, fi->fh);
    dm.files.add_writer(edit, fd.get(), ino, st.st_ino);
    dm.files.track_overlay(fd.get(), ino, true);
    int rc = created ? fuse_reply_create(req, created, fi) : fuse_reply_open(req, fi);
    if (rc == 0) {
        fd.release();
        return;
    }
    // The opener is gone (interrupted): undo.
    dm.reader->release(nullptr, fi->fh, /*close_fd=*/false);
    dm.files.untrack_overlay(fd.get());
    if (auto closed = dm.files.remove_writer(edit, fd.get()); closed && closed->last)
        overlay_writes::end(std::move(fd), closed->error);
}

// Opens the overlay file at `path` for writing with `flags` (O_CREAT: made with `mode`, and
// given to `owner`) and takes the writer's share of it (overlay_writes::begin). Another mount
// may store the file just then: its name then leads to the stored model, which gets a copy of
// its own again. `req` is the request, for what O_TRUNC does to set-id bits. Caller holds
// the edit lock. Invalid with errno set on failure.
UniqueFd open_for_writing(fuse_req_t req, Daemon& dm, const std::string& path, int flags,
                          mode_t mode, const std::optional<Owner>& owner = std::nullopt) {
    const bool truncate = flags & O_TRUNC;
    flags = (flags & ~(O_TRUNC | O_NOCTTY)) | O_CLOEXEC | O_NOFOLLOW;
    // O_RDONLY|O_TRUNC truncates on Linux (the kernel checked write permission): the descriptor
    // must be able to, and to read, which is all its opener will do.
    if (truncate && (flags & O_ACCMODE) == O_RDONLY) flags = (flags & ~O_ACCMODE) | O_RDWR;
    for (int attempt = 0; attempt < 5; ++attempt) {
        Entry now = dm.resolve(path);
        if (now.kind == Entry::Kind::tree_file) {
            dm.copy_up(now, truncate ? 0 : static_cast<std::uint64_t>(now.st.st_size));
            now = dm.resolve(path);
        } else if (now.kind == Entry::Kind::overlay_file && now.st.st_nlink > 1 &&
                   !(now.st.st_mode & 0222)) {
            // Still linked to a blob (an ingest cut off after publishing): writing would change
            // the stored bytes, so it gets a copy of its own first.
            dm.copy_up(now, static_cast<std::uint64_t>(now.st.st_size), /*replace=*/true);
            now = dm.resolve(path);
        }
        if (now.exists() && now.kind != Entry::Kind::overlay_file) {
            errno = now.is_dir() ? EISDIR : ENOENT;
            return UniqueFd();
        }
        if (!now.exists() && !(flags & O_CREAT)) {
            errno = ENOENT;
            return UniqueFd();
        }
        if (!now.exists()) dm.make_overlay_parents(path);
        const std::filesystem::path real = dm.names()->real_path(dm.names()->locate(path));
        UniqueFd folder = dm.names()->open_overlay_dir(dm.names()->locate(parent_of(path)));
        if (!folder) return folder;
        const std::string leaf = leaf_of(path);
        // Made here only when nothing is there (O_EXCL), so only what this call made is given
        // away; something another mount made meanwhile is opened as it is, on the next turn.
        const bool make = !now.exists() && (flags & O_CREAT);
        UniqueFd fd(
            ::openat(folder.get(), leaf.c_str(), make ? flags | O_EXCL : flags & ~O_CREAT, mode));
        if (!fd && make && errno == EEXIST && !(flags & O_EXCL)) continue;
        if (!fd && !make && errno == ENOENT) continue;  // stored just now: a copy again
        if (!fd) return fd;
        if (make) {
            if (int err = give_to(owner, folder.get(), leaf.c_str(), fd.get())) {
                ::unlinkat(folder.get(), leaf.c_str(), 0);
                spdlog::error("create {}: cannot give it to its maker: {}", path,
                              std::strerror(err));
                errno = err;
                return UniqueFd();
            }
        }
        if (!overlay_writes::begin(fd.get(), real)) {
            flags &= ~O_EXCL;  // what made it is gone: ours to make again
            continue;
        }
        if (truncate && ::ftruncate(fd.get(), 0) != 0) return UniqueFd();
        if (truncate && !keeps_set_id(req))
            if (int err = drop_set_id(fd.get())) {
                errno = err;
                return UniqueFd();
            }
        return fd;
    }
    errno = EBUSY;
    return UniqueFd();
}

void op_open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
    guarded(req, "open", [&] {
        Daemon& dm = daemon_of(req);
        auto e = dm.current(ino);
        if (!e) {
            auto known = dm.inodes.get(ino);
            spdlog::debug("open of inode {} ({}): gone", ino, known ? known->path : "unknown");
            return (void)fuse_reply_err(req, gone(dm, ino));
        }
        if (e->is_dir()) return (void)fuse_reply_err(req, EISDIR);
        if (!wants_write(fi->flags)) {
            if (e->kind == Entry::Kind::overlay_file) {
                // Through its folder, never through a link (Namespace::open_overlay_dir).
                UniqueFd folder =
                    dm.names()->open_overlay_dir(dm.names()->locate(parent_of(e->path)));
                UniqueFd fd(folder ? ::openat(folder.get(), leaf_of(e->path).c_str(),
                                              O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
                                   : -1);
                if (fd) return dm.reply_read_open(req, ino, fi, std::move(fd), *e, true);
                // Stored just now: the name leads to the stored model (the same bytes).
                if (errno != ENOENT || !(e = dm.current(ino)) ||
                    e->kind == Entry::Kind::overlay_file)
                    return (void)fuse_reply_err(req, errno == 0 ? ENOENT : errno);
            }
            UniqueFd fd = dm.open_blob(e->blob);
            if (!fd) {
                const int err = errno;
                // Stored as extents (tensor-level dedup): served from the blobs it is made of.
                if (err == ENOENT && dm.composed->open(req, ino, fi, *e)) return;
                // Not here yet (a remote model): downloaded, and answered when it is.
                if (err == ENOENT && dm.remote->open(req, fi, *e)) return;
                spdlog::error("open {}: blob {} is missing ({}); run `modelfs verify`", e->path,
                              e->blob.hex(), std::strerror(err));
                return (void)fuse_reply_err(req, EIO);
            }
            // A blob of the wrong size would read short or long: refuse it rather than serve it.
            struct stat st;
            if (::fstat(fd.get(), &st) != 0 || st.st_size != e->st.st_size) {
                spdlog::error(
                    "open {}: blob {} has {} bytes, the catalog says {}; run `modelfs verify`",
                    e->path, e->blob.hex(), st.st_size, e->st.st_size);
                return (void)fuse_reply_err(req, EIO);
            }
            dm.access->touch(e->blob);
            return dm.reply_read_open(req, ino, fi, std::move(fd), *e, false);
        }
        if (e->by_hash) return (void)fuse_reply_err(req, EROFS);
        if (e->read_only)
            return (void)fuse_reply_err(req, refuse_alias("open for writing", e->path));
        const OpenFiles::Edit edit = dm.files.edit();
        spdlog::debug("open of inode {} ({}) for writing", ino, e->path);
        const std::uint64_t hold = dm.reader->hold_daemon_io(ino);
        if (!hold) {
            // Readers pass this inode through to its blob, and the kernel lets no other kind of
            // open join them. The writer gets a copy of its own anyway (copy-on-write): made
            // now, and the name then leads to it, under another inode. ESTALE makes the kernel
            // look the name up again and retry the open once, on that inode; the readers keep
            // the stored version, as with any overwrite.
            if (e->kind != Entry::Kind::tree_file)
                return (void)fuse_reply_err(req, dm.reader->refuse_writer(e->path));
            dm.copy_up(*e, (fi->flags & O_TRUNC) ? 0 : static_cast<std::uint64_t>(e->st.st_size));
            spdlog::debug(
                "open {} for writing: a copy of its own, under a new inode (readers "
                "pass inode {} through)",
                e->path, ino);
            return (void)fuse_reply_err(req, ESTALE);
        }
        UniqueFd fd = open_for_writing(req, dm, e->path, fi->flags & ~(O_CREAT | O_EXCL), 0);
        if (!fd) {
            const int err = errno;
            dm.reader->release(nullptr, hold, /*close_fd=*/false);
            return (void)fuse_reply_err(req, err);
        }
        // The kernel's inode (the stored version's, after a copy-up) stands for the file being
        // written from now on: its size and mode are the writer's.
        Entry now = dm.resolve(e->path);
        if (now.kind == Entry::Kind::overlay_file) dm.inodes.update(ino, now);
        reply_write_open(req, dm, edit, ino, std::move(fd), fi, nullptr, hold);
    });
}

void op_create(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode,
               fuse_file_info* fi) {
    auto busy = daemon_of(req).busy.hold(parent);
    guarded(req, "create", [&] {
        Daemon& dm = daemon_of(req);
        int err = 0;
        std::string path = path_to_change(dm, parent, name, "create", &err);
        if (!err && dm.names()->locate(path).rel.empty()) err = EEXIST;
        if (err) return (void)fuse_reply_err(req, err);
        const OpenFiles::Edit edit = dm.files.edit();
        Entry e = dm.resolve(path);
        if (e.exists() && (fi->flags & O_EXCL)) return (void)fuse_reply_err(req, EEXIST);
        if (e.is_dir()) return (void)fuse_reply_err(req, EISDIR);
        UniqueFd fd = open_for_writing(req, dm, path, fi->flags | O_CREAT, allowed_mode(req, mode),
                                       owner_for(req, dm, parent));
        if (!fd) return (void)fuse_reply_err(req, errno);
        Entry made = dm.resolve(path);
        if (made.kind != Entry::Kind::overlay_file) return (void)fuse_reply_err(req, EIO);
        fuse_entry_param p = entry_param(dm, made);
        // An overlay file's inode: readers only pass through blobs' inodes, so nothing refuses.
        const std::uint64_t hold = dm.reader->hold_daemon_io(p.ino);
        if (!hold) {
            overlay_writes::end(std::move(fd), "readers passed its inode through");
            return (void)fuse_reply_err(req, dm.reader->refuse_writer(path));
        }
        reply_write_open(req, dm, edit, p.ino, std::move(fd), fi, &p, hold);
    });
}

void op_read(fuse_req_t req, fuse_ino_t, size_t size, off_t off, fuse_file_info* fi) {
    guarded(req, "read", [&] {
        Daemon& dm = daemon_of(req);
        if (dm.remote->is_stream(fi->fh)) return dm.remote->read(req, fi, size, off);
        if (dm.composed->is_composed(fi->fh)) return dm.composed->read(req, fi, size, off);
        dm.reader->read(req, fi, size, off);
    });
}

void op_write_buf(fuse_req_t req, fuse_ino_t, fuse_bufvec* in, off_t off, fuse_file_info* fi) {
    guarded(req, "write", [&] {
        if (!keeps_set_id(req))
            if (int err = drop_set_id(static_cast<int>(fi->fh))) {
                note_write_error(daemon_of(req), fi, "a write", err);
                return (void)fuse_reply_err(req, err);
            }
        fuse_bufvec out = FUSE_BUFVEC_INIT(fuse_buf_size(in));
        out.buf[0].flags = static_cast<fuse_buf_flags>(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
        out.buf[0].fd = static_cast<int>(fi->fh);
        out.buf[0].pos = off;
        ssize_t n = fuse_buf_copy(&out, in, static_cast<fuse_buf_copy_flags>(0));
        if (n < 0) {
            note_write_error(daemon_of(req), fi, "a write", static_cast<int>(-n));
            return (void)fuse_reply_err(req, static_cast<int>(-n));
        }
        fuse_reply_write(req, static_cast<size_t>(n));
    });
}

void op_fallocate(fuse_req_t req, fuse_ino_t, int mode, off_t off, off_t len, fuse_file_info* fi) {
    guarded(req, "fallocate", [&] {
        Daemon& dm = daemon_of(req);
        if (!dm.files.is_writer(static_cast<int>(fi->fh)))
            return (void)fuse_reply_err(req, EBADF);  // stored versions are never written
        if (!keeps_set_id(req))
            if (int err = drop_set_id(static_cast<int>(fi->fh)))
                return (void)fuse_reply_err(req, err);
        if (::fallocate(static_cast<int>(fi->fh), mode, off, len) != 0) {
            const int err = errno;
            if (err != EOPNOTSUPP) note_write_error(dm, fi, "fallocate", err);
            return (void)fuse_reply_err(req, err);
        }
        fuse_reply_err(req, 0);
    });
}

void op_flush(fuse_req_t req, fuse_ino_t, fuse_file_info*) {
    Daemon& dm = daemon_of(req);
    // close() waits for flush: once a writer's close returns, the name must lead to what it
    // wrote. Its copy-up queued the kernel's cached name of the stored version to be forgotten;
    // make sure that has happened. Returns at once when nothing is queued; flush holds no
    // directory lock, so waiting cannot deadlock against the notification.
    if (dm.invalidator) dm.invalidator->wait_delivered(std::chrono::milliseconds(500));
    fuse_reply_err(req, 0);
}

void op_fsync(fuse_req_t req, fuse_ino_t, int datasync, fuse_file_info* fi) {
    int fd = static_cast<int>(fi->fh);
    int rc = datasync ? ::fdatasync(fd) : ::fsync(fd);
    const int err = rc == 0 ? 0 : errno;
    if (err) note_write_error(daemon_of(req), fi, "fsync", err);
    fuse_reply_err(req, err);
}

void op_release(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
    Daemon& dm = daemon_of(req);
    const int fd = static_cast<int>(fi->fh);
    dm.files.untrack_overlay(fd);  // waits for a request using the descriptor
    bool writer = false, last = false;
    std::string error;
    std::optional<std::string> written;
    {
        const OpenFiles::Edit edit = dm.files.edit();
        if (auto closed = dm.files.remove_writer(edit, fd)) {
            writer = true;
            last = closed->last;
            error = std::move(closed->error);
            if (last)
                if (auto e = dm.inodes.get(ino)) written = e->path;
        }
    }
    dm.files.remove_read(fd);
    const bool stream = dm.remote->is_stream(fi->fh);
    if (dm.composed->is_composed(fi->fh)) dm.composed->release(fi->fh);
    // Read handles' descriptors close here; writers' and streams' below.
    dm.reader->release(req, fi->fh, /*close_fd=*/!stream && !writer);
    if (stream) {
        dm.remote->release(fi);
    } else if (writer) {
        UniqueFd own(fd);
        // The last writer here: the file is finished unless a write failed or another process
        // still writes it (whose own close decides then).
        if (last && overlay_writes::end(std::move(own), error) && written)
            dm.ingester->push(*written);
        else if (last && !error.empty() && written)
            spdlog::warn("{} stays a plain file of this view: {}", *written, error);
    }
    fuse_reply_err(req, 0);
}

void op_unlink(fuse_req_t req, fuse_ino_t parent, const char* name) {
    remove_entry(req, parent, name, "unlink", EPERM,
                 [&](Daemon& dm, const std::string& path, const Entry& e) {
                     if (e.is_dir()) return (void)fuse_reply_err(req, EISDIR);
                     if (e.kind == Entry::Kind::overlay_file) {
                         // A catalogued file it was the new version of goes too: that first, so
                         // a crash in between leaves the file, never the older version in its
                         // place.
                         Entry beneath = dm.names()->resolve_catalog(*dm.snapshot(), path);
                         if (beneath.kind == Entry::Kind::tree_file)
                             dm.remove_from_catalog(beneath, {parent});
                         if (::unlink(e.real.c_str()) != 0) return (void)fuse_reply_err(req, errno);
                         return (void)fuse_reply_err(req, 0);
                     }
                     dm.remove_from_catalog(e, {parent});
                     fuse_reply_err(req, 0);
                 });
}

void op_rename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent,
               const char* newname, unsigned int flags) {
    auto busy = daemon_of(req).busy.hold(parent, newparent);
    guarded(req, "rename", [&] {
        Daemon& dm = daemon_of(req);
        if (flags & RENAME_EXCHANGE) return (void)fuse_reply_err(req, EINVAL);
        int err = 0;
        std::string from = child_path(dm, parent, name, &err);
        if (err) return (void)fuse_reply_err(req, err);
        std::string to = child_path(dm, newparent, newname, &err);
        if (!err) err = writable_area(dm, from, "rename");
        if (!err) err = writable_area(dm, to, "rename");
        if (err) return (void)fuse_reply_err(req, err);
        Location lf = dm.names()->locate(from), lt = dm.names()->locate(to);
        if (lf.view != lt.view) return (void)fuse_reply_err(req, EXDEV);  // views are apart
        if (lf.rel.empty() || lt.rel.empty()) return (void)fuse_reply_err(req, EBUSY);

        const OpenFiles::Edit edit = dm.files.edit();
        for (const std::string& p : {from, to})
            if (int err = links_on_the_way(dm, p)) return (void)fuse_reply_err(req, err);
        auto tree = dm.snapshot();
        Entry src = dm.names()->resolve(*tree, from), dst = dm.names()->resolve(*tree, to);
        if (!src.exists()) return (void)fuse_reply_err(req, ENOENT);
        if (dst.exists() && (flags & RENAME_NOREPLACE)) return (void)fuse_reply_err(req, EEXIST);
        if (dst.exists() && dst.is_dir() && !src.is_dir()) return (void)fuse_reply_err(req, EISDIR);
        if (dst.exists() && !dst.is_dir() && src.is_dir())
            return (void)fuse_reply_err(req, ENOTDIR);
        if (from == to) return (void)fuse_reply_err(req, 0);
        auto what = [](const Entry& e) {
            return e.kind == Entry::Kind::overlay_file ? "written here"
                   : e.kind == Entry::Kind::tree_file  ? "stored"
                   : e.exists()                        ? "a folder"
                                                       : "nothing";
        };
        spdlog::debug("rename {} ({}) -> {} ({})", from, what(src), to, what(dst));
        if (src.is_dir() && (to.starts_with(from + "/"))) return (void)fuse_reply_err(req, EINVAL);

        if (src.is_dir()) {
            // Folders of the layout and folders the catalog fills stay where they are; `mv`
            // copies across EXDEV, and the copies dedupe into the same blobs.
            if (tree->find_path(from)) {
                bool layout = false;
                const auto ns = dm.names();
                for (const auto& f : ns->views().at(static_cast<std::size_t>(lf.view)).folders())
                    layout = layout || f.path == lf.rel || f.path.starts_with(lf.rel + "/");
                return (void)fuse_reply_err(req, layout ? EBUSY : EXDEV);
            }
            if (dst.exists() && !dm.names()->list(*tree, to).empty())
                return (void)fuse_reply_err(req, ENOTEMPTY);
            if (dst.exists() && tree->find_path(to)) return (void)fuse_reply_err(req, EBUSY);
            dm.make_overlay_parents(to);
            if (::rename(src.real.c_str(), dm.names()->real_path(lt).c_str()) != 0)
                return (void)fuse_reply_err(req, errno);
            dm.inodes.rename_prefix(from, to);
            dm.queue_ingest_tree(to);
            return (void)fuse_reply_err(req, 0);
        }

        if (src.kind == Entry::Kind::overlay_file) {
            // It may be the pending new version of a catalogued file, which goes with it: that
            // first, so a crash in between leaves the file at its old name, never the old
            // version there instead.
            Entry beneath = dm.names()->resolve_catalog(*tree, from);
            if (beneath.kind == Entry::Kind::tree_file)
                dm.remove_from_catalog(beneath, {parent, newparent});
            dm.make_overlay_parents(to);
            if (::rename(src.real.c_str(), dm.names()->real_path(lt).c_str()) != 0)
                return (void)fuse_reply_err(req, errno);
            overlay_writes::renamed(dm.names()->real_path(lt));
            dm.inodes.rename_prefix(from, to);
            if (!dm.files.being_written(edit, src.real_ino)) dm.ingester->push(to);
            return (void)fuse_reply_err(req, 0);
        }

        // A catalogued file: renaming it is a catalog edit, when the new name is a model path.
        FileRole role =
            dm.names()->role(*tree, lt.view, lt.rel, static_cast<std::uint64_t>(src.st.st_size));
        if (!src.sidecar.empty() || role.kind != FileRole::Kind::model)
            return (void)fuse_reply_err(req, EXDEV);  // `mv` copies, then deletes
        // The catalog first, then the overlay file it replaces: a crash in between leaves that
        // file (the newer bytes) at the new name, never an older version of it.
        dm.store->rename_model(src.model_key, role.category, role.name, role.ext);
        if (dst.kind == Entry::Kind::overlay_file && ::unlink(dst.real.c_str()) != 0)
            spdlog::error("rename {} -> {}: the file it replaces stays in {}: {}", from, to,
                          dst.real.string(), std::strerror(errno));
        dm.inodes.rename_prefix(from, to);
        // Starts the invalidation of the names this changed in other views.
        dm.snapshot({parent, newparent});
        fuse_reply_err(req, 0);
    });
}

void op_statfs(fuse_req_t req, fuse_ino_t) {
    guarded(req, "statfs", [&] {
        struct statvfs sv;
        if (::statvfs(daemon_of(req).opts.store.c_str(), &sv) != 0)
            return (void)fuse_reply_err(req, errno);
        fuse_reply_statfs(req, &sv);
    });
}

// --- extended attributes ----------------------------------------------------------------------

// user.modelfs.* attributes of a catalogued file; by-hash files have the hashes only. The mount's
// root and its files say how reads are served (user.modelfs.backend: passthrough or splice).
std::vector<std::pair<std::string, std::string>> xattrs_of(Daemon& dm, const Entry& e) {
    std::vector<std::pair<std::string, std::string>> out;
    if (e.path.empty()) out.emplace_back("user.modelfs.backend", dm.reader->name());
    if (e.kind != Entry::Kind::tree_file) return out;
    out.emplace_back("user.modelfs.backend", dm.reader->name());
    // A placeholder's key is no content hash: its hashes are known once it is downloaded.
    auto rec = dm.store->catalog().read().get_blob(e.blob);
    if (!rec || !rec->placeholder) {
        out.emplace_back("user.modelfs.sha256", e.blob.hex());
        out.emplace_back("user.modelfs.autov2", e.blob.autov2());
    }
    // Computed on first request (a full read of a multi-GB file occupies this one worker; the
    // others go on serving), then kept in the catalog.
    if (e.sidecar.empty())
        if (auto v3 = dm.store->autov3(e.blob)) out.emplace_back("user.modelfs.autov3", v3->hex());
    if (e.category) out.emplace_back("user.modelfs.category", std::string(to_string(*e.category)));
    if (!e.version.empty()) out.emplace_back("user.modelfs.version", e.version);
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
        auto e = dm.current(ino);
        if (!e) return (void)fuse_reply_err(req, gone(dm, ino));
        if (!std::string_view(name).starts_with("user.modelfs."))
            return (void)fuse_reply_err(req, ENODATA);
        for (const auto& [k, v] : xattrs_of(dm, *e))
            if (k == name) return reply_sized(req, v, size);
        fuse_reply_err(req, ENODATA);
    });
}

void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
    guarded(req, "listxattr", [&] {
        Daemon& dm = daemon_of(req);
        auto e = dm.current(ino);
        if (!e) return (void)fuse_reply_err(req, gone(dm, ino));
        std::string names;
        for (const auto& [k, v] : xattrs_of(dm, *e)) names += k + '\0';
        reply_sized(req, names, size);
    });
}

}  // namespace

const fuse_lowlevel_ops kOps = [] {
    fuse_lowlevel_ops ops{};
    ops.init = op_init;
    ops.lookup = op_lookup;
    ops.forget = op_forget;
    ops.forget_multi = op_forget_multi;
    ops.getattr = op_getattr;
    ops.setattr = op_setattr;
    ops.opendir = op_opendir;
    ops.readdir = op_readdir;
    ops.readdirplus = op_readdirplus;
    ops.releasedir = op_releasedir;
    ops.mkdir = op_mkdir;
    ops.mknod = op_mknod;
    ops.symlink = op_symlink;
    ops.readlink = op_readlink;
    ops.link = op_link;
    ops.rmdir = op_rmdir;
    ops.open = op_open;
    ops.create = op_create;
    ops.read = op_read;
    ops.write_buf = op_write_buf;
    ops.fallocate = op_fallocate;
    ops.flush = op_flush;
    ops.fsync = op_fsync;
    ops.release = op_release;
    ops.unlink = op_unlink;
    ops.rename = op_rename;
    ops.statfs = op_statfs;
    ops.getxattr = op_getxattr;
    ops.listxattr = op_listxattr;
    return ops;
}();

}  // namespace modelfs::fs
