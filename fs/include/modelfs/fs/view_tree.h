// The catalog's part of a mount's file tree: an immutable snapshot built from the catalog and the
// view layouts (files a tool wrote that are not models live in the views' overlay folders, which
// the daemon merges in). Inode numbers come from the path and the content, sizes and mtimes from
// the catalog, so they are the same on every mount of the same catalog: tools that cache
// listings by mtime are not fooled, and a new version of a model is a new inode, so the kernel
// never mixes cached pages of two versions.
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
    std::string path;  // from the mount's root, '/'-separated, no leading '/'; "" for the root
    int view = -1;     // index of the view it is in; -1 for the root and by-hash/
    std::int64_t mtime_ns = 0;
    std::uint32_t mode = 0755;  // permission bits
    // Directories: entries by name (sorted, so readdir offsets are stable).
    std::map<std::string, std::uint64_t> children;
    // Files: the content and what it is. Directories of a layout folder have `category` too.
    Sha256 blob;
    std::uint64_t size = 0;
    std::string model_key;  // "category/name"; empty for by-hash entries
    std::string version;
    std::string sidecar;  // the suffix (".preview.png") when the file is a model's sidecar
    std::optional<Category> category;

    bool is_model_file() const {
        return kind == Kind::file && !model_key.empty() && sidecar.empty();
    }
};

// Mount paths are '/'-separated, relative to the mount's root, without a leading '/'.
std::string join_path(std::string_view dir, std::string_view name);
std::string parent_of(std::string_view path);
std::string leaf_of(std::string_view path);

// Sidecar suffixes, longest first: files named <model name><suffix> beside a model follow it.
const std::vector<std::string>& sidecar_suffixes();

class ViewTree {
  public:
    static constexpr std::uint64_t kRootIno = 1;

    // Root mode: one top-level folder per view plus by-hash/sha256/<hex>. Single-view mode (one
    // view, !root_mode): that view's folders at the root.
    static ViewTree build(const Txn& txn, const std::vector<ViewLayout>& views, bool root_mode,
                          std::int64_t empty_dir_mtime_ns);

    const Node* find(std::uint64_t ino) const;
    const Node* find_path(std::string_view path) const;
    const Node* child(std::uint64_t parent, std::string_view name) const;
    std::size_t size() const { return nodes_.size(); }
    template <typename F>
    void for_each(F&& fn) const {
        for (const auto& [ino, n] : nodes_) fn(n);
    }

    static std::uint64_t dir_ino(std::string_view path);
    static std::uint64_t file_ino(std::string_view path, const Sha256& blob);

  private:
    std::uint64_t add(std::uint64_t parent, const std::string& name, Node::Kind kind,
                      const std::string& path, std::uint64_t ino);
    std::uint64_t ensure_dirs(std::uint64_t parent, std::string_view rel);

    std::unordered_map<std::uint64_t, Node> nodes_;
    std::unordered_map<std::string, std::uint64_t> by_path_;
};

}  // namespace modelfs::fs
