#include "invalidator.h"

#include <algorithm>

#include <spdlog/spdlog.h>

namespace modelfs::fs {

Invalidator::Invalidator(fuse_session* se, Snapshot snapshot, BeforeEntry before_entry,
                         int period_ms)
    : se_(se),
      snapshot_(std::move(snapshot)),
      before_entry_(std::move(before_entry)),
      period_ms_(period_ms) {}

void Invalidator::inval_entry(std::uint64_t parent, const std::string& name) {
    if (before_entry_) before_entry_(parent);
    fuse_lowlevel_notify_inval_entry(se_, parent, name.data(), name.size());
}

void Invalidator::start() {
    thread_ = std::jthread([this](std::stop_token st) { run(st); });
}

Invalidator::~Invalidator() {
    thread_.request_stop();
    cv_.notify_all();
}

void Invalidator::stop() {
    thread_.request_stop();
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
    {
        std::lock_guard lk(mu_);
        stopped_ = true;
    }
    delivered_cv_.notify_all();
}

void Invalidator::wait_delivered(std::chrono::milliseconds timeout) {
    std::unique_lock lk(mu_);
    const std::uint64_t target = queued_;
    if (delivered_ >= target) return;
    if (!delivered_cv_.wait_for(lk, timeout, [&] { return delivered_ >= target || stopped_; }))
        spdlog::debug("cache invalidation still pending after {} ms", timeout.count());
}

void Invalidator::forget_entry(std::uint64_t parent, std::string name) {
    {
        std::lock_guard lk(mu_);
        entries_.emplace_back(parent, std::move(name));
        ++queued_;
    }
    cv_.notify_all();
}

void Invalidator::tree_changed(std::shared_ptr<const ViewTree> before,
                               std::shared_ptr<const ViewTree> after,
                               std::vector<std::uint64_t> known) {
    {
        std::lock_guard lk(mu_);
        changes_.push_back({std::move(before), std::move(after), std::move(known)});
    }
    cv_.notify_all();
}

void Invalidator::forget_inode(std::uint64_t ino) {
    forget_entry(ino, "");
}

void Invalidator::forget_pages(std::uint64_t ino) {
    {
        std::lock_guard lk(mu_);
        pages_.push_back(ino);
    }
    cv_.notify_all();
}

void Invalidator::run(std::stop_token stop) {
    while (!stop.stop_requested()) {
        snapshot_();  // a rebuild, if any, lands in changes_
        std::deque<std::pair<std::uint64_t, std::string>> todo;
        std::deque<std::uint64_t> pages;
        decltype(changes_) changes;
        std::uint64_t batch_end = 0;
        {
            std::unique_lock lk(mu_);
            cv_.wait_for(lk, stop, std::chrono::milliseconds(period_ms_),
                         [&] { return !entries_.empty() || !changes_.empty() || !pages_.empty(); });
            todo.swap(entries_);
            pages.swap(pages_);
            changes.swap(changes_);
            batch_end = queued_;
        }
        if (stop.stop_requested()) break;
        try {
            // Errors (ENOENT: the kernel had not cached it) are the normal case and ignored.
            for (const auto& [ino, name] : todo) {
                if (name.empty())
                    fuse_lowlevel_notify_inval_inode(se_, ino, -1, 0);
                else
                    inval_entry(ino, name);
            }
            {
                std::lock_guard lk(mu_);
                delivered_ = batch_end;
            }
            delivered_cv_.notify_all();
            for (std::uint64_t ino : pages) fuse_lowlevel_notify_inval_inode(se_, ino, 0, 0);
            for (const auto& c : changes) diff(*c.before, *c.after, c.known);
        } catch (const std::exception& e) {
            spdlog::error("cache invalidation: {}", e.what());
        }
    }
}

void Invalidator::diff(const ViewTree& before, const ViewTree& after,
                       const std::vector<std::uint64_t>& known) {
    std::size_t entries = 0, inodes = 0;
    before.for_each([&](const Node& n) {
        if (n.ino == ViewTree::kRootIno) return;
        const Node* now = after.find_path(n.path);
        if (!now || now->ino != n.ino) {
            // Gone, or other content (a new inode): the name must be looked up again.
            if (std::find(known.begin(), known.end(), n.parent) == known.end()) {
                inval_entry(n.parent, n.name);
                ++entries;
            }
        } else if (n.kind == Node::Kind::dir &&
                   (now->mtime_ns != n.mtime_ns || now->children != n.children)) {
            // A folder whose listing or mtime changed: drop its attributes and its cached
            // listing (offset 0: the "pages" of a folder are its cached readdir).
            fuse_lowlevel_notify_inval_inode(se_, n.ino, 0, 0);
            ++inodes;
        } else if (now->mtime_ns != n.mtime_ns || now->mode != n.mode) {
            // A file with the same content and new attributes (chmod, touch): attributes only
            // (offset -1), its cached pages stay.
            fuse_lowlevel_notify_inval_inode(se_, n.ino, -1, 0);
            ++inodes;
        }
    });
    if (const Node* r = after.find(ViewTree::kRootIno);
        r && before.find(ViewTree::kRootIno) &&
        r->mtime_ns != before.find(ViewTree::kRootIno)->mtime_ns)
        fuse_lowlevel_notify_inval_inode(se_, ViewTree::kRootIno, 0, 0);
    spdlog::debug("catalog changed: {} names and {} inodes invalidated", entries, inodes);
}

}  // namespace modelfs::fs
