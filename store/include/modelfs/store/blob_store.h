// The blob files: one read-only file per SHA-256 under blobs/sha256/<first two hex>/<hex>,
// written only through staging/ so that a crash never leaves a half blob under a real name.
// Knows nothing of the catalog; Store ties the two together.
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <utility>

#include "modelfs/store/catalog.h"
#include "modelfs/store/hash.h"
#include "modelfs/store/progress.h"
#include "modelfs/store/unique_fd.h"

namespace modelfs {

// A file in staging/, exclusively flock()ed for its whole life so that cleanup in another process
// can tell it is still being written. Removed on destruction unless published.
class StagingFile {
  public:
    StagingFile() = default;
    StagingFile(StagingFile&& o) noexcept
        : fd_(std::move(o.fd_)), path_(std::exchange(o.path_, {})), keep_(o.keep_) {}
    StagingFile& operator=(StagingFile&&) noexcept;
    ~StagingFile();

    int fd() const { return fd_.get(); }
    const std::filesystem::path& path() const { return path_; }
    // Forget the file: it was renamed away.
    void release() { path_.clear(); }
    // Leave the file in place on destruction (recovery decides its fate), but keep the path.
    void keep() { keep_ = true; }

  private:
    friend class BlobStore;
    StagingFile(UniqueFd fd, std::filesystem::path path)
        : fd_(std::move(fd)), path_(std::move(path)) {}
    UniqueFd fd_;
    std::filesystem::path path_;
    bool keep_ = false;
};

struct Ingested {
    FileDigests digests;
    bool stored_new = false;  // false: the store already had this content
};

// How publish_link placed a file.
struct Published {
    // The file was not the store's to take (see BlobStore::why_not_take): its bytes were copied
    // (reflinked where the filesystem can) and hashed on the way; `digests` are the copy's.
    bool copied = false;
    std::optional<FileDigests> digests;
};

class BlobStore {
  public:
    explicit BlobStore(std::filesystem::path root);

    // Creates blobs/, staging/ and quarantine/ under root.
    static void create_layout(const std::filesystem::path& root);

    const std::filesystem::path& root() const { return root_; }
    std::filesystem::path path_of(const Sha256& h) const;
    std::filesystem::path staging_dir() const { return root_ / "staging"; }
    std::filesystem::path quarantine_dir() const { return root_ / "quarantine"; }

    bool exists(const Sha256& h) const;
    // Opens a blob read-only; an invalid fd (errno set) when it is missing.
    UniqueFd open_blob(const Sha256& h) const;

    // Copies the open file `src` into the store, hashing it in the same pass (copy + XXH3 on this
    // thread, SHA-256 on another), then fsyncs and publishes it under its hash. The space is
    // reserved up front, so a full disk fails before anything is copied. `name` is for messages.
    Ingested ingest_copy(int src, const std::string& name, Progress* progress);

    // Hashes `src` without copying it; returns the result when the store already has that content
    // (nothing written), std::nullopt when it does not (the caller copies it). For likely
    // duplicates, where it saves the whole write.
    std::optional<Ingested> ingest_if_present(int src, const std::string& name, Progress* progress);

    // A new exclusively-locked staging file with the given suffix.
    StagingFile make_staging(const std::string& suffix);
    // Takes charge of a file already in staging/ (renamed there by a move): opens and locks it.
    StagingFile adopt_staging(const std::filesystem::path& path);

    // Renames `staged` to the blob path of `h` unless that exists already (then it is dropped).
    // Returns true when the staged file became the blob.
    bool publish(StagingFile& staged, const Sha256& h, std::uint64_t size);

    // THE rule of every zero-copy path (hard link or rename into blobs/): the store only takes
    // an inode that nothing outside it can write once the caller's own names are gone. So the
    // file must be a regular file owned by this process's euid with no names but the
    // `own_names` the caller accounts for (its path; plus the blob name once linked). Returns
    // why not (for logs), or std::nullopt when it may be taken. Anything else is copied.
    static std::optional<std::string> why_not_take(const struct stat& st, unsigned own_names = 1);

    // Makes the finished file `path` (on the store's filesystem, open as `fd`, hashed as `h`) a
    // blob. When why_not_take allows, by hard-linking it to its blob name: no byte is copied;
    // the file is made read-only and durable first, since from then on it is the blob, and the
    // caller must not write to `path` afterwards and should unlink it. Otherwise the bytes are
    // copied (ingest_copy) and the copy must hash to `h` (else StoreError corrupt, nothing
    // catalogued; the copy is an orphan for gc); `path` is left as it was. Returns false when
    // the blob existed (nothing changed); `how` (optional) says whether it copied.
    bool publish_link(int fd, const std::filesystem::path& path, const Sha256& h,
                      std::uint64_t size, Published* how = nullptr, Progress* progress = nullptr);

    // The blob file's stat as the catalog records it (BlobRecord::seen); nullopt when missing.
    std::optional<BlobStat> stat_of(const Sha256& h) const;
    static BlobStat stat_stamp(const struct stat& st);

    // Deletes a blob file (gc). Missing is not an error.
    void remove(const Sha256& h);
    // Moves a blob file to quarantine/<hex>.<unix time> and returns the new path.
    std::filesystem::path quarantine(const Sha256& h);

    // Every file under blobs/, well-named or not: (hash if the name is one, path, size).
    void for_each_file(
        const std::function<void(const std::optional<Sha256>&, const std::filesystem::path&,
                                 std::uint64_t)>& fn) const;

    // Staging files whose writer is gone (lock free). `keep` decides, for files of a given suffix,
    // whether to leave them to the caller (move journals); the others are deleted. Returns the
    // number of files removed.
    std::size_t clean_staging(const std::function<bool(const std::filesystem::path&)>& keep);

  private:
    std::filesystem::path root_;
};

// Writes all of `data` at `offset`, retrying short writes; throws StoreError (no_space on ENOSPC).
void pwrite_all(int fd, const void* data, std::size_t size, std::uint64_t offset,
                const std::string& what);
void fsync_or_throw(int fd, const std::string& what);
void fsync_dir(const std::filesystem::path& dir);

}  // namespace modelfs
