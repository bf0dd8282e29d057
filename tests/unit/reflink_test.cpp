// Reflink ingest: on a filesystem with reflinks the blob shares the source's extents (no bytes
// written, no space used) and stays intact when the source is edited afterwards; elsewhere (ext4
// here) the fallback copies. The XFS case builds a real XFS image on a loop device, so it needs
// root and xfsprogs; it is skipped (saying why) otherwise.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <memory>

#include "modelfs/store/store.h"
#include "support/test_env.h"

namespace stdfs = std::filesystem;
using namespace modelfs;
using namespace modelfs::testing;

namespace {

// True when any extent of the file is shared with another file (FIEMAP_EXTENT_SHARED).
bool has_shared_extents(const stdfs::path& p) {
    UniqueFd fd(::open(p.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) return false;
    constexpr unsigned kExtents = 256;
    std::vector<std::byte> buf(sizeof(fiemap) + kExtents * sizeof(fiemap_extent));
    auto* fm = reinterpret_cast<fiemap*>(buf.data());
    fm->fm_start = 0;
    fm->fm_length = FIEMAP_MAX_OFFSET;
    fm->fm_flags = FIEMAP_FLAG_SYNC;
    fm->fm_extent_count = kExtents;
    if (::ioctl(fd.get(), FS_IOC_FIEMAP, fm) != 0) return false;
    for (unsigned i = 0; i < fm->fm_mapped_extents; ++i)
        if (fm->fm_extents[i].fe_flags & FIEMAP_EXTENT_SHARED) return true;
    return false;
}

std::uint64_t used_bytes(const stdfs::path& p) {
    struct statvfs sv;
    if (::statvfs(p.c_str(), &sv) != 0) return 0;
    return (sv.f_blocks - sv.f_bfree) * sv.f_frsize;
}

constexpr std::uint64_t kSize = 64 << 20;

TEST(Reflink, Ext4FallsBackToACopy) {
    TempDir dir("modelfs-reflink-ext4");
    Store s = Store::init(dir / "store");
    write_random_file(dir / "src.ckpt", kSize, 1);
    ImportReport r = s.import({dir / "src.ckpt"}, {});
    ASSERT_TRUE(r.ok());
    stdfs::path blob = s.blobs().path_of(r.items[0].sha256);
    EXPECT_EQ(sha256_hex_of_file(blob), sha256_hex_of_file(dir / "src.ckpt"));
    // On a filesystem without reflinks the blob is an independent copy.
    EXPECT_FALSE(has_shared_extents(blob));
}

class XfsReflink : public ::testing::Test {
  protected:
    TempDir dir{"modelfs-reflink-xfs"};
    stdfs::path image = dir / "xfs.img";
    stdfs::path mnt = dir / "mnt";
    bool mounted = false;

    void SetUp() override {
        if (::geteuid() != 0) GTEST_SKIP() << "needs root to mount an XFS image";
        std::string mkfs =
            stdfs::exists("/usr/sbin/mkfs.xfs") ? "/usr/sbin/mkfs.xfs" : "/sbin/mkfs.xfs";
        if (!stdfs::exists(mkfs))
            GTEST_SKIP() << "xfsprogs is not installed (packaging/install-deps)";
        {
            UniqueFd fd(::open(image.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
            ASSERT_TRUE(fd);
            ASSERT_EQ(::ftruncate(fd.get(), 512 << 20), 0);  // sparse
        }
        CliResult mk = run_program(mkfs, {"-q", "-m", "reflink=1", image.string()});
        ASSERT_EQ(mk.exit_code, 0) << mk.err;
        stdfs::create_directories(mnt);
        CliResult m = run_program("/bin/mount", {"-o", "loop", image.string(), mnt.string()});
        if (m.exit_code != 0 && m.err.find("loop") != std::string::npos)
            GTEST_SKIP() << "no loop device for the XFS image: " << m.err;
        ASSERT_EQ(m.exit_code, 0) << m.err;
        mounted = true;
    }
    void TearDown() override {
        if (mounted) run_program("/bin/umount", {mnt.string()});
    }
};

TEST_F(XfsReflink, BlobSharesExtentsAndSurvivesEditsOfTheSource) {
    stdfs::path src = mnt / "models" / "checkpoints" / "big.ckpt";
    write_random_file(src, kSize, 7);
    const std::string sha = sha256_hex_of_file(src);
    ::sync();
    Store s = Store::init(mnt / "store");
    const std::uint64_t before = used_bytes(mnt);
    ImportReport r = s.import({mnt / "models"}, {});
    ASSERT_TRUE(r.ok());
    ASSERT_EQ(r.items[0].sha256.hex(), sha);
    stdfs::path blob = s.blobs().path_of(r.items[0].sha256);
    EXPECT_TRUE(has_shared_extents(blob)) << "the blob should be a reflink of the source";
    ::sync();
    // Signed: XFS may even release speculative preallocation and use a little less than before.
    const auto grown =
        static_cast<std::int64_t>(used_bytes(mnt)) - static_cast<std::int64_t>(before);
    EXPECT_LT(grown, static_cast<std::int64_t>(kSize / 4))
        << "a reflink takes no space for the data";

    // Copy-on-write: rewriting the source in place leaves the stored bytes alone.
    {
        UniqueFd fd(::open(src.c_str(), O_WRONLY | O_CLOEXEC));
        ASSERT_TRUE(fd);
        std::string junk(1 << 20, 'x');
        ASSERT_EQ(::pwrite(fd.get(), junk.data(), junk.size(), 0),
                  static_cast<ssize_t>(junk.size()));
    }
    EXPECT_NE(sha256_hex_of_file(src), sha);
    EXPECT_EQ(sha256_hex_of_file(blob), sha);
    EXPECT_TRUE(s.verify(false).problems.empty());
}

}  // namespace
