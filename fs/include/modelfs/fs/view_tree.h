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

#include "modelfs/layouts/view_layout.h"
#include "modelfs/store/catalog.h"
#include "modelfs/store/lock_file.h"

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
    // A version alias (NAME@LABEL.EXT, NAME@LABEL/...) or anything under a `.versions/` folder:
    // made on demand by ViewTree::virtual_node, never stored in the tree, never written to.
    bool read_only = false;

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
    // view, !root_mode): that view's folders at the root. NAME.EXT is the version the view shows
    // (Model::shown_in: its pin, else the current one); with a `lock`, only the lock's models, at
    // the locked versions (a locked version the catalog lacks is left out: missing_locked()).
    static ViewTree build(const Txn& txn, const std::vector<layouts::ViewLayout>& views,
                          bool root_mode, std::int64_t empty_dir_mtime_ns,
                          const LockFile* lock = nullptr);

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

    // Version aliases, resolved on demand from the catalog copy the tree keeps (storing them as
    // nodes would triple the tree for a catalog with a few versions per model):
    //   <primary folder>/NAME@LABEL.EXT    a single-file version (LABEL may be a unique
    //                                      content-id prefix, see find_version)
    //   <primary folder>/NAME@LABEL.SUFFIX a sidecar of that version (".preview.png")
    //   <primary folder>/NAME@LABEL/...    a multi-file version
    //   <primary folder>/.versions/NAME/LABEL.EXT, LABEL/...   every version, for browsing
    // Only versions the view can show (ViewLayout::path_for) have aliases. std::nullopt when
    // `path` is none of these; callers look in the tree first.
    std::optional<Node> virtual_node(std::string_view path) const;
    // What a folder lists besides its tree children: everything in a virtual folder, and the
    // aliases of the models in a real folder of a view with show_versions(). `.versions` itself
    // is never listed.
    std::vector<Node> virtual_children(std::string_view path) const;
    // "category/name@label" of each locked version the catalog does not have.
    const std::vector<std::string>& missing_locked() const { return missing_locked_; }

  private:
    struct Place;  // where a path falls, for aliases (view_tree.cpp)
    struct Hit;    // what a virtual path is
    std::optional<Place> place_of(std::string_view path) const;
    std::optional<Hit> hit_of(std::string_view path) const;
    Node node_of(const Hit& hit, std::string_view path) const;
    const Model* model(Category c, std::string_view name) const;
    bool has_names_below(Category c, std::string_view prefix) const;
    // The models named `stem` (a tree) or `stem` + an extension: what STEM@LABEL.EXT and
    // `.versions/STEM/` name (model_name.h).
    std::vector<const Model*> models_by_stem(Category c, std::string_view stem) const;

    std::uint64_t add(std::uint64_t parent, const std::string& name, Node::Kind kind,
                      const std::string& path, std::uint64_t ino);
    std::uint64_t ensure_dirs(std::uint64_t parent, std::string_view rel);

    std::unordered_map<std::uint64_t, Node> nodes_;
    std::unordered_map<std::string, std::uint64_t> by_path_;
    // For aliases: the layouts, and every model the views may show, sorted by key.
    std::vector<layouts::ViewLayout> views_;
    bool root_mode_ = false;
    std::vector<Model> models_;
    std::vector<std::string> missing_locked_;
};

}  // namespace modelfs::fs
