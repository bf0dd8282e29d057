// A full disk in the middle of an import: a clear message naming the file, nothing half-written,
// the store still valid and usable. Needs root to mount a small tmpfs; skipped otherwise.
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "support/test_env.h"

namespace stdfs = std::filesystem;
using namespace modelfs::testing;
using nlohmann::json;

namespace {

class FullDisk : public ::testing::Test {
  protected:
    TempDir dir{"modelfs-enospc"};
    stdfs::path mnt = dir / "small";
    stdfs::path store = mnt / "store";
    bool mounted = false;

    void SetUp() override {
        if (::geteuid() != 0) GTEST_SKIP() << "needs root to mount a size-limited tmpfs";
        stdfs::create_directories(mnt);
        ASSERT_EQ(::mount("tmpfs", mnt.c_str(), "tmpfs", 0, "size=24m"), 0) << strerror(errno);
        mounted = true;
        ASSERT_EQ(run_modelfs({"--store", store.string(), "init"}).exit_code, 0);
    }
    void TearDown() override {
        if (mounted) ::umount2(mnt.c_str(), MNT_DETACH);
    }
    CliResult mfs(std::vector<std::string> args) {
        args.insert(args.begin(), {"--store", store.string()});
        return run_modelfs(args);
    }
};

TEST_F(FullDisk, TooBigFileFailsCleanlyAndOthersImport) {
    write_random_file(dir / "in" / "loras" / "small.ckpt", 2 << 20, 1);
    write_random_file(dir / "in" / "loras" / "huge.ckpt", 40 << 20, 2);
    CliResult r = mfs({"import", (dir / "in").string()});
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_NE(r.err.find("huge.ckpt"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("No space left on device"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("free some space"), std::string::npos) << r.err;

    CliResult ls = mfs({"--json", "ls"});
    auto models = json::parse(ls.out);
    ASSERT_EQ(models.size(), 1u);
    EXPECT_EQ(models[0]["model"], "lora/small.ckpt");
    EXPECT_TRUE(stdfs::is_empty(store / "staging")) << "no half-written file left behind";
    CliResult v = mfs({"--json", "verify"});
    EXPECT_EQ(v.exit_code, 0) << v.out;
    EXPECT_TRUE(json::parse(v.out)["notes"].empty());
    EXPECT_TRUE(stdfs::exists(dir / "in" / "loras" / "huge.ckpt"));
}

TEST_F(FullDisk, FillingUpFileByFileKeepsEveryCommittedModel) {
    // Eight 4 MiB files into ~24 MiB: the last ones cannot fit.
    for (int i = 0; i < 8; ++i)
        write_random_file(dir / "in" / "vae" / ("v" + std::to_string(i) + ".pt"), 4 << 20, 10 + i);
    CliResult r = mfs({"import", "--jobs", "2", (dir / "in").string()});
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_NE(r.err.find("No space left on device"), std::string::npos) << r.err;
    auto models = json::parse(mfs({"--json", "ls"}).out);
    EXPECT_GE(models.size(), 1u);
    EXPECT_LT(models.size(), 8u);
    CliResult v = mfs({"--json", "verify"});
    EXPECT_EQ(v.exit_code, 0) << v.out;
    EXPECT_TRUE(stdfs::is_empty(store / "staging"));
    // After making room (the same tmpfs, grown in place), the same command finishes the job.
    ASSERT_EQ(::mount(nullptr, mnt.c_str(), nullptr, MS_REMOUNT, "size=64m"), 0) << strerror(errno);
    EXPECT_EQ(mfs({"import", (dir / "in").string()}).exit_code, 0);
    EXPECT_EQ(json::parse(mfs({"--json", "ls"}).out).size(), 8u);
    EXPECT_EQ(mfs({"verify"}).exit_code, 0);
}

}  // namespace
