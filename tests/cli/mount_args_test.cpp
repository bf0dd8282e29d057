// What `modelfs mount` and the fstab helper form say about bad mount arguments, before mounting.
#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>

#include "support/test_env.h"

namespace stdfs = std::filesystem;
using namespace modelfs::testing;

namespace {

bool fuse_conf_has_user_allow_other() {
    std::ifstream in("/etc/fuse.conf");
    for (std::string line; std::getline(in, line);)
        if (line.find("user_allow_other") != std::string::npos &&
            line.find('#') == std::string::npos)
            return true;
    return false;
}

// A user that is not root asks for allow_other without user_allow_other in /etc/fuse.conf: both
// forms explain what to add, where, before any mount is tried.
TEST(MountArgs, AllowOtherWithoutUserAllowOtherIsExplained) {
    if (fuse_conf_has_user_allow_other()) GTEST_SKIP() << "/etc/fuse.conf has user_allow_other";
    TempDir dir{"modelfs-mount-args"};
    stdfs::create_directories(dir / "mnt");
    const std::map<std::string, std::string> env{{"MODELFS_CONFIG", "/dev/null"}};
    const std::vector<std::vector<std::string>> forms{
        {"--store", (dir / "store").string(), "mount", (dir / "mnt").string(), "--allow-other"},
        {(dir / "store").string(), (dir / "mnt").string(), "-o", "view=comfyui,allow_other"}};
    for (const auto& args : forms) {
        CliResult r;
        if (::geteuid() == 0) {
            if (!stdfs::exists("/usr/bin/setpriv"))
                GTEST_SKIP() << "util-linux setpriv not installed";
            std::vector<std::string> wrapped{"--reuid=65534", "--regid=65534", "--clear-groups",
                                             modelfs_binary().string()};
            wrapped.insert(wrapped.end(), args.begin(), args.end());
            r = run_program("/usr/bin/setpriv", wrapped, env);
        } else {
            r = run_modelfs(args);
        }
        EXPECT_EQ(r.exit_code, 2) << r.err;
        EXPECT_NE(r.err.find("user_allow_other"), std::string::npos) << r.err;
        EXPECT_NE(r.err.find("/etc/fuse.conf"), std::string::npos) << r.err;
    }
}

TEST(MountArgs, HelperFormBadInput) {
    CliResult r = run_modelfs({"/nonexistent-store", "/nonexistent-mnt", "-o", "vew=comfyui"});
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_NE(r.err.find("unknown mount option 'vew=comfyui'"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("view=NAME"), std::string::npos) << r.err;
    r = run_modelfs({"/s", "/m", "/x"});
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_NE(r.err.find("expected a store and a mount point"), std::string::npos) << r.err;
    // A misspelt subcommand with one argument is still CLI11's usage error, not a mount.
    r = run_modelfs({"lss"});
    EXPECT_EQ(r.exit_code, 2);
}

}  // namespace
