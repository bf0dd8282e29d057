// The store's folders are its owner's (and its group's where the store's folder lets the group
// in) from the moment `modelfs init` makes them, and partial/ from the first download.
#include <sys/stat.h>

#include <gtest/gtest.h>

#include "modelfs/store/store.h"
#include "modelfs/store/store_folders.h"
#include "support/test_env.h"

namespace stdfs = std::filesystem;
using namespace modelfs;
using modelfs::testing::TempDir;

namespace {

mode_t mode_of(const stdfs::path& p) {
    struct stat st {};
    EXPECT_EQ(::lstat(p.c_str(), &st), 0) << p;
    return st.st_mode & 07777;
}

}  // namespace

TEST(StoreFolders, InitMakesThemTheOwnersAndTheGroupsWhereTheStoreLetsTheGroupIn) {
    TempDir tmp;
    for (mode_t root_mode : {mode_t{0700}, mode_t{0750}, mode_t{0755}, mode_t{0777}}) {
        const stdfs::path root = tmp / ("store-" + std::to_string(root_mode));
        ASSERT_EQ(::mkdir(root.c_str(), 0700), 0);
        ASSERT_EQ(::chmod(root.c_str(), root_mode), 0);  // whatever the umask
        Store::init(root);
        const mode_t group = root_mode & 0050;
        for (const char* f : {"blobs", "staging", "quarantine", "catalog"})
            EXPECT_EQ(mode_of(root / f), 0700 | group)
                << f << " in a store folder of mode 0" << std::oct << root_mode;
        EXPECT_EQ(mode_of(root / "views"), 0700u) << "views/ is the owner's alone";
    }
}

TEST(StoreFolders, LaterFoldersAreNarrowedAndLinksNeverFollowed) {
    TempDir tmp;
    const stdfs::path root = tmp / "store";
    ASSERT_EQ(::mkdir(root.c_str(), 0750), 0);
    ASSERT_EQ(::chmod(root.c_str(), 0750), 0);
    Store::init(root);
    ASSERT_EQ(::mkdir((root / "partial").c_str(), 0777), 0);
    ASSERT_EQ(::chmod((root / "partial").c_str(), 0777), 0);
    // A store folder that is a link: its target is not the store's to change.
    const stdfs::path elsewhere = tmp / "elsewhere";
    ASSERT_EQ(::mkdir(elsewhere.c_str(), 0777), 0);
    ASSERT_EQ(::chmod(elsewhere.c_str(), 0777), 0);
    stdfs::create_directory_symlink(elsewhere, root / "adopt");
    make_store_folders_private(root);
    EXPECT_EQ(mode_of(root / "partial"), 0750u);
    EXPECT_EQ(mode_of(elsewhere), 0777u);
    // Never widened: a folder the owner narrowed further stays so.
    ASSERT_EQ(::chmod((root / "blobs").c_str(), 0700), 0);
    make_store_folders_private(root);
    EXPECT_EQ(mode_of(root / "blobs"), 0700u);
}
