// `modelfs adopt` / `adopted` / `adopt --confirm` / `unadopt` as a user runs them, on synthetic
// A1111 + ComfyUI installs, found and scanned by the real detect_install / scan_install.
#include <sys/mount.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <map>
#include <nlohmann/json.hpp>

#include "modelfs/adopt/adopt.h"
#include "support/sized_models.h"
#include "support/test_env.h"

namespace stdfs = std::filesystem;
using namespace modelfs::testing;

namespace {

class CliAdoptTest : public ::testing::Test {
  protected:
    TempDir tmp{"modelfs-cli-adopt"};
    stdfs::path store, a1111, comfy;
    std::map<stdfs::path, std::string> before;

    void SetUp() override {
        if (::access("/dev/fuse", R_OK | W_OK) != 0) GTEST_SKIP() << "no /dev/fuse";
        store = tmp / "store";
        a1111 = tmp / "stable-diffusion-webui";
        comfy = tmp / "ComfyUI";
        for (auto d : {a1111 / "models/Stable-diffusion", a1111 / "models/Lora",
                       comfy / "models/checkpoints", comfy / "models/loras"})
            stdfs::create_directories(d);
        make_a1111_markers(a1111);
        make_comfyui_markers(comfy);
        write_sized_safetensors(a1111 / "models/Stable-diffusion/sdxl.safetensors", 300000, 1);
        write_random_file(a1111 / "models/Stable-diffusion/sdxl.preview.png", 2000, 2);
        write_sized_safetensors(a1111 / "models/Lora/style.safetensors", 100000, 3);
        write_text_file(a1111 / "models/Lora/notes.txt", "notes\n");
        write_sized_safetensors(comfy / "models/checkpoints/sdxl.safetensors", 300000, 1);
        write_sized_safetensors(comfy / "models/loras/style.safetensors", 100000, 3);
        write_sized_safetensors(comfy / "models/loras/clash.safetensors", 5000, 9);
        for (const auto& root : {a1111 / "models", comfy / "models"})
            for (auto it = stdfs::recursive_directory_iterator(root); it != decltype(it)(); ++it)
                if (it->is_regular_file()) before[it->path()] = sha256_hex_of_file(it->path());
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
    CliResult modelfs(std::vector<std::string> args) {
        args.insert(args.begin(), {"--store", store.string()});
        return run_modelfs(args);
    }
    void expect_same_bytes() {
        for (const auto& [p, sha] : before) EXPECT_EQ(sha256_hex_of_file(p), sha) << p;
    }
};

TEST_F(CliAdoptTest, DryRunAdoptAgainConfirmUnadopt) {
    auto dry = modelfs({"--json", "adopt", "--dry-run", a1111.string(), comfy.string()});
    ASSERT_EQ(dry.exit_code, 0) << dry.err;
    auto j = nlohmann::json::parse(dry.out);
    EXPECT_EQ(j["total"]["duplicate_groups"].get<int>(), 2);  // sdxl, style
    EXPECT_EQ(j["total"]["bytes_freed"].get<std::uint64_t>(), 400000u);
    EXPECT_FALSE(stdfs::exists(a1111 / "models.modelfs-backup"));

    // Not on a terminal and without --yes: refused, nothing changed.
    auto no = modelfs({"adopt", a1111.string()});
    EXPECT_EQ(no.exit_code, 2) << no.err;
    EXPECT_NE(no.err.find("--yes"), std::string::npos);

    auto run = modelfs({"adopt", "--yes", "--verify", a1111.string(), comfy.string()});
    ASSERT_EQ(run.exit_code, 0) << run.out << run.err;
    EXPECT_NE(run.out.find("fuse.modelfs view=a1111,nofail 0 0"), std::string::npos) << run.out;
    EXPECT_NE(run.out.find("Type=fuse.modelfs"), std::string::npos);
    EXPECT_TRUE(modelfs::adopt::is_mountpoint(a1111 / "models"));
    EXPECT_TRUE(modelfs::adopt::is_mountpoint(comfy / "models"));
    expect_same_bytes();

    auto again = modelfs({"adopt", "--yes", a1111.string()});
    EXPECT_EQ(again.exit_code, 0) << again.err;
    EXPECT_NE(again.out.find("already adopted"), std::string::npos) << again.out;

    auto list = modelfs({"adopted"});
    EXPECT_NE(list.out.find("a1111"), std::string::npos);
    EXPECT_NE(list.out.find("mounted"), std::string::npos);

    auto conf = modelfs({"adopt", "--confirm"});
    EXPECT_EQ(conf.exit_code, 0) << conf.err;
    EXPECT_NE(conf.out.find("freed"), std::string::npos);
    expect_same_bytes();

    auto un = modelfs({"unadopt"});
    EXPECT_EQ(un.exit_code, 0) << un.out << un.err;
    expect_same_bytes();
    for (const auto& [p, sha] : before) EXPECT_FALSE(stdfs::is_symlink(p)) << p;
    EXPECT_FALSE(modelfs::adopt::is_mountpoint(a1111 / "models"));
}

// Files the view cannot show at their path, with the real scanner: a LyCORIS model is shown in
// Lora/, foo.ckpt beside foo.safetensors are two models shown at their paths (issue 16 finding
// 2), a skipped name stays at its path.
// The mount's ingest must not turn any of them into something else.
TEST_F(CliAdoptTest, ExactPathRules) {
    const stdfs::path m = a1111 / "models";
    stdfs::create_directories(m / "LyCORIS");
    write_sized_safetensors(m / "LyCORIS/ly.safetensors", 7000, 11);
    write_sized_safetensors(m / "Stable-diffusion/foo.safetensors", 9000, 12);
    write_random_file(m / "Stable-diffusion/foo.ckpt", 9100, 13);
    write_sized_safetensors(m / "Stable-diffusion/foo.vae.safetensors", 3000, 14);
    std::map<stdfs::path, std::string> sha;
    for (auto rel : {"LyCORIS/ly.safetensors", "Stable-diffusion/foo.safetensors",
                     "Stable-diffusion/foo.ckpt", "Stable-diffusion/foo.vae.safetensors"})
        sha[rel] = sha256_hex_of_file(m / rel);
    auto run = modelfs({"adopt", "--yes", "--verify", a1111.string()});
    ASSERT_EQ(run.exit_code, 0) << run.out << run.err;
    // Give the mount's startup ingest time to do anything it would do.
    ::usleep(500000);
    EXPECT_EQ(sha256_hex_of_file(m / "Lora/ly.safetensors"), sha["LyCORIS/ly.safetensors"]);
    EXPECT_EQ(sha256_hex_of_file(m / "Stable-diffusion/foo.safetensors"),
              sha["Stable-diffusion/foo.safetensors"]);
    EXPECT_EQ(sha256_hex_of_file(m / "Stable-diffusion/foo.vae.safetensors"),
              sha["Stable-diffusion/foo.vae.safetensors"]);
    EXPECT_EQ(sha256_hex_of_file(m / "Stable-diffusion/foo.ckpt"),
              sha["Stable-diffusion/foo.ckpt"]);
    EXPECT_EQ(run.out.find("one file per model name"), std::string::npos) << run.out;
    auto un = modelfs({"unadopt"});
    EXPECT_EQ(un.exit_code, 0) << un.out << un.err;
    for (const auto& [rel, h] : sha) EXPECT_EQ(sha256_hex_of_file(m / rel), h) << rel;
    EXPECT_FALSE(stdfs::exists(m / "Lora/ly.safetensors"));
    expect_same_bytes();
}

TEST_F(CliAdoptTest, NotAnInstallIsNotFound) {
    auto r = modelfs({"adopt", "--dry-run", (tmp / "store").string()});
    EXPECT_EQ(r.exit_code, 3) << r.err;
    EXPECT_NE(r.err.find("not an install"), std::string::npos) << r.err;
}

}  // namespace
