// Which object every inode number handed to the kernel stands for. The kernel keeps numbers for
// as long as it likes; a number keeps meaning the object it was given for (an old version of a
// model stays that old version), while paths may change under it (rename).
#pragma once

#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

#include "namespace.h"

namespace modelfs::fs {

// Entries live while the kernel holds references (its lookup count): every reply that gives the
// kernel an inode (lookup, create, mkdir, a readdirplus entry) adds one, FORGET takes them back.
class InodeTable {
  public:
    // The number to give the kernel for `e`: its own, unless the kernel holds that number for
    // another path. A stored file's number comes from its path and content (ViewTree), and a
    // rename leaves the kernel's number on the new name; were the old name to hold that content
    // again, it would get the same number, and the kernel would take one file for the other
    // (writes to one landing in the other).
    std::uint64_t number_for(const Entry& e) const {
        if (e.kind != Entry::Kind::tree_file) return e.ino;
        std::lock_guard lk(mu_);
        std::uint64_t ino = e.ino;
        for (int i = 0; i < 16; ++i) {
            auto it = map_.find(ino);
            if (it == map_.end() || it->second.entry.path == e.path) break;
            ino = ino * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull;
            if (ino <= 1) ino += 2;  // 1 is the root
        }
        return ino;
    }
    // A reply gave the kernel `ino` for `e`.
    void handed_out(std::uint64_t ino, const Entry& e) {
        std::lock_guard lk(mu_);
        Slot& slot = map_[ino];
        slot.entry = e;
        slot.entry.ino = ino;
        slot.entry.st.st_ino = static_cast<ino_t>(ino);
        ++slot.lookups;
    }
    // Updates what a known inode stands for (same object, fresher attributes; or the stored
    // file a written file became). Unknown inodes are left alone.
    void update(std::uint64_t ino, const Entry& e) {
        std::lock_guard lk(mu_);
        auto it = map_.find(ino);
        if (it == map_.end()) return;
        it->second.entry = e;
        it->second.entry.ino = ino;
        it->second.entry.st.st_ino = static_cast<ino_t>(ino);
    }
    // Every inode number that stands for the object `was` stands for `now` from here on (a
    // written file became the stored model).
    void replace_object(const Entry& was, const Entry& now) {
        std::lock_guard lk(mu_);
        for (auto& [ino, slot] : map_) {
            if (!slot.entry.same_object(was)) continue;
            slot.entry = now;
            slot.entry.ino = ino;
            slot.entry.st.st_ino = static_cast<ino_t>(ino);
        }
    }
    void forget(std::uint64_t ino, std::uint64_t n) {
        std::lock_guard lk(mu_);
        auto it = map_.find(ino);
        if (it == map_.end()) return;
        if (it->second.lookups <= n)
            map_.erase(it);
        else
            it->second.lookups -= n;
    }
    std::optional<Entry> get(std::uint64_t ino) const {
        std::lock_guard lk(mu_);
        auto it = map_.find(ino);
        if (it == map_.end()) return std::nullopt;
        return it->second.entry;
    }
    std::size_t size() const {
        std::lock_guard lk(mu_);
        return map_.size();
    }
    // After a rename: everything at `from` or below it is now at `to`.
    void rename_prefix(const std::string& from, const std::string& to) {
        std::lock_guard lk(mu_);
        for (auto& [ino, slot] : map_) {
            Entry& e = slot.entry;
            if (e.path == from)
                e.path = to;
            else if (e.path.size() > from.size() && e.path.starts_with(from) &&
                     e.path[from.size()] == '/')
                e.path = to + e.path.substr(from.size());
        }
    }

  private:
    mutable std::mutex mu_;
    struct Slot {
        Entry entry;
        std::uint64_t lookups = 0;
    };
    std::unordered_map<std::uint64_t, Slot> map_;
};

}  // namespace modelfs::fs
