// The state of one mount, shared by the request threads (ops.cpp), the ingester and the
// invalidator.
#pragma once

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>

#include "access_log.h"
#include "busy_dirs.h"
#include "composed.h"
#include "inode_table.h"
#include "invalidator.h"
#include "modelfs/fs/mount.h"
#include "modelfs/store/store.h"
#include "namespace.h"
#include "open_files.h"
#include "read_backend.h"
#include "remote.h"
#include "work_queue.h"

namespace modelfs::fs {

// Kernel cache lifetimes. Catalogued entries can be cached long: the Invalidator tells the
// kernel when they change. Overlay entries (plain files, files being written) change by other
// means too (a second mount of the same store), so they are cached briefly.
inline constexpr double kCatalogTimeout = 3600.0;
inline constexpr double kOverlayTimeout = 1.0;

struct Daemon {
    Daemon(MountOptions o, std::vector<layouts::ViewLayout> views)
        : opts(std::move(o)),
          ns_(std::make_shared<const Namespace>(opts.store, std::move(views), opts.view.empty())) {}

    MountOptions opts;
    // The views served now. A SIGHUP may replace them while requests run, so each request takes
    // the current one once and keeps it to the end.
    std::shared_ptr<const Namespace> names() const {
        std::lock_guard lk(ns_mu_);
        return ns_;
    }
    // Serves `views` from now on (a SIGHUP reload): the tree is rebuilt and the kernel told to
    // forget what moved. Returns a line for the log saying what changed ("" when nothing did).
    std::string set_views(std::vector<layouts::ViewLayout> views);
    std::int64_t empty_dir_mtime_ns = 0;
    std::unique_ptr<Store> store;  // opened after daemonizing (LMDB must not cross fork())
    fuse_session* se = nullptr;

    InodeTable inodes;
    BusyDirs busy;  // folders requests are working in (the invalidator waits for a gap)
    // How reads reach the kernel (passthrough or splice), and which way each inode's open
    // files go.
    std::unique_ptr<ReadBackend> reader =
        std::make_unique<ReadBackend>(read_backend_choice(opts.read_backend));

    // What is open through the mount, and the edit lock (open_files.h).
    OpenFiles files;
    std::unique_ptr<Invalidator> invalidator;  // started with the session loop
    std::unique_ptr<WorkQueue> ingester;       // likewise
    std::unique_ptr<AccessLog> access;         // likewise
    std::unique_ptr<RemoteFiles> remote;       // likewise (its fetcher starts on first use)
    std::unique_ptr<ComposedFiles> composed;   // likewise

    // Opens a stored blob for reading, with a shared flock held while it is open: the cache
    // quota never evicts a blob some process has open. Invalid (errno set) when missing.
    UniqueFd open_blob(const Sha256& blob);
    // Answers an open for reading of kernel inode `ino` with `fd` (the bytes of `e`, owned from
    // now on); e.st is what getattr on the handle answers once the name means something else.
    void reply_read_open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi, UniqueFd fd,
                         const Entry& e, bool overlay);

    // The catalog snapshot, rebuilt when any process has committed since.
    // `known`: folders a request of this mount changed just now (Invalidator::tree_changed).
    std::shared_ptr<const ViewTree> snapshot(std::vector<std::uint64_t> known = {});
    Entry resolve(const std::string& path);
    // What inode `ino` is now: its object at its (possibly renamed) path, or, when that path
    // holds something else now, the catalogued version it was (still readable). nullopt: gone.
    std::optional<Entry> current(std::uint64_t ino);

    // Files closed after writing go here; models and sidecars among them go into the store.
    void ingest(const std::string& path);
    // Queues every file under `real` (an overlay folder or file at mount path `path`).
    void queue_ingest_tree(const std::string& path);
    // Makes the catalogued file `e` an overlay file (copy-on-write), keeping `keep` bytes of it.
    // With `replace`, `e` is an overlay file that gets replaced by a copy of itself (to break a
    // hard link). Returns the overlay file's real path and has the kernel look the name up
    // again. Caller holds the edit lock (files.edit()).
    std::filesystem::path copy_up(const Entry& e, std::uint64_t keep, bool replace = false);
    // Removes the catalogued file `e` (a model with all its versions, or one sidecar). The
    // model's blobs stay until gc.
    void remove_from_catalog(const Entry& e, std::vector<std::uint64_t> known = {});
    // Creates the overlay folders down to `path`'s parent. Caller holds the edit lock
    // (files.edit()).
    void make_overlay_parents(const std::string& path);

  private:
    // Overlay files an ingest is linking into the store right now, by real inode, with the mode
    // they had: the store makes the inode 0444 and gives it a second name a moment before the
    // name in the view is the stored model, and nobody should see that moment.
    std::mutex ingesting_mu_;
    std::map<ino_t, mode_t> ingesting_;
    // Written files this mount stored lately, by Entry::overlay_id: their content. Inode numbers
    // the kernel has for them stand for the stored model (current()).
    std::map<std::uint64_t, Sha256> stored_from_;
    friend struct IngestingMark;

    mutable std::mutex ns_mu_;
    std::shared_ptr<const Namespace> ns_;
    std::mutex tree_mu_;
    std::shared_ptr<const ViewTree> tree_;
    std::shared_ptr<const Namespace> tree_ns_;  // the views tree_ was built for
    std::uint64_t tree_txn_ = ~0ull;
    std::set<std::string> missing_logged_;  // locked versions not in the store, told once
};

extern const fuse_lowlevel_ops kOps;

}  // namespace modelfs::fs
