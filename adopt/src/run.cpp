// The real adopt: commit every file of the plan to the store, write the adoption record, then
// switch the models folder to a view mount (rename to the backup, mkdir, overlay, mount, check).
// The record is written before anything in the user's tree moves, so a rerun after a crash at
// any point finishes the switch from it (see store/FORMAT.md, "Adopted installs").
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include <spdlog/spdlog.h>

#include "modelfs/adopt/adopt.h"
#include "modelfs/store/errors.h"
#include "modelfs/store/unique_fd.h"
#include "run_internal.h"
#include "util.h"

namespace stdfs = std::filesystem;

namespace modelfs::adopt {

using detail::is_under;
using detail::ns_of;

bool RunReport::ok() const {
    return std::all_of(installs.begin(), installs.end(),
                       [](const InstallOutcome& o) { return o.ok; });
}

namespace {

std::string unescape_mountinfo(const std::string& s) {
    std::string out;
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '\\' && i + 3 < s.size()) {
            out += static_cast<char>(std::stoi(s.substr(i + 1, 3), nullptr, 8));
            i += 3;
        } else {
            out += s[i];
        }
    }
    return out;
}

std::string fstab_escape(const std::string& s) {
    std::string out;
    for (char c : s) {
        if (c == ' ')
            out += "\\040";
        else if (c == '\t')
            out += "\\011";
        else
            out += c;
    }
    return out;
}

// systemd-escape --path
std::string unit_name_for(const stdfs::path& where) {
    std::string p = where.lexically_normal().string();
    while (p.size() > 1 && p.back() == '/') p.pop_back();
    std::size_t b = 0;
    while (b < p.size() && p[b] == '/') ++b;
    p = p.substr(b);
    std::string out;
    for (std::size_t i = 0; i < p.size(); ++i) {
        unsigned char c = static_cast<unsigned char>(p[i]);
        if (c == '/')
            out += '-';
        else if (std::isalnum(c) || c == ':' || c == '_' || (c == '.' && i > 0))
            out += static_cast<char>(c);
        else {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\x%02x", c);
            out += buf;
        }
    }
    return (out.empty() ? "-" : out) + ".mount";
}

}  // namespace

bool is_mountpoint(const stdfs::path& dir) {
    std::ifstream in("/proc/self/mountinfo");
    std::string line;
    const std::string want = dir.lexically_normal().string();
    while (std::getline(in, line)) {
        std::istringstream ls(line);
        std::string id, parent, devno, root, mnt;
        ls >> id >> parent >> devno >> root >> mnt;
        if (unescape_mountinfo(mnt) != want) continue;
        auto dash = line.find(" - ");
        if (dash == std::string::npos) continue;
        std::istringstream rest(line.substr(dash + 3));
        std::string type;
        rest >> type;
        if (type.rfind("fuse", 0) == 0) return true;
    }
    return false;
}

namespace detail {

std::string fstab_line(const Record& r, const stdfs::path& store_root) {
    return fstab_escape(store_root.string()) + " " + fstab_escape(r.mountpoint.string()) +
           " fuse.modelfs view=" + r.view + ",nofail 0 0";
}

std::string systemd_unit(const Record& r, const stdfs::path& store_root) {
    std::ostringstream o;
    o << "# /etc/systemd/system/" << unit_name_for(r.mountpoint) << "\n"
      << "[Unit]\nDescription=modelfs " << r.view << " view over " << r.mountpoint.string()
      << "\nAfter=local-fs.target\n\n[Mount]\nWhat=" << store_root.string()
      << "\nWhere=" << r.mountpoint.string() << "\nType=fuse.modelfs\nOptions=view=" << r.view
      << ",nofail\n\n[Install]\nWantedBy=multi-user.target\n";
    return o.str();
}

// Runs a program to completion; returns its exit code (-1: killed) and its stderr.
int run_capture(const std::vector<std::string>& argv, std::string* err) {
    char tmpl[] = "/tmp/modelfs-adopt-XXXXXX";
    UniqueFd log(::mkstemp(tmpl));
    if (log) ::unlink(tmpl);
    pid_t pid = ::fork();
    if (pid < 0) throw_errno("starting " + argv.at(0), errno);
    if (pid == 0) {
        int devnull = ::open("/dev/null", O_RDWR);
        ::dup2(devnull, 0);
        ::dup2(log ? log.get() : devnull, 1);
        ::dup2(log ? log.get() : devnull, 2);
        std::vector<char*> args;
        for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
        args.push_back(nullptr);
        ::execv(args[0], args.data());
        ::_exit(127);
    }
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (err && log) {
        err->clear();
        ::lseek(log.get(), 0, SEEK_SET);
        char buf[4096];
        ssize_t n;
        while ((n = ::read(log.get(), buf, sizeof buf)) > 0) err->append(buf, n);
        while (!err->empty() && err->back() == '\n') err->pop_back();
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

void start_mount(const Record& r, const stdfs::path& store_root, const RunOptions& opts) {
    std::string err;
    std::vector<std::string> argv = {opts.binary.string(), "--store", store_root.string()};
    argv.insert(argv.end(), opts.global_args.begin(), opts.global_args.end());
    for (const char* a : {"mount", "--view"}) argv.emplace_back(a);
    argv.push_back(r.view);
    argv.push_back(r.mountpoint.string());
    int rc = run_capture(argv, &err);
    const auto timeout = opts.mount_timeout;
    auto until = std::chrono::steady_clock::now() + timeout;
    while (!is_mountpoint(r.mountpoint) && std::chrono::steady_clock::now() < until)
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    if (!is_mountpoint(r.mountpoint))
        throw StoreError(ErrorKind::io, "mounting the " + r.view + " view over " +
                                            r.mountpoint.string() + " failed (exit " +
                                            std::to_string(rc) + ")" +
                                            (err.empty() ? "" : ": " + err));
}

// Unmounts; false with `why` when the mount is busy or fusermount failed.
bool stop_mount(const stdfs::path& mnt, std::string* why) {
    std::string err;
    int rc = run_capture({"/bin/fusermount3", "-u", mnt.string()}, &err);
    if (rc != 0 && is_mountpoint(mnt)) {
        if (why) *why = err;
        return false;
    }
    for (int i = 0; i < 100 && is_mountpoint(mnt); ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    return !is_mountpoint(mnt);
}

// Where a record file is shown through the mount (empty: not shown).
stdfs::path shown_path(const Record& r, const RecordFile& f) {
    if (f.action != Action::store && f.action != Action::store_in_place &&
        f.action != Action::overlay)
        return {};
    if (!is_under(f.path, r.models_dir)) return {};
    if (!f.shown_at.empty()) return r.models_dir / f.shown_at;
    return f.path;
}

// Where a record file's original bytes are now: in the backup for replaced files.
stdfs::path original_path(const Record& r, const RecordFile& f) {
    stdfs::path rel;
    if (f.replaced && is_under(f.path, r.models_dir, &rel)) return r.backup / rel;
    return f.real;
}

}  // namespace detail

namespace {

using detail::original_path;
using detail::shown_path;

std::string sha_of(const stdfs::path& p) {
    UniqueFd fd(::open(p.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) throw_errno("reading " + p.string(), errno);
    return digest_fd(fd.get(), nullptr, p.c_str()).sha256.hex();
}

// Every path the record says the view shows reads as recorded (size; with `verify` the hash).
std::vector<std::string> check_mount(const Record& r, bool verify) {
    std::vector<std::string> bad;
    for (const auto& f : r.files) {
        stdfs::path p = shown_path(r, f);
        if (p.empty()) continue;
        struct stat st;
        if (::stat(p.c_str(), &st) != 0) {
            bad.push_back(p.string() + ": " + std::strerror(errno));
            continue;
        }
        if (static_cast<std::uint64_t>(st.st_size) != f.size) {
            bad.push_back(p.string() + ": " + std::to_string(st.st_size) + " bytes, expected " +
                          std::to_string(f.size));
            continue;
        }
        if (verify && !f.sha256.empty()) {
            try {
                if (sha_of(p) != f.sha256) bad.push_back(p.string() + ": different content");
            } catch (const StoreError& e) {
                bad.push_back(e.what());
            }
        }
    }
    return bad;
}

void place_overlay(Store& store, const Record& r) {
    const stdfs::path overlay = store.root() / "views" / r.view;
    const bool same_fs = detail::same_filesystem(r.backup, store.root());
    for (const auto& f : r.files) {
        if (f.action != Action::overlay) continue;
        stdfs::path rel;
        if (!is_under(f.path, r.models_dir, &rel)) continue;
        stdfs::path dst = overlay / rel;
        stdfs::path src = original_path(r, f);
        struct stat st, sst;
        if (::lstat(dst.c_str(), &st) == 0) {
            // Placed by an earlier, interrupted run; anything else is a file an earlier mount of
            // this view left there, which would hide the user's.
            const bool ours = ::stat(src.c_str(), &sst) == 0 &&
                              (same_fs ? sst.st_ino == st.st_ino && sst.st_dev == st.st_dev
                                       : sst.st_size == st.st_size);
            if (ours) continue;
            throw StoreError(ErrorKind::conflict,
                             dst.string() + " exists (left by an earlier mount of the " + r.view +
                                 " view) and differs from " + f.path.string() +
                                 "; move it away and run adopt again");
        }
        stdfs::create_directories(dst.parent_path());
        if (same_fs && ::link(src.c_str(), dst.c_str()) == 0) continue;
        stdfs::path tmp = dst;
        tmp += ".modelfs-adopt.tmp";
        stdfs::remove(tmp);
        detail::copy_file_durable(src, tmp, f.mode);
        if (::rename(tmp.c_str(), dst.c_str()) != 0)
            throw_errno("renaming " + tmp.string() + " to " + dst.string(), errno);
    }
}

// The last step of adopting: the files adopt could move into the store (detail::movable) were
// hard-linked to their blob names at commit; now that the view shows them, their names in the
// backup go, so no name outside blobs/ is a blob's inode and nothing the user (or a tool) writes
// can change stored bytes. The record lists each with its hash: unadopt puts it back from the
// blob. Run before the record says `mounted`, so an interrupted run does it again. A name that
// is not exactly the blob's other name (another link was made meanwhile) stays, with a warning.
void detach(Store& store, const Record& r) {
    std::error_code ec;
    const stdfs::path backup_real = stdfs::weakly_canonical(r.backup, ec);
    for (const auto& f : r.files) {
        if (f.action != Action::store) continue;
        const stdfs::path p = original_path(r, f);
        stdfs::path rel;
        // Only a name inside the backup itself, never a file a link in it leads to.
        if (!is_under(p, r.backup, &rel) || stdfs::weakly_canonical(p, ec) != backup_real / rel ||
            !detail::is_blob_inode(store, f.sha256, p))
            continue;
        struct stat st;
        if (::lstat(p.c_str(), &st) != 0) continue;
        if (st.st_nlink != 2) {
            spdlog::warn(
                "{} shares its inode with the store's blob {} and {} other names; left "
                "in place (`modelfs verify` checks the blob)",
                p.string(), f.sha256, st.st_nlink - 2);
            continue;
        }
        if (::unlink(p.c_str()) != 0)
            throw_errno("removing " + p.string() + " (now a blob)", errno);
        modelfs::fsync_dir(p.parent_path());
        store.record_blob_stat(*Sha256::from_hex(f.sha256));
    }
}

// A switch that failed (or a commit that did) leaves the plain folder: the files linked into the
// store go back to being the user's alone, as copies of themselves (FORMAT.md).
void give_back(Store& store, const Record& r) {
    for (const auto& f : r.files) {
        if (f.action != Action::store && f.action != Action::store_in_place) continue;
        for (const stdfs::path& p : {detail::own_path(f), original_path(r, f)}) {
            if (!detail::is_blob_inode(store, f.sha256, p)) continue;
            try {
                detail::make_independent(store, f, p, {});
            } catch (const std::exception& e) {
                spdlog::error(
                    "{} is still the store's blob {}: {}; `modelfs unadopt {}` makes it "
                    "yours again",
                    p.string(), f.sha256, e.what(), r.root.string());
            }
        }
    }
}

// Rename to the backup, mkdir, overlay, mount, check. Each step looks at what an interrupted run
// left, so running it again finishes the job.
void switch_over(Store& store, Record& r, const RunOptions& opts, InstallOutcome& out) {
    if (is_mountpoint(r.mountpoint)) {
        auto bad = check_mount(r, opts.verify);
        if (!bad.empty())
            throw StoreError(ErrorKind::io,
                             "a mount is already up at " + r.mountpoint.string() +
                                 " but does not show what was adopted: " + bad.front());
        out.notes.push_back("the view was already mounted at " + r.mountpoint.string());
        detach(store, r);
        r.state = RecordState::mounted;
        save_record(store.root(), r);
        return;
    }
    const bool had_backup = stdfs::exists(stdfs::symlink_status(r.backup));
    bool renamed = false;
    auto undo = [&] {
        // Back to the plain tree: an empty models folder this (or an interrupted) run made goes,
        // the backup takes its place again.
        if (!is_mountpoint(r.models_dir)) ::rmdir(r.models_dir.c_str());
        if ((renamed || had_backup) && !stdfs::exists(stdfs::symlink_status(r.models_dir)))
            if (::rename(r.backup.c_str(), r.models_dir.c_str()) == 0)
                modelfs::fsync_dir(r.models_dir.parent_path());
    };
    try {
        if (!had_backup) {
            if (::rename(r.models_dir.c_str(), r.backup.c_str()) != 0)
                throw_errno("renaming " + r.models_dir.string() + " to " + r.backup.string(),
                            errno);
            renamed = true;
            modelfs::fsync_dir(r.models_dir.parent_path());
        }
        struct stat bst;
        if (::stat(r.backup.c_str(), &bst) != 0) throw_errno("reading " + r.backup.string(), errno);
        if (::mkdir(r.models_dir.c_str(), bst.st_mode & 07777) == 0) {
            if (::chown(r.models_dir.c_str(), bst.st_uid, bst.st_gid) != 0 && ::geteuid() == 0)
                throw_errno("chown " + r.models_dir.string(), errno);
            modelfs::fsync_dir(r.models_dir.parent_path());
        } else if (errno != EEXIST) {
            throw_errno("creating " + r.models_dir.string(), errno);
        } else if (!stdfs::is_empty(r.models_dir)) {
            throw StoreError(ErrorKind::conflict,
                             "both " + r.models_dir.string() + " (not empty) and " +
                                 r.backup.string() +
                                 " exist; move one of them away, then run adopt again");
        }
        place_overlay(store, r);
        detail::start_mount(r, store.root(), opts);
    } catch (...) {
        undo();
        give_back(store, r);
        throw;
    }
    auto bad = check_mount(r, opts.verify);
    if (!bad.empty()) {
        std::string why;
        detail::stop_mount(r.mountpoint, &why);
        undo();
        give_back(store, r);
        std::string list;
        for (std::size_t i = 0; i < bad.size() && i < 5; ++i) list += "\n  " + bad[i];
        throw StoreError(ErrorKind::io, "the " + r.view + " view over " + r.mountpoint.string() +
                                            " does not show what was adopted; switched back to "
                                            "the plain folder:" +
                                            list);
    }
    detach(store, r);
    r.state = RecordState::mounted;
    save_record(store.root(), r);
}

struct Committer {
    Store& store;
    const RunOptions& opts;
    // The file may become the blob (hard link now, its other name removed once the view is
    // mounted; see detach()).
    bool movable;

    // Returns false (with `why`) when the file is not what was hashed any more.
    bool commit(PlannedFile& pf, const PlannedFile* model, const std::string& tool,
                std::string& label, std::string& why) {
        const ScannedFile& f = pf.file;
        UniqueFd fd = detail::open_real(f.real);
        if (!fd) {
            why = "cannot open " + f.real.string() + ": " + std::strerror(errno);
            return false;
        }
        struct stat st;
        if (::fstat(fd.get(), &st) != 0) throw_errno("reading " + f.real.string(), errno);
        // Not ctime: committing one of two hard links makes the inode read-only.
        const HashedFile& h = *pf.hash;
        if (st.st_ino != h.ino || st.st_dev != h.dev ||
            static_cast<std::uint64_t>(st.st_size) != h.size || ns_of(st.st_mtim) != h.mtime_ns) {
            why = "changing while adopting (it changed after it was hashed), left in place";
            return false;
        }
        FileCommit fc;
        fc.path = f.real;
        fc.fd = fd.get();
        fc.digests = h.digests;
        const ScannedFile& mf = model ? model->file : f;
        fc.category = mf.category;
        fc.name = mf.name;
        fc.ext = mf.ext;
        if (f.kind == ScannedFile::Kind::sidecar) fc.sidecar = f.suffix;
        fc.mtime = f.mtime_ns / 1000000000;
        fc.mode = f.mode & 07777;
        fc.source = adopt_source(tool, f.view_rel);
        if (!movable && !store.blobs().exists(h.digests.sha256)) {
            // Not the store's to take (outside the models folder, another filesystem, other
            // hard links, another owner): copy into the store, then compare with what was
            // hashed before anyone relies on the copy. The user's file is left as it is.
            Ingested in = store.blobs().ingest_copy(fd.get(), f.real.string(), opts.progress);
            if (in.digests.sha256 != h.digests.sha256) {
                why =
                    "changing while adopting (the copy differs from the hashed file), left in "
                    "place";
                return false;
            }
        }
        label = store.commit_file(fc).label;
        return true;
    }
};

void check_space(Store& store, const InstallPlan& ip) {
    std::set<Sha256> seen;
    std::uint64_t need = 0;
    for (const auto& pf : ip.files) {
        if (!pf.hash) continue;
        if (pf.action != Action::store && pf.action != Action::store_in_place &&
            pf.action != Action::overlay)
            continue;
        // Copied: keepers adopt cannot move, and anything on another filesystem.
        if (detail::same_filesystem(pf.file.real, store.root()) && !(pf.keeper && pf.copy))
            continue;
        if (store.blobs().exists(pf.hash->digests.sha256)) continue;
        if (seen.insert(pf.hash->digests.sha256).second) need += pf.hash->size;
    }
    for (const auto& pf : ip.files)
        if (pf.action == Action::overlay && !pf.hash &&
            !detail::same_filesystem(pf.file.real, store.root()))
            need += pf.file.size;
    if (!need) return;
    struct statvfs sv;
    if (::statvfs(store.root().c_str(), &sv) != 0)
        throw_errno("checking free space of " + store.root().string(), errno);
    const std::uint64_t avail = static_cast<std::uint64_t>(sv.f_bavail) * sv.f_frsize;
    // A margin for the catalog and the file system's own overhead.
    if (need + need / 50 + (64u << 20) > avail)
        throw StoreError(
            ErrorKind::no_space,
            "not enough space to adopt " + ip.scan.install.root.string() + ": " +
                std::to_string(need) + " bytes must be copied into the store " +
                store.root().string() +
                " (files on another filesystem, outside the models folder, "
                "or with other hard links), and only " +
                std::to_string(avail) +
                " bytes are free there. Free some space, or use a store on the same filesystem "
                "(--store), where adopting moves the files it can instead of copying them");
}

// Every folder below `models_dir` (links not followed): what unadopt must leave and may remove.
std::vector<std::string> folders_below(const stdfs::path& models_dir) {
    std::vector<std::string> out;
    std::error_code ec;
    for (auto it = stdfs::recursive_directory_iterator(models_dir, ec); !ec && it != decltype(it)();
         it.increment(ec))
        if (it->is_directory(ec) && !it->is_symlink(ec))
            out.push_back(it->path().lexically_relative(models_dir).string());
    std::sort(out.begin(), out.end());
    return out;
}

Record record_of(const InstallPlan& ip) {
    Record r;
    const Install& inst = ip.scan.install;
    r.id = ip.id;
    r.tool = inst.tool;
    r.view = inst.tool;
    r.root = inst.root;
    r.models_dir = inst.models_dir;
    r.backup = stdfs::path(inst.models_dir.string() + ".modelfs-backup");
    r.mountpoint = inst.models_dir;
    r.state = RecordState::recorded;
    r.dirs = folders_below(inst.models_dir);
    for (const auto& pf : ip.files) {
        RecordFile x;
        const auto& f = pf.file;
        x.path = f.path;
        x.real = f.real;
        x.kind = f.kind;
        x.view_rel = f.view_rel;
        x.replaced = f.replaced;
        if (pf.hash) x.sha256 = pf.hash->digests.sha256.hex();
        x.size = pf.hash ? pf.hash->size : f.size;
        x.mode = f.mode & 07777;
        x.mtime_ns = f.mtime_ns;
        x.link_target = f.link_target;
        x.action = pf.action;
        x.model = pf.model;
        x.pinned = pf.pin;
        x.shown_at = pf.shown_at;
        x.left = pf.left;
        x.note = pf.note;
        r.files.push_back(std::move(x));
    }
    return r;
}

// Adopted, view not mounted (a reboot without the fstab line): mount it again over the empty
// folder. The backup may be gone (confirmed).
void mount_again(Store& store, Record& r, const RunOptions& opts, InstallOutcome& out) {
    std::error_code ec;
    if (!stdfs::is_directory(r.models_dir) || !stdfs::is_empty(r.models_dir, ec))
        throw StoreError(ErrorKind::conflict,
                         r.models_dir.string() + " should be the empty folder the " + r.view +
                             " view is mounted on, and is not; move its files away and run "
                             "adopt again");
    detail::start_mount(r, store.root(), opts);
    auto bad = check_mount(r, opts.verify);
    if (!bad.empty()) {
        detail::stop_mount(r.mountpoint, nullptr);
        throw StoreError(ErrorKind::io, "the " + r.view + " view over " + r.mountpoint.string() +
                                            " does not show what was adopted: " + bad.front());
    }
    // An install adopted before blobs were immutable still has backup names that are blobs'
    // inodes: they go now (confirm would delete them anyway).
    if (r.state == RecordState::mounted) {
        detach(store, r);
        out.bytes_to_free = detail::confirm_walk(store, r, false).bytes_freed;
    }
    out.result = InstallOutcome::Result::mounted_again;
    out.status = "adopted (" + std::string(state_name(r.state)) + "); the view is mounted again";
    out.ok = true;
    out.fstab_line = detail::fstab_line(r, store.root());
    out.systemd_unit = detail::systemd_unit(r, store.root());
}

// Before anything is committed: the models folder is neither a mount nor has a backup beside it
// that no record explains, and the store has room for what must be copied.
void check_fresh(Store& store, const InstallPlan& ip, const stdfs::path& backup) {
    const Install& inst = ip.scan.install;
    if (is_mountpoint(inst.models_dir))
        throw StoreError(ErrorKind::conflict,
                         inst.models_dir.string() +
                             " is already a mount point without an adoption record; unmount it "
                             "first");
    if (stdfs::exists(stdfs::symlink_status(backup)))
        throw StoreError(ErrorKind::conflict,
                         backup.string() +
                             " exists but no adoption record names it; move it away first "
                             "(nothing was changed)");
    check_space(store, ip);
}

// Commits the files to store into the catalog, recording each one's label in `r` (or why it was
// not committed). Returns each model's current version before (key -> label): the clashes keep
// it current for the other views. A failure gives back what was linked so far.
std::map<std::string, std::optional<std::string>> commit_files(Store& store, InstallPlan& ip,
                                                               const RunOptions& opts, Record& r,
                                                               InstallOutcome& out) {
    const Install& inst = ip.scan.install;
    Committer c{store, opts, false};
    std::map<std::string, std::size_t> model_at;  // view_rel -> index
    for (std::size_t i = 0; i < ip.files.size(); ++i)
        if (ip.files[i].file.kind == ScannedFile::Kind::model)
            model_at[ip.files[i].file.view_rel] = i;
    std::map<std::string, std::optional<std::string>> before;  // key -> old current
    // Files the store can take without a copy first, so that a file that must be copied finds
    // its content stored already whenever another file had it.
    std::vector<bool> can_move(ip.files.size());
    for (std::size_t i = 0; i < ip.files.size(); ++i)
        can_move[i] = ip.files[i].action == Action::store &&
                      detail::movable(ip.files[i].file.path, ip.files[i].file.real, inst.models_dir,
                                      store.root());
    try {
        for (int pass = 0; pass < 4; ++pass) {
            const auto kind = pass < 2 ? ScannedFile::Kind::model : ScannedFile::Kind::sidecar;
            const bool moving = pass % 2 == 0;
            for (std::size_t i = 0; i < ip.files.size(); ++i) {
                PlannedFile& pf = ip.files[i];
                if (pf.file.kind != kind || can_move[i] != moving) continue;
                if (pf.action != Action::store && pf.action != Action::store_in_place) continue;
                const PlannedFile* model = nullptr;
                if (kind == ScannedFile::Kind::sidecar) {
                    auto m = model_at.find(pf.file.sidecar_of);
                    if (m == model_at.end() || r.files[m->second].label.empty()) {
                        r.files[i].action = Action::left;
                        r.files[i].left = Left::not_adopted;
                        r.files[i].note =
                            left_note(Left::not_adopted,
                                      pf.file.path.string() + ": its model was not stored");
                        continue;
                    }
                    model = &ip.files[m->second];
                } else if (!before.count(pf.model)) {
                    auto txn = store.catalog().read();
                    auto m = txn.get_model(pf.model);
                    before[pf.model] = m ? std::optional(m->current_version().label) : std::nullopt;
                }
                c.movable = moving;
                std::string label, why;
                if (c.commit(pf, model, inst.tool, label, why)) {
                    r.files[i].label = label;
                } else {
                    pf.action = Action::changing;
                    r.files[i].action = Action::changing;
                    r.files[i].note = why;
                    out.notes.push_back(pf.file.path.string() + ": " + why);
                }
            }
        }
    } catch (...) {
        // No record will say what was committed: the files linked so far go back to being the
        // user's alone (copies of the blobs) before giving up.
        give_back(store, r);
        throw;
    }
    return before;
}

// Clashes: each view keeps the version it had; whatever was current before stays current for
// the other views.
void pin_clashes(Store& store, Record& r,
                 const std::map<std::string, std::optional<std::string>>& before) {
    for (auto& f : r.files) {
        if (f.kind != ScannedFile::Kind::model || f.label.empty()) continue;
        if (f.pinned) store.pin(f.model, f.label, r.view);
        auto b = before.find(f.model);
        if (b != before.end() && b->second && *b->second != f.label) {
            if (!f.pinned) {
                store.pin(f.model, f.label, r.view);
                f.pinned = true;
            }
            store.use_version(f.model, *b->second);
        }
    }
}

// The report of an install now switched: its counts, what confirm will free, how to mount it at
// boot.
void report_adopted(Store& store, const Record& r, InstallOutcome& out) {
    for (const auto& f : r.files) {
        switch (f.action) {
            case Action::store:
            case Action::store_in_place:
                ++out.stored;
                break;
            case Action::overlay:
                ++out.overlay;
                break;
            case Action::changing:
                ++out.changing;
                break;
            case Action::left:
                if (f.left == Left::not_adopted) ++out.left;
                break;
        }
    }
    // What confirm will free, from the tree as it is now (a resumed adopt has no plan figures):
    // the same walk confirm makes.
    out.bytes_to_free = detail::confirm_walk(store, r, false).bytes_freed;
    out.fstab_line = detail::fstab_line(r, store.root());
    out.systemd_unit = detail::systemd_unit(r, store.root());
    out.result = InstallOutcome::Result::adopted;
    out.status = "adopted";
    out.ok = true;
}

// One install of the plan: skipped, mounted again, or committed, recorded and switched (a
// resumed one from its record). Throws when it fails.
void adopt_install(Store& store, InstallPlan& ip, const RunOptions& opts, InstallOutcome& out) {
    Record r;
    if (ip.resume) {
        r = *load_record(store.root(), ip.id);
        if (r.state != RecordState::recorded) return mount_again(store, r, opts, out);
        out.notes.push_back("finishing an interrupted adopt from its record");
    } else {
        check_fresh(store, ip, out.backup);
        r = record_of(ip);
        const auto before = commit_files(store, ip, opts, r, out);
        pin_clashes(store, r, before);
        save_record(store.root(), r);
        // Test hook: a crash between the record and the switch.
        if (std::getenv("MODELFS_ADOPT_TEST_KILL_AFTER_RECORD")) ::raise(SIGKILL);
    }
    switch_over(store, r, opts, out);
    report_adopted(store, r, out);
}

}  // namespace

RunReport run_plan(Store& store, Plan& plan, const RunOptions& opts_in) {
    RunOptions opts = opts_in;
    // The mount daemon is this program; resolve the link now so the child runs the same file.
    if (opts.binary == "/proc/self/exe") opts.binary = stdfs::read_symlink("/proc/self/exe");
    RunReport report;
    for (auto& ip : plan.installs) {
        InstallOutcome out;
        const Install& inst = ip.scan.install;
        out.id = ip.id;
        out.tool = inst.tool;
        out.models_dir = inst.models_dir;
        out.backup = stdfs::path(inst.models_dir.string() + ".modelfs-backup");
        if (ip.skip) {
            out.result = InstallOutcome::Result::skipped;
            out.skip = ip.skip;
            out.status = skip_text(ip.skip);
            out.ok = skip_is_ok(ip.skip.reason);
        } else {
            try {
                adopt_install(store, ip, opts, out);
            } catch (const std::exception& e) {
                out.result = InstallOutcome::Result::failed;
                out.status = std::string("failed: ") + e.what();
                spdlog::error("adopting {}: {}", inst.root.string(), e.what());
            }
        }
        report.installs.push_back(std::move(out));
    }
    return report;
}

}  // namespace modelfs::adopt
