#include "config.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <set>

#include <spdlog/spdlog.h>
#include <toml++/toml.h>
#include <nlohmann/json.hpp>

#include "modelfs/store/errors.h"
#include "modelfs/store/store.h"
#include "modelfs/store/text.h"
#include "modelfs/store/unique_fd.h"

namespace stdfs = std::filesystem;

namespace modelfs::cli {

namespace {


// "file:line:column", or just "file" when toml++ knows no position.
std::string at(const stdfs::path& file, const toml::source_region& r) {
    std::string s = file.string();
    if (r.begin.line != 0) {
        s += ":" + std::to_string(r.begin.line) + ":" + std::to_string(r.begin.column);
    }
    return s;
}

[[noreturn]] void fail(const stdfs::path& file, const toml::source_region& r,
                       const std::string& msg) {
    throw ConfigError(at(file, r) + ": " + msg);
}

// ViewLayout::from_json validates the folder tables; it takes JSON, so each TOML value is carried
// over as is and from_json names whatever is wrong with it. Dates and times have no JSON
// counterpart; they become null, which no field accepts ("path must be a string"), rather than
// text, which would pass for a folder name.
nlohmann::json to_json(const toml::node& n) {
    switch (n.type()) {
        case toml::node_type::table: {
            nlohmann::json j = nlohmann::json::object();
            for (auto&& [k, v] : *n.as_table()) j[std::string(k.str())] = to_json(v);
            return j;
        }
        case toml::node_type::array: {
            nlohmann::json j = nlohmann::json::array();
            for (const toml::node& e : *n.as_array()) j.push_back(to_json(e));
            return j;
        }
        case toml::node_type::string:
            return n.as_string()->get();
        case toml::node_type::integer:
            return n.as_integer()->get();
        case toml::node_type::floating_point:
            return n.as_floating_point()->get();
        case toml::node_type::boolean:
            return n.as_boolean()->get();
        default:
            return nullptr;
    }
}

// from_json's messages start `view layout "mytool": `; the config error names the layout itself.
std::string without_layout_prefix(const std::string& msg, const std::string& name) {
    for (const std::string& p : {"view layout \"" + name + "\": ", std::string("view layout: ")}) {
        if (msg.starts_with(p)) return msg.substr(p.size());
    }
    return msg;
}

// The N of a message starting "folders[N]", so the error can point at that [[layout.folder]].
std::optional<std::size_t> folder_index(const std::string& msg) {
    static constexpr std::string_view kPrefix = "folders[";
    if (!msg.starts_with(kPrefix)) return std::nullopt;
    std::size_t n = 0, i = kPrefix.size();
    if (i >= msg.size() || !std::isdigit(static_cast<unsigned char>(msg[i]))) return std::nullopt;
    for (; i < msg.size() && std::isdigit(static_cast<unsigned char>(msg[i])); ++i) {
        n = n * 10 + static_cast<std::size_t>(msg[i] - '0');
    }
    return n;
}

stdfs::path store_from(const toml::node& n, const stdfs::path& source) {
    const auto* s = n.as_string();
    if (!s) fail(source, n.source(), "'store' must be a string: the store's folder");
    std::string v = s->get();
    if (v.empty()) fail(source, n.source(), "'store' is empty; remove it to use the default store");
    stdfs::path p;
    if (v == "~" || v.starts_with("~/")) {
        // Config files are written by hand; "~/models" should mean what it means in a shell.
        const char* home = std::getenv("HOME");
        if (!home || !*home) {
            fail(source, n.source(),
                 "'store' starts with ~ but HOME is not set; write the full path");
        }
        p = v == "~" ? stdfs::path(home) : stdfs::path(home) / v.substr(2);
    } else if (v.starts_with("~")) {
        fail(source, n.source(),
             "'store' = \"" + v + "\": only ~/ is expanded; write the full path");
    } else {
        p = v;
    }
    // Relative to the file, not to wherever modelfs happens to be started from.
    if (p.is_relative()) p = source.parent_path() / p;
    return p.lexically_normal();
}

// A layout's name is a folder at the root of a mount that shows every view.
void check_layout_name(const std::string& name, const stdfs::path& source,
                       const toml::source_region& r) {
    const std::string quoted = "layout '" + name + "'";
    if (name.empty()) fail(source, r, "a layout's 'name' must not be empty");
    if (name == "." || name == ".." || name.find('/') != std::string::npos ||
        name.find('\0') != std::string::npos) {
        fail(source, r, quoted + ": 'name' must be a plain folder name (no '/', not . or ..)");
    }
    if (name == "by-hash") {
        fail(source, r, quoted + ": 'by-hash' is the mount's own folder; pick another name");
    }
    // Names match case-insensitively when picking a view (--view ComfyUI), so a near-miss of a
    // built-in would never be found; make the user choose: replace it exactly, or another name.
    if (auto b = layouts::ViewLayout::builtin(name); b && b->name() != name) {
        fail(source, r,
             quoted + ": the built-in view is called '" + b->name() +
                 "'; use exactly that name to replace it, or pick another name");
    }
}

layouts::ViewLayout layout_from(const toml::table& t, std::size_t index,
                                const stdfs::path& source) {
    const toml::node* name_node = t.get("name");
    if (!name_node || !name_node->is_string()) {
        fail(source, name_node ? name_node->source() : t.source(),
             "layout #" + std::to_string(index + 1) +
                 ": 'name' must be a string (name = \"mytool\"); it names the view");
    }
    const std::string name = name_node->as_string()->get();
    check_layout_name(name, source, name_node->source());
    const std::string quoted = "layout '" + name + "'";

    std::optional<bool> show_versions;
    for (auto&& [key, value] : t) {
        if (key == "show_versions") {
            if (!value.is_boolean())
                fail(source, value.source(),
                     quoted + ": 'show_versions' must be true or false (list NAME@LABEL aliases)");
            show_versions = value.as_boolean()->get();
        } else if (key != "name" && key != "folder") {
            fail(source, key.source(),
                 quoted + ": unknown key '" + std::string(key.str()) +
                     "'; a [[layout]] has a 'name', 'show_versions' and [[layout.folder]] tables");
        }
    }
    const toml::node* folder_node = t.get("folder");
    const toml::array* folders = folder_node ? folder_node->as_array() : nullptr;
    // An empty array is no array of tables to toml++; it gets the "no folders" message below.
    if (folder_node && (!folders || (!folders->empty() && !folders->is_array_of_tables()))) {
        fail(source, folder_node->source(),
             quoted + ": 'folder' must be an array of tables: write each as [[layout.folder]]");
    }
    if (!folders || folders->empty()) {
        fail(source, t.source(),
             quoted + " has no folders; add [[layout.folder]] tables (path, category) after it");
    }

    nlohmann::json j{{"name", name}, {"folders", nlohmann::json::array()}};
    std::vector<toml::source_region> where;
    for (const toml::node& f : *folders) {
        j["folders"].push_back(to_json(f));
        where.push_back(f.source());
    }
    try {
        layouts::ViewLayout layout = layouts::ViewLayout::from_json(j);
        if (show_versions) layout.set_show_versions(*show_versions);
        return layout;
    } catch (const StoreError& e) {
        const std::string msg = without_layout_prefix(e.what(), name);
        const auto i = folder_index(msg);
        fail(source, i && *i < where.size() ? where[*i] : t.source(), quoted + ": " + msg);
    }
}

std::vector<layouts::ViewLayout> layouts_from(const toml::node& n, const stdfs::path& source) {
    const toml::array* a = n.as_array();
    if (!a || !a->is_array_of_tables()) {
        fail(source, n.source(),
             "'layout' must be an array of tables: write each layout as [[layout]], followed by "
             "its [[layout.folder]] tables");
    }
    std::vector<layouts::ViewLayout> out;
    // --view matches names case-insensitively, so names that differ only in case would clash.
    std::map<std::string, std::size_t> seen;  // lower-case name -> index into out
    for (std::size_t i = 0; i < a->size(); ++i) {
        const toml::table& t = *a->get(i)->as_table();
        layouts::ViewLayout l = layout_from(t, i, source);
        const auto [it, fresh] = seen.emplace(lower(l.name()), out.size());
        if (!fresh) {
            const std::string& first = out[it->second].name();
            const std::string line = std::to_string(a->get(it->second)->source().begin.line);
            fail(source, t.source(),
                 first == l.name()
                     ? "layout '" + l.name() + "' is defined twice (first at line " + line +
                           "); view names must be unique"
                     : "layout '" + l.name() + "' and layout '" + first + "' (line " + line +
                           ") differ only in case; view names must be unique, ignoring case");
        }
        out.push_back(std::move(l));
    }
    return out;
}

constexpr unsigned kDefaultKeep = 3;

// ---- The settings: one row each (kSettings below) ----
//
// A row says everything about a setting: its key in the file ("fetch.jobs" is `jobs` in
// [fetch]), the environment variables that set it, the member of Config that holds it, the
// downloader's field it sets, how a value is read, whether it is a secret, an example and what it
// is for. The loader, the merge of several files, the environment overlay, `modelfs config` and
// its help text all walk this table; adding a setting is adding a row.

// How a value is read, in the file and in the environment, and what it must be in words (every
// message about a bad value says it).
struct Parser {
    enum Kind { count, bytes, url, text, path } kind;
    std::string_view expected;
    std::int64_t min = 0, max = 100000;  // count only
};

constexpr Parser kCount1{Parser::count, "a whole number of at least 1", 1},
    kCount0{Parser::count, "a whole number of at least 0", 0},
    kBytes{Parser::bytes,
           "a number of bytes or a size like \"50M\", \"1.5G\" (K, M, G, T are powers of 1024)"},
    kUrl{Parser::url, "an http:// or https:// URL"}, kText{Parser::text, "a string"},
    kPath{Parser::path, "a string: the store's folder"};

struct Row {
    SettingInfo info;
    Parser parser;
    // The file's value into a Config (empty: the environment only).
    std::function<void(const Row& self, Config&, const toml::node&, const stdfs::path&)> read{};
    // The value a Config holds, as `modelfs config` prints it; std::nullopt: unset.
    std::function<std::optional<std::string>(const Config&)> shown{};
    // `higher`'s value, when it has one, over `into`'s.
    std::function<void(Config& into, const Config& higher)> merge{};
    // The Config's value into the downloader's settings (empty: not a setting of the downloader).
    std::function<void(const Config&, fetch::FetchConfig&)> apply{};
    // A variable's value into the downloader's settings (empty: none, or not the downloader's).
    std::function<void(const Row& self, fetch::FetchConfig&, const std::string& var,
                       const std::string& value)>
        apply_env{};
};

// The table of a key ("fetch" of "fetch.jobs"; "" for a top-level key) and its name in the table.
std::string_view table_of(std::string_view key) {
    const auto dot = key.find('.');
    return dot == std::string_view::npos ? std::string_view{} : key.substr(0, dot);
}
std::string_view name_in_table(std::string_view key) {
    const auto dot = key.find('.');
    return dot == std::string_view::npos ? key : key.substr(dot + 1);
}

unsigned count_from(const toml::node& n, const stdfs::path& source, const Row& r) {
    const auto* i = n.as_integer();
    if (!i || i->get() < r.parser.min || i->get() > r.parser.max) {
        fail(source, n.source(),
             "'" + r.info.key + "' must be " + r.info.expected + ": " + r.info.description);
    }
    return static_cast<unsigned>(i->get());
}

std::uint64_t bytes_from(const toml::node& n, const stdfs::path& source, const Row& r) {
    if (const auto* i = n.as_integer()) {
        if (i->get() < 0) fail(source, n.source(), "'" + r.info.key + "' must not be negative");
        return static_cast<std::uint64_t>(i->get());
    }
    if (const auto* s = n.as_string()) {
        if (auto v = parse_size(s->get())) return *v;
    }
    fail(source, n.source(), "'" + r.info.key + "' must be " + r.info.expected);
}

std::string text_from(const toml::node& n, const stdfs::path& source, const Row& r) {
    const auto* s = n.as_string();
    if (!s) fail(source, n.source(), "'" + r.info.key + "' must be " + r.info.expected);
    std::string v = s->get();
    if (r.parser.kind == Parser::url) {
        if (!v.starts_with("http://") && !v.starts_with("https://"))
            fail(source, n.source(),
                 "'" + r.info.key + "' = \"" + v + "\" must be " + r.info.expected);
        while (v.size() > 1 && v.back() == '/') v.pop_back();
    }
    return v;
}

// A variable's value. Variables other programs share (HF_ENDPOINT, AWS_*) are taken as those
// programs take them; only a count is checked here, as nothing else would notice a bad one.
template <class U>
U env_value(const Row& r, const std::string& var, const std::string& v) {
    if constexpr (std::is_same_v<U, std::string>) {
        std::string out = v;
        if (r.parser.kind == Parser::url)
            while (!out.empty() && out.back() == '/') out.pop_back();
        return out;
    } else if constexpr (std::is_same_v<U, std::uint64_t>) {
        if (auto b = parse_size(v)) return *b;
    } else {
        // A count (or seconds): digits only, within the row's bounds.
        std::int64_t n = 0;
        bool ok = !v.empty() && v.size() <= 12;
        for (char ch : v) {
            if (!std::isdigit(static_cast<unsigned char>(ch))) ok = false;
            if (ok) n = n * 10 + (ch - '0');
        }
        if (ok && n >= r.parser.min && n <= r.parser.max) return U(n);
    }
    throw ConfigError("$" + var + "='" + v + "' must be " + r.info.expected + " (" +
                      r.info.description + ")");
}

std::string to_text(const std::string& v) {
    return v;
}
std::string to_text(const stdfs::path& v) {
    return v.string();
}
std::string to_text(std::chrono::seconds v) {
    return std::to_string(v.count());
}
template <class T>
std::string to_text(const T& v) {
    return std::to_string(v);
}

// A Config's member and the downloader's field, as functions: the rows name them by
// pointer-to-member (in_fetch<&FetchSettings::jobs>).
template <class T>
using FieldFn = std::optional<T>& (*)(Config&);
template <class U>
using TargetFn = U& (*)(fetch::FetchConfig&);
template <auto M>
auto& in_config(Config& c) {
    return c.*M;
}
template <auto M>
auto& in_fetch(Config& c) {
    return c.fetch.*M;
}
template <auto M>
auto& to_fetch(fetch::FetchConfig& c) {
    return c.*M;
}
template <auto M>
auto& to_s3(fetch::FetchConfig& c) {
    return c.s3.*M;
}

// The rows only read a const Config; the accessors are written once, for a mutable one.
template <class T>
const std::optional<T>& read_only(FieldFn<T> field, const Config& c) {
    return field(const_cast<Config&>(c));
}

template <class T>
T value_from(const Row& r, const toml::node& n, const stdfs::path& source) {
    if constexpr (std::is_same_v<T, unsigned>)
        return count_from(n, source, r);
    else if constexpr (std::is_same_v<T, std::uint64_t>)
        return bytes_from(n, source, r);
    else if constexpr (std::is_same_v<T, std::string>)
        return text_from(n, source, r);
    else
        return store_from(n, source);
}

// A row of a setting kept in Config. `builtin` is the default as printed.
template <class T>
Row setting(SettingInfo info, Parser parser, FieldFn<T> field) {
    info.expected = parser.expected;
    Row r{std::move(info), parser};
    r.read = [field](const Row& self, Config& c, const toml::node& n, const stdfs::path& src) {
        field(c) = value_from<T>(self, n, src);
    };
    r.shown = [field](const Config& c) -> std::optional<std::string> {
        const auto& v = read_only(field, c);
        if (!v) return std::nullopt;
        return to_text(*v);
    };
    r.merge = [field](Config& into, const Config& higher) {
        if (const auto& v = read_only(field, higher)) field(into) = v;
    };
    return r;
}

// A row of a setting of the downloader: kept in Config, given to fetch::FetchConfig's `target`,
// whose default is the setting's.
template <class T, class U>
Row setting(SettingInfo info, Parser parser, FieldFn<T> field, TargetFn<U> target) {
    fetch::FetchConfig defaults;
    info.builtin = to_text(target(defaults));
    Row r = setting(std::move(info), parser, field);
    r.apply = [field, target](const Config& c, fetch::FetchConfig& f) {
        if (const auto& v = read_only(field, c)) target(f) = U(*v);
    };
    r.apply_env = [target](const Row& self, fetch::FetchConfig& f, const std::string& var,
                           const std::string& value) {
        target(f) = env_value<U>(self, var, value);
    };
    return r;
}

// A row of a setting only the environment gives (no key in the file).
Row from_environment_only(SettingInfo info, Parser parser, TargetFn<std::string> target) {
    info.expected = parser.expected;
    info.in_file = false;
    Row r{std::move(info), parser};
    r.shown = [](const Config&) { return std::optional<std::string>(); };
    r.merge = [](Config&, const Config&) {};
    r.apply_env = [target](const Row& self, fetch::FetchConfig& f, const std::string& var,
                           const std::string& value) {
        target(f) = env_value<std::string>(self, var, value);
    };
    return r;
}

using fetch::FetchConfig;
using fetch::S3Config;

// In the order `modelfs config` prints them.
const std::vector<Row>& rows() {
    static const std::vector<Row> kSettings = [] {
        std::vector<Row> r;
        r.push_back(setting<stdfs::path>(
            {.key = "store",
             .env = {"MODELFS_STORE"},
             .example = "\"/srv/models\"",
             .description = "the default store (a relative path is relative to the file's "
                            "folder, ~/ is your home; --store wins)",
             .builtin = "$XDG_DATA_HOME/modelfs"},
            kPath, &in_config<&Config::store>));
        r.push_back(setting<unsigned>({.key = "versions.keep",
                                       .env = {"MODELFS_KEEP_VERSIONS"},
                                       .example = "3",
                                       .description = "how many versions `modelfs retain` keeps "
                                                      "per model (retain --keep wins)",
                                       .builtin = std::to_string(kDefaultKeep)},
                                      {Parser::count, kCount1.expected, 1, 1000000},
                                      &in_config<&Config::versions_keep>));
        r.push_back(setting({.key = "fetch.jobs",
                             .example = "4",
                             .description = "files downloading at once (fetch --jobs)"},
                            kCount1, &in_fetch<&FetchSettings::jobs>,
                            &to_fetch<&FetchConfig::max_blobs>));
        r.push_back(setting({.key = "fetch.connections_per_blob",
                             .example = "4",
                             .description = "parallel ranged requests for one file"},
                            kCount1, &in_fetch<&FetchSettings::connections_per_blob>,
                            &to_fetch<&FetchConfig::connections_per_blob>));
        r.push_back(setting(
            {.key = "fetch.max_per_host", .example = "8", .description = "connections to one host"},
            kCount1, &in_fetch<&FetchSettings::max_per_host>,
            &to_fetch<&FetchConfig::max_per_host>));
        r.push_back(setting(
            {.key = "fetch.max_connections", .example = "16", .description = "connections in all"},
            kCount1, &in_fetch<&FetchSettings::max_connections>,
            &to_fetch<&FetchConfig::max_connections>));
        r.push_back(setting({.key = "fetch.retries",
                             .example = "5",
                             .description = "retries per request, with backoff (a server's "
                                            "Retry-After is honoured)"},
                            kCount0, &in_fetch<&FetchSettings::retries>,
                            &to_fetch<&FetchConfig::retries>));
        r.push_back(setting({.key = "fetch.limit_rate",
                             .example = "\"50M\"",
                             .description = "bytes per second over all downloads; 0: none "
                                            "(fetch --limit-rate)"},
                            kBytes, &in_fetch<&FetchSettings::limit_rate>,
                            &to_fetch<&FetchConfig::limit_rate>));
        r.push_back(setting({.key = "fetch.cache_max_size",
                             .example = "\"500G\"",
                             .description = "quota for downloaded blobs; 0: none (evict "
                                            "--max-size)"},
                            kBytes, &in_fetch<&FetchSettings::cache_max_size>,
                            &to_fetch<&FetchConfig::cache_max_bytes>));
        r.push_back(setting({.key = "fetch.transfer_timeout",
                             .env = {"MODELFS_TRANSFER_TIMEOUT"},
                             .example = "1800",
                             .description = "seconds one request may take per 32 MiB it "
                                            "carries"},
                            {Parser::count, kCount1.expected, 1, 10'000'000},
                            &in_fetch<&FetchSettings::transfer_timeout>,
                            &to_fetch<&FetchConfig::transfer_timeout>));
        r.push_back(setting({.key = "fetch.hf_endpoint",
                             .env = {"HF_ENDPOINT"},
                             .example = "\"https://huggingface.co\"",
                             .description = "the Hugging Face hub that hf:// URLs name"},
                            kUrl, &in_fetch<&FetchSettings::hf_endpoint>,
                            &to_fetch<&FetchConfig::hf_endpoint>));
        r.push_back(setting({.key = "fetch.hf_token",
                             .env = {"HF_TOKEN"},
                             .example = "\"hf_xxxxxxxx\"",
                             .description = "Hugging Face token, sent to the hub only (hf:// "
                                            "URLs)",
                             .secret = true},
                            kText, &in_fetch<&FetchSettings::hf_token>,
                            &to_fetch<&FetchConfig::hf_token>));
        r.push_back(setting({.key = "s3.endpoint",
                             .env = {"AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"},
                             .example = "\"http://127.0.0.1:7480\"",
                             .description = "an S3-compatible store (MinIO, Ceph RGW, ...); "
                                            "unset: AWS (s3.REGION.amazonaws.com)"},
                            kUrl, &in_fetch<&FetchSettings::s3_endpoint>,
                            &to_s3<&S3Config::endpoint>));
        r.push_back(setting({.key = "s3.region",
                             .env = {"AWS_REGION", "AWS_DEFAULT_REGION"},
                             .example = "\"eu-west-1\"",
                             .description = "the region requests are signed for"},
                            kText, &in_fetch<&FetchSettings::s3_region>,
                            &to_s3<&S3Config::region>));
        r.push_back(setting({.key = "s3.access_key",
                             .env = {"AWS_ACCESS_KEY_ID"},
                             .example = "\"AKIAEXAMPLE\"",
                             .description = "S3 access key; unset: anonymous (unsigned) requests"},
                            kText, &in_fetch<&FetchSettings::s3_access_key>,
                            &to_s3<&S3Config::access_key>));
        r.push_back(setting({.key = "s3.secret_key",
                             .env = {"AWS_SECRET_ACCESS_KEY"},
                             .example = "\"secretexample\"",
                             .description = "S3 secret key",
                             .secret = true},
                            kText, &in_fetch<&FetchSettings::s3_secret_key>,
                            &to_s3<&S3Config::secret_key>));
        r.push_back(from_environment_only({.key = "s3.session_token",
                                           .env = {"AWS_SESSION_TOKEN"},
                                           .example = "\"sessiontoken\"",
                                           .description = "S3 session token (temporary "
                                                          "credentials), sent with each request",
                                           .secret = true},
                                          kText, &to_s3<&S3Config::session_token>));
        return r;
    }();
    return kSettings;
}

const Row& row(std::string_view key) {
    for (const Row& r : rows())
        if (r.info.key == key) return r;
    throw std::logic_error("no setting row '" + std::string(key) + "'");
}

// The tables of the file that hold settings ("fetch", "s3", "versions"), in the table's order.
std::vector<std::string> setting_tables() {
    std::vector<std::string> out;
    for (const Row& r : rows()) {
        const std::string t(table_of(r.info.key));
        if (!t.empty() && std::find(out.begin(), out.end(), t) == out.end()) out.push_back(t);
    }
    return out;
}

const toml::table& table_from(const toml::node& n, const stdfs::path& source,
                              const std::string& name) {
    const toml::table* t = n.as_table();
    if (!t) fail(source, n.source(), "'" + name + "' must be a table: [" + name + "]");
    return *t;
}

[[noreturn]] void unknown_in(const stdfs::path& source, const toml::key& key,
                             const std::string& table, const std::string& known) {
    fail(source, key.source(),
         std::string("unknown key '") + std::string(key.str()) + "' in [" + table +
             "]; the known " + (known.find(',') == std::string::npos ? "one is " : "ones are ") +
             known);
}

// One [TABLE] of settings, each key read by its row.
void settings_from(const toml::node& n, const stdfs::path& source, const std::string& table,
                   Config& c) {
    for (auto&& [key, v] : table_from(n, source, table)) {
        const std::string k = table + "." + std::string(key.str());
        const auto r = std::find_if(rows().begin(), rows().end(), [&](const Row& x) {
            return x.info.in_file && x.info.key == k;
        });
        if (r == rows().end()) {
            std::string known;
            for (const Row& x : rows())
                if (x.info.in_file && table_of(x.info.key) == table)
                    known += (known.empty() ? "" : ", ") + std::string(name_in_table(x.info.key));
            unknown_in(source, key, table, known);
        }
        r->read(*r, c, v, source);
        c.origins[k] = source;
    }
}

// [views.NAME] tables: settings of a view, built-in or not. Whether NAME is a view is checked
// once every file is merged (a layout may come from another file).
void views_from(const toml::node& n, const stdfs::path& source, Config& c) {
    for (auto&& [name, t] : table_from(n, source, "views")) {
        const std::string view(name.str());
        if (!t.is_table())
            fail(source, t.source(),
                 "'views." + view + "' must be a table: [views." + view + "] show_versions = true");
        for (auto&& [key, v] : *t.as_table()) {
            if (key.str() != "show_versions") {
                fail(source, key.source(),
                     "unknown key '" + std::string(key.str()) + "' in [views." + view +
                         "]; the known one is show_versions");
            }
            if (!v.is_boolean())
                fail(source, v.source(),
                     "'views." + view + ".show_versions' must be true or false");
            c.show_versions[view] = v.as_boolean()->get();
            c.origins["views." + view + ".show_versions"] = source;
        }
    }
}

std::string read_whole(const stdfs::path& file) {
    std::error_code ec;
    if (stdfs::is_directory(file, ec)) {
        throw ConfigError(file.string() + ": is a folder; the config is a TOML file");
    }
    UniqueFd fd(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) {
        throw ConfigError(file.string() + ": cannot open the config file: " + std::strerror(errno));
    }
    std::string text;
    char buf[16384];
    for (;;) {
        const ssize_t n = ::read(fd.get(), buf, sizeof buf);
        if (n == 0) break;
        if (n < 0) {
            if (errno == EINTR) continue;
            throw ConfigError(file.string() +
                              ": cannot read the config file: " + std::strerror(errno));
        }
        text.append(buf, static_cast<std::size_t>(n));
    }
    return text;
}

}  // namespace

ConfigLookup ConfigLookup::from_environment(std::optional<stdfs::path> explicit_path) {
    auto env = [](const char* name) {
        const char* v = std::getenv(name);
        return std::string(v ? v : "");
    };
    ConfigLookup l;
    l.explicit_path = std::move(explicit_path);
    l.env_config = env("MODELFS_CONFIG");
    l.xdg_config_home = env("XDG_CONFIG_HOME");
    l.home = env("HOME");
    return l;
}

namespace {

bool missing(const stdfs::path& p) {
    std::error_code ec;
    return stdfs::status(p, ec).type() == stdfs::file_type::not_found;
}

// Anything but "not there" (a permission problem, say) is used, so reading it says what is
// wrong instead of the file being skipped silently.
bool there(const stdfs::path& p) {
    return !p.empty() && !missing(p);
}

// The file --config or $MODELFS_CONFIG names, which then is the only one; std::nullopt when
// neither does.
std::optional<stdfs::path> named_config(const ConfigLookup& l) {
    // Named on purpose, so a typo must not fall back to some other file without a word. Other
    // problems (no permission) are left for the read to report.
    const auto named = [&](const stdfs::path& p, const char* how) {
        if (missing(p)) {
            throw ConfigError(p.string() + ": no such config file (" + how +
                              "); create it, or fix the path");
        }
        return p;
    };
    if (l.explicit_path) return named(*l.explicit_path, "given with --config");
    if (!l.env_config.empty()) return named(l.env_config, "named by $MODELFS_CONFIG");
    return std::nullopt;
}

stdfs::path user_config(const ConfigLookup& l) {
    // The XDG spec says to ignore a relative XDG_CONFIG_HOME.
    if (!l.xdg_config_home.empty() && stdfs::path(l.xdg_config_home).is_absolute())
        return stdfs::path(l.xdg_config_home) / "modelfs" / "config.toml";
    if (!l.home.empty()) return stdfs::path(l.home) / ".config" / "modelfs" / "config.toml";
    return {};
}

}  // namespace

std::optional<stdfs::path> find_config(const ConfigLookup& l) {
    if (auto p = named_config(l)) return p;
    if (const stdfs::path user = user_config(l); there(user)) return user;
    if (there(l.system_path)) return l.system_path;
    return std::nullopt;
}

std::vector<stdfs::path> config_files(const ConfigLookup& l) {
    if (auto p = named_config(l)) return {*p};
    std::vector<stdfs::path> out;
    if (const stdfs::path user = user_config(l); there(user)) out.push_back(user);
    if (l.store_dir && there(*l.store_dir / "config.toml"))
        out.push_back(*l.store_dir / "config.toml");
    if (there(l.system_path)) out.push_back(l.system_path);
    return out;
}

Config parse_config(std::string_view text, const stdfs::path& source) {
    toml::table root;
    try {
        root = toml::parse(text, source.string());
    } catch (const toml::parse_error& e) {
        fail(source, e.source(), std::string(e.description()));
    }

    // Every unknown key is an error, because a typo ("stroe") would otherwise be ignored
    // silently; nothing is accepted and ignored. toml++ iterates keys sorted; report the unknown
    // key that comes first in the file.
    const std::vector<std::string> tables = setting_tables();
    const auto is_table = [&](std::string_view k) {
        return std::find(tables.begin(), tables.end(), k) != tables.end();
    };
    const toml::key* unknown = nullptr;
    for (auto&& [key, value] : root) {
        const std::string k(key.str());
        if (k == "layout" || k == "views" || is_table(k)) continue;
        if (std::any_of(rows().begin(), rows().end(),
                        [&](const Row& r) { return r.info.in_file && r.info.key == k; }))
            continue;
        if (!unknown || key.source().begin.line < unknown->source().begin.line) unknown = &key;
    }
    if (unknown) {
        std::string known;
        for (const Row& r : rows())
            if (r.info.in_file && table_of(r.info.key).empty()) known += "'" + r.info.key + "', ";
        known += "[[layout]] tables, ";
        for (const std::string& t : tables) known += "[" + t + "], ";
        known.resize(known.size() - 2);
        fail(source, unknown->source(),
             "unknown key '" + std::string(unknown->str()) + "'; the known ones are " + known +
                 " and [views.NAME]");
    }

    Config c;
    c.source = source;
    for (const Row& r : rows()) {
        if (!r.info.in_file || !table_of(r.info.key).empty()) continue;
        if (const toml::node* n = root.get(r.info.key)) {
            r.read(r, c, *n, source);
            c.origins[r.info.key] = source;
        }
    }
    if (const toml::node* l = root.get("layout")) c.layouts = layouts_from(*l, source);
    for (const std::string& t : tables)
        if (const toml::node* n = root.get(t)) settings_from(*n, source, t, c);
    if (const toml::node* v = root.get("views")) views_from(*v, source, c);
    for (const auto& l : c.layouts) c.origins["layout." + l.name()] = source;
    if (!source.empty()) c.files.push_back(source);
    return c;
}

std::optional<std::uint64_t> parse_size(std::string_view text) {
    std::string s;
    for (char ch : text)
        if (ch != ' ') s += lower(ch);
    if (s.ends_with("/s")) s.resize(s.size() - 2);
    std::size_t i = 0;
    while (i < s.size() && (std::isdigit(static_cast<unsigned char>(s[i])) || s[i] == '.')) ++i;
    const std::string number = s.substr(0, i);
    std::string unit = s.substr(i);
    if (number.empty() || number == "." || std::count(number.begin(), number.end(), '.') > 1)
        return std::nullopt;
    if (unit.ends_with("ib"))
        unit.resize(unit.size() - 2);
    else if (unit.size() > 1 && unit.ends_with("b"))
        unit.resize(unit.size() - 1);
    int shift = 0;
    if (unit.empty() || unit == "b")
        shift = 0;
    else if (unit == "k")
        shift = 10;
    else if (unit == "m")
        shift = 20;
    else if (unit == "g")
        shift = 30;
    else if (unit == "t")
        shift = 40;
    else
        return std::nullopt;
    if (number.find('.') == std::string::npos) {
        // Whole numbers exactly, without going through a double.
        std::uint64_t v = 0;
        for (char ch : number) {
            const auto d = static_cast<std::uint64_t>(ch - '0');
            if (v > (UINT64_MAX - d) / 10) return std::nullopt;
            v = v * 10 + d;
        }
        if (shift && v > (UINT64_MAX >> shift)) return std::nullopt;
        return v << shift;
    }
    const double v = std::strtod(number.c_str(), nullptr) * static_cast<double>(1ull << shift);
    if (!(v >= 0) || v >= 18446744073709549568.0) return std::nullopt;
    return static_cast<std::uint64_t>(v);
}

fetch::FetchConfig fetch_config(const Config& config, fetch::FetchConfig c) {
    for (const Row& r : rows())
        if (r.apply) r.apply(config, c);
    return c;
}

fetch::FetchConfig environment_fetch_config(const EnvFn& env) {
    fetch::FetchConfig c;
    for (const Row& r : rows()) {
        if (!r.apply_env) continue;
        // The first variable that is set, as the AWS and Hugging Face tools read them.
        for (const std::string& var : r.info.env) {
            if (std::string v = env(var.c_str()); !v.empty()) {
                r.apply_env(r, c, var, v);
                break;
            }
        }
    }
    return c;
}

const std::vector<SettingInfo>& settings() {
    static const std::vector<SettingInfo> kInfo = [] {
        std::vector<SettingInfo> out;
        for (const Row& r : rows()) out.push_back(r.info);
        return out;
    }();
    return kInfo;
}

std::string settings_help() {
    std::string out =
        "Settings (a flag wins over the config files, which win over the environment, which wins "
        "over the default):\n";
    for (const SettingInfo& s : settings()) {
        out += "  " + (s.in_file ? s.key + " = " + s.example : s.key + " (environment only)");
        for (std::size_t i = 0; i < s.env.size(); ++i) out += (i ? ", $" : "  $") + s.env[i];
        out +=
            "\n      " + s.description + (s.secret ? "; a secret, printed as ********" : "") + "\n";
    }
    return out;
}

namespace {

// A token in a file others can read is everyone's token: said once per file and process (the
// file is the user's to fix; modelfs never writes it).
void warn_if_others_can_read(const stdfs::path& file, const std::string& keys) {
    struct stat st;
    if (::stat(file.c_str(), &st) != 0 || !(st.st_mode & S_IROTH)) return;
    static std::mutex mu;
    static std::set<std::string> told;
    std::lock_guard lk(mu);
    if (!told.insert(file.string()).second) return;
    spdlog::warn(
        "{} holds a credential ({}) and every user can read it; `chmod 600 {}` (or 640 for a "
        "group that may use it)",
        file.string(), keys, file.string());
}

}  // namespace

Config load_config_file(const stdfs::path& file) {
    // Absolute, so a relative `store` still means the same folder after a chdir (the mount's
    // daemon changes to "/").
    std::error_code ec;
    stdfs::path abs = stdfs::absolute(file, ec);
    if (ec) abs = file;
    Config c = parse_config(read_whole(abs), abs);
    std::string secrets;
    for (const Row& r : rows())
        if (r.info.secret && r.shown(c)) secrets += (secrets.empty() ? "" : " and ") + r.info.key;
    if (!secrets.empty()) warn_if_others_can_read(abs, secrets);
    return c;
}

Config merge_config(Config base, const Config& h) {
    Config c = std::move(base);
    for (const Row& r : rows()) r.merge(c, h);
    for (const auto& l : h.layouts) {
        auto same = std::find_if(
            c.layouts.begin(), c.layouts.end(),
            [&](const layouts::ViewLayout& o) { return lower(o.name()) == lower(l.name()); });
        if (same != c.layouts.end()) {
            c.origins.erase("layout." + same->name());
            *same = l;
        } else {
            c.layouts.push_back(l);
        }
    }
    for (const auto& [view, on] : h.show_versions) c.show_versions[view] = on;
    for (const auto& [key, file] : h.origins) c.origins[key] = file;
    if (!h.source.empty()) c.source = h.source;
    // The winner first.
    c.files.insert(c.files.begin(), h.files.begin(), h.files.end());
    return c;
}

std::vector<layouts::ViewLayout> mount_layouts(const Config& config) {
    std::vector<layouts::ViewLayout> out = config.layouts;
    for (const auto& [view, on] : config.show_versions) {
        // An init-capture, not [&]: clang 14 (the fuzz build) cannot capture structured bindings.
        auto mine = std::find_if(out.begin(), out.end(),
                                 [wanted = lower(view)](const layouts::ViewLayout& l) {
                                     return lower(l.name()) == wanted;
                                 });
        if (mine != out.end()) {
            mine->set_show_versions(on);
            continue;
        }
        auto b = layouts::ViewLayout::builtin(view);
        if (!b) {
            std::string names;
            for (const auto& n : layouts::ViewLayout::builtin_names()) names += " " + n;
            for (const auto& l : config.layouts) names += " " + l.name();
            auto where = config.origins.find("views." + view + ".show_versions");
            throw ConfigError(
                (where != config.origins.end() ? where->second.string() + ": " : std::string()) +
                "[views." + view + "]: there is no view '" + view + "'; views are:" + names);
        }
        // A copy of the built-in with the setting: it replaces the built-in in the mount.
        b->set_show_versions(on);
        out.push_back(std::move(*b));
    }
    return out;
}

Config load_config(const ConfigLookup& lookup) {
    const std::vector<stdfs::path> files = config_files(lookup);
    Config c;
    // Lowest first, so each file goes on top of those it wins over.
    for (auto it = files.rbegin(); it != files.rend(); ++it) {
        Config one = load_config_file(*it);
        if (lookup.store_dir && *it == *lookup.store_dir / "config.toml" && one.store) {
            throw ConfigError(it->string() +
                              ": 'store' has no meaning in a store's own config file (it was "
                              "found by being in that store); remove it");
        }
        c = merge_config(std::move(c), one);
    }
    mount_layouts(c);  // every [views.NAME] names a view
    return c;
}

std::string process_env(const char* name) {
    const char* v = std::getenv(name);
    return v ? v : "";
}

KeepVersions keep_versions(const Config& config, std::optional<unsigned> flag, const EnvFn& env) {
    if (flag) return {*flag, "flag --keep"};
    if (config.versions_keep) {
        auto where = config.origins.find("versions.keep");
        return {*config.versions_keep,
                "file " + (where != config.origins.end() ? where->second.string() : "?")};
    }
    const Row& keep = row("versions.keep");
    for (const std::string& var : keep.info.env)
        if (const std::string v = env(var.c_str()); !v.empty())
            return {env_value<unsigned>(keep, var, v), "env " + var};
    return {kDefaultKeep, "default"};
}

std::vector<EffectiveSetting> effective_settings(const Config& c, const std::string& store_flag,
                                                 const EnvFn& env) {
    std::vector<EffectiveSetting> out;
    const auto file_of = [&](const std::string& key) -> std::optional<std::string> {
        auto it = c.origins.find(key);
        if (it == c.origins.end()) return std::nullopt;
        return "file " + it->second.string();
    };
    for (const Row& r : rows()) {
        EffectiveSetting s{r.info.key, r.info.builtin, "default", r.info.secret};
        const auto var =
            std::find_if(r.info.env.begin(), r.info.env.end(),
                         [&](const std::string& v) { return !env(v.c_str()).empty(); });
        if (const std::optional<std::string> v = r.shown(c)) {
            s.value = *v;
            s.origin = file_of(r.info.key).value_or("file");
        } else if (var != r.info.env.end()) {
            s.value = env(var->c_str());
            s.origin = "env " + *var;
        }
        if (r.info.key == "store") {
            // --store wins, and the value is the store the program really uses: $MODELFS_STORE
            // is read by Store::default_path(), which also knows the XDG default.
            s.value = resolve_store_path(store_flag, c).string();
            if (!store_flag.empty()) s.origin = "flag --store";
        }
        if (s.secret && !s.value.empty()) s.value = "********";
        out.push_back(std::move(s));
    }

    for (const auto& l : c.layouts) {
        const std::size_t n = l.folders().size();
        out.push_back({"layout." + l.name(), std::to_string(n) + (n == 1 ? " folder" : " folders"),
                       file_of("layout." + l.name()).value_or("file")});
    }
    // Every view a mount shows, with whether it lists version aliases.
    std::vector<std::string> views = layouts::ViewLayout::builtin_names();
    for (const auto& l : c.layouts)
        if (std::find(views.begin(), views.end(), l.name()) == views.end())
            views.push_back(l.name());
    const std::vector<layouts::ViewLayout> layouts = mount_layouts(c);
    for (const auto& v : views) {
        auto l = std::find_if(layouts.begin(), layouts.end(),
                              [&](const layouts::ViewLayout& x) { return x.name() == v; });
        const bool on = l != layouts.end() && l->show_versions();
        EffectiveSetting s{"views." + v + ".show_versions", on ? "true" : "false", "default"};
        for (const auto& [name, _] : c.show_versions)
            if (lower(name) == lower(v))
                s.origin = file_of("views." + name + ".show_versions").value_or("file");
        if (s.origin == "default" && l != layouts.end() && l->show_versions())
            s.origin = file_of("layout." + v).value_or("file");
        out.push_back(std::move(s));
    }
    return out;
}

stdfs::path resolve_store_path(const std::string& given, const Config& config) {
    if (!given.empty()) return given;
    if (config.store) return *config.store;
    return Store::default_path();
}

}  // namespace modelfs::cli
