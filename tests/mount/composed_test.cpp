// Composed files (tensor-level dedup, store/tensor_split.h, fs/src/composed.h) through a real
// mount: a fine-tune stored as extents of its base reads back byte for byte (read, pread across
// extent boundaries, mmap), shows the file's own hashes, is materialised after repeated opens
// within the budget, and a fine-tune saved through the mount is composed too. Runs with both read
// backends (the suite runs again with MODELFS_READ_BACKEND=splice).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <random>
#include <thread>

#include "modelfs/store/hash.h"
#include "modelfs/store/unique_fd.h"
#include "support/mount_fixture.h"
#include "support/safetensors_writer.h"
#include "support/test_env.h"

namespace stdfs = std::filesystem;
using namespace modelfs::testing;
using modelfs::UniqueFd;

namespace {

SafetensorsSpec base_spec() {
    SafetensorsSpec s;
    s.metadata = {{"title", "base"}};
    for (int i = 0; i < 16; ++i) {
        s.tensors.push_back({"model.diffusion_model.b" + std::to_string(i) + ".weight",
                             "F32",
                             {512, 512},
                             100 + i,
                             std::nullopt});
        s.tensors.push_back({"model.diffusion_model.b" + std::to_string(i) + ".bias",
                             "F32",
                             {512},
                             300 + i,
                             std::nullopt});
    }
    s.tensors.push_back({"first_stage_model.w", "F32", {1024, 512}, 5, std::nullopt});
    return s;
}

SafetensorsSpec finetune_spec(int which) {
    SafetensorsSpec s = base_spec();
    s.metadata = {{"title", "ft" + std::to_string(which)}};
    s.tensors[2 * which].seed = 9000 + which;
    s.tensors[2 * which + 1].seed = 9100 + which;
    return s;
}

class ComposedMountTest : public StoreMountTest {
  protected:
    ComposedMountTest() : StoreMountTest("modelfs-composed") {}
    stdfs::path src = dir / "src";

    void SetUp() override {
        StoreMountTest::SetUp();
        if (IsSkipped() || HasFatalFailure()) return;
        stdfs::create_directories(src / "checkpoints");
        write_safetensors(src / "checkpoints" / "base.safetensors", base_spec());
        import_folder(src);
        stdfs::remove_all(src);
        stdfs::create_directories(src / "checkpoints");
        write_safetensors(src / "checkpoints" / "ft.safetensors", finetune_spec(3));
        import_folder(src);
        ft_bytes = read_file(src / "checkpoints" / "ft.safetensors");
        ft_sha = modelfs::sha256_of(ft_bytes).hex();
        ASSERT_FALSE(stdfs::exists(blob_path(ft_sha))) << "the fine-tune was not composed";
        CliResult r = run_modelfs({"--store", store.string(), "materialise", "--budget", "0"});
        ASSERT_EQ(r.exit_code, 0) << r.err;
    }
    stdfs::path blob_path(const std::string& hex) const {
        return store / "blobs" / "sha256" / hex.substr(0, 2) / hex;
    }

    std::string ft_bytes, ft_sha;
    const std::string rel = "comfyui/checkpoints/ft.safetensors";
};

TEST_F(ComposedMountTest, ReadsRebuildTheExactBytes) {
    Mount m(store, mnt);
    ASSERT_TRUE(m.ok());
    EXPECT_EQ(stdfs::file_size(mnt / rel), ft_bytes.size());
    EXPECT_EQ(read_file(mnt / rel), ft_bytes);
    EXPECT_EQ(xattr(mnt / rel, "user.modelfs.sha256"), ft_sha);

    // Reads of odd sizes at odd offsets, many across extent boundaries.
    UniqueFd fd(::open((mnt / rel).c_str(), O_RDONLY | O_CLOEXEC));
    ASSERT_TRUE(fd) << std::strerror(errno);
    ::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_DONTNEED);
    std::mt19937_64 rng(11);
    std::vector<char> buf(3 << 20);
    for (int i = 0; i < 200; ++i) {
        const std::uint64_t off = rng() % ft_bytes.size();
        const std::size_t len = 1 + rng() % buf.size();
        const ssize_t n = ::pread(fd.get(), buf.data(), len, static_cast<off_t>(off));
        ASSERT_GE(n, 0) << std::strerror(errno);
        const std::size_t want = std::min<std::uint64_t>(len, ft_bytes.size() - off);
        ASSERT_EQ(static_cast<std::size_t>(n), want);
        ASSERT_EQ(std::memcmp(buf.data(), ft_bytes.data() + off, want), 0) << "at " << off;
    }
    // Past the end: nothing.
    EXPECT_EQ(::pread(fd.get(), buf.data(), 10, static_cast<off_t>(ft_bytes.size())), 0);

    // mmap, as safetensors loaders read.
    void* map = ::mmap(nullptr, ft_bytes.size(), PROT_READ, MAP_SHARED, fd.get(), 0);
    ASSERT_NE(map, MAP_FAILED) << std::strerror(errno);
    EXPECT_EQ(std::memcmp(map, ft_bytes.data(), ft_bytes.size()), 0);
    ::munmap(map, ft_bytes.size());
    // With a budget of 0 nothing was materialised.
    EXPECT_FALSE(stdfs::exists(blob_path(ft_sha)));
}

TEST_F(ComposedMountTest, OpenedOftenItIsMaterialisedWithinTheBudget) {
    CliResult b = run_modelfs({"--store", store.string(), "materialise", "--budget", "1G"});
    ASSERT_EQ(b.exit_code, 0) << b.err;
    Mount m(store, mnt);
    ASSERT_TRUE(m.ok());
    for (int i = 0; i < 2; ++i) EXPECT_EQ(modelfs::sha256_of(read_file(mnt / rel)).hex(), ft_sha);
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (!stdfs::exists(blob_path(ft_sha)) && std::chrono::steady_clock::now() < until)
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    ASSERT_TRUE(stdfs::exists(blob_path(ft_sha))) << "not materialised after two opens";
    EXPECT_EQ(sha256_hex_of_file(blob_path(ft_sha)), ft_sha);
    // Read like any blob from now on, and still the same bytes.
    EXPECT_EQ(read_file(mnt / rel), ft_bytes);
    CliResult show = run_modelfs({"--store", store.string(), "--json", "show", "ft"});
    EXPECT_NE(show.out.find("\"stored_as\": \"materialised\""), std::string::npos) << show.out;
}

TEST_F(ComposedMountTest, AFineTuneSavedThroughTheMountIsComposed) {
    Mount m(store, mnt);
    ASSERT_TRUE(m.ok());
    const std::string bytes = safetensors_bytes(finetune_spec(7));
    {
        std::ofstream out(mnt / "comfyui/checkpoints/saved.safetensors", std::ios::binary);
        out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    }
    const std::string sha = modelfs::sha256_of(bytes).hex();
    // The save is stored by the mount's ingester: wait for the model.
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    CliResult show;
    while (std::chrono::steady_clock::now() < until) {
        show = run_modelfs({"--store", store.string(), "--json", "show", "saved"});
        if (show.exit_code == 0 &&
            show.out.find("\"stored_as\": \"composed\"") != std::string::npos)
            break;
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    EXPECT_NE(show.out.find("\"stored_as\": \"composed\""), std::string::npos) << show.out;
    EXPECT_FALSE(stdfs::exists(blob_path(sha)));
    EXPECT_EQ(read_file(mnt / "comfyui/checkpoints/saved.safetensors"), bytes);
    EXPECT_EQ(read_file(mnt / "a1111/Stable-diffusion/saved.safetensors"), bytes);
}

}  // namespace
