// What a mount has open: files open for writing (and the edit lock that keeps them and the
// overlay in step), overlay files open by descriptor, files open for reading, and open folders.
// The request threads (ops.cpp), the ingester and the remote reader ask and tell it through the
// calls below; none of them touches its maps or its locks.
//
// Lock order (a lock may be taken while the ones before it are held, never the other way):
//   1. the edit lock (edit()): held across an overlay change; Daemon's own locks (the tree, the
//      views, ingesting) and InodeTable's are taken under it;
//   2. the overlay-descriptor lock (track_overlay, with_overlay_fd): held while `f` runs, which
//      must take no lock of this table;
//   3. the read and folder locks: leaves, nothing is locked while they are held.
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "namespace.h"

namespace modelfs::fs {

// A listing taken at the first readdir of an open folder, so that offsets stay valid however the
// folder changes meanwhile. Not at opendir: the kernel caches listings (cache_readdir) and then
// opens the folder without reading it.
struct DirHandle {
    std::string path;
    bool listed = false;
    std::vector<std::pair<std::string, Entry>> entries;
};

// A file open for reading: what it was at open, so that an open file keeps answering getattr
// (the kernel asks before reads) after its name moved on to other content.
struct OpenRead {
    struct stat st {};
    bool overlay = false;  // an overlay file: its size may still change
};

class OpenFiles {
  public:
    // The edit lock, held for the life of this object (or until unlock()). Overlay changes,
    // writer counts and the last step of an ingest happen under it, so an ingest never takes a
    // file that a writer has just opened. Calls that need it take it as their first argument.
    class Edit {
      public:
        void unlock() { lk_.unlock(); }

      private:
        friend class OpenFiles;
        explicit Edit(std::mutex& mu) : lk_(mu) {}
        std::unique_lock<std::mutex> lk_;
    };
    Edit edit() { return Edit(edit_mu_); }

    // --- files open for writing (overlay files), by descriptor; under the edit lock ----------
    void add_writer(const Edit&, int fd, std::uint64_t ino, ino_t real_ino) {
        ++writers_[real_ino];
        open_writes_[fd] = OpenWrite{ino, real_ino};
    }
    bool is_writer(const Edit&, int fd) const { return open_writes_.count(fd) > 0; }
    // Is the file (by real inode) open for writing through this mount?
    bool being_written(const Edit&, ino_t real_ino) const { return writers_.count(real_ino) > 0; }
    struct ClosedWriter {
        std::uint64_t ino = 0;  // the kernel's inode number it was opened as
        bool last = false;      // no descriptor of this mount writes the file any more
        std::string error;      // when last: why a write to it failed (note_write_error), or ""
    };
    // `fd` is closed; std::nullopt when it was no writer.
    std::optional<ClosedWriter> remove_writer(const Edit&, int fd) {
        auto it = open_writes_.find(fd);
        if (it == open_writes_.end()) return std::nullopt;
        ClosedWriter closed{it->second.ino, false, {}};
        const ino_t real = it->second.real_ino;
        open_writes_.erase(it);
        if (--writers_[real] == 0) {
            writers_.erase(real);
            closed.last = true;
            if (auto err = write_errors_.find(real); err != write_errors_.end()) {
                closed.error = std::move(err->second);
                write_errors_.erase(err);
            }
        }
        return closed;
    }
    // Takes the edit lock itself.
    bool is_writer(int fd) {
        Edit e = edit();
        return is_writer(e, fd);
    }
    // A write through `fd` failed: the file is not what its writer meant, so it stays a plain file
    // when closed (overlay_writes::end). The first reason is kept until its last writer closes.
    // Takes the edit lock itself.
    void note_write_error(int fd, const std::string& why) {
        Edit e = edit();
        auto it = open_writes_.find(fd);
        if (it == open_writes_.end()) return;
        std::string& slot = write_errors_[it->second.real_ino];
        if (slot.empty()) slot = why;
    }

    // --- overlay files open through the mount, for reading or writing, by descriptor ---------
    // An open file stays reachable after its name is gone (unlinked, renamed by another process):
    // fstat, ftruncate and fchmod go to the descriptor.
    void track_overlay(int fd, std::uint64_t ino, bool writer) {
        std::lock_guard lk(overlay_fds_mu_);
        open_overlay_[fd] = OpenOverlay{ino, writer};
    }
    // Waits for a request that is using the descriptor (with_overlay_fd).
    void untrack_overlay(int fd) {
        std::lock_guard lk(overlay_fds_mu_);
        open_overlay_.erase(fd);
    }
    // Runs `f(fd)` on an open descriptor of kernel inode `ino` (a writer when `writer`, else
    // writers first: theirs is the newest size) and returns what it returned; std::nullopt when
    // none is open. The descriptor stays open until `f` returns.
    std::optional<int> with_overlay_fd(std::uint64_t ino, bool writer,
                                       const std::function<int(int)>& f) {
        std::lock_guard lk(overlay_fds_mu_);
        int found = -1;
        for (const auto& [fd, o] : open_overlay_) {
            if (o.ino != ino || (writer && !o.writer)) continue;
            found = fd;
            if (o.writer) break;
        }
        if (found < 0) return std::nullopt;
        return f(found);
    }
    // fstat of an open descriptor of kernel inode `ino`; false when none is open.
    bool stat_overlay(std::uint64_t ino, struct stat* st) {
        return with_overlay_fd(ino, false, [&](int fd) { return ::fstat(fd, st); }) == 0;
    }

    // --- files open for reading, by descriptor --------------------------------------------------
    void add_read(int fd, const struct stat& st, bool overlay) {
        std::lock_guard lk(reads_mu_);
        open_reads_[fd] = OpenRead{st, overlay};
    }
    std::optional<OpenRead> read_of(int fd) const {
        std::lock_guard lk(reads_mu_);
        auto it = open_reads_.find(fd);
        if (it == open_reads_.end()) return std::nullopt;
        return it->second;
    }
    void remove_read(int fd) {
        std::lock_guard lk(reads_mu_);
        open_reads_.erase(fd);
    }

    // --- open folders, by the handle given to the kernel -------------------------------------
    std::uint64_t add_dir(std::unique_ptr<DirHandle> h) {
        std::lock_guard lk(dirs_mu_);
        const std::uint64_t fh = next_dir_++;
        dirs_.emplace(fh, std::move(h));
        return fh;
    }
    // Valid until remove_dir(fh): the kernel sends no releasedir while a readdir of the handle
    // is under way, and one readdir at a time (it holds the folder's lock).
    DirHandle* dir(std::uint64_t fh) const {
        std::lock_guard lk(dirs_mu_);
        auto it = dirs_.find(fh);
        return it == dirs_.end() ? nullptr : it->second.get();
    }
    void remove_dir(std::uint64_t fh) {
        std::lock_guard lk(dirs_mu_);
        dirs_.erase(fh);
    }

  private:
    struct OpenWrite {
        std::uint64_t ino = 0;  // the kernel's inode number for it
        ino_t real_ino = 0;
    };
    struct OpenOverlay {
        std::uint64_t ino = 0;  // the kernel's inode number for it
        bool writer = false;
    };

    std::mutex edit_mu_;
    std::map<ino_t, int> writers_;                    // descriptors open for writing, by real inode
    std::unordered_map<int, OpenWrite> open_writes_;  // by fd
    // Why a write to an overlay file failed since its first writer opened it. By real inode.
    std::map<ino_t, std::string> write_errors_;

    std::mutex overlay_fds_mu_;
    std::unordered_map<int, OpenOverlay> open_overlay_;

    mutable std::mutex reads_mu_;
    std::unordered_map<int, OpenRead> open_reads_;

    mutable std::mutex dirs_mu_;
    std::unordered_map<std::uint64_t, std::unique_ptr<DirHandle>> dirs_;
    std::uint64_t next_dir_ = 1;
};

}  // namespace modelfs::fs
