#include "modelfs/fs/view_tree.h"

#include <xxhash.h>

#include <algorithm>
#include <mutex>
#include <set>

#include <spdlog/spdlog.h>

#include "modelfs/store/escape.h"
#include "modelfs/store/model_name.h"
#include "modelfs/store/names.h"

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

ViewTree ViewTree::build(const Txn& txn, const std::vector<layouts::ViewLayout>& views,
                         bool root_mode, std::int64_t empty_dir_mtime_ns, const LockFile* lock) {
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
        // A name or file path that names.h refuses (a catalog an older modelfs wrote) could show
        // a second '..' or reach out of its folder: not shown, said once per process.
        std::string why = relative_path_problem(m.name);
        for (const auto& v : m.versions)
            for (const auto& e : v.tree)
                if (why.empty()) why = relative_path_problem(e.path);
        if (!why.empty()) {
            static std::mutex mu;
            static std::set<std::string> told;
            std::lock_guard lk(mu);
            if (told.insert(m.key()).second)
                spdlog::warn("model {} is not shown: its name or a file path is refused ({})",
                             terminal_safe(m.key()), why);
            return;
        }
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
            // A locked mount never switches versions, so switches elsewhere do not touch it.
            const std::int64_t mtime_ns =
                pinned_by_lock ? v.shown_mtime() * 1'000'000'000 : m.shown_mtime_ns(v);
            auto tag = [&](Node* n) {
                if (!n) return;
                n->model_key = m.key();
                n->version = v.label;
                n->category = m.category;
                n->mode = v.shown_mode() & 07777;
            };
            auto rel = views[i].shown_at(m, v);
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
            if (m.category == Category::file) continue;  // its name has the extension: no sidecars
            // Sidecars sit beside the file: <leaf without its extension><suffix>.
            const std::string stem(name_stem(leaf, v.ext));
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
            if (r.state != BlobState::present || r.pieces) return;
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

}  // namespace modelfs::fs
