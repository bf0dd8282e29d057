// `modelfs adopt --confirm` (delete what the backups hold that the store has) and
// `modelfs unadopt` (plain folders back). unadopt, per record:
//  1. with the view mounted: put every file the mount shows that the backup lacks (models added
//     through the mount, files confirm deleted) into MODELS.modelfs-restore/: the view's own
//     files (STORE/views/VIEW/) as hard links, the rest read through the mount, which shows
//     exactly what the tool saw;
//  2. unmount (busy: say which tool to stop; remove the copies; change nothing else);
//  3. rmdir the mountpoint, rename the backup back (or mkdir when confirm removed it all), move
//     the copies in; the view's files leave STORE/views/ (renamed back, or unlinked: the tree
//     has them);
//  4. adopted files the tree lacks (adopt moved them into the store; confirm deleted
//     duplicates) come back from their blobs, as hard links (one per blob);
//  5. every adopted file becomes independent of the store again: models no adopted install
//     needs are dropped from the store (gc unlinks their blob names, the file keeps its
//     inode); a file still hard-linked with a blob is replaced by a copy of itself; the recorded
//     mode and mtime are put back; the empty folders adopt did not record go.
// Each step looks at what an interrupted run left (the restore folder is only discarded while
// the mount still shows everything in it), so running unadopt again finishes the job.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <set>

#include <spdlog/spdlog.h>

#include "modelfs/adopt/adopt.h"
#include "modelfs/layouts/view_layout.h"
#include "modelfs/store/errors.h"
#include "modelfs/store/safe_open.h"
#include "modelfs/store/version_source.h"
#include "modelfs/store/view_files.h"
#include "run_internal.h"
#include "util.h"

namespace stdfs = std::filesystem;

namespace modelfs::adopt {

using detail::is_under;

namespace {

// Test hook: $MODELFS_UNADOPT_TEST_KILL_AT=POINT kills unadopt there (a crash at that step).
void kill_point(const char* point) {
    const char* at = std::getenv("MODELFS_UNADOPT_TEST_KILL_AT");
    if (at && std::strcmp(at, point) == 0) ::raise(SIGKILL);
}

bool selected(const Record& r, const std::vector<stdfs::path>& roots) {
    if (roots.empty()) return true;
    for (const auto& p : roots) {
        std::error_code ec;
        stdfs::path c = stdfs::weakly_canonical(stdfs::absolute(p), ec);
        if (c == r.root || c == r.models_dir) return true;
    }
    return false;
}

// Removes empty folders below `dir` (and `dir` itself when it ends up empty).
void prune_empty(const stdfs::path& dir) {
    std::error_code ec;
    std::vector<stdfs::path> dirs;
    for (auto it = stdfs::recursive_directory_iterator(dir, ec); !ec && it != decltype(it)();
         it.increment(ec))
        if (it->is_directory(ec) && !it->is_symlink(ec)) dirs.push_back(it->path());
    std::sort(dirs.rbegin(), dirs.rend());
    for (const auto& d : dirs) ::rmdir(d.c_str());
    ::rmdir(dir.c_str());
}

}  // namespace

namespace detail {

// FORMAT.md "Saving": what confirm frees is the blocks of the backup files it deletes whose every
// name goes (a file whose content lives on as a blob under another name frees its own blocks; a
// hard link of a file that stays frees nothing). adopt reports this same walk, without deleting,
// as what confirm will free, so the two figures are one computation.
ConfirmOutcome confirm_walk(Store& store, const Record& r, bool apply) {
    ConfirmOutcome c;
    c.id = r.id;
    std::map<stdfs::path, const RecordFile*> by_path;
    for (const auto& f : r.files)
        if (f.replaced) by_path[f.path.lexically_normal()] = &f;
    const stdfs::path overlay = store.root() / "views" / r.view;
    std::vector<stdfs::path> files;
    std::error_code ec;
    for (auto it = stdfs::recursive_directory_iterator(r.backup, ec); !ec && it != decltype(it)();
         it.increment(ec))
        if (!it->is_directory(ec) || it->is_symlink(ec)) files.push_back(it->path());
    struct Inode {
        nlink_t links;
        std::uint64_t bytes;
        nlink_t going = 0;
    };
    std::map<std::pair<dev_t, ino_t>, Inode> inodes;
    for (const auto& p : files) {
        stdfs::path rel = p.lexically_relative(r.backup);
        auto it = by_path.find((r.models_dir / rel).lexically_normal());
        // Looked at and deleted under the fd of its folder, reached without a link
        // (safe_open.h): a folder of the backup swapped for a link is not followed.
        UniqueFd dir = open_no_symlinks(p.parent_path(), O_PATH | O_DIRECTORY);
        if (!dir) {
            c.kept.push_back(open_failure(p.string(), errno) + "; left untouched");
            continue;
        }
        const std::string leaf = p.filename().string();
        struct stat st;
        if (::fstatat(dir.get(), leaf.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
        std::string keep;
        if (it == by_path.end()) {
            keep = S_ISLNK(st.st_mode) ? "a link (its target stays where it is)"
                                       : "not in the adoption record";
        } else {
            const RecordFile& f = *it->second;
            const bool same = S_ISREG(st.st_mode) &&
                              static_cast<std::uint64_t>(st.st_size) == f.size &&
                              detail::ns_of(st.st_mtim) == f.mtime_ns;
            if (f.action == Action::store) {
                auto sha = Sha256::from_hex(f.sha256);
                if (!sha || !store.blobs().exists(*sha))
                    keep = "its content is not in the store";
                else if (!same)
                    keep = "changed since it was adopted";
            } else if (f.action == Action::overlay) {
                struct stat ost;
                if (::stat((overlay / rel).c_str(), &ost) != 0 ||
                    static_cast<std::uint64_t>(ost.st_size) != f.size)
                    keep = "no copy in the view's overlay";
                else if (!same)
                    keep = "changed since it was adopted";
            } else {
                keep = f.note.empty() ? std::string("not adopted") : f.note;
            }
        }
        if (!keep.empty()) {
            c.kept.push_back(p.string() + ": " + keep);
            continue;
        }
        if (apply && ::unlinkat(dir.get(), leaf.c_str(), 0) != 0) {
            c.kept.push_back(p.string() + ": cannot delete: " + std::strerror(errno));
            continue;
        }
        ++c.deleted;
        auto& in =
            inodes
                .try_emplace({st.st_dev, st.st_ino},
                             Inode{st.st_nlink, static_cast<std::uint64_t>(st.st_blocks) * 512})
                .first->second;
        ++in.going;
    }
    // Freed only when every name of the inode went (a unique file lives on as a blob).
    for (const auto& [id, in] : inodes)
        if (in.going >= in.links) c.bytes_freed += in.bytes;
    return c;
}

}  // namespace detail

std::vector<ConfirmOutcome> confirm(Store& store, const std::vector<stdfs::path>& roots) {
    std::vector<ConfirmOutcome> out;
    for (auto& r : load_records(store.root())) {
        if (!selected(r, roots)) continue;
        if (r.state != RecordState::mounted) {
            ConfirmOutcome c;
            c.id = r.id;
            const bool done = r.state == RecordState::confirmed;
            c.status = done ? "already confirmed"
                            : "not mounted (" + std::string(state_name(r.state)) + ")";
            c.ok = done;
            out.push_back(std::move(c));
            continue;
        }
        ConfirmOutcome c = detail::confirm_walk(store, r, true);
        prune_empty(r.backup);
        r.state = RecordState::confirmed;
        save_record(store.root(), r);
        c.status = "confirmed";
        c.ok = true;
        out.push_back(std::move(c));
    }
    return out;
}

namespace {

// Copies every file the mount shows that will not come back from the backup into `tmp`: what the
// tool wrote (the overlay's plain files, models saved through the mount since adopting, their
// sidecars). The view also shows the store's other models (another tool's); those stay out.
std::size_t copy_missing(Store& store, const Record& r, const stdfs::path& tmp,
                         std::vector<std::string>& notes) {
    const auto layout = layouts::ViewLayout::builtin(r.view);
    const stdfs::path overlay = store.root() / "views" / r.view;
    std::set<stdfs::path> copied_models;  // without extension, for their sidecars
    std::size_t others = 0;
    auto wanted = [&](const stdfs::path& rel) {
        if (stdfs::exists(stdfs::symlink_status(overlay / rel))) return true;
        if (layout) {
            // Not a model path: a file of this view, if it was stored (view_files.h).
            auto vp = layout->classify(rel.string());
            const std::string key =
                vp && !vp->ext.empty()
                    ? model_key(vp->category, vp->name)
                    : model_key(Category::file, view_file_name(r.view, rel.string()));
            {
                // A fresh snapshot: the mount's ingest unlinks an overlay file only after its
                // catalog commit, so a file just gone from the overlay is in this one.
                auto m = store.catalog().read().get_model(key);
                if (!m) return false;
                const auto& v = m->versions.at(m->shown_in(r.view));
                if (parse_source(v.source).kind == SourceKind::mount && v.added >= r.created) {
                    copied_models.insert(rel.parent_path() / rel.stem());
                    return true;
                }
                return false;
            }
        }
        // A sidecar of a model saved through the mount: "<stem>.<suffix>" beside it.
        const std::string leaf = rel.filename().string();
        for (const auto& m : copied_models)
            if (m.parent_path() == rel.parent_path() &&
                leaf.rfind(m.filename().string() + ".", 0) == 0)
                return true;
        return false;
    };
    // Adopted files restore_from_blobs puts back (without reading them through the mount).
    auto from_blob = [&](const RecordFile& f) {
        auto sha = Sha256::from_hex(f.sha256);
        return f.action == Action::store && sha && store.blobs().exists(*sha);
    };
    std::set<stdfs::path> covered;  // mount paths that are a backup file shown elsewhere
    for (const auto& f : r.files) {
        if (f.shown_at.empty()) continue;
        stdfs::path orig = detail::original_path(r, f);
        if (stdfs::exists(stdfs::symlink_status(orig)) || from_blob(f))
            covered.insert(r.models_dir / f.shown_at);
    }
    std::set<stdfs::path> recorded;  // the adopted files' own paths
    for (const auto& f : r.files)
        if (f.replaced) {
            recorded.insert(f.path);
            if (from_blob(f)) covered.insert(f.path);
        }
    std::size_t n = 0;
    std::error_code ec;
    for (auto it = stdfs::recursive_directory_iterator(r.models_dir, ec);
         !ec && it != decltype(it)(); it.increment(ec)) {
        const stdfs::path& p = it->path();
        stdfs::path rel = p.lexically_relative(r.models_dir);
        struct stat st;
        if (::lstat(p.c_str(), &st) != 0) continue;
        if (S_ISDIR(st.st_mode)) {
            if (!stdfs::exists(r.backup / rel)) stdfs::create_directories(tmp / rel);
            continue;
        }
        if (!S_ISREG(st.st_mode) || covered.count(p)) continue;
        if (stdfs::exists(stdfs::symlink_status(r.backup / rel))) continue;
        // Adopted content confirm deleted from the backup comes back too.
        const bool adopted = recorded.count(p) > 0;
        // The view's own file in the overlay: a hard link of it (its inode, no copy), which
        // hand_back_overlay then unlinks from the overlay. The mount may still ingest it (a model
        // saved just now): the store never takes an inode with a second link (FORMAT.md "Whose
        // inode a blob may be"), checking before and after it links; one that is a blob's inode
        // already (linked, not yet unlinked from the overlay) has a third name: read through the
        // mount instead.
        if (stdfs::exists(stdfs::symlink_status(overlay / rel))) {
            stdfs::create_directories((tmp / rel).parent_path());
            struct stat lst;
            if (::link((overlay / rel).c_str(), (tmp / rel).c_str()) == 0) {
                if (::lstat((tmp / rel).c_str(), &lst) == 0 && lst.st_nlink <= 2) {
                    if (!adopted) ++n;
                    continue;
                }
                ::unlink((tmp / rel).c_str());
            }
        }
        if (!adopted && !wanted(rel)) {
            ++others;
            continue;
        }
        stdfs::create_directories((tmp / rel).parent_path());
        try {
            detail::copy_file_durable(p, tmp / rel, st.st_mode & 07777);
        } catch (const StoreError& e) {
            if (!adopted) throw;
            // Its blob is gone (quarantined: the bytes no longer matched): nothing to bring
            // back, which must not keep the rest of the folder from coming back.
            std::error_code rm;
            stdfs::remove(tmp / rel, rm);
            notes.push_back(p.string() + " could not be brought back (" + e.what() +
                            "); `modelfs verify` says what happened to its content");
            continue;
        }
        struct timespec ts[2] = {st.st_atim, st.st_mtim};
        ::utimensat(AT_FDCWD, (tmp / rel).c_str(), ts, AT_SYMLINK_NOFOLLOW);
        if (!adopted) ++n;  // new since adopting; adopted files confirm deleted are not news
    }
    if (ec)
        throw StoreError(ErrorKind::io, "listing " + r.models_dir.string() + ": " + ec.message());
    if (others)
        notes.push_back(std::to_string(others) +
                        " files the view showed are other tools' models in the store; they stay "
                        "there (modelfs mount shows them)");
    return n;
}

bool same_bytes(int a, int b) {
    std::vector<char> x(1 << 20), y(1 << 20);
    for (;;) {
        const ssize_t n = ::read(a, x.data(), x.size());
        if (n < 0) return false;
        std::size_t got = 0;
        while (got < static_cast<std::size_t>(n)) {
            const ssize_t m = ::read(b, y.data() + got, static_cast<std::size_t>(n) - got);
            if (m <= 0) return false;
            got += static_cast<std::size_t>(m);
        }
        if (std::memcmp(x.data(), y.data(), got) != 0) return false;
        if (n == 0) return ::read(b, y.data(), 1) == 0;
    }
}

// The view's plain files (STORE/views/VIEW/, FORMAT.md "The mount's overlay") are this install's
// files: with the view unmounted, each goes back to its path in the tree by rename, so its inode
// is handed back and nothing stays behind in the store to clash with a later adopt. One the tree
// has already (the backup's file, its hard link before confirm, or equal bytes) is only unlinked
// from the overlay; one whose bytes differ from the tree's stays, named in `notes`. Through fds
// opened without following links (safe_open.h). Returns how many came back that adopt had not
// recorded (saved through the mount since). Idempotent: an interrupted run finishes the rest.
std::size_t hand_back_overlay(Store& store, const Record& r, const ActingUser* as,
                              std::vector<std::string>& notes) {
    const stdfs::path overlay = store.root() / "views" / r.view;
    std::set<stdfs::path> recorded;
    for (const auto& f : r.files)
        if (f.replaced) recorded.insert(f.path.lexically_normal());
    std::vector<stdfs::path> files;
    std::error_code ec;
    if (!stdfs::exists(stdfs::symlink_status(overlay))) return 0;  // none, or handed back already
    for (auto it = stdfs::recursive_directory_iterator(overlay, ec); !ec && it != decltype(it)();
         it.increment(ec))
        if (!it->is_directory(ec) || it->is_symlink(ec)) files.push_back(it->path());
    std::size_t added = 0;
    for (const auto& src : files) {
        const stdfs::path rel = src.lexically_relative(overlay);
        const stdfs::path dst = r.models_dir / rel;
        UniqueFd from = open_no_symlinks(src.parent_path(), O_PATH | O_DIRECTORY);
        UniqueFd to = make_dirs_no_symlinks(dst.parent_path());
        if (!from || !to) {
            notes.push_back(open_failure(dst.parent_path().string(), errno) + "; " + src.string() +
                            " stays in the store");
            continue;
        }
        const std::string leaf = rel.filename().string();
        struct stat sst, dstat;
        if (::fstatat(from.get(), leaf.c_str(), &sst, AT_SYMLINK_NOFOLLOW) != 0) continue;
        if (::fstatat(to.get(), leaf.c_str(), &dstat, AT_SYMLINK_NOFOLLOW) != 0) {
            if (errno != ENOENT) throw_errno("reading " + dst.string(), errno);
            if (::renameat(from.get(), leaf.c_str(), to.get(), leaf.c_str()) != 0) {
                notes.push_back("cannot move " + src.string() + " back to " + dst.string() + ": " +
                                std::strerror(errno) + "; it stays in the store");
                continue;
            }
            // Written through the view of this user's install: the user's file, not root's.
            if (as && sst.st_uid != as->uid)
                (void)::fchownat(to.get(), leaf.c_str(), as->uid, as->gid, AT_SYMLINK_NOFOLLOW);
            modelfs::fsync_dir(dst.parent_path());
            if (!recorded.count(dst.lexically_normal())) ++added;
            kill_point("overlay_file_done");
            continue;
        }
        bool same = sst.st_ino == dstat.st_ino && sst.st_dev == dstat.st_dev;
        if (!same && S_ISREG(sst.st_mode) && S_ISREG(dstat.st_mode) &&
            sst.st_size == dstat.st_size) {
            UniqueFd a = open_beneath(from.get(), leaf, O_RDONLY | O_NONBLOCK);
            UniqueFd b = open_beneath(to.get(), leaf, O_RDONLY | O_NONBLOCK);
            same = a && b && same_bytes(a.get(), b.get());
        }
        if (!same) {
            notes.push_back(dst.string() + " differs from what the view showed there; the " +
                            "view's file stays at " + src.string());
            continue;
        }
        if (::unlinkat(from.get(), leaf.c_str(), 0) != 0)
            notes.push_back("cannot remove " + src.string() + ": " + std::strerror(errno));
        kill_point("overlay_file_done");
    }
    if (ec) throw StoreError(ErrorKind::io, "listing " + overlay.string() + ": " + ec.message());
    prune_empty(overlay);
    return added;
}

// Folders the view's mount showed (every folder of the tool's layout) and unadopt made to put
// files back: the empty ones that were not there when adopt recorded the install go again; the
// install's own empty ones, which confirm removed with the backup, come back.
void remove_made_folders(const Record& r) {
    if (!r.dirs) return;
    const std::set<std::string> had(r.dirs->begin(), r.dirs->end());
    for (const auto& d : had) make_dirs_no_symlinks(r.models_dir / d);
    std::vector<stdfs::path> dirs;
    std::error_code ec;
    for (auto it = stdfs::recursive_directory_iterator(r.models_dir, ec);
         !ec && it != decltype(it)(); it.increment(ec))
        if (it->is_directory(ec) && !it->is_symlink(ec)) dirs.push_back(it->path());
    std::sort(dirs.rbegin(), dirs.rend());  // children first
    for (const auto& d : dirs)
        if (!had.count(d.lexically_relative(r.models_dir).string())) ::rmdir(d.c_str());
}

}  // namespace

namespace detail {

stdfs::path own_path(const RecordFile& f) {
    std::error_code ec;
    if (f.replaced && !stdfs::is_symlink(f.path, ec)) return f.path;
    return f.real;
}

bool is_blob_inode(Store& store, const std::string& sha256, const stdfs::path& p) {
    struct stat st;
    return ::lstat(p.c_str(), &st) == 0 && is_blob_inode(store, sha256, st);
}

bool is_blob_inode(Store& store, const std::string& sha256, const struct stat& st) {
    auto sha = Sha256::from_hex(sha256);
    if (!sha) return false;
    struct stat bst;
    return S_ISREG(st.st_mode) && ::stat(store.blobs().path_of(*sha).c_str(), &bst) == 0 &&
           bst.st_ino == st.st_ino && bst.st_dev == st.st_dev;
}

// Through fds only (safe_open.h): the recorded path was canonical when adopt wrote it, so a link
// in it now is one the user made since, and what it leads to is not this install's.
void make_independent(Store& store, const RecordFile& f, const stdfs::path& p,
                      const stdfs::path& overlay_copy, const ActingUser* as,
                      std::vector<std::string>* refused) {
    auto refuse = [&](const std::string& why) {
        if (refused)
            refused->push_back(why);
        else
            spdlog::warn("{}", why);
    };
    UniqueFd dir = open_no_symlinks(p.parent_path(), O_PATH | O_DIRECTORY);
    const std::string name = p.filename().string();
    UniqueFd fd = dir ? open_beneath(dir.get(), name, O_RDONLY | O_NONBLOCK) : UniqueFd();
    if (!fd) {
        const int e = errno;
        if (e != ENOENT) refuse(open_failure(p.string(), e) + "; left untouched");
        return;
    }
    struct stat st;
    if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) return;
    const bool shared = is_blob_inode(store, f.sha256, st);
    // A blob's inode is the store's and is replaced below; anything else must be the user's.
    if (as && !shared)
        if (auto why = as->refusal(st, p.string(), true)) {
            refuse(*why + " (its mode and time were not restored)");
            return;
        }
    if (!overlay_copy.empty()) {
        struct stat ost;
        // The overlay's hard link of a plain file: the view is gone, so is its copy.
        if (::lstat(overlay_copy.c_str(), &ost) == 0 && ost.st_ino == st.st_ino &&
            ost.st_dev == st.st_dev)
            ::unlink(overlay_copy.c_str());
    }
    const unsigned mode = f.mode ? f.mode : 0644;
    int target = fd.get();
    UniqueFd copy;
    if (shared) {
        const std::string tmp = name + ".modelfs-unadopt.tmp";
        ::unlinkat(dir.get(), tmp.c_str(), 0);
        copy = UniqueFd(::openat(dir.get(), tmp.c_str(),
                                 O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
        if (!copy) throw_errno("creating " + (p.parent_path() / tmp).string(), errno);
        detail::copy_fd_durable(fd.get(), copy.get(), p.string(), (p.parent_path() / tmp).string(),
                                mode);
        // The user's file again, not root's, in the user's install.
        if (as && ::fchown(copy.get(), as->uid, as->gid) != 0)
            spdlog::warn("cannot give {} back to {}: {}", p.string(), as->name,
                         std::strerror(errno));
        if (::renameat(dir.get(), tmp.c_str(), dir.get(), name.c_str()) != 0)
            throw_errno("renaming " + tmp + " to " + p.string(), errno);
        target = copy.get();
    } else if (::fchmod(fd.get(), mode) != 0) {
        throw_errno("chmod " + p.string(), errno);
    }
    if (f.mtime_ns) {
        struct timespec ts[2];
        ts[0].tv_nsec = UTIME_OMIT;
        ts[1].tv_sec = f.mtime_ns / 1000000000;
        ts[1].tv_nsec = f.mtime_ns % 1000000000;
        ::futimens(target, ts);
    }
}

}  // namespace detail

namespace {

using detail::make_independent;
using detail::own_path;

// Adopt moved each file it could into the store (the backup lost its name, FORMAT.md "Adopted
// installs"), and confirm deleted duplicates: put every adopted file the tree lacks back from
// its blob. A hard link first (zero copy): hand_over then takes the store's names away from
// models only this install brought, and make_independent replaces the rest by copies, so in the
// end no file is a blob's inode. Across filesystems (a bind mount): a copy. Returns how many.
std::size_t restore_from_blobs(Store& store, const Record& r, const ActingUser* as,
                               std::vector<std::string>& notes) {
    std::size_t n = 0;
    for (const auto& f : r.files) {
        if (f.action != Action::store) continue;
        auto sha = Sha256::from_hex(f.sha256);
        if (!sha) continue;
        const stdfs::path p = own_path(f);
        const stdfs::path blob = store.blobs().path_of(*sha);
        // A file stored as extents (tensor-level dedup) is rebuilt whole first.
        if (!stdfs::exists(blob)) store.open_blob_file(*sha);
        if (!stdfs::exists(blob)) continue;
        // Folders made and the file linked under fds (safe_open.h): never through a link.
        UniqueFd dir = make_dirs_no_symlinks(p.parent_path());
        if (!dir) {
            notes.push_back(open_failure(p.parent_path().string(), errno) + "; " +
                            p.filename().string() + " was not brought back");
            continue;
        }
        const std::string name = p.filename().string();
        struct stat st;
        if (::fstatat(dir.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 || errno != ENOENT)
            continue;
        // One hard link per blob: a second file of the same content (two names in one install)
        // must not come back as a link of the first, so it is a copy, also after a crash.
        struct stat bst;
        const bool unlinked = ::stat(blob.c_str(), &bst) == 0 && bst.st_nlink == 1;
        if (!unlinked || ::linkat(AT_FDCWD, blob.c_str(), dir.get(), name.c_str(), 0) != 0) {
            const std::string tmp = name + ".modelfs-unadopt.tmp";
            ::unlinkat(dir.get(), tmp.c_str(), 0);
            UniqueFd in(::open(blob.c_str(), O_RDONLY | O_CLOEXEC));
            if (!in) throw_errno("opening " + blob.string(), errno);
            UniqueFd out(::openat(dir.get(), tmp.c_str(),
                                  O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
            if (!out) throw_errno("creating " + (p.parent_path() / tmp).string(), errno);
            detail::copy_fd_durable(in.get(), out.get(), blob.string(),
                                    (p.parent_path() / tmp).string(), f.mode ? f.mode : 0644);
            if (as) (void)::fchown(out.get(), as->uid, as->gid);
            if (::renameat(dir.get(), tmp.c_str(), dir.get(), name.c_str()) != 0)
                throw_errno("renaming " + tmp + " to " + p.string(), errno);
        }
        modelfs::fsync_dir(p.parent_path());
        ++n;
    }
    return n;
}

// Models only this install brought into the store (one version, from its own file, which no
// other adopted install holds): the store drops them and gc removes their blobs' names, so the
// user's file keeps its inode instead of being copied. Returns how many models were dropped.
std::size_t hand_over(Store& store, const Record& r) {
    std::set<std::string> elsewhere;              // model keys other adopted installs hold
    std::set<std::string> given_back = {r.tool};  // tools whose installs hold nothing any more
    std::set<std::string> theirs;  // contents those installs had (and have back, of their own)
    for (const auto& o : load_records(store.root())) {
        if (o.id != r.id && holds_install(o.state))
            for (const auto& f : o.files)
                if (!f.model.empty()) elsewhere.insert(f.model);
        if (!holds_install(o.state)) {
            given_back.insert(o.tool);
            for (const auto& f : o.files) theirs.insert(f.sha256);
        }
    }
    // Brought by adopt from an install that is plain again (this one, or one unadopted while
    // this one still held the content): nothing but this install needs it now.
    auto from_adopt = [&](const std::string& source) {
        const auto tool = adopt_source_tool(source);
        return tool && given_back.count(*tool) > 0;
    };
    std::set<std::string> drop;
    for (const auto& f : r.files) {
        if (f.kind != ScannedFile::Kind::model || f.model.empty() || elsewhere.count(f.model) ||
            (f.action != Action::store && f.action != Action::store_in_place))
            continue;
        auto m = store.catalog().read().get_model(f.model);
        if (!m || m->versions.size() != 1 || !m->versions[0].blob) continue;
        const ModelVersion& v = m->versions[0];
        if (v.blob->hex() != f.sha256 || !from_adopt(v.source)) continue;
        // Everything gc would take (the file, its sidecars) must be back in place first.
        auto back = [&](const std::string& sha) {
            for (const auto& g : r.files) {
                if (g.model != f.model || g.sha256 != sha) continue;
                struct stat st;
                const stdfs::path p = own_path(g);
                if (::lstat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
                    static_cast<std::uint64_t>(st.st_size) == g.size)
                    return true;
            }
            return false;
        };
        // A sidecar another install brought is back in that install already.
        if (!back(f.sha256) ||
            !std::all_of(v.sidecars.begin(), v.sidecars.end(), [&](const Sidecar& sc) {
                return back(sc.blob.hex()) || theirs.count(sc.blob.hex()) > 0;
            }))
            continue;
        drop.insert(f.model);
    }
    // Each goes from the catalog; a blob another model still uses stays (its files here are
    // made copies below), one no model uses any more is handed over by gc.
    const std::vector<std::string> gone(drop.begin(), drop.end());
    for (const auto& key : gone) {
        store.remove_model(key);
        kill_point("model_removed");
    }
    // A file still linked with a blob no model uses (a run killed between the removal and gc
    // below) is handed over too, not copied.
    bool orphan = false;
    for (const auto& f : r.files) {
        auto sha = Sha256::from_hex(f.sha256);
        if (!orphan && sha && (f.action == Action::store || f.action == Action::store_in_place) &&
            detail::is_blob_inode(store, f.sha256, own_path(f)) && store.models_using(*sha).empty())
            orphan = true;
    }
    // gc unlinks the blob names under the store's exclusive lock: after it no store path shares
    // the user's inode, so nothing the user writes can reach the store.
    if (!gone.empty() || orphan) store.gc(false);
    kill_point("handed_over");
    return gone.size();
}

}  // namespace

std::vector<UnadoptOutcome> unadopt(Store& store, const std::vector<stdfs::path>& roots) {
    std::vector<UnadoptOutcome> out;
    for (auto& r : load_records(store.root())) {
        if (!selected(r, roots)) continue;
        UnadoptOutcome u;
        u.id = r.id;
        if (!holds_install(r.state)) {
            u.result = UnadoptOutcome::Result::unadopted_before;
            u.status = "not adopted (unadopted before)";
            u.ok = true;
            out.push_back(std::move(u));
            continue;
        }
        try {
            const stdfs::path tmp = stdfs::path(r.models_dir.string() + ".modelfs-restore");
            if (is_mountpoint(r.mountpoint)) {
                // Everything in a leftover restore folder is still shown by the mount.
                stdfs::remove_all(tmp);
                stdfs::create_directories(tmp);
                u.added = copy_missing(store, r, tmp, u.notes);
                std::string why;
                if (!detail::stop_mount(r.mountpoint, &why)) {
                    stdfs::remove_all(tmp);
                    throw StoreError(ErrorKind::conflict,
                                     r.mountpoint.string() + " is busy (" + why + "): stop " +
                                         r.tool +
                                         " (and anything else using files there), then "
                                         "run `modelfs unadopt` again; nothing was changed");
                }
            }
            // The mountpoint folder adopt made.
            if (stdfs::exists(stdfs::symlink_status(r.backup)) &&
                stdfs::is_directory(r.models_dir) && stdfs::is_empty(r.models_dir))
                ::rmdir(r.models_dir.c_str());
            if (!stdfs::exists(stdfs::symlink_status(r.models_dir))) {
                if (stdfs::exists(stdfs::symlink_status(r.backup))) {
                    if (::rename(r.backup.c_str(), r.models_dir.c_str()) != 0)
                        throw_errno(
                            "renaming " + r.backup.string() + " back to " + r.models_dir.string(),
                            errno);
                } else {
                    stdfs::create_directories(r.models_dir);
                }
                modelfs::fsync_dir(r.models_dir.parent_path());
            } else if (stdfs::exists(stdfs::symlink_status(r.backup))) {
                throw StoreError(ErrorKind::conflict,
                                 "both " + r.models_dir.string() + " (not empty) and " +
                                     r.backup.string() +
                                     " exist; move the files you want out of one of them, "
                                     "remove it, and run `modelfs unadopt` again");
            }
            // Models added through the mount, and what confirm removed from the backup.
            std::error_code ec;
            if (stdfs::exists(tmp)) {
                std::vector<stdfs::path> files;
                for (auto it = stdfs::recursive_directory_iterator(tmp, ec);
                     !ec && it != decltype(it)(); it.increment(ec))
                    if (!it->is_directory(ec))
                        files.push_back(it->path());
                    else
                        make_dirs_no_symlinks(r.models_dir / it->path().lexically_relative(tmp));
                for (const auto& p : files) {
                    stdfs::path dst = r.models_dir / p.lexically_relative(tmp);
                    // Into the user's folders under fds only (safe_open.h).
                    UniqueFd from = open_no_symlinks(p.parent_path(), O_PATH | O_DIRECTORY);
                    UniqueFd to = make_dirs_no_symlinks(dst.parent_path());
                    if (!from || !to) {
                        u.notes.push_back(open_failure(dst.string(), errno) + "; not brought back");
                        continue;
                    }
                    const std::string leaf = dst.filename().string();
                    struct stat st;
                    if (::fstatat(to.get(), leaf.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) continue;
                    if (::renameat(from.get(), p.filename().c_str(), to.get(), leaf.c_str()) != 0)
                        throw_errno("moving " + p.string() + " to " + dst.string(), errno);
                }
                stdfs::remove_all(tmp);
            }
            const stdfs::path overlay = store.root() / "views" / r.view;
            const auto as = ActingUser::for_tree(r.root);
            u.added += hand_back_overlay(store, r, as ? &*as : nullptr, u.notes);
            restore_from_blobs(store, r, as ? &*as : nullptr, u.notes);
            if (std::size_t n = hand_over(store, r))
                u.notes.push_back(std::to_string(n) +
                                  " models only this install had were removed from the store; "
                                  "their files are back here, yours alone");
            std::size_t restored = 0;
            for (const auto& f : r.files) {
                if (f.action != Action::store && f.action != Action::store_in_place &&
                    f.action != Action::overlay)
                    continue;
                stdfs::path rel;
                const bool inside = is_under(f.path, r.models_dir, &rel);
                const stdfs::path p = own_path(f);
                make_independent(
                    store, f, p,
                    f.action == Action::overlay && inside ? overlay / rel : stdfs::path(),
                    as ? &*as : nullptr, &u.notes);
                ++restored;
            }
            u.restored = restored;
            remove_made_folders(r);
            r.state = RecordState::unadopted;
            save_record(store.root(), r);
            u.result = UnadoptOutcome::Result::unadopted;
            u.status = "unadopted";
            u.ok = true;
        } catch (const std::exception& e) {
            u.status = std::string("failed: ") + e.what();
            spdlog::error("unadopt {}: {}", r.root.string(), e.what());
        }
        out.push_back(std::move(u));
    }
    return out;
}

}  // namespace modelfs::adopt
