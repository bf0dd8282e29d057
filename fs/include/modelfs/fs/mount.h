// The FUSE daemon: mounts a store with per-tool views and serves it until unmounted.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace modelfs::fs {

struct MountOptions {
    std::filesystem::path store;  // the store to serve
    std::filesystem::path mountpoint;
    std::string view;  // one layout at the mount point; empty: every built-in
                       // view as a top-level folder, plus by-hash/
    bool foreground = false;
    bool allow_other = false;
    bool debug = false;  // libfuse's request log
};

// Mounts, then (unless foreground) detaches, and serves requests until the filesystem is
// unmounted or the process gets SIGINT/SIGTERM/SIGHUP, then unmounts cleanly. Returns an exit code.
// Throws StoreError for problems found before mounting (no store, unknown view).
int serve_mount(const MountOptions& opts);

// Unmounts a modelfs mount point (fusermount3 -u). Returns an exit code; messages on stderr.
int unmount(const std::filesystem::path& mountpoint);

}  // namespace modelfs::fs
