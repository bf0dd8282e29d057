// What a filesystem owes the files written through it, on real mounts: a model is only what a
// writer finished; one owner per unfinished file across mounts; no moment in which a saved name
// leads nowhere; open files outlive their names; shared mappings, links, fifos.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <thread>

#include <nlohmann/json.hpp>

#include "support/mount_fixture.h"
#include "support/safetensors_writer.h"
#include "support/test_env.h"

namespace stdfs = std::filesystem;
using namespace modelfs::testing;
using nlohmann::json;
using namespace std::chrono_literals;

namespace {

// Writes all of `bytes` to `fd`.
void write_all(int fd, std::string_view bytes) {
    while (!bytes.empty()) {
        ssize_t n = ::write(fd, bytes.data(), bytes.size());
        ASSERT_GT(n, 0) << std::strerror(errno);
        bytes.remove_prefix(static_cast<std::size_t>(n));
    }
}

class MountIntegrityTest : public StoreMountTest {
  protected:
    MountIntegrityTest() : StoreMountTest("modelfs-integrity") {}
    bool has_model(const std::string& key) {
        CliResult r = run_modelfs({"--store", store.string(), "show", key});
        return r.exit_code == 0;
    }
    json status() {
        CliResult r = run_modelfs({"--store", store.string(), "--json", "status"});
        EXPECT_EQ(r.exit_code, 0) << r.err;
        return r.exit_code == 0 ? json::parse(r.out) : json();
    }
};

TEST_F(MountIntegrityTest, AWriteCutByACrashStaysAPlainFileAndIsNeverAModel) {
    SafetensorsSpec spec = sd15_checkpoint(3);
    const std::string bytes = safetensors_bytes(grow_to(spec, 4 << 20));
    stdfs::path at = mnt / "comfyui" / "checkpoints" / "cut.safetensors";
    {
        Mount m(store, mnt);
        ASSERT_TRUE(m.ok());
        int fd = ::open(at.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
        ASSERT_GE(fd, 0) << std::strerror(errno);
        write_all(fd, std::string_view(bytes).substr(0, bytes.size() / 2));
        // The daemon dies with the file open: what it has is half a model.
        ::kill(m.pid(), SIGKILL);
        std::this_thread::sleep_for(100ms);
        ::close(fd);
        run_program("/bin/fusermount3", {"-uz", mnt.string()});
    }
    Mount m(store, mnt);
    ASSERT_TRUE(m.ok());
    std::this_thread::sleep_for(1500ms);  // the start-up scan has looked at it
    EXPECT_FALSE(has_model("checkpoint/cut"));
    // Kept, under its own name, with what was written.
    EXPECT_EQ(stdfs::file_size(at), bytes.size() / 2);
    json st = status();
    bool listed = false;
    for (const auto& u : st["not_stored"])
        if (u["path"] == "comfyui/checkpoints/cut.safetensors") {
            listed = true;
            EXPECT_NE(u["reason"].get<std::string>().find("unfinished"), std::string::npos) << u;
        }
    EXPECT_TRUE(listed) << st.dump();
    // Written again in full, it is a model.
    write_file(dir / "full.safetensors", bytes);
    stdfs::copy_file(dir / "full.safetensors", at, stdfs::copy_options::overwrite_existing);
    EXPECT_TRUE(eventually([&] { return has_model("checkpoint/cut"); }));
}

TEST_F(MountIntegrityTest, ASecondMountNeverTakesAFileAnotherMountIsWriting) {
    SafetensorsSpec spec = sd15_checkpoint(4);
    const std::string bytes = safetensors_bytes(grow_to(spec, 2 << 20));
    Mount a(store, mnt);
    ASSERT_TRUE(a.ok());
    stdfs::path at = mnt / "comfyui" / "checkpoints" / "slow.safetensors";
    int fd = ::open(at.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
    ASSERT_GE(fd, 0) << std::strerror(errno);
    write_all(fd, std::string_view(bytes).substr(0, bytes.size() / 2));
    {
        // Started while the write is under way: its start-up scan sees the unfinished file.
        Mount b(store, dir / "mnt2", {"--view", "comfyui"});
        ASSERT_TRUE(b.ok());
        std::this_thread::sleep_for(1500ms);
        EXPECT_FALSE(has_model("checkpoint/slow"));
        write_all(fd, std::string_view(bytes).substr(bytes.size() / 2));
        ASSERT_EQ(::close(fd), 0);
        // The writer's mount stores it once finished; the second mount shows it.
        ASSERT_TRUE(eventually([&] { return has_model("checkpoint/slow"); }));
        EXPECT_EQ(read_file(dir / "mnt2" / "checkpoints" / "slow.safetensors"), bytes);
    }
    EXPECT_EQ(read_file(at), bytes);
    CliResult v = run_modelfs({"--store", store.string(), "verify"});
    EXPECT_EQ(v.exit_code, 0) << v.out << v.err;
}

TEST_F(MountIntegrityTest, ASavedNameNeverDisappearsWhileItIsStored) {
    Mount m(store, mnt);
    ASSERT_TRUE(m.ok());
    for (int i = 0; i < 10; ++i) {
        const std::string bytes =
            safetensors_bytes(kohya_lora(100 + static_cast<std::uint64_t>(i)));
        stdfs::path at = mnt / "comfyui" / "loras" / ("x" + std::to_string(i) + ".safetensors");
        write_file(at, bytes);
        // Opened again and again while the mount stores it: never "no such file".
        auto t0 = std::chrono::steady_clock::now();
        while (std::chrono::steady_clock::now() - t0 < 150ms) {
            int fd = ::open(at.c_str(), O_RDONLY);
            ASSERT_GE(fd, 0) << at << ": " << std::strerror(errno);
            struct stat st;
            ASSERT_EQ(::fstat(fd, &st), 0);
            EXPECT_EQ(st.st_size, static_cast<off_t>(bytes.size()));
            EXPECT_EQ(st.st_mode & 07777, 0644u);
            ::close(fd);
        }
        EXPECT_EQ(read_file(at), bytes);
    }
}

TEST_F(MountIntegrityTest, AttributesAreRightRightAfterClose) {
    Mount m(store, mnt);
    ASSERT_TRUE(m.ok());
    const std::string bytes = safetensors_bytes(kohya_lora(7));
    for (int i = 0; i < 5; ++i) {
        stdfs::path at = mnt / "comfyui" / "loras" / ("t" + std::to_string(i) + ".safetensors");
        write_file(at, bytes + bytes);
        int fd = ::open(at.c_str(), O_WRONLY);
        ASSERT_GE(fd, 0) << std::strerror(errno);
        ASSERT_EQ(::fchmod(fd, 0600), 0);
        ASSERT_EQ(::ftruncate(fd, static_cast<off_t>(bytes.size())), 0);
        ASSERT_EQ(::close(fd), 0);
        for (int k = 0; k < 20; ++k) {
            struct stat st;
            ASSERT_EQ(::stat(at.c_str(), &st), 0) << std::strerror(errno);
            EXPECT_EQ(st.st_size, static_cast<off_t>(bytes.size()));
            EXPECT_EQ(st.st_mode & 07777, 0600u);
            std::this_thread::sleep_for(5ms);
        }
        EXPECT_EQ(read_file(at), bytes);
    }
}

TEST_F(MountIntegrityTest, OpenFilesOutliveTheirNames) {
    Mount m(store, mnt);
    ASSERT_TRUE(m.ok());
    for (const char* where : {"comfyui/custom/notes.txt", "comfyui/loras/gone.safetensors"}) {
        SCOPED_TRACE(where);
        stdfs::path at = mnt / where;
        stdfs::create_directories(at.parent_path());
        int fd = ::open(at.c_str(), O_CREAT | O_RDWR | O_TRUNC, 0644);
        ASSERT_GE(fd, 0) << std::strerror(errno);
        ASSERT_EQ(::unlink(at.c_str()), 0);
        EXPECT_FALSE(stdfs::exists(at));
        write_all(fd, "hello, unlinked world");
        struct stat st;
        ASSERT_EQ(::fstat(fd, &st), 0) << std::strerror(errno);
        EXPECT_EQ(st.st_size, 21);
        EXPECT_EQ(::ftruncate(fd, 5), 0) << std::strerror(errno);
        ASSERT_EQ(::fstat(fd, &st), 0) << std::strerror(errno);
        EXPECT_EQ(st.st_size, 5);
        EXPECT_EQ(::fallocate(fd, 0, 0, 4096), 0) << std::strerror(errno);
        EXPECT_EQ(::fchmod(fd, 0600), 0) << std::strerror(errno);
        char buf[8] = {};
        EXPECT_EQ(::pread(fd, buf, sizeof buf, 0), 8);
        EXPECT_EQ(std::string(buf, 5), "hello");
        ::close(fd);
    }
}

TEST_F(MountIntegrityTest, SharedMappingsOfFilesOpenForWriting) {
    Mount m(store, mnt);
    ASSERT_TRUE(m.ok());
    for (const char* where : {"comfyui/custom/map.bin", "comfyui/loras/map.safetensors"}) {
        SCOPED_TRACE(where);
        stdfs::path at = mnt / where;
        stdfs::create_directories(at.parent_path());
        int fd = ::open(at.c_str(), O_CREAT | O_RDWR, 0644);
        ASSERT_GE(fd, 0) << std::strerror(errno);
        ASSERT_EQ(::ftruncate(fd, 1 << 16), 0);
        void* p = ::mmap(nullptr, 1 << 16, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        ASSERT_NE(p, MAP_FAILED) << std::strerror(errno);
        std::memset(p, 'm', 1 << 16);
        ASSERT_EQ(::msync(p, 1 << 16, MS_SYNC), 0) << std::strerror(errno);
        ::munmap(p, 1 << 16);
        void* r = ::mmap(nullptr, 1 << 16, PROT_READ, MAP_SHARED, fd, 0);
        ASSERT_NE(r, MAP_FAILED) << std::strerror(errno);
        EXPECT_EQ(static_cast<const char*>(r)[12345], 'm');
        ::munmap(r, 1 << 16);
        ASSERT_EQ(::close(fd), 0);
        EXPECT_EQ(read_file(at), std::string(1 << 16, 'm'));
    }
}

TEST_F(MountIntegrityTest, LinksFifosAndSocketsInAView) {
    Mount m(store, mnt);
    ASSERT_TRUE(m.ok());
    stdfs::path loras = mnt / "comfyui" / "loras";
    const std::string bytes = safetensors_bytes(kohya_lora(21));
    write_file(dir / "outside.safetensors", bytes);
    // A link to a file elsewhere stays a link: the tool reads the target, nothing is stored.
    stdfs::create_symlink(dir / "outside.safetensors", loras / "linked.safetensors");
    EXPECT_TRUE(stdfs::is_symlink(loras / "linked.safetensors"));
    EXPECT_EQ(stdfs::read_symlink(loras / "linked.safetensors"), dir / "outside.safetensors");
    EXPECT_EQ(read_file(loras / "linked.safetensors"), bytes);
    std::this_thread::sleep_for(500ms);
    EXPECT_FALSE(has_model("lora/linked"));

    // Hard links: two names, one file, in a plain folder and in a model folder.
    stdfs::create_directories(mnt / "comfyui" / "custom");
    for (stdfs::path first : {mnt / "comfyui" / "custom" / "a.txt", loras / "twice.safetensors"}) {
        SCOPED_TRACE(first);
        write_file(first, bytes);
        stdfs::path second = first.parent_path() / ("second-" + first.filename().string());
        ASSERT_EQ(::link(first.c_str(), second.c_str()), 0) << std::strerror(errno);
        EXPECT_EQ(stdfs::hard_link_count(first), 2u);
        EXPECT_EQ(stdfs::hard_link_count(second), 2u);
        EXPECT_EQ(read_file(second), bytes);
        ASSERT_EQ(::unlink(first.c_str()), 0);
        EXPECT_FALSE(stdfs::exists(first));
        EXPECT_EQ(stdfs::hard_link_count(second), 1u);
        EXPECT_EQ(read_file(second), bytes);
    }

    stdfs::path fifo = mnt / "comfyui" / "custom" / "pipe";
    ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0) << std::strerror(errno);
    EXPECT_TRUE(stdfs::is_fifo(fifo));
    stdfs::path sock = mnt / "comfyui" / "custom" / "sock";
    int s = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, sock.c_str(), sizeof addr.sun_path - 1);
    if (sock.string().size() < sizeof addr.sun_path) {
        EXPECT_EQ(::bind(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0)
            << std::strerror(errno);
        EXPECT_TRUE(stdfs::is_socket(sock));
    }
    ::close(s);
    // Device nodes have no place in a mount of models.
    stdfs::path dev = mnt / "comfyui" / "custom" / "null";
    EXPECT_EQ(::mknod(dev.c_str(), S_IFCHR | 0600, makedev(1, 3)), -1);
    EXPECT_EQ(errno, EPERM);
}

TEST_F(MountIntegrityTest, AnEmptyCreateAddsNoVersion) {
    Mount m(store, mnt);
    ASSERT_TRUE(m.ok());
    stdfs::path at = mnt / "comfyui" / "checkpoints" / "empty.safetensors";
    int fd = ::open(at.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::close(fd), 0);
    std::this_thread::sleep_for(800ms);
    EXPECT_FALSE(has_model("checkpoint/empty"));
    EXPECT_TRUE(stdfs::exists(at));
    EXPECT_EQ(stdfs::file_size(at), 0u);
}

}  // namespace

namespace {

// A shared mount (--allow-other, as fstab and the system service run it): a user who can write a
// folder of a view makes a file set-user-ID. It must not be: the daemon (root here) makes every
// file, so the bit would hand out root. Root itself keeps the bits it asks for.
TEST_F(MountIntegrityTest, NoSetIdFilesFromUsers) {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (a second user)";
    stdfs::permissions(dir.path(), stdfs::perms::owner_all | stdfs::perms::group_exec |
                                       stdfs::perms::others_exec);  // the way to the mount point
    Mount m(store, mnt, {"--allow-other"});
    ASSERT_TRUE(m.ok());
    stdfs::path shared = mnt / "a1111" / "shared";
    stdfs::create_directory(shared);
    ASSERT_EQ(::chmod(shared.c_str(), 01777), 0);
    AsNobody r = run_as_nobody([&]() -> std::string {
        stdfs::path evil = shared / "evil";
        int fd = ::open(evil.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 06755);
        if (fd < 0) return std::string("create: ") + std::strerror(errno);
        ::close(fd);
        struct stat st;
        if (::stat(evil.c_str(), &st) != 0) return "stat failed";
        if (st.st_mode & (S_ISUID | S_ISGID)) return "created with set-id bits";
        if (::chmod(evil.c_str(), 04755) == 0 && ::stat(evil.c_str(), &st) == 0 &&
            (st.st_mode & S_ISUID))
            return "chmod u+s took effect";
        if (::mkdir((shared / "d").c_str(), 02755) != 0) return "mkdir failed";
        if (::stat((shared / "d").c_str(), &st) != 0 || (st.st_mode & S_ISGID))
            return "folder made set-group-ID";
        return "";
    });
    if (r.skipped) GTEST_SKIP() << "cannot become nobody";
    EXPECT_TRUE(r.ok) << r.message;
    // The store's copy of what tools wrote is private to the store's owner.
    struct stat st;
    ASSERT_EQ(::stat((store / "views").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0700u);
    stdfs::path root_file = shared / "mine";
    int fd = ::open(root_file.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 04755);
    ASSERT_GE(fd, 0);
    ::close(fd);
    ASSERT_EQ(::stat(root_file.c_str(), &st), 0);
    EXPECT_TRUE(st.st_mode & S_ISUID);  // root's own request stands
}

}  // namespace
