// The write side of a mount below the FUSE operations: copy-on-write of catalogued files into the
// overlay, and the ingest that moves finished model files from the overlay into the store.
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <spdlog/spdlog.h>

#include "daemon.h"
#include "modelfs/store/errors.h"
#include "modelfs/store/hash.h"
#include "modelfs/store/version_source.h"
#include "overlay_writes.h"

namespace modelfs::fs {

namespace {
namespace stdfs = std::filesystem;

bool same_file_state(const struct stat& a, const struct stat& b) {
    return a.st_ino == b.st_ino && a.st_dev == b.st_dev && a.st_size == b.st_size &&
           a.st_mtim.tv_sec == b.st_mtim.tv_sec && a.st_mtim.tv_nsec == b.st_mtim.tv_nsec &&
           a.st_ctim.tv_sec == b.st_ctim.tv_sec && a.st_ctim.tv_nsec == b.st_ctim.tv_nsec;
}

// Copies `len` bytes: a reflink where the filesystem has them, else in the kernel.
void copy_bytes(int from, int to, std::uint64_t len, const std::string& what) {
    if (len == 0) return;
    struct stat st;
    if (::fstat(from, &st) == 0 && static_cast<std::uint64_t>(st.st_size) == len &&
        ::ioctl(to, FICLONE, from) == 0)
        return;
    loff_t in = 0, out = 0;
    while (static_cast<std::uint64_t>(in) < len) {
        ssize_t n = ::copy_file_range(from, &in, to, &out, len - static_cast<std::uint64_t>(in), 0);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) throw_errno("copying " + what, errno);
        if (n == 0) throw StoreError(ErrorKind::io, "copying " + what + ": source ended early");
    }
}

}  // namespace

std::shared_ptr<const ViewTree> Daemon::snapshot(std::vector<std::uint64_t> known) {
    std::lock_guard lk(tree_mu_);
    std::uint64_t txn = store->catalog().last_txn_id();
    const auto ns = names();
    // New views (a SIGHUP) need a new tree as much as a new catalog does.
    if (!tree_ || txn != tree_txn_ || ns != tree_ns_) {
        auto rtxn = store->catalog().read();
        auto next = std::make_shared<const ViewTree>(
            ViewTree::build(rtxn, ns->views(), ns->root_mode(), empty_dir_mtime_ns,
                            opts.lock ? &*opts.lock : nullptr));
        for (const auto& missing : next->missing_locked())
            if (missing_logged_.insert(missing).second)
                spdlog::warn(
                    "the lock file's {} is not in this store, so the mount leaves it out "
                    "(`modelfs apply` the lock file to add it)",
                    missing);
        if (tree_ && invalidator) invalidator->tree_changed(tree_, next, std::move(known));
        tree_ = std::move(next);
        tree_ns_ = ns;
        tree_txn_ = rtxn.id();  // may be older than `txn`: then the next call builds again
        spdlog::debug("catalog snapshot of transaction {}: {} entries", tree_txn_, tree_->size());
    }
    return tree_;
}

Entry Daemon::resolve(const std::string& path) {
    Entry e = names()->resolve(*snapshot(), path);
    // An ingest may have moved the name from the overlay to the catalog between the snapshot
    // and the look into the overlay. A snapshot taken now is new enough: the ingest commits
    // before it unlinks.
    if (!e.exists()) e = names()->resolve(*snapshot(), path);
    if (e.kind == Entry::Kind::overlay_file) {
        std::lock_guard lk(ingesting_mu_);
        if (auto it = ingesting_.find(e.real_ino); it != ingesting_.end()) {
            e.st.st_mode = (e.st.st_mode & S_IFMT) | it->second;
            e.st.st_nlink = 1;
        }
    }
    return e;
}

std::optional<Entry> Daemon::current(std::uint64_t ino) {
    if (ino == ViewTree::kRootIno) return resolve("");
    auto known = inodes.get(ino);
    if (!known) return std::nullopt;
    Entry now = resolve(known->path);
    if (now.same_object(*known)) {
        inodes.update(ino, now);
        now.ino = ino;
        now.st.st_ino = static_cast<ino_t>(ino);
        return now;
    }
    if (known->kind == Entry::Kind::tree_file) return known;  // an older version, still stored
    if (known->kind == Entry::Kind::overlay_file && now.kind == Entry::Kind::tree_file) {
        // Stored meanwhile, by this mount (which remembers what it stored) or by another one
        // (which links the written inode as the blob): the same bytes, so the same file to
        // whoever has it.
        bool stored_here = false;
        {
            std::lock_guard lk(ingesting_mu_);
            auto it = stored_from_.find(known->overlay_id);
            stored_here = it != stored_from_.end() && it->second == now.blob;
        }
        const stdfs::path blob_path = store->blobs().path_of(now.blob);
        struct stat blob;
        if (stored_here || (::stat(blob_path.c_str(), &blob) == 0 &&
                            blob.st_ino == known->real_ino && blob.st_dev == known->st.st_dev &&
                            Namespace::overlay_ino(blob_path, blob) == known->overlay_id)) {
            inodes.update(ino, now);
            now.ino = ino;
            now.st.st_ino = static_cast<ino_t>(ino);
            return now;
        }
    }
    // An overlay file whose name is gone (unlinked, or moved by another process) is still there
    // for as long as it is open through the mount, as on any filesystem.
    struct stat st;
    if (known->kind == Entry::Kind::overlay_file && files.stat_overlay(ino, &st)) {
        known->st = st;
        known->st.st_ino = static_cast<ino_t>(ino);
        known->st.st_blksize = 1 << 20;
        return known;
    }
    spdlog::debug("inode {} ({}, {}) is gone; its path now leads to {}", ino, known->path,
                  known->kind == Entry::Kind::overlay_file ? "an overlay file" : "a folder",
                  now.exists() ? "something else" : "nothing");
    return std::nullopt;
}

void Daemon::make_overlay_parents(const std::string& path) {
    Location loc = names()->locate(parent_of(path));
    if (loc.area == Location::Area::view) names()->make_overlay_dirs(loc);
}

stdfs::path Daemon::copy_up(const Entry& e, std::uint64_t keep, bool replace) {
    make_overlay_parents(e.path);
    Location loc = names()->locate(e.path);
    stdfs::path real = names()->real_path(loc);
    // Built in staging/ and renamed into place, so the overlay never shows a half copy.
    StagingFile staged = store->blobs().make_staging(".copyup");
    UniqueFd blob = replace ? UniqueFd(::open(e.real.c_str(), O_RDONLY | O_CLOEXEC))
                            : open_blob(e.blob);  // checked: a changed blob is never copied up
    // A composed blob has no file until it is materialised (checked against its hash).
    if (!replace && !blob && errno == ENOENT) blob = store->open_blob_file(e.blob);
    if (!blob && keep > 0 && errno == EIO)
        throw StoreError(ErrorKind::io, "blob " + e.blob.hex() + " of " + e.path +
                                            " was changed behind the store's back and is "
                                            "quarantined; run `modelfs verify`");
    if (!blob && keep > 0) {
        auto rec = store->catalog().read().get_blob(e.blob);
        if (rec && !rec->sources.empty())
            throw StoreError(ErrorKind::io, e.path +
                                                " is a remote model not downloaded yet: read it "
                                                "once (or `modelfs fetch` it) before changing it "
                                                "in place");
        throw StoreError(ErrorKind::not_found, "blob " + e.blob.hex() + " of " + e.path +
                                                   " is missing; run `modelfs verify`");
    }
    std::uint64_t n = std::min<std::uint64_t>(keep, static_cast<std::uint64_t>(e.st.st_size));
    copy_bytes(blob.get(), staged.fd(), n, e.path);
    if (keep > n && ::ftruncate(staged.fd(), static_cast<off_t>(keep)) != 0)
        throw_errno("extending " + e.path, errno);
    if (n < static_cast<std::uint64_t>(e.st.st_size) &&
        ::ftruncate(staged.fd(), static_cast<off_t>(n)) != 0)
        throw_errno("truncating " + e.path, errno);
    ::fchmod(staged.fd(), e.st.st_mode & 07777);
    if (::renameat2(AT_FDCWD, staged.path().c_str(), AT_FDCWD, real.c_str(), RENAME_NOREPLACE) != 0)
        throw_errno("placing the copy of " + e.path + " at " + real.string(), errno);
    staged.release();
    // The name now means the copy: the kernel must look it up again (the stored version's inode
    // stays with whoever has it open).
    if (!replace && invalidator)
        invalidator->forget_entry(resolve(parent_of(e.path)).ino, leaf_of(e.path));
    return real;
}

void Daemon::remove_from_catalog(const Entry& e, std::vector<std::uint64_t> known) {
    if (!e.sidecar.empty()) {
        store->remove_sidecar(e.model_key, e.sidecar);
    } else {
        store->remove_model(e.model_key);
        spdlog::info("removed model {} (its content stays in the store until `modelfs gc`)",
                     e.model_key);
    }
    snapshot(std::move(known));  // starts the invalidation of the names other views showed
}

void Daemon::queue_ingest_tree(const std::string& path) {
    Location loc = names()->locate(path);
    if (loc.area != Location::Area::view) return;
    stdfs::path real = names()->real_path(loc);
    std::error_code ec;
    if (stdfs::is_regular_file(stdfs::symlink_status(real, ec))) {
        ingester->push(path);
        return;
    }
    for (auto it = stdfs::recursive_directory_iterator(real, ec);
         !ec && it != stdfs::recursive_directory_iterator(); it.increment(ec))
        if (it->is_regular_file(ec) && !it->is_symlink(ec))
            ingester->push(join_path(path, stdfs::relative(it->path(), real, ec).string()));
}

// While it lives, resolve() shows the file being linked into the store as it was.
struct IngestingMark {
    Daemon& dm;
    ino_t ino;
    IngestingMark(Daemon& d, ino_t i, mode_t mode) : dm(d), ino(i) {
        std::lock_guard lk(dm.ingesting_mu_);
        dm.ingesting_[ino] = mode & 07777;
    }
    ~IngestingMark() {
        std::lock_guard lk(dm.ingesting_mu_);
        dm.ingesting_.erase(ino);
    }
};

void Daemon::ingest(const std::string& path) {
    // Cut into tensors only once all of the below is done: after this ingest's own catalog
    // snapshot (the split commits again, and an invalidator pass picking the save up first would
    // notify the folder whose lock the writing tool holds), and outside the edit lock (writers'
    // opens and releases wait on it; a daemon killed while a closed file's release waits leaves
    // that file marked unfinished).
    std::optional<Sha256> split;
    try {
        Entry e = resolve(path);
        if (e.kind != Entry::Kind::overlay_file || !S_ISREG(e.st.st_mode)) return;
        Location loc = names()->locate(path);
        const auto size = static_cast<std::uint64_t>(e.st.st_size);
        if (names()->role(*snapshot(), loc.view, loc.rel, size).kind == FileRole::Kind::plain)
            return;
        UniqueFd fd(::open(e.real.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
        struct stat before;
        if (!fd || ::fstat(fd.get(), &before) != 0 || !S_ISREG(before.st_mode)) return;
        // Two names in the view (a hard link a tool made): a model has one name, so the file
        // stays plain until one goes. A read-only file with a second name is the one case the
        // store makes: a crash between linking it into blobs/ and unlinking it here.
        if (before.st_nlink > 1 && (before.st_mode & 0222)) return;
        if (files.being_written(files.edit(), before.st_ino))
            return;  // its last close queues it again
        bool busy = false;
        if (auto why = overlay_writes::held(fd.get(), &busy)) {
            if (!busy) spdlog::warn("{} stays a plain file of this view: {}", path, *why);
            return;
        }
        if (auto why = overlay_writes::kept_by_owner(before)) {
            spdlog::info("{} stays a plain file of this view: {}", path, *why);
            overlay_writes::set_reason(fd.get(), *why);
            return;
        }
        // The long part, outside the lock: writers may open the file meanwhile (checked below).
        FileDigests d = digest_fd(fd.get(), nullptr, path.c_str());
        // On disk before anyone waits on the lock below (fsync of a few GB takes seconds).
        ::fdatasync(fd.get());

        const OpenFiles::Edit edit = files.edit();
        struct stat now;
        if (files.being_written(edit, before.st_ino) || ::lstat(e.real.c_str(), &now) != 0 ||
            !same_file_state(before, now) || static_cast<std::uint64_t>(now.st_size) != d.size)
            return;  // changed while hashed: whoever changed it queues it again
        // No writer of any process may hold it from here until its name in the view is gone
        // (overlay_writes.h); one that opens it now waits, then finds the stored model.
        if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) return;  // its writer's close queues it
        if (overlay_writes::held(fd.get(), &busy)) return;
        FileRole role = names()->role(*snapshot(), loc.view, loc.rel, d.size);
        if (role.kind == FileRole::Kind::plain) return;
        FileCommit fc;
        fc.path = e.real;
        fc.fd = fd.get();
        fc.digests = d;
        fc.category = role.category;
        fc.name = role.name;
        fc.ext = role.ext;
        fc.sidecar = role.kind == FileRole::Kind::sidecar ? role.suffix : "";
        fc.mtime = now.st_mtim.tv_sec;
        fc.mode = now.st_mode & 07777;
        fc.source = to_source({SourceKind::mount, {}, path});
        FileCommitResult r;
        {
            IngestingMark shown(*this, now.st_ino, now.st_mode);
            try {
                r = store->commit_file(fc);
            } catch (const StoreError& err) {
                if (err.kind() == ErrorKind::bad_input || err.kind() == ErrorKind::not_found) {
                    spdlog::warn("{} stays a plain file of this view: {}", path, err.what());
                    // Not tried again until it is written or renamed; a sidecar whose model is
                    // gone (not_found) may find it again.
                    if (err.kind() == ErrorKind::bad_input)
                        overlay_writes::set_reason(fd.get(), err.what());
                    return;
                }
                throw;
            }
            // Every inode number the kernel has for the written file now stands for the stored
            // content (the same bytes), before its name in the view goes: no moment in which
            // the name leads nowhere, and cached pages and open handles stay right.
            // The name's own folder is left out of the cache invalidation this starts (the
            // inode numbers are moved to the stored model just below; the tool writing there
            // holds the folder's lock: Invalidator::tree_changed).
            const std::string folder = parent_of(path);
            Entry stored = names()->resolve_catalog(
                *snapshot({folder.empty() ? ViewTree::kRootIno : ViewTree::dir_ino(folder)}), path);
            if (stored.kind == Entry::Kind::tree_file) inodes.replace_object(e, stored);
            {
                // A lookup may still hand out the written file's inode until it is unlinked.
                std::lock_guard lk(ingesting_mu_);
                if (stored_from_.size() >= 4096) stored_from_.clear();
                stored_from_[e.overlay_id] = d.sha256;
            }
            if (::unlink(e.real.c_str()) != 0)
                spdlog::error("{} is stored as {} but could not be removed from {}: {}", path,
                              d.sha256.hex(), e.real.string(), std::strerror(errno));
            else if (r.new_blob)
                store->record_blob_stat(d.sha256);  // its ctime moved with the unlink
        }
        spdlog::info("{}: stored as {}{} ({}{} bytes)", path, model_key(role.category, role.name),
                     fc.sidecar.empty() ? "" : " sidecar " + fc.sidecar,
                     r.new_blob ? "" : "already stored, ", d.size);
        // A model sharing tensors with stored blobs is composed (tensor_split.h), below.
        if (r.new_blob && fc.sidecar.empty()) split = d.sha256;
        if (role.kind == FileRole::Kind::model && role.category != Category::file) {
            // The name in this view may go on showing another version: say why, once per save.
            const std::string key = model_key(role.category, role.name);
            const std::string view = names()->views().at(static_cast<std::size_t>(loc.view)).name();
            if (opts.lock) {
                spdlog::warn(
                    "{}: stored as version {} of {}, but this mount shows only the "
                    "versions its lock file names; every other mount shows it",
                    path, r.label, key);
            } else if (auto m = store->catalog().read().get_model(key)) {
                if (auto pin = m->pins.find(view); pin != m->pins.end() && pin->second != r.label)
                    spdlog::warn(
                        "{}: stored as version {} of {}; view {} pins it to {}, so it "
                        "keeps showing that (`modelfs unpin {} --view {}` to show the "
                        "current version)",
                        path, r.label, key, view, pin->second, key, view);
            }
            // Sidecars written before their model become its sidecars now.
            stdfs::path dir = e.real.parent_path();
            std::string stem = leaf_of(path).substr(0, leaf_of(path).size() - role.ext.size());
            std::error_code ec;
            for (auto it = stdfs::directory_iterator(dir, ec);
                 !ec && it != stdfs::directory_iterator(); it.increment(ec)) {
                std::string name = it->path().filename().string();
                if (name.starts_with(stem + ".") && name != leaf_of(path))
                    ingester->push(join_path(parent_of(path), name));
            }
        }
    } catch (const std::exception& err) {
        spdlog::error("storing {}: {} (the file stays as it is)", path, err.what());
    }
    if (!split) return;
    try {
        store->split_tensors(*split);
    } catch (const std::exception& err) {
        spdlog::warn("{}: kept whole; splitting it into tensors failed: {}", path, err.what());
    }
}

}  // namespace modelfs::fs
