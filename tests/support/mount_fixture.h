// A real `modelfs mount -f` for tests: mounted in a temp folder, always unmounted and reaped on
// destruction, whatever happened in the test.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <string>
#include <vector>

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

}  // namespace modelfs::testing
