// The FUSE daemon: mounts a store with per-tool views and serves it until unmounted.
#pragma once

#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "modelfs/fetch/config.h"
#include "modelfs/layouts/view_layout.h"
#include "modelfs/store/lock_file.h"

namespace modelfs::fs {

// What a SIGHUP found in the config file.
struct Reload {
    std::string message;  // logged as it is
    // The layouts the config defines now (MountOptions::layouts). The mount serves them from then
    // on: new views appear, removed ones go, changed folders move their models. std::nullopt:
    // keep the views (the config has an error). The daemon says whether anything changed.
    std::optional<std::vector<layouts::ViewLayout>> layouts;
};

struct MountOptions {
    std::filesystem::path store;  // the store to serve
    std::filesystem::path mountpoint;
    std::string view;  // one layout at the mount point; empty: every built-in
                       // view as a top-level folder, plus by-hash/
    bool foreground = false;
    bool allow_other = false;
    bool debug = false;  // libfuse's request log
    // Kernel mount flags from an fstab entry (ro, noexec, noatime, ...), passed on to libfuse.
    std::vector<std::string> kernel_flags;
    // How reads are served: "auto" (or empty): FUSE passthrough where the kernel and the
    // daemon's capabilities allow it, else the splice backend; "splice": always the daemon
    // (fs/src/read_backend.h). $MODELFS_READ_BACKEND overrides it.
    std::string read_backend;
    // User-defined layouts (from the config file). A layout named like a built-in one replaces
    // it; others are added. Root mode shows them all; --view picks any of them by name.
    std::vector<layouts::ViewLayout> layouts;
    // How files of remote models are downloaded when first opened (limits, credentials).
    fetch::FetchConfig fetch;
    // `--lock FILE`: every view shows exactly the lock's models, at the locked versions,
    // whatever is current or pinned (a locked version the store lacks is logged and left out).
    std::optional<LockFile> lock;
    // Called on SIGHUP (systemctl reload): re-reads the config. Unset: SIGHUP only logs that
    // there is nothing to reload.
    std::function<Reload()> on_reload;
};

// The layouts a mount with these options shows: the built-ins merged with opts.layouts, or just
// the one --view names. Throws StoreError (bad_input) for an unknown view, listing the known ones.
std::vector<layouts::ViewLayout> views_to_serve(const MountOptions& opts);

// Mounts, then (unless foreground) detaches, and serves requests until the filesystem is
// unmounted or the process gets SIGINT/SIGTERM, then unmounts cleanly. SIGHUP does not unmount:
// it calls on_reload, applies the layouts it returns and logs what changed. Returns an exit code.
// Throws StoreError for problems found before mounting (no store, unknown view).
int serve_mount(const MountOptions& opts);

// A file written through a mount that stays a plain file of its view although its path is a
// model's: cut off by a crash, incomplete, a write failed (fs/src/overlay_writes.h).
struct UnstoredFile {
    std::string path;      // in the mount, from its root ("comfyui/checkpoints/x.safetensors")
    std::string reason;    // why, as the log said it
    bool writing = false;  // a live process is writing it now: not (yet) a problem
};
// Such files of a store, for `modelfs status` (the views' overlay folders, walked once).
std::vector<UnstoredFile> unstored_files(const std::filesystem::path& store);

// Unmounts a modelfs mount point (fusermount3 -u). Returns an exit code; fusermount3's messages
// go to stderr, or into `err` when given (so the caller can explain a busy mount).
int unmount(const std::filesystem::path& mountpoint, std::string* err = nullptr);

}  // namespace modelfs::fs
