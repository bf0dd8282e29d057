// write_file_atomically on real files: the content and mode it leaves, no temporary file behind,
// a stale temporary file replaced (never followed as a link), and a failed rename leaving the
// target as it was.
#include "modelfs/store/atomic_file.h"

#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "modelfs/store/errors.h"
#include "support/test_env.h"

namespace modelfs {
namespace {

namespace stdfs = std::filesystem;
namespace mt = modelfs::testing;

class AtomicFileTest : public ::testing::Test {
  protected:
    mt::TempDir dir_{"modelfs-atomic"};
    stdfs::path file_ = dir_ / "record.json";
    stdfs::path tmp_ = stdfs::path(file_.string() + ".tmp" + std::to_string(::getpid()));

    std::size_t entries() const {
        return static_cast<std::size_t>(std::distance(stdfs::directory_iterator(dir_.path()), {}));
    }
};

unsigned mode_of(const stdfs::path& p) {
    struct stat st {};
    EXPECT_EQ(::lstat(p.c_str(), &st), 0) << p;
    return st.st_mode & 07777;
}

TEST_F(AtomicFileTest, CreatesTheFileWithItsModeAndNothingElse) {
    write_file_atomically(file_, "{\"a\": 1}\n", 0600);
    EXPECT_EQ(mt::read_file(file_), "{\"a\": 1}\n");
    EXPECT_EQ(mode_of(file_), 0600u);
    EXPECT_EQ(entries(), 1u);
}

TEST_F(AtomicFileTest, ReplacesAnExistingFileWhole) {
    mt::write_text_file(file_, std::string(10000, 'x'));
    write_file_atomically(file_, "short");
    EXPECT_EQ(mt::read_file(file_), "short");
    EXPECT_EQ(entries(), 1u);
}

TEST_F(AtomicFileTest, AStaleTemporaryFileIsReplacedNotReused) {
    mt::write_text_file(tmp_, "left by a crashed writer, longer than the new text");
    ASSERT_EQ(::chmod(tmp_.c_str(), 0666), 0);
    write_file_atomically(file_, "new", 0600);
    EXPECT_EQ(mt::read_file(file_), "new");
    EXPECT_EQ(mode_of(file_), 0600u);  // not the stale file's mode
    EXPECT_FALSE(stdfs::exists(tmp_));
}

TEST_F(AtomicFileTest, ALinkInPlaceOfTheTemporaryFileIsNotFollowed) {
    mt::TempDir elsewhere{"modelfs-atomic-target"};
    const stdfs::path target = elsewhere / "victim";
    mt::write_text_file(target, "keep me");
    stdfs::create_symlink(target, tmp_);
    write_file_atomically(file_, "new");
    EXPECT_EQ(mt::read_file(target), "keep me");
    EXPECT_EQ(mt::read_file(file_), "new");
    EXPECT_FALSE(stdfs::is_symlink(file_));
}

TEST_F(AtomicFileTest, AFailedRenameLeavesTheTargetAndNoTemporaryFile) {
    // A non-empty folder cannot be replaced by a file: the rename step fails.
    stdfs::create_directory(file_);
    mt::write_text_file(file_ / "inside", "kept");
    try {
        write_file_atomically(file_, "new");
        FAIL() << "expected a StoreError";
    } catch (const StoreError& e) {
        EXPECT_NE(std::string(e.what()).find(file_.string()), std::string::npos) << e.what();
    }
    EXPECT_EQ(mt::read_file(file_ / "inside"), "kept");
    EXPECT_FALSE(stdfs::exists(tmp_));
}

TEST_F(AtomicFileTest, AMissingFolderIsAnErrorNamingThePath) {
    const stdfs::path nowhere = dir_ / "no-such-folder" / "x.json";
    try {
        write_file_atomically(nowhere, "x");
        FAIL() << "expected a StoreError";
    } catch (const StoreError& e) {
        EXPECT_NE(std::string(e.what()).find("no-such-folder"), std::string::npos) << e.what();
    }
}

}  // namespace
}  // namespace modelfs
