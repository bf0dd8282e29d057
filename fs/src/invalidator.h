// Keeps the kernel's caches true to the catalog. Entries and attributes of catalogued files are
// cached by the kernel for a long time (that is what makes metadata fast); when the catalog
// changes (the CLI imports, gc runs, a mount ingests a file) this thread rebuilds the snapshot,
// compares it with the previous one and tells the kernel which names and inodes to forget.
//
// It runs on its own thread, never on a request thread: a notification can wait on a directory
// lock held by a request that waits for a free worker (the deadlock libfuse's docs warn about).
#pragma once

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "modelfs/fs/view_tree.h"

namespace modelfs::fs {

class Invalidator {
  public:
    using Snapshot = std::function<std::shared_ptr<const ViewTree>()>;
    // Called before a name in folder `parent` is dropped (BusyDirs::wait_idle).
    using BeforeEntry = std::function<void(std::uint64_t parent)>;
    // Checks for catalog changes every `period_ms` by calling `snapshot`, which is expected to
    // report any rebuild through tree_changed().
    Invalidator(fuse_session* se, Snapshot snapshot, BeforeEntry before_entry = {},
                int period_ms = 200);
    ~Invalidator();  // stops and joins
    void start();    // separate from construction: `snapshot` may reach this object
    void stop();     // joins the thread; nothing is invalidated after it
    Invalidator(const Invalidator&) = delete;
    Invalidator& operator=(const Invalidator&) = delete;

    // The catalog snapshot request threads serve from went from `before` to `after`: whatever
    // the kernel may have cached from `before` and `after` lacks is dropped. Every successive
    // pair must come here (a name that lived only in an intermediate snapshot may be cached).
    // Names in the folders `known` are left alone: a request of this mount changed them, so the
    // kernel knows (it updated its own cache when we answered), and it holds those folders' locks
    // until then: a notification there would wait for it, and a daemon killed in that moment
    // could not exit (BusyDirs).
    void tree_changed(std::shared_ptr<const ViewTree> before, std::shared_ptr<const ViewTree> after,
                      std::vector<std::uint64_t> known = {});

    // Asks for a name to be dropped from the kernel's cache soon (after a copy-up, say).
    void forget_entry(std::uint64_t parent, std::string name);
    void forget_inode(std::uint64_t ino);
    // Drops an inode's cached pages as well (bytes served before a download failed its check).
    void forget_pages(std::uint64_t ino);
    // Waits (at most `timeout`) until every name and inode asked to be forgotten so far has been
    // told to the kernel. A writer's close waits for this, so that once close() returns, opening
    // the name finds the copy it wrote, not the stored version the kernel still had cached.
    // Must not be called from the invalidator's own thread.
    void wait_delivered(std::chrono::milliseconds timeout);

  private:
    void run(std::stop_token stop);
    void diff(const ViewTree& before, const ViewTree& after,
              const std::vector<std::uint64_t>& known);
    void inval_entry(std::uint64_t parent, const std::string& name);

    fuse_session* se_;
    Snapshot snapshot_;
    BeforeEntry before_entry_;
    int period_ms_;
    std::mutex mu_;
    std::condition_variable_any cv_;
    std::deque<std::pair<std::uint64_t, std::string>> entries_;  // parent, name ("" = inode)
    std::uint64_t queued_ = 0;                                   // entries ever queued
    std::uint64_t delivered_ = 0;                                // of those, told to the kernel
    bool stopped_ = false;
    std::condition_variable_any delivered_cv_;
    std::deque<std::uint64_t> pages_;
    struct Change {
        std::shared_ptr<const ViewTree> before, after;
        std::vector<std::uint64_t> known;
    };
    std::deque<Change> changes_;
    std::jthread thread_;
};

}  // namespace modelfs::fs
