// OpenFiles: the mount's table of what is open (fs/src/open_files.h). What ops.cpp relies on:
// a file's last writer is told it is last and gets the first write error; overlay descriptors
// are found by the kernel's inode, writers first; folder handles stay valid until released.
#include "open_files.h"

#include <gtest/gtest.h>

#include <memory>

namespace modelfs::fs {
namespace {

TEST(OpenFiles, TheLastWriterGetsTheFirstWriteError) {
    OpenFiles files;
    {
        const OpenFiles::Edit edit = files.edit();
        files.add_writer(edit, 10, 100, 7);
        files.add_writer(edit, 11, 100, 7);
        EXPECT_TRUE(files.is_writer(edit, 10));
        EXPECT_TRUE(files.being_written(edit, 7));
        EXPECT_FALSE(files.being_written(edit, 8));
    }
    files.note_write_error(11, "a write to it failed (No space left on device)");
    files.note_write_error(10, "fsync to it failed (Input/output error)");
    files.note_write_error(99, "not open: ignored");

    const OpenFiles::Edit edit = files.edit();
    auto first = files.remove_writer(edit, 10);
    ASSERT_TRUE(first);
    EXPECT_EQ(first->ino, 100u);
    EXPECT_FALSE(first->last);
    EXPECT_EQ(first->error, "");
    EXPECT_FALSE(files.is_writer(edit, 10));
    EXPECT_TRUE(files.being_written(edit, 7));

    auto second = files.remove_writer(edit, 11);
    ASSERT_TRUE(second);
    EXPECT_TRUE(second->last);
    EXPECT_EQ(second->error, "a write to it failed (No space left on device)");
    EXPECT_FALSE(files.being_written(edit, 7));
    EXPECT_FALSE(files.remove_writer(edit, 11));  // no writer any more
}

TEST(OpenFiles, AnErrorIsForgottenWithItsLastWriter) {
    OpenFiles files;
    files.add_writer(files.edit(), 10, 100, 7);
    files.note_write_error(10, "a write to it failed");
    EXPECT_EQ(files.remove_writer(files.edit(), 10)->error, "a write to it failed");
    files.add_writer(files.edit(), 12, 100, 7);  // written again
    EXPECT_EQ(files.remove_writer(files.edit(), 12)->error, "");
}

TEST(OpenFiles, OverlayDescriptorsAreFoundByInodeWritersFirst) {
    OpenFiles files;
    EXPECT_FALSE(files.with_overlay_fd(100, false, [](int fd) { return fd; }));
    files.track_overlay(20, 100, false);
    EXPECT_EQ(files.with_overlay_fd(100, false, [](int fd) { return fd; }), 20);
    EXPECT_FALSE(files.with_overlay_fd(100, true, [](int fd) { return fd; }));  // no writer
    files.track_overlay(21, 100, true);
    files.track_overlay(22, 200, true);
    EXPECT_EQ(files.with_overlay_fd(100, false, [](int fd) { return fd; }), 21);
    EXPECT_EQ(files.with_overlay_fd(100, true, [](int fd) { return fd; }), 21);
    files.untrack_overlay(21);
    EXPECT_EQ(files.with_overlay_fd(100, false, [](int fd) { return fd; }), 20);
    files.untrack_overlay(20);
    EXPECT_FALSE(files.with_overlay_fd(100, false, [](int fd) { return fd; }));
    struct stat st {};
    EXPECT_FALSE(files.stat_overlay(100, &st));
}

TEST(OpenFiles, ReadsKeepWhatTheyWereAtOpen) {
    OpenFiles files;
    struct stat st {};
    st.st_size = 1234;
    files.add_read(30, st, true);
    auto r = files.read_of(30);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->st.st_size, 1234);
    EXPECT_TRUE(r->overlay);
    EXPECT_FALSE(files.read_of(31));
    files.remove_read(30);
    EXPECT_FALSE(files.read_of(30));
}

TEST(OpenFiles, FolderHandlesAreDistinctAndLiveUntilReleased) {
    OpenFiles files;
    auto a = std::make_unique<DirHandle>();
    a->path = "comfyui/loras";
    const std::uint64_t ha = files.add_dir(std::move(a));
    const std::uint64_t hb = files.add_dir(std::make_unique<DirHandle>());
    EXPECT_NE(ha, hb);
    ASSERT_NE(files.dir(ha), nullptr);
    EXPECT_EQ(files.dir(ha)->path, "comfyui/loras");
    files.remove_dir(ha);
    EXPECT_EQ(files.dir(ha), nullptr);
    EXPECT_NE(files.dir(hb), nullptr);
}

}  // namespace
}  // namespace modelfs::fs
