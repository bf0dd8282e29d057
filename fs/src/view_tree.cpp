#include "modelfs/fs/view_tree.h"

#include <xxhash.h>

#include <algorithm>
#include <set>

#include <spdlog/spdlog.h>

namespace modelfs::fs {

std::string join_path(std::string_view dir, std::string_view name) {
    if (dir.empty()) return std::string(name);
    std::string out(dir);
    out += '/';
    out += name;
    return out;
}

std::string parent_of(std::string_view path) {
    auto slash = path.rfind('/');
    return slash == std::string_view::npos ? std::string() : std::string(path.substr(0, slash));
}

std::string leaf_of(std::string_view path) {
    auto slash = path.rfind('/');
    return std::string(slash == std::string_view::npos ? path : path.substr(slash + 1));
}

const std::vector<std::string>& sidecar_suffixes() {
    static const std::vector<std::string> s = [] {
        std::vector<std::string> v{".preview.png",  ".preview.jpg",  ".preview.jpeg",
                                   ".preview.webp", ".civitai.info", ".png",
                                   ".jpg",          ".jpeg",         ".webp",
                                   ".yaml",         ".json",         ".txt"};
        std::stable_sort(v.begin(), v.end(), [](const std::string& a, const std::string& b) {
            return a.size() > b.size();
        });
        return v;
    }();
    return s;
}

std::uint64_t ViewTree::dir_ino(std::string_view path) {
    std::uint64_t ino = XXH3_64bits(path.data(), path.size());
    return ino <= kRootIno ? ino + 2 : ino;
}

std::uint64_t ViewTree::file_ino(std::string_view path, const Sha256& blob) {
    XXH3_state_t* st = XXH3_createState();
    XXH3_64bits_reset(st);
    XXH3_64bits_update(st, path.data(), path.size());
    XXH3_64bits_update(st, "\0", 1);
    XXH3_64bits_update(st, blob.bytes.data(), blob.bytes.size());
    std::uint64_t ino = XXH3_64bits_digest(st);
    XXH3_freeState(st);
    return ino <= kRootIno ? ino + 2 : ino;
}

const Node* ViewTree::find(std::uint64_t ino) const {
    auto it = nodes_.find(ino);
    return it == nodes_.end() ? nullptr : &it->second;
}

const Node* ViewTree::find_path(std::string_view path) const {
    auto it = by_path_.find(std::string(path));
    return it == by_path_.end() ? nullptr : find(it->second);
}

const Node* ViewTree::child(std::uint64_t parent, std::string_view name) const {
    const Node* p = find(parent);
    if (!p || p->kind != Node::Kind::dir) return nullptr;
    auto it = p->children.find(std::string(name));
    return it == p->children.end() ? nullptr : find(it->second);
}

// Collisions of the 64-bit hashes are astronomically rare; when one happens the later node
// probes upwards, in a deterministic build order.
std::uint64_t ViewTree::add(std::uint64_t parent, const std::string& name, Node::Kind kind,
                            const std::string& path, std::uint64_t ino) {
    Node& p = nodes_.at(parent);
    if (auto it = p.children.find(name); it != p.children.end()) return it->second;
    while (ino <= kRootIno || nodes_.count(ino)) ++ino;
    Node n;
    n.kind = kind;
    n.ino = ino;
    n.parent = parent;
    n.name = name;
    n.path = path;
    n.view = p.view;
    n.mode = kind == Node::Kind::dir ? 0755 : 0644;
    if (kind == Node::Kind::dir) n.category = p.category;
    nodes_.emplace(ino, std::move(n));
    nodes_.at(parent).children.emplace(name, ino);
    by_path_.emplace(path, ino);
    return ino;
}

std::uint64_t ViewTree::ensure_dirs(std::uint64_t parent, std::string_view rel) {
    std::size_t start = 0;
    while (start < rel.size()) {
        auto end = rel.find('/', start);
        if (end == std::string_view::npos) end = rel.size();
        std::string part(rel.substr(start, end - start));
        std::string path = join_path(nodes_.at(parent).path, part);
        parent = add(parent, part, Node::Kind::dir, path, dir_ino(path));
        start = end + 1;
    }
    return parent;
}

ViewTree ViewTree::build(const Txn& txn, const std::vector<ViewLayout>& views, bool root_mode,
                         std::int64_t empty_dir_mtime_ns, const LockFile* lock) {
    ViewTree t;
    t.views_ = views;
    t.root_mode_ = root_mode;
    Node root;
    root.ino = kRootIno;
    root.parent = kRootIno;
    t.nodes_.emplace(kRootIno, std::move(root));
    t.by_path_.emplace("", kRootIno);

    std::vector<std::uint64_t> roots;
    for (std::size_t i = 0; i < views.size(); ++i) {
        std::uint64_t r = kRootIno;
        if (root_mode)
            r = t.add(kRootIno, views[i].name(), Node::Kind::dir, views[i].name(),
                      dir_ino(views[i].name()));
        t.nodes_.at(r).view = static_cast<int>(i);
        // Every folder of the layout exists even when empty: tools create or scan them.
        for (const auto& f : views[i].folders()) {
            std::uint64_t d = t.ensure_dirs(r, f.path);
            t.nodes_.at(d).category = f.category;
        }
        roots.push_back(r);
    }

    auto add_file = [&](std::uint64_t dir, const std::string& name, const Sha256& blob,
                        std::uint64_t size, std::int64_t mtime_ns) -> Node* {
        if (t.nodes_.at(dir).children.count(name)) return nullptr;  // first one wins
        std::string path = join_path(t.nodes_.at(dir).path, name);
        std::uint64_t ino = t.add(dir, name, Node::Kind::file, path, file_ino(path, blob));
        Node& n = t.nodes_.at(ino);
        n.blob = blob;
        n.size = size;
        n.mtime_ns = mtime_ns;
        return &n;
    };

    // A lock names each model's version by content; the key finds the model, the content id
    // its version (labels differ between machines).
    std::map<std::string, const LockedModel*> locked;
    if (lock)
        for (const auto& lm : lock->models) locked.emplace(lm.key(), &lm);
    std::set<std::string> locked_seen;

    txn.for_each_model([&](const Model& m) {
        std::optional<std::size_t> pinned_by_lock;
        if (lock) {
            auto it = locked.find(m.key());
            if (it == locked.end()) return;  // a locked mount shows nothing else
            locked_seen.insert(it->first);
            for (std::size_t i = 0; i < m.versions.size() && !pinned_by_lock; ++i)
                if (m.versions[i].content_id() == it->second->content_id) pinned_by_lock = i;
            if (!pinned_by_lock) {
                t.missing_locked_.push_back(it->first + "@" + it->second->label);
                return;
            }
        }
        t.models_.push_back(m);
        for (std::size_t i = 0; i < views.size(); ++i) {
            const ModelVersion& v =
                m.versions.at(pinned_by_lock ? *pinned_by_lock : m.shown_in(views[i].name()));
            const std::int64_t mtime_ns = v.shown_mtime() * 1'000'000'000;
            auto tag = [&](Node* n) {
                if (!n) return;
                n->model_key = m.key();
                n->version = v.label;
                n->category = m.category;
                n->mode = v.shown_mode() & 07777;
            };
            auto rel = views[i].path_for(m, v);
            if (!rel) continue;
            auto slash = rel->rfind('/');
            std::string dir_rel = slash == std::string::npos ? "" : rel->substr(0, slash);
            std::string leaf = slash == std::string::npos ? *rel : rel->substr(slash + 1);
            std::uint64_t dir = t.ensure_dirs(roots[i], dir_rel);
            if (v.is_tree()) {
                std::uint64_t top = t.ensure_dirs(dir, leaf);
                for (const auto& e : v.tree) {
                    auto s2 = e.path.rfind('/');
                    std::string sub = s2 == std::string::npos ? "" : e.path.substr(0, s2);
                    std::string file = s2 == std::string::npos ? e.path : e.path.substr(s2 + 1);
                    tag(add_file(t.ensure_dirs(top, sub), file, e.blob, e.size, mtime_ns));
                }
                continue;
            }
            tag(add_file(dir, leaf, *v.blob, v.size, mtime_ns));
            // Sidecars sit beside the file: <leaf without its extension><suffix>.
            std::string stem = leaf.substr(0, leaf.size() - v.ext.size());
            for (const auto& sc : v.sidecars) {
                Node* n = add_file(dir, stem + sc.suffix, sc.blob, sc.size, mtime_ns);
                tag(n);
                if (n) n->sidecar = sc.suffix;
            }
        }
    });

    for (const auto& [key, lm] : locked)
        if (!locked_seen.count(key)) t.missing_locked_.push_back(key + "@" + lm->label);
    // LMDB hands models out by key already; sorting keeps lookups right whatever the order.
    auto by_key = [](const Model& a, const Model& b) { return a.key() < b.key(); };
    if (!std::is_sorted(t.models_.begin(), t.models_.end(), by_key))
        std::sort(t.models_.begin(), t.models_.end(), by_key);

    if (root_mode) {
        std::uint64_t dir = t.ensure_dirs(kRootIno, "by-hash/sha256");
        txn.for_each_blob([&](const Sha256& h, const BlobRecord& r) {
            if (r.state != BlobState::present || !r.extents.empty()) return;
            if (Node* n = add_file(dir, h.hex(), h, r.size, r.ingested * 1'000'000'000))
                n->mode = 0444;
        });
    }

    // A category folder's mtime is the last change to its category (a deletion leaves no newer
    // entry behind, so the newest entry would not do); other folders take their newest entry's.
    // Either way it changes whenever what the folder lists changes.
    std::vector<std::pair<int, std::uint64_t>> by_depth;
    for (const auto& [ino, n] : t.nodes_) {
        int depth = static_cast<int>(std::count(n.path.begin(), n.path.end(), '/')) +
                    (n.path.empty() ? 0 : 1);
        by_depth.emplace_back(depth, ino);
    }
    std::sort(by_depth.rbegin(), by_depth.rend());
    std::map<Category, std::int64_t> changed;
    for (auto [d, ino] : by_depth) {
        Node& n = t.nodes_.at(ino);
        if (n.kind == Node::Kind::dir) {
            if (n.category) {
                auto [it, fresh] = changed.try_emplace(*n.category, 0);
                if (fresh) it->second = txn.category_changed_ns(*n.category);
                // The category's change time alone, not the max with the entries': it moves on
                // every change, while a future-dated entry (`touch -d`) would hide all later ones.
                if (it->second) n.mtime_ns = it->second;
            }
            if (n.mtime_ns == 0) n.mtime_ns = empty_dir_mtime_ns;
        }
        if (ino != kRootIno) {
            Node& p = t.nodes_.at(n.parent);
            p.mtime_ns = std::max(p.mtime_ns, n.mtime_ns);
        }
    }
    return t;
}

// --- version aliases --------------------------------------------------------------------------

struct ViewTree::Place {
    int view = -1;
    const ViewFolder* folder = nullptr;  // the primary folder the path is in
    std::string folder_path;             // that folder's path in the mount
    std::string rem;                     // the path below that folder; "" for the folder itself
};

// What a virtual path is: a folder of `.versions/` (model null), or a version of a model (a
// file, a sidecar, or a file or folder `inner` of a multi-file version).
struct ViewTree::Hit {
    Place where;
    const Model* model = nullptr;
    std::size_t index = 0;
    const Sidecar* sidecar = nullptr;
    std::string inner;
};

namespace {

constexpr std::string_view kVersionsDir = ".versions";

bool in_versions_dir(std::string_view rem) {
    return rem == kVersionsDir ||
           (rem.starts_with(kVersionsDir) && rem.size() > kVersionsDir.size() &&
            rem[kVersionsDir.size()] == '/');
}

// A version of `m` named by `leaf`: LABEL.EXT, LABEL (a multi-file version), LABEL.SUFFIX (one
// of its sidecars), or a content-id prefix in place of LABEL. Labels win, as in find_version.
std::optional<std::pair<std::size_t, const Sidecar*>> match_version(const Model& m,
                                                                    std::string_view leaf) {
    for (std::size_t i = 0; i < m.versions.size(); ++i) {
        const ModelVersion& v = m.versions[i];
        if (leaf.starts_with(v.label) && leaf.substr(v.label.size()) == v.ext)
            return std::pair{i, nullptr};
    }
    for (std::size_t i = 0; i < m.versions.size(); ++i) {
        const ModelVersion& v = m.versions[i];
        if (v.is_tree() || !leaf.starts_with(v.label)) continue;
        if (const Sidecar* sc = v.sidecar(leaf.substr(v.label.size()))) return std::pair{i, sc};
    }
    std::set<std::string> exts;
    for (const auto& v : m.versions) exts.insert(v.ext);
    for (const auto& ext : exts) {
        if (leaf.size() <= ext.size() || !leaf.ends_with(ext)) continue;
        auto i = find_version(m, leaf.substr(0, leaf.size() - ext.size()));
        if (i && m.versions[*i].ext == ext) return std::pair{*i, nullptr};
    }
    return std::nullopt;
}

std::pair<std::string_view, std::string_view> split_first(std::string_view s) {
    auto slash = s.find('/');
    if (slash == std::string_view::npos) return {s, {}};
    return {s.substr(0, slash), s.substr(slash + 1)};
}

auto model_before(const Model& m, const std::string& key) {
    return m.key() < key;
}

}  // namespace

std::optional<ViewTree::Place> ViewTree::place_of(std::string_view path) const {
    Place p;
    std::string_view rel = path;
    std::string root;
    if (root_mode_) {
        auto [first, rest] = split_first(path);
        for (std::size_t i = 0; i < views_.size(); ++i)
            if (views_[i].name() == first) p.view = static_cast<int>(i);
        rel = rest;
        root = std::string(first);
    } else if (!views_.empty()) {
        p.view = 0;
    }
    if (p.view < 0) return std::nullopt;
    for (const auto& f : views_[static_cast<std::size_t>(p.view)].folders()) {
        if (!f.primary || !rel.starts_with(f.path)) continue;
        if (rel.size() > f.path.size() && rel[f.path.size()] != '/') continue;
        p.folder = &f;
        p.folder_path = join_path(root, f.path);
        if (rel.size() > f.path.size()) p.rem = std::string(rel.substr(f.path.size() + 1));
        return p;
    }
    return std::nullopt;
}

const Model* ViewTree::model(Category c, std::string_view name) const {
    const std::string key = model_key(c, name);
    auto it = std::lower_bound(models_.begin(), models_.end(), key, model_before);
    return it != models_.end() && it->key() == key ? &*it : nullptr;
}

bool ViewTree::has_names_below(Category c, std::string_view prefix) const {
    const std::string start = model_key(c, prefix);
    auto it = std::lower_bound(models_.begin(), models_.end(), start, model_before);
    return it != models_.end() && it->key().starts_with(start);
}

std::optional<ViewTree::Hit> ViewTree::hit_of(std::string_view path) const {
    auto where = place_of(path);
    if (!where || where->rem.empty()) return std::nullopt;
    const std::string_view rem = where->rem;
    const Category c = where->folder->category;
    auto version_hit = [&](const Model& m, std::string_view after) -> std::optional<Hit> {
        auto [leaf, inner] = split_first(after);
        auto found = match_version(m, leaf);
        if (!found) return std::nullopt;
        const ModelVersion& v = m.versions[found->first];
        // Only what the view can show, and only what the version has.
        if (!views_.at(static_cast<std::size_t>(where->view)).path_for(m, v)) return std::nullopt;
        if (!inner.empty()) {
            if (!v.is_tree() || found->second) return std::nullopt;
            bool there = false;
            for (const auto& e : v.tree)
                there = there || e.path == inner ||
                        (e.path.starts_with(inner) && e.path.size() > inner.size() &&
                         e.path[inner.size()] == '/');
            if (!there) return std::nullopt;
        }
        return Hit{*where, &m, found->first, found->second, std::string(inner)};
    };

    if (in_versions_dir(rem)) {
        // `.versions/`, a folder per name component, then one file (or folder) per version.
        const std::string_view sub =
            rem.size() > kVersionsDir.size() ? rem.substr(kVersionsDir.size() + 1) : "";
        if (sub.empty() || model(c, sub) || has_names_below(c, std::string(sub) + "/"))
            return Hit{*where, nullptr, 0, nullptr, {}};
        for (std::size_t slash = sub.find('/'); slash != std::string_view::npos;
             slash = sub.find('/', slash + 1)) {
            if (const Model* m = model(c, sub.substr(0, slash)))
                if (auto hit = version_hit(*m, sub.substr(slash + 1))) return hit;
        }
        return std::nullopt;
    }
    // NAME@LABEL...: names may hold an '@' too, so every one is tried.
    for (std::size_t at = rem.find('@'); at != std::string_view::npos; at = rem.find('@', at + 1)) {
        const std::string_view name = rem.substr(0, at);
        if (name.empty() || name.ends_with('/')) continue;
        if (const Model* m = model(c, name))
            if (auto hit = version_hit(*m, rem.substr(at + 1))) return hit;
    }
    return std::nullopt;
}

Node ViewTree::node_of(const Hit& hit, std::string_view path_view) const {
    const std::string path(path_view);
    Node n;
    n.read_only = true;
    n.path = path;
    n.name = leaf_of(path);
    n.view = hit.where.view;
    const Node* parent = find_path(parent_of(path));
    n.parent = parent ? parent->ino : dir_ino(parent_of(path));
    n.category = hit.where.folder->category;
    if (!hit.model) {
        n.kind = Node::Kind::dir;
        n.mode = 0555;
        n.ino = dir_ino(path);
        // The category folder's: it moves whenever a model of the category changes.
        const Node* folder = find_path(hit.where.folder_path);
        n.mtime_ns = folder ? folder->mtime_ns : 0;
        return n;
    }
    const ModelVersion& v = hit.model->versions.at(hit.index);
    n.model_key = hit.model->key();
    n.version = v.label;
    n.mtime_ns = v.shown_mtime() * 1'000'000'000;
    n.kind = Node::Kind::file;
    n.mode = v.shown_mode() & 07555;  // without write bits: aliases are read-only
    const TreeEntry* entry = nullptr;
    if (v.is_tree())
        for (const auto& e : v.tree)
            if (e.path == hit.inner) entry = &e;
    if (hit.sidecar) {
        n.blob = hit.sidecar->blob;
        n.size = hit.sidecar->size;
        n.sidecar = hit.sidecar->suffix;
    } else if (!v.is_tree()) {
        n.blob = *v.blob;
        n.size = v.size;
    } else if (entry) {
        n.blob = entry->blob;
        n.size = entry->size;
    } else {
        n.kind = Node::Kind::dir;
        n.mode = 0555;
    }
    n.ino = n.kind == Node::Kind::dir ? dir_ino(path) : file_ino(path, n.blob);
    return n;
}

std::optional<Node> ViewTree::virtual_node(std::string_view path) const {
    auto hit = hit_of(path);
    if (!hit) return std::nullopt;
    return node_of(*hit, path);
}

std::vector<Node> ViewTree::virtual_children(std::string_view path_view) const {
    std::vector<Node> out;
    const std::string path(path_view);
    auto add = [&](const std::string& child) {
        if (auto n = virtual_node(child)) out.push_back(std::move(*n));
    };
    // Calls fn(model, name below `prefix`) for the models of category `c` named prefix...
    auto names_below = [&](Category c, const std::string& prefix, auto&& fn) {
        const std::string start = model_key(c, prefix);
        for (auto it = std::lower_bound(models_.begin(), models_.end(), start, model_before);
             it != models_.end() && it->category == c && it->name.starts_with(prefix); ++it)
            fn(*it, std::string_view(it->name).substr(prefix.size()));
    };

    if (auto hit = hit_of(path)) {
        const Category c = hit->where.folder->category;
        if (!hit->model) {
            // A `.versions/` folder: the next name components, and the versions of the model
            // the folder is named after.
            const std::string_view rem = hit->where.rem;
            const std::string sub = rem.size() > kVersionsDir.size()
                                        ? std::string(rem.substr(kVersionsDir.size() + 1))
                                        : "";
            std::set<std::string, std::less<>> seen;
            names_below(c, sub.empty() ? "" : sub + "/", [&](const Model&, std::string_view rest) {
                auto first = split_first(rest).first;
                if (!first.empty() && seen.emplace(first).second) add(join_path(path, first));
            });
            if (const Model* m = model(c, sub))
                for (const auto& v : m->versions)
                    add(join_path(path, v.label + (v.is_tree() ? "" : v.ext)));
            return out;
        }
        // A folder of a multi-file version: the version's entries below it.
        const ModelVersion& v = hit->model->versions.at(hit->index);
        const std::string prefix = hit->inner.empty() ? "" : hit->inner + "/";
        std::set<std::string, std::less<>> seen;
        for (const auto& e : v.tree) {
            if (!e.path.starts_with(prefix)) continue;
            auto first = split_first(std::string_view(e.path).substr(prefix.size())).first;
            if (seen.emplace(first).second) add(join_path(path, first));
        }
        return out;
    }

    // Aliases beside the models of a real folder, when the view lists them.
    auto where = place_of(path);
    if (!where || in_versions_dir(where->rem)) return out;
    if (!views_.at(static_cast<std::size_t>(where->view)).show_versions()) return out;
    const Node* dir = find_path(path);
    if (!dir || dir->kind != Node::Kind::dir) return out;
    names_below(where->folder->category, where->rem.empty() ? "" : where->rem + "/",
                [&](const Model& m, std::string_view rest) {
                    if (rest.find('/') != std::string_view::npos) return;
                    for (const auto& v : m.versions)
                        add(join_path(
                            path, std::string(rest) + "@" + v.label + (v.is_tree() ? "" : v.ext)));
                });
    return out;
}

}  // namespace modelfs::fs
