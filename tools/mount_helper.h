// `modelfs STORE MOUNTPOINT -o OPTIONS`: the form mount.fuse3 runs for an fstab entry or
// `mount -t fuse.modelfs STORE MOUNTPOINT -o OPTIONS`. Pure functions, so the unit tests can
// drive them without mounting.
#pragma once

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
    // Kernel mount flags passed on to libfuse (ro, noexec, noatime, ...).
    std::vector<std::string> kernel_flags;
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

// Empty when allow_other may be used; otherwise what is wrong and how to fix it.
std::string allow_other_problem(bool is_root, bool fuse_conf_readable, std::string_view fuse_conf);

}  // namespace modelfs::cli
