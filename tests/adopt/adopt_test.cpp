// `modelfs adopt` on synthetic A1111 + ComfyUI installs sharing models, through the library with
// real stores and real mounts (the mounts adopt starts itself, by running the modelfs binary).
// AdoptTest finds its installs with detect_install; the smaller tests scan a plain folder as an
// install (tests/adopt/fake_scan.h), with the same scan_install.
#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <thread>

#include <gtest/gtest.h>

#include "fake_scan.h"
#include "modelfs/adopt/adopt.h"
#include "modelfs/layouts/view_layout.h"
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

constexpr std::uint64_t kC1 = 204800, kP1 = 1000, kC2 = 102400, kC3a = 51200, kC3b = 61440,
                        kC5 = 81920;

bool fuse_available() {
    return ::access("/dev/fuse", R_OK | W_OK) == 0;
}

void unmount_hard(const stdfs::path& p) {
    if (!is_mountpoint(p)) return;
    std::system(("/bin/fusermount3 -u '" + p.string() + "' 2>/dev/null").c_str());
    for (int i = 0; i < 100 && is_mountpoint(p); ++i) ::usleep(20000);
    if (is_mountpoint(p)) ::umount2(p.c_str(), MNT_DETACH);
}

std::uint64_t blocks_of(const stdfs::path& p) {
    struct stat st;
    return ::lstat(p.c_str(), &st) == 0 ? static_cast<std::uint64_t>(st.st_blocks) * 512 : 0;
}

class AdoptTest : public ::testing::Test {
  protected:
    TempDir tmp{"modelfs-adopt"};
    stdfs::path store_root, a1111, comfy, outside;
    std::map<stdfs::path, std::string> before;  // every path a tool reads -> SHA-256
    std::map<stdfs::path, unsigned> modes;

    void SetUp() override {
        ::setenv("MODELFS_CONFIG", "/dev/null", 1);
        store_root = tmp / "store";
        make_installs(tmp.path());
        Store::init(store_root);
    }
    void TearDown() override {
        // Always unmount, even when the test failed half-way.
        for (const auto& r : {a1111, comfy}) unmount_hard(r / "models");
    }

    void make_installs(const stdfs::path& base) {
        a1111 = base / "stable-diffusion-webui";
        comfy = base / "ComfyUI";
        outside = base / "shared-vae";
        const stdfs::path am = a1111 / "models", cm = comfy / "models";
        for (auto d : {am / "Stable-diffusion", am / "Lora", cm / "checkpoints", cm / "loras",
                       cm / "vae", cm / "extra", outside})
            stdfs::create_directories(d);
        // What detect_install recognises the two tools by.
        modelfs::testing::make_a1111_markers(a1111);
        modelfs::testing::make_comfyui_markers(comfy);
        write_sized_safetensors(am / "Stable-diffusion/sdxl.safetensors", kC1, 1);
        write_random_file(am / "Stable-diffusion/sdxl.preview.png", kP1, 2);
        write_text_file(am / "Stable-diffusion/notes.txt", "my notes\n");
        write_sized_safetensors(am / "Lora/style.safetensors", kC2, 3);
        write_sized_safetensors(am / "Lora/style_copy.safetensors", kC2, 3);  // another name
        write_sized_safetensors(am / "Lora/clash.safetensors", kC3a, 4);
        stdfs::create_symlink("/nonexistent/gone.safetensors", am / "Lora/broken.safetensors");
        write_sized_safetensors(outside / "vae.safetensors", kC5, 5);
        stdfs::create_directory_symlink(outside, am / "VAE");  // StabilityMatrix-style link

        write_sized_safetensors(cm / "checkpoints/sdxl.safetensors", kC1, 1);
        write_random_file(cm / "checkpoints/sdxl.preview.png", kP1, 2);
        write_sized_safetensors(cm / "loras/style.safetensors", kC2, 3);
        stdfs::create_hard_link(cm / "loras/style.safetensors", cm / "loras/hard.safetensors");
        write_sized_safetensors(cm / "loras/clash.safetensors", kC3b, 6);  // same name, other bytes
        write_sized_safetensors(cm / "vae/vae.safetensors", kC5, 5);
        write_text_file(cm / "extra/info.txt", "plain\n");

        for (const auto& root : {am, cm})
            for (auto it = stdfs::recursive_directory_iterator(
                     root, stdfs::directory_options::follow_directory_symlink);
                 it != decltype(it)(); ++it) {
                if (!stdfs::is_regular_file(it->path())) continue;  // follows VAE -> outside
                before[it->path()] = sha256_hex_of_file(it->path());
                modes[it->path()] =
                    stdfs::status(it->path()).permissions() == stdfs::perms::none
                        ? 0
                        : static_cast<unsigned>(stdfs::status(it->path()).permissions());
            }
        ASSERT_EQ(before.size(), 14u);
    }

    std::vector<InstallScan> scans() {
        // The real detection and scan (adopt-detect), as the CLI runs them.
        std::vector<InstallScan> out;
        for (const auto& root : {a1111, comfy}) {
            auto inst = detect_install(root);
            if (!inst) throw std::runtime_error("not detected: " + root.string());
            out.push_back(scan_install(*inst, *modelfs::layouts::ViewLayout::builtin(inst->tool)));
        }
        return out;
    }

    RunOptions run_options() {
        RunOptions o;
        o.binary = modelfs::testing::modelfs_binary();
        return o;
    }

    RunReport adopt_all(Plan* out_plan = nullptr) {
        Store store = Store::open(store_root);
        auto s = scans();
        auto h = hash_scans(store_root, s, {2, nullptr});
        Plan plan = make_plan(store, std::move(s), h);
        auto rep = run_plan(store, plan, run_options());
        if (out_plan) *out_plan = std::move(plan);
        return rep;
    }

    void expect_every_path_reads_the_same() {
        for (const auto& [p, sha] : before) {
            ASSERT_TRUE(stdfs::exists(p)) << p;
            EXPECT_EQ(sha256_hex_of_file(p), sha) << p;
        }
    }

    // After unadopt: plain files with the original bytes and mode, none a store blob's inode.
    void expect_plain_again() {
        Store store = Store::open(store_root);
        for (const auto& [p, sha] : before) {
            struct stat st;
            ASSERT_EQ(::lstat(p.c_str(), &st), 0) << p;
            EXPECT_TRUE(S_ISREG(st.st_mode)) << p;
            EXPECT_EQ(sha256_hex_of_file(p), sha) << p;
            EXPECT_EQ(st.st_mode & 07777, modes[p] & 07777) << p;
            struct stat bst;
            auto blob = store.blobs().path_of(*Sha256::from_hex(sha));
            if (::stat(blob.c_str(), &bst) == 0) {
                EXPECT_FALSE(bst.st_ino == st.st_ino && bst.st_dev == st.st_dev)
                    << p << " is still the store's blob";
            }
        }
        EXPECT_FALSE(is_mountpoint(a1111 / "models"));
        EXPECT_FALSE(is_mountpoint(comfy / "models"));
        EXPECT_FALSE(stdfs::exists(a1111 / "models.modelfs-backup"));
        EXPECT_FALSE(stdfs::exists(comfy / "models.modelfs-backup"));
        EXPECT_TRUE(stdfs::is_symlink(a1111 / "models/Lora/broken.safetensors"));
        EXPECT_TRUE(stdfs::is_symlink(a1111 / "models/VAE"));
    }

    const InstallPlan& install(const Plan& p, const std::string& tool) {
        for (const auto& ip : p.installs)
            if (ip.scan.install.tool == tool) return ip;
        throw std::runtime_error("no " + tool);
    }
};

#define REQUIRE_FUSE() \
    if (!fuse_available()) GTEST_SKIP() << "no /dev/fuse"

TEST_F(AdoptTest, DryRunNumbersAreExact) {
    Store store = Store::open(store_root);
    auto s = scans();
    auto h = hash_scans(store_root, s, {2, nullptr});
    EXPECT_EQ(h.hashed, 12u);  // models and sidecars, real paths (style/hard are two paths)
    Plan plan = make_plan(store, std::move(s), h);
    const auto& a = install(plan, "a1111");
    const auto& c = install(plan, "comfyui");
    EXPECT_EQ(a.totals.files, 8u);
    EXPECT_EQ(a.totals.stored, 6u);
    EXPECT_EQ(a.totals.plain, 1u);
    EXPECT_EQ(a.totals.not_adopted, 1u);  // the broken link
    EXPECT_EQ(a.totals.clashes, 1u);
    EXPECT_EQ(a.totals.dup_groups, 4u);    // sdxl, its preview, style, vae
    EXPECT_EQ(a.totals.bytes_freed, kC2);  // style_copy
    EXPECT_EQ(a.totals.bytes, kC1 + kP1 + 2 * kC2 + kC3a + kC5);
    EXPECT_EQ(c.totals.files, 7u);
    EXPECT_EQ(c.totals.stored, 6u);
    EXPECT_EQ(c.totals.plain, 1u);
    EXPECT_EQ(c.totals.clashes, 1u);
    EXPECT_EQ(c.totals.dup_groups, 4u);
    // The hard-linked pair counts once. The vae's keeper is ComfyUI's copy, which adopt moves
    // into the store (zero copy); the file outside the models folder stays the user's, so
    // nothing of the vae is freed (before blobs became immutable, the outside file was the blob
    // and ComfyUI's copy was freed: kC5 more).
    EXPECT_EQ(c.totals.bytes_freed, kC1 + kP1 + kC2);
    EXPECT_EQ(plan.total.dup_groups, 4u);
    EXPECT_EQ(plan.total.bytes_freed, kC1 + kP1 + 2 * kC2);
    // Every content has a keeper adopt can move: nothing is copied.
    EXPECT_EQ(plan.total.bytes_copied, 0u);
    EXPECT_EQ(plan.total.files, 15u);
    EXPECT_EQ(a.kept_in_place.size(), 1u);

    const std::string text = plan_text(plan);
    EXPECT_NE(text.find("4 duplicate groups"), std::string::npos) << text;
    EXPECT_NE(text.find("clash: lora/clash"), std::string::npos) << text;
    EXPECT_NE(text.find("broken link; it stays in"), std::string::npos) << text;
    EXPECT_NE(text.find("same content under different names"), std::string::npos) << text;
    EXPECT_NE(
        text.find("kept in place (its models are copied into the store): " + outside.string()),
        std::string::npos)
        << text;
    auto j = plan_json(plan);
    EXPECT_EQ(j["total"]["bytes_freed"].get<std::uint64_t>(), kC1 + kP1 + 2 * kC2);
    EXPECT_EQ(j["total"]["bytes_copied"].get<std::uint64_t>(), 0u);
    // A dry run changes nothing.
    EXPECT_FALSE(stdfs::exists(a1111 / "models.modelfs-backup"));
    EXPECT_EQ(Store::open(store_root).stats().models, 0u);
}

TEST_F(AdoptTest, AdoptConfirmUnadopt) {
    REQUIRE_FUSE();
    Plan plan;
    auto rep = adopt_all(&plan);
    ASSERT_TRUE(rep.ok()) << rep.installs[0].status << " / " << rep.installs[1].status;
    EXPECT_TRUE(is_mountpoint(a1111 / "models"));
    EXPECT_TRUE(is_mountpoint(comfy / "models"));
    EXPECT_NE(rep.installs[0].fstab_line.find(" fuse.modelfs view=a1111,nofail 0 0"),
              std::string::npos);
    EXPECT_NE(rep.installs[0].systemd_unit.find("Type=fuse.modelfs"), std::string::npos);
    expect_every_path_reads_the_same();
    {
        Store store = Store::open(store_root);
        // The clash: two versions, each view pinned to its own.
        Model m = *store.catalog().read().get_model("lora/clash.safetensors");
        EXPECT_EQ(m.versions.size(), 2u);
        EXPECT_EQ(m.pins.size(), 2u);
    }
    // Nothing is freed before confirm; the duplicates still occupy their blocks.
    std::uint64_t expect_freed = 0;
    for (auto rel : {"checkpoints/sdxl.safetensors", "checkpoints/sdxl.preview.png",
                     "loras/style.safetensors", "vae/vae.safetensors"})
        expect_freed += blocks_of(comfy / "models.modelfs-backup" / rel);
    expect_freed += blocks_of(a1111 / "models.modelfs-backup/Lora/style_copy.safetensors");
    struct stat st;
    ASSERT_EQ(::stat((comfy / "models.modelfs-backup/loras/hard.safetensors").c_str(), &st), 0);
    EXPECT_EQ(st.st_nlink, 2u);  // style + hard, not in the store (the a1111 copy is the keeper)
    // The keeper was moved into the store: the backup no longer has it, the blob is its only name.
    EXPECT_FALSE(stdfs::exists(a1111 / "models.modelfs-backup/Stable-diffusion/sdxl.safetensors"));
    {
        Store store = Store::open(store_root);
        auto blob = store.blobs().path_of(
            *Sha256::from_hex(before.at(a1111 / "models/Stable-diffusion/sdxl.safetensors")));
        ASSERT_EQ(::stat(blob.c_str(), &st), 0);
        EXPECT_EQ(st.st_nlink, 1u);
    }

    Store store = Store::open(store_root);
    auto conf = confirm(store, {});
    ASSERT_EQ(conf.size(), 2u);
    std::uint64_t freed = 0;
    for (const auto& c : conf) {
        EXPECT_TRUE(c.ok) << c.status;
        freed += c.bytes_freed;
    }
    EXPECT_EQ(freed, expect_freed);
    // What the store lacks stays: the broken link and the folder link.
    EXPECT_TRUE(stdfs::is_symlink(a1111 / "models.modelfs-backup/Lora/broken.safetensors"));
    EXPECT_FALSE(stdfs::exists(comfy / "models.modelfs-backup"));
    expect_every_path_reads_the_same();

    auto un = unadopt(store, {});
    ASSERT_EQ(un.size(), 2u);
    for (const auto& u : un) EXPECT_TRUE(u.ok) << u.status;
    expect_plain_again();
    // Unadopted records; adopting again starts afresh.
    for (const auto& r : load_records(store_root)) EXPECT_EQ(r.state, RecordState::unadopted);
}

// Blobs are immutable: after adopt no name outside STORE/blobs/ is a blob's inode, so writing
// any file the user still has (the backups, the file outside the models folder, the second hard
// link) never changes a stored byte. And a blob changed behind the store's back anyway (its
// owner can chmod it) is not served: the mount's open answers EIO and quarantines it.
TEST_F(AdoptTest, EditingTheBackupTheInstallOrASecondLinkNeverChangesABlob) {
    REQUIRE_FUSE();
    ASSERT_TRUE(adopt_all().ok());
    std::set<std::pair<dev_t, ino_t>> blob_inodes;
    std::vector<stdfs::path> blobs;
    for (auto it = stdfs::recursive_directory_iterator(store_root / "blobs"); it != decltype(it)();
         ++it) {
        struct stat st;
        if (::lstat(it->path().c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
            blob_inodes.insert({st.st_dev, st.st_ino});
            blobs.push_back(it->path());
        }
    }
    ASSERT_FALSE(blobs.empty());
    std::size_t edited = 0;
    for (const auto& dir :
         {a1111 / "models.modelfs-backup", comfy / "models.modelfs-backup", outside}) {
        for (auto it = stdfs::recursive_directory_iterator(dir); it != decltype(it)(); ++it) {
            struct stat st;
            if (::lstat(it->path().c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
            EXPECT_FALSE(blob_inodes.count({st.st_dev, st.st_ino}))
                << it->path() << " is a blob's inode";
            ::chmod(it->path().c_str(), 0644);
            int fd = ::open(it->path().c_str(), O_WRONLY);
            ASSERT_GE(fd, 0) << it->path();
            ASSERT_EQ(::pwrite(fd, "edited", 6, 0), 6);
            ::close(fd);
            ++edited;
        }
    }
    EXPECT_GE(edited, 5u);  // comfy's duplicates (with the hard-linked pair), style_copy, vae
    for (const auto& b : blobs) EXPECT_EQ(sha256_hex_of_file(b), b.filename().string()) << b;
    Store store = Store::open(store_root);
    auto v = store.verify(false);
    EXPECT_TRUE(v.problems.empty()) << v.problems.front().what << ": " << v.problems.front().detail;
    // Read through the mount: still the adopted bytes.
    for (auto rel : {"Stable-diffusion/sdxl.safetensors", "Lora/style.safetensors"})
        EXPECT_EQ(sha256_hex_of_file(a1111 / "models" / rel), before.at(a1111 / "models" / rel));

    // The blob itself, changed by whoever owns the store, mtime put back as `touch -d` would.
    const std::string sha = before.at(comfy / "models/loras/clash.safetensors");
    const stdfs::path blob = store.blobs().path_of(*Sha256::from_hex(sha));
    struct stat st;
    ASSERT_EQ(::stat(blob.c_str(), &st), 0);
    ::chmod(blob.c_str(), 0644);
    int fd = ::open(blob.c_str(), O_WRONLY);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::pwrite(fd, "evil", 4, 100), 4);
    ::close(fd);
    struct timespec ts[2] = {st.st_atim, st.st_mtim};
    ASSERT_EQ(::utimensat(AT_FDCWD, blob.c_str(), ts, 0), 0);
    errno = 0;
    int rfd = ::open((comfy / "models/loras/clash.safetensors").c_str(), O_RDONLY);
    EXPECT_EQ(rfd, -1) << "changed bytes must not be served under the old hash";
    EXPECT_EQ(errno, EIO);
    if (rfd >= 0) ::close(rfd);
    EXPECT_FALSE(stdfs::exists(blob));
    EXPECT_EQ(store.catalog().read().get_blob(*Sha256::from_hex(sha))->state,
              BlobState::quarantined);
    // unadopt still gives everything else back, and says what it could not.
    auto un = unadopt(store, {});
    ASSERT_EQ(un.size(), 2u);
    std::string notes;
    for (const auto& u : un) {
        EXPECT_TRUE(u.ok) << u.status;
        for (const auto& n : u.notes) notes += n + "\n";
    }
    EXPECT_NE(notes.find("clash.safetensors could not be brought back"), std::string::npos)
        << notes;
    EXPECT_EQ(sha256_hex_of_file(a1111 / "models/Stable-diffusion/sdxl.safetensors"),
              before.at(a1111 / "models/Stable-diffusion/sdxl.safetensors"));
}

TEST_F(AdoptTest, UnadoptBeforeConfirmRestoresTheOriginalTree) {
    REQUIRE_FUSE();
    auto rep = adopt_all();
    ASSERT_TRUE(rep.ok()) << rep.installs[0].status;
    expect_every_path_reads_the_same();
    // A model added through the mount after adopting comes back too.
    write_sized_safetensors(comfy / "models/loras/new.safetensors", 4096, 77);
    const std::string new_sha = sha256_hex_of_file(comfy / "models/loras/new.safetensors");
    Store store = Store::open(store_root);
    auto un = unadopt(store, {comfy});
    ASSERT_EQ(un.size(), 1u);
    EXPECT_TRUE(un[0].ok) << un[0].status;
    EXPECT_EQ(un[0].added, 1u);
    EXPECT_EQ(sha256_hex_of_file(comfy / "models/loras/new.safetensors"), new_sha);
    EXPECT_TRUE(is_mountpoint(a1111 / "models"));
    // Models only a1111 holds now: the store drops them and the files get their inodes back
    // (adopt moved them into the store; the blob is that inode).
    struct stat kept;
    ASSERT_EQ(::stat(store.blobs()
                         .path_of(*Sha256::from_hex(
                             before.at(a1111 / "models/Stable-diffusion/sdxl.safetensors")))
                         .c_str(),
                     &kept),
              0);
    un = unadopt(store, {a1111});
    ASSERT_EQ(un.size(), 1u);
    EXPECT_TRUE(un[0].ok) << un[0].status;
    expect_plain_again();
    struct stat now;
    ASSERT_EQ(::stat((a1111 / "models/Stable-diffusion/sdxl.safetensors").c_str(), &now), 0);
    EXPECT_EQ(now.st_ino, kept.st_ino);
    EXPECT_EQ(now.st_nlink, 1u);
    EXPECT_FALSE(store.catalog().read().get_model("checkpoint/sdxl.safetensors"));
    EXPECT_TRUE(store.catalog().read().get_model("lora/clash.safetensors"));  // two versions: kept
    // The inode comfy's two names share is shared again.
    struct stat s1, s2;
    ::stat((comfy / "models/loras/style.safetensors").c_str(), &s1);
    ::stat((comfy / "models/loras/hard.safetensors").c_str(), &s2);
    EXPECT_EQ(s1.st_ino, s2.st_ino);
}

TEST_F(AdoptTest, SecondAdoptIsANoOp) {
    REQUIRE_FUSE();
    ASSERT_TRUE(adopt_all().ok());
    Store store = Store::open(store_root);
    // What the CLI does for an adopted install: no scan through the mount.
    std::vector<InstallScan> s(2);
    s[0].install = fake::fake_scan("a1111", a1111 / "models.modelfs-backup/..").install;
    s[0].install.root = stdfs::canonical(a1111);
    s[0].install.models_dir = s[0].install.root / "models";
    s[1].install = s[0].install;
    s[1].install.tool = "comfyui";
    s[1].install.root = stdfs::canonical(comfy);
    s[1].install.models_dir = s[1].install.root / "models";
    auto h = hash_scans(store_root, s);
    EXPECT_EQ(h.hashed + h.cached, 0u);
    Plan plan = make_plan(store, std::move(s), h);
    for (const auto& ip : plan.installs) {
        EXPECT_EQ(ip.skip.reason, SkipReason::already_adopted);
        EXPECT_EQ(skip_text(ip.skip).rfind("already adopted", 0), 0u) << skip_text(ip.skip);
    }
    auto rep = run_plan(store, plan, run_options());
    EXPECT_TRUE(rep.ok());
    EXPECT_NE(plan_text(plan).find("already adopted (mounted)"), std::string::npos);
    expect_every_path_reads_the_same();
    // A different install of an adopted tool is refused.
    TempDir other("modelfs-adopt-other");
    stdfs::create_directories(other / "a/models/Lora");
    write_sized_safetensors(other / "a/models/Lora/x.safetensors", 1000, 9);
    std::vector<InstallScan> s2{fake::fake_scan("a1111", other / "a")};
    auto h2 = hash_scans(store_root, s2);
    Plan p2 = make_plan(store, std::move(s2), h2);
    EXPECT_EQ(p2.installs[0].skip.reason, SkipReason::other_install_adopted);
    EXPECT_NE(skip_text(p2.installs[0].skip).find("another a1111 install"), std::string::npos);
}

TEST_F(AdoptTest, InterruptedHashingResumes) {
    auto s = scans();
    // Torn last line of an earlier crash: ignored.
    stdfs::create_directories(adopt_dir(store_root));
    { std::ofstream(adopt_dir(store_root) / "hashes.jsonl") << "{\"path\": \"/x\", \"si"; }
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        ::setenv("MODELFS_ADOPT_TEST_KILL_AFTER", "5", 1);
        hash_scans(store_root, s, {1, nullptr});
        ::_exit(0);  // not reached: the hook kills the child after 5 files
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFSIGNALED(status));
    EXPECT_EQ(WTERMSIG(status), SIGKILL);
    auto h = hash_scans(store_root, s, {2, nullptr});
    EXPECT_EQ(h.cached, 5u);
    EXPECT_EQ(h.hashed, 7u);
    // A file changed since: hashed again.
    write_sized_safetensors(a1111 / "models/Lora/clash.safetensors", kC3a, 44);
    auto h2 = hash_scans(store_root, scans(), {2, nullptr});
    EXPECT_EQ(h2.cached, 11u);
    EXPECT_EQ(h2.hashed, 1u);
    EXPECT_EQ(
        h2.files.at(stdfs::canonical(a1111 / "models/Lora/clash.safetensors")).digests.sha256.hex(),
        sha256_hex_of_file(a1111 / "models/Lora/clash.safetensors"));
}

TEST_F(AdoptTest, CrashBetweenRecordAndMountResumes) {
    REQUIRE_FUSE();
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        ::setenv("MODELFS_ADOPT_TEST_KILL_AFTER_RECORD", "1", 1);
        adopt_all();
        ::_exit(0);
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFSIGNALED(status));
    auto rec = load_record(store_root, "a1111");
    ASSERT_TRUE(rec);
    EXPECT_EQ(rec->state, RecordState::recorded);
    EXPECT_FALSE(is_mountpoint(a1111 / "models"));
    expect_every_path_reads_the_same();  // nothing moved yet
    Plan plan;
    auto rep = adopt_all(&plan);
    EXPECT_TRUE(install(plan, "a1111").resume);
    ASSERT_TRUE(rep.ok()) << rep.installs[0].status << " / " << rep.installs[1].status;
    EXPECT_TRUE(is_mountpoint(a1111 / "models"));
    EXPECT_TRUE(is_mountpoint(comfy / "models"));
    expect_every_path_reads_the_same();
    EXPECT_EQ(load_record(store_root, "a1111")->state, RecordState::mounted);
    // The resumed switch also finished the move: the keepers' backup names are gone, and no
    // backup file is a blob's inode.
    EXPECT_FALSE(stdfs::exists(a1111 / "models.modelfs-backup/Stable-diffusion/sdxl.safetensors"));
    Store store = Store::open(store_root);
    for (const auto& dir : {a1111 / "models.modelfs-backup", comfy / "models.modelfs-backup"})
        for (auto it = stdfs::recursive_directory_iterator(dir); it != decltype(it)(); ++it) {
            struct stat st, bst;
            if (::lstat(it->path().c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
            auto sha = Sha256::from_hex(sha256_hex_of_file(it->path()));
            if (::stat(store.blobs().path_of(*sha).c_str(), &bst) == 0) {
                EXPECT_NE(bst.st_ino, st.st_ino) << it->path() << " is a blob's inode";
            }
        }
}

TEST_F(AdoptTest, BusyMountpointAtUnadoptChangesNothing) {
    REQUIRE_FUSE();
    ASSERT_TRUE(adopt_all().ok());
    Store store = Store::open(store_root);
    {
        int fd = ::open((a1111 / "models/Lora/style.safetensors").c_str(), O_RDONLY);
        ASSERT_GE(fd, 0);
        auto un = unadopt(store, {a1111});
        ::close(fd);
        ASSERT_EQ(un.size(), 1u);
        EXPECT_FALSE(un[0].ok);
        EXPECT_NE(un[0].status.find("stop a1111"), std::string::npos) << un[0].status;
    }
    EXPECT_TRUE(is_mountpoint(a1111 / "models"));
    EXPECT_TRUE(stdfs::exists(a1111 / "models.modelfs-backup"));
    EXPECT_FALSE(stdfs::exists(a1111 / "models.modelfs-restore"));
    EXPECT_EQ(load_record(store_root, "a1111")->state, RecordState::mounted);
    expect_every_path_reads_the_same();
    auto un = unadopt(store, {});
    for (const auto& u : un) EXPECT_TRUE(u.ok) << u.status;
    expect_plain_again();
}

TEST_F(AdoptTest, FileChangedAfterHashingStaysInTheBackup) {
    REQUIRE_FUSE();
    // A model only ComfyUI has (of a shared name, the view would show the other tool's).
    const stdfs::path changed = comfy / "models/loras/only.safetensors";
    write_sized_safetensors(changed, 5000, 98);
    Store store = Store::open(store_root);
    auto s = scans();
    auto h = hash_scans(store_root, s);
    Plan plan = make_plan(store, std::move(s), h);
    // Changed between hashing and the commit.
    write_sized_safetensors(changed, 5010, 99);
    const std::string changed_sha = sha256_hex_of_file(changed);
    auto rep = run_plan(store, plan, run_options());
    ASSERT_TRUE(rep.ok());
    const auto& c = rep.installs[1];
    EXPECT_EQ(c.changing, 1u);
    EXPECT_FALSE(stdfs::exists(changed));  // not shown
    EXPECT_EQ(sha256_hex_of_file(comfy / "models.modelfs-backup/loras/only.safetensors"),
              changed_sha);
    auto un = unadopt(store, {});
    for (const auto& u : un) EXPECT_TRUE(u.ok) << u.status;
    EXPECT_EQ(sha256_hex_of_file(changed), changed_sha);
}

// After a reboot without the fstab line the view is not mounted: adopt mounts it again (also
// once the backup is confirmed away), without scanning or committing anything.
TEST_F(AdoptTest, AdoptAgainRemountsAnUnmountedView) {
    REQUIRE_FUSE();
    ASSERT_TRUE(adopt_all().ok());
    Store store = Store::open(store_root);
    for (const auto& c : confirm(store, {})) EXPECT_TRUE(c.ok) << c.status;
    unmount_hard(a1111 / "models");
    unmount_hard(comfy / "models");
    ASSERT_FALSE(is_mountpoint(a1111 / "models"));
    std::vector<InstallScan> s(2);
    s[0].install.tool = "a1111";
    s[0].install.root = stdfs::canonical(a1111);
    s[0].install.models_dir = s[0].install.root / "models";
    s[1].install.tool = "comfyui";
    s[1].install.root = stdfs::canonical(comfy);
    s[1].install.models_dir = s[1].install.root / "models";
    Plan plan = make_plan(store, std::move(s), HashReport{});
    for (const auto& ip : plan.installs) EXPECT_TRUE(ip.resume);
    auto rep = run_plan(store, plan, run_options());
    ASSERT_TRUE(rep.ok()) << rep.installs[0].status << " / " << rep.installs[1].status;
    EXPECT_NE(rep.installs[0].status.find("mounted again"), std::string::npos);
    EXPECT_TRUE(is_mountpoint(a1111 / "models"));
    expect_every_path_reads_the_same();
    EXPECT_EQ(load_record(store_root, "a1111")->state, RecordState::confirmed);
}

// A failure in the switch (here: a stale overlay file of an earlier mount of the view) puts the
// plain folder back; unadopt of that record then gives the files their own inodes and modes.
TEST_F(AdoptTest, FailedSwitchRollsBackAndUnadoptRestores) {
    REQUIRE_FUSE();
    const stdfs::path stale = store_root / "views/a1111/Stable-diffusion/notes.txt";
    stdfs::create_directories(stale.parent_path());
    write_text_file(stale, "an older note\n");
    auto rep = adopt_all();
    ASSERT_EQ(rep.installs.size(), 2u);
    EXPECT_FALSE(rep.installs[0].ok);
    EXPECT_NE(rep.installs[0].status.find("earlier mount"), std::string::npos)
        << rep.installs[0].status;
    EXPECT_TRUE(rep.installs[1].ok) << rep.installs[1].status;
    EXPECT_FALSE(is_mountpoint(a1111 / "models"));
    EXPECT_FALSE(stdfs::exists(a1111 / "models.modelfs-backup"));
    EXPECT_EQ(load_record(store_root, "a1111")->state, RecordState::recorded);
    expect_every_path_reads_the_same();
    // Committed files are read-only blobs now; unadopt gives them back as the user's.
    Store store = Store::open(store_root);
    auto un = unadopt(store, {});
    ASSERT_EQ(un.size(), 2u);
    for (const auto& u : un) EXPECT_TRUE(u.ok) << u.status;
    ::unlink(stale.c_str());
    expect_plain_again();
}

// The store on another filesystem (tmpfs): files are copied into it, verified, and the
// originals stay untouched until confirm.
TEST(AdoptCrossFs, CopiesVerifiesAndMounts) {
    if (!fuse_available()) GTEST_SKIP() << "no /dev/fuse";
    if (!stdfs::exists("/dev/shm")) GTEST_SKIP() << "no /dev/shm";
    ::setenv("MODELFS_CONFIG", "/dev/null", 1);
    TempDir home("modelfs-adopt-xfs");
    char shm[] = "/dev/shm/modelfs-adopt-XXXXXX";
    ASSERT_NE(::mkdtemp(shm), nullptr);
    const stdfs::path store_root = stdfs::path(shm) / "store";
    struct Cleanup {
        stdfs::path m, s;
        ~Cleanup() {
            unmount_hard(m);
            std::error_code ec;
            stdfs::remove_all(s, ec);
        }
    } cleanup{home / "webui/models", shm};
    {
        struct stat a, b;
        ::stat(home.path().c_str(), &a);
        ::stat(shm, &b);
        if (a.st_dev == b.st_dev) GTEST_SKIP() << "/dev/shm is on the same filesystem";
    }
    stdfs::create_directories(home / "webui/models/Lora");
    write_sized_safetensors(home / "webui/models/Lora/a.safetensors", 300000, 1);
    write_sized_safetensors(home / "webui/models/Lora/b.safetensors", 300000, 1);
    write_text_file(home / "webui/models/Lora/readme.txt", "hi\n");
    std::map<stdfs::path, std::string> before;
    for (auto n : {"a.safetensors", "b.safetensors", "readme.txt"})
        before[home / "webui/models/Lora" / n] = sha256_hex_of_file(home / "webui/models/Lora" / n);
    Store::init(store_root);
    Store store = Store::open(store_root);
    std::vector<InstallScan> s{fake::fake_scan("a1111", home / "webui")};
    auto h = hash_scans(store_root, s);
    Plan plan = make_plan(store, std::move(s), h);
    // Both files leave the home filesystem at confirm; one copy of their content is written to
    // the store's. (Counted as 300000 freed before copied keepers were reported as copies.)
    EXPECT_EQ(plan.installs[0].totals.bytes_freed, 600000u);
    EXPECT_EQ(plan.installs[0].totals.bytes_copied, 300000u);
    RunOptions o;
    o.binary = modelfs::testing::modelfs_binary();
    auto rep = run_plan(store, plan, o);
    ASSERT_TRUE(rep.ok()) << rep.installs[0].status;
    for (const auto& [p, sha] : before) EXPECT_EQ(sha256_hex_of_file(p), sha) << p;
    // The originals are copies' sources, not linked: their mode is theirs.
    struct stat st;
    ::stat((home / "webui/models.modelfs-backup/Lora/a.safetensors").c_str(), &st);
    EXPECT_EQ(st.st_nlink, 1u);
    EXPECT_TRUE(store.blobs().exists(*Sha256::from_hex(before.begin()->second)));
    auto un = unadopt(store, {});
    ASSERT_EQ(un.size(), 1u);
    EXPECT_TRUE(un[0].ok) << un[0].status;
    for (const auto& [p, sha] : before) EXPECT_EQ(sha256_hex_of_file(p), sha) << p;
}

// Not enough room in the store's filesystem for the copy: refused up front, nothing changed.
TEST(AdoptCrossFs, NotEnoughSpaceIsRefusedUpFront) {
    if (::geteuid() != 0) GTEST_SKIP() << "mounting a small tmpfs needs root";
    ::setenv("MODELFS_CONFIG", "/dev/null", 1);
    TempDir home("modelfs-adopt-nospace");
    TempDir small("modelfs-adopt-small");
    if (::mount("tmpfs", small.path().c_str(), "tmpfs", 0, "size=2m") != 0)
        GTEST_SKIP() << "cannot mount a tmpfs: " << std::strerror(errno);
    struct Umount {
        stdfs::path p;
        ~Umount() { ::umount2(p.c_str(), MNT_DETACH); }
    } um{small.path()};
    stdfs::create_directories(home / "webui/models/Lora");
    write_sized_safetensors(home / "webui/models/Lora/big.safetensors", 8u << 20, 1);
    Store::init(small / "store");
    Store store = Store::open(small / "store");
    std::vector<InstallScan> s{fake::fake_scan("a1111", home / "webui")};
    auto h = hash_scans(small / "store", s);
    Plan plan = make_plan(store, std::move(s), h);
    RunOptions o;
    o.binary = modelfs::testing::modelfs_binary();
    auto rep = run_plan(store, plan, o);
    ASSERT_FALSE(rep.ok());
    EXPECT_NE(rep.installs[0].status.find("not enough space"), std::string::npos)
        << rep.installs[0].status;
    EXPECT_TRUE(stdfs::is_regular_file(home / "webui/models/Lora/big.safetensors"));
    EXPECT_FALSE(stdfs::exists(home / "webui/models.modelfs-backup"));
    EXPECT_EQ(store.stats().models, 0u);
}

}  // namespace

namespace {

// Files the view cannot show at their exact path, and foo.ckpt beside foo.safetensors (shown at
// theirs: a file's name, extension included, is its identity).
TEST(AdoptExactPaths, NonPrimaryFolderSecondExtensionAndSkippedNames) {
    if (!fuse_available()) GTEST_SKIP() << "no /dev/fuse";
    ::setenv("MODELFS_CONFIG", "/dev/null", 1);
    TempDir tmp("modelfs-adopt-exact");
    const stdfs::path root = tmp / "webui", m = root / "models", store_root = tmp / "store";
    struct Cleanup {
        stdfs::path m;
        ~Cleanup() { unmount_hard(m); }
    } cleanup{m};
    stdfs::create_directories(m / "LyCORIS");
    stdfs::create_directories(m / "Stable-diffusion");
    write_sized_safetensors(m / "LyCORIS/ly.safetensors", 7000, 1);
    write_sized_safetensors(m / "Stable-diffusion/foo.safetensors", 9000, 2);
    write_random_file(m / "Stable-diffusion/foo.ckpt", 9100, 3);
    write_sized_safetensors(m / "Stable-diffusion/foo.vae.safetensors", 3000, 4);
    std::map<stdfs::path, std::string> before;
    for (auto rel : {"LyCORIS/ly.safetensors", "Stable-diffusion/foo.safetensors",
                     "Stable-diffusion/foo.ckpt", "Stable-diffusion/foo.vae.safetensors"})
        before[m / rel] = sha256_hex_of_file(m / rel);
    Store::init(store_root);
    Store store = Store::open(store_root);
    std::vector<InstallScan> s{fake::fake_scan("a1111", root)};
    auto h = hash_scans(store_root, s);
    Plan plan = make_plan(store, std::move(s), h);
    std::map<std::string, const PlannedFile*> by;
    for (const auto& pf : plan.installs[0].files) by[pf.file.view_rel] = &pf;
    EXPECT_EQ(by["LyCORIS/ly.safetensors"]->action, Action::store);
    EXPECT_EQ(by["LyCORIS/ly.safetensors"]->shown_at, "Lora/ly.safetensors");
    // foo.ckpt beside foo.safetensors: two names, two models (issue 16 finding 2).
    EXPECT_EQ(by["Stable-diffusion/foo.ckpt"]->action, Action::store);
    EXPECT_EQ(by["Stable-diffusion/foo.ckpt"]->model, "checkpoint/foo.ckpt");
    EXPECT_EQ(by["Stable-diffusion/foo.safetensors"]->action, Action::store);
    EXPECT_EQ(by["Stable-diffusion/foo.safetensors"]->model, "checkpoint/foo.safetensors");
    EXPECT_EQ(by["Stable-diffusion/foo.vae.safetensors"]->action, Action::overlay);
    EXPECT_EQ(plan_text(plan).find("one file per model name"), std::string::npos);

    RunOptions o;
    o.binary = modelfs::testing::modelfs_binary();
    o.verify = true;
    auto rep = run_plan(store, plan, o);
    ASSERT_TRUE(rep.ok()) << rep.installs[0].status;
    EXPECT_EQ(sha256_hex_of_file(m / "Lora/ly.safetensors"), before[m / "LyCORIS/ly.safetensors"]);
    EXPECT_EQ(sha256_hex_of_file(m / "Stable-diffusion/foo.vae.safetensors"),
              before[m / "Stable-diffusion/foo.vae.safetensors"]);
    EXPECT_EQ(sha256_hex_of_file(m / "Stable-diffusion/foo.safetensors"),
              before[m / "Stable-diffusion/foo.safetensors"]);
    EXPECT_EQ(sha256_hex_of_file(m / "Stable-diffusion/foo.ckpt"),
              before[m / "Stable-diffusion/foo.ckpt"]);
    EXPECT_FALSE(stdfs::exists(root / "models.modelfs-backup/Stable-diffusion/foo.ckpt"));

    auto un = unadopt(store, {});
    ASSERT_EQ(un.size(), 1u);
    EXPECT_TRUE(un[0].ok) << un[0].status;
    for (const auto& [p, sha] : before) EXPECT_EQ(sha256_hex_of_file(p), sha) << p;
    EXPECT_FALSE(stdfs::exists(m / "Lora/ly.safetensors"));  // not a file the user had
    EXPECT_FALSE(stdfs::exists(store_root / "views/a1111/Stable-diffusion/foo.vae.safetensors"));
}

}  // namespace

namespace {

// A file name the JSON record cannot hold exactly is reported, not adopted (and not lost).
TEST(AdoptNames, NonUtf8NameIsNotAdopted) {
    TempDir tmp("modelfs-adopt-names");
    const stdfs::path m = tmp / "webui/models/Lora";
    stdfs::create_directories(m);
    write_sized_safetensors(m / "ok.safetensors", 1000, 1);
    write_sized_safetensors(m / std::string("bad\xff.safetensors"), 1000, 2);
    Store::init(tmp / "store");
    Store store = Store::open(tmp / "store");
    std::vector<InstallScan> s{fake::fake_scan("a1111", tmp / "webui")};
    auto h = hash_scans(tmp / "store", s);
    EXPECT_EQ(h.hashed, 2u);
    Plan plan = make_plan(store, std::move(s), h);
    ASSERT_EQ(plan.installs[0].files.size(), 2u);
    std::size_t left = 0, stored = 0;
    for (const auto& pf : plan.installs[0].files) {
        if (pf.action == Action::left) {
            ++left;
            EXPECT_NE(pf.note.find("not valid UTF-8"), std::string::npos);
        }
        if (pf.action == Action::store) ++stored;
    }
    EXPECT_EQ(left, 1u);
    EXPECT_EQ(stored, 1u);
    EXPECT_EQ(plan.installs[0].totals.not_adopted, 1u);
    EXPECT_NO_THROW(plan_json(plan).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
}

}  // namespace

namespace {

// A file written to all the time while it is hashed: read three times, then left in place.
TEST(AdoptHashing, FileChangingWhileHashedIsReported) {
    TempDir tmp("modelfs-adopt-changing");
    const stdfs::path m = tmp / "webui/models/Lora";
    stdfs::create_directories(m);
    write_sized_safetensors(m / "busy.safetensors", 64u << 20, 1);
    write_sized_safetensors(m / "calm.safetensors", 1000, 2);
    Store::init(tmp / "store");
    std::vector<InstallScan> s{fake::fake_scan("a1111", tmp / "webui")};
    std::atomic<bool> stop{false};
    std::thread writer([&] {
        int fd = ::open((m / "busy.safetensors").c_str(), O_WRONLY | O_APPEND);
        while (!stop) {
            (void)::write(fd, "x", 1);
            ::usleep(500);
        }
        ::close(fd);
    });
    auto h = hash_scans(tmp / "store", s, {1, nullptr});
    stop = true;
    writer.join();
    const stdfs::path busy = stdfs::canonical(m / "busy.safetensors");
    ASSERT_TRUE(h.failed.count(busy));
    EXPECT_TRUE(h.failed.at(busy).changing);
    EXPECT_NE(h.failed.at(busy).why.find("changing while adopting"), std::string::npos);
    EXPECT_EQ(h.hashed, 1u);
    Store store = Store::open(tmp / "store");
    Plan plan = make_plan(store, std::move(s), h);
    EXPECT_EQ(plan.installs[0].totals.changing, 1u);
    EXPECT_EQ(plan.installs[0].totals.stored, 1u);
    // Nothing cached for it: a later run reads it again.
    auto again = hash_scans(tmp / "store", {fake::fake_scan("a1111", tmp / "webui")});
    EXPECT_EQ(again.cached, 1u);
    EXPECT_EQ(again.hashed, 1u);
}

}  // namespace

namespace {

// A problem in a folder outside the models folder (extra_model_paths.yaml) stays where it is:
// named in the plan, but neither counted as not adopted nor said to stay in the backup, which
// only holds the models folder. The same problem inside is both.
TEST(AdoptNames, ProblemsOutsideTheModelsFolderAreLeftWhereTheyAre) {
    TempDir tmp("modelfs-adopt-outside");
    stdfs::create_directories(tmp / "webui/models/Lora");
    stdfs::create_directories(tmp / "extra");
    stdfs::create_symlink("/nonexistent/in.safetensors", tmp / "webui/models/Lora/in.safetensors");
    stdfs::create_symlink("/nonexistent/out.safetensors", tmp / "extra/out.safetensors");
    write_text_file(tmp / "extra/readme.txt", "hi\n");
    Store::init(tmp / "store");
    Store store = Store::open(tmp / "store");
    Install inst;
    inst.tool = "a1111";
    inst.root = stdfs::canonical(tmp / "webui");
    inst.models_dir = inst.root / "models";
    inst.dirs.push_back(ModelDir{inst.models_dir, "", true, "layout"});
    inst.dirs.push_back(ModelDir{stdfs::canonical(tmp / "extra"), "Lora", false, "a test"});
    std::vector<InstallScan> s{scan_install(inst, *layouts::ViewLayout::builtin("a1111"))};
    auto h = hash_scans(tmp / "store", s);
    Plan plan = make_plan(store, std::move(s), h);
    const InstallPlan& ip = plan.installs.at(0);
    ASSERT_FALSE(ip.skip) << skip_text(ip.skip);
    std::map<std::string, const PlannedFile*> by_name;
    for (const auto& pf : ip.files) by_name[pf.file.path.filename().string()] = &pf;
    ASSERT_TRUE(by_name.count("in.safetensors") && by_name.count("out.safetensors") &&
                by_name.count("readme.txt"));
    const PlannedFile& in = *by_name["in.safetensors"];
    const PlannedFile& out = *by_name["out.safetensors"];
    const PlannedFile& readme = *by_name["readme.txt"];
    EXPECT_EQ(in.action, Action::left);
    EXPECT_EQ(in.left, Left::not_adopted);
    EXPECT_EQ(in.note.rfind("not adopted: " + in.file.path.string() + " -> ", 0), 0u) << in.note;
    EXPECT_EQ(out.action, Action::left);
    EXPECT_EQ(out.left, Left::outside);
    EXPECT_EQ(
        out.note.rfind(
            "left where it is (outside the models folder): " + out.file.path.string() + " -> ", 0),
        0u)
        << out.note;
    EXPECT_EQ(readme.action, Action::left);
    EXPECT_EQ(readme.left, Left::kept_in_place);
    EXPECT_EQ(readme.note, "kept in place, not in the store: plain file outside the models folder");
    EXPECT_EQ(ip.totals.not_adopted, 1u);
    const std::string text = plan_text(plan);
    EXPECT_NE(text.find("in.safetensors: broken link; it stays in"), std::string::npos) << text;
    EXPECT_EQ(text.find("out.safetensors"), std::string::npos) << text;
    EXPECT_NE(text.find("1 not adopted (see below)"), std::string::npos) << text;
}

// A models folder that is itself a link (StabilityMatrix): renaming it would move the link.
TEST(AdoptNames, LinkedModelsFolderIsRefusedWithAReason) {
    TempDir tmp("modelfs-adopt-linked");
    stdfs::create_directories(tmp / "data/Lora");
    stdfs::create_directories(tmp / "webui");
    write_sized_safetensors(tmp / "data/Lora/x.safetensors", 1000, 1);
    stdfs::create_directory_symlink(tmp / "data", tmp / "webui/models");
    Store::init(tmp / "store");
    Store store = Store::open(tmp / "store");
    std::vector<InstallScan> s{fake::fake_scan("a1111", tmp / "webui")};
    auto h = hash_scans(tmp / "store", s);
    Plan plan = make_plan(store, std::move(s), h);
    EXPECT_EQ(plan.installs[0].skip.reason, SkipReason::models_dir_link);
    EXPECT_NE(skip_text(plan.installs[0].skip).find("is a link to"), std::string::npos)
        << skip_text(plan.installs[0].skip);
    auto rep = run_plan(store, plan);
    EXPECT_FALSE(rep.ok());
    EXPECT_TRUE(stdfs::is_symlink(tmp / "webui/models"));
    EXPECT_TRUE(stdfs::is_regular_file(tmp / "data/Lora/x.safetensors"));
}

}  // namespace

namespace {

// A file link inside models/ to a file elsewhere (real scanner): read through the mount while
// adopted; afterwards the link is back and its target is the user's own file again.
TEST(AdoptLinks, FileLinkInsideModels) {
    if (!fuse_available()) GTEST_SKIP() << "no /dev/fuse";
    ::setenv("MODELFS_CONFIG", "/dev/null", 1);
    TempDir tmp("modelfs-adopt-filelink");
    const stdfs::path root = tmp / "webui", m = root / "models", store_root = tmp / "store";
    struct Cleanup {
        stdfs::path m;
        ~Cleanup() { unmount_hard(m); }
    } cleanup{m};
    stdfs::create_directories(root / "modules");
    stdfs::create_directories(m / "Lora");
    stdfs::create_directories(tmp / "elsewhere");
    write_text_file(root / "webui.py", "#\n");
    write_text_file(root / "launch.py", "#\n");
    write_sized_safetensors(tmp / "elsewhere/target.safetensors", 5000, 1);
    ::chmod((tmp / "elsewhere/target.safetensors").c_str(), 0640);
    stdfs::create_symlink(tmp / "elsewhere/target.safetensors", m / "Lora/linked.safetensors");
    const std::string sha = sha256_hex_of_file(m / "Lora/linked.safetensors");
    Store::init(store_root);
    Store store = Store::open(store_root);
    auto inst = detect_install(root);
    ASSERT_TRUE(inst);
    std::vector<InstallScan> s{
        scan_install(*inst, *modelfs::layouts::ViewLayout::builtin("a1111"))};
    auto h = hash_scans(store_root, s);
    Plan plan = make_plan(store, std::move(s), h);
    RunOptions o;
    o.binary = modelfs::testing::modelfs_binary();
    auto rep = run_plan(store, plan, o);
    ASSERT_TRUE(rep.ok()) << rep.installs[0].status;
    EXPECT_EQ(sha256_hex_of_file(m / "Lora/linked.safetensors"), sha);
    auto un = unadopt(store, {});
    ASSERT_EQ(un.size(), 1u);
    EXPECT_TRUE(un[0].ok) << un[0].status;
    EXPECT_TRUE(stdfs::is_symlink(m / "Lora/linked.safetensors"));
    EXPECT_EQ(sha256_hex_of_file(m / "Lora/linked.safetensors"), sha);
    struct stat st, bst;
    ASSERT_EQ(::stat((tmp / "elsewhere/target.safetensors").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0640u);
    auto blob = store.blobs().path_of(*Sha256::from_hex(sha));
    if (::stat(blob.c_str(), &bst) == 0) {
        EXPECT_NE(bst.st_ino, st.st_ino);
    }
}

}  // namespace

namespace {

// Files the store may not take (another owner, a second hard link outside the install) are
// copied, reported as copies in the dry run, and left as they are: after adopt and after unadopt
// they are the user's own inodes; editing them never changes what the view serves.
TEST(AdoptImmutable, FilesTheStoreMayNotTakeAreCopied) {
    if (!fuse_available()) GTEST_SKIP() << "no /dev/fuse";
    if (::geteuid() != 0) GTEST_SKIP() << "chown to another uid needs root";
    ::setenv("MODELFS_CONFIG", "/dev/null", 1);
    TempDir tmp("modelfs-adopt-immutable");
    const stdfs::path root = tmp / "webui", m = root / "models", store_root = tmp / "store";
    struct Cleanup {
        stdfs::path m;
        ~Cleanup() { unmount_hard(m); }
    } cleanup{m};
    stdfs::create_directories(m / "Lora");
    write_sized_safetensors(m / "Lora/mine.safetensors", 10000, 1);
    write_sized_safetensors(m / "Lora/theirs.safetensors", 20000, 2);
    write_sized_safetensors(m / "Lora/linked.safetensors", 30000, 3);
    ASSERT_EQ(::chown((m / "Lora/theirs.safetensors").c_str(), 65534, 65534), 0);
    stdfs::create_hard_link(m / "Lora/linked.safetensors", tmp / "second-name.safetensors");
    std::map<std::string, std::string> sha;
    for (auto n : {"mine", "theirs", "linked"})
        sha[n] = sha256_hex_of_file(m / "Lora" / (std::string(n) + ".safetensors"));
    Store::init(store_root);
    Store store = Store::open(store_root);
    std::vector<InstallScan> s{fake::fake_scan("a1111", root)};
    auto h = hash_scans(store_root, s);
    Plan plan = make_plan(store, std::move(s), h);
    EXPECT_EQ(plan.installs[0].totals.bytes_copied, 50000u);  // theirs + linked
    EXPECT_NE(plan_text(plan).find("copied into the store"), std::string::npos);
    RunOptions o;
    o.binary = modelfs::testing::modelfs_binary();
    auto rep = run_plan(store, plan, o);
    ASSERT_TRUE(rep.ok()) << rep.installs[0].status;

    auto blob = [&](const std::string& n) { return store.blobs().path_of(*Sha256::from_hex(n)); };
    struct stat st;
    // Moved: the blob is the user's former inode, and the backup no longer has the name.
    EXPECT_FALSE(stdfs::exists(root / "models.modelfs-backup/Lora/mine.safetensors"));
    ASSERT_EQ(::stat(blob(sha["mine"]).c_str(), &st), 0);
    EXPECT_EQ(st.st_nlink, 1u);
    // Copied: the originals stay in the backup as they were.
    const stdfs::path theirs = root / "models.modelfs-backup/Lora/theirs.safetensors";
    ASSERT_EQ(::stat(theirs.c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, 65534u);
    EXPECT_EQ(st.st_mode & 0777, 0644u);
    ASSERT_EQ(::stat((tmp / "second-name.safetensors").c_str(), &st), 0);
    EXPECT_EQ(st.st_nlink, 2u);  // the backup's name and the second one, no blob
    for (auto n : {"theirs", "linked"}) {
        ASSERT_EQ(::stat(blob(sha[n]).c_str(), &st), 0);
        EXPECT_EQ(st.st_nlink, 1u) << n;
        EXPECT_EQ(st.st_uid, 0u) << n;
    }
    for (const stdfs::path& p : {theirs, tmp / "second-name.safetensors"}) {
        int fd = ::open(p.c_str(), O_WRONLY);
        ASSERT_GE(fd, 0) << p;
        ASSERT_EQ(::pwrite(fd, "edited", 6, 0), 6);
        ::close(fd);
    }
    for (auto n : {"mine", "theirs", "linked"}) {
        EXPECT_EQ(sha256_hex_of_file(blob(sha[n])), sha[n]) << n;
        EXPECT_EQ(sha256_hex_of_file(m / "Lora" / (std::string(n) + ".safetensors")), sha[n]) << n;
    }
    EXPECT_TRUE(store.verify(false).problems.empty());

    auto un = unadopt(store, {});
    ASSERT_EQ(un.size(), 1u);
    EXPECT_TRUE(un[0].ok) << un[0].status;
    EXPECT_EQ(sha256_hex_of_file(m / "Lora/mine.safetensors"), sha["mine"]);
    ASSERT_EQ(::stat((m / "Lora/mine.safetensors").c_str(), &st), 0);
    EXPECT_EQ(st.st_nlink, 1u);
    EXPECT_EQ(st.st_mode & 0777, 0644u);
    ASSERT_EQ(::stat((m / "Lora/theirs.safetensors").c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, 65534u);
}

}  // namespace

namespace {

// A cut-off download in an install is not adopted: the store would refuse it (incomplete
// safetensors), so it stays where it is with the reason; the rest of the install is adopted.
TEST(AdoptIncomplete, ACutOffModelStaysWithItsReasonAndTheRestIsPlanned) {
    ::setenv("MODELFS_CONFIG", "/dev/null", 1);
    TempDir tmp("modelfs-adopt-incomplete");
    const stdfs::path root = tmp / "webui", m = root / "models", store_root = tmp / "store";
    stdfs::create_directories(m / "Lora");
    stdfs::create_directories(m / "Stable-diffusion");
    write_sized_safetensors(m / "Lora/whole.safetensors", 20000, 1);
    std::string cut = modelfs::testing::sized_safetensors_bytes(40000, 2);
    cut.resize(30000);
    write_text_file(m / "Lora/cut.safetensors", cut);
    write_text_file(root / "webui.sh", "#!/bin/sh\n");
    Store::init(store_root);
    Store store = Store::open(store_root);
    std::vector<InstallScan> s{fake::fake_scan("a1111", root)};
    auto h = hash_scans(store_root, s);
    Plan plan = make_plan(store, std::move(s), h);
    std::map<std::string, const PlannedFile*> by;
    for (const auto& pf : plan.installs[0].files) by[pf.file.view_rel] = &pf;
    ASSERT_TRUE(by.count("Lora/cut.safetensors"));
    ASSERT_TRUE(by.count("Lora/whole.safetensors"));
    EXPECT_EQ(by["Lora/cut.safetensors"]->action, Action::left);
    EXPECT_NE(by["Lora/cut.safetensors"]->note.find("safetensors"), std::string::npos)
        << by["Lora/cut.safetensors"]->note;
    EXPECT_EQ(by["Lora/whole.safetensors"]->action, Action::store);
}

}  // namespace
