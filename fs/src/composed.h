// Composed blobs (tensor-level dedup, store/tensor_split.h) read through a mount. Such a file has
// no blob file of its own until it is materialised: the daemon answers each read with the ranges
// of the blobs its extents name, as a vector of file ranges that libfuse splices to the kernel
// (no copy through the daemon's memory). The kernel keeps the pages (keep_cache: the content never
// changes), so a warm read does not reach the daemon at all.
//
// A file opened often is worth a whole copy, which reads pass through like any blob: from the
// kMaterialiseAfterOpens-th open on, the daemon has the store materialise it in the background,
// within the store's materialise budget (Store::materialise evicts least recently used copies).
#pragma once

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "modelfs/store/catalog.h"
#include "modelfs/store/unique_fd.h"
#include "namespace.h"
#include "work_queue.h"

namespace modelfs::fs {

struct Daemon;

inline constexpr int kMaterialiseAfterOpens = 2;

class ComposedFiles {
  public:
    explicit ComposedFiles(Daemon& dm);
    ComposedFiles(const ComposedFiles&) = delete;
    ComposedFiles& operator=(const ComposedFiles&) = delete;

    // Opens `e` (kernel inode `ino`) for reading when its blob is composed and has no file.
    // False: it is not composed (the caller goes on as for any missing blob). True: the request
    // is answered (an error when a blob it is made of cannot be opened).
    bool open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi, const Entry& e);
    bool is_composed(std::uint64_t fh);  // cheap while none is open
    void read(fuse_req_t req, fuse_file_info* fi, size_t size, off_t off);
    void release(std::uint64_t fh);  // the handle's own descriptor is the read backend's

  private:
    struct Handle {
        std::vector<Extent> extents;
        std::vector<std::uint64_t> starts;  // each extent's offset in the file
        std::vector<int> fds;               // each extent's blob, open
        std::map<Sha256, UniqueFd> files;   // the descriptors, one per blob (flock LOCK_SH)
        std::uint64_t size = 0;
    };
    Daemon& dm_;
    std::mutex mu_;
    std::unordered_map<std::uint64_t, std::shared_ptr<const Handle>> handles_;
    std::atomic<std::size_t> count_{0};
    std::map<Sha256, int> opens_;  // opens per composed blob in this daemon's life
    std::unique_ptr<WorkQueue> materialiser_;
};

}  // namespace modelfs::fs
