// `modelfs STORE MOUNTPOINT -o OPTIONS`: the form mount.fuse3 runs for an fstab entry or
// `mount -t fuse.modelfs STORE MOUNTPOINT -o OPTIONS`. Pure functions, so the unit tests can
// drive them without mounting.
#pragma once

#include <filesystem>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace modelfs::cli {

// Bad helper arguments; the message names the option and what to write instead.
class MountArgsError : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

struct HelperMount {
    std::string store;
    std::string mountpoint;
    std::string view;         // view=NAME
    std::string config_file;  // config=FILE
    std::string lock_file;    // lock=FILE
    bool allow_other = false;
    bool debug = false;       // libfuse's request log
    bool foreground = false;  // for systemd units: Type=simple wants the daemon in front
    bool nonempty = false;    // mount over a folder that has files (they are hidden meanwhile)
    // Kernel mount flags passed on to libfuse (ro, noexec, noatime, ...).
    std::vector<std::string> kernel_flags;
    std::string read_backend;  // read_backend=auto|splice (fs::MountOptions::read_backend)
};

// Whether argv (after the program name) is the helper form rather than a subcommand: two
// positional words first, the first not a subcommand's name and either a path (has a '/', or
// exists) or followed by -o.
bool is_helper_call(const std::vector<std::string>& args,
                    const std::vector<std::string>& subcommands);

// Parses `STORE MOUNTPOINT [-o OPTS]...` (also `-oOPTS`). Throws MountArgsError.
HelperMount parse_helper_args(const std::vector<std::string>& args);

// Whether /etc/fuse.conf's text enables user_allow_other (a line of its own, not commented out).
bool fuse_conf_allows_other(std::string_view fuse_conf);

// Empty when `mountpoint` can take a mount; otherwise what is wrong with it and what to do.
// libfuse3 mounts over a file (every access then fails with EIO), over a folder with files (hiding
// them) and over another mount (stacking a second daemon), all without a word.
std::string mountpoint_problem(const std::filesystem::path& mountpoint, bool allow_nonempty);

// The processes whose open files, cwd or root lie under `mountpoint` ("1234 (python3)"), read
// from /proc; only the ones this user may inspect.
std::vector<std::string> processes_using(const std::filesystem::path& mountpoint);

// Where `store` is mounted now (per /proc/self/mountinfo: fuse.modelfs mounts whose source is
// the store), and how each serves reads: its user.modelfs.backend ("passthrough", "splice"), or
// "unknown" when this user may not look (another user's mount without allow_other).
struct StoreMount {
    std::filesystem::path mountpoint;
    std::string read_backend;
};
std::vector<StoreMount> mounts_of_store(const std::filesystem::path& store);

// Empty when allow_other may be used; otherwise what is wrong and how to fix it.
std::string allow_other_problem(bool is_root, bool fuse_conf_readable, std::string_view fuse_conf);

}  // namespace modelfs::cli
