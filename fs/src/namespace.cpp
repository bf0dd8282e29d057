#include "namespace.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cctype>
#include <map>

#include "modelfs/store/errors.h"
#include "modelfs/store/model_name.h"
#include "modelfs/store/text.h"
#include "modelfs/store/view_files.h"

namespace modelfs::fs {

// The mode the catalog shows every folder with (ViewTree's folder nodes).
constexpr mode_t kCatalogDirMode = 0755;

bool Entry::same_object(const Entry& o) const {
    if (kind != o.kind) return false;
    switch (kind) {
        case Kind::none:
            return true;
        case Kind::dir:
            return path == o.path;
        case Kind::tree_file:
            return path == o.path && blob == o.blob;
        case Kind::overlay_file:
            return overlay_id == o.overlay_id && real_ino == o.real_ino && st.st_dev == o.st.st_dev;
    }
    return false;
}

Namespace::Namespace(std::filesystem::path store_root, std::vector<layouts::ViewLayout> views,
                     bool root_mode)
    : store_root_(std::move(store_root)), views_(std::move(views)), root_mode_(root_mode) {}

std::filesystem::path Namespace::overlay_root(int view) const {
    return store_root_ / "views" / views_.at(static_cast<std::size_t>(view)).name();
}

Location Namespace::locate(std::string_view path) const {
    Location loc;
    if (!root_mode_) {
        loc.area = Location::Area::view;
        loc.view = 0;
        loc.rel = std::string(path);
        return loc;
    }
    if (path.empty()) {
        loc.area = Location::Area::root;
        return loc;
    }
    auto slash = path.find('/');
    std::string_view first = path.substr(0, slash);
    std::string rest = slash == std::string_view::npos ? "" : std::string(path.substr(slash + 1));
    if (first == "by-hash") {
        loc.area = Location::Area::by_hash;
        loc.rel = rest;
        return loc;
    }
    for (std::size_t i = 0; i < views_.size(); ++i)
        if (views_[i].name() == first) {
            loc.area = Location::Area::view;
            loc.view = static_cast<int>(i);
            loc.rel = rest;
            return loc;
        }
    return loc;
}

std::filesystem::path Namespace::real_path(const Location& loc) const {
    std::filesystem::path p = overlay_root(loc.view);
    return loc.rel.empty() ? p : p / loc.rel;
}

void Namespace::make_overlay_dirs(const Location& loc) const {
    std::filesystem::path p = store_root_ / "views";
    // Only the daemon reaches what tools wrote (daemon.cpp makes it private at every mount).
    if (::mkdir(p.c_str(), 0700) != 0 && errno != EEXIST)
        throw_errno("creating " + p.string(), errno);
    std::filesystem::path want = real_path(loc);
    p /= views_.at(static_cast<std::size_t>(loc.view)).name();
    auto rest = want.lexically_relative(p);
    for (auto it = rest.begin();; ++it) {
        if (::mkdir(p.c_str(), 0700) == 0) {
            // Made private first, then given the catalog's mode: no moment with the umask's.
            if (::fchmodat(AT_FDCWD, p.c_str(), kCatalogDirMode, 0) != 0)
                throw_errno("setting the mode of " + p.string(), errno);
        } else if (errno != EEXIST) {
            throw_errno("creating " + p.string(), errno);
        }
        if (it == rest.end() || *it == ".") break;
        p /= *it;
    }
}

UniqueFd Namespace::open_overlay_dir(const Location& loc) const {
    UniqueFd root(
        ::open(overlay_root(loc.view).c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!root || loc.rel.empty()) return root;
    open_how how{};
    how.flags = O_PATH | O_DIRECTORY | O_CLOEXEC;
    how.resolve = RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH;
    const long fd = ::syscall(SYS_openat2, root.get(), loc.rel.c_str(), &how, sizeof how);
    return UniqueFd(fd < 0 ? -1 : static_cast<int>(fd));
}

std::uint64_t Namespace::overlay_ino(const std::filesystem::path& real, const struct stat& st) {
    // Inode numbers are reused as soon as a file is deleted (the ingest deletes every file it
    // stores), and birth times are only as fine as the clock tick: neither tells two files at
    // one inode number apart. The file handle NFS would use does: it carries the inode's
    // generation, which the filesystem changes on reuse.
    struct {
        file_handle fh;
        unsigned char bytes[MAX_HANDLE_SZ];
    } h{};
    h.fh.handle_bytes = MAX_HANDLE_SZ;
    int mount_id = 0;
    XXH3_state_t* state = XXH3_createState();
    XXH3_64bits_reset(state);
    XXH3_64bits_update(state, &st.st_dev, sizeof st.st_dev);
    XXH3_64bits_update(state, &st.st_ino, sizeof st.st_ino);
    if (::name_to_handle_at(AT_FDCWD, real.c_str(), &h.fh, &mount_id, 0) == 0) {
        XXH3_64bits_update(state, h.bytes, h.fh.handle_bytes);
    } else {
        struct statx sx {};
        if (::statx(AT_FDCWD, real.c_str(), AT_SYMLINK_NOFOLLOW, STATX_BTIME, &sx) == 0 &&
            (sx.stx_mask & STATX_BTIME))
            XXH3_64bits_update(state, &sx.stx_btime, sizeof sx.stx_btime);
        XXH3_64bits_update(state, real.c_str(), real.native().size());
    }
    std::uint64_t ino = XXH3_64bits_digest(state);
    XXH3_freeState(state);
    return ino <= ViewTree::kRootIno ? ino + 2 : ino;
}

namespace {

void fill_from_node(Entry& e, const Node& n) {
    e.ino = n.ino;
    e.view = n.view;
    e.st.st_ino = n.ino;
    e.st.st_uid = ::getuid();
    e.st.st_gid = ::getgid();
    e.st.st_mtim.tv_sec = e.st.st_ctim.tv_sec = e.st.st_atim.tv_sec = n.mtime_ns / 1'000'000'000;
    e.st.st_mtim.tv_nsec = e.st.st_ctim.tv_nsec = e.st.st_atim.tv_nsec = n.mtime_ns % 1'000'000'000;
    e.st.st_blksize = 1 << 20;
    e.read_only = n.read_only;
    if (n.kind == Node::Kind::dir) {
        e.kind = Entry::Kind::dir;
        e.st.st_mode = S_IFDIR | (n.mode & 07777);
        e.st.st_nlink = 2;
        return;
    }
    e.kind = Entry::Kind::tree_file;
    e.st.st_mode = S_IFREG | (n.mode & 07777);
    e.st.st_nlink = 1;
    e.st.st_size = static_cast<off_t>(n.size);
    e.st.st_blocks = static_cast<blkcnt_t>((n.size + 511) / 512);
    e.blob = n.blob;
    e.model_key = n.model_key;
    e.version = n.version;
    e.sidecar = n.sidecar;
    e.category = n.category;
}

bool later(const struct timespec& a, const struct timespec& b) {
    return a.tv_sec != b.tv_sec ? a.tv_sec > b.tv_sec : a.tv_nsec > b.tv_nsec;
}

}  // namespace

// `look_in_overlay` false: the caller knows the overlay has nothing at this path (a listing of
// a folder that has no overlay folder), which saves an lstat per entry.
static Entry resolve_impl(const Namespace& ns, const ViewTree& tree, const std::string& path,
                          bool look_in_overlay) {
    Entry e;
    e.path = path;
    Location loc = ns.locate(path);
    if (loc.area == Location::Area::nowhere) return e;
    e.by_hash = loc.area == Location::Area::by_hash;
    struct stat real {};
    if (loc.area == Location::Area::view && look_in_overlay) {
        e.view = loc.view;
        e.real = ns.real_path(loc);
        if (::lstat(e.real.c_str(), &real) == 0) {
            // Anything but a folder: regular files, and the links, fifos and sockets tools make.
            if (!S_ISDIR(real.st_mode)) {
                e.kind = Entry::Kind::overlay_file;
                e.in_overlay = true;
                e.real_ino = real.st_ino;
                e.st = real;
                e.ino = e.overlay_id = Namespace::overlay_ino(e.real, real);
                e.st.st_ino = e.ino;
                e.st.st_blksize = 1 << 20;
                return e;
            }
            e.in_overlay = S_ISDIR(real.st_mode);
        }
    }
    const Node* n = tree.find_path(path);
    if (n && !(e.in_overlay && n->kind != Node::Kind::dir)) {
        fill_from_node(e, *n);
        if (e.in_overlay) {
            // A catalogued folder's twin: chmod and chown of the folder went there.
            e.st.st_mode = S_IFDIR | (real.st_mode & 07777);
            e.st.st_uid = real.st_uid;
            e.st.st_gid = real.st_gid;
            e.real_ino = real.st_ino;
            if (later(real.st_mtim, e.st.st_mtim)) e.st.st_mtim = e.st.st_ctim = real.st_mtim;
        }
        return e;
    }
    if (!e.in_overlay && loc.area == Location::Area::view) {
        // Not in the tree, not written here: a version alias, perhaps.
        if (auto v = tree.virtual_node(path)) {
            fill_from_node(e, *v);
            return e;
        }
    }
    if (e.in_overlay) {
        e.kind = Entry::Kind::dir;
        e.ino = ViewTree::dir_ino(path);
        e.real_ino = real.st_ino;
        e.st = real;
        e.st.st_ino = e.ino;
        e.st.st_nlink = 2;
        e.st.st_blksize = 1 << 20;
    }
    return e;
}

Entry Namespace::resolve(const ViewTree& tree, const std::string& path) const {
    return resolve_impl(*this, tree, path, true);
}

Entry Namespace::resolve_catalog(const ViewTree& tree, const std::string& path) const {
    return resolve_impl(*this, tree, path, false);
}

std::vector<std::pair<std::string, Entry>> Namespace::list(const ViewTree& tree,
                                                           const std::string& path) const {
    std::map<std::string, Entry> out;
    Location loc = locate(path);
    // Never listed through a link (open_overlay_dir): a folder swapped for one lists as what the
    // catalog alone has there.
    UniqueFd folder;
    if (loc.area == Location::Area::view) folder = open_overlay_dir(loc);
    const bool overlay_dir = static_cast<bool>(folder);
    if (const Node* d = tree.find_path(path); d && d->kind == Node::Kind::dir)
        for (const auto& [name, ino] : d->children)
            out.emplace(name, resolve_impl(*this, tree, join_path(path, name), overlay_dir));
    if (overlay_dir) {
        UniqueFd readable(::openat(folder.get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        std::unique_ptr<DIR, int (*)(DIR*)> dir(readable ? ::fdopendir(readable.get()) : nullptr,
                                                ::closedir);
        if (dir) readable.release();  // the DIR owns it now
        while (dir) {
            dirent* de = ::readdir(dir.get());
            if (!de) break;
            std::string name = de->d_name;
            if (name == "." || name == ".." || out.count(name)) continue;
            Entry e = resolve_impl(*this, tree, join_path(path, name), true);
            if (e.exists()) out.emplace(name, std::move(e));
        }
    }
    if (loc.area == Location::Area::view)
        for (auto& n : tree.virtual_children(path)) {
            if (out.count(n.name)) continue;  // a real entry of that name wins
            Entry e;
            e.path = n.path;
            fill_from_node(e, n);
            out.emplace(n.name, std::move(e));
        }
    return {out.begin(), out.end()};
}

FileRole Namespace::role(const ViewTree& tree, int view, const std::string& rel,
                         std::uint64_t size) const {
    FileRole r;
    const layouts::ViewLayout& layout = views_.at(static_cast<std::size_t>(view));
    if (auto vp = layout.classify(rel); vp && !vp->ext.empty()) {
        r.kind = FileRole::Kind::model;
        r.category = vp->category;
        r.name = vp->name;
        r.ext = vp->ext;
        return r;
    }
    // A sidecar is <model file name without extension><suffix>, beside a catalogued model (the
    // extension as split_extension finds it).
    const std::string leaf = leaf_of(rel), lower = modelfs::lower(leaf);
    std::string dir = join_path(root_mode_ ? layout.name() : "", parent_of(rel));
    if (!root_mode_) dir = parent_of(rel);
    const Node* d = tree.find_path(dir);
    for (const auto& suffix : sidecar_suffixes()) {
        if (!d || d->kind != Node::Kind::dir) break;
        if (lower.size() <= suffix.size() || !lower.ends_with(suffix)) continue;
        std::string stem = leaf.substr(0, leaf.size() - suffix.size());
        for (auto it = d->children.lower_bound(stem + "."); it != d->children.end(); ++it) {
            if (!it->first.starts_with(stem + ".")) break;
            const Node* f = tree.find(it->second);
            if (!f || !f->is_model_file() || !f->category) continue;
            std::string name = f->model_key.substr(f->model_key.find('/') + 1);
            if (split_extension(leaf_of(name)).first != stem) continue;
            r.kind = FileRole::Kind::sidecar;
            r.category = *f->category;
            r.name = name;
            r.suffix = leaf.substr(stem.size());
            return r;
        }
    }
    if (stored_by_content(rel, size)) {
        r.kind = FileRole::Kind::model;
        r.category = Category::file;
        r.name = view_file_name(layout.name(), rel);
        r.ext = view_file_ext(rel);
    }
    return r;
}

}  // namespace modelfs::fs
