// Shared plumbing of the `modelfs` subcommands: global options, output, exit codes.
#pragma once

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>

#include "config.h"
#include "modelfs/store/errors.h"
#include "modelfs/store/escape.h"
#include "modelfs/store/progress.h"
#include "modelfs/store/store.h"
#include "modelfs/store/units.h"

namespace modelfs::fs {
struct MountOptions;  // modelfs/fs/mount.h
}

namespace modelfs::cli {

// Exit codes: one meaning each, the same in every subcommand. kExitCodes words them for --help
// and the man page; README.md's table says the same.
enum Exit : int {
    kOk = 0,
    kFailed = 1,         // some items failed, or problems were found
    kUsage = 2,          // bad arguments (an unknown command, option, view or category), bad config
    kNotFound = 3,       // no such model, hash or path; a pattern that matched nothing
    kNoStore = 4,        // store missing, not a store, or written by a newer modelfs
    kInterrupted = 130,  // `fetch` stopped by SIGINT/SIGTERM; partial downloads resume later
};

struct ExitCodeText {
    Exit code;
    const char* meaning;
};
inline constexpr ExitCodeText kExitCodes[] = {
    {kOk, "ok"},
    {kFailed, "something failed (an import, a download, a corrupt blob found, a busy umount)"},
    {kUsage,
     "usage error: unknown command, option, view or category; bad config file; a mount "
     "point that is a file, not empty or already mounted"},
    {kNotFound, "not found: no such model, hash or path, or nothing matched the pattern"},
    {kNoStore, "no usable store (missing, not a store, or written by a newer modelfs)"},
    {kInterrupted, "fetch interrupted (Ctrl-C, SIGTERM); the next fetch resumes"},
};

struct Globals {
    std::string store;        // --store or $MODELFS_STORE; empty: the config's, else the default
    std::string config_file;  // --config; empty: looked up (see find_config)
    bool json = false;
    int verbose = 0;
    bool quiet = false;

    std::filesystem::path store_path() const;
    Store open_store() const;
    // The config file, read on first use rather than up front, so that commands which need none
    // (umount) still work while it is broken. Throws ConfigError.
    const Config& config() const;

  private:
    mutable std::optional<Config> config_;
};

// Thrown by subcommands for argument problems found after parsing.
struct UsageError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// A subcommand registers itself: adds its options to `app` and returns what to run.
using Runner = std::function<int()>;

void add_init(CLI::App& app, Globals& g, Runner& run);
void add_import(CLI::App& app, Globals& g, Runner& run);
void add_ls(CLI::App& app, Globals& g, Runner& run);
void add_show(CLI::App& app, Globals& g, Runner& run);
void add_verify(CLI::App& app, Globals& g, Runner& run);
void add_gc(CLI::App& app, Globals& g, Runner& run);
void add_stats(CLI::App& app, Globals& g, Runner& run);
void add_tensor_commands(CLI::App& app, Globals& g, Runner& run);  // dedupe, materialise
void add_mount(CLI::App& app, Globals& g, Runner& run);
// `modelfs STORE MOUNTPOINT -o OPTIONS`, as mount.fuse3 runs it (args: argv without the program).
int run_helper_mount(Globals& g, const std::vector<std::string>& args);
void add_views(CLI::App& app, Globals& g, Runner& run);
void add_add(CLI::App& app, Globals& g, Runner& run);
void add_fetch(CLI::App& app, Globals& g, Runner& run);
void add_status(CLI::App& app, Globals& g, Runner& run);
void add_evict(CLI::App& app, Globals& g, Runner& run);
// Versions (cmd_versions.cpp): versions, use, rollback, pin, unpin, retain.
void add_version_commands(CLI::App& app, Globals& g, Runner& run);
// Lock files (cmd_lock.cpp): lock, apply, locks, unlock.
void add_lock_commands(CLI::App& app, Globals& g, Runner& run);
// `modelfs config` (cmd_config.cpp): the effective settings and where each came from.
void add_config(CLI::App& app, Globals& g, Runner& run);
// adopt, unadopt, adopted (cmd_adopt.cpp): installed tools' models folders into the store and back.
void add_adopt_commands(CLI::App& app, Globals& g, Runner& run);
// remote add/ls/rm, push, pull (cmd_remote.cpp): a team store on S3.
void add_remote_commands(CLI::App& app, Globals& g, Runner& run);

// Output helpers.
// Never fails on a name that is not UTF-8 (dump_json, modelfs/store/escape.h).
void print_json(const nlohmann::json& j);
// human_bytes: modelfs/store/units.h.
// terminal_safe (modelfs/store/escape.h) for names and texts that users, files or servers chose.
std::string human_count(std::uint64_t n);  // 2.57 B, 123.4 M
std::string format_time(std::int64_t unix_seconds);
Category parse_category_arg(const std::string& s);
// The view a --view argument names (a built-in, an alias of one, or a config layout; any case),
// as a mount would show it. Throws UsageError listing the known views.
layouts::ViewLayout view_arg(const Globals& g, const std::string& name);
// views_to_serve, with an unknown view name as a UsageError (exit 2, as for every --view).
std::vector<layouts::ViewLayout> views_or_usage(const fs::MountOptions& o);
// Reads a whole file named on the command line; StoreError not_found / io naming it.
std::string read_text_file(const std::filesystem::path& p);

// Shows a progress bar on stderr while alive, when stderr is a terminal and output is not quiet;
// otherwise does nothing.
class ProgressBar {
  public:
    ProgressBar(const Globals& g, std::string label);
    ~ProgressBar();
    ProgressBar(const ProgressBar&) = delete;
    ProgressBar& operator=(const ProgressBar&) = delete;
    Progress* get() { return &progress_; }

  private:
    void draw(bool final);
    Progress progress_;
    std::string label_;
    bool enabled_ = false;
    std::atomic<bool> stop_{false};
    std::thread thread_;
    std::chrono::steady_clock::time_point start_;
};

}  // namespace modelfs::cli
