// adopt → confirm → unadopt → adopt as a user runs them (the `modelfs` program, real mounts), on
// synthetic A1111 + ComfyUI installs holding every kind of file adopt handles: models stored by
// content (shared between the installs, twice in one install under two names, unique to one), a
// sidecar, plain files the view keeps at their path (notes, a config, an A1111 VAE beside the
// checkpoints) and an empty folder. Issue 16, findings 3, 4, 5: the round trip works again and
// again, unadopt hands inodes back and removes the folders it made, and every "frees"/"saved"
// figure agrees with the bytes on disk (store/FORMAT.md "Saving").
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "modelfs/adopt/adopt.h"
#include "support/sized_models.h"
#include "support/test_env.h"

namespace stdfs = std::filesystem;
using namespace modelfs::testing;
using nlohmann::json;

namespace {

struct FileState {
    std::string sha;
    unsigned mode = 0;
    std::int64_t mtime_ns = 0;
    bool operator==(const FileState&) const = default;
};
struct TreeState {
    std::map<stdfs::path, FileState> files;
    std::set<stdfs::path> dirs;
};

std::int64_t ns_of(const struct timespec& t) {
    return static_cast<std::int64_t>(t.tv_sec) * 1000000000 + t.tv_nsec;
}

class AdoptRoundTrip : public ::testing::Test {
  protected:
    TempDir tmp{"modelfs-roundtrip"};
    stdfs::path store, a1111, comfy;
    TreeState before;

    void SetUp() override {
        if (::access("/dev/fuse", R_OK | W_OK) != 0) GTEST_SKIP() << "no /dev/fuse";
        store = tmp / "store";
        a1111 = tmp / "stable-diffusion-webui";
        comfy = tmp / "ComfyUI";
        const stdfs::path a = a1111 / "models", c = comfy / "models";
        for (auto d : {a / "Stable-diffusion", a / "Lora", a / "empty_folder", c / "checkpoints",
                       c / "loras"})
            stdfs::create_directories(d);
        make_a1111_markers(a1111);
        make_comfyui_markers(comfy);
        write_sized_safetensors(a / "Stable-diffusion/sdxl.safetensors", 300000, 1);
        write_random_file(a / "Stable-diffusion/sdxl.preview.png", 2000, 2);
        write_sized_safetensors(a / "Stable-diffusion/sdxl.vae.safetensors", 3000, 14);
        write_sized_safetensors(a / "Lora/style.safetensors", 100000, 3);
        write_sized_safetensors(a / "Lora/style_copy.safetensors", 100000, 3);
        write_sized_safetensors(a / "Lora/only_a.safetensors", 50000, 20);
        write_text_file(a / "Lora/notes.txt", "notes\n");
        write_text_file(a / "config.yaml", "a: 1\n");
        write_sized_safetensors(c / "checkpoints/sdxl.safetensors", 300000, 1);
        write_sized_safetensors(c / "loras/style.safetensors", 100000, 3);
        write_sized_safetensors(c / "loras/clash.safetensors", 5000, 9);
        write_text_file(c / "extra_file.txt", "comfy notes\n");
        ::chmod((a / "Lora/notes.txt").c_str(), 0600);
        before = state();
        ASSERT_EQ(run_modelfs({"--store", store.string(), "init"}).exit_code, 0);
    }
    void TearDown() override {
        for (const auto& m : {a1111 / "models", comfy / "models"}) {
            if (!modelfs::adopt::is_mountpoint(m)) continue;
            run_program("/bin/fusermount3", {"-u", m.string()});
            for (int i = 0; i < 100 && modelfs::adopt::is_mountpoint(m); ++i) ::usleep(20000);
            if (modelfs::adopt::is_mountpoint(m)) ::umount2(m.c_str(), MNT_DETACH);
        }
    }
    CliResult modelfs(std::vector<std::string> args,
                      const std::map<std::string, std::string>& env = {}) {
        args.insert(args.begin(), {"--store", store.string()});
        return run_modelfs(args, env);
    }
    json modelfs_json(std::vector<std::string> args) {
        args.insert(args.begin(), "--json");
        auto r = modelfs(args);
        EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
        return json::parse(r.out, nullptr, false);
    }
    // Both models folders: every file with its bytes, mode and mtime, every folder.
    TreeState state() const {
        TreeState s;
        for (const auto& root : {a1111 / "models", comfy / "models"})
            for (auto it = stdfs::recursive_directory_iterator(root); it != decltype(it)(); ++it) {
                struct stat st;
                if (::lstat(it->path().c_str(), &st) != 0) continue;
                if (S_ISDIR(st.st_mode))
                    s.dirs.insert(it->path());
                else
                    s.files[it->path()] = {sha256_hex_of_file(it->path()), st.st_mode & 07777u,
                                           ns_of(st.st_mtim)};
            }
        return s;
    }
    void expect_as_before() const {
        const TreeState now = state();
        for (const auto& [p, f] : before.files) {
            auto it = now.files.find(p);
            if (it == now.files.end()) {
                ADD_FAILURE() << p << " is missing";
                continue;
            }
            EXPECT_EQ(it->second.sha, f.sha) << p;
            EXPECT_EQ(it->second.mode, f.mode) << p;
            EXPECT_EQ(it->second.mtime_ns, f.mtime_ns) << p;
        }
        for (const auto& [p, f] : now.files) EXPECT_TRUE(before.files.count(p)) << p << " is new";
        for (const auto& d : now.dirs)
            EXPECT_TRUE(before.dirs.count(d)) << d << " was not there before adopt";
        for (const auto& d : before.dirs) EXPECT_TRUE(now.dirs.count(d)) << d << " is gone";
    }
    // Bytes on disk (st_blocks, each inode once) of the installs' trees (not through a mount)
    // and of what the store holds of them: blobs/ and views/.
    std::uint64_t du() const {
        std::set<std::pair<dev_t, ino_t>> seen;
        std::uint64_t total = 0;
        for (const auto& root : {a1111, comfy, store / "blobs", store / "views"}) {
            if (!stdfs::exists(root)) continue;
            for (auto it = stdfs::recursive_directory_iterator(root); it != decltype(it)(); ++it) {
                if (it->is_directory() && modelfs::adopt::is_mountpoint(it->path())) {
                    it.disable_recursion_pending();
                    continue;
                }
                struct stat st;
                if (::lstat(it->path().c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
                if (seen.insert({st.st_dev, st.st_ino}).second)
                    total += static_cast<std::uint64_t>(st.st_blocks) * 512;
            }
        }
        return total;
    }
    std::size_t files_in(const stdfs::path& dir) const {
        std::size_t n = 0;
        if (!stdfs::exists(dir)) return 0;
        for (auto it = stdfs::recursive_directory_iterator(dir); it != decltype(it)(); ++it)
            if (!it->is_directory()) ++n;
        return n;
    }
    ino_t blob_inode(const stdfs::path& file_with_that_content) const {
        const std::string hex = sha256_hex_of_file(file_with_that_content);
        struct stat st;
        const stdfs::path blob = store / "blobs/sha256" / hex.substr(0, 2) / hex;
        return ::stat(blob.c_str(), &st) == 0 ? st.st_ino : 0;
    }
};

// Finding 3: after confirm, unadopt used to leave the view's plain files in STORE/views (and copy
// them back through the mount), so the next adopt found them "left by an earlier mount" and
// refused. Twice round, to show the round trip leaves nothing behind that the next one trips on.
TEST_F(AdoptRoundTrip, AdoptConfirmUnadoptAdoptAgainAndAgain) {
    for (int round = 0; round < 2; ++round) {
        SCOPED_TRACE("round " + std::to_string(round));
        auto run = modelfs({"adopt", "--yes", "--verify", a1111.string(), comfy.string()});
        ASSERT_EQ(run.exit_code, 0) << run.out << run.err;
        ASSERT_TRUE(modelfs::adopt::is_mountpoint(a1111 / "models"));
        EXPECT_EQ(read_file(a1111 / "models/Lora/notes.txt"), "notes\n");
        auto conf = modelfs({"adopt", "--confirm"});
        ASSERT_EQ(conf.exit_code, 0) << conf.out << conf.err;
        auto un = modelfs({"unadopt"});
        ASSERT_EQ(un.exit_code, 0) << un.out << un.err;
        EXPECT_FALSE(modelfs::adopt::is_mountpoint(a1111 / "models"));
        expect_as_before();
        EXPECT_EQ(files_in(store / "views"), 0u) << "the views' files went back to the installs";
    }
}

// Finding 4: unadopt hands inodes back. While ComfyUI still uses the shared content, A1111 gets
// copies of it, and the file only A1111 had back as the very inode the store held; once ComfyUI
// is unadopted too, nothing needs the store's blobs: every file gets its inode back, the store
// holds nothing, and the disk holds what it held before adopt. The folders the view showed that
// the install did not have (every folder of the tool's layout) are gone again.
TEST_F(AdoptRoundTrip, UnadoptHandsInodesBackAndRemovesTheFoldersItMade) {
    const std::uint64_t du_before = du();
    auto run = modelfs({"adopt", "--yes", a1111.string(), comfy.string()});
    ASSERT_EQ(run.exit_code, 0) << run.out << run.err;
    ASSERT_EQ(modelfs({"adopt", "--confirm"}).exit_code, 0);
    const ino_t only_a = blob_inode(a1111 / "models/Lora/only_a.safetensors");
    const ino_t sdxl = blob_inode(comfy / "models/checkpoints/sdxl.safetensors");
    ASSERT_NE(only_a, 0u);
    ASSERT_NE(sdxl, 0u);

    auto un = modelfs({"unadopt", a1111.string()});
    ASSERT_EQ(un.exit_code, 0) << un.out << un.err;
    struct stat st;
    ASSERT_EQ(::stat((a1111 / "models/Lora/only_a.safetensors").c_str(), &st), 0);
    EXPECT_EQ(st.st_ino, only_a) << "handed back by rename/link, not copied";
    EXPECT_EQ(st.st_nlink, 1u);
    EXPECT_EQ(blob_inode(a1111 / "models/Lora/only_a.safetensors"), 0u) << "left the store";
    ASSERT_EQ(::stat((a1111 / "models/Stable-diffusion/sdxl.safetensors").c_str(), &st), 0);
    EXPECT_NE(st.st_ino, sdxl) << "ComfyUI still uses it: A1111 gets a copy of its own";
    EXPECT_EQ(st.st_nlink, 1u);
    EXPECT_EQ(files_in(store / "views/a1111"), 0u);
    EXPECT_FALSE(stdfs::exists(a1111 / "models/ControlNet")) << "a folder only the view had";
    EXPECT_TRUE(stdfs::is_directory(a1111 / "models/empty_folder")) << "the install's own";

    un = modelfs({"unadopt", comfy.string()});
    ASSERT_EQ(un.exit_code, 0) << un.out << un.err;
    ASSERT_EQ(::stat((comfy / "models/checkpoints/sdxl.safetensors").c_str(), &st), 0);
    EXPECT_EQ(st.st_ino, sdxl) << "nothing else needs the blob: its inode comes back";
    EXPECT_EQ(files_in(store / "blobs"), 0u);
    expect_as_before();
    const std::uint64_t du_after = du();
    EXPECT_LE(du_after, du_before + 16 * 4096) << "before adopt " << du_before;
    EXPECT_GE(du_after + 16 * 4096, du_before);
}

// Finding 5: one definition of saving (store/FORMAT.md "Saving"): the dry run, adopt and confirm
// say what confirm frees, which is what du sees go, and `stats` says the same as its saving,
// with a total that is the sum of its categories.
TEST_F(AdoptRoundTrip, FiguresAgreeWithDu) {
    const std::uint64_t du0 = du();
    auto dry = modelfs_json({"adopt", "--dry-run", a1111.string(), comfy.string()});
    const auto dry_frees = dry["total"]["bytes_freed"].get<std::uint64_t>();
    auto adopted = modelfs_json({"adopt", "--yes", a1111.string(), comfy.string()});
    std::uint64_t adopt_frees = 0;
    for (const auto& i : adopted["installs"]) {
        ASSERT_TRUE(i["ok"].get<bool>()) << i.dump();
        adopt_frees += i["bytes_freed_at_confirm"].get<std::uint64_t>();
    }
    const std::uint64_t du1 = du();
    auto st1 = modelfs_json({"stats"});
    // Moving files in frees nothing yet: the backups hold the duplicates until confirm.
    EXPECT_EQ(st1["saved_bytes"].get<std::uint64_t>(), 0u) << st1.dump();
    EXPECT_EQ(du1, du0);
    auto conf = modelfs_json({"adopt", "--confirm"});
    std::uint64_t confirm_frees = 0;
    for (const auto& c : conf["confirmed"]) confirm_frees += c["bytes_freed"].get<std::uint64_t>();
    const std::uint64_t du2 = du();

    // sdxl once and style twice more than their blobs; the sidecar, the rest and plain files
    // once.
    EXPECT_EQ(dry_frees, 300000u + 2 * 100000u);
    EXPECT_EQ(confirm_frees, du1 - du2);
    EXPECT_EQ(adopt_frees, confirm_frees);
    const std::uint64_t rounding = 4 * 4096;  // three files, each up to a block
    EXPECT_LE(confirm_frees, dry_frees + rounding);
    EXPECT_GE(confirm_frees + rounding, dry_frees);

    auto st = modelfs_json({"stats"});
    const auto saved = st["saved_bytes"].get<std::uint64_t>();
    EXPECT_EQ(saved, 300000u + 2 * 100000u) << st.dump();
    EXPECT_LE(saved, du0 - du2 + rounding);
    EXPECT_GE(saved + rounding, du0 - du2);
    std::uint64_t sum = 0;
    for (const auto& [name, c] : st["categories"].items()) sum += c["bytes"].get<std::uint64_t>();
    EXPECT_EQ(sum, st["logical_bytes"].get<std::uint64_t>()) << st.dump();
}

// Finding 5: a resumed adopt (killed after its record, run again) said "that frees 0 B"; it says
// what confirm then frees.
TEST_F(AdoptRoundTrip, ResumedAdoptSaysWhatConfirmFrees) {
    auto killed = modelfs({"adopt", "--yes", a1111.string(), comfy.string()},
                          {{"MODELFS_ADOPT_TEST_KILL_AFTER_RECORD", "1"}});
    ASSERT_NE(killed.exit_code, 0);
    auto resumed = modelfs_json({"adopt", "--yes", a1111.string(), comfy.string()});
    std::uint64_t adopt_frees = 0;
    for (const auto& i : resumed["installs"]) {
        ASSERT_TRUE(i["ok"].get<bool>()) << i.dump();
        adopt_frees += i["bytes_freed_at_confirm"].get<std::uint64_t>();
    }
    auto conf = modelfs_json({"adopt", "--confirm"});
    std::uint64_t confirm_frees = 0;
    for (const auto& c : conf["confirmed"]) confirm_frees += c["bytes_freed"].get<std::uint64_t>();
    EXPECT_GT(confirm_frees, 0u);
    EXPECT_EQ(adopt_frees, confirm_frees) << resumed.dump();
}

// Finding 4, crash safety: unadopt killed (SIGKILL) while it hands the view's files back, between
// dropping a model and gc, and after gc; run again, it finishes: every file as before adopt, the
// store holding nothing of the install, `verify` clean (the catalog names no handed-over blob).
TEST_F(AdoptRoundTrip, UnadoptKilledAnywhereFinishesOnTheNextRun) {
    for (const char* point : {"overlay_file_done", "model_removed", "handed_over"}) {
        SCOPED_TRACE(point);
        auto run = modelfs({"adopt", "--yes", a1111.string()});
        ASSERT_EQ(run.exit_code, 0) << run.out << run.err;
        ASSERT_EQ(modelfs({"adopt", "--confirm"}).exit_code, 0);
        auto killed = modelfs({"unadopt"}, {{"MODELFS_UNADOPT_TEST_KILL_AT", point}});
        EXPECT_EQ(killed.signal, SIGKILL) << killed.out << killed.err;
        auto un = modelfs({"unadopt"});
        ASSERT_EQ(un.exit_code, 0) << un.out << un.err;
        expect_as_before();
        // Two files of one content in one install come back as two files, not two links.
        struct stat x, y;
        ASSERT_EQ(::stat((a1111 / "models/Lora/style.safetensors").c_str(), &x), 0);
        ASSERT_EQ(::stat((a1111 / "models/Lora/style_copy.safetensors").c_str(), &y), 0);
        EXPECT_NE(x.st_ino, y.st_ino);
        EXPECT_EQ(files_in(store / "views"), 0u);
        EXPECT_EQ(files_in(store / "blobs"), 0u);
        auto verify = modelfs({"verify"});
        EXPECT_EQ(verify.exit_code, 0) << verify.out << verify.err;
    }
}

}  // namespace
