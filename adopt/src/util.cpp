#include "util.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <vector>

#include "modelfs/store/blob_store.h"
#include "modelfs/store/errors.h"
#include "modelfs/store/safe_open.h"
#include "modelfs/store/unique_fd.h"

namespace stdfs = std::filesystem;

namespace modelfs::adopt::detail {

std::int64_t unix_now() {
    return std::chrono::duration_cast<std::chrono::seconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

std::uint64_t copy_file_durable(const stdfs::path& from, const stdfs::path& to, unsigned mode,
                                Progress* progress) {
    UniqueFd in(::open(from.c_str(), O_RDONLY | O_CLOEXEC));
    if (!in) throw_errno("opening " + from.string() + " to copy it", errno);
    UniqueFd out(::open(to.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (!out) throw_errno("creating " + to.string(), errno);
    return copy_fd_durable(in.get(), out.get(), from.string(), to.string(), mode, progress);
}

std::uint64_t copy_fd_durable(int in, int out, const std::string& from, const std::string& to,
                              unsigned mode, Progress* progress) {
    std::vector<char> buf(1 << 20);
    std::uint64_t total = 0;
    for (;;) {
        ssize_t r = ::pread(in, buf.data(), buf.size(), static_cast<off_t>(total));
        if (r < 0) {
            if (errno == EINTR) continue;
            throw_errno("reading " + from, errno);
        }
        if (r == 0) break;
        pwrite_all(out, buf.data(), static_cast<std::size_t>(r), total, to);
        total += static_cast<std::uint64_t>(r);
        add_progress(progress, static_cast<std::uint64_t>(r));
    }
    if (::fchmod(out, mode & 07777) != 0) throw_errno("chmod " + to, errno);
    fsync_or_throw(out, to);
    return total;
}

UniqueFd open_real(const stdfs::path& real, int flags) {
    if (real.is_absolute()) return open_no_symlinks(real, flags);
    return UniqueFd(::open(real.c_str(), flags | O_NOFOLLOW | O_CLOEXEC));
}

bool same_filesystem(const stdfs::path& a, const stdfs::path& b) {
    struct stat sa, sb;
    if (::stat(a.c_str(), &sa) != 0 || ::stat(b.c_str(), &sb) != 0) return false;
    return sa.st_dev == sb.st_dev;
}

bool is_under(const stdfs::path& p, const stdfs::path& dir, stdfs::path* rel) {
    stdfs::path r = p.lexically_normal().lexically_relative(dir.lexically_normal());
    if (r.empty() || *r.begin() == "..") return false;
    if (r == ".") return false;
    if (rel) *rel = r;
    return true;
}

bool movable(const stdfs::path& path, const stdfs::path& real, const stdfs::path& models_dir,
             const stdfs::path& store_root, std::string* why) {
    auto no = [&](std::string w) {
        if (why) *why = std::move(w);
        return false;
    };
    stdfs::path rel, real_rel;
    std::error_code ec;
    const stdfs::path models_real = stdfs::weakly_canonical(models_dir, ec);
    if (ec || !is_under(path, models_dir, &rel) || !is_under(real, models_real, &real_rel) ||
        rel != real_rel)
        return no("it is outside the models folder or reached through a link");
    if (!same_filesystem(real, store_root)) return no("it is on another filesystem");
    struct stat st;
    if (::lstat(real.c_str(), &st) != 0) return no(std::strerror(errno));
    if (auto w = BlobStore::why_not_take(st)) return no(*w);
    return true;
}

}  // namespace modelfs::adopt::detail
