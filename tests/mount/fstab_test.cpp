// Mounting the way the system does: `mount -t fuse...` and fstab entries through mount.fuse3,
// which runs `modelfs STORE MOUNTPOINT -o OPTIONS`; and the signals systemd sends. The build's
// binary is named in the source (`/path/modelfs#STORE`, type fuse), since mount.fuse3 looks for
// `modelfs` only in a fixed PATH; tests/packaging/deb_test.sh runs `-t fuse.modelfs` with the
// installed one. A temporary fstab is passed with -T: /etc/fstab is never touched.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mount.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "support/mount_fixture.h"
#include "support/safetensors_writer.h"
#include "support/test_env.h"

namespace stdfs = std::filesystem;
using namespace modelfs::testing;

namespace {

const char* kMount = "/usr/bin/mount";

bool wait_mounted(const stdfs::path& mnt, bool want) {
    for (int i = 0; i < 200 && is_mounted(mnt) != want; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(25));
    return is_mounted(mnt) == want;
}

class FstabTest : public ::testing::Test {
  protected:
    TempDir dir{"modelfs-fstab"};
    stdfs::path store = dir / "store";
    stdfs::path mnt = dir / "mnt";
    stdfs::path src = dir / "src";
    std::string source;  // what fstab's first field says

    void SetUp() override {
        if (!stdfs::exists("/dev/fuse")) GTEST_SKIP() << "no /dev/fuse";
        if (::geteuid() != 0) GTEST_SKIP() << "mount -t and mount -a need root";
        const bool helper =
            stdfs::exists("/usr/sbin/mount.fuse3") || stdfs::exists("/sbin/mount.fuse3");
        if (!stdfs::exists(kMount) || !helper) GTEST_SKIP() << "no mount or mount.fuse3";
        ASSERT_EQ(run_modelfs({"--store", store.string(), "init"}).exit_code, 0);
        stdfs::create_directories(src / "checkpoints");
        write_safetensors(src / "checkpoints" / "base.safetensors", sd15_checkpoint(1));
        CliResult r = run_modelfs({"--store", store.string(), "import", src.string()});
        ASSERT_EQ(r.exit_code, 0) << r.err;
        stdfs::create_directories(mnt);
        source = modelfs_binary().string() + "#" + store.string();
    }

    void TearDown() override {
        // Whatever the test did: nothing stays mounted.
        if (is_mounted(mnt)) run_program("/bin/fusermount3", {"-u", mnt.string()});
        if (!wait_mounted(mnt, false)) ::umount2(mnt.c_str(), MNT_DETACH);
    }

    void expect_model_readable(const stdfs::path& at) {
        EXPECT_EQ(sha256_hex_of_file(at / "checkpoints" / "base.safetensors"),
                  sha256_hex_of_file(src / "checkpoints" / "base.safetensors"));
    }
};

TEST_F(FstabTest, MountTypeFuseWithOptions) {
    CliResult r = run_program(
        kMount, {"-t", "fuse", source, mnt.string(), "-o",
                 "view=comfyui,allow_other,_netdev,nofail,noatime,x-systemd.automount,config=/dev/"
                 "null"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    ASSERT_TRUE(wait_mounted(mnt, true));
    expect_model_readable(mnt);  // view=comfyui: its folders right at the mount point
    r = run_program("/usr/bin/umount", {mnt.string()});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_TRUE(wait_mounted(mnt, false));
}

TEST_F(FstabTest, FstabEntryWithMountA) {
    const stdfs::path fstab = dir / "fstab";
    write_text_file(fstab, "# a test fstab\n" + source + " " + mnt.string() +
                               " fuse view=comfyui,allow_other,_netdev,nofail,config=/dev/null "
                               "0 0\n");
    CliResult r = run_program(kMount, {"-a", "-T", fstab.string()});
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    ASSERT_TRUE(wait_mounted(mnt, true));
    expect_model_readable(mnt);
    r = run_program("/usr/bin/umount", {mnt.string()});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_TRUE(wait_mounted(mnt, false));
}

TEST_F(FstabTest, UnknownOptionIsAClearError) {
    CliResult r = run_program(kMount, {"-t", "fuse", source, mnt.string(), "-o", "vew=comfyui"});
    EXPECT_NE(r.exit_code, 0);
    EXPECT_NE(r.err.find("unknown mount option 'vew=comfyui'"), std::string::npos) << r.err;
    EXPECT_FALSE(is_mounted(mnt));
}

TEST_F(FstabTest, HelperFormDirectly) {
    // The command line mount.fuse3 builds, run by hand as a systemd unit would (foreground).
    CliResult bad = run_modelfs({store.string(), mnt.string(), "-o", "view=nosuchview"});
    EXPECT_NE(bad.exit_code, 0) << bad.err;
    EXPECT_NE(bad.err.find("unknown view 'nosuchview'"), std::string::npos) << bad.err;
    CliResult r = run_modelfs({store.string(), mnt.string(), "-o", "rw,view=comfyui,dev,suid"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    ASSERT_TRUE(wait_mounted(mnt, true));
    expect_model_readable(mnt);
    EXPECT_EQ(run_modelfs({"umount", mnt.string()}).exit_code, 0);
    EXPECT_TRUE(wait_mounted(mnt, false));
}

TEST_F(FstabTest, SighupReloadsWithoutUnmountingSigtermUnmounts) {
    Mount m(store, mnt, {"--view", "comfyui"});
    ASSERT_TRUE(m.ok());
    ASSERT_EQ(::kill(m.pid(), SIGHUP), 0);
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    EXPECT_TRUE(is_mounted(mnt));
    expect_model_readable(mnt);
    const std::string log = read_file(dir / "mnt.log");
    EXPECT_NE(log.find("SIGHUP: config re-read"), std::string::npos) << log;
    ASSERT_EQ(::kill(m.pid(), SIGTERM), 0);
    EXPECT_TRUE(wait_mounted(mnt, false));
    EXPECT_EQ(m.stop(), 0);
}

}  // namespace
