#include "support/mount_fixture.h"

#include <signal.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <sys/xattr.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>
#include <thread>

#include "support/safetensors_writer.h"
#include "support/test_env.h"

namespace stdfs = std::filesystem;

namespace modelfs::testing {

bool is_mounted(const stdfs::path& mnt) {
    std::ifstream in("/proc/self/mountinfo");
    // Built by appending: GCC 12 -O3 warns (-Wrestrict) about " " + string + " ".
    std::string needle(1, ' ');
    needle.append(mnt.string()).push_back(' ');
    for (std::string line; std::getline(in, line);)
        if (line.find(needle) != std::string::npos &&
            line.find("fuse.modelfs") != std::string::npos)
            return true;
    return false;
}

// A `modelfs mount -f` child; unmounted and reaped on destruction whatever happened.
Mount::Mount(const stdfs::path& store, const stdfs::path& mnt, std::vector<std::string> extra)
    : mnt_(mnt) {
    stdfs::create_directories(mnt);
    std::vector<std::string> args{"--store", store.string(), "-vv", "mount", mnt.string(), "-f"};
    args.insert(args.end(), extra.begin(), extra.end());
    // The daemon's log goes beside the mount point and is printed when the test fails.
    log_ = mnt.parent_path() / (mnt.filename().string() + ".log");
    pid_ = spawn_modelfs(args, log_);
    for (int i = 0; i < 200 && !is_mounted(mnt); ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(25));
    ok_ = is_mounted(mnt);
}

Mount::~Mount() {
    stop();
    print_log_if_failed(log_);
}

int Mount::stop() {
    if (pid_ <= 0) return exit_;
    if (is_mounted(mnt_)) run_program("/bin/fusermount3", {"-u", mnt_.string()});
    for (int i = 0; i < 100 && is_mounted(mnt_); ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    if (is_mounted(mnt_)) ::umount2(mnt_.c_str(), MNT_DETACH);
    for (int i = 0; i < 100; ++i) {
        int st = 0;
        pid_t r = ::waitpid(pid_, &st, WNOHANG);
        if (r == pid_) {
            exit_ = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
            pid_ = 0;
            return exit_;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ::kill(pid_, SIGKILL);
    wait_child(pid_);
    pid_ = 0;
    return exit_ = -1;
}

void StoreMountTest::SetUp() {
    if (!stdfs::exists("/dev/fuse")) GTEST_SKIP() << "no /dev/fuse";
    ASSERT_EQ(run_modelfs({"--store", store.string(), "init"}).exit_code, 0);
}

void StoreMountTest::import_folder(const stdfs::path& src) {
    CliResult r = run_modelfs({"--store", store.string(), "import", src.string()});
    ASSERT_EQ(r.exit_code, 0) << r.err;
}

void StoreMountTest::import_base_checkpoint(const stdfs::path& src) {
    stdfs::create_directories(src / "checkpoints");
    write_safetensors(src / "checkpoints" / "base.safetensors", sd15_checkpoint(1));
    import_folder(src);
}

void print_log_if_failed(const stdfs::path& log) {
    if (!::testing::Test::HasFailure()) return;
    std::ifstream in(log);
    std::stringstream text;
    text << in.rdbuf();
    std::fprintf(stderr, "--- daemon log %s ---\n%s--- end of log ---\n", log.c_str(),
                 text.str().c_str());
}

std::string xattr(const stdfs::path& f, const char* name) {
    char buf[256];
    ssize_t n = ::getxattr(f.c_str(), name, buf, sizeof buf);
    return n < 0 ? std::string("<") + std::strerror(errno) + ">" : std::string(buf, n);
}

}  // namespace modelfs::testing
