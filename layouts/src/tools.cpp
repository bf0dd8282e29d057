#include "modelfs/layouts/tools.h"

#include <algorithm>
#include <optional>

#include "builtin_folders.h"

namespace modelfs::layouts {

namespace {

// ASCII case-insensitive: tool names are ASCII, and a locale must not change what a name means.
bool same_name(std::string_view a, std::string_view lowered) {
    return a.size() == lowered.size() &&
           std::equal(a.begin(), a.end(), lowered.begin(), [](char x, char y) {
               return (x >= 'A' && x <= 'Z' ? static_cast<char>(x - 'A' + 'a') : x) == y;
           });
}

// The markers are what each tool's repository keeps at its root (checked against the tools'
// repositories); the home folders are the clone names their READMEs and installers use.
std::vector<Tool> make_tools() {
    return {
        {
            .name = "a1111",
            .display = "A1111",
            .aliases = {"automatic1111"},
            .folders = [] { return detail::a1111_folders(false); },
            .markers = {.all = {"webui.py", "launch.py", "modules/"}},
            .detect_order = 4,
            .home_folders = {"stable-diffusion-webui"},
        },
        {
            // lllyasviel's Forge and its forks: A1111's tree plus modules_forge/.
            .name = "forge",
            .display = "Forge",
            .folders = [] { return detail::a1111_folders(true); },
            .markers = {.all = {"webui.py", "modules/", "modules_forge/"}},
            .detect_order = 2,
            .home_folders = {"stable-diffusion-webui-forge"},
        },
        {
            // vladmandic/automatic; A1111 has no installer.py.
            .name = "sdnext",
            .display = "SD.Next",
            .folders = detail::sdnext_folders,
            .markers = {.all = {"launch.py", "modules/", "installer.py"}},
            .detect_order = 3,
            .home_folders = {"automatic", "sdnext"},
        },
        {
            .name = "comfyui",
            .display = "ComfyUI",
            .folders = detail::comfyui_folders,
            .markers = {.all = {"main.py", "folder_paths.py", "comfy/"}},
            .detect_order = 0,
            .home_folders = {"ComfyUI"},
        },
        {
            // Fooocus also has webui.py, launch.py and modules/: told apart before A1111.
            .name = "fooocus",
            .display = "Fooocus",
            .folders = detail::fooocus_folders,
            .markers = {.all = {"fooocus_version.py"},
                        .any = {"entry_with_update.py", "launch.py"}},
            .detect_order = 1,
            .home_folders = {"Fooocus"},
        },
        {
            .name = "invokeai",
            .display = "InvokeAI",
            .folders = detail::invokeai_folders,
        },
    };
}

}  // namespace

const std::vector<Tool>& tools() {
    static const std::vector<Tool> t = make_tools();
    return t;
}

const Tool* find_tool(std::string_view name) {
    for (const Tool& t : tools()) {
        if (same_name(name, t.name) ||
            std::any_of(t.aliases.begin(), t.aliases.end(),
                        [&](std::string_view a) { return same_name(name, a); }))
            return &t;
    }
    return nullptr;
}

std::vector<const Tool*> detected_tools() {
    std::vector<const Tool*> out;
    for (const Tool& t : tools()) {
        if (!t.markers.empty()) out.push_back(&t);
    }
    std::stable_sort(out.begin(), out.end(), [](const Tool* a, const Tool* b) {
        return a->detect_order < b->detect_order;
    });
    return out;
}

std::string describe(const InstallMarkers& m) {
    std::string out;
    for (std::string_view e : m.all) {
        if (!out.empty()) out += " + ";
        out += e;
    }
    if (!m.any.empty()) {
        if (!out.empty()) out += " + ";
        if (m.any.size() > 1) out += "(";
        for (std::size_t i = 0; i < m.any.size(); ++i) {
            if (i > 0) out += " or ";
            out += m.any[i];
        }
        if (m.any.size() > 1) out += ")";
    }
    return out;
}

std::optional<ViewLayout> ViewLayout::builtin(std::string_view name) {
    const Tool* t = find_tool(name);
    if (!t) return std::nullopt;
    return ViewLayout(std::string(t->name), t->folders());
}

std::vector<std::string> ViewLayout::builtin_names() {
    std::vector<std::string> out;
    for (const Tool& t : tools()) out.emplace_back(t.name);
    return out;
}

}  // namespace modelfs::layouts
