// The modelfs config file (TOML): a default store and user-defined view layouts.
//
//   store = "/srv/models"
//   [[layout]]
//   name = "mytool"
//   [[layout.folder]]
//   path = "loras"
//   category = "lora"
//
//   [fetch]                       downloads (`modelfs fetch`, a mount's first opens)
//   jobs = 4
//   limit_rate = "50M"
//   cache_max_size = "500G"
//   [s3]
//   endpoint = "http://127.0.0.1:7480"
//   [versions]
//   keep = 3                      versions `modelfs retain` keeps per model
//   [views.comfyui]               a built-in view's settings (a [[layout]] takes
//   show_versions = true          show_versions = true itself)
//
// Several files may apply: --config or $MODELFS_CONFIG names the only one; otherwise the user's
// file, the store's STORE/config.toml and /etc/modelfs/config.toml are merged key by key, the
// first of these that sets a key winning. Every setting then resolves the same way: command-line
// flag > config file > environment variable > built-in default.
//
// Kept apart from the subcommands (and from CLI11) so the unit tests can drive it directly.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "modelfs/fetch/config.h"
#include "modelfs/layouts/view_layout.h"

namespace modelfs::cli {

// A config file that cannot be used: missing (when named explicitly), unreadable, not TOML, an
// unknown key, a bad layout. The message starts with the file and, where known, the line and
// column: "/home/u/.config/modelfs/config.toml:7:1: layout 'mytool': ...".
class ConfigError : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

// The [fetch] and [s3] tables as written; what a key leaves unset comes from the environment or
// the built-in default (see fetch_config).
struct FetchSettings {
    std::optional<unsigned> jobs;  // blobs downloading at once
    std::optional<unsigned> connections_per_blob, max_per_host, max_connections, retries;
    std::optional<std::uint64_t> limit_rate;      // bytes per second; 0: none
    std::optional<std::uint64_t> cache_max_size;  // bytes; 0: no quota
    std::optional<unsigned> transfer_timeout;     // seconds per request and chunk
    std::optional<std::string> hf_endpoint, hf_token;
    std::optional<std::string> s3_endpoint, s3_region, s3_access_key, s3_secret_key;
};

struct Config {
    // The default store; absolute when `source` is (a relative path in the file is taken
    // relative to the file's folder, "~/" to $HOME).
    std::optional<std::filesystem::path> store;
    // In file order, each validated by ViewLayout::from_json.
    std::vector<modelfs::layouts::ViewLayout> layouts;
    FetchSettings fetch;
    std::optional<unsigned> versions_keep;  // [versions] keep
    // [views.NAME] show_versions, by NAME as written (a built-in's or a layout's name).
    std::map<std::string, bool> show_versions;
    // The file these came from (the first of `files`); empty when there was none.
    std::filesystem::path source;
    // Every file merged into this, the one that wins first.
    std::vector<std::filesystem::path> files;
    // Which file set each key ("store", "fetch.jobs", "views.comfyui.show_versions",
    // "layout.mytool").
    std::map<std::string, std::filesystem::path> origins;
};

// How an environment variable is read; tests pass their own.
using EnvFn = std::function<std::string(const char* name)>;
std::string process_env(const char* name);

// `higher` on top of `lower`, key by key; a layout of `higher` replaces one of the same name.
Config merge_config(Config lower, const Config& higher);

// The layouts a mount gets: the config's, plus the built-ins whose settings the config changes
// ([views.NAME]). Throws ConfigError for a [views.NAME] that names no view.
std::vector<modelfs::layouts::ViewLayout> mount_layouts(const Config& config);

// `modelfs retain`'s number of versions kept per model and where it came from: --keep > config
// [versions] keep > $MODELFS_KEEP_VERSIONS > 3. Throws ConfigError for a bad variable.
struct KeepVersions {
    unsigned value = 3;
    std::string origin;  // "flag --keep", "file /etc/...", "env MODELFS_KEEP_VERSIONS", "default"
};
KeepVersions keep_versions(const Config& config, std::optional<unsigned> flag,
                           const EnvFn& env = process_env);

// One effective setting, as `modelfs config` prints it.
struct EffectiveSetting {
    std::string key;     // "store", "fetch.jobs", "s3.secret_key", "views.comfyui.show_versions"
    std::string value;   // secrets masked; empty: unset
    std::string origin;  // "flag --store", "file PATH", "env NAME", "default"
    bool secret = false;
};
// Every setting with its value and origin. `store_flag`: --store as given (empty: none).
std::vector<EffectiveSetting> effective_settings(const Config& config,
                                                 const std::string& store_flag,
                                                 const EnvFn& env = process_env);

// A byte count as users write it: "1234", "50M", "1.5G", "2GiB", "700 KB"; K, M, G, T are powers
// of 1024 (as in curl --limit-rate). A trailing "/s" is accepted for rates. std::nullopt when it is
// none of these or does not fit in 64 bits.
std::optional<std::uint64_t> parse_size(std::string_view text);

// The downloader's built-in defaults with the environment's variables applied (HF_ENDPOINT,
// HF_TOKEN, AWS_*, MODELFS_TRANSFER_TIMEOUT: each setting's `env`). Throws ConfigError naming the
// variable for a value that is not what the setting expects.
fetch::FetchConfig environment_fetch_config(const EnvFn& env = process_env);

// The downloader's settings for this config: `base` (environment_fetch_config()), then the config
// file's [fetch] and [s3] on top. Command-line flags go on top of the result. The CLI's fetch
// commands and the mount share it.
fetch::FetchConfig fetch_config(const Config& config,
                                fetch::FetchConfig base = environment_fetch_config());

// One setting, as the table in config.cpp has it (one row each: adding a setting is adding a
// row there and its member in Config or FetchSettings).
struct SettingInfo {
    std::string key{};               // "fetch.jobs": `jobs` in [fetch]; "store": top level
    std::vector<std::string> env{};  // variables that set it, the first that is set winning
    std::string example{};           // a value as the file writes it (TOML): 4, "50M"
    std::string description{};       // what it is for, one line
    std::string builtin{};           // the default, as `modelfs config` prints it
    bool secret = false;             // printed as ******** by `modelfs config`
    bool in_file = true;             // false: only the environment sets it (s3.session_token)
    std::string expected{};          // what a value must be, as error messages say it
};
// Every setting, in the order `modelfs config` prints them.
const std::vector<SettingInfo>& settings();
// The settings in words, for `modelfs config --help` (and so the man page).
std::string settings_help();

// Where to look. from_environment() reads the process environment; tests fill it in by hand.
struct ConfigLookup {
    std::optional<std::filesystem::path> explicit_path;  // --config
    std::string env_config;                              // $MODELFS_CONFIG
    std::string xdg_config_home;                         // $XDG_CONFIG_HOME
    std::string home;                                    // $HOME
    std::filesystem::path system_path = "/etc/modelfs/config.toml";
    // The store whose config.toml is read (between the user's file and /etc); unset: none.
    std::optional<std::filesystem::path> store_dir;

    static ConfigLookup from_environment(std::optional<std::filesystem::path> explicit_path);
};

// The file to read: --config, else $MODELFS_CONFIG, else $XDG_CONFIG_HOME/modelfs/config.toml
// (~/.config/modelfs/config.toml without it), else /etc/modelfs/config.toml. The first two name
// a file explicitly, so a missing one throws ConfigError; the others are used when they exist.
// std::nullopt when there is none.
std::optional<std::filesystem::path> find_config(const ConfigLookup& lookup);

// Parses config text; `source` names it in error messages and anchors a relative `store`.
Config parse_config(std::string_view text, const std::filesystem::path& source);
// Reads and parses one file.
Config load_config_file(const std::filesystem::path& file);
// Every file that applies, the one that wins first: the file find_config names when that is
// explicit (--config, $MODELFS_CONFIG); else those of the user's file, STORE/config.toml (with
// lookup.store_dir) and the system file that exist.
std::vector<std::filesystem::path> config_files(const ConfigLookup& lookup);
// config_files, each loaded and merged (merge_config); a default Config (no store, no layouts)
// when no file exists. The store's own file must not set `store` (ConfigError).
Config load_config(const ConfigLookup& lookup);

// The store to use: `given` (--store) when not empty, else the config's `store`, else
// Store::default_path() ($MODELFS_STORE, else the XDG default).
std::filesystem::path resolve_store_path(const std::string& given, const Config& config);

}  // namespace modelfs::cli
