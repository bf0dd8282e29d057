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
//
// Kept apart from the subcommands (and from CLI11) so the unit tests can drive it directly.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "modelfs/fetch/config.h"
#include "modelfs/fs/view_layout.h"

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
    std::optional<std::string> hf_endpoint;
    std::optional<std::string> s3_endpoint, s3_region, s3_access_key, s3_secret_key;
};

struct Config {
    // The default store; absolute when `source` is (a relative path in the file is taken
    // relative to the file's folder, "~/" to $HOME).
    std::optional<std::filesystem::path> store;
    // In file order, each validated by ViewLayout::from_json.
    std::vector<modelfs::fs::ViewLayout> layouts;
    FetchSettings fetch;
    // The file these came from; empty when there was none.
    std::filesystem::path source;
};

// A byte count as users write it: "1234", "50M", "1.5G", "2GiB", "700 KB"; K, M, G, T are powers
// of 1024 (as in curl --limit-rate). A trailing "/s" is accepted for rates. std::nullopt when it is
// none of these or does not fit in 64 bits.
std::optional<std::uint64_t> parse_size(std::string_view text);

// The downloader's settings for this config: `base` (the built-in defaults with HF_*, AWS_*
// applied: FetchConfig::from_environment()), then the config file's [fetch] and [s3] on top.
// Command-line flags go on top of the result. The CLI's fetch commands and the mount share it.
fetch::FetchConfig fetch_config(const Config& config,
                                fetch::FetchConfig base = fetch::FetchConfig::from_environment());

// Where to look. from_environment() reads the process environment; tests fill it in by hand.
struct ConfigLookup {
    std::optional<std::filesystem::path> explicit_path;  // --config
    std::string env_config;                              // $MODELFS_CONFIG
    std::string xdg_config_home;                         // $XDG_CONFIG_HOME
    std::string home;                                    // $HOME
    std::filesystem::path system_path = "/etc/modelfs/config.toml";

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
// find_config, then load_config_file; a default Config (no store, no layouts) when no file exists.
Config load_config(const ConfigLookup& lookup);

// The store to use: `given` (--store or $MODELFS_STORE, already merged by the option parser)
// when not empty, else the config's `store`, else Store::default_path().
std::filesystem::path resolve_store_path(const std::string& given, const Config& config);

}  // namespace modelfs::cli
