// Starting and stopping a mount: options, the FUSE session, the daemon's threads. The
// operations themselves are in ops.cpp.
#include "daemon.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>

#include <spdlog/spdlog.h>

#include "modelfs/fs/mount.h"
#include "modelfs/store/errors.h"
#include "modelfs/store/store.h"
#include "modelfs/store/store_folders.h"
#include "modelfs/store/text.h"

namespace modelfs::fs {
namespace {

struct SessionDeleter {
    void operator()(fuse_session* s) const { fuse_session_destroy(s); }
};
struct LoopConfigDeleter {
    void operator()(fuse_loop_config* c) const { fuse_loop_cfg_destroy(c); }
};

// Where the SIGHUP handler writes: a pipe its watcher thread reads, since a signal handler may
// not log or touch the config itself.
std::atomic<int> g_hup_fd{-1};

extern "C" void on_sighup(int) {
    const int saved = errno;
    const int fd = g_hup_fd.load();
    if (fd >= 0) [[maybe_unused]]
        auto n = ::write(fd, "h", 1);
    errno = saved;
}

// libfuse's handlers end the session on SIGHUP; under systemd SIGHUP means "reload", so it gets
// its own handler here. The handler is installed before mounting, so a SIGHUP that comes at once
// (systemctl reload right after start) waits in the pipe; the thread answering it starts after
// daemonizing (fork keeps no threads). Stopping: SIGHUP is ignored again, and closing the pipe
// ends the thread.
class HupWatcher {
  public:
    HupWatcher() {
        int p[2];
        if (::pipe2(p, O_CLOEXEC) != 0) {
            spdlog::warn("SIGHUP: cannot make a pipe ({}); SIGHUP is ignored",
                         std::strerror(errno));
            ::signal(SIGHUP, SIG_IGN);
            return;
        }
        read_fd_ = p[0];
        write_fd_ = p[1];
        g_hup_fd = write_fd_;
        struct sigaction sa {};
        sa.sa_handler = on_sighup;
        sigemptyset(&sa.sa_mask);
        sa.sa_flags = SA_RESTART;
        ::sigaction(SIGHUP, &sa, nullptr);
    }
    HupWatcher(const HupWatcher&) = delete;
    HupWatcher& operator=(const HupWatcher&) = delete;
    ~HupWatcher() { stop(); }

    // Answers SIGHUPs (those already waiting first) by calling `reload` and logging its answer.
    void start(std::function<std::string()> reload) {
        reload_ = std::move(reload);
        if (read_fd_ >= 0) thread_ = std::thread([this] { run(); });
    }
    // Before what `reload` reaches goes away.
    void stop() {
        ::signal(SIGHUP, SIG_IGN);
        g_hup_fd = -1;
        if (write_fd_ >= 0) ::close(write_fd_);
        write_fd_ = -1;
        if (thread_.joinable()) thread_.join();
        if (read_fd_ >= 0) ::close(read_fd_);
        read_fd_ = -1;
    }

  private:
    void run() {
        char c;
        for (;;) {
            const ssize_t n = ::read(read_fd_, &c, 1);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) return;
            try {
                spdlog::info("SIGHUP: {}", reload_());
            } catch (const std::exception& e) {
                spdlog::error("SIGHUP: reload failed, the mount goes on unchanged: {}", e.what());
            }
        }
    }

    std::function<std::string()> reload_;
    int read_fd_ = -1;
    int write_fd_ = -1;
    std::thread thread_;
};

}  // namespace

std::vector<layouts::ViewLayout> views_to_serve(const MountOptions& opts) {
    std::vector<layouts::ViewLayout> all;
    for (const auto& name : layouts::ViewLayout::builtin_names())
        all.push_back(*layouts::ViewLayout::builtin(name));
    for (const auto& user : opts.layouts) {
        auto same = std::find_if(all.begin(), all.end(), [&](const layouts::ViewLayout& v) {
            return v.name() == user.name();
        });
        if (same != all.end())
            *same = user;
        else
            all.push_back(user);
    }
    if (opts.view.empty()) return all;
    // An alias ("automatic1111") names the built-in's canonical name, which a user layout may
    // have replaced.
    std::string wanted = lower(opts.view);
    if (auto b = layouts::ViewLayout::builtin(opts.view)) wanted = lower(b->name());
    for (const auto& v : all)
        if (lower(v.name()) == wanted) return {v};
    std::string names;
    for (const auto& v : all) names += " " + v.name();
    throw StoreError(ErrorKind::bad_input, "unknown view '" + opts.view + "'; views are:" + names);
}

int serve_mount(const MountOptions& given) {
    // fuse_daemonize() changes to "/", even in the foreground: make every path absolute first.
    MountOptions opts = given;
    opts.store = std::filesystem::absolute(opts.store).lexically_normal();
    opts.mountpoint = std::filesystem::absolute(opts.mountpoint).lexically_normal();
    auto dm = std::make_unique<Daemon>(opts, views_to_serve(opts));
    // Check the store before mounting, so a bad --store fails here, visibly.
    { Store probe = Store::open(opts.store); }
    struct stat st;
    if (::stat(opts.store.c_str(), &st) == 0)
        dm->empty_dir_mtime_ns = st.st_ctim.tv_sec * 1'000'000'000ll + st.st_ctim.tv_nsec;

    // The store as the mount's source, as fstab names it: `mount -a` then sees an entry is
    // mounted already, and `findmnt`/`df` say which store it is. libfuse splits options at
    // commas, and a backslash escapes.
    std::string fsname;
    for (char c : opts.store.string()) {
        if (c == ',' || c == '\\') fsname += '\\';
        fsname += c;
    }
    std::string o = "default_permissions,fsname=" + fsname + ",subtype=modelfs";
    if (opts.allow_other) o += ",allow_other";
    for (const auto& f : opts.kernel_flags) o += "," + f;
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
    HupWatcher hup;  // replaces libfuse's SIGHUP handler before anyone can send one
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
    make_store_folders_private(opts.store);
    dm->se = se.get();
    dm->snapshot();  // the first request should not wait for the tree
    // Threads start after daemonizing (fork keeps only the calling thread) and stop before the
    // session goes: the invalidator talks to it.
    struct Threads {
        Daemon& dm;
        ~Threads() {
            // In this order: the fetcher's callbacks reach everything else; the ingester and
            // the invalidator both reach the invalidator through Daemon::snapshot(), so both
            // threads are joined before it goes; the access log writes its last batch.
            dm.remote.reset();
            dm.composed.reset();
            dm.ingester.reset();
            if (dm.invalidator) dm.invalidator->stop();
            dm.invalidator.reset();
            dm.access.reset();
        }
    } threads{*dm};
    dm->invalidator = std::make_unique<Invalidator>(
        se.get(), [d = dm.get()] { return d->snapshot(); },
        [d = dm.get()](std::uint64_t parent) {
            d->busy.wait_idle(parent, std::chrono::seconds(1));
        });
    dm->invalidator->start();
    dm->ingester =
        std::make_unique<WorkQueue>([d = dm.get()](const std::string& path) { d->ingest(path); });
    dm->access = std::make_unique<AccessLog>(*dm->store);
    dm->remote = std::make_unique<RemoteFiles>(*dm, opts.fetch);
    dm->composed = std::make_unique<ComposedFiles>(*dm);
    // Files a previous daemon did not get to store (it was killed, the machine went down), and
    // files an older modelfs kept plain that are now stored by content (view_files.h): anywhere
    // in the view's overlay. The ingest leaves small and edited files as they are.
    const auto served = dm->names();
    for (const auto& view : served->views())
        dm->queue_ingest_tree(served->root_mode() ? view.name() : "");
    struct StopHup {
        HupWatcher& h;
        ~StopHup() { h.stop(); }  // before the threads above go: a reload reaches them
    } stop_hup{hup};
    hup.start([&opts, d = dm.get()]() -> std::string {
        if (!opts.on_reload) return "nothing to reload; the mount goes on";
        Reload r = opts.on_reload();
        if (!r.layouts) return r.message;
        MountOptions next = opts;
        next.layouts = std::move(*r.layouts);
        std::vector<layouts::ViewLayout> views;
        try {
            views = views_to_serve(next);
        } catch (const StoreError& e) {
            // --view names a layout the config no longer has: keep serving the old one.
            return r.message + "; but " + e.what() + ", so the mount keeps its views";
        }
        const std::string what = d->set_views(std::move(views));
        return r.message + (what.empty() ? "; the views are unchanged" : "; " + what);
    });
    spdlog::info("serving {} on {}", opts.store.string(), opts.mountpoint.string());

    std::unique_ptr<fuse_loop_config, LoopConfigDeleter> cfg(fuse_loop_cfg_create());
    fuse_loop_cfg_set_max_threads(cfg.get(), 16);
    const int rc = fuse_session_loop_mt(se.get(), cfg.get());
    // SIGTERM (systemctl stop) and SIGINT (Ctrl-C) are the normal ways to stop: the loop returns
    // the signal's number, and the unmount below is as clean as after `umount`. A failed exit
    // code would leave a stopped unit "failed".
    if (rc == SIGTERM || rc == SIGINT) {
        spdlog::info("{}: unmounting {}", rc == SIGTERM ? "SIGTERM" : "SIGINT",
                     opts.mountpoint.string());
        return 0;
    }
    return rc == 0 ? 0 : 1;
}

std::string Daemon::set_views(std::vector<layouts::ViewLayout> views) {
    auto before = names();
    if (before->views() == views) return "";
    std::string added, removed, changed;
    auto list = [](std::string& to, const std::string& name) {
        to += (to.empty() ? "" : ", ") + name;
    };
    auto find = [](const std::vector<layouts::ViewLayout>& in, const std::string& name) {
        return std::find_if(in.begin(), in.end(),
                            [&](const layouts::ViewLayout& v) { return v.name() == name; });
    };
    for (const auto& v : views) {
        auto old = find(before->views(), v.name());
        if (old == before->views().end())
            list(added, v.name());
        else if (!(*old == v))
            list(changed, v.name());
    }
    for (const auto& v : before->views())
        if (find(views, v.name()) == views.end()) list(removed, v.name());
    {
        std::lock_guard lk(ns_mu_);
        ns_ = std::make_shared<const Namespace>(opts.store, std::move(views), before->root_mode());
    }
    // The rebuilt tree is diffed against the old one like any catalog change; the root's
    // listing is not part of that diff, so it is dropped here.
    snapshot();
    if (invalidator) invalidator->forget_pages(ViewTree::kRootIno);
    std::string out = "now serving the new views";
    if (!added.empty()) out += "; added: " + added;
    if (!removed.empty()) out += "; removed: " + removed;
    if (!changed.empty()) out += "; changed: " + changed;
    return out;
}

UniqueFd Daemon::open_blob(const Sha256& blob) {
    UniqueFd fd = store->blobs().open_blob(blob);
    if (!fd) return fd;
    // Without waiting: a request thread (or the fetcher's) must not block on a lock. Eviction
    // holds it exclusively only while it removes the file, and removes only what it locked.
    if (::flock(fd.get(), LOCK_SH | LOCK_NB) != 0) {
        struct stat st;
        if (::fstat(fd.get(), &st) == 0 && st.st_nlink == 0) {
            errno = ENOENT;  // evicted just now: the caller fetches it again
            return UniqueFd();
        }
        // Still linked: eviction is deciding on it right now, or the download that committed
        // it has not let go of its lock yet (a moment). The bytes stay readable through this
        // descriptor either way.
        spdlog::debug("blob {} is locked exclusively just now; reading it without a lock",
                      blob.hex());
    }
    // Bytes changed behind the store's back are never served under the old hash: a stat that
    // differs from the record's costs one re-hash; a mismatch quarantines the blob.
    if (store->check_blob(blob, fd.get()) == Store::BlobCheck::quarantined) {
        spdlog::error(
            "blob {} does not hold its content any more and was quarantined; run "
            "`modelfs verify`",
            blob.hex());
        errno = EIO;
        return UniqueFd();
    }
    return fd;
}

void Daemon::reply_read_open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi, UniqueFd fd,
                             const Entry& e, bool overlay) {
    const int n = fd.get();
    files.add_read(n, e.st, overlay);
    if (overlay) files.track_overlay(n, e.st.st_ino, false);
    // A blob never changes, so the kernel may keep its pages across opens; an overlay file may.
    if (!reader->open(req, ino, fi, std::move(fd), /*immutable=*/!overlay, e.path)) {
        files.untrack_overlay(n);
        files.remove_read(n);
    }
}

int unmount(const std::filesystem::path& mountpoint, std::string* err) {
    std::string mp = mountpoint.string();
    const char* argv[] = {"fusermount3", "-u", mp.c_str(), nullptr};
    int pipe_fds[2] = {-1, -1};
    if (err && ::pipe2(pipe_fds, O_CLOEXEC) != 0) err = nullptr;
    UniqueFd read_end(err ? pipe_fds[0] : -1), write_end(err ? pipe_fds[1] : -1);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    if (err) posix_spawn_file_actions_adddup2(&actions, write_end.get(), 2);
    pid_t pid;
    const int spawned =
        posix_spawnp(&pid, "fusermount3", &actions, nullptr, const_cast<char**>(argv), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (spawned != 0) {
        spdlog::error("cannot run fusermount3 (install the fuse3 package)");
        return 1;
    }
    write_end.reset();
    if (err) {
        char buf[4096];
        for (ssize_t n; (n = ::read(read_end.get(), buf, sizeof buf)) != 0;) {
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) break;
            err->append(buf, static_cast<std::size_t>(n));
        }
        while (!err->empty() && err->back() == '\n') err->pop_back();
    }
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}

}  // namespace modelfs::fs
