// ViewTree: the catalog's part of a mount's tree, built from real LMDB catalogs in temp dirs and
// the built-in layouts. Paths, inode numbers, sidecars, by-hash/, folder mtimes, shown mtime/mode.
#include "modelfs/fs/view_tree.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "modelfs/layouts/view_layout.h"
#include "modelfs/store/catalog.h"
#include "modelfs/store/hash.h"
#include "support/catalog_builders.h"
#include "support/test_env.h"

namespace modelfs::fs {
namespace {

namespace mt = modelfs::testing;

constexpr std::int64_t kEmptyDirMtime = 777'000'000'000;

using layouts::ViewLayout;
using mt::file_model;
using mt::hx;
using mt::layout;

BlobRecord rec(std::uint64_t size, BlobState state = BlobState::present,
               std::int64_t ingested = 500) {
    BlobRecord r;
    r.size = size;
    r.state = state;
    r.ingested = ingested;
    return r;
}

std::int64_t now_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

class ViewTreeTest : public ::testing::Test {
  protected:
    mt::TempDir tmp_{"modelfs-viewtree"};
    Catalog cat_ = Catalog::open(tmp_ / "catalog", true);
    std::vector<ViewLayout> both_ = {layout("comfyui"), layout("a1111")};

    void put(const Model& m) {
        Txn w = cat_.write();
        w.put_model(m);
        w.commit();
    }
    void put_blob(const Sha256& h, const BlobRecord& r) {
        Txn w = cat_.write();
        w.put_blob(h, r);
        w.commit();
    }
    void del(const std::string& key) {
        Txn w = cat_.write();
        w.del_model(key);
        w.commit();
    }
    ViewTree build(bool root_mode = true) {
        Txn r = cat_.read();
        return ViewTree::build(r, both_, root_mode, kEmptyDirMtime);
    }
    ViewTree build_single(std::string_view view) {
        Txn r = cat_.read();
        return ViewTree::build(r, {layout(view)}, false, kEmptyDirMtime);
    }
    std::int64_t changed_ns(Category c) {
        Txn r = cat_.read();
        return r.category_changed_ns(c);
    }
};

// ---- Paths ---------------------------------------------------------------------------------

TEST_F(ViewTreeTest, ModelAppearsAtTheLayoutPathInEveryViewInRootMode) {
    put(file_model(Category::lora, "x", ".safetensors", hx('a'), 1234));
    ViewTree t = build();

    for (const char* path : {"comfyui/loras/x.safetensors", "a1111/Lora/x.safetensors"}) {
        SCOPED_TRACE(path);
        const Node* n = t.find_path(path);
        ASSERT_NE(n, nullptr);
        EXPECT_EQ(n->kind, Node::Kind::file);
        EXPECT_EQ(n->blob, hx('a'));
        EXPECT_EQ(n->size, 1234u);
        EXPECT_EQ(n->model_key, "lora/x.safetensors");
        EXPECT_EQ(n->version, "v1");
        EXPECT_EQ(n->category, Category::lora);
        EXPECT_TRUE(n->sidecar.empty());
        EXPECT_TRUE(n->is_model_file());
        EXPECT_EQ(n->mode, 0644u);
        EXPECT_EQ(n->mtime_ns, 1'000'000'000'000);
    }
    EXPECT_EQ(t.find_path("comfyui/loras/x.safetensors")->view, 0);
    EXPECT_EQ(t.find_path("a1111/Lora/x.safetensors")->view, 1);
    // Only in the primary folder: not in A1111's LyCORIS too.
    EXPECT_EQ(t.find_path("a1111/LyCORIS/x.safetensors"), nullptr);
    // Not at the single-view path in root mode.
    EXPECT_EQ(t.find_path("loras/x.safetensors"), nullptr);
}

TEST_F(ViewTreeTest, SingleViewModePutsTheViewsFoldersAtTheRoot) {
    put(file_model(Category::lora, "sdxl/x", ".safetensors", hx('a'), 10));
    ViewTree t = build_single("comfyui");

    const Node* n = t.find_path("loras/sdxl/x.safetensors");
    ASSERT_NE(n, nullptr);
    EXPECT_EQ(n->model_key, "lora/sdxl/x.safetensors");
    EXPECT_EQ(n->view, 0);
    const Node* sub = t.find_path("loras/sdxl");
    ASSERT_NE(sub, nullptr);
    EXPECT_EQ(sub->kind, Node::Kind::dir);
    EXPECT_EQ(sub->category, Category::lora);  // a sub-folder of a layout folder inherits it
    EXPECT_EQ(t.find_path("comfyui"), nullptr);
    EXPECT_EQ(t.find_path("comfyui/loras/sdxl/x.safetensors"), nullptr);
    EXPECT_EQ(t.find_path("by-hash"), nullptr);
    EXPECT_EQ(t.find(ViewTree::kRootIno)->view, 0);
}

TEST_F(ViewTreeTest, ModelIsAbsentFromViewsWithoutItsCategory) {
    // ComfyUI has clip_vision/, A1111 has no folder for the category.
    put(file_model(Category::clip_vision, "cv", ".safetensors", hx('c'), 5));
    // A LoRA extension ComfyUI's loras/ does not list.
    put(file_model(Category::lora, "q", ".gguf", hx('d'), 6));
    ViewTree t = build();

    EXPECT_NE(t.find_path("comfyui/clip_vision/cv.safetensors"), nullptr);
    EXPECT_EQ(t.find_path("comfyui/loras/q.gguf"), nullptr);
    EXPECT_EQ(t.find_path("a1111/Lora/q.gguf"), nullptr);
    int in_a1111 = 0;
    t.for_each([&](const Node& n) {
        if (n.view == 1 && n.kind == Node::Kind::file) ++in_a1111;
    });
    EXPECT_EQ(in_a1111, 0);
}

TEST_F(ViewTreeTest, EveryLayoutFolderExistsEvenWhenEmpty) {
    ViewTree t = build();  // empty catalog
    for (const auto& v : both_) {
        const Node* root = t.find_path(v.name());
        ASSERT_NE(root, nullptr) << v.name();
        EXPECT_EQ(root->kind, Node::Kind::dir);
        for (const auto& f : v.folders()) {
            const Node* d = t.find_path(v.name() + "/" + f.path);
            ASSERT_NE(d, nullptr) << v.name() << "/" << f.path;
            EXPECT_EQ(d->kind, Node::Kind::dir);
            EXPECT_EQ(d->category, f.category);
            EXPECT_TRUE(d->children.empty());
            EXPECT_EQ(d->mtime_ns, kEmptyDirMtime);  // no entry, category never changed
        }
        EXPECT_EQ(root->children.size(), v.folders().size());
    }
    // The root holds the views and by-hash/, nothing else.
    const Node* root = t.find(ViewTree::kRootIno);
    ASSERT_NE(root, nullptr);
    std::set<std::string> names;
    for (const auto& [name, ino] : root->children) names.insert(name);
    EXPECT_EQ(names, (std::set<std::string>{"a1111", "by-hash", "comfyui"}));

    ViewTree single = build_single("a1111");
    const ViewLayout a1111 = layout("a1111");
    for (const auto& f : a1111.folders()) {
        EXPECT_NE(single.find_path(f.path), nullptr) << f.path;
    }
}

// ---- Inode numbers -------------------------------------------------------------------------

TEST_F(ViewTreeTest, FileInoIsStableAcrossBuildsAndChangesWithTheBlob) {
    put(file_model(Category::lora, "x", ".safetensors", hx('a'), 10));
    ViewTree t1 = build();
    ViewTree t2 = build();
    const Node* a = t1.find_path("comfyui/loras/x.safetensors");
    const Node* b = t2.find_path("comfyui/loras/x.safetensors");
    ASSERT_NE(a, nullptr);
    ASSERT_NE(b, nullptr);
    EXPECT_EQ(a->ino, b->ino);
    EXPECT_EQ(a->ino, ViewTree::file_ino("comfyui/loras/x.safetensors", hx('a')));
    // The same model in the other view is another inode.
    EXPECT_NE(a->ino, t1.find_path("a1111/Lora/x.safetensors")->ino);

    put(file_model(Category::lora, "x", ".safetensors", hx('b'), 10));  // a new content
    ViewTree t3 = build();
    const Node* c = t3.find_path("comfyui/loras/x.safetensors");
    ASSERT_NE(c, nullptr);
    EXPECT_NE(c->ino, a->ino);
    EXPECT_EQ(c->ino, ViewTree::file_ino("comfyui/loras/x.safetensors", hx('b')));
    // The folder's number did not move.
    EXPECT_EQ(t3.find_path("comfyui/loras")->ino, t1.find_path("comfyui/loras")->ino);
}

TEST_F(ViewTreeTest, DirInoDependsOnThePathOnly) {
    ViewTree empty = build();
    put(file_model(Category::lora, "sdxl/x", ".safetensors", hx('a'), 10));
    ViewTree full = build();
    for (const char* path : {"comfyui", "comfyui/loras", "a1111/Lora", "by-hash/sha256"}) {
        SCOPED_TRACE(path);
        ASSERT_NE(empty.find_path(path), nullptr);
        EXPECT_EQ(empty.find_path(path)->ino, ViewTree::dir_ino(path));
        EXPECT_EQ(full.find_path(path)->ino, ViewTree::dir_ino(path));
    }
    EXPECT_EQ(full.find_path("comfyui/loras/sdxl")->ino, ViewTree::dir_ino("comfyui/loras/sdxl"));
    // Single-view mode: the same folder has another path, hence another number.
    ViewTree single = build_single("comfyui");
    EXPECT_EQ(single.find_path("loras")->ino, ViewTree::dir_ino("loras"));
    EXPECT_NE(ViewTree::dir_ino("loras"), ViewTree::dir_ino("comfyui/loras"));
    EXPECT_GT(ViewTree::dir_ino(""), ViewTree::kRootIno);
    EXPECT_NE(ViewTree::dir_ino("a"), ViewTree::file_ino("a", Sha256{}));
}

// ---- Sidecars ------------------------------------------------------------------------------

TEST_F(ViewTreeTest, SidecarsSitBesideTheModelInEveryView) {
    Model m = file_model(Category::lora, "sdxl/foo", ".safetensors", hx('a'), 100);
    m.versions[0].sidecars = {{".civitai.info", hx('c'), 30}, {".preview.png", hx('b'), 20}};
    put(m);
    ViewTree t = build();
    for (std::string dir : {"comfyui/loras/sdxl/", "a1111/Lora/sdxl/"}) {
        SCOPED_TRACE(dir);
        const Node* png = t.find_path(dir + "foo.preview.png");
        ASSERT_NE(png, nullptr);
        EXPECT_EQ(png->kind, Node::Kind::file);
        EXPECT_EQ(png->blob, hx('b'));
        EXPECT_EQ(png->size, 20u);
        EXPECT_EQ(png->sidecar, ".preview.png");
        EXPECT_EQ(png->model_key, "lora/sdxl/foo.safetensors");
        EXPECT_FALSE(png->is_model_file());
        EXPECT_EQ(png->ino, ViewTree::file_ino(dir + "foo.preview.png", hx('b')));
        const Node* info = t.find_path(dir + "foo.civitai.info");
        ASSERT_NE(info, nullptr);
        EXPECT_EQ(info->blob, hx('c'));
        EXPECT_EQ(info->size, 30u);
        EXPECT_EQ(info->sidecar, ".civitai.info");
        // The folder lists exactly the model and its two sidecars.
        const Node* d = t.find_path(dir.substr(0, dir.size() - 1));
        ASSERT_NE(d, nullptr);
        EXPECT_EQ(d->children.size(), 3u);
    }
}

TEST_F(ViewTreeTest, SidecarSuffixCaseIsKeptAsSpelled) {
    Model m = file_model(Category::lora, "foo", ".safetensors", hx('a'), 100);
    m.versions[0].sidecars = {{".PNG", hx('b'), 20}};
    put(m);
    ViewTree t = build_single("comfyui");
    const Node* n = t.find_path("loras/foo.PNG");
    ASSERT_NE(n, nullptr);
    EXPECT_EQ(n->sidecar, ".PNG");
    EXPECT_EQ(t.find_path("loras/foo.png"), nullptr);
}

TEST_F(ViewTreeTest, SidecarNamedLikeAnExistingFileDoesNotReplaceIt) {
    // A sidecar whose name is the model file's own name: the model file stays what it was.
    Model m = file_model(Category::lora, "foo", ".safetensors", hx('a'), 100);
    m.versions[0].sidecars = {{".preview.png", hx('b'), 20}, {".safetensors", hx('e'), 7}};
    put(m);
    ViewTree t = build();
    const Node* n = t.find_path("comfyui/loras/foo.safetensors");
    ASSERT_NE(n, nullptr);
    EXPECT_EQ(n->blob, hx('a'));
    EXPECT_EQ(n->size, 100u);
    EXPECT_TRUE(n->sidecar.empty());
    EXPECT_TRUE(n->is_model_file());
    EXPECT_EQ(n->ino, ViewTree::file_ino("comfyui/loras/foo.safetensors", hx('a')));
    EXPECT_NE(t.find_path("comfyui/loras/foo.preview.png"), nullptr);
    EXPECT_EQ(t.find_path("comfyui/loras")->children.size(), 2u);
}

// ---- by-hash -------------------------------------------------------------------------------

TEST_F(ViewTreeTest, ByHashListsPresentBlobsOnlyInRootMode) {
    put_blob(hx('1'), rec(11, BlobState::present, 42));
    put_blob(hx('2'), rec(22, BlobState::remote));
    put_blob(hx('3'), rec(33, BlobState::quarantined));
    put_blob(hx('4'), rec(44, BlobState::partial));
    ViewTree t = build();

    const Node* dir = t.find_path("by-hash/sha256");
    ASSERT_NE(dir, nullptr);
    ASSERT_EQ(dir->children.size(), 1u);
    EXPECT_EQ(dir->children.begin()->first, hx('1').hex());
    const Node* n = t.find_path("by-hash/sha256/" + hx('1').hex());
    ASSERT_NE(n, nullptr);
    EXPECT_EQ(n->blob, hx('1'));
    EXPECT_EQ(n->size, 11u);
    EXPECT_EQ(n->mode, 0444u);
    EXPECT_EQ(n->mtime_ns, 42'000'000'000);
    EXPECT_EQ(n->view, -1);
    EXPECT_TRUE(n->model_key.empty());
    EXPECT_FALSE(n->is_model_file());
    EXPECT_EQ(t.find_path("by-hash/sha256/" + hx('2').hex()), nullptr);
    EXPECT_EQ(t.find_path("by-hash/sha256/" + hx('3').hex()), nullptr);
    EXPECT_EQ(t.find_path("by-hash/sha256/" + hx('4').hex()), nullptr);

    ViewTree single = build_single("comfyui");
    EXPECT_EQ(single.find_path("by-hash"), nullptr);
    EXPECT_EQ(single.find_path("by-hash/sha256/" + hx('1').hex()), nullptr);
}

// ---- Folder mtimes -------------------------------------------------------------------------

TEST_F(ViewTreeTest, FolderMtimeFollowsTheCategorysLastChange) {
    const std::int64_t before = now_ns();
    put(file_model(Category::lora, "a", ".safetensors", hx('a'), 1, 100));
    put(file_model(Category::lora, "b", ".safetensors", hx('b'), 1, 200));
    const std::int64_t c1 = changed_ns(Category::lora);
    EXPECT_GE(c1, before);
    ViewTree t1 = build();
    const std::int64_t m1 = t1.find_path("comfyui/loras")->mtime_ns;
    EXPECT_EQ(m1, c1);  // the entries (100 s, 200 s) are older than the change
    EXPECT_EQ(t1.find_path("a1111/Lora")->mtime_ns, c1);
    // Parents carry their newest descendant's mtime.
    EXPECT_GE(t1.find_path("comfyui")->mtime_ns, m1);
    EXPECT_GE(t1.find(ViewTree::kRootIno)->mtime_ns, m1);
    // Another category's folder is untouched.
    EXPECT_EQ(t1.find_path("comfyui/checkpoints")->mtime_ns, kEmptyDirMtime);

    // Deleting the newest model moves the mtime forward, not back to the remaining entry's.
    del("lora/b.safetensors");
    ViewTree t2 = build();
    const std::int64_t m2 = t2.find_path("comfyui/loras")->mtime_ns;
    EXPECT_GT(m2, m1);
    EXPECT_EQ(m2, changed_ns(Category::lora));
    EXPECT_EQ(t2.find_path("comfyui/loras")->children.size(), 1u);

    // Deleting the last one leaves an empty folder that still moved forward.
    del("lora/a.safetensors");
    ViewTree t3 = build();
    EXPECT_GT(t3.find_path("comfyui/loras")->mtime_ns, m2);
    EXPECT_TRUE(t3.find_path("comfyui/loras")->children.empty());
}

TEST_F(ViewTreeTest, SubFolderMtimeIsAtLeastTheCategorysChange) {
    put(file_model(Category::lora, "sdxl/a", ".safetensors", hx('a'), 1, 100));
    ViewTree t = build_single("comfyui");
    EXPECT_EQ(t.find_path("loras/sdxl")->mtime_ns, changed_ns(Category::lora));
}

// A model shown with a future mtime (`touch -d`, or saved with one) must not freeze its folder's
// mtime: tools that rescan a folder only when its mtime changes (ComfyUI's folder cache) would
// keep listing a deleted model.
TEST_F(ViewTreeTest, DeletionChangesFolderMtimeEvenWithAFutureDatedEntry) {
    const std::int64_t future = now_ns() / 1'000'000'000 + 1'000'000;
    Model f = file_model(Category::lora, "future", ".safetensors", hx('a'), 1, 100);
    f.versions[0].mtime = future;
    put(f);
    put(file_model(Category::lora, "gone", ".safetensors", hx('b'), 1, 100));
    ViewTree t1 = build();
    const std::int64_t m1 = t1.find_path("comfyui/loras")->mtime_ns;
    EXPECT_EQ(m1, changed_ns(Category::lora));  // the category's change, not the future entry
    EXPECT_EQ(t1.find_path("comfyui/loras/future.safetensors")->mtime_ns, future * 1'000'000'000);
    del("lora/gone.safetensors");
    ViewTree t2 = build();
    EXPECT_EQ(t2.find_path("comfyui/loras")->children.size(), 1u);
    EXPECT_NE(t2.find_path("comfyui/loras")->mtime_ns, m1);
}

// ---- Shown mtime and mode ------------------------------------------------------------------

TEST_F(ViewTreeTest, ShownMtimeAndModeOfTheVersionAreTheNodes) {
    Model m = file_model(Category::lora, "x", ".safetensors", hx('a'), 10, 100);
    m.versions[0].mtime = 1'700'000'123;
    m.versions[0].mode = 0100600;  // file-type bits are dropped
    m.versions[0].sidecars = {{".json", hx('b'), 2}};
    put(m);
    ViewTree t = build();
    for (const char* path :
         {"comfyui/loras/x.safetensors", "a1111/Lora/x.safetensors", "comfyui/loras/x.json"}) {
        SCOPED_TRACE(path);
        const Node* n = t.find_path(path);
        ASSERT_NE(n, nullptr);
        EXPECT_EQ(n->mtime_ns, 1'700'000'123'000'000'000);
        EXPECT_EQ(n->mode, 0600u);
    }

    // Unset: `added` and 0644.
    put(file_model(Category::vae, "v", ".safetensors", hx('c'), 10, 321));
    ViewTree t2 = build();
    const Node* v = t2.find_path("comfyui/vae/v.safetensors");
    ASSERT_NE(v, nullptr);
    EXPECT_EQ(v->mtime_ns, 321'000'000'000);
    EXPECT_EQ(v->mode, 0644u);
    EXPECT_EQ(t2.find_path("comfyui/vae")->mode, 0755u);
}

TEST_F(ViewTreeTest, CurrentVersionIsTheOneShown) {
    Model m = file_model(Category::lora, "x", ".safetensors", hx('a'), 10);
    ModelVersion v2 = m.versions[0];
    v2.label = "v2";
    v2.blob = hx('b');
    v2.size = 20;
    m.versions.push_back(v2);
    m.current = 0;
    put(m);
    ViewTree t = build();
    const Node* n = t.find_path("comfyui/loras/x.safetensors");
    ASSERT_NE(n, nullptr);
    EXPECT_EQ(n->version, "v1");
    EXPECT_EQ(n->blob, hx('a'));
    EXPECT_EQ(n->size, 10u);
}

// ---- Lookups -------------------------------------------------------------------------------

TEST_F(ViewTreeTest, FindPathAndChildAgree) {
    Model m = file_model(Category::lora, "sdxl/foo", ".safetensors", hx('a'), 100);
    m.versions[0].sidecars = {{".preview.png", hx('b'), 20}};
    put(m);
    put(file_model(Category::checkpoint, "base", ".ckpt", hx('c'), 1));
    put_blob(hx('a'), rec(100));
    ViewTree t = build();

    std::size_t seen = 0;
    t.for_each([&](const Node& n) {
        ++seen;
        SCOPED_TRACE(n.path);
        EXPECT_EQ(t.find_path(n.path), &n);
        EXPECT_EQ(t.find(n.ino), &n);
        if (n.ino == ViewTree::kRootIno) {
            EXPECT_EQ(n.path, "");
            return;
        }
        EXPECT_EQ(t.child(n.parent, n.name), &n);
        EXPECT_EQ(leaf_of(n.path), n.name);
        EXPECT_EQ(t.find(n.parent)->path, parent_of(n.path));
        if (n.kind == Node::Kind::dir) {
            for (const auto& [name, ino] : n.children) {
                EXPECT_EQ(t.find(ino)->parent, n.ino);
            }
        }
    });
    EXPECT_EQ(seen, t.size());
    EXPECT_EQ(t.child(ViewTree::kRootIno, "nope"), nullptr);
    // child() of a file is nothing.
    const Node* f = t.find_path("comfyui/loras/sdxl/foo.safetensors");
    ASSERT_NE(f, nullptr);
    EXPECT_EQ(t.child(f->ino, "x"), nullptr);
    EXPECT_EQ(t.find_path("/comfyui"), nullptr);
    EXPECT_EQ(t.find_path("comfyui/"), nullptr);
}

TEST(ViewTreePaths, JoinParentLeaf) {
    EXPECT_EQ(join_path("", "a"), "a");
    EXPECT_EQ(join_path("a/b", "c"), "a/b/c");
    EXPECT_EQ(parent_of("a/b/c"), "a/b");
    EXPECT_EQ(parent_of("a"), "");
    EXPECT_EQ(leaf_of("a/b/c"), "c");
    EXPECT_EQ(leaf_of("a"), "a");
    const auto& s = sidecar_suffixes();
    ASSERT_FALSE(s.empty());
    for (std::size_t i = 1; i < s.size(); ++i) {
        EXPECT_GE(s[i - 1].size(), s[i].size());
    }
    EXPECT_EQ(s.front(), ".preview.jpeg");
}

}  // namespace
}  // namespace modelfs::fs
