#include "modelfs/fs/view_tree.h"

#include <xxhash.h>

#include <algorithm>

namespace modelfs::fs {

const Node* ViewTree::find(std::uint64_t ino) const {
    auto it = nodes_.find(ino);
    return it == nodes_.end() ? nullptr : &it->second;
}

const Node* ViewTree::child(std::uint64_t parent, std::string_view name) const {
    const Node* p = find(parent);
    if (!p || p->kind != Node::Kind::dir) return nullptr;
    auto it = p->children.find(std::string(name));
    return it == p->children.end() ? nullptr : find(it->second);
}

// Inode = XXH3-64 of the path, so the same path gets the same number on every mount; collisions
// (astronomically rare) probe upwards in a deterministic build order.
std::uint64_t ViewTree::add(std::uint64_t parent, const std::string& name, Node::Kind kind,
                            const std::string& path) {
    Node& p = nodes_.at(parent);
    if (auto it = p.children.find(name); it != p.children.end()) return it->second;
    std::uint64_t ino = XXH3_64bits(path.data(), path.size());
    while (ino <= kRootIno || nodes_.count(ino)) ++ino;
    Node n;
    n.kind = kind;
    n.ino = ino;
    n.parent = parent;
    n.name = name;
    nodes_.emplace(ino, std::move(n));
    nodes_.at(parent).children.emplace(name, ino);
    return ino;
}

std::uint64_t ViewTree::ensure_dirs(std::uint64_t parent, const std::string& parent_path,
                                    std::string_view rel) {
    std::string path = parent_path;
    std::size_t start = 0;
    while (start < rel.size()) {
        auto end = rel.find('/', start);
        if (end == std::string_view::npos) end = rel.size();
        std::string part(rel.substr(start, end - start));
        path += "/" + part;
        parent = add(parent, part, Node::Kind::dir, path);
        start = end + 1;
    }
    return parent;
}

ViewTree ViewTree::build(const Txn& txn, const std::vector<ViewLayout>& views, bool root_mode,
                         std::int64_t empty_dir_mtime) {
    ViewTree t;
    Node root;
    root.ino = kRootIno;
    root.parent = kRootIno;
    t.nodes_.emplace(kRootIno, std::move(root));

    struct ViewRoot {
        const ViewLayout* layout;
        std::uint64_t ino;
        std::string path;
    };
    std::vector<ViewRoot> roots;
    for (const auto& v : views) {
        ViewRoot r{&v, kRootIno, ""};
        if (root_mode) {
            r.path = v.name();
            r.ino = t.add(kRootIno, v.name(), Node::Kind::dir, r.path);
        }
        // Every folder of the layout exists even when empty: tools create or scan them.
        for (const auto& f : v.folders()) t.ensure_dirs(r.ino, r.path, f.path);
        roots.push_back(r);
    }

    auto add_file = [&](std::uint64_t dir, const std::string& dir_path, const std::string& name,
                        const Sha256& blob, std::uint64_t size, std::int64_t mtime) -> Node& {
        std::uint64_t ino = t.add(dir, name, Node::Kind::file, dir_path + "/" + name);
        Node& n = t.nodes_.at(ino);
        n.blob = blob;
        n.size = size;
        n.mtime = mtime;
        return n;
    };

    txn.for_each_model([&](const Model& m) {
        const ModelVersion& v = m.current_version();
        for (const auto& r : roots) {
            auto rel = r.layout->path_for(m, v);
            if (!rel) continue;
            auto slash = rel->rfind('/');
            std::string dir_rel = slash == std::string::npos ? "" : rel->substr(0, slash);
            std::string leaf = slash == std::string::npos ? *rel : rel->substr(slash + 1);
            std::uint64_t dir = t.ensure_dirs(r.ino, r.path, dir_rel);
            std::string dir_path = r.path + (dir_rel.empty() ? "" : "/" + dir_rel);
            auto tag = [&](Node& n) {
                n.model_key = m.key();
                n.version = v.label;
                n.category = m.category;
            };
            if (v.is_tree()) {
                std::uint64_t top = t.ensure_dirs(dir, dir_path, leaf);
                for (const auto& e : v.tree) {
                    auto s2 = e.path.rfind('/');
                    std::string sub = s2 == std::string::npos ? "" : e.path.substr(0, s2);
                    std::string file = s2 == std::string::npos ? e.path : e.path.substr(s2 + 1);
                    std::uint64_t d = t.ensure_dirs(top, dir_path + "/" + leaf, sub);
                    tag(add_file(d, dir_path + "/" + leaf + (sub.empty() ? "" : "/" + sub), file,
                                 e.blob, e.size, v.added));
                }
            } else {
                tag(add_file(dir, dir_path, leaf, *v.blob, v.size, v.added));
            }
        }
    });

    if (root_mode) {
        std::uint64_t dir = t.ensure_dirs(kRootIno, "", "by-hash/sha256");
        txn.for_each_blob([&](const Sha256& h, const BlobRecord& r) {
            if (r.state == BlobState::present && r.extents.empty())
                add_file(dir, "/by-hash/sha256", h.hex(), h, r.size, r.ingested);
        });
    }

    // A folder's mtime is its newest entry's: it changes exactly when what it lists changes.
    std::vector<std::uint64_t> order;
    for (const auto& [ino, n] : t.nodes_) order.push_back(ino);
    auto depth = [&](std::uint64_t ino) {
        int d = 0;
        for (const Node* n = t.find(ino); n->ino != kRootIno; n = t.find(n->parent)) ++d;
        return d;
    };
    std::vector<std::pair<int, std::uint64_t>> by_depth;
    for (auto ino : order) by_depth.emplace_back(depth(ino), ino);
    std::sort(by_depth.rbegin(), by_depth.rend());
    for (auto [d, ino] : by_depth) {
        Node& n = t.nodes_.at(ino);
        if (n.kind == Node::Kind::dir && n.mtime == 0) n.mtime = empty_dir_mtime;
        if (ino != kRootIno) {
            Node& p = t.nodes_.at(n.parent);
            p.mtime = std::max(p.mtime, n.mtime);
        }
    }
    return t;
}

}  // namespace modelfs::fs
