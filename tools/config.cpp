#include "config.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <map>

#include <toml++/toml.h>
#include <nlohmann/json.hpp>

#include "modelfs/store/store.h"
#include "modelfs/store/unique_fd.h"

namespace stdfs = std::filesystem;

namespace modelfs::cli {

namespace {

// Top-level tables that later issues will read (mount defaults, ...). They are accepted and
// ignored here so a config written for a newer modelfs still loads; every other unknown key is an
// error, because a typo ("stroe") would otherwise be ignored silently.
constexpr std::array<std::string_view, 0> kReservedTables{};

std::string lower(std::string_view s) {
    std::string out(s);
    for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return out;
}

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
    if (auto b = fs::ViewLayout::builtin(name); b && b->name() != name) {
        fail(source, r,
             quoted + ": the built-in view is called '" + b->name() +
                 "'; use exactly that name to replace it, or pick another name");
    }
}

fs::ViewLayout layout_from(const toml::table& t, std::size_t index, const stdfs::path& source) {
    const toml::node* name_node = t.get("name");
    if (!name_node || !name_node->is_string()) {
        fail(source, name_node ? name_node->source() : t.source(),
             "layout #" + std::to_string(index + 1) +
                 ": 'name' must be a string (name = \"mytool\"); it names the view");
    }
    const std::string name = name_node->as_string()->get();
    check_layout_name(name, source, name_node->source());
    const std::string quoted = "layout '" + name + "'";

    for (auto&& [key, value] : t) {
        if (key != "name" && key != "folder") {
            fail(source, key.source(),
                 quoted + ": unknown key '" + std::string(key.str()) +
                     "'; a [[layout]] has a 'name' and [[layout.folder]] tables");
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
        return fs::ViewLayout::from_json(j);
    } catch (const std::invalid_argument& e) {
        const std::string msg = without_layout_prefix(e.what(), name);
        const auto i = folder_index(msg);
        fail(source, i && *i < where.size() ? where[*i] : t.source(), quoted + ": " + msg);
    }
}

std::vector<fs::ViewLayout> layouts_from(const toml::node& n, const stdfs::path& source) {
    const toml::array* a = n.as_array();
    if (!a || !a->is_array_of_tables()) {
        fail(source, n.source(),
             "'layout' must be an array of tables: write each layout as [[layout]], followed by "
             "its [[layout.folder]] tables");
    }
    std::vector<fs::ViewLayout> out;
    // --view matches names case-insensitively, so names that differ only in case would clash.
    std::map<std::string, std::size_t> seen;  // lower-case name -> index into out
    for (std::size_t i = 0; i < a->size(); ++i) {
        const toml::table& t = *a->get(i)->as_table();
        fs::ViewLayout l = layout_from(t, i, source);
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
        else if (k == "hf_endpoint")
            f.hf_endpoint = url_from(v, source, "fetch.hf_endpoint");
        else
            unknown_in(source, key, "fetch",
                       "jobs, connections_per_blob, max_per_host, max_connections, retries, "
                       "limit_rate, cache_max_size, hf_endpoint");
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

std::optional<stdfs::path> find_config(const ConfigLookup& l) {
    std::error_code ec;
    const auto missing = [&](const stdfs::path& p) {
        return stdfs::status(p, ec).type() == stdfs::file_type::not_found;
    };
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

    stdfs::path user;
    // The XDG spec says to ignore a relative XDG_CONFIG_HOME.
    if (!l.xdg_config_home.empty() && stdfs::path(l.xdg_config_home).is_absolute()) {
        user = stdfs::path(l.xdg_config_home) / "modelfs" / "config.toml";
    } else if (!l.home.empty()) {
        user = stdfs::path(l.home) / ".config" / "modelfs" / "config.toml";
    }
    // Anything but "not there" (a permission problem, say) is used, so reading it says what is
    // wrong instead of the file being skipped silently.
    const auto there = [&](const stdfs::path& p) { return !p.empty() && !missing(p); };
    if (there(user)) return user;
    if (there(l.system_path)) return l.system_path;
    return std::nullopt;
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
        if (key == "store" || key == "layout" || key == "fetch" || key == "s3") continue;
        if (std::find(kReservedTables.begin(), kReservedTables.end(), key.str()) !=
            kReservedTables.end()) {
            continue;
        }
        if (!unknown || key.source().begin.line < unknown->source().begin.line) unknown = &key;
    }
    if (unknown) {
        fail(source, unknown->source(),
             "unknown key '" + std::string(unknown->str()) + "'; the known ones are 'store', " +
                 "[[layout]] tables, [fetch] and [s3]");
    }

    Config c;
    c.source = source;
    if (const toml::node* s = root.get("store")) c.store = store_from(*s, source);
    if (const toml::node* l = root.get("layout")) c.layouts = layouts_from(*l, source);
    if (const toml::node* f = root.get("fetch")) fetch_from(*f, source, c.fetch);
    if (const toml::node* s = root.get("s3")) s3_from(*s, source, c.fetch);
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
    if (f.hf_endpoint) c.hf_endpoint = *f.hf_endpoint;
    if (f.s3_endpoint) c.s3.endpoint = *f.s3_endpoint;
    if (f.s3_region) c.s3.region = *f.s3_region;
    if (f.s3_access_key) c.s3.access_key = *f.s3_access_key;
    if (f.s3_secret_key) c.s3.secret_key = *f.s3_secret_key;
    return c;
}

Config load_config_file(const stdfs::path& file) {
    // Absolute, so a relative `store` still means the same folder after a chdir (the mount's
    // daemon changes to "/").
    std::error_code ec;
    stdfs::path abs = stdfs::absolute(file, ec);
    if (ec) abs = file;
    return parse_config(read_whole(abs), abs);
}

Config load_config(const ConfigLookup& lookup) {
    if (auto file = find_config(lookup)) return load_config_file(*file);
    return {};
}

stdfs::path resolve_store_path(const std::string& given, const Config& config) {
    if (!given.empty()) return given;
    if (config.store) return *config.store;
    return Store::default_path();
}

}  // namespace modelfs::cli
