// Opening paths in trees another user controls (an install, a Hugging Face or Ollama cache, a
// folder to import) when modelfs runs as root. The one rule, used by adopt, unadopt and every
// import:
//
//   1. No symlink is followed in any component of a path below the tree's root: paths are
//      resolved under an fd with openat2(RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH |
//      RESOLVE_NO_MAGICLINKS) (per-component openat(O_NOFOLLOW) on kernels without openat2), and
//      folders are listed through the fd that was opened, never through a path string that could
//      be swapped for a link between the check and the use. A recorded absolute path (an
//      adoption record's) is resolved the same way from "/": a link anywhere in it refuses it.
//   2. When euid is 0 and the tree is someone else's (SUDO_UID when set, else the owner of the
//      tree's root), files are judged as that user (ActingUser): a file is only taken when the
//      user could read it (and, for adopt/unadopt, change it), by its mode bits against the
//      user's uid and groups on the fstat of the opened fd. ACLs are not consulted, so a file an
//      ACL alone opens to the user is refused, never the other way round.
//   3. Anything refused is named with the reason and skipped; it never fails the whole run.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "modelfs/store/unique_fd.h"

namespace modelfs {

// Opens `rel` (relative, no ".." leaving `dirfd`) under `dirfd` without following any symlink
// on the way, the last component included. `flags` are open(2) flags (O_CLOEXEC is added).
// Returns an invalid fd with errno set on failure: ELOOP for a link on the way, EXDEV for a
// path leaving `dirfd`.
UniqueFd open_beneath(int dirfd, const std::filesystem::path& rel, int flags);

// Opens the absolute path `abs` from "/" with no symlink in any component (rule 1). Same
// failures as open_beneath.
UniqueFd open_no_symlinks(const std::filesystem::path& abs, int flags);

// Opens the folder `abs` like open_no_symlinks (O_PATH), making the missing folders on the way
// (mkdirat, `mode`) one at a time under the fd of the folder above: never through a link.
UniqueFd make_dirs_no_symlinks(const std::filesystem::path& abs, mode_t mode = 0755);

// The entries of the folder open at `dirfd` ("." and ".." left out), sorted, each with its
// lstat (fstatat AT_SYMLINK_NOFOLLOW). The fd is duplicated, `dirfd` stays open and usable.
struct DirEntry {
    std::string name;
    struct stat st {};
    bool stat_ok = false;
};
std::optional<std::vector<DirEntry>> list_dir(int dirfd, int* err = nullptr);

// A user root acts for (rule 2).
struct ActingUser {
    uid_t uid = 0;
    gid_t gid = 0;
    std::vector<gid_t> groups;  // supplementary groups (getgrouplist), gid included
    std::string name;           // for messages: "alice (uid 1001)"

    // std::nullopt when there is nobody to act for: euid is not 0 (the kernel checks every
    // access as the caller already), or the user found is root itself. Else SUDO_UID when set
    // to another user, else the owner of `tree_root` (followed to the folder it names).
    static std::optional<ActingUser> for_tree(const std::filesystem::path& tree_root);
    static ActingUser for_uid(uid_t uid);

    bool can_read(const struct stat& st) const;
    // A folder this user could list and enter.
    bool can_list(const struct stat& st) const;
    // Owns it, or may write it by its mode bits.
    bool can_change(const struct stat& st) const;

    // Why this user may not have the file or folder `st` describes (`what` names it), or
    // std::nullopt. `change` also asks for can_change. Folders need can_list.
    std::optional<std::string> refusal(const struct stat& st, const std::string& what,
                                       bool change = false) const;
};

// The reason text for a failed open_beneath/open_no_symlinks of `what`, errno `e`.
std::string open_failure(const std::string& what, int e);

}  // namespace modelfs
