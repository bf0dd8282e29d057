// Real FUSE mounts of a real store: every test mounts in a temp folder and always unmounts in
// teardown, even when it fails.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "modelfs/store/hash.h"
#include "modelfs/store/unique_fd.h"
#include "support/mount_fixture.h"
#include "support/safetensors_writer.h"
#include "support/test_env.h"

namespace stdfs = std::filesystem;
using namespace modelfs::testing;
using nlohmann::json;

namespace {

class MountTest : public StoreMountTest {
  protected:
    MountTest() : StoreMountTest("modelfs-mount") {}
    stdfs::path comfy = dir / "ComfyUI" / "models";

    void SetUp() override {
        StoreMountTest::SetUp();
        if (IsSkipped() || HasFatalFailure()) return;
        auto put = [&](const stdfs::path& p, SafetensorsSpec spec, std::uint64_t bytes) {
            stdfs::create_directories(p.parent_path());
            if (bytes) grow_to(spec, bytes);
            write_safetensors(p, spec);
        };
        put(comfy / "checkpoints" / "base.safetensors", sd15_checkpoint(1), 8 << 20);
        put(comfy / "loras" / "sdxl" / "style.safetensors", kohya_lora(2), 0);
        put(comfy / "vae" / "ft.safetensors", vae(3), 0);
        import_folder(comfy);
    }
};

TEST_F(MountTest, EveryViewReadsTheSameBytes) {
    Mount m(store, mnt);
    ASSERT_TRUE(m.ok());
    std::string sha = sha256_hex_of_file(comfy / "checkpoints" / "base.safetensors");
    EXPECT_EQ(sha256_hex_of_file(mnt / "comfyui" / "checkpoints" / "base.safetensors"), sha);
    EXPECT_EQ(sha256_hex_of_file(mnt / "a1111" / "Stable-diffusion" / "base.safetensors"), sha);
    EXPECT_EQ(sha256_hex_of_file(mnt / "fooocus" / "checkpoints" / "base.safetensors"), sha);
    EXPECT_EQ(sha256_hex_of_file(mnt / "by-hash" / "sha256" / sha), sha);
    EXPECT_EQ(sha256_hex_of_file(mnt / "a1111" / "Lora" / "sdxl" / "style.safetensors"),
              sha256_hex_of_file(comfy / "loras" / "sdxl" / "style.safetensors"));
    // Real regular files, not symlinks.
    struct stat st;
    ASSERT_EQ(::lstat((mnt / "a1111" / "VAE" / "ft.safetensors").c_str(), &st), 0);
    EXPECT_TRUE(S_ISREG(st.st_mode));
    EXPECT_EQ(static_cast<std::uint64_t>(st.st_size),
              stdfs::file_size(comfy / "vae" / "ft.safetensors"));
    // LyCORIS is a second LoRA folder in A1111: the LoRA shows once, in Lora.
    EXPECT_FALSE(stdfs::exists(mnt / "a1111" / "LyCORIS" / "sdxl" / "style.safetensors"));
    EXPECT_EQ(m.stop(), 0);
}

TEST_F(MountTest, SingleViewAtTheMountPoint) {
    Mount m(store, mnt, {"--view", "comfyui"});
    ASSERT_TRUE(m.ok());
    EXPECT_TRUE(stdfs::exists(mnt / "checkpoints" / "base.safetensors"));
    EXPECT_TRUE(stdfs::exists(mnt / "loras" / "sdxl" / "style.safetensors"));
    EXPECT_FALSE(stdfs::exists(mnt / "comfyui"));
    EXPECT_FALSE(stdfs::exists(mnt / "by-hash"));
}

TEST_F(MountTest, ExtendedAttributesNameTheContent) {
    Mount m(store, mnt);
    ASSERT_TRUE(m.ok());
    stdfs::path f = mnt / "comfyui" / "loras" / "sdxl" / "style.safetensors";
    std::string sha = sha256_hex_of_file(comfy / "loras" / "sdxl" / "style.safetensors");
    auto get = [&](const char* name) { return xattr(f, name); };
    EXPECT_EQ(get("user.modelfs.sha256"), sha);
    EXPECT_EQ(get("user.modelfs.autov2"), sha.substr(0, 10));
    EXPECT_EQ(get("user.modelfs.category"), "lora");
    EXPECT_EQ(get("user.modelfs.version"), "v1");
    EXPECT_EQ(get("user.modelfs.autov3").size(), 64u);
    char names[1024];
    ssize_t n = ::listxattr(f.c_str(), names, sizeof names);
    ASSERT_GT(n, 0);
    EXPECT_EQ(std::count(names, names + n, '\0'), 6);
    // How reads of it are served (fs/src/read_backend.h).
    const std::string backend = get("user.modelfs.backend");
    EXPECT_TRUE(backend == "passthrough" || backend == "splice") << backend;
    EXPECT_EQ(get("user.other"), "<No data available>");
    // The tool users run: getfattr -d lists every attribute with its value.
    CliResult r = run_program("/usr/bin/getfattr", {"-d", f.string()});
    ASSERT_EQ(r.exit_code, 0) << r.err << " (the attr package provides getfattr)";
    EXPECT_NE(r.out.find("user.modelfs.sha256=\"" + sha + "\""), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("user.modelfs.category=\"lora\""), std::string::npos) << r.out;
}

TEST_F(MountTest, MetadataIsStableAcrossRemounts) {
    auto snapshot = [&] {
        std::vector<std::tuple<ino_t, off_t, time_t>> out;
        for (const char* p : {"comfyui/checkpoints/base.safetensors", "comfyui/checkpoints",
                              "a1111/Lora/sdxl/style.safetensors", "comfyui/loras"}) {
            struct stat st;
            EXPECT_EQ(::stat((mnt / p).c_str(), &st), 0) << p;
            out.emplace_back(st.st_ino, st.st_size, st.st_mtime);
        }
        return out;
    };
    decltype(snapshot()) first, second;
    {
        Mount m(store, mnt);
        ASSERT_TRUE(m.ok());
        first = snapshot();
    }
    {
        Mount m(store, mnt);
        ASSERT_TRUE(m.ok());
        second = snapshot();
    }
    EXPECT_EQ(first, second);
}

TEST_F(MountTest, SixteenConcurrentReadersAndAnMmapReader) {
    Mount m(store, mnt);
    ASSERT_TRUE(m.ok());
    stdfs::path f = mnt / "comfyui" / "checkpoints" / "base.safetensors";
    std::string sha = sha256_hex_of_file(comfy / "checkpoints" / "base.safetensors");
    std::vector<std::string> got(16);
    std::vector<std::thread> readers;
    for (int i = 0; i < 16; ++i) readers.emplace_back([&, i] { got[i] = sha256_hex_of_file(f); });
    for (auto& t : readers) t.join();
    for (const auto& g : got) EXPECT_EQ(g, sha);

    // safetensors loaders mmap the file.
    modelfs::UniqueFd fd(::open(f.c_str(), O_RDONLY | O_CLOEXEC));
    ASSERT_TRUE(fd);
    std::size_t size = stdfs::file_size(f);
    void* p = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd.get(), 0);
    ASSERT_NE(p, MAP_FAILED);
    EXPECT_EQ(modelfs::sha256_of(std::string_view(static_cast<const char*>(p), size)).hex(), sha);
    ::munmap(p, size);
}

TEST_F(MountTest, CliChangesShowUpWhileMounted) {
    Mount m(store, mnt);
    ASSERT_TRUE(m.ok());
    stdfs::path target = mnt / "comfyui" / "vae" / "fresh.safetensors";
    EXPECT_FALSE(stdfs::exists(target));
    stdfs::create_directories(dir / "new" / "vae");
    write_safetensors(dir / "new" / "vae" / "fresh.safetensors", vae(9));
    ASSERT_EQ(run_modelfs({"--store", store.string(), "import", (dir / "new").string()}).exit_code,
              0);
    auto t0 = std::chrono::steady_clock::now();
    while (!stdfs::exists(target) &&
           std::chrono::steady_clock::now() - t0 < std::chrono::seconds(5))
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    ASSERT_TRUE(stdfs::exists(target));
    EXPECT_EQ(sha256_hex_of_file(target),
              sha256_hex_of_file(dir / "new" / "vae" / "fresh.safetensors"));
}

TEST_F(MountTest, MissingBlobReadsAsEioAndTheDaemonLives) {
    std::string sha = sha256_hex_of_file(comfy / "vae" / "ft.safetensors");
    stdfs::remove(store / "blobs" / "sha256" / sha.substr(0, 2) / sha);
    Mount m(store, mnt);
    ASSERT_TRUE(m.ok());
    int fd = ::open((mnt / "comfyui" / "vae" / "ft.safetensors").c_str(), O_RDONLY);
    EXPECT_EQ(fd, -1);
    EXPECT_EQ(errno, EIO);
    // The daemon is still serving everything else.
    EXPECT_EQ(sha256_hex_of_file(mnt / "comfyui" / "checkpoints" / "base.safetensors"),
              sha256_hex_of_file(comfy / "checkpoints" / "base.safetensors"));
    EXPECT_EQ(::kill(m.pid(), 0), 0);
}

TEST_F(MountTest, TruncatedBlobReadsAsEio) {
    std::string sha = sha256_hex_of_file(comfy / "loras" / "sdxl" / "style.safetensors");
    stdfs::path blob = store / "blobs" / "sha256" / sha.substr(0, 2) / sha;
    stdfs::permissions(blob, stdfs::perms::owner_write, stdfs::perm_options::add);
    stdfs::resize_file(blob, stdfs::file_size(blob) / 2);
    Mount m(store, mnt);
    ASSERT_TRUE(m.ok());
    int fd = ::open((mnt / "comfyui" / "loras" / "sdxl" / "style.safetensors").c_str(), O_RDONLY);
    EXPECT_EQ(fd, -1) << "a short blob must not be served";
    EXPECT_EQ(errno, EIO);
    if (fd >= 0) ::close(fd);
}

// Bytes changed behind the store's back (its owner can chmod a blob writable), even with the
// mtime put back: the open answers EIO, never other bytes under the old hash, the blob goes to
// quarantine/ and `verify --fast` reports the next one it finds.
TEST_F(MountTest, ModifiedBlobIsQuarantinedNotServed) {
    auto tamper = [&](const stdfs::path& model) {
        std::string sha = sha256_hex_of_file(model);
        stdfs::path blob = store / "blobs" / "sha256" / sha.substr(0, 2) / sha;
        struct stat st;
        EXPECT_EQ(::stat(blob.c_str(), &st), 0);
        stdfs::permissions(blob, stdfs::perms::owner_write, stdfs::perm_options::add);
        int fd = ::open(blob.c_str(), O_WRONLY);
        EXPECT_GE(fd, 0);
        EXPECT_EQ(::pwrite(fd, "XXXX", 4, 64), 4);
        ::close(fd);
        stdfs::permissions(blob, stdfs::perms::owner_write, stdfs::perm_options::remove);
        struct timespec ts[2] = {st.st_atim, st.st_mtim};  // touch -d
        EXPECT_EQ(::utimensat(AT_FDCWD, blob.c_str(), ts, 0), 0);
        return blob;
    };
    const stdfs::path vae_blob = tamper(comfy / "vae" / "ft.safetensors");
    Mount m(store, mnt);
    ASSERT_TRUE(m.ok());
    errno = 0;
    int fd = ::open((mnt / "comfyui" / "vae" / "ft.safetensors").c_str(), O_RDONLY);
    EXPECT_EQ(fd, -1) << "a changed blob must not be served";
    EXPECT_EQ(errno, EIO);
    if (fd >= 0) ::close(fd);
    EXPECT_FALSE(stdfs::exists(vae_blob));
    EXPECT_FALSE(stdfs::is_empty(store / "quarantine"));
    // Everything else is served as before.
    EXPECT_EQ(sha256_hex_of_file(mnt / "comfyui" / "checkpoints" / "base.safetensors"),
              sha256_hex_of_file(comfy / "checkpoints" / "base.safetensors"));
    EXPECT_EQ(m.stop(), 0);

    tamper(comfy / "loras" / "sdxl" / "style.safetensors");
    CliResult v = run_modelfs({"--store", store.string(), "verify", "--fast"});
    EXPECT_NE(v.exit_code, 0);
    EXPECT_NE((v.out + v.err).find("corrupt"), std::string::npos) << v.out << v.err;
}

TEST_F(MountTest, TwoMountsOfOneStore) {
    Mount a(store, mnt);
    Mount b(store, dir / "mnt2", {"--view", "a1111"});
    ASSERT_TRUE(a.ok());
    ASSERT_TRUE(b.ok());
    EXPECT_EQ(sha256_hex_of_file(mnt / "comfyui" / "vae" / "ft.safetensors"),
              sha256_hex_of_file(dir / "mnt2" / "VAE" / "ft.safetensors"));
}

TEST_F(MountTest, BadViewAndBadMountpointFailClearly) {
    CliResult r = run_modelfs({"--store", store.string(), "mount", mnt.string(), "--view", "nope"});
    EXPECT_NE(r.exit_code, 0);
    EXPECT_NE(r.err.find("unknown view 'nope'"), std::string::npos) << r.err;
    r = run_modelfs({"--store", store.string(), "mount", (dir / "missing").string(), "-f"});
    EXPECT_NE(r.exit_code, 0);
    EXPECT_FALSE(is_mounted(dir / "missing"));
}

}  // namespace
