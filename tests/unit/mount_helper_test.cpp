// The `modelfs STORE MOUNTPOINT -o OPTIONS` form mount.fuse3 runs (fstab, mount -t fuse.modelfs).
#include <gtest/gtest.h>

#include "mount_helper.h"
#include "support/test_env.h"

using namespace modelfs::cli;
using modelfs::testing::TempDir;
using modelfs::testing::write_text_file;

namespace {

const std::vector<std::string> kSubcommands{"mount", "umount", "ls", "import"};

TEST(MountHelper, RecognisesTheFormMountFuse3Uses) {
    EXPECT_TRUE(is_helper_call({"/srv/models", "/mnt/m", "-o", "rw,dev,suid"}, kSubcommands));
    EXPECT_TRUE(is_helper_call({"store", "mnt", "-o", "rw"}, kSubcommands));
    EXPECT_TRUE(is_helper_call({"./store", "mnt"}, kSubcommands));
    // A misspelt subcommand is a usage error, not a store named "improt".
    EXPECT_FALSE(is_helper_call({"improt", "a.safetensors"}, kSubcommands));
    EXPECT_FALSE(is_helper_call({"mount", "/mnt/m"}, kSubcommands));
    EXPECT_FALSE(is_helper_call({"import", "a.safetensors"}, kSubcommands));
    EXPECT_FALSE(is_helper_call({"ls"}, kSubcommands));
    EXPECT_FALSE(is_helper_call({"--store", "/s", "ls"}, kSubcommands));
    EXPECT_FALSE(is_helper_call({}, kSubcommands));
}

TEST(MountHelper, ExactArgumentsOfMountFuse3) {
    // What mount.fuse3 (libfuse 3.14) ran for `mount -t fuse.modelfs S M -o
    // view=comfyui,allow_other,_netdev,nofail,x-systemd.automount,noatime`.
    auto m = parse_helper_args(
        {"/srv/models", "/mnt/m", "-o", "rw,noatime,view=comfyui,allow_other,dev,suid"});
    EXPECT_EQ(m.store, "/srv/models");
    EXPECT_EQ(m.mountpoint, "/mnt/m");
    EXPECT_EQ(m.view, "comfyui");
    EXPECT_TRUE(m.allow_other);
    EXPECT_FALSE(m.foreground);
    EXPECT_FALSE(m.debug);
    EXPECT_EQ(m.kernel_flags, std::vector<std::string>{"noatime"});
}

TEST(MountHelper, EveryOptionMaps) {
    auto m = parse_helper_args({"-o", "config=/etc/modelfs/gpu.toml,lock=/l.lock", "s", "m",
                                "-odebug,foreground,ro,noexec", "-o", "nosuid,nodev"});
    EXPECT_EQ(m.config_file, "/etc/modelfs/gpu.toml");
    EXPECT_EQ(m.lock_file, "/l.lock");
    EXPECT_TRUE(m.debug);
    EXPECT_TRUE(m.foreground);
    EXPECT_EQ(m.kernel_flags, (std::vector<std::string>{"ro", "noexec", "nosuid", "nodev"}));
    EXPECT_TRUE(parse_helper_args({"s", "m", "-f"}).foreground);
}

TEST(MountHelper, FstabBookkeepingIsIgnored) {
    auto m = parse_helper_args(
        {"s", "m", "-o",
         "defaults,_netdev,nofail,auto,noauto,user,users,x-systemd.automount,"
         "x-systemd.idle-timeout=60,comment=x,rw,dev,suid,exec,relatime,default_permissions,,"});
    EXPECT_TRUE(m.kernel_flags.empty());
    EXPECT_TRUE(m.view.empty());
    EXPECT_FALSE(m.allow_other);
}

TEST(MountHelper, BadInputNamesWhatIsWrong) {
    auto message = [](const std::vector<std::string>& args) {
        try {
            parse_helper_args(args);
        } catch (const MountArgsError& e) {
            return std::string(e.what());
        }
        return std::string("no error");
    };
    EXPECT_NE(message({"s", "m", "-o", "vew=comfyui"}).find("unknown mount option 'vew=comfyui'"),
              std::string::npos);
    EXPECT_NE(message({"s", "m", "-o", "view="}).find("needs a value"), std::string::npos);
    EXPECT_NE(message({"s", "m", "-o"}).find("-o needs"), std::string::npos);
    EXPECT_NE(message({"s", "m", "--view", "x"}).find("unknown argument '--view'"),
              std::string::npos);
    EXPECT_NE(message({"s", "m", "extra"}).find("got 3 path(s)"), std::string::npos);
}

TEST(MountHelper, FuseConfUserAllowOther) {
    EXPECT_FALSE(fuse_conf_allows_other(""));
    EXPECT_FALSE(fuse_conf_allows_other("# user_allow_other\n#user_allow_other\n"));
    EXPECT_TRUE(fuse_conf_allows_other("# comment\n  user_allow_other \r\nmount_max = 9\n"));
    EXPECT_TRUE(fuse_conf_allows_other("user_allow_other"));

    EXPECT_EQ(allow_other_problem(true, false, ""), "");
    EXPECT_EQ(allow_other_problem(false, true, "user_allow_other\n"), "");
    const auto p = allow_other_problem(false, true, "#user_allow_other\n");
    EXPECT_NE(p.find("user_allow_other"), std::string::npos);
    EXPECT_NE(p.find("/etc/fuse.conf"), std::string::npos);
    EXPECT_NE(allow_other_problem(false, false, "").find("cannot be read"), std::string::npos);
}

TEST(MountHelper, NonemptyOption) {
    EXPECT_TRUE(parse_helper_args({"s", "m", "-o", "view=comfyui,nonempty"}).nonempty);
    EXPECT_FALSE(parse_helper_args({"s", "m", "-o", "view=comfyui"}).nonempty);
}

// A mount point must be an empty folder that is no mount point yet; each problem says what to do.
TEST(MountHelper, MountpointProblems) {
    TempDir dir{"modelfs-mountpoint"};
    std::filesystem::create_directories(dir / "empty");
    EXPECT_EQ(mountpoint_problem(dir / "empty", false), "");
    EXPECT_EQ(mountpoint_problem(dir / "missing", false), "") << "left to the mount to report";
    write_text_file(dir / "file", "x");
    EXPECT_NE(mountpoint_problem(dir / "file", true).find("is not a folder"), std::string::npos);
    std::filesystem::create_directories(dir / "full");
    write_text_file(dir / "full" / "a.txt", "x");
    const std::string full = mountpoint_problem(dir / "full", false);
    EXPECT_NE(full.find("is not empty"), std::string::npos) << full;
    EXPECT_NE(full.find("--nonempty"), std::string::npos) << full;
    EXPECT_EQ(mountpoint_problem(dir / "full", true), "");
    // "/" is always a mount point.
    EXPECT_NE(mountpoint_problem("/", true).find("already a mount point"), std::string::npos);
}

}  // namespace
