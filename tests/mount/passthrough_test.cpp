// The two read backends (fs/src/read_backend.h) on real mounts: which one serves a mount and why,
// one page cache with passthrough (two with splice), writers of a file that readers pass through
// (a copy of their own under a new inode; the blob is never written), readers of a file
// being written (served by the daemon), and a mount by an ordinary user, which falls back to
// splice and says so. This suite runs twice in ctest, once as it is and once with
// MODELFS_READ_BACKEND=splice (label mount-fallback); MODELFS_REQUIRE_PASSTHROUGH=1 (CI, as root)
// makes a mount that does not pass through a failure instead of a skip.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <thread>

#include "modelfs/store/unique_fd.h"
#include "support/mount_fixture.h"
#include "support/safetensors_writer.h"
#include "support/test_env.h"

namespace stdfs = std::filesystem;
using namespace modelfs::testing;
using modelfs::UniqueFd;

namespace {

constexpr std::uint64_t kModelBytes = 48ull << 20;

bool env_is(const char* name, const char* value) {
    const char* v = std::getenv(name);
    return v && std::string(v) == value;
}
bool splice_forced() {
    return env_is("MODELFS_READ_BACKEND", "splice");
}

// Pages of `fd`'s own page cache (cachestat(2), Linux 6.5): for a file in the mount, the FUSE
// inode's pages, not its blob's. -1 when the kernel has no cachestat.
long long cached_pages(int fd) {
#ifndef SYS_cachestat
    constexpr long SYS_cachestat = 451;
#endif
    struct {
        std::uint64_t off, len;
    } range{0, 0};  // len 0: to the end
    struct {
        std::uint64_t nr_cache, nr_dirty, nr_writeback, nr_evicted, nr_recently_evicted;
    } cs{};
    if (::syscall(SYS_cachestat, fd, &range, &cs, 0) != 0) return -1;
    return static_cast<long long>(cs.nr_cache);
}

class ReadBackendTest : public StoreMountTest {
  protected:
    ReadBackendTest() : StoreMountTest("modelfs-backend") {}
    stdfs::path src = dir / "src";
    std::string sha;
    stdfs::path blob;
    const std::string rel = "comfyui/checkpoints/big.safetensors";

    void SetUp() override {
        StoreMountTest::SetUp();
        if (IsSkipped() || HasFatalFailure()) return;
        stdfs::create_directories(src / "checkpoints");
        SafetensorsSpec spec = sd15_checkpoint(7);
        write_safetensors(src / "checkpoints" / "big.safetensors", grow_to(spec, kModelBytes));
        sha = sha256_hex_of_file(src / "checkpoints" / "big.safetensors");
        import_folder(src);
        blob = store / "blobs" / "sha256" / sha.substr(0, 2) / sha;
        ASSERT_TRUE(stdfs::exists(blob));
    }

    // The backend the mount at `mnt` says it uses; fails (CI) or skips when passthrough is
    // required by the test but the mount does not have it.
    std::string backend_of_mount() { return xattr(mnt, "user.modelfs.backend"); }
    bool passthrough_or_skip() {
        const std::string b = backend_of_mount();
        if (b == "passthrough") return true;
        if (splice_forced()) return false;
        if (env_is("MODELFS_REQUIRE_PASSTHROUGH", "1")) {
            ADD_FAILURE() << "MODELFS_REQUIRE_PASSTHROUGH=1 but the mount serves reads with '" << b
                          << "'";
            return false;
        }
        return false;
    }
    int versions() {
        CliResult r = run_modelfs(
            {"--store", store.string(), "--json", "versions", "checkpoint/big.safetensors"});
        EXPECT_EQ(r.exit_code, 0) << r.err;
        std::size_t n = 0, at = 0;
        while ((at = r.out.find("\"sha256\"", at)) != std::string::npos) ++n, ++at;
        return static_cast<int>(n);
    }
};

TEST_F(ReadBackendTest, TheMountSaysWhichBackendServesItAndWhy) {
    Mount m(store, mnt);
    ASSERT_TRUE(m.ok());
    const std::string b = backend_of_mount();
    EXPECT_EQ(xattr(mnt / rel, "user.modelfs.backend"), b);
    // `modelfs status` names the mount and its backend.
    CliResult st = run_modelfs({"--store", store.string(), "status"});
    EXPECT_EQ(st.exit_code, 0) << st.err;
    EXPECT_NE(st.out.find("mounted at " + mnt.string() + " (reads: " + b), std::string::npos)
        << st.out;
    const std::string log = read_file(dir / "mnt.log");
    if (splice_forced()) {
        EXPECT_EQ(b, "splice");
        EXPECT_NE(log.find("splice asked for"), std::string::npos) << log;
    } else if (env_is("MODELFS_REQUIRE_PASSTHROUGH", "1")) {
        EXPECT_EQ(b, "passthrough");
        EXPECT_NE(log.find("pass through to their blobs"), std::string::npos) << log;
    } else {
        EXPECT_TRUE(b == "passthrough" || b == "splice") << b;
        if (b == "splice") {
            EXPECT_NE(log.find("served by the daemon (splice backend):"), std::string::npos) << log;
        }
    }
    EXPECT_EQ(sha256_hex_of_file(mnt / rel), sha);
}

TEST_F(ReadBackendTest, SpliceCanBeAskedForByOptionAndAnUnknownBackendIsRefused) {
    {
        Mount m(store, mnt, {"--read-backend", "splice"});
        ASSERT_TRUE(m.ok());
        EXPECT_EQ(backend_of_mount(), "splice");
        EXPECT_EQ(sha256_hex_of_file(mnt / rel), sha);
    }
    CliResult r = run_modelfs({"--store", store.string(), "mount", mnt.string(), "-f"},
                              {{"MODELFS_READ_BACKEND", "fast"}});
    EXPECT_NE(r.exit_code, 0);
    EXPECT_NE(r.err.find("unknown read backend 'fast'"), std::string::npos) << r.err;
    EXPECT_FALSE(is_mounted(mnt));
}

// Issue 18: a full read through the mount must not cache the model twice.
TEST_F(ReadBackendTest, AFullReadCachesTheModelOnceWithPassthroughTwiceWithSplice) {
    Mount m(store, mnt);
    ASSERT_TRUE(m.ok());
    const bool through = passthrough_or_skip();
    if (HasFailure()) return;
    {
        // Nothing of either file cached to begin with.
        UniqueFd b(::open(blob.c_str(), O_RDONLY | O_CLOEXEC));
        ASSERT_TRUE(b);
        ASSERT_EQ(::posix_fadvise(b.get(), 0, 0, POSIX_FADV_DONTNEED), 0);
    }
    UniqueFd f(::open((mnt / rel).c_str(), O_RDONLY | O_CLOEXEC));
    ASSERT_TRUE(f) << std::strerror(errno);
    ::posix_fadvise(f.get(), 0, 0, POSIX_FADV_DONTNEED);
    std::vector<char> buf(1 << 20);
    std::uint64_t total = 0;
    for (ssize_t n; (n = ::read(f.get(), buf.data(), buf.size())) > 0;) total += n;
    ASSERT_EQ(total, stdfs::file_size(blob));
    const long long pages = static_cast<long long>((total + 4095) / 4096);
    const long long in_mount = cached_pages(f.get());
    if (in_mount < 0) GTEST_SKIP() << "no cachestat(2) in this kernel";
    UniqueFd b(::open(blob.c_str(), O_RDONLY | O_CLOEXEC));
    const long long in_blob = cached_pages(b.get());
    if (through) {
        // The kernel read the blob: its pages, and none of the mount's own.
        EXPECT_GE(in_blob, pages * 95 / 100);
        EXPECT_LE(in_mount + in_blob, pages * 105 / 100) << in_mount << " + " << in_blob;
    } else {
        // The fallback's cost, as the README says: the blob's pages and the mount's own copy.
        EXPECT_GE(in_mount, pages * 95 / 100);
        EXPECT_GE(in_mount + in_blob, pages * 190 / 100);
    }
}

// The kernel lets no open that is not passthrough join an inode that readers pass through, so a
// writer of a model being read goes to a copy of its own under a new inode (the daemon answers
// ESTALE and the kernel retries the open): the readers keep the stored bytes to the end, the blob
// is never written, and closing the writer makes a new version.
TEST_F(ReadBackendTest, AWriterOfAFileReadersPassThroughGetsACopyOfItsOwn) {
    Mount m(store, mnt);
    ASSERT_TRUE(m.ok());
    if (!passthrough_or_skip()) {
        if (!HasFailure()) GTEST_SKIP() << "the mount does not pass reads through";
        return;
    }
    const stdfs::path p = mnt / rel;
    UniqueFd reader(::open(p.c_str(), O_RDONLY | O_CLOEXEC));
    ASSERT_TRUE(reader);
    const std::size_t size = stdfs::file_size(p);
    void* map = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, reader.get(), 0);
    ASSERT_NE(map, MAP_FAILED) << std::strerror(errno);
    struct stat before;
    ASSERT_EQ(::fstat(reader.get(), &before), 0);
    // In the tensor data, past the header: the new version must still be a safetensors file.
    const off_t at = static_cast<off_t>(size) - 100;
    {
        UniqueFd w(::open(p.c_str(), O_RDWR | O_CLOEXEC));
        ASSERT_TRUE(w) << std::strerror(errno);
        struct stat st;
        ASSERT_EQ(::fstat(w.get(), &st), 0);
        EXPECT_NE(st.st_ino, before.st_ino) << "the writer must not share the readers' inode";
        ASSERT_EQ(::pwrite(w.get(), "WRITTEN", 7, at), 7);
        // A second writer while the first is open joins it.
        UniqueFd w2(::open(p.c_str(), O_WRONLY | O_CLOEXEC));
        ASSERT_TRUE(w2) << std::strerror(errno);
        ASSERT_EQ(::pwrite(w2.get(), "TWICE", 5, at + 10), 5);
    }
    EXPECT_TRUE(eventually([&] { return versions() == 2; }, std::chrono::seconds(20)));
    // The readers: the stored bytes, by read and through the mapping.
    std::string mapped(static_cast<const char*>(map), size);
    EXPECT_EQ(mapped.find("WRITTEN"), std::string::npos);
    std::vector<char> buf(size);
    ASSERT_EQ(::pread(reader.get(), buf.data(), size, 0), static_cast<ssize_t>(size));
    EXPECT_EQ(std::string(buf.data(), size), mapped);
    ::munmap(map, size);
    reader.reset();
    // New readers: the new version.
    std::string now = read_file(p);
    EXPECT_EQ(now.substr(static_cast<std::size_t>(at), 7), "WRITTEN");
    EXPECT_EQ(now.substr(static_cast<std::size_t>(at) + 10, 5), "TWICE");
    EXPECT_EQ(sha256_hex_of_file(blob), sha);
    // O_TRUNC while reading, as a tool rewriting the file in place does.
    UniqueFd reader2(::open(p.c_str(), O_RDONLY | O_CLOEXEC));
    ASSERT_TRUE(reader2);
    {
        const std::string data = read_file(src / "checkpoints" / "big.safetensors");
        UniqueFd w(::open(p.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC));
        ASSERT_TRUE(w) << std::strerror(errno);
        ASSERT_EQ(::write(w.get(), data.data(), data.size()), static_cast<ssize_t>(data.size()));
    }
    EXPECT_TRUE(eventually([&] { return sha256_hex_of_file(p) == sha; }, std::chrono::seconds(20)));
    CliResult v = run_modelfs({"--store", store.string(), "verify"});
    EXPECT_EQ(v.exit_code, 0) << v.out << v.err;
}

// A file open for writing is read through the daemon (its bytes are the writer's), and a second
// reader of the stored model elsewhere passes through: both backends.
TEST_F(ReadBackendTest, ReadersOfAFileBeingWrittenSeeTheWritersBytes) {
    Mount m(store, mnt);
    ASSERT_TRUE(m.ok());
    passthrough_or_skip();
    if (HasFailure()) return;
    const stdfs::path p = mnt / rel;
    UniqueFd w(::open(p.c_str(), O_RDWR | O_CLOEXEC));
    ASSERT_TRUE(w) << std::strerror(errno);
    // In the tensor data, past the header: the new version must still be a safetensors file.
    const off_t at = static_cast<off_t>(stdfs::file_size(blob)) - 100;
    ASSERT_EQ(::pwrite(w.get(), "WRITTEN", 7, at), 7);
    {
        UniqueFd r(::open(p.c_str(), O_RDONLY | O_CLOEXEC));
        ASSERT_TRUE(r) << std::strerror(errno);
        char got[8] = {};
        ASSERT_EQ(::pread(r.get(), got, 7, at), 7);
        EXPECT_STREQ(got, "WRITTEN");
    }
    // The same model in another view is another name, another inode: the stored bytes.
    EXPECT_EQ(sha256_hex_of_file(mnt / "a1111" / "Stable-diffusion" / "big.safetensors"), sha);
    w.reset();
    EXPECT_TRUE(eventually([&] { return versions() == 2; }, std::chrono::seconds(20)));
    EXPECT_EQ(sha256_hex_of_file(blob), sha);
}

// Mounts the store as user nobody through setpriv (`caps`: setpriv's capability options, none for
// an ordinary user), runs `check` with a runner of programs as that user, and unmounts. The store
// and mount point are given to nobody. Debian's fuse3 makes /dev/fuse 0666 (its udev rule), so
// that users can mount; some machines (CI here) leave it 0600: opened up meanwhile, then put back.
void mount_as_nobody(
    const TempDir& dir, const stdfs::path& store, const stdfs::path& mnt,
    const std::vector<std::string>& caps,
    const std::function<
        void(const std::function<CliResult(const std::string&, std::vector<std::string>)>&,
             const std::string& log)>& check) {
    for (const stdfs::path& p : {dir.path(), store, mnt.parent_path()}) ::chmod(p.c_str(), 0755);
    struct DevFuseMode {
        mode_t was = 0;
        DevFuseMode() {
            struct stat st;
            if (::stat("/dev/fuse", &st) == 0) was = st.st_mode & 07777;
            if (was && (was & 0666) != 0666) ::chmod("/dev/fuse", was | 0666);
        }
        ~DevFuseMode() {
            if (was && (was & 0666) != 0666) ::chmod("/dev/fuse", was);
        }
    } dev_fuse;
    stdfs::create_directories(mnt);
    ASSERT_EQ(
        run_program("/bin/chown", {"-R", "65534:65534", store.string(), mnt.string()}).exit_code,
        0);
    const stdfs::path log = dir / "user-mount.log";
    ::close(::open(log.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0666));
    ::chmod(log.c_str(), 0666);
    std::vector<std::string> args{"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"};
    args.insert(args.end(), caps.begin(), caps.end());
    for (std::string a :
         {modelfs_binary().string(), std::string("--store"), store.string(), std::string("-vv"),
          std::string("mount"), mnt.string(), std::string("-f")})
        args.push_back(a);
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        const int fd = ::open(log.c_str(), O_WRONLY | O_APPEND);
        ::dup2(fd, 1);
        ::dup2(fd, 2);
        ::setenv("MODELFS_CONFIG", "/dev/null", 1);
        ::setenv("HOME", "/tmp", 1);
        std::vector<char*> argv;
        for (auto& a : args) argv.push_back(a.data());
        argv.push_back(nullptr);
        ::execv("/usr/bin/setpriv", argv.data());
        ::_exit(127);
    }
    struct Reap {
        pid_t pid;
        stdfs::path mnt;
        ~Reap() {
            if (is_mounted(mnt)) run_program("/bin/fusermount3", {"-u", mnt.string()});
            for (int i = 0; i < 100 && ::waitpid(pid, nullptr, WNOHANG) == 0; ++i)
                std::this_thread::sleep_for(std::chrono::milliseconds(20));
            if (::waitpid(pid, nullptr, WNOHANG) == 0) {
                ::kill(pid, SIGKILL);
                ::waitpid(pid, nullptr, 0);
            }
        }
    } reap{pid, mnt};
    ASSERT_TRUE(eventually([&] { return is_mounted(mnt); })) << read_file(log);
    // Without allow_other only its user may look into it.
    auto as_user = [](const std::string& program, std::vector<std::string> args) {
        std::vector<std::string> all{"--reuid=65534", "--regid=65534", "--clear-groups", program};
        all.insert(all.end(), args.begin(), args.end());
        return run_program("/usr/bin/setpriv", all);
    };
    check(as_user, log.string());
}

// An ordinary user's mount (nobody, through the setuid fusermount3, which needs a user name) has no
// CAP_SYS_ADMIN: it serves every read itself, correctly, and says once why.
TEST_F(ReadBackendTest, AMountByAnOrdinaryUserFallsBackToSpliceAndSaysSo) {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root to act as user nobody";
    if (!stdfs::exists("/usr/bin/setpriv")) GTEST_SKIP() << "no setpriv (util-linux)";
    mount_as_nobody(dir, store, mnt, {}, [&](const auto& as_user, const std::string& log) {
        CliResult b = as_user("/usr/bin/getfattr",
                              {"--only-values", "-n", "user.modelfs.backend", mnt.string()});
        EXPECT_EQ(b.out, "splice") << b.err;
        CliResult r = as_user("/usr/bin/sha256sum", {(mnt / rel).string()});
        EXPECT_EQ(r.exit_code, 0) << r.err;
        EXPECT_EQ(r.out.substr(0, 64), sha);
        const std::string text = read_file(log);
        const std::string why = splice_forced() ? "splice asked for" : "lacks CAP_SYS_ADMIN";
        EXPECT_NE(text.find(why), std::string::npos) << text;
        EXPECT_EQ(text.find("served by the daemon (splice backend)"),
                  text.rfind("served by the daemon (splice backend)"))
            << "said more than once:\n"
            << text;
    });
}

// The shipped systemd unit runs the daemon as a service user with CAP_SYS_ADMIN and no other
// capability (AmbientCapabilities=, CapabilityBoundingSet=): the same here, with the capabilities
// read from the unit file, and reads pass through.
TEST_F(ReadBackendTest, TheServiceUsersCapabilitiesFromTheUnitFilePassThrough) {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root to act as user nobody";
    if (!stdfs::exists("/usr/bin/setpriv")) GTEST_SKIP() << "no setpriv (util-linux)";
    const stdfs::path unit =
        stdfs::path(MODELFS_GEN_MANPAGE).parent_path() / "systemd" / "modelfs@.service";
    std::string ambient, bounding;
    {
        std::ifstream in(unit);
        ASSERT_TRUE(in) << unit;
        for (std::string line; std::getline(in, line);) {
            if (line.starts_with("AmbientCapabilities=")) ambient = line.substr(20);
            if (line.starts_with("CapabilityBoundingSet=")) bounding = line.substr(22);
        }
    }
    EXPECT_EQ(ambient, "CAP_SYS_ADMIN") << "the unit gives the daemon what passthrough needs";
    EXPECT_EQ(bounding, "CAP_SYS_ADMIN") << "and nothing more";
    if (ambient.empty() || bounding.empty()) return;
    // CAP_SYS_ADMIN -> sys_admin, setpriv's spelling.
    auto setpriv_cap = [](std::string c) {
        for (char& ch : c) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
        return c.substr(4);
    };
    const std::string caps = "-all,+" + setpriv_cap(ambient);
    mount_as_nobody(
        dir, store, mnt,
        {"--inh-caps=" + caps, "--ambient-caps=" + caps,
         "--bounding-set=-all,+" + setpriv_cap(bounding)},
        [&](const auto& as_user, const std::string& log) {
            CliResult b = as_user("/usr/bin/getfattr",
                                  {"--only-values", "-n", "user.modelfs.backend", mnt.string()});
            if (!splice_forced() && b.out == "splice" &&
                !env_is("MODELFS_REQUIRE_PASSTHROUGH", "1"))
                GTEST_SKIP() << "no passthrough here: " << read_file(log);
            EXPECT_EQ(b.out, splice_forced() ? "splice" : "passthrough") << b.err << read_file(log);
            CliResult r = as_user("/usr/bin/sha256sum", {(mnt / rel).string()});
            EXPECT_EQ(r.exit_code, 0) << r.err;
            EXPECT_EQ(r.out.substr(0, 64), sha);
        });
}

}  // namespace
