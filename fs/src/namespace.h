// What a path in the mount is. Two sources, merged:
//   - the catalog snapshot (ViewTree): models and their sidecars, layout folders, by-hash/;
//   - each view's overlay folder, STORE/views/<view>/: real files and folders that tools wrote.
//     A model file written there is moved into the store once closed (the Ingester); what is not
//     a model (configs, caches, partial downloads) stays there as plain per-view storage.
// An overlay file shadows a catalog file of the same path: it is a new version being written.
#pragma once

#include <sys/stat.h>

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "modelfs/fs/view_tree.h"
#include "modelfs/layouts/view_layout.h"
#include "modelfs/store/unique_fd.h"

namespace modelfs::fs {

struct Entry {
    // overlay_file: anything but a folder in the overlay (st_mode says which: regular files, and
    // the symlinks, fifos and sockets tools make).
    enum class Kind { none, dir, tree_file, overlay_file } kind = Kind::none;
    std::string path;  // from the mount root, no leading '/'
    std::uint64_t ino = 0;
    struct stat st {};
    int view = -1;         // the view it is in; -1 for the root and by-hash/
    bool by_hash = false;  // in by-hash/ (read-only)
    // tree_file: what the catalog says.
    Sha256 blob;
    std::string model_key, version, sidecar;
    std::optional<Category> category;
    // A version alias or a `.versions/` entry (ViewTree::virtual_node): never written to.
    bool read_only = false;
    // overlay_file and overlay folders: the real path and its inode there.
    std::filesystem::path real;
    bool in_overlay = false;
    ino_t real_ino = 0;
    // overlay_file: which file it is (overlay_ino: inode and generation). Unlike real_ino, never
    // the same for two files, even when the filesystem reuses a deleted file's inode number.
    std::uint64_t overlay_id = 0;

    bool exists() const { return kind != Kind::none; }
    bool is_dir() const { return kind == Kind::dir; }
    // Same thing as `o`, even if renamed or if the catalog was rebuilt since.
    bool same_object(const Entry& o) const;
};

// Where a path falls.
struct Location {
    enum class Area { root, by_hash, view, nowhere } area = Area::nowhere;
    int view = -1;
    std::string rel;  // inside the view, no leading '/'
};

// What a file at a view-relative path is, for the ingester.
struct FileRole {
    enum class Kind { plain, model, sidecar } kind = Kind::plain;
    Category category = Category::other;
    std::string name;    // model name
    std::string ext;     // model: its extension
    std::string suffix;  // sidecar: its suffix
};

class Namespace {
  public:
    Namespace(std::filesystem::path store_root, std::vector<layouts::ViewLayout> views,
              bool root_mode);

    const std::vector<layouts::ViewLayout>& views() const { return views_; }
    bool root_mode() const { return root_mode_; }
    std::filesystem::path overlay_root(int view) const;

    Location locate(std::string_view path) const;
    std::filesystem::path real_path(const Location& loc) const;
    // Makes the overlay folders down to `loc` (a folder of a view) that do not exist yet. Those
    // are twins of catalogued folders, and a twin's mode, owner and group are what the mount
    // shows for its folder from then on (chmod and chown of a catalogued folder change the
    // twin): each is made with the catalog's folder mode whatever the daemon's umask, owned by
    // the daemon. Throws StoreError.
    void make_overlay_dirs(const Location& loc) const;
    // The overlay folder `loc` (a folder of a view), opened (O_PATH) for the *at calls that make
    // entries in it, without following a link anywhere below the view's overlay folder. The
    // daemon (root in a shared mount) must never make what a user asked for in a folder that
    // user swapped for a link to, say, /etc between the lookup and the call. Invalid with errno
    // set (ELOOP: a link on the way; ENOENT: not there).
    UniqueFd open_overlay_dir(const Location& loc) const;

    // Resolves against `tree` (a snapshot of the catalog) and the overlay.
    Entry resolve(const ViewTree& tree, const std::string& path) const;
    // What `path` is in the catalog alone, whatever the overlay has there.
    Entry resolve_catalog(const ViewTree& tree, const std::string& path) const;
    // Entries of a directory, by name (the union of the tree's and the overlay's).
    std::vector<std::pair<std::string, Entry>> list(const ViewTree& tree,
                                                    const std::string& path) const;
    // Is `rel` (in view `view`, `size` bytes) a model file, a model's sidecar, or a plain file?
    // A file that is neither but that stored_by_content() takes (view_files.h) is a model of
    // category `file`, named after the view and its path; size 0 (unknown) never is.
    FileRole role(const ViewTree& tree, int view, const std::string& rel,
                  std::uint64_t size = 0) const;

    // The inode number of an overlay file: from its real inode and birth time, so it survives
    // renames and is never reused while the kernel might remember it.
    static std::uint64_t overlay_ino(const std::filesystem::path& real, const struct stat& st);

  private:
    std::filesystem::path store_root_;
    std::vector<layouts::ViewLayout> views_;
    bool root_mode_;
};

}  // namespace modelfs::fs
