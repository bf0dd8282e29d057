// Root acting on a tree another user controls (issue 15, findings 2-4): adopt, unadopt and the
// cache imports never follow that user's links and never take what that user could not read.
// Each test builds the tree as uid 1001 (chown) with SUDO_UID=1001, as `sudo modelfs ...` run
// by that user would see it, and checks that root's own file keeps its mode, owner and content
// and that none of it reaches blobs/ or a view.
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <map>

#include <gtest/gtest.h>

#include "modelfs/adopt/adopt.h"
#include "modelfs/adopt/other_stores.h"
#include "modelfs/store/safe_open.h"
#include "modelfs/store/store.h"
#include "support/sized_models.h"
#include "support/test_env.h"

namespace stdfs = std::filesystem;
using namespace modelfs;
using namespace modelfs::adopt;
using modelfs::testing::sha256_hex_of_file;
using modelfs::testing::TempDir;
using modelfs::testing::write_random_file;
using modelfs::testing::write_sized_safetensors;
using modelfs::testing::write_text_file;

namespace {

constexpr uid_t kUser = 1001;

void unmount_hard(const stdfs::path& p) {
    if (!is_mountpoint(p)) return;
    std::system(("/bin/fusermount3 -u '" + p.string() + "' 2>/dev/null").c_str());
    for (int i = 0; i < 100 && is_mountpoint(p); ++i) ::usleep(20000);
    if (is_mountpoint(p)) ::umount2(p.c_str(), MNT_DETACH);
}

void chown_tree(const stdfs::path& root, uid_t uid) {
    ASSERT_EQ(::lchown(root.c_str(), uid, uid), 0) << root;
    for (auto it = stdfs::recursive_directory_iterator(root); it != decltype(it)(); ++it)
        ASSERT_EQ(::lchown(it->path().c_str(), uid, uid), 0) << it->path();
}

std::string read_all(const stdfs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
}

// Root's own secret: a folder only root may enter, with a 0600 file in it.
struct RootSecret {
    stdfs::path dir, file, model;
    std::string content = "root's secret notes\n";
    explicit RootSecret(const stdfs::path& base)
        : dir(base / "root-only"), file(dir / "notes.txt"), model(dir / "secret.ckpt") {
        stdfs::create_directories(dir);
        write_text_file(file, content);
        write_random_file(model, 4096, 99);
        ::chmod(file.c_str(), 0600);
        ::chmod(model.c_str(), 0600);
        ::chmod(dir.c_str(), 0700);
    }
    std::string model_content() const { return read_all(model); }
    // Mode, owner and content as made; `where` names the check.
    void expect_untouched(const std::string& where) const {
        struct stat st;
        ASSERT_EQ(::stat(file.c_str(), &st), 0) << where;
        EXPECT_EQ(st.st_mode & 07777, 0600u) << where;
        EXPECT_EQ(st.st_uid, 0u) << where;
        EXPECT_EQ(st.st_nlink, 1u) << where << ": hard-linked somewhere";
        EXPECT_EQ(read_all(file), content) << where;
        ASSERT_EQ(::stat(model.c_str(), &st), 0) << where;
        EXPECT_EQ(st.st_mode & 07777, 0600u) << where;
        EXPECT_EQ(st.st_uid, 0u) << where;
        EXPECT_EQ(st.st_nlink, 1u) << where << ": hard-linked somewhere";
        ASSERT_EQ(::stat(dir.c_str(), &st), 0) << where;
        EXPECT_EQ(st.st_mode & 07777, 0700u) << where;
    }
};

// No file under `root` (the store's blobs, a view's overlay) holds `content`.
void expect_nowhere(const stdfs::path& root, const std::string& content, const std::string& where) {
    std::error_code ec;
    for (auto it = stdfs::recursive_directory_iterator(root, ec); !ec && it != decltype(it)();
         it.increment(ec)) {
        if (!it->is_regular_file(ec) || it->file_size(ec) != content.size()) continue;
        EXPECT_FALSE(read_all(it->path()) == content) << where << ": " << it->path();
    }
}

class RootSafe : public ::testing::Test {
  protected:
    TempDir tmp{"modelfs-rootsafe"};
    std::optional<RootSecret> secret;
    stdfs::path store_root;

    void SetUp() override {
        if (::geteuid() != 0) GTEST_SKIP() << "needs root to act on a tree of uid 1001";
        ::setenv("MODELFS_CONFIG", "/dev/null", 1);
        ::setenv("SUDO_UID", "1001", 1);
        ::setenv("SUDO_GID", "1001", 1);
        // uid 1001 must reach its own tree (the mount runs as root, the checks by mode bits).
        ::chmod(tmp.path().c_str(), 0755);
        secret.emplace(tmp.path());
        store_root = tmp / "store";
        Store::init(store_root);
    }
    void TearDown() override {
        ::unsetenv("SUDO_UID");
        ::unsetenv("SUDO_GID");
    }
};

// An A1111 install of uid 1001: a model, and a plain file in a sub-folder of models/.
stdfs::path make_a1111(const stdfs::path& base) {
    const stdfs::path root = base / "webui", m = root / "models";
    stdfs::create_directories(root / "modules");
    stdfs::create_directories(m / "Lora");
    stdfs::create_directories(m / "sub");
    write_text_file(root / "webui.py", "#\n");
    write_text_file(root / "launch.py", "#\n");
    write_sized_safetensors(m / "Lora/style.safetensors", 5000, 1);
    write_text_file(m / "sub/notes.txt", "the user's notes\n");
    ::chmod((m / "sub/notes.txt").c_str(), 0666);
    chown_tree(root, kUser);
    return root;
}

Plan plan_for(Store& store, const stdfs::path& root, const stdfs::path& store_root,
              const ScanOptions& so = {}, const std::string& view = "a1111") {
    auto inst = detect_install(root);
    EXPECT_TRUE(inst) << root;
    std::vector<InstallScan> s{
        scan_install(*inst, *modelfs::layouts::ViewLayout::builtin(view), so)};
    auto h = hash_scans(store_root, s);
    return make_plan(store, std::move(s), h);
}

// Finding 4: while adopted, the user swaps backup/sub for a link to a root-only folder holding a
// file of the same name; unadopt must not chmod (or copy, or touch) root's file.
TEST_F(RootSafe, UnadoptDoesNotFollowASwappedBackupFolder) {
    if (::access("/dev/fuse", R_OK | W_OK) != 0) GTEST_SKIP() << "no /dev/fuse";
    const stdfs::path root = make_a1111(tmp.path()), m = root / "models";
    struct Cleanup {
        stdfs::path m;
        ~Cleanup() { unmount_hard(m); }
    } cleanup{m};
    Store store = Store::open(store_root);
    Plan plan = plan_for(store, root, store_root);
    RunOptions o;
    o.binary = modelfs::testing::modelfs_binary();
    auto rep = run_plan(store, plan, o);
    ASSERT_TRUE(rep.ok()) << rep.installs[0].status;
    const stdfs::path backup = root / "models.modelfs-backup";
    ASSERT_TRUE(stdfs::is_regular_file(backup / "sub/notes.txt"));
    stdfs::rename(backup / "sub", backup / "sub.moved");
    stdfs::create_directory_symlink(secret->dir, backup / "sub");
    ::lchown((backup / "sub").c_str(), kUser, kUser);

    auto un = unadopt(store, {});
    ASSERT_EQ(un.size(), 1u);
    secret->expect_untouched("after unadopt");
    expect_nowhere(store_root, secret->content, "after unadopt");
    std::string notes;
    for (const auto& n : un[0].notes) notes += n + "\n";
    EXPECT_NE(notes.find("sub/notes.txt"), std::string::npos) << un[0].status << "\n" << notes;
    EXPECT_NE(notes.find("symbolic link"), std::string::npos) << notes;
    // The rest came back.
    EXPECT_TRUE(stdfs::is_regular_file(m / "Lora/style.safetensors")) << un[0].status;
}

}  // namespace

namespace {

// A Hugging Face cache of uid 1001: `repo` with one blob and a snapshot linking to it.
struct UserHfCache {
    stdfs::path root;
    explicit UserHfCache(const stdfs::path& r) : root(r) { stdfs::create_directories(root); }
    stdfs::path repo(const std::string& id) const { return root / ("models--org--" + id); }
    // A real blob, and snapshot `commit` whose `rel` links to it the way huggingface_hub does.
    std::string blob(const std::string& id, const std::string& commit, const std::string& rel,
                     std::uint64_t seed) {
        const stdfs::path tmpf = root / "blob.tmp";
        write_random_file(tmpf, 3000, seed);
        const std::string sha = sha256_hex_of_file(tmpf);
        stdfs::create_directories(repo(id) / "blobs");
        stdfs::rename(tmpf, repo(id) / "blobs" / sha);
        link(id, commit, rel, "../../blobs/" + sha);
        return sha;
    }
    void link(const std::string& id, const std::string& commit, const std::string& rel,
              const std::string& target) {
        const stdfs::path p = repo(id) / "snapshots" / commit / rel;
        stdfs::create_directories(p.parent_path());
        stdfs::create_symlink(target, p);
        stdfs::create_directories(repo(id) / "refs");
        write_text_file(repo(id) / "refs/main", commit);
    }
};

const std::string kCommit = "0123456789abcdef0123456789abcdef01234567";

// Finding 2: snapshot links that lead to root's file (relative and climbing out of the repo,
// absolute, through a blobs/ folder that is a link) are refused by name; the user's own repo
// next to them is imported as before.
TEST_F(RootSafe, HfCacheNeverFollowsALinkOutOfTheRepo) {
    UserHfCache hf(tmp / "hub");
    const std::string good = hf.blob("good", kCommit, "model.safetensors", 7);
    hf.blob("climb", kCommit, "ok.bin", 8);
    hf.link("climb", kCommit, "model.safetensors", "../../../../root-only/notes.txt");
    hf.blob("absolute", kCommit, "ok.bin", 9);
    hf.link("absolute", kCommit, "model.safetensors", secret->file.string());
    // The middle component: blobs/ itself a link to root's folder.
    stdfs::create_directories(hf.repo("middle"));
    stdfs::create_directory_symlink(secret->dir, hf.repo("middle") / "blobs");
    hf.link("middle", kCommit, "model.safetensors", "../../blobs/notes.txt");
    chown_tree(hf.root, kUser);

    Store store = Store::open(store_root);
    auto rep = import_hf_cache(store, hf.root);
    std::map<std::string, const OtherStoreItem*> by_model;
    for (const auto& it : rep.items)
        by_model[it.model_key.substr(it.model_key.find('/') + 1)] = &it;
    ASSERT_TRUE(by_model.count("org/good"));
    EXPECT_EQ(by_model["org/good"]->outcome, OtherStoreItem::Outcome::added)
        << by_model["org/good"]->detail;
    EXPECT_TRUE(store.blobs().exists(*Sha256::from_hex(good)));
    for (const std::string bad : {"org/climb", "org/absolute", "org/middle"}) {
        ASSERT_TRUE(by_model.count(bad)) << bad;
        EXPECT_EQ(by_model[bad]->outcome, OtherStoreItem::Outcome::skipped)
            << bad << ": " << by_model[bad]->detail;
        EXPECT_NE(by_model[bad]->detail.find("model.safetensors"), std::string::npos)
            << by_model[bad]->detail;
    }
    EXPECT_NE(by_model["org/middle"]->detail.find("symbolic link"), std::string::npos)
        << by_model["org/middle"]->detail;
    secret->expect_untouched("after import --hf-cache");
    expect_nowhere(store_root, secret->content, "after import --hf-cache");
}

// A blob the user could not read itself (0600 root, placed in the user's cache) is refused too.
TEST_F(RootSafe, HfCacheBlobTheUserCannotReadIsRefused) {
    UserHfCache hf(tmp / "hub");
    const std::string sha = hf.blob("mine", kCommit, "model.safetensors", 11);
    chown_tree(hf.root, kUser);
    const stdfs::path blob = hf.repo("mine") / "blobs" / sha;
    ASSERT_EQ(::chown(blob.c_str(), 0, 0), 0);
    ASSERT_EQ(::chmod(blob.c_str(), 0600), 0);
    Store store = Store::open(store_root);
    auto rep = import_hf_cache(store, hf.root);
    ASSERT_EQ(rep.items.size(), 1u);
    EXPECT_EQ(rep.items[0].outcome, OtherStoreItem::Outcome::skipped) << rep.items[0].detail;
    EXPECT_NE(rep.items[0].detail.find("not readable by"), std::string::npos)
        << rep.items[0].detail;
    EXPECT_FALSE(store.blobs().exists(*Sha256::from_hex(sha)));
    struct stat st;
    ASSERT_EQ(::stat(blob.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0600u);
}

}  // namespace

namespace {

std::string notes_of(const Plan& plan) {
    std::string all = plan_text(plan) + "\n" + plan_json(plan).dump();
    return all;
}

// Finding 3: links inside models/ (a file link to root's model; a folder link in the middle of
// the path to root's folder) are not followed: not adopted, named in the plan, root's files
// untouched and in no blob, no view. The user's own model is adopted as before.
TEST_F(RootSafe, AdoptNeverFollowsLinksInsideModels) {
    if (::access("/dev/fuse", R_OK | W_OK) != 0) GTEST_SKIP() << "no /dev/fuse";
    const stdfs::path root = make_a1111(tmp.path()), m = root / "models";
    struct Cleanup {
        stdfs::path m;
        ~Cleanup() { unmount_hard(m); }
    } cleanup{m};
    stdfs::create_directories(m / "Stable-diffusion");
    stdfs::create_symlink(secret->model, m / "Stable-diffusion/evil.ckpt");
    stdfs::create_directory_symlink(secret->dir, m / "Stable-diffusion/linked");
    chown_tree(root, kUser);
    Store store = Store::open(store_root);
    Plan plan = plan_for(store, root, store_root);
    const std::string text = notes_of(plan);
    EXPECT_NE(
        text.find("evil.ckpt -> " + secret->model.string() + ": a symbolic link, not followed"),
        std::string::npos)
        << text;
    EXPECT_NE(text.find("linked -> " + secret->dir.string() + ": a symbolic link, not followed"),
              std::string::npos)
        << text;
    EXPECT_NE(text.find("uid 1001"), std::string::npos) << text;
    RunOptions o;
    o.binary = modelfs::testing::modelfs_binary();
    auto rep = run_plan(store, plan, o);
    ASSERT_TRUE(rep.ok()) << rep.installs[0].status;
    EXPECT_TRUE(stdfs::is_regular_file(m / "Lora/style.safetensors"));
    EXPECT_FALSE(stdfs::exists(m / "Stable-diffusion/linked/secret.ckpt"));
    secret->expect_untouched("after adopt");
    expect_nowhere(store_root, secret->model_content(), "after adopt");
    expect_nowhere(m, secret->model_content(), "the view after adopt");
}

// A file of the install that the user could not read (root's 0600 file placed in it) is not
// adopted either.
TEST_F(RootSafe, AdoptLeavesFilesTheUserCannotRead) {
    const stdfs::path root = make_a1111(tmp.path()), m = root / "models";
    stdfs::create_directories(m / "Stable-diffusion");
    write_random_file(m / "Stable-diffusion/roots.ckpt", 4096, 5);
    chown_tree(root, kUser);
    ASSERT_EQ(::chown((m / "Stable-diffusion/roots.ckpt").c_str(), 0, 0), 0);
    ASSERT_EQ(::chmod((m / "Stable-diffusion/roots.ckpt").c_str(), 0600), 0);
    Store store = Store::open(store_root);
    Plan plan = plan_for(store, root, store_root);
    const std::string text = notes_of(plan);
    EXPECT_NE(text.find("roots.ckpt: not readable by uid 1001"), std::string::npos) << text;
    bool found = false;
    for (const auto& pf : plan.installs.at(0).files)
        if (pf.file.path.filename() == "roots.ckpt") {
            found = true;
            EXPECT_EQ(pf.action, Action::left) << pf.note;
        }
    EXPECT_TRUE(found);
}

// Finding 3, configuration: SD.Next's config.json naming root's folder (lora_dir) and a models
// folder outside the install. Without --outside-install neither is scanned and the install whose
// models folder is outside is skipped, with the reason; with it, root's folder is still refused
// because uid 1001 cannot list it.
TEST_F(RootSafe, AdoptConfigFolderOutsideTheInstallNeedsTheFlagAndTheRules) {
    const stdfs::path root = tmp / "sdnext";
    stdfs::create_directories(root / "modules");
    stdfs::create_directories(root / "models/Lora");
    write_text_file(root / "launch.py", "#\n");
    write_text_file(root / "installer.py", "#\n");
    write_sized_safetensors(root / "models/Lora/mine.safetensors", 5000, 3);
    write_text_file(root / "config.json", "{\"lora_dir\": \"" + secret->dir.string() + "\"}\n");
    chown_tree(root, kUser);
    Store store = Store::open(store_root);
    {
        Plan plan = plan_for(store, root, store_root, {}, "sdnext");
        const std::string text = notes_of(plan);
        EXPECT_NE(text.find("outside the install, not adopted (--outside-install adopts it): " +
                            secret->dir.string()),
                  std::string::npos)
            << text;
        EXPECT_NE(text.find("\"outside_install\""), std::string::npos) << text;
        for (const auto& pf : plan.installs.at(0).files)
            EXPECT_NE(pf.file.path.parent_path(), secret->dir) << pf.file.path;
        EXPECT_FALSE(plan.installs.at(0).skip) << skip_text(plan.installs.at(0).skip);
    }
    {
        ScanOptions so;
        so.outside_install = true;
        auto inst = detect_install(root);
        ASSERT_TRUE(inst);
        InstallScan scan =
            scan_install(*inst, *modelfs::layouts::ViewLayout::builtin("sdnext"), so);
        std::string notes;
        for (const auto& n : scan.notes) notes += n + "\n";
        EXPECT_NE(notes.find("a folder uid 1001 (for whom root acts here) cannot list"),
                  std::string::npos)
            << notes;
        for (const auto& f : scan.files) EXPECT_NE(f.path.parent_path(), secret->dir) << f.path;
    }
    // The models folder moved by the configuration to root's folder: the install is skipped.
    write_text_file(root / "config.json", "{\"models_dir\": \"" + secret->dir.string() + "\"}\n");
    Plan plan = plan_for(store, root, store_root, {}, "sdnext");
    EXPECT_EQ(plan.installs.at(0).skip.reason, SkipReason::models_refused);
    EXPECT_NE(skip_text(plan.installs.at(0).skip).find("is outside the install"), std::string::npos)
        << skip_text(plan.installs.at(0).skip);
    auto rep = run_plan(store, plan);
    EXPECT_FALSE(rep.ok());
    secret->expect_untouched("after adopt");
    EXPECT_TRUE(stdfs::is_directory(secret->dir));
}

}  // namespace

namespace {

// Ollama: a models folder of uid 1001 whose blob for a layer is a link to root's model (named by
// that model's real SHA-256, so the name is right): refused; the user's own tag is imported.
TEST_F(RootSafe, OllamaBlobLinkToRootsFileIsRefused) {
    const stdfs::path ol = tmp / "ollama";
    stdfs::create_directories(ol / "blobs");
    auto put_blob = [&](std::uint64_t seed) {
        const stdfs::path t = ol / "blob.tmp";
        write_random_file(t, 2048, seed);
        const std::string sha = sha256_hex_of_file(t);
        stdfs::rename(t, ol / "blobs" / ("sha256-" + sha));
        return sha;
    };
    auto manifest = [&](const std::string& tag, const std::string& model_sha,
                        const std::string& cfg_sha) {
        const stdfs::path p = ol / "manifests/registry.ollama.ai/library/m" / tag;
        stdfs::create_directories(p.parent_path());
        write_text_file(p, R"({"schemaVersion":2,"config":{"mediaType":)"
                           R"("application/vnd.docker.container.image.v1+json","digest":"sha256:)" +
                               cfg_sha +
                               R"("},"layers":[{"mediaType":)"
                               R"("application/vnd.ollama.image.model","digest":"sha256:)" +
                               model_sha + R"("}]})");
    };
    const std::string cfg = put_blob(1), mine = put_blob(2);
    const std::string evil = sha256_hex_of_file(secret->model);
    stdfs::create_symlink(secret->model, ol / "blobs" / ("sha256-" + evil));
    manifest("latest", mine, cfg);
    manifest("evil", evil, cfg);
    chown_tree(ol, kUser);

    Store store = Store::open(store_root);
    auto rep = import_ollama(store, ol);
    std::map<std::string, const OtherStoreItem*> by_tag;
    for (const auto& it : rep.items) by_tag[it.label.substr(0, it.label.find('-'))] = &it;
    ASSERT_TRUE(by_tag.count("latest") && by_tag.count("evil"));
    EXPECT_EQ(by_tag["latest"]->outcome, OtherStoreItem::Outcome::added)
        << by_tag["latest"]->detail;
    EXPECT_EQ(by_tag["evil"]->outcome, OtherStoreItem::Outcome::skipped) << by_tag["evil"]->detail;
    EXPECT_NE(by_tag["evil"]->detail.find("symbolic link"), std::string::npos)
        << by_tag["evil"]->detail;
    EXPECT_TRUE(store.blobs().exists(*Sha256::from_hex(mine)));
    EXPECT_FALSE(store.blobs().exists(*Sha256::from_hex(evil)));
    secret->expect_untouched("after import --ollama");
    expect_nowhere(store_root, secret->model_content(), "after import --ollama");
}

}  // namespace

namespace {

// `import PATH` of a folder of uid 1001: its links (to root's model, to root's folder) are not
// followed, and a path given that leads to root's file is refused; the user's model is imported.
TEST_F(RootSafe, ImportOfAUsersFolderNeverFollowsItsLinks) {
    const stdfs::path in = tmp / "in";
    stdfs::create_directories(in / "vae");
    write_random_file(in / "vae/ok.pt", 5000, 21);
    stdfs::create_symlink(secret->model, in / "vae/evil.pt");
    stdfs::create_directory_symlink(secret->dir, in / "vae/linked");
    stdfs::create_symlink(secret->model, tmp / "given.pt");
    chown_tree(in, kUser);
    ::lchown((tmp / "given.pt").c_str(), kUser, kUser);
    Store store = Store::open(store_root);
    auto rep = store.import({in, tmp / "given.pt"}, {});
    std::string failed;
    std::size_t ok = 0;
    for (const auto& it : rep.items) {
        if (it.outcome == ImportItem::Outcome::failed)
            failed += it.error + "\n";
        else
            ++ok;
    }
    EXPECT_EQ(ok, 1u) << failed;
    EXPECT_NE(failed.find("evil.pt: a symbolic link, not followed"), std::string::npos) << failed;
    EXPECT_NE(failed.find("linked: a symbolic link, not followed"), std::string::npos) << failed;
    EXPECT_NE(failed.find("not readable by uid 1001"), std::string::npos) << failed;
    EXPECT_TRUE(store.catalog().read().get_model("vae/ok.pt"));
    secret->expect_untouched("after import");
    expect_nowhere(store_root, secret->model_content(), "after import");
}

}  // namespace
