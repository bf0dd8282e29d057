// Namespace: where a mount path falls, how the catalog snapshot (ViewTree) and the views' overlay
// folders (STORE/views/<view>/) merge, what a written file is to the ingester (role), and the
// inode numbers of overlay files. Real catalogs and overlay folders in temp dirs.
#include "namespace.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "modelfs/fs/view_tree.h"
#include "modelfs/layouts/view_layout.h"
#include "modelfs/store/catalog.h"
#include "modelfs/store/view_files.h"
#include "support/catalog_builders.h"
#include "support/test_env.h"

namespace modelfs::fs {
namespace {

namespace mt = modelfs::testing;
namespace stdfs = std::filesystem;

constexpr std::int64_t kEmptyDirMtime = 777'000'000'000;

using layouts::ViewLayout;
using mt::file_model;
using mt::hx;
using mt::layout;

void write(const stdfs::path& p, const std::string& text) {
    stdfs::create_directories(p.parent_path());
    std::ofstream(p, std::ios::binary | std::ios::trunc) << text;
}

void set_mtime(const stdfs::path& p, std::int64_t sec) {
    struct timespec ts[2] = {{sec, 0}, {sec, 0}};
    if (::utimensat(AT_FDCWD, p.c_str(), ts, 0) != 0) throw std::runtime_error("utimensat");
}

std::int64_t mtime_ns(const Entry& e) {
    return std::int64_t{e.st.st_mtim.tv_sec} * 1'000'000'000 + e.st.st_mtim.tv_nsec;
}

std::vector<std::string> names(const std::vector<std::pair<std::string, Entry>>& l) {
    std::vector<std::string> out;
    for (const auto& [name, e] : l) out.push_back(name);
    return out;
}

class NamespaceTest : public ::testing::Test {
  protected:
    mt::TempDir tmp_{"modelfs-namespace"};
    stdfs::path store_ = tmp_.path();
    Catalog cat_ = Catalog::open(store_ / "catalog", true);
    std::vector<ViewLayout> views_ = {layout("comfyui"), layout("a1111")};
    Namespace root_ns_{store_, views_, true};
    Namespace single_ns_{store_, {layout("comfyui")}, false};

    void SetUp() override {
        Model foo = file_model(Category::lora, "foo", ".safetensors", hx('a'), 100);
        foo.versions[0].sidecars = {{".preview.png", hx('b'), 20}};
        Txn w = cat_.write();
        w.put_model(foo);
        w.put_model(file_model(Category::lora, "sdxl/bar", ".safetensors", hx('c'), 30));
        w.put_model(file_model(Category::checkpoint, "base", ".ckpt", hx('d'), 40));
        w.commit();
    }
    ViewTree tree(bool root_mode = true) {
        Txn r = cat_.read();
        return root_mode ? ViewTree::build(r, views_, true, kEmptyDirMtime)
                         : ViewTree::build(r, {layout("comfyui")}, false, kEmptyDirMtime);
    }
    stdfs::path overlay(const std::string& view) const { return store_ / "views" / view; }
};

// ---- locate --------------------------------------------------------------------------------

TEST_F(NamespaceTest, LocateInRootMode) {
    Location l = root_ns_.locate("");
    EXPECT_EQ(l.area, Location::Area::root);
    EXPECT_EQ(l.view, -1);

    l = root_ns_.locate("by-hash/sha256/abc");
    EXPECT_EQ(l.area, Location::Area::by_hash);
    EXPECT_EQ(l.rel, "sha256/abc");
    EXPECT_EQ(root_ns_.locate("by-hash").area, Location::Area::by_hash);

    l = root_ns_.locate("comfyui/loras/x.safetensors");
    EXPECT_EQ(l.area, Location::Area::view);
    EXPECT_EQ(l.view, 0);
    EXPECT_EQ(l.rel, "loras/x.safetensors");

    l = root_ns_.locate("a1111");
    EXPECT_EQ(l.area, Location::Area::view);
    EXPECT_EQ(l.view, 1);
    EXPECT_EQ(l.rel, "");

    EXPECT_EQ(root_ns_.locate("nope").area, Location::Area::nowhere);
    EXPECT_EQ(root_ns_.locate("nope/loras").area, Location::Area::nowhere);
    EXPECT_EQ(root_ns_.locate("comfyuiX/loras").area, Location::Area::nowhere);
    EXPECT_EQ(root_ns_.locate("loras/x.safetensors").area, Location::Area::nowhere);

    EXPECT_EQ(root_ns_.real_path(root_ns_.locate("comfyui/loras/x")),
              store_ / "views" / "comfyui" / "loras" / "x");
    EXPECT_EQ(root_ns_.real_path(root_ns_.locate("a1111")), store_ / "views" / "a1111");
    EXPECT_EQ(root_ns_.overlay_root(1), store_ / "views" / "a1111");
}

TEST_F(NamespaceTest, LocateInSingleViewMode) {
    for (const char* path : {"", "loras/x.safetensors", "by-hash/sha256/abc", "comfyui/loras"}) {
        SCOPED_TRACE(path);
        Location l = single_ns_.locate(path);
        EXPECT_EQ(l.area, Location::Area::view);
        EXPECT_EQ(l.view, 0);
        EXPECT_EQ(l.rel, path);
    }
    EXPECT_EQ(single_ns_.real_path(single_ns_.locate("loras/x")),
              store_ / "views" / "comfyui" / "loras" / "x");
}

// ---- resolve -------------------------------------------------------------------------------

TEST_F(NamespaceTest, ResolveTreeFileAndDir) {
    ViewTree t = tree();
    Entry f = root_ns_.resolve(t, "comfyui/loras/foo.safetensors");
    EXPECT_EQ(f.kind, Entry::Kind::tree_file);
    EXPECT_FALSE(f.in_overlay);
    EXPECT_EQ(f.blob, hx('a'));
    EXPECT_EQ(f.st.st_size, 100);
    EXPECT_EQ(f.model_key, "lora/foo.safetensors");
    EXPECT_EQ(f.view, 0);
    EXPECT_EQ(f.ino, ViewTree::file_ino("comfyui/loras/foo.safetensors", hx('a')));
    EXPECT_EQ(f.st.st_ino, f.ino);
    EXPECT_TRUE(S_ISREG(f.st.st_mode));
    EXPECT_EQ(f.st.st_mode & 07777, 0644u);
    EXPECT_EQ(mtime_ns(f), 1'000'000'000'000);

    Entry sc = root_ns_.resolve(t, "a1111/Lora/foo.preview.png");
    EXPECT_EQ(sc.kind, Entry::Kind::tree_file);
    EXPECT_EQ(sc.sidecar, ".preview.png");
    EXPECT_EQ(sc.view, 1);

    Entry d = root_ns_.resolve(t, "comfyui/loras");
    EXPECT_EQ(d.kind, Entry::Kind::dir);
    EXPECT_TRUE(S_ISDIR(d.st.st_mode));
    EXPECT_FALSE(d.in_overlay);
    EXPECT_EQ(d.ino, ViewTree::dir_ino("comfyui/loras"));

    Entry bh = root_ns_.resolve(t, "by-hash/sha256");
    EXPECT_EQ(bh.kind, Entry::Kind::dir);
    EXPECT_TRUE(bh.by_hash);

    EXPECT_FALSE(root_ns_.resolve(t, "nope").exists());
    EXPECT_FALSE(root_ns_.resolve(t, "comfyui/loras/missing.safetensors").exists());
    EXPECT_EQ(root_ns_.resolve(t, "").kind, Entry::Kind::dir);
}

TEST_F(NamespaceTest, OverlayFileShadowsTreeFileAtTheSamePath) {
    ViewTree t = tree();
    write(overlay("comfyui") / "loras" / "foo.safetensors", "new version");
    Entry e = root_ns_.resolve(t, "comfyui/loras/foo.safetensors");
    EXPECT_EQ(e.kind, Entry::Kind::overlay_file);
    EXPECT_TRUE(e.in_overlay);
    EXPECT_EQ(e.st.st_size, 11);
    EXPECT_EQ(e.real, overlay("comfyui") / "loras" / "foo.safetensors");
    struct stat st {};
    ASSERT_EQ(::lstat(e.real.c_str(), &st), 0);
    EXPECT_EQ(e.real_ino, st.st_ino);
    EXPECT_EQ(e.ino, Namespace::overlay_ino(e.real, st));
    EXPECT_EQ(e.st.st_ino, e.ino);
    EXPECT_NE(e.ino, ViewTree::file_ino("comfyui/loras/foo.safetensors", hx('a')));
    EXPECT_TRUE(e.model_key.empty());
    // The other view still shows the catalog's file.
    EXPECT_EQ(root_ns_.resolve(t, "a1111/Lora/foo.safetensors").kind, Entry::Kind::tree_file);

    // Single-view mode reads the same overlay folder.
    ViewTree ts = tree(false);
    EXPECT_EQ(single_ns_.resolve(ts, "loras/foo.safetensors").kind, Entry::Kind::overlay_file);
}

TEST_F(NamespaceTest, OverlayDirMergesWithTreeDirTakingTheNewerMtime) {
    ViewTree t = tree();
    const stdfs::path real = overlay("comfyui") / "loras";
    stdfs::create_directories(real);
    const std::int64_t tree_mtime = t.find_path("comfyui/loras")->mtime_ns;

    set_mtime(real, 5);  // older than the tree's folder
    Entry e = root_ns_.resolve(t, "comfyui/loras");
    EXPECT_EQ(e.kind, Entry::Kind::dir);
    EXPECT_TRUE(e.in_overlay);
    EXPECT_EQ(e.ino, ViewTree::dir_ino("comfyui/loras"));
    struct stat st {};
    ASSERT_EQ(::lstat(real.c_str(), &st), 0);
    EXPECT_EQ(e.real_ino, st.st_ino);
    EXPECT_EQ(mtime_ns(e), tree_mtime);

    const std::int64_t future = tree_mtime / 1'000'000'000 + 100'000;
    set_mtime(real, future);  // newer
    e = root_ns_.resolve(t, "comfyui/loras");
    EXPECT_TRUE(e.in_overlay);
    EXPECT_EQ(mtime_ns(e), future * 1'000'000'000);
    EXPECT_EQ(e.ino, ViewTree::dir_ino("comfyui/loras"));  // the number does not change

    // An overlay folder the tree does not have is a dir of its own.
    stdfs::create_directories(overlay("comfyui") / "custom" / "deep");
    Entry c = root_ns_.resolve(t, "comfyui/custom/deep");
    EXPECT_EQ(c.kind, Entry::Kind::dir);
    EXPECT_TRUE(c.in_overlay);
    EXPECT_EQ(c.ino, ViewTree::dir_ino("comfyui/custom/deep"));
    EXPECT_EQ(c.view, 0);
}

// chmod and chown of a catalogued folder go to its overlay twin, which the folder then shows;
// twins are made with the catalog's folder mode whatever the umask.
TEST_F(NamespaceTest, CataloguedFolderShowsItsTwinsModeAndOwner) {
    ViewTree t = tree();
    EXPECT_EQ(root_ns_.resolve(t, "comfyui/loras/sdxl").st.st_mode & 07777, 0755u);
    const mode_t old_umask = ::umask(077);
    root_ns_.make_overlay_dirs(root_ns_.locate("comfyui/loras/sdxl"));
    ::umask(old_umask);
    struct stat st;
    ASSERT_EQ(::stat((overlay("comfyui") / "loras").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0755u);
    EXPECT_EQ(root_ns_.resolve(t, "comfyui/loras/sdxl").st.st_mode & 07777, 0755u);
    ASSERT_EQ(::chmod((overlay("comfyui") / "loras" / "sdxl").c_str(), 01770), 0);
    Entry e = root_ns_.resolve(t, "comfyui/loras/sdxl");
    EXPECT_EQ(e.kind, Entry::Kind::dir);
    EXPECT_TRUE(e.in_overlay);
    EXPECT_EQ(e.st.st_mode, static_cast<mode_t>(S_IFDIR | 01770));
    EXPECT_EQ(e.st.st_uid, ::geteuid());
}

// The folders entries are made in are opened without following a link anywhere below the view's
// overlay folder: a folder swapped for a link (to /etc, say) is refused.
TEST_F(NamespaceTest, OverlayFoldersAreOpenedWithoutFollowingLinks) {
    const stdfs::path elsewhere = store_ / "elsewhere";
    stdfs::create_directories(elsewhere / "sub");
    stdfs::create_directories(overlay("comfyui") / "real" / "sub");
    stdfs::create_directory_symlink(elsewhere, overlay("comfyui") / "link");
    EXPECT_TRUE(static_cast<bool>(root_ns_.open_overlay_dir(root_ns_.locate("comfyui"))));
    EXPECT_TRUE(static_cast<bool>(root_ns_.open_overlay_dir(root_ns_.locate("comfyui/real/sub"))));
    for (const char* p : {"comfyui/link", "comfyui/link/sub"}) {
        errno = 0;
        EXPECT_FALSE(static_cast<bool>(root_ns_.open_overlay_dir(root_ns_.locate(p)))) << p;
        EXPECT_EQ(errno, ELOOP) << p;
    }
}

TEST_F(NamespaceTest, ListIsTheSortedUnionWithoutDuplicates) {
    ViewTree t = tree();
    write(overlay("comfyui") / "loras" / "foo.safetensors", "shadow");  // also in the tree
    write(overlay("comfyui") / "loras" / "notes.txt", "hi");
    write(overlay("comfyui") / "loras" / "a.partial", "x");
    stdfs::create_directories(overlay("comfyui") / "loras" / "sdxl");  // also in the tree
    stdfs::create_directories(overlay("comfyui") / "loras" / "zz");

    auto l = root_ns_.list(t, "comfyui/loras");
    EXPECT_EQ(names(l), (std::vector<std::string>{"a.partial", "foo.preview.png", "foo.safetensors",
                                                  "notes.txt", "sdxl", "zz"}));
    for (const auto& [name, e] : l) {
        SCOPED_TRACE(name);
        EXPECT_EQ(e.path, "comfyui/loras/" + name);
        if (name == "foo.safetensors" || name == "notes.txt" || name == "a.partial") {
            EXPECT_EQ(e.kind, Entry::Kind::overlay_file);
        }
        if (name == "foo.preview.png") {
            EXPECT_EQ(e.kind, Entry::Kind::tree_file);
        }
        if (name == "sdxl") {
            EXPECT_EQ(e.kind, Entry::Kind::dir);
            EXPECT_TRUE(e.in_overlay);
        }
        if (name == "zz") {
            EXPECT_EQ(e.kind, Entry::Kind::dir);
        }
    }

    // Without an overlay folder: the tree's entries only.
    EXPECT_EQ(names(root_ns_.list(t, "a1111/Lora")),
              (std::vector<std::string>{"foo.preview.png", "foo.safetensors", "sdxl"}));
    // The root lists the views and by-hash, no overlay.
    EXPECT_EQ(names(root_ns_.list(t, "")),
              (std::vector<std::string>{"a1111", "by-hash", "comfyui"}));
    // A folder only the overlay has.
    write(overlay("a1111") / "configs" / "x.yaml", "y");
    EXPECT_EQ(names(root_ns_.list(t, "a1111/configs")), (std::vector<std::string>{"x.yaml"}));
    EXPECT_TRUE(root_ns_.list(t, "nope").empty());
    // The view's root: layout folders plus the overlay's own.
    auto top = names(root_ns_.list(t, "a1111"));
    EXPECT_EQ(std::count(top.begin(), top.end(), "configs"), 1);
    EXPECT_EQ(std::count(top.begin(), top.end(), "Lora"), 1);
    EXPECT_TRUE(std::is_sorted(top.begin(), top.end()));
    EXPECT_EQ(top.size(), layout("a1111").folders().size() + 1);
}

// ---- role ----------------------------------------------------------------------------------

TEST_F(NamespaceTest, RoleOfAModelFileInACategoryFolder) {
    ViewTree t = tree();
    FileRole r = root_ns_.role(t, 0, "loras/sdxl/foo.safetensors");
    EXPECT_EQ(r.kind, FileRole::Kind::model);
    EXPECT_EQ(r.category, Category::lora);
    EXPECT_EQ(r.name, "sdxl/foo.safetensors");
    EXPECT_EQ(r.ext, ".safetensors");

    r = root_ns_.role(t, 1, "Stable-diffusion/new.SafeTensors");
    EXPECT_EQ(r.kind, FileRole::Kind::model);
    EXPECT_EQ(r.category, Category::checkpoint);
    EXPECT_EQ(r.name, "new.SafeTensors");
    EXPECT_EQ(r.ext, ".SafeTensors");

    ViewTree ts = tree(false);
    r = single_ns_.role(ts, 0, "loras/sdxl/foo.safetensors");
    EXPECT_EQ(r.kind, FileRole::Kind::model);
    EXPECT_EQ(r.name, "sdxl/foo.safetensors");
}

TEST_F(NamespaceTest, RoleOfASidecarBesideACataloguedModel) {
    ViewTree t = tree();
    ViewTree ts = tree(false);
    for (const Namespace* ns : {&root_ns_, &single_ns_}) {
        const ViewTree& tr = ns == &root_ns_ ? t : ts;
        SCOPED_TRACE(ns == &root_ns_ ? "root" : "single");
        FileRole r = ns->role(tr, 0, "loras/foo.preview.png");
        EXPECT_EQ(r.kind, FileRole::Kind::sidecar);
        EXPECT_EQ(r.category, Category::lora);
        EXPECT_EQ(r.name, "foo.safetensors");
        EXPECT_EQ(r.suffix, ".preview.png");

        r = ns->role(tr, 0, "loras/foo.preview.PNG");
        EXPECT_EQ(r.kind, FileRole::Kind::sidecar);
        EXPECT_EQ(r.suffix, ".preview.PNG");

        r = ns->role(tr, 0, "loras/foo.civitai.info");
        EXPECT_EQ(r.kind, FileRole::Kind::sidecar);
        EXPECT_EQ(r.suffix, ".civitai.info");

        r = ns->role(tr, 0, "loras/sdxl/bar.json");
        EXPECT_EQ(r.kind, FileRole::Kind::sidecar);
        EXPECT_EQ(r.name, "sdxl/bar.safetensors");
        EXPECT_EQ(r.suffix, ".json");

        r = ns->role(tr, 0, "checkpoints/base.yaml");
        EXPECT_EQ(r.kind, FileRole::Kind::sidecar);
        EXPECT_EQ(r.category, Category::checkpoint);
        EXPECT_EQ(r.name, "base.ckpt");
    }
    // A1111's folder names.
    FileRole r = root_ns_.role(t, 1, "Lora/foo.txt");
    EXPECT_EQ(r.kind, FileRole::Kind::sidecar);
    EXPECT_EQ(r.name, "foo.safetensors");
    EXPECT_EQ(r.suffix, ".txt");
}

TEST_F(NamespaceTest, RoleOfOtherFilesIsPlain) {
    ViewTree t = tree();
    // No model named "other" in loras/.
    EXPECT_EQ(root_ns_.role(t, 0, "loras/other.txt").kind, FileRole::Kind::plain);
    EXPECT_EQ(root_ns_.role(t, 0, "loras/other.preview.png").kind, FileRole::Kind::plain);
    // A model "foo" exists, but in another folder.
    EXPECT_EQ(root_ns_.role(t, 0, "vae/foo.txt").kind, FileRole::Kind::plain);
    EXPECT_EQ(root_ns_.role(t, 0, "loras/sdxl/foo.txt").kind, FileRole::Kind::plain);
    // Not a sidecar suffix.
    EXPECT_EQ(root_ns_.role(t, 0, "loras/foo.md").kind, FileRole::Kind::plain);
    // Outside category folders, and folders that do not exist.
    EXPECT_EQ(root_ns_.role(t, 0, "configs/x.yaml").kind, FileRole::Kind::plain);
    EXPECT_EQ(root_ns_.role(t, 0, "custom/foo.txt").kind, FileRole::Kind::plain);
    EXPECT_EQ(root_ns_.role(t, 0, "notes.txt").kind, FileRole::Kind::plain);
    // An extension the folder does not accept.
    EXPECT_EQ(root_ns_.role(t, 1, "Lora/x.gguf").kind, FileRole::Kind::plain);
    // The suffix alone is no sidecar.
    EXPECT_EQ(root_ns_.role(t, 0, "loras/.txt").kind, FileRole::Kind::plain);
}

TEST_F(NamespaceTest, RoleOfOtherLargeFilesIsAFileOfTheView) {
    ViewTree t = tree();
    constexpr std::uint64_t kBig = 1 << 20;
    FileRole r = root_ns_.role(t, 0, "rembg/u2net.onnx", kBig);
    EXPECT_EQ(r.kind, FileRole::Kind::model);
    EXPECT_EQ(r.category, Category::file);
    EXPECT_EQ(r.name, "comfyui/rembg/u2net.onnx");
    EXPECT_EQ(r.ext, ".onnx");
    // An extension the folder does not list, in a model folder; a name without an extension.
    r = root_ns_.role(t, 1, "Lora/x.gguf", kBig);
    EXPECT_EQ(r.kind, FileRole::Kind::model);
    EXPECT_EQ(r.name, "a1111/Lora/x.gguf");
    r = root_ns_.role(t, 0, "face-api/model-shard1", kBig);
    EXPECT_EQ(r.name, "comfyui/face-api/model-shard1");
    EXPECT_EQ(r.ext, "");
    // Models and sidecars are what they were, whatever their size.
    r = root_ns_.role(t, 0, "loras/x.safetensors", kBig);
    EXPECT_EQ(r.category, Category::lora);
    EXPECT_EQ(root_ns_.role(t, 0, "loras/foo.preview.png", kBig).kind, FileRole::Kind::sidecar);
    // Small files and files tools edit in place stay plain (view_files.h).
    EXPECT_EQ(root_ns_.role(t, 0, "rembg/u2net.onnx", kViewFileMinSize - 1).kind,
              FileRole::Kind::plain);
    EXPECT_EQ(root_ns_.role(t, 0, "configs/x.yaml", kBig).kind, FileRole::Kind::plain);
    EXPECT_EQ(root_ns_.role(t, 0, "cache/models.db", kBig).kind, FileRole::Kind::plain);
    EXPECT_EQ(root_ns_.role(t, 0, "rembg/u2net.onnx.part", kBig).kind, FileRole::Kind::plain);
    EXPECT_EQ(single_ns_.role(tree(false), 0, "rembg/u2net.onnx", kBig).name,
              "comfyui/rembg/u2net.onnx");
}

TEST_F(NamespaceTest, AFileOfAViewShowsInThatViewOnlyAtItsPath) {
    {
        Txn w = cat_.write();
        w.put_model(file_model(Category::file, "comfyui/rembg/u2net.onnx", ".onnx", hx('e'), 70));
        w.put_model(file_model(Category::file, "a1111/Lora/x.gguf", ".gguf", hx('f'), 80));
        w.commit();
    }
    ViewTree t = tree();
    Entry e = root_ns_.resolve(t, "comfyui/rembg/u2net.onnx");
    ASSERT_EQ(e.kind, Entry::Kind::tree_file);
    EXPECT_EQ(e.blob, hx('e'));
    EXPECT_EQ(e.model_key, "file/comfyui/rembg/u2net.onnx");
    EXPECT_EQ(root_ns_.resolve(t, "a1111/Lora/x.gguf").blob, hx('f'));
    EXPECT_FALSE(root_ns_.resolve(t, "a1111/rembg/u2net.onnx").exists());
    EXPECT_FALSE(root_ns_.resolve(t, "comfyui/rembg/u2net.onnx.onnx").exists());
    EXPECT_FALSE(root_ns_.resolve(t, "comfyui/loras/x.gguf").exists());
    EXPECT_EQ(single_ns_.resolve(tree(false), "rembg/u2net.onnx").blob, hx('e'));
}

// ---- overlay_ino ---------------------------------------------------------------------------

TEST_F(NamespaceTest, OverlayInoIsStablePerFileAndNewForAReusedPath) {
    const stdfs::path p = overlay("comfyui") / "loras" / "x.bin";
    write(p, "one");
    struct stat st1 {};
    ASSERT_EQ(::lstat(p.c_str(), &st1), 0);
    const std::uint64_t a = Namespace::overlay_ino(p, st1);
    EXPECT_EQ(Namespace::overlay_ino(p, st1), a);
    EXPECT_GT(a, ViewTree::kRootIno);
    write(p, "one more");  // rewritten in place: the same file
    struct stat st1b {};
    ASSERT_EQ(::lstat(p.c_str(), &st1b), 0);
    EXPECT_EQ(Namespace::overlay_ino(p, st1b), a);

    // Renamed: the same file, the same number.
    const stdfs::path q = overlay("comfyui") / "loras" / "y.bin";
    stdfs::rename(p, q);
    struct stat st2 {};
    ASSERT_EQ(::lstat(q.c_str(), &st2), 0);
    EXPECT_EQ(Namespace::overlay_ino(q, st2), a);

    // Unlinked, and a new file at the old path (the ingest deletes what it stores).
    stdfs::remove(q);
    write(p, "two");
    struct stat st3 {};
    ASSERT_EQ(::lstat(p.c_str(), &st3), 0);
    EXPECT_NE(Namespace::overlay_ino(p, st3), a);

    // Resolving it gives the same number.
    ViewTree t = tree();
    EXPECT_EQ(root_ns_.resolve(t, "comfyui/loras/x.bin").ino, Namespace::overlay_ino(p, st3));
}

TEST(NamespaceEntry, SameObject) {
    Entry a, b;
    EXPECT_TRUE(a.same_object(b));  // none
    a.kind = b.kind = Entry::Kind::tree_file;
    a.path = b.path = "comfyui/loras/x";
    a.blob = b.blob = hx('a');
    EXPECT_TRUE(a.same_object(b));
    b.blob = hx('b');
    EXPECT_FALSE(a.same_object(b));
    a.kind = b.kind = Entry::Kind::overlay_file;
    a.real_ino = b.real_ino = 7;
    b.path = "elsewhere";  // renamed
    EXPECT_TRUE(a.same_object(b));
    b.real_ino = 8;
    EXPECT_FALSE(a.same_object(b));
    a.kind = b.kind = Entry::Kind::dir;
    EXPECT_FALSE(a.same_object(b));  // paths differ
    b.kind = Entry::Kind::tree_file;
    EXPECT_FALSE(a.same_object(b));
}

}  // namespace
}  // namespace modelfs::fs
