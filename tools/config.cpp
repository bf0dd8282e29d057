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

// Top-level tables that later issues will read (mount defaults, ...). They are accepted and
// ignored here so a config written for a newer modelfs still loads; every other unknown key is an
// error, because a typo ("stroe") would otherwise be ignored silently.
constexpr std::array<std::string_view, 0> kReservedTables{};

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

// [fetch] keys: name, what the value is, and whether it is a byte count ("50M") or a count.
unsigned count_from(const toml::node& n, const stdfs::path& source, const std::string& key,
                    std::int64_t min) {
    const auto* i = n.as_integer();
    if (!i || i->get() < min || i->get() > 100000) {
        fail(source, n.source(),
             "'fetch." + key + "' must be a whole number of at least " + std::to_string(min));
    }
    return static_cast<unsigned>(i->get());
}

std::uint64_t bytes_from(const toml::node& n, const stdfs::path& source, const std::string& key) {
    if (const auto* i = n.as_integer()) {
        if (i->get() < 0) fail(source, n.source(), "'fetch." + key + "' must not be negative");
        return static_cast<std::uint64_t>(i->get());
    }
    if (const auto* s = n.as_string()) {
        if (auto v = parse_size(s->get())) return *v;
    }
    fail(source, n.source(),
         "'fetch." + key +
             "' must be a number of bytes or a size like \"50M\", \"1.5G\" "
             "(K, M, G, T are powers of 1024)");
}

std::string text_from(const toml::node& n, const stdfs::path& source, const std::string& key) {
    const auto* s = n.as_string();
    if (!s) fail(source, n.source(), "'" + key + "' must be a string");
    return s->get();
}

std::string url_from(const toml::node& n, const stdfs::path& source, const std::string& key) {
    std::string v = text_from(n, source, key);
    if (!v.starts_with("http://") && !v.starts_with("https://"))
        fail(source, n.source(),
             "'" + key + "' = \"" + v + "\" must be an http:// or https:// URL");
    while (v.size() > 1 && v.back() == '/') v.pop_back();
    return v;
}

const toml::table& table_from(const toml::node& n, const stdfs::path& source, const char* name) {
    const toml::table* t = n.as_table();
    if (!t) fail(source, n.source(), std::string("'") + name + "' must be a table: [" + name + "]");
    return *t;
}

[[noreturn]] void unknown_in(const stdfs::path& source, const toml::key& key, const char* table,
                             const char* known) {
    fail(source, key.source(),
         std::string("unknown key '") + std::string(key.str()) + "' in [" + table +
             "]; the known ones are " + known);
}

void fetch_from(const toml::node& n, const stdfs::path& source, FetchSettings& f) {
    for (auto&& [key, v] : table_from(n, source, "fetch")) {
        const std::string k(key.str());
        if (k == "jobs")
            f.jobs = count_from(v, source, k, 1);
        else if (k == "connections_per_blob")
            f.connections_per_blob = count_from(v, source, k, 1);
        else if (k == "max_per_host")
            f.max_per_host = count_from(v, source, k, 1);
        else if (k == "max_connections")
            f.max_connections = count_from(v, source, k, 1);
        else if (k == "retries")
            f.retries = count_from(v, source, k, 0);
        else if (k == "limit_rate")
            f.limit_rate = bytes_from(v, source, k);
        else if (k == "cache_max_size")
            f.cache_max_size = bytes_from(v, source, k);
        else if (k == "transfer_timeout")
            f.transfer_timeout = count_from(v, source, k, 1);
        else if (k == "hf_endpoint")
            f.hf_endpoint = url_from(v, source, "fetch.hf_endpoint");
        else if (k == "hf_token")
            f.hf_token = text_from(v, source, "fetch.hf_token");
        else
            unknown_in(source, key, "fetch",
                       "jobs, connections_per_blob, max_per_host, max_connections, retries, "
                       "limit_rate, cache_max_size, transfer_timeout, hf_endpoint, hf_token");
    }
}

void s3_from(const toml::node& n, const stdfs::path& source, FetchSettings& f) {
    for (auto&& [key, v] : table_from(n, source, "s3")) {
        const std::string k(key.str());
        if (k == "endpoint")
            f.s3_endpoint = url_from(v, source, "s3.endpoint");
        else if (k == "region")
            f.s3_region = text_from(v, source, "s3.region");
        else if (k == "access_key")
            f.s3_access_key = text_from(v, source, "s3.access_key");
        else if (k == "secret_key")
            f.s3_secret_key = text_from(v, source, "s3.secret_key");
        else
            unknown_in(source, key, "s3", "endpoint, region, access_key, secret_key");
    }
}

void versions_from(const toml::node& n, const stdfs::path& source, Config& c) {
    for (auto&& [key, v] : table_from(n, source, "versions")) {
        if (key.str() != "keep") unknown_in(source, key, "versions", "keep");
        const auto* i = v.as_integer();
        if (!i || i->get() < 1 || i->get() > 1000000)
            fail(source, v.source(),
                 "'versions.keep' must be a whole number of at least 1: how many versions "
                 "`modelfs retain` keeps per model");
        c.versions_keep = static_cast<unsigned>(i->get());
        c.origins["versions.keep"] = source;
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

    // toml++ iterates keys sorted; report the unknown key that comes first in the file.
    const toml::key* unknown = nullptr;
    for (auto&& [key, value] : root) {
        if (key == "store" || key == "layout" || key == "fetch" || key == "s3" ||
            key == "versions" || key == "views")
            continue;
        if (std::find(kReservedTables.begin(), kReservedTables.end(), key.str()) !=
            kReservedTables.end()) {
            continue;
        }
        if (!unknown || key.source().begin.line < unknown->source().begin.line) unknown = &key;
    }
    if (unknown) {
        fail(source, unknown->source(),
             "unknown key '" + std::string(unknown->str()) + "'; the known ones are 'store', " +
                 "[[layout]] tables, [fetch], [s3], [versions] and [views.NAME]");
    }

    Config c;
    c.source = source;
    if (const toml::node* s = root.get("store")) c.store = store_from(*s, source);
    if (const toml::node* l = root.get("layout")) c.layouts = layouts_from(*l, source);
    if (const toml::node* f = root.get("fetch")) fetch_from(*f, source, c.fetch);
    if (const toml::node* s = root.get("s3")) s3_from(*s, source, c.fetch);
    if (const toml::node* v = root.get("versions")) versions_from(*v, source, c);
    if (const toml::node* v = root.get("views")) views_from(*v, source, c);
    if (c.store) c.origins["store"] = source;
    for (const auto& l : c.layouts) c.origins["layout." + l.name()] = source;
    for (const char* table : {"fetch", "s3"}) {
        if (const toml::table* t = root[table].as_table())
            for (auto&& [key, v] : *t)
                c.origins[std::string(table) + "." + std::string(key.str())] = source;
    }
    if (!source.empty()) c.files.push_back(source);
    return c;
}

std::optional<std::uint64_t> parse_size(std::string_view text) {
    std::string s;
    for (char ch : text)
        if (ch != ' ') s += static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
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
    const FetchSettings& f = config.fetch;
    if (f.jobs) c.max_blobs = *f.jobs;
    if (f.connections_per_blob) c.connections_per_blob = *f.connections_per_blob;
    if (f.max_per_host) c.max_per_host = *f.max_per_host;
    if (f.max_connections) c.max_connections = *f.max_connections;
    if (f.retries) c.retries = *f.retries;
    if (f.limit_rate) c.limit_rate = *f.limit_rate;
    if (f.cache_max_size) c.cache_max_bytes = *f.cache_max_size;
    if (f.transfer_timeout) c.transfer_timeout = std::chrono::seconds(*f.transfer_timeout);
    if (f.hf_endpoint) c.hf_endpoint = *f.hf_endpoint;
    if (f.hf_token) c.hf_token = *f.hf_token;
    if (f.s3_endpoint) c.s3.endpoint = *f.s3_endpoint;
    if (f.s3_region) c.s3.region = *f.s3_region;
    if (f.s3_access_key) c.s3.access_key = *f.s3_access_key;
    if (f.s3_secret_key) c.s3.secret_key = *f.s3_secret_key;
    return c;
}

namespace {

// A token in a file others can read is everyone's token: said once per file and process (the
// file is the user's to fix; modelfs never writes it).
void warn_if_others_can_read(const stdfs::path& file) {
    struct stat st;
    if (::stat(file.c_str(), &st) != 0 || !(st.st_mode & S_IROTH)) return;
    static std::mutex mu;
    static std::set<std::string> told;
    std::lock_guard lk(mu);
    if (!told.insert(file.string()).second) return;
    spdlog::warn(
        "{} holds a credential (fetch.hf_token or s3.secret_key) and every user can read "
        "it; `chmod 600 {}` (or 640 for a group that may use it)",
        file.string(), file.string());
}

}  // namespace

Config load_config_file(const stdfs::path& file) {
    // Absolute, so a relative `store` still means the same folder after a chdir (the mount's
    // daemon changes to "/").
    std::error_code ec;
    stdfs::path abs = stdfs::absolute(file, ec);
    if (ec) abs = file;
    Config c = parse_config(read_whole(abs), abs);
    const FetchSettings& f = c.fetch;
    if (f.hf_token || f.s3_secret_key) warn_if_others_can_read(abs);
    return c;
}

Config merge_config(Config base, const Config& h) {
    Config c = std::move(base);
    if (h.store) c.store = h.store;
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
    const FetchSettings& f = h.fetch;
    auto over = [](auto& to, const auto& from) {
        if (from) to = from;
    };
    over(c.fetch.jobs, f.jobs);
    over(c.fetch.connections_per_blob, f.connections_per_blob);
    over(c.fetch.max_per_host, f.max_per_host);
    over(c.fetch.max_connections, f.max_connections);
    over(c.fetch.retries, f.retries);
    over(c.fetch.limit_rate, f.limit_rate);
    over(c.fetch.cache_max_size, f.cache_max_size);
    over(c.fetch.transfer_timeout, f.transfer_timeout);
    over(c.fetch.hf_endpoint, f.hf_endpoint);
    over(c.fetch.hf_token, f.hf_token);
    over(c.fetch.s3_endpoint, f.s3_endpoint);
    over(c.fetch.s3_region, f.s3_region);
    over(c.fetch.s3_access_key, f.s3_access_key);
    over(c.fetch.s3_secret_key, f.s3_secret_key);
    over(c.versions_keep, h.versions_keep);
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
    if (const std::string v = env("MODELFS_KEEP_VERSIONS"); !v.empty()) {
        unsigned n = 0;
        bool ok = v.size() <= 7;
        for (char ch : v) {
            if (!std::isdigit(static_cast<unsigned char>(ch)))
                ok = false;
            else
                n = n * 10 + static_cast<unsigned>(ch - '0');
        }
        if (!ok || n < 1)
            throw ConfigError("$MODELFS_KEEP_VERSIONS='" + v +
                              "' must be a whole number of at least 1 (versions kept per model)");
        return {n, "env MODELFS_KEEP_VERSIONS"};
    }
    return {3, "default"};
}

std::vector<EffectiveSetting> effective_settings(const Config& c, const std::string& store_flag,
                                                 const EnvFn& env) {
    std::vector<EffectiveSetting> out;
    const auto file_of = [&](const std::string& key) -> std::optional<std::string> {
        auto it = c.origins.find(key);
        if (it == c.origins.end()) return std::nullopt;
        return "file " + it->second.string();
    };
    // The first of `vars` that is set, as the downloader reads them.
    const auto from_env = [&](std::initializer_list<const char*> vars)
        -> std::optional<std::pair<std::string, std::string>> {
        for (const char* v : vars)
            if (std::string val = env(v); !val.empty()) return std::pair{std::string(v), val};
        return std::nullopt;
    };
    // A setting of the file, else the environment, else the built-in default.
    const auto add = [&](const std::string& key, const std::optional<std::string>& in_file,
                         std::initializer_list<const char*> vars, const std::string& builtin,
                         bool secret = false) {
        EffectiveSetting s{key, builtin, "default", secret};
        if (in_file) {
            s.value = *in_file;
            s.origin = file_of(key).value_or("file");
        } else if (auto e = from_env(vars)) {
            s.value = e->second;
            s.origin = "env " + e->first;
        }
        if (secret && !s.value.empty()) s.value = "********";
        out.push_back(std::move(s));
    };
    const auto num = [](const auto& o) -> std::optional<std::string> {
        if (!o) return std::nullopt;
        return std::to_string(*o);
    };

    {
        EffectiveSetting s{"store", resolve_store_path(store_flag, c).string(), "default"};
        if (!store_flag.empty())
            s.origin = "flag --store";
        else if (c.store)
            s.origin = file_of("store").value_or("file");
        else if (!env("MODELFS_STORE").empty())
            s.origin = "env MODELFS_STORE";
        out.push_back(std::move(s));
    }
    add("versions.keep", num(c.versions_keep), {"MODELFS_KEEP_VERSIONS"}, "3");

    const fetch::FetchConfig d;  // the built-in defaults
    const FetchSettings& f = c.fetch;
    add("fetch.jobs", num(f.jobs), {}, std::to_string(d.max_blobs));
    add("fetch.connections_per_blob", num(f.connections_per_blob), {},
        std::to_string(d.connections_per_blob));
    add("fetch.max_per_host", num(f.max_per_host), {}, std::to_string(d.max_per_host));
    add("fetch.max_connections", num(f.max_connections), {}, std::to_string(d.max_connections));
    add("fetch.retries", num(f.retries), {}, std::to_string(d.retries));
    add("fetch.limit_rate", num(f.limit_rate), {}, std::to_string(d.limit_rate));
    add("fetch.cache_max_size", num(f.cache_max_size), {}, std::to_string(d.cache_max_bytes));
    add("fetch.transfer_timeout", num(f.transfer_timeout), {"MODELFS_TRANSFER_TIMEOUT"},
        std::to_string(d.transfer_timeout.count()));
    add("fetch.hf_endpoint", f.hf_endpoint, {"HF_ENDPOINT"}, d.hf_endpoint);
    add("fetch.hf_token", f.hf_token, {"HF_TOKEN"}, "", true);
    add("s3.endpoint", f.s3_endpoint, {"AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"}, d.s3.endpoint);
    add("s3.region", f.s3_region, {"AWS_REGION", "AWS_DEFAULT_REGION"}, d.s3.region);
    add("s3.access_key", f.s3_access_key, {"AWS_ACCESS_KEY_ID"}, "");
    add("s3.secret_key", f.s3_secret_key, {"AWS_SECRET_ACCESS_KEY"}, "", true);
    add("s3.session_token", std::nullopt, {"AWS_SESSION_TOKEN"}, "", true);

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
