#include "modelfs/store/blob_store.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <random>

#include <spdlog/spdlog.h>

#include "chunk_pipeline.h"
#include "modelfs/store/errors.h"

namespace stdfs = std::filesystem;

namespace modelfs {
namespace {

std::string random_name() {
    static thread_local std::mt19937_64 rng{std::random_device{}() ^
                                            static_cast<std::uint64_t>(::getpid()) << 32};
    std::uint64_t r = rng();
    return std::to_string(::getpid()) + "-" + to_hex(reinterpret_cast<const std::uint8_t*>(&r), 8);
}

std::int64_t now_seconds() {
    return std::chrono::duration_cast<std::chrono::seconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

void mkdir_p(const stdfs::path& p) {
    std::error_code ec;
    stdfs::create_directories(p, ec);
    if (ec) throw_errno("creating " + p.string(), ec.value());
}

// A file whose size or mtime moved while it was read may have been read half old, half new:
// refuse it rather than store bytes that never existed together.
void check_unchanged(int src, const struct stat& before, std::uint64_t bytes_read,
                     const std::string& name) {
    struct stat after;
    if (::fstat(src, &after) != 0) throw_errno("reading " + name, errno);
    if (static_cast<std::uint64_t>(after.st_size) != bytes_read ||
        after.st_size != before.st_size || after.st_mtim.tv_sec != before.st_mtim.tv_sec ||
        after.st_mtim.tv_nsec != before.st_mtim.tv_nsec)
        throw StoreError(ErrorKind::bad_input,
                         name + " changed while it was being imported; import it again");
}

}  // namespace

void pwrite_all(int fd, const void* data, std::size_t size, std::uint64_t offset,
                const std::string& what) {
    auto* p = static_cast<const char*>(data);
    while (size > 0) {
        ssize_t n = ::pwrite(fd, p, size, static_cast<off_t>(offset));
        if (n < 0) {
            if (errno == EINTR) continue;
            throw_errno("writing " + what, errno);
        }
        p += n;
        size -= static_cast<std::size_t>(n);
        offset += static_cast<std::uint64_t>(n);
    }
}

void fsync_or_throw(int fd, const std::string& what) {
    if (::fsync(fd) != 0) throw_errno("flushing " + what + " to disk", errno);
}

void fsync_dir(const stdfs::path& dir) {
    UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!fd) throw_errno("opening " + dir.string(), errno);
    fsync_or_throw(fd.get(), dir.string());
}

StagingFile& StagingFile::operator=(StagingFile&& o) noexcept {
    if (this != &o) {
        if (!path_.empty() && !keep_) ::unlink(path_.c_str());
        fd_ = std::move(o.fd_);
        path_ = std::exchange(o.path_, {});
        keep_ = o.keep_;
    }
    return *this;
}

StagingFile::~StagingFile() {
    if (!path_.empty() && !keep_) ::unlink(path_.c_str());
}

BlobStore::BlobStore(stdfs::path root) : root_(std::move(root)) {}

void BlobStore::create_layout(const stdfs::path& root) {
    for (const char* d : {"blobs/sha256", "staging", "quarantine"}) mkdir_p(root / d);
}

stdfs::path BlobStore::path_of(const Sha256& h) const {
    std::string hex = h.hex();
    return root_ / "blobs" / "sha256" / hex.substr(0, 2) / hex;
}

bool BlobStore::exists(const Sha256& h) const {
    struct stat st;
    return ::stat(path_of(h).c_str(), &st) == 0;
}

UniqueFd BlobStore::open_blob(const Sha256& h) const {
    return UniqueFd(::open(path_of(h).c_str(), O_RDONLY | O_CLOEXEC));
}

StagingFile BlobStore::make_staging(const std::string& suffix) {
    for (int attempt = 0;; ++attempt) {
        stdfs::path p = staging_dir() / (random_name() + suffix);
        UniqueFd fd(::open(p.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
        if (!fd) {
            if (errno == EEXIST && attempt < 8) continue;
            throw_errno("creating staging file " + p.string(), errno);
        }
        StagingFile f(std::move(fd), p);
        // Cleanup in other processes skips files whose lock is held.
        if (::flock(f.fd(), LOCK_EX | LOCK_NB) != 0) throw_errno("locking " + p.string(), errno);
        return f;
    }
}

bool BlobStore::publish(StagingFile& staged, const Sha256& h, std::uint64_t size) {
    stdfs::path dest = path_of(h);
    stdfs::path shard = dest.parent_path();
    bool new_shard = !stdfs::exists(shard);
    if (new_shard) mkdir_p(shard);
    for (int attempt = 0; attempt < 2; ++attempt) {
        if (::renameat2(AT_FDCWD, staged.path().c_str(), AT_FDCWD, dest.c_str(),
                        RENAME_NOREPLACE) == 0) {
            staged.release();
            fsync_dir(shard);
            if (new_shard) fsync_dir(shard.parent_path());
            return true;
        }
        if (errno != EEXIST) throw_errno("placing blob " + dest.string(), errno);
        struct stat st;
        if (::stat(dest.c_str(), &st) == 0 && static_cast<std::uint64_t>(st.st_size) == size)
            return false;  // same content already stored; the staged copy is dropped
        // An existing file of the wrong size cannot be this content: keep it for inspection and
        // put the good copy in its place.
        stdfs::path q = quarantine(h);
        spdlog::warn("blob {} had the wrong size; moved it to {}", h.hex(), q.string());
    }
    throw StoreError(ErrorKind::io, "cannot place blob " + dest.string());
}

std::optional<std::string> BlobStore::why_not_take(const struct stat& st, unsigned own_names) {
    if (!S_ISREG(st.st_mode)) return std::string("it is not a regular file");
    // Another owner can chmod it writable again, whatever mode the store gives it.
    if (st.st_uid != ::geteuid())
        return "it belongs to uid " + std::to_string(st.st_uid) + ", not to the store's uid " +
               std::to_string(::geteuid());
    // Another name (a backup, a second hard link, another program's cache entry) would let
    // whoever writes through it change the blob's bytes under its hash.
    if (st.st_nlink > own_names) return "it has " + std::to_string(st.st_nlink) + " hard links";
    return std::nullopt;
}

BlobStat BlobStore::stat_stamp(const struct stat& st) {
    return BlobStat{static_cast<std::uint64_t>(st.st_ino), static_cast<std::uint64_t>(st.st_size),
                    static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec,
                    static_cast<std::int64_t>(st.st_ctim.tv_sec) * 1000000000 + st.st_ctim.tv_nsec};
}

std::optional<BlobStat> BlobStore::stat_of(const Sha256& h) const {
    struct stat st;
    if (::stat(path_of(h).c_str(), &st) != 0) return std::nullopt;
    return stat_stamp(st);
}

bool BlobStore::publish_link(int fd, const stdfs::path& path, const Sha256& h, std::uint64_t size,
                             Published* how, Progress* progress) {
    if (how) *how = Published{};
    stdfs::path dest = path_of(h);
    struct stat st;
    if (::stat(dest.c_str(), &st) == 0) {
        if (static_cast<std::uint64_t>(st.st_size) == size) return false;
        stdfs::path q = quarantine(h);
        spdlog::warn("blob {} had the wrong size; moved it to {}", h.hex(), q.string());
    }
    auto copy = [&](const std::string& why) {
        spdlog::debug("copying {} into the store instead of linking it: {}", path.string(), why);
        Ingested in = ingest_copy(fd, path.string(), progress);
        if (in.digests.sha256 != h)
            throw StoreError(ErrorKind::corrupt,
                             path.string() + " was to be stored as " + h.hex() +
                                 " but its SHA-256 is " + in.digests.sha256.hex() +
                                 " (it changed, or its name lied); it was not stored");
        if (how) {
            how->copied = true;
            how->digests = in.digests;
        }
        return in.stored_new;
    };
    if (::fstat(fd, &st) != 0) throw_errno("reading " + path.string(), errno);
    if (auto why = why_not_take(st)) return copy(*why);
    if (::fchmod(fd, 0444) != 0) throw_errno("making " + path.string() + " read-only", errno);
    fsync_or_throw(fd, path.string());
    stdfs::path shard = dest.parent_path();
    bool new_shard = !stdfs::exists(shard);
    if (new_shard) mkdir_p(shard);
    // link() never replaces: of two publishers of one content, exactly one wins.
    if (::link(path.c_str(), dest.c_str()) != 0) {
        if (errno == EEXIST) return false;
        throw_errno("linking " + path.string() + " to blob " + dest.string(), errno);
    }
    // A name made between the check and the link would outlive the caller's: look again, now
    // that the blob name is one of the two expected.
    if (::fstat(fd, &st) != 0) throw_errno("reading " + path.string(), errno);
    if (auto why = why_not_take(st, 2)) {
        if (::unlink(dest.c_str()) != 0) throw_errno("unlinking " + dest.string(), errno);
        return copy(*why);
    }
    fsync_dir(shard);
    if (new_shard) fsync_dir(shard.parent_path());
    return true;
}

Ingested BlobStore::ingest_copy(int src, const std::string& name, Progress* progress) {
    struct stat st;
    if (::fstat(src, &st) != 0) throw_errno("reading " + name, errno);
    StagingFile staged = make_staging(".tmp");
    const std::string staged_name = staged.path().string();

    // A reflink (btrfs, XFS, bcachefs, ...) shares the source's extents: no bytes are written,
    // and the clone is a snapshot that later edits of the source cannot touch. Hash the clone.
    if (st.st_size > 0 && ::ioctl(staged.fd(), FICLONE, src) == 0) {
        Ingested r;
        r.digests = digest_fd(staged.fd(), progress, staged_name.c_str());
        if (::fchmod(staged.fd(), 0444) != 0)
            throw_errno("making " + staged_name + " read-only", errno);
        fsync_or_throw(staged.fd(), staged_name);
        r.stored_new = publish(staged, r.digests.sha256, r.digests.size);
        return r;
    }
    // Not supported here (ext4, tmpfs, another filesystem): copy while hashing.
    if (st.st_size > 0) {
        // Reserve the space first: a full disk fails here, before any byte is copied.
        int rc = ::posix_fallocate(staged.fd(), 0, st.st_size);
        if (rc != 0 && rc != EOPNOTSUPP && rc != EINVAL)
            throw_errno("reserving " + std::to_string(st.st_size) + " bytes for " + name + " in " +
                            staging_dir().string(),
                        rc);
    }

    Sha256Hasher sha;
    Xxh128Hasher xxh;
    std::uint64_t written = 0;
    const int out = staged.fd();
    read_chunks(
        src, 0,
        [&](std::span<const std::byte> c) {
            pwrite_all(out, c.data(), c.size(), written, staged_name);
            // Start writeback now so the final fsync has little left to wait for.
            ::sync_file_range(out, static_cast<off_t>(written), static_cast<off_t>(c.size()),
                              SYNC_FILE_RANGE_WRITE);
            xxh.update(c.data(), c.size());
            written += c.size();
        },
        [&](std::span<const std::byte> c) { sha.update(c.data(), c.size()); }, progress,
        name.c_str());

    check_unchanged(src, st, written, name);
    if (::ftruncate(out, static_cast<off_t>(written)) != 0)
        throw_errno("truncating " + staged_name, errno);
    if (::fchmod(out, 0444) != 0) throw_errno("making " + staged_name + " read-only", errno);
    fsync_or_throw(out, staged_name);

    Ingested r;
    r.digests = {sha.finish(), xxh.finish(), written};
    r.stored_new = publish(staged, r.digests.sha256, written);
    return r;
}

std::optional<Ingested> BlobStore::ingest_if_present(int src, const std::string& name,
                                                     Progress* progress) {
    struct stat before;
    if (::fstat(src, &before) != 0) throw_errno("reading " + name, errno);
    FileDigests d = digest_fd(src, progress, name.c_str());
    check_unchanged(src, before, d.size, name);
    struct stat st;
    if (::stat(path_of(d.sha256).c_str(), &st) != 0 ||
        static_cast<std::uint64_t>(st.st_size) != d.size)
        return std::nullopt;
    return Ingested{d, false};
}

StagingFile BlobStore::adopt_staging(const stdfs::path& path) {
    UniqueFd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW));
    if (!fd) throw_errno("opening " + path.string(), errno);
    if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) throw_errno("locking " + path.string(), errno);
    return StagingFile(std::move(fd), path);
}

void BlobStore::remove(const Sha256& h) {
    if (::unlink(path_of(h).c_str()) != 0 && errno != ENOENT)
        throw_errno("removing blob " + path_of(h).string(), errno);
}

stdfs::path BlobStore::quarantine(const Sha256& h) {
    mkdir_p(quarantine_dir());
    stdfs::path dest = quarantine_dir() / (h.hex() + "." + std::to_string(now_seconds()));
    if (::rename(path_of(h).c_str(), dest.c_str()) != 0)
        throw_errno("moving " + path_of(h).string() + " to quarantine", errno);
    return dest;
}

void BlobStore::for_each_file(
    const std::function<void(const std::optional<Sha256>&, const stdfs::path&, std::uint64_t)>& fn)
    const {
    std::error_code ec;
    stdfs::path top = root_ / "blobs" / "sha256";
    for (stdfs::recursive_directory_iterator it(top, ec), end; !ec && it != end; it.increment(ec)) {
        if (!it->is_regular_file(ec)) continue;
        const stdfs::path& p = it->path();
        auto h = Sha256::from_hex(p.filename().string());
        if (h && p.parent_path().filename() != p.filename().string().substr(0, 2)) h.reset();
        fn(h, p, it->file_size(ec));
    }
}

std::size_t BlobStore::clean_staging(const std::function<bool(const stdfs::path&)>& keep) {
    std::size_t removed = 0;
    std::error_code ec;
    const auto now = stdfs::file_time_type::clock::now();
    for (stdfs::directory_iterator it(staging_dir(), ec), end; !ec && it != end; it.increment(ec)) {
        const stdfs::path p = it->path();
        UniqueFd fd(::open(p.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
        if (!fd) continue;
        if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) continue;  // its writer is alive
        struct stat st;
        if (::fstat(fd.get(), &st) != 0) continue;
        // A writer creates its file and locks it a moment later: a young empty file may be in
        // that moment, so leave it alone.
        if (st.st_size == 0 && now - stdfs::last_write_time(p, ec) < std::chrono::minutes(5))
            continue;
        if (keep && keep(p)) continue;
        if (::unlink(p.c_str()) == 0) ++removed;
    }
    return removed;
}

}  // namespace modelfs
