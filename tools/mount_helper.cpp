#include "mount_helper.h"

#include <sys/stat.h>
#include <sys/xattr.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace modelfs::cli {

namespace {

// What mount(8) and mount.fuse3 pass along but means nothing to the daemon: fstab bookkeeping
// (auto, _netdev, nofail, x-systemd.*) or the defaults. dev, suid and exec are left out on
// purpose: mount.fuse3 adds "dev,suid" for root, and passing them on would lift libfuse's
// nodev,nosuid default on a folder other users read.
bool ignored(std::string_view o) {
    static constexpr std::array<std::string_view, 15> kIgnored{
        "rw",     "dev",   "suid",  "exec",     "auto",    "noauto", "user",    "users",
        "nouser", "owner", "group", "defaults", "_netdev", "nofail", "relatime"};
    if (std::find(kIgnored.begin(), kIgnored.end(), o) != kIgnored.end()) return true;
    return o.starts_with("x-") || o.starts_with("comment=") || o == "atime" ||
           o == "default_permissions";  // always on: the kernel checks modes for the daemon
}

bool kernel_flag(std::string_view o) {
    static constexpr std::array<std::string_view, 9> kFlags{
        "ro", "nosuid", "nodev", "noexec", "noatime", "nodiratime", "sync", "async", "dirsync"};
    return std::find(kFlags.begin(), kFlags.end(), o) != kFlags.end();
}

std::string value_of(std::string_view opt, std::string_view key) {
    std::string v(opt.substr(key.size() + 1));
    if (v.empty())
        throw MountArgsError("mount option '" + std::string(opt) + "' needs a value (" +
                             std::string(key) + "=...)");
    return v;
}

void apply_options(HelperMount& m, std::string_view list) {
    std::size_t start = 0;
    while (start <= list.size()) {
        std::size_t comma = list.find(',', start);
        if (comma == std::string_view::npos) comma = list.size();
        std::string_view o = list.substr(start, comma - start);
        start = comma + 1;
        if (o.empty() || ignored(o)) continue;
        if (o.starts_with("view="))
            m.view = value_of(o, "view");
        else if (o.starts_with("config="))
            m.config_file = value_of(o, "config");
        else if (o.starts_with("lock="))
            m.lock_file = value_of(o, "lock");
        else if (o.starts_with("read_backend="))
            m.read_backend = value_of(o, "read_backend");
        else if (o == "allow_other")
            m.allow_other = true;
        else if (o == "debug")
            m.debug = true;
        else if (o == "foreground")
            m.foreground = true;
        else if (o == "nonempty")
            m.nonempty = true;
        else if (kernel_flag(o))
            m.kernel_flags.emplace_back(o);
        else
            throw MountArgsError(
                "unknown mount option '" + std::string(o) +
                "'; modelfs takes view=NAME, config=FILE, lock=FILE, read_backend=auto|splice, "
                "allow_other, debug, "
                "foreground, nonempty, the kernel flags ro, nosuid, nodev, noexec, noatime, "
                "nodiratime, "
                "sync, async, dirsync, and ignores fstab's own (defaults, _netdev, nofail, "
                "x-systemd.*, ...)");
    }
}

// /proc/self/mountinfo writes space, tab, newline and backslash in paths as \ooo.
std::string unescape_mountinfo(std::string_view s) {
    std::string out;
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '\\' && i + 3 < s.size() &&
            std::all_of(s.begin() + i + 1, s.begin() + i + 4,
                        [](char c) { return c >= '0' && c <= '7'; })) {
            out +=
                static_cast<char>((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0'));
            i += 3;
        } else {
            out += s[i];
        }
    }
    return out;
}

// One line of /proc/self/mountinfo: where, what type, from what source.
struct MountInfo {
    std::string point, type, source;
};
// Every mount this process sees, in the order of the file (the last of a stack comes last).
std::vector<MountInfo> mountinfo() {
    std::vector<MountInfo> out;
    std::ifstream in("/proc/self/mountinfo");
    for (std::string line; std::getline(in, line);) {
        std::istringstream f(line);
        std::string id, parent, devno, root, point, w;
        f >> id >> parent >> devno >> root >> point;
        // Optional fields end at "-"; the type and the source follow.
        while (f >> w && w != "-") {
        }
        MountInfo m{unescape_mountinfo(point), "", ""};
        f >> m.type >> m.source;
        if (m.type.empty()) m.type = "unknown";
        m.source = unescape_mountinfo(m.source);
        out.push_back(std::move(m));
    }
    return out;
}

// The filesystem type mounted at `dir` ("fuse.modelfs", "tmpfs"), or empty when nothing is.
std::string mounted_type(const std::filesystem::path& dir) {
    std::string type;
    for (const MountInfo& m : mountinfo())
        if (m.point == dir.string()) type = m.type;  // the top of a stack
    return type;
}

}  // namespace

std::vector<StoreMount> mounts_of_store(const std::filesystem::path& store) {
    std::error_code ec;
    const std::filesystem::path want = std::filesystem::weakly_canonical(store, ec);
    std::vector<StoreMount> out;
    for (const MountInfo& mi : mountinfo()) {
        if (mi.type != "fuse.modelfs" || mi.source != want.string()) continue;
        StoreMount m{mi.point, "unknown"};
        char value[64];
        const ssize_t n =
            ::getxattr(m.mountpoint.c_str(), "user.modelfs.backend", value, sizeof value);
        if (n > 0) m.read_backend.assign(value, static_cast<std::size_t>(n));
        out.push_back(std::move(m));
    }
    return out;
}

std::string mountpoint_problem(const std::filesystem::path& mountpoint, bool allow_nonempty) {
    namespace stdfs = std::filesystem;
    std::error_code ec;
    stdfs::path dir = stdfs::weakly_canonical(stdfs::absolute(mountpoint, ec), ec);
    if (ec) dir = stdfs::absolute(mountpoint, ec).lexically_normal();
    const std::string quoted = "'" + mountpoint.string() + "'";
    const std::string type = mounted_type(dir);
    if (!type.empty())
        return quoted + " is already a mount point (" + type +
               "); a second mount would hide the first. Unmount it first (" +
               (type == "fuse.modelfs" ? "modelfs umount " : "umount ") + mountpoint.string() +
               "), or mount somewhere else";
    struct stat st {};
    if (::stat(dir.c_str(), &st) != 0) {
        if (errno == ENOTCONN)
            return quoted +
                   " is a mount whose daemon has stopped; unmount it first (fusermount3 "
                   "-u " +
                   mountpoint.string() + ")";
        return {};  // a missing folder: the mount itself says so
    }
    if (!S_ISDIR(st.st_mode))
        return quoted + " is not a folder; a mount point must be an empty folder (mkdir one)";
    if (allow_nonempty) return {};
    stdfs::directory_iterator it(dir, ec);
    if (ec || it == stdfs::directory_iterator()) return {};
    return quoted + " is not empty (it has '" + it->path().filename().string() +
           "'...); the mount would hide what is there until it is unmounted. Mount on an empty "
           "folder, or pass --nonempty (fstab: -o nonempty) to mount over it anyway";
}

std::vector<std::string> processes_using(const std::filesystem::path& mountpoint) {
    namespace stdfs = std::filesystem;
    std::error_code ec;
    const std::string dir = stdfs::absolute(mountpoint, ec).lexically_normal().string();
    const auto under = [&](const stdfs::path& link) {
        std::error_code e;
        const std::string t = stdfs::read_symlink(link, e).string();
        return !e && (t == dir || (t.size() > dir.size() && t.compare(0, dir.size(), dir) == 0 &&
                                   t[dir.size()] == '/'));
    };
    std::vector<std::string> out;
    for (const auto& p : stdfs::directory_iterator("/proc", ec)) {
        const std::string pid = p.path().filename().string();
        if (pid.empty() || !std::all_of(pid.begin(), pid.end(), ::isdigit)) continue;
        bool uses = under(p.path() / "cwd") || under(p.path() / "root");
        std::error_code e;
        for (stdfs::directory_iterator fd(p.path() / "fd", e), end; !uses && !e && fd != end;
             fd.increment(e))
            uses = under(fd->path());
        if (!uses) continue;
        std::ifstream comm(p.path() / "comm");
        std::string name;
        std::getline(comm, name);
        out.push_back(pid + " (" + name + ")");
    }
    return out;
}

bool is_helper_call(const std::vector<std::string>& args,
                    const std::vector<std::string>& subcommands) {
    if (args.size() < 2) return false;
    if (args[0].empty() || args[0][0] == '-' || args[1].empty() || args[1][0] == '-') return false;
    if (std::find(subcommands.begin(), subcommands.end(), args[0]) != subcommands.end())
        return false;
    // A misspelt subcommand (`modelfs improt x`) must get CLI11's "unknown command", not "no
    // store at ./improt": the helper form names a store by path (fstab sources are absolute),
    // one that exists, or comes with -o as mount.fuse3 always passes.
    std::error_code ec;
    return args[0].find('/') != std::string::npos || std::filesystem::exists(args[0], ec) ||
           std::any_of(args.begin() + 2, args.end(),
                       [](const std::string& a) { return a.starts_with("-o"); });
}

HelperMount parse_helper_args(const std::vector<std::string>& args) {
    HelperMount m;
    std::vector<std::string> positional;
    for (std::size_t i = 0; i < args.size(); ++i) {
        const std::string& a = args[i];
        if (a == "-o") {
            if (i + 1 == args.size())
                throw MountArgsError("-o needs a list of mount options (-o view=comfyui,...)");
            apply_options(m, args[++i]);
        } else if (a.starts_with("-o")) {
            apply_options(m, std::string_view(a).substr(2));
        } else if (a == "-f") {
            m.foreground = true;
        } else if (!a.empty() && a[0] == '-') {
            // mount.fuse3 passes only -o; anything else is a typo in a unit or a script.
            throw MountArgsError("unknown argument '" + a +
                                 "'; the mount helper form is: modelfs STORE MOUNTPOINT [-o "
                                 "OPTIONS]");
        } else {
            positional.push_back(a);
        }
    }
    if (positional.size() != 2)
        throw MountArgsError(
            "expected a store and a mount point (modelfs STORE MOUNTPOINT [-o OPTIONS]), got " +
            std::to_string(positional.size()) +
            " path(s); subcommands are listed by modelfs "
            "--help");
    m.store = positional[0];
    m.mountpoint = positional[1];
    return m;
}

bool fuse_conf_allows_other(std::string_view text) {
    std::size_t start = 0;
    while (start < text.size()) {
        std::size_t nl = text.find('\n', start);
        if (nl == std::string_view::npos) nl = text.size();
        std::string_view line = text.substr(start, nl - start);
        start = nl + 1;
        while (!line.empty() && (line.front() == ' ' || line.front() == '\t'))
            line.remove_prefix(1);
        while (!line.empty() && (line.back() == ' ' || line.back() == '\t' || line.back() == '\r'))
            line.remove_suffix(1);
        if (line == "user_allow_other") return true;
    }
    return false;
}

std::string allow_other_problem(bool is_root, bool fuse_conf_readable, std::string_view fuse_conf) {
    if (is_root || (fuse_conf_readable && fuse_conf_allows_other(fuse_conf))) return {};
    return "allow_other (letting other users read the mount) needs the line 'user_allow_other' "
           "in /etc/fuse.conf when the mount is not made by root" +
           std::string(fuse_conf_readable ? "; it is missing or commented out there"
                                          : "; /etc/fuse.conf cannot be read") +
           ". As root, add it (echo user_allow_other >> /etc/fuse.conf), or mount without "
           "allow_other";
}

}  // namespace modelfs::cli
