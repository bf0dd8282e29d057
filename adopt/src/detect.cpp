// Telling installs apart by the files each tool's repository keeps at its root, and collecting
// the folders they read models from (their models/ folder and whatever their configuration adds).
//
// Markers, checked against the tools' repositories:
//   ComfyUI  main.py, folder_paths.py, comfy/
//   Fooocus  fooocus_version.py and entry_with_update.py or launch.py (it also has webui.py and
//            modules/, so it is told apart before A1111)
//   Forge    webui.py, modules/, modules_forge/ (lllyasviel's Forge and its forks)
//   SD.Next  launch.py, modules/, installer.py (vladmandic/automatic; A1111 has no installer.py)
//   A1111    webui.py, launch.py, modules/
#include <sys/stat.h>

#include <algorithm>
#include <cstdlib>
#include <set>
#include <string>
#include <system_error>
#include <utility>

#include "install_config.h"
#include "modelfs/adopt/scan.h"

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

std::optional<std::string> tool_at(const stdfs::path& r) {
    if (is_file(r / "main.py") && is_file(r / "folder_paths.py") && is_dir(r / "comfy"))
        return "comfyui";
    if (is_file(r / "fooocus_version.py") &&
        (is_file(r / "entry_with_update.py") || is_file(r / "launch.py")))
        return "fooocus";
    if (is_dir(r / "modules") && is_file(r / "webui.py") && is_dir(r / "modules_forge"))
        return "forge";
    if (is_dir(r / "modules") && is_file(r / "launch.py") && is_file(r / "installer.py"))
        return "sdnext";
    if (is_dir(r / "modules") && is_file(r / "webui.py") && is_file(r / "launch.py"))
        return "a1111";
    return std::nullopt;
}

}  // namespace

std::string_view known_install_markers() {
    return "ComfyUI: main.py + folder_paths.py + comfy/; Fooocus: fooocus_version.py + "
           "entry_with_update.py; Forge: webui.py + modules/ + modules_forge/; SD.Next: launch.py "
           "+ "
           "modules/ + installer.py; A1111: webui.py + launch.py + modules/";
}

std::optional<Install> detect_install(const stdfs::path& dir) {
    std::error_code ec;
    const stdfs::path root = stdfs::canonical(dir, ec);
    if (ec || !is_dir(root)) return std::nullopt;
    auto tool = tool_at(root);
    if (!tool) return std::nullopt;

    Install inst;
    inst.tool = *tool;
    inst.root = root;
    inst.models_dir = root / "models";

    detail::ConfigDirs cfg;
    if (inst.tool == "comfyui") {
        if (is_file(root / "extra_model_paths.yaml"))
            cfg = detail::comfyui_extra_model_paths(root / "extra_model_paths.yaml");
    } else if (inst.tool == "fooocus") {
        if (is_file(root / "config.txt")) cfg = detail::fooocus_config(root / "config.txt", root);
    } else if (inst.tool == "sdnext") {
        if (is_file(root / "config.json")) cfg = detail::sdnext_config(root / "config.json", root);
    } else {
        cfg = detail::a1111_dirs(root);
    }
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
    for (const char* n : {"stable-diffusion-webui", "stable-diffusion-webui-forge", "automatic",
                          "sdnext", "ComfyUI", "Fooocus"})
        candidates.push_back(home / n);
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
