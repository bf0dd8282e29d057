// A real `modelfs mount -f` for tests: mounted in a temp folder, always unmounted and reaped on
// destruction, whatever happened in the test.
#pragma once

#include <gtest/gtest.h>
#include <sys/types.h>

#include <filesystem>
#include <string>
#include <vector>

#include "support/test_env.h"

namespace modelfs::testing {

// Is a modelfs FUSE filesystem mounted exactly at `mnt` (per /proc/self/mountinfo)?
bool is_mounted(const std::filesystem::path& mnt);

// A `modelfs mount -f` child; unmounted and reaped on destruction whatever happened.
class Mount {
  public:
    Mount(const std::filesystem::path& store, const std::filesystem::path& mnt,
          std::vector<std::string> extra = {});
    ~Mount();
    Mount(const Mount&) = delete;
    Mount& operator=(const Mount&) = delete;
    bool ok() const { return ok_; }
    // Unmounts; returns the daemon's exit code (-1 when it had to be killed).
    int stop();
    pid_t pid() const { return pid_; }

  private:
    std::filesystem::path mnt_;
    std::filesystem::path log_;
    pid_t pid_ = 0;
    bool ok_ = false;
    int exit_ = -1;
};

// A fixture's start for tests of a mount: a store made by `modelfs init` in a temp folder named
// after `tag`, and the path of a mount point beside it (not made). Skips without /dev/fuse. A
// fixture that adds to SetUp calls this one first and returns when it skipped or failed.
class StoreMountTest : public ::testing::Test {
  protected:
    explicit StoreMountTest(const std::string& tag) : dir(tag) {}
    void SetUp() override;
    // Imports `src` (`modelfs import`), failing the test when the import fails.
    void import_folder(const std::filesystem::path& src);
    // Writes src/checkpoints/base.safetensors (sd15_checkpoint(1)) and imports src: the one model
    // many mount tests start from.
    void import_base_checkpoint(const std::filesystem::path& src);

    TempDir dir;
    std::filesystem::path store = dir / "store";
    std::filesystem::path mnt = dir / "mnt";
};

// Prints a daemon's log file on stderr when the running test has failed, so its failure shows what
// the daemon said.
void print_log_if_failed(const std::filesystem::path& log);

// The extended attribute `name` of `f`, or "<the error>" when reading it fails.
std::string xattr(const std::filesystem::path& f, const char* name);

}  // namespace modelfs::testing
