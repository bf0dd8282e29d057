// Version aliases in a mount: STEM@LABEL.EXT beside each model NAME = STEM.EXT and a hidden
// `.versions/STEM/LABEL.EXT` folder in each category folder (foo.safetensors and foo.pt share
// `.versions/foo/`, their versions told apart by the extension). They are resolved from the models
// a ViewTree keeps, when a path is asked for, instead of being nodes of the tree: a catalog with a
// few versions per model would otherwise triple the size and the rebuild time of every snapshot.
#include <algorithm>
#include <set>

#include "modelfs/fs/view_tree.h"
#include "modelfs/store/model_name.h"

namespace modelfs::fs {

struct ViewTree::Place {
    int view = -1;
    const layouts::ViewFolder* folder = nullptr;  // the primary folder the path is in
    std::string folder_path;                      // that folder's path in the mount
    std::string rem;  // the path below that folder; "" for the folder itself
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

std::vector<const Model*> ViewTree::models_by_stem(Category c, std::string_view stem) const {
    std::vector<const Model*> out;
    if (const Model* m = model(c, stem)) out.push_back(m);
    const std::string start = model_key(c, std::string(stem) + ".");
    for (auto it = std::lower_bound(models_.begin(), models_.end(), start, model_before);
         it != models_.end() && it->key().starts_with(start); ++it)
        if (it->stem() == stem && it->stem().size() != it->name.size()) out.push_back(&*it);
    return out;
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
        if (sub.empty() || !models_by_stem(c, sub).empty() ||
            has_names_below(c, std::string(sub) + "/"))
            return Hit{*where, nullptr, 0, nullptr, {}};
        for (std::size_t slash = sub.find('/'); slash != std::string_view::npos;
             slash = sub.find('/', slash + 1)) {
            for (const Model* m : models_by_stem(c, sub.substr(0, slash)))
                if (auto hit = version_hit(*m, sub.substr(slash + 1))) return hit;
        }
        return std::nullopt;
    }
    // NAME@LABEL...: names may hold an '@' too, so every one is tried.
    for (std::size_t at = rem.find('@'); at != std::string_view::npos; at = rem.find('@', at + 1)) {
        const std::string_view name = rem.substr(0, at);
        if (name.empty() || name.ends_with('/')) continue;
        // A single file's alias is STEM@LABEL.EXT (model_name.h): the models named STEM.EXT.
        for (const Model* m : models_by_stem(c, name))
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
            names_below(
                c, sub.empty() ? "" : sub + "/", [&](const Model& m, std::string_view rest) {
                    auto [first, more] = split_first(rest);
                    // A model's own folder is named by its stem.
                    const std::string entry(more.empty() ? name_stem(first, m.current_version().ext)
                                                         : first);
                    if (!entry.empty() && seen.emplace(entry).second) add(join_path(path, entry));
                });
            for (const Model* m : models_by_stem(c, sub))
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
                        add(join_path(path, std::string(name_stem(rest, v.ext)) + "@" + v.label +
                                                (v.is_tree() ? "" : v.ext)));
                });
    return out;
}

}  // namespace modelfs::fs
