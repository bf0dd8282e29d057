// Telling installs apart by the files each tool's repository keeps at its root (the markers of its
// row in modelfs/layouts/tools.h), and collecting the folders they read models from (their models/
// folder and whatever their configuration adds, read by the tool's reader in config_readers.cpp).
#include <sys/stat.h>

#include <algorithm>
#include <cstdlib>
#include <set>
#include <string>
#include <system_error>
#include <utility>

#include "install_config.h"
#include "modelfs/adopt/scan.h"
#include "modelfs/layouts/tools.h"

namespace modelfs::adopt {

namespace stdfs = std::filesystem;
using detail::canonical_or_normal;
using detail::inside;

namespace {

bool is_file(const stdfs::path& p) {
    std::error_code ec;
    return stdfs::is_regular_file(p, ec);
}
bool is_dir(const stdfs::path& p) {
    std::error_code ec;
    return stdfs::is_directory(p, ec);
}

// Every entry of `all` and, if it lists any, one of `any`: "name/" a folder, other names a file.
bool has_markers(const stdfs::path& r, const layouts::InstallMarkers& m) {
    const auto there = [&](std::string_view e) {
        return e.ends_with('/') ? is_dir(r / e.substr(0, e.size() - 1)) : is_file(r / e);
    };
    return std::all_of(m.all.begin(), m.all.end(), there) &&
           (m.any.empty() || std::any_of(m.any.begin(), m.any.end(), there));
}

const layouts::Tool* tool_at(const stdfs::path& r) {
    for (const layouts::Tool* t : layouts::detected_tools()) {
        if (has_markers(r, t->markers)) return t;
    }
    return nullptr;
}

}  // namespace

std::string_view known_install_markers() {
    static const std::string text = [] {
        std::string out;
        for (const layouts::Tool* t : layouts::detected_tools()) {
            if (!out.empty()) out += "; ";
            out += std::string(t->display) + ": " + layouts::describe(t->markers);
        }
        return out;
    }();
    return text;
}

std::string known_tool_names() {
    std::string out;
    for (const layouts::Tool& t : layouts::tools()) {
        if (t.markers.empty()) continue;
        if (!out.empty()) out += ", ";
        out += t.display;
    }
    return out;
}

std::optional<Install> detect_install(const stdfs::path& dir) {
    std::error_code ec;
    const stdfs::path root = stdfs::canonical(dir, ec);
    if (ec || !is_dir(root)) return std::nullopt;
    const layouts::Tool* tool = tool_at(root);
    if (!tool) return std::nullopt;

    Install inst;
    inst.tool = std::string(tool->name);
    inst.root = root;
    inst.models_dir = root / "models";

    detail::ConfigDirs cfg;
    if (const detail::ConfigReader read = detail::config_reader(tool->name)) cfg = read(root);
    inst.notes = std::move(cfg.notes);
    if (!cfg.models_dir.empty() && cfg.models_dir != inst.models_dir) {
        inst.notes.push_back("models folder moved by the configuration to " +
                             cfg.models_dir.string());
        inst.models_dir = cfg.models_dir;
    }

    struct stat st {};
    if (::lstat(inst.models_dir.c_str(), &st) == 0 && S_ISLNK(st.st_mode))
        inst.notes.push_back(inst.models_dir.string() +
                             " is itself a symbolic link; adopting replaces the link, its target "
                             "folder stays where it is");
    const stdfs::path models_canon = canonical_or_normal(inst.models_dir);
    std::vector<stdfs::path> seen;
    if (is_dir(inst.models_dir)) {
        inst.dirs.push_back({inst.models_dir, "", true, "layout"});
        seen.push_back(models_canon);
    } else {
        inst.notes.push_back(inst.models_dir.string() + " does not exist: nothing to replace");
    }
    for (auto& d : cfg.dirs) {
        if (!is_dir(d.path)) {
            std::error_code e2;
            inst.notes.push_back(
                d.origin + ": " + d.path.string() +
                (stdfs::exists(d.path, e2) ? " is not a folder" : " does not exist") + ", ignored");
            continue;
        }
        const stdfs::path c = canonical_or_normal(d.path);
        // Scanned with models/ already; listing it again would count its files twice.
        if (inside(c, models_canon)) continue;
        if (std::find(seen.begin(), seen.end(), c) != seen.end()) {
            inst.notes.push_back(d.origin + ": " + d.path.string() +
                                 " is already listed for another folder key, scanned once");
            continue;
        }
        seen.push_back(c);
        inst.dirs.push_back({d.path, d.view_folder, false, d.origin});
    }
    return inst;
}

std::vector<stdfs::path> default_install_locations() {
    stdfs::path home;
    if (const char* h = std::getenv("HOME"); h && *h)
        home = h;
    else
        home = detail::expand_user_and_vars("~");
    if (home.empty() || home == "~") return {};
    std::vector<stdfs::path> candidates;
    for (const layouts::Tool& t : layouts::tools()) {
        for (std::string_view n : t.home_folders) candidates.push_back(home / n);
    }
    // StabilityMatrix installs any of the tools under its own folder, one package folder each.
    for (const char* packages :
         {"StabilityMatrix/Data/Packages", ".config/StabilityMatrix/Data/Packages"}) {
        std::error_code ec;
        std::vector<stdfs::path> found;
        for (stdfs::directory_iterator it(home / packages, ec), end; !ec && it != end;
             it.increment(ec))
            found.push_back(it->path());
        std::sort(found.begin(), found.end());
        candidates.insert(candidates.end(), found.begin(), found.end());
    }
    std::vector<stdfs::path> out;
    std::set<stdfs::path> seen;
    for (const auto& c : candidates) {
        auto inst = detect_install(c);
        if (inst && seen.insert(inst->root).second) out.push_back(c);
    }
    return out;
}

}  // namespace modelfs::adopt
