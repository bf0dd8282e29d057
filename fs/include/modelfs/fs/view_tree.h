// The file tree a mount shows: an immutable snapshot built from the catalog and the view layouts.
// Inode numbers come from the path, sizes and mtimes from the catalog, so they are the same on
// every mount of the same catalog (tools that cache listings by mtime are not fooled).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "modelfs/fs/view_layout.h"
#include "modelfs/store/catalog.h"

namespace modelfs::fs {

struct Node {
    enum class Kind { dir, file } kind = Kind::dir;
    std::uint64_t ino = 0;
    std::uint64_t parent = 0;
    std::string name;
    std::int64_t mtime = 0;
    // Directories: entries by name (sorted, so readdir offsets are stable).
    std::map<std::string, std::uint64_t> children;
    // Files: the content and what it is.
    Sha256 blob;
    std::uint64_t size = 0;
    std::string model_key;  // empty for by-hash entries
    std::string version;
    std::optional<Category> category;
};

class ViewTree {
  public:
    static constexpr std::uint64_t kRootIno = 1;

    // Root mode (`views` has several entries or `root_mode`): one top-level folder per view plus
    // by-hash/sha256/<hex>. Single-view mode: the one view's folders at the root.
    static ViewTree build(const Txn& txn, const std::vector<ViewLayout>& views, bool root_mode,
                          std::int64_t empty_dir_mtime);

    const Node* find(std::uint64_t ino) const;
    const Node* child(std::uint64_t parent, std::string_view name) const;
    std::size_t size() const { return nodes_.size(); }

  private:
    std::uint64_t add(std::uint64_t parent, const std::string& name, Node::Kind kind,
                      const std::string& path);
    std::uint64_t ensure_dirs(std::uint64_t parent, const std::string& parent_path,
                              std::string_view rel);

    std::unordered_map<std::uint64_t, Node> nodes_;
};

}  // namespace modelfs::fs
