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
#include <string_view>
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
    struct Failure {
        std::string why;        // "changing while adopting ...", "cannot open ...: ..."
        bool changing = false;  // it changed each time it was read
    };
    std::map<std::filesystem::path, Failure> failed;  // real path -> why it was not hashed
    std::size_t cached = 0;                           // taken from STORE/adopt/hashes.jsonl
    std::size_t hashed = 0;                           // read now
    std::uint64_t hashed_bytes = 0;
};

// How many files hash_scans reads at once by default: twice the cores, at least 4.
unsigned default_readers();

// Hashes every model and sidecar of `scans` (a rerun skips what hashes.jsonl has with the same
// stat). Test hook: $MODELFS_ADOPT_TEST_KILL_AFTER=N raises SIGKILL after N files were hashed and
// cached, to test an interrupted run.
HashReport hash_scans(const std::filesystem::path& store_root,
                      const std::vector<InstallScan>& scans, const HashOptions& opts = {});

// ---- States and reasons ----------------------------------------------------------------------
// Kept as values; the words users see (and records hold) are made from them in one place each.

// Where an adopted install is (store/FORMAT.md "Adopted installs", States). Written in the record
// by name (state_name).
enum class RecordState {
    recorded,   // every file committed, the record durable; the switch may be partly done
    mounted,    // the view is mounted over models_dir, the backup holds the rest
    confirmed,  // `adopt --confirm` deleted what the store has from the backup
    unadopted,  // the plain folder is back; a later adopt starts afresh
};
std::string_view state_name(RecordState s);
std::optional<RecordState> parse_state(std::string_view s);
// The install is the store's (adopted, or being adopted): adopt must not scan or adopt it again.
constexpr bool holds_install(RecordState s) {
    return s != RecordState::unadopted;
}
// The view has replaced the models folder: what adopt moved is only in the store.
constexpr bool switched(RecordState s) {
    return s == RecordState::mounted || s == RecordState::confirmed;
}

// Why an install is not adopted now. The text users see is skip_text's.
enum class SkipReason {
    none,
    no_view,                // the tool has no built-in view
    second_install,         // a second install of one tool in one run
    other_install_adopted,  // another install of the tool is adopted in this store
    already_adopted,        // this install is adopted and its view is mounted
    models_refused,         // the scan refused the models folder (its words in `detail`)
    models_dir_mounted,     // the models folder is a mount point no record explains
    models_dir_link,        // the models folder is a symbolic link
};
struct Skip {
    SkipReason reason = SkipReason::none;
    std::string tool{};
    // The install's root (already_adopted), its models folder (models_dir_*), the other
    // install's root (other_install_adopted).
    std::filesystem::path path{};
    std::filesystem::path link_target{};       // models_dir_link
    RecordState state = RecordState::mounted;  // already_adopted
    std::string detail{};                      // models_refused
    explicit operator bool() const { return reason != SkipReason::none; }
};
std::string skip_text(const Skip& s);
// Already adopted is not a failure: adopt is meant to be run again safely.
constexpr bool skip_is_ok(SkipReason r) {
    return r == SkipReason::already_adopted;
}

// What adopt does with an install, given its record (if any) and whether its models folder is a
// mount point now.
struct RecordVerdict {
    Skip skip;            // set: not adopted now
    bool resume = false;  // finish the switch, or mount the view again, from the record
};
struct Record;
// `rec`: the install's record, null when it has none.
RecordVerdict record_verdict(const Record* rec, const Install& inst, bool models_dir_mounted);

// How a file that is not adopted (Action::left) stays where it is: picks its note's wording
// (left_note) and whether reports count it as not adopted. Written in the record by name.
enum class Left {
    none,           // not left (any other action)
    not_adopted,    // a problem (broken link, unreadable, incomplete, ...): stays in the backup
    outside,        // such a problem outside the models folder: left where it is
    kept_in_place,  // outside the models folder and nothing the store takes: stays where it is
};
std::string_view left_name(Left l);
std::optional<Left> parse_left(std::string_view s);
std::string left_note(Left l, const std::string& why);

// The `source` of a version adopt catalogued ("adopt:TOOL:VIEW_REL"), and the tool named in one
// (nullopt for a version from anywhere else): unadopt hands back what adopt of a tool brought.
std::string adopt_source(const std::string& tool, const std::string& view_rel);
std::optional<std::string> adopt_source_tool(std::string_view source);

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
    Left left = Left::none;  // with Action::left
    std::string note;        // why, for the report
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
    // Set: this install is not adopted now; `resume` when a record says an earlier run was
    // interrupted, or the view of an adopted install is not mounted.
    Skip skip;
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
    Left left = Left::none;
    std::string note;
};

struct Record {
    std::string id, tool, view;
    std::filesystem::path root, models_dir, backup, mountpoint;
    RecordState state = RecordState::recorded;
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
    enum class Result {
        adopted,        // committed and switched now (or an interrupted run finished)
        mounted_again,  // adopted before, its view mounted again
        skipped,        // see `skip`
        failed,
    };
    std::string id, tool;
    std::filesystem::path models_dir, backup;
    Result result = Result::failed;
    Skip skip;           // with Result::skipped
    std::string status;  // for the user: "adopted", skip_text, "failed: ..."
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
    enum class Result { unadopted, unadopted_before, failed };
    std::string id;
    Result result = Result::failed;
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
