// Likely duplicates are hashed without being copied: the bytes written by an import of a
// duplicate are a small fraction of its size, and fingerprint collisions still store correctly.
#include <gtest/gtest.h>

#include <fstream>
#include <string>

#include "modelfs/store/store.h"
#include "support/test_env.h"

namespace stdfs = std::filesystem;
using namespace modelfs;
using namespace modelfs::testing;

namespace {

// Bytes this process has passed to write-like syscalls so far.
std::uint64_t bytes_written_by_this_process() {
    std::ifstream io("/proc/self/io");
    std::string key;
    std::uint64_t value = 0;
    while (io >> key >> value)
        if (key == "wchar:") return value;
    return 0;
}

constexpr std::uint64_t kSize = 16 << 20;

TEST(ImportDedup, DuplicateInTheSameImportIsNotWritten) {
    TempDir dir("modelfs-dedup");
    Store s = Store::init(dir / "store");
    write_random_file(dir / "in" / "loras" / "a.ckpt", kSize, 1);
    write_random_file(dir / "in" / "checkpoints" / "b.ckpt", kSize, 1);  // same bytes
    auto before = bytes_written_by_this_process();
    ImportReport r = s.import({dir / "in"}, {});
    auto written = bytes_written_by_this_process() - before;
    ASSERT_TRUE(r.ok());
    ASSERT_EQ(r.items.size(), 2u);
    EXPECT_EQ(r.items[0].sha256, r.items[1].sha256);
    EXPECT_LT(written, kSize + kSize / 4) << "the duplicate was copied too";
    EXPECT_GE(written, kSize) << "the original must have been copied once";
    EXPECT_TRUE(s.verify(false).problems.empty());
}

TEST(ImportDedup, AlreadyStoredContentIsOnlyHashed) {
    TempDir dir("modelfs-dedup2");
    Store s = Store::init(dir / "store");
    write_random_file(dir / "first.ckpt", kSize, 2);
    ASSERT_TRUE(s.import({dir / "first.ckpt"}, {}).ok());
    write_random_file(dir / "again" / "vae" / "same.pt", kSize, 2);
    auto before = bytes_written_by_this_process();
    ImportReport r = s.import({dir / "again"}, {});
    auto written = bytes_written_by_this_process() - before;
    ASSERT_TRUE(r.ok());
    EXPECT_FALSE(r.items[0].new_blob);
    EXPECT_LT(written, kSize / 4);
}

TEST(ImportDedup, FingerprintCollisionStillStoresBothCorrectly) {
    TempDir dir("modelfs-dedup3");
    Store s = Store::init(dir / "store");
    // Same size and same bytes at the three sampled places, different elsewhere.
    write_random_file(dir / "in" / "loras" / "x.ckpt", kSize, 3);
    std::string bytes = read_file(dir / "in" / "loras" / "x.ckpt");
    bytes[kSize / 4] ^= 0x55;
    write_text_file(dir / "in" / "loras" / "y.ckpt", bytes);
    ImportReport r = s.import({dir / "in"}, {});
    ASSERT_TRUE(r.ok());
    ASSERT_EQ(r.items.size(), 2u);
    EXPECT_NE(r.items[0].sha256, r.items[1].sha256);
    for (const auto& it : r.items) {
        EXPECT_TRUE(it.new_blob);
        EXPECT_EQ(sha256_hex_of_file(s.blobs().path_of(it.sha256)), sha256_hex_of_file(it.source));
    }
    EXPECT_TRUE(s.verify(false).problems.empty());
}

}  // namespace
