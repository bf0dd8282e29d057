// `modelfs adopt`: hashing the files scan_install found (resumable, parallel), planning what
// happens to each (dry run report), committing them to the store, switching each tool's models
// folder to a view mount, and giving the plain folders back (unadopt). The on-disk format of
// STORE/adopt/ is in store/FORMAT.md ("Adopted installs").
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "modelfs/adopt/scan.h"
#include "modelfs/store/hash.h"
#include "modelfs/store/progress.h"
#include "modelfs/store/store.h"

namespace modelfs::adopt {

// ---- Hashing -------------------------------------------------------------------------------

struct HashOptions {
    unsigned jobs = 0;             // files read at once; 0 = default_readers()
    Progress* progress = nullptr;  // total/done bytes and items
};

struct HashedFile {
    FileDigests digests;
    // The stat the digests belong to (may differ from the scan's when the file changed since).
    std::uint64_t size = 0;
    std::int64_t mtime_ns = 0, ctime_ns = 0;
    dev_t dev = 0;
    ino_t ino = 0;
};

struct HashReport {
    // Key: ScannedFile::real (a file reached twice is hashed once).
    std::map<std::filesystem::path, HashedFile> files;
    // real path -> why it was not hashed ("changing while adopting", "cannot open: ...").
    std::map<std::filesystem::path, std::string> failed;
    std::size_t cached = 0;  // taken from STORE/adopt/hashes.jsonl
    std::size_t hashed = 0;  // read now
    std::uint64_t hashed_bytes = 0;
};

// How many files hash_scans reads at once by default: twice the cores, at least 4.
unsigned default_readers();

// Hashes every model and sidecar of `scans` (a rerun skips what hashes.jsonl has with the same
// stat). Test hook: $MODELFS_ADOPT_TEST_KILL_AFTER=N raises SIGKILL after N files were hashed and
// cached, to test an interrupted run.
HashReport hash_scans(const std::filesystem::path& store_root,
                      const std::vector<InstallScan>& scans, const HashOptions& opts = {});

// ---- Plan ------------------------------------------------------------------------------------

enum class Action {
    store,           // committed; the view shows it at exactly its path
    store_in_place,  // committed, stays where it is (outside the replaced folder)
    overlay,         // kept as a plain file of the view's overlay at its exact path
    left,            // not adopted, stays in the backup (broken link, unreadable, special)
    changing,        // changed while adopting: stays in the backup, not in the store
};
std::string_view action_name(Action a);
std::optional<Action> parse_action(std::string_view s);

struct PlannedFile {
    ScannedFile file;
    Action action = Action::left;
    std::optional<HashedFile> hash;  // models and sidecars
    bool keeper = false;             // the copy of its content that stays (see Plan)
    // The keeper's bytes are copied into the store rather than moved there (it stays where it
    // is, is reached through a link, is on another filesystem, has other hard links or another
    // owner: see detail::movable).
    bool copy = false;
    bool freed = false;  // its bytes are freed at confirm (a duplicate)
    std::string model;   // "category/name" for store actions
    bool pin = false;    // its view is pinned to the version it had (a clash)
    // Where the view shows it when that is not its own path (a model of a non-primary folder).
    std::string shown_at;
    std::string note;  // why, for the report
};

struct ToolTotals {
    std::size_t files = 0;       // scanned
    std::size_t stored = 0;      // store + store_in_place
    std::size_t dup_groups = 0;  // content groups with more than one file (any install)
    std::uint64_t bytes = 0;     // of stored files
    std::uint64_t bytes_freed = 0;
    std::uint64_t bytes_copied = 0;  // written into the store (keepers that are not moved)
    std::size_t overlay = 0, plain = 0, clashes = 0, not_adopted = 0, changing = 0;
};

struct InstallPlan {
    InstallScan scan;
    std::string id;                          // record id = the tool's view name
    std::vector<PlannedFile> files;          // in scan order
    std::vector<std::string> kept_in_place;  // folders outside models_dir, left where they are
    std::vector<std::string> notes;          // clashes, duplicates under other names, ...
    ToolTotals totals;
    // Non-empty: this install is not adopted now ("already adopted", "another a1111 install is
    // adopted in this store: ..."); `resume` when a record says an earlier run was interrupted.
    std::string skip;
    bool resume = false;
};

// One content with more than one file (hard links count once) in the installs, or with a file
// and a blob the store already has: the dry run lists every one.
struct DuplicateGroup {
    Sha256 sha256;
    std::uint64_t size = 0;  // of one copy
    std::vector<std::filesystem::path> files;
    std::size_t copies = 0;         // distinct inodes among `files`, plus the store's blob
    bool in_store = false;          // the store has the blob already
    std::uint64_t bytes_freed = 0;  // by this group, at `adopt --confirm`
};

struct Plan {
    std::vector<InstallPlan> installs;
    ToolTotals total;                        // duplicate groups counted once across installs
    std::vector<DuplicateGroup> duplicates;  // by SHA-256
};

// Groups by SHA-256 (hard links to one inode count once), picks each group's keeper (a blob the
// store has > the first replaced file adopt can move into the store > a file outside replaced
// folders, copied > the first replaced copy, copied) and decides every file's action. Looks at the
// store's catalog (clashes with stored models) and STORE/adopt/ records (already adopted) but
// changes nothing.
Plan make_plan(Store& store, std::vector<InstallScan> scans, const HashReport& hashes);

std::string plan_text(const Plan& plan);
nlohmann::json plan_json(const Plan& plan);

// ---- Records ---------------------------------------------------------------------------------

struct RecordFile {
    std::filesystem::path path, real;
    ScannedFile::Kind kind = ScannedFile::Kind::plain;
    std::string view_rel;
    bool replaced = false;
    std::string sha256;  // hex, empty when not hashed
    std::uint64_t size = 0;
    std::uint32_t mode = 0;
    std::int64_t mtime_ns = 0;
    std::string link_target;
    Action action = Action::left;
    std::string model, label;
    bool pinned = false;
    std::string shown_at;  // empty: at view_rel
    std::string note;
};

struct Record {
    std::string id, tool, view;
    std::filesystem::path root, models_dir, backup, mountpoint;
    std::string state;  // recorded, mounted, confirmed, unadopted
    std::int64_t created = 0, updated = 0;
    std::vector<RecordFile> files;
    // The folders below models_dir when adopt recorded the install (relative paths): unadopt
    // removes the empty ones the view's mount or unadopt itself made, and only those. Unknown
    // (nullopt) in records of a modelfs from before it was written: then none is removed.
    std::optional<std::vector<std::string>> dirs;
};

std::filesystem::path adopt_dir(const std::filesystem::path& store_root);
std::vector<Record> load_records(const std::filesystem::path& store_root);
std::optional<Record> load_record(const std::filesystem::path& store_root, const std::string& id);
// Atomic: tmp, fsync, rename, fsync of the folder.
void save_record(const std::filesystem::path& store_root, Record& r);
nlohmann::json record_json(const Record& r);
// What `Store::stats` needs of the adopted installs (FORMAT.md "Saving"): per model and content,
// the recorded files that the store's blob replaced, i.e. that are gone from the backup (moved
// into the store, deleted by confirm), in every record mounted or confirmed.
AdoptedFiles adopted_files(const std::filesystem::path& store_root);

// ---- Run -------------------------------------------------------------------------------------

struct RunOptions {
    // The modelfs program that mounts the views (`BINARY --store STORE mount --view V DIR`).
    std::filesystem::path binary = "/proc/self/exe";
    // Global options put before `mount` (`--config FILE`).
    std::vector<std::string> global_args;
    bool verify = false;  // after mounting, read every path back and compare SHA-256
    std::chrono::milliseconds mount_timeout{10000};
    Progress* progress = nullptr;  // cross-filesystem copies
};

struct InstallOutcome {
    std::string id, tool;
    std::filesystem::path models_dir, backup;
    std::string status;  // "adopted", "already adopted", "skipped: ...", "failed: ..."
    bool ok = false;
    std::size_t stored = 0, overlay = 0, left = 0, changing = 0;
    std::uint64_t bytes_to_free = 0;  // at confirm
    std::string fstab_line, systemd_unit;
    std::vector<std::string> notes;
};
struct RunReport {
    std::vector<InstallOutcome> installs;
    bool ok() const;
};

// Commits, records and switches every install of the plan (installs with `skip` set are only
// reported; with `resume`, the switch continues from the record). Never loses a file: a failure
// before the mount is up renames the backup back. Test hook: $MODELFS_ADOPT_TEST_KILL_AFTER_RECORD
// raises SIGKILL right after the record is written, before the switch.
RunReport run_plan(Store& store, Plan& plan, const RunOptions& opts = {});

// Is a FUSE file system mounted exactly at `dir` (per /proc/self/mountinfo)?
bool is_mountpoint(const std::filesystem::path& dir);

// ---- Confirm / unadopt ----------------------------------------------------------------------

struct ConfirmOutcome {
    std::string id;
    std::size_t deleted = 0;
    std::uint64_t bytes_freed = 0;  // of deleted files whose last link went
    std::vector<std::string> kept;  // backup files left, each with why
    std::string status;
    bool ok = false;
};
// For every record in state `mounted` (only those whose root or models_dir is in `roots`, when
// not empty): deletes the backup's files whose content is in the store or the overlay.
std::vector<ConfirmOutcome> confirm(Store& store, const std::vector<std::filesystem::path>& roots);

struct UnadoptOutcome {
    std::string id;
    std::string status;
    bool ok = false;
    std::size_t restored = 0;  // files back as plain files
    std::size_t added = 0;     // files added through the mount since adopting
    std::vector<std::string> notes;
};
// Gives the plain folders back (see store/FORMAT.md and the design in the header comment of
// unadopt.cpp). A busy mount changes nothing and says which tool to stop.
std::vector<UnadoptOutcome> unadopt(Store& store, const std::vector<std::filesystem::path>& roots);

}  // namespace modelfs::adopt
