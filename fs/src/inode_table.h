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

class InodeTable {
  public:
    void remember(std::uint64_t ino, const Entry& e) {
        std::lock_guard lk(mu_);
        Entry& slot = map_[ino];
        slot = e;
        slot.ino = ino;
        slot.st.st_ino = static_cast<ino_t>(ino);
    }
    std::optional<Entry> get(std::uint64_t ino) const {
        std::lock_guard lk(mu_);
        auto it = map_.find(ino);
        if (it == map_.end()) return std::nullopt;
        return it->second;
    }
    // After a rename: everything at `from` or below it is now at `to`.
    void rename_prefix(const std::string& from, const std::string& to) {
        std::lock_guard lk(mu_);
        for (auto& [ino, e] : map_) {
            if (e.path == from)
                e.path = to;
            else if (e.path.size() > from.size() && e.path.starts_with(from) &&
                     e.path[from.size()] == '/')
                e.path = to + e.path.substr(from.size());
        }
    }
    // Entries whose path is `path` (the kernel may know one path by several numbers).
    template <typename F>
    void for_path(const std::string& path, F&& fn) {
        std::lock_guard lk(mu_);
        for (auto& [ino, e] : map_)
            if (e.path == path) fn(ino, e);
    }

  private:
    mutable std::mutex mu_;
    std::unordered_map<std::uint64_t, Entry> map_;
};

}  // namespace modelfs::fs
