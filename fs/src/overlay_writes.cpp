#include "overlay_writes.h"

#include "modelfs/fs/mount.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include <spdlog/spdlog.h>

namespace modelfs::fs::overlay_writes {
namespace {

// The mark's values: what is being written, what was cut off (only a new write changes that),
// and what an ingest refused (its bytes, or its name: a rename may change the answer).
constexpr std::string_view kWriting = "writing ";
constexpr std::string_view kUnfinished = "unfinished: ";
constexpr std::string_view kRefused = "refused: ";

int flock_retry(int fd, int op) {
    int rc;
    while ((rc = ::flock(fd, op)) != 0 && errno == EINTR) {
    }
    return rc;
}

std::string read_line(const char* path) {
    std::ifstream in(path);
    std::string s;
    std::getline(in, s);
    return s;
}

// Field 22 of /proc/PID/stat: when the process started, in clock ticks since boot. With the
// boot id it tells a live writer from a later process that got the same pid.
std::string start_time(pid_t pid) {
    std::string stat = read_line(("/proc/" + std::to_string(pid) + "/stat").c_str());
    auto close = stat.rfind(')');  // the command name may hold spaces and parentheses
    if (close == std::string::npos) return {};
    std::istringstream rest(stat.substr(close + 2));
    std::string field;
    for (int i = 3; i <= 22 && rest >> field; ++i) {
    }
    return field;
}

const std::string& boot_id() {
    static const std::string id = read_line("/proc/sys/kernel/random/boot_id");
    return id;
}

std::string writer_mark() {
    return std::string(kWriting) + boot_id() + " " + std::to_string(::getpid()) + " " +
           start_time(::getpid());
}

// Is the process a "writing" mark names still running?
bool writer_alive(std::string_view mark) {
    std::istringstream in(std::string(mark.substr(kWriting.size())));
    std::string boot, start;
    pid_t pid = 0;
    if (!(in >> boot >> pid >> start)) return false;
    return boot == boot_id() && pid > 0 && start_time(pid) == start;
}

std::optional<std::string> get_mark(int fd) {
    char buf[512];
    ssize_t n = ::fgetxattr(fd, kXattr, buf, sizeof buf);
    if (n < 0) return std::nullopt;  // ENODATA: no mark; ENOTSUP: a filesystem without marks
    return std::string(buf, static_cast<std::size_t>(n));
}

void put_mark(int fd, std::string_view value) {
    if (::fsetxattr(fd, kXattr, value.data(), value.size(), 0) == 0) return;
    static std::atomic<bool> told{false};
    if (!told.exchange(true))
        spdlog::warn(
            "the store's filesystem keeps no user xattrs ({}): a file cut off by a crash of the "
            "mount cannot be told from a finished one",
            std::strerror(errno));
}

}  // namespace

bool begin(int fd, const std::filesystem::path& real) {
    if (flock_retry(fd, LOCK_SH) != 0) return false;
    struct stat a, b;
    if (::fstat(fd, &a) != 0 || ::lstat(real.c_str(), &b) != 0 || a.st_ino != b.st_ino ||
        a.st_dev != b.st_dev) {
        flock_retry(fd, LOCK_UN);
        return false;
    }
    put_mark(fd, writer_mark());
    return true;
}

bool end(UniqueFd writer, const std::string& error) {
    // A second open of the same inode (even if unlinked or renamed meanwhile): with the writer's
    // own share of the lock gone, an exclusive lock tells whether another process still writes.
    UniqueFd probe(::open(("/proc/self/fd/" + std::to_string(writer.get())).c_str(),
                          O_RDONLY | O_NONBLOCK | O_CLOEXEC));
    writer.reset();
    if (!probe || flock_retry(probe.get(), LOCK_EX | LOCK_NB) != 0) return false;
    if (error.empty())
        ::fremovexattr(probe.get(), kXattr);
    else
        put_mark(probe.get(), std::string(kUnfinished) + error);
    return error.empty();
}

std::optional<std::string> held(int fd, bool* busy, bool record) {
    *busy = false;
    auto mark = get_mark(fd);
    if (!mark) return std::nullopt;
    if (!mark->starts_with(kWriting)) return mark;
    if (writer_alive(*mark) || flock_retry(fd, LOCK_EX | LOCK_NB) != 0) {
        *busy = true;
        return "being written";
    }
    // Nobody writes it and the process that did is gone before its close: cut off mid-write.
    std::string why = std::string(kUnfinished) +
                      "its writer stopped before closing it (the mount daemon was killed or the "
                      "machine went down); write it again through the mount (a copy, say) to "
                      "store it";
    if (record) put_mark(fd, why);
    flock_retry(fd, LOCK_UN);
    return why;
}

void set_reason(int fd, std::string_view why) {
    put_mark(fd, std::string(kRefused) + std::string(why));
}

std::optional<std::string> kept_by_owner(const struct stat& st) {
    if (st.st_uid == ::geteuid()) return std::nullopt;
    return "it belongs to uid " + std::to_string(st.st_uid) +
           ", and a stored model belongs to the mount's user (uid " + std::to_string(::geteuid()) +
           "): it stays its owner's plain file";
}

void renamed(const std::filesystem::path& real) {
    char buf[16];
    ssize_t n = ::lgetxattr(real.c_str(), kXattr, buf, sizeof buf);
    if (n >= static_cast<ssize_t>(kRefused.size()) &&
        std::string_view(buf, kRefused.size()) == kRefused)
        ::lremovexattr(real.c_str(), kXattr);
}

}  // namespace modelfs::fs::overlay_writes

namespace modelfs::fs {

std::vector<UnstoredFile> unstored_files(const std::filesystem::path& store) {
    namespace stdfs = std::filesystem;
    std::vector<UnstoredFile> out;
    const stdfs::path views = store / "views";
    std::error_code ec;
    for (auto it = stdfs::recursive_directory_iterator(views, ec);
         !ec && it != stdfs::recursive_directory_iterator(); it.increment(ec)) {
        if (!it->is_regular_file(ec) || it->is_symlink(ec)) continue;
        UniqueFd fd(::open(it->path().c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
        if (!fd) continue;
        bool busy = false;
        auto why = overlay_writes::held(fd.get(), &busy, /*record=*/false);
        if (!why) continue;
        out.push_back({stdfs::relative(it->path(), views, ec).string(), *why, busy});
    }
    return out;
}

}  // namespace modelfs::fs
