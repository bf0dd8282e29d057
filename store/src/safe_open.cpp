// The rule is written down once, in safe_open.h.
#include "modelfs/store/safe_open.h"

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/openat2.h>
#include <pwd.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>

namespace stdfs = std::filesystem;

namespace modelfs {
namespace {

// Resolution by hand, for kernels before 5.6: every folder on the way opened with O_NOFOLLOW.
UniqueFd open_by_components(int dirfd, const stdfs::path& rel, int flags) {
    std::vector<std::string> parts;
    for (const auto& p : rel) {
        const std::string s = p.string();
        if (s.empty() || s == ".") continue;
        if (s == "..") {
            errno = EXDEV;  // what RESOLVE_BENEATH says; the callers normalise first
            return UniqueFd();
        }
        parts.push_back(s);
    }
    if (parts.empty()) return UniqueFd(::openat(dirfd, ".", flags | O_CLOEXEC));
    UniqueFd cur;
    int at = dirfd;
    for (std::size_t i = 0; i + 1 < parts.size(); ++i) {
        UniqueFd next(
            ::openat(at, parts[i].c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (!next) {
            const int e = errno;
            struct stat st;
            // O_DIRECTORY on a link says ENOTDIR; say what it was.
            errno = e == ENOTDIR &&
                            ::fstatat(at, parts[i].c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
                            S_ISLNK(st.st_mode)
                        ? ELOOP
                        : e;
            return UniqueFd();
        }
        cur = std::move(next);
        at = cur.get();
    }
    return UniqueFd(::openat(at, parts.back().c_str(), flags | O_NOFOLLOW | O_CLOEXEC));
}

bool in_groups(const ActingUser& u, gid_t g) {
    return g == u.gid || std::find(u.groups.begin(), u.groups.end(), g) != u.groups.end();
}

// The permission bits (r=4, w=2, x=1) `u` gets on `st`: the owner class decides alone, as in
// the kernel (an owner without r is refused even when others have it).
unsigned bits_for(const ActingUser& u, const struct stat& st) {
    if (st.st_uid == u.uid) return (st.st_mode >> 6) & 7;
    if (in_groups(u, st.st_gid)) return (st.st_mode >> 3) & 7;
    return st.st_mode & 7;
}

std::optional<uid_t> sudo_uid() {
    const char* v = std::getenv("SUDO_UID");
    if (!v || !*v) return std::nullopt;
    char* end = nullptr;
    errno = 0;
    const unsigned long n = std::strtoul(v, &end, 10);
    if (errno || *end || n > 0xfffffffeUL) return std::nullopt;
    return static_cast<uid_t>(n);
}

}  // namespace

UniqueFd open_beneath(int dirfd, const stdfs::path& rel, int flags) {
    if (rel.is_absolute()) {
        errno = EXDEV;
        return UniqueFd();
    }
    open_how how{};
    how.flags = static_cast<std::uint64_t>(flags | O_CLOEXEC | O_NOFOLLOW);
    how.resolve = RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
    const std::string r = rel.empty() ? std::string(".") : rel.string();
    for (;;) {
        const long fd = ::syscall(SYS_openat2, dirfd, r.c_str(), &how, sizeof how);
        if (fd >= 0) return UniqueFd(static_cast<int>(fd));
        if (errno == EINTR || errno == EAGAIN) continue;  // EAGAIN: a rename raced the lookup
        if (errno == ENOSYS) return open_by_components(dirfd, rel, flags);
        if (errno == ENOTDIR && (flags & O_DIRECTORY)) {
            // O_DIRECTORY on a final link says ENOTDIR; say what it is.
            open_how plain{};
            plain.flags = O_PATH | O_NOFOLLOW | O_CLOEXEC;
            plain.resolve = how.resolve;
            const long l = ::syscall(SYS_openat2, dirfd, r.c_str(), &plain, sizeof plain);
            struct stat st;
            const bool link =
                l >= 0 && ::fstat(static_cast<int>(l), &st) == 0 && S_ISLNK(st.st_mode);
            if (l >= 0) ::close(static_cast<int>(l));
            errno = link ? ELOOP : ENOTDIR;
        }
        return UniqueFd();
    }
}

namespace {

// "/", where both walks below start; a relative path is refused (EINVAL): it would depend on the
// working folder, which nothing here checks.
UniqueFd open_root_for(const stdfs::path& abs) {
    if (!abs.is_absolute()) {
        errno = EINVAL;
        return UniqueFd();
    }
    return UniqueFd(::open("/", O_PATH | O_DIRECTORY | O_CLOEXEC));
}

}  // namespace

UniqueFd open_no_symlinks(const stdfs::path& abs, int flags) {
    UniqueFd root = open_root_for(abs);
    if (!root) return UniqueFd();
    return open_beneath(root.get(), abs.lexically_normal().relative_path(), flags);
}

UniqueFd make_dirs_no_symlinks(const stdfs::path& abs, mode_t mode) {
    UniqueFd cur = open_root_for(abs);
    if (!cur) return UniqueFd();
    for (const auto& part : abs.lexically_normal().relative_path()) {
        const std::string s = part.string();
        if (s.empty() || s == ".") continue;
        if (s == "..") {
            errno = EXDEV;
            return UniqueFd();
        }
        UniqueFd next = open_beneath(cur.get(), s, O_PATH | O_DIRECTORY);
        if (!next && errno == ENOENT) {
            if (::mkdirat(cur.get(), s.c_str(), mode) != 0 && errno != EEXIST) return UniqueFd();
            next = open_beneath(cur.get(), s, O_PATH | O_DIRECTORY);
        }
        if (!next) return UniqueFd();
        cur = std::move(next);
    }
    return cur;
}

std::optional<std::vector<DirEntry>> list_dir(int dirfd, int* err) {
    // fdopendir takes the fd it is given; a fresh open of "." keeps `dirfd` for the caller (a
    // dup would share its read position).
    UniqueFd own(::openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!own) {
        if (err) *err = errno;
        return std::nullopt;
    }
    std::unique_ptr<DIR, int (*)(DIR*)> d(::fdopendir(own.get()), ::closedir);
    if (!d) {
        if (err) *err = errno;
        return std::nullopt;
    }
    own.release();
    std::vector<DirEntry> out;
    errno = 0;
    while (dirent* de = ::readdir(d.get())) {
        const std::string n = de->d_name;
        if (n == "." || n == "..") continue;
        DirEntry e;
        e.name = n;
        e.stat_ok = ::fstatat(dirfd, n.c_str(), &e.st, AT_SYMLINK_NOFOLLOW) == 0;
        out.push_back(std::move(e));
        errno = 0;
    }
    if (errno) {
        if (err) *err = errno;
        return std::nullopt;
    }
    std::sort(out.begin(), out.end(),
              [](const DirEntry& a, const DirEntry& b) { return a.name < b.name; });
    return out;
}

ActingUser ActingUser::for_uid(uid_t uid) {
    ActingUser u;
    u.uid = uid;
    u.gid = static_cast<gid_t>(-1);  // no group at all unless the user database names one
    u.name = "uid " + std::to_string(uid);
    long size = ::sysconf(_SC_GETPW_R_SIZE_MAX);
    std::vector<char> buf(size > 0 ? static_cast<std::size_t>(size) : 16384);
    passwd pw{};
    passwd* found = nullptr;
    if (::getpwuid_r(uid, &pw, buf.data(), buf.size(), &found) == 0 && found) {
        u.gid = pw.pw_gid;
        u.name = std::string(pw.pw_name) + " (uid " + std::to_string(uid) + ")";
        int n = 32;
        std::vector<gid_t> groups(static_cast<std::size_t>(n));
        if (::getgrouplist(pw.pw_name, pw.pw_gid, groups.data(), &n) < 0) {
            groups.resize(static_cast<std::size_t>(n));
            ::getgrouplist(pw.pw_name, pw.pw_gid, groups.data(), &n);
        }
        groups.resize(static_cast<std::size_t>(std::max(n, 0)));
        u.groups = std::move(groups);
    } else if (const char* g = std::getenv("SUDO_GID"); g && *g && sudo_uid() == uid) {
        u.gid = static_cast<gid_t>(std::strtoul(g, nullptr, 10));
    }
    return u;
}

std::optional<ActingUser> ActingUser::for_tree(const stdfs::path& tree_root) {
    if (::geteuid() != 0) return std::nullopt;
    if (auto s = sudo_uid()) {
        if (*s == 0) return std::nullopt;
        return for_uid(*s);
    }
    struct stat st;
    if (::stat(tree_root.c_str(), &st) != 0 || st.st_uid == 0) return std::nullopt;
    return for_uid(st.st_uid);
}

bool ActingUser::can_read(const struct stat& st) const {
    return bits_for(*this, st) & 4;
}

bool ActingUser::can_list(const struct stat& st) const {
    return (bits_for(*this, st) & 5) == 5;
}

bool ActingUser::can_change(const struct stat& st) const {
    return st.st_uid == uid || (bits_for(*this, st) & 2);
}

std::optional<std::string> ActingUser::refusal(const struct stat& st, const std::string& what,
                                               bool change) const {
    const std::string who = name + " (for whom root acts here)";
    if (S_ISDIR(st.st_mode)) {
        if (!can_list(st)) return what + ": a folder " + who + " cannot list; left out";
        return std::nullopt;
    }
    if (!can_read(st)) return what + ": not readable by " + who + "; left out";
    if (change && !can_change(st)) return what + ": not changeable by " + who + "; left out";
    return std::nullopt;
}

std::string open_failure(const std::string& what, int e) {
    if (e == ELOOP) return what + ": reached through a symbolic link, which is not followed here";
    if (e == EXDEV) return what + ": leads outside the folder it must stay in";
    return what + ": " + std::strerror(e);
}

}  // namespace modelfs
