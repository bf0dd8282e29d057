// How file contents reach the kernel. Two ways, chosen per open:
//
//   passthrough  (libfuse >= 3.17, a kernel that offers it, a daemon with CAP_SYS_ADMIN) the open
//                is answered with a backing id for the file's descriptor, and the kernel reads
//                the backing file itself: native speed, and its pages are the blob's own (one page
//                cache, not one for the blob and one for the mount). The daemon never sees a read.
//   splice       the daemon answers every read with the file's descriptor and libfuse splices
//                the pages to the kernel without copying them; the kernel keeps its own page
//                cache of the mount's file beside the blob's.
//
// The kernel puts a rule on mixing them (fs/fuse/iomode.c in Linux): while an inode has a file
// open in passthrough, every other open of it must be passthrough to the same backing file, and
// an inode with a file open through the page cache cannot be passed through. So this class keeps,
// per kernel inode, which way its open files go, and every open and close of a file goes through
// it: reads (open), the daemon's own handles (writers, files still downloading:
// hold_daemon_io), and their releases.
//
// Only reads of blobs are passed through. A write passed through would go to the backing file
// with the daemon's credentials (the kernel opens the backing file with the opener's flags), so
// the daemon could not clear set-id bits on write (ops.cpp, drop_set_id), and a writer joining a
// blob's backing file would write into the blob. Overlay files may be written while read, so
// they stay with the daemon. A writer of a stored model whose inode readers pass through gets its
// copy under another inode (ops.cpp, op_open: copy-up, then ESTALE, and the kernel retries).
#pragma once

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>
#include <sys/stat.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "modelfs/store/unique_fd.h"

namespace modelfs::fs {

// What a mount asks for (MountOptions::read_backend): passthrough where it can (auto), or the
// splice backend always (splice; also MODELFS_READ_BACKEND=splice).
enum class ReadBackendChoice { automatic, splice };

class ReadBackend {
  public:
    explicit ReadBackend(ReadBackendChoice choice) : choice_(choice) {}
    ReadBackend(const ReadBackend&) = delete;
    ReadBackend& operator=(const ReadBackend&) = delete;

    // At FUSE init: asks the kernel for passthrough when the build, the kernel, the daemon's
    // capabilities and the choice allow it, and says once in the log which way reads go.
    void init(fuse_conn_info* conn);
    // "passthrough" or "splice": how reads of stored models are served (getfattr
    // user.modelfs.backend, `modelfs status`).
    std::string_view name() const { return passthrough_ ? "passthrough" : "splice"; }
    // Why passthrough is off ("" when on): a line for the log and `modelfs status`.
    std::string why_not() const;

    // Replies to an open for reading of kernel inode `ino`, whose bytes are `fd` (owned from now
    // on; fi->fh is its number until release()). `immutable`: a blob, whose bytes never change,
    // so a spliced file keeps its page cache across opens. `path` is for the log. Returns false
    // when the open failed (answered with an error, or the opener was interrupted; `fd` is
    // closed): nothing of it is kept. `may_pass_through` false: the daemon serves the reads
    // (a composed file, whose `fd` only numbers the handle).
    bool open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi, UniqueFd fd, bool immutable,
              const std::string& path, bool may_pass_through = true);
    // A handle the daemon serves itself is about to be made for `ino`: a file opened for
    // writing, or one still downloading. Taken before anything changes, it keeps readers from
    // passing `ino` through meanwhile. Returns a hold (never 0), which bind() gives the handle's
    // number once there is one, and release() ends; 0 when readers pass `ino` through now: the
    // kernel would refuse the open, so the caller gives the writer another inode, or answers
    // refuse_writer()'s ETXTBSY where it cannot.
    std::uint64_t hold_daemon_io(fuse_ino_t ino);
    void bind(std::uint64_t hold, std::uint64_t fh);
    // ETXTBSY, for a writer of `path` that hold_daemon_io refused and that cannot be given another
    // inode; logged once per path.
    int refuse_writer(const std::string& path);

    // A read on a handle the daemon serves (a passthrough handle never gets one).
    void read(fuse_req_t req, fuse_file_info* fi, size_t size, off_t off);
    // The kernel closed handle `fh`: forgets it. `close_fd`: a read handle, whose descriptor is
    // closed here. `req` may be null (an open whose reply failed): a backing id no open uses any
    // more is then closed at the next request.
    void release(fuse_req_t req, std::uint64_t fh, bool close_fd);

  private:
    // A backing file registered with the kernel for one inode, shared by its passthrough opens.
    struct Backing {
        int id = 0;
        dev_t dev = 0;
        ino_t real = 0;  // the backing file's identity: a second open must be the same file
        int opens = 0;
    };
    struct InodeIo {
        int daemon_opens = 0;  // handles the daemon serves (page cache or direct_io)
        Backing backing;       // opens == 0: none
    };
    struct Handle {
        fuse_ino_t ino = 0;
        bool passthrough = false;
    };
    void close_unused(fuse_req_t req);  // under mu_
    void reply_spliced(fuse_file_info* fi, int fd, bool immutable);

    const ReadBackendChoice choice_;
    std::atomic<bool> passthrough_ = false;
    std::string why_not_;  // set once, at init

    mutable std::mutex mu_;
    std::unordered_map<fuse_ino_t, InodeIo> inodes_;
    std::unordered_map<std::uint64_t, Handle> handles_;  // by fh, or by hold before bind()
    std::uint64_t next_hold_ = 1ull << 63;               // above every descriptor number
    std::vector<int> to_close_;      // backing ids no open uses, closed at the next request
    std::set<std::string> refused_;  // paths a writer was refused for, logged once each
    bool failed_logged_ = false;     // a failed registration, logged once
};

// MODELFS_READ_BACKEND (auto, splice) over what the mount asked for. Throws StoreError
// (bad_input) for another value.
ReadBackendChoice read_backend_choice(std::string_view asked);

}  // namespace modelfs::fs
