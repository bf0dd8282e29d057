// Fooocus config.txt: JSON written by Fooocus itself (modules/config.py), naming its model
// folders. path_checkpoints and path_loras may be lists (Fooocus reads every entry, downloads into
// the first); the others are strings. config_modification_tutorial.txt beside it is a sample, not
// configuration, and is never read.
#include <fstream>
#include <iterator>
#include <string>
#include <utility>

#include <nlohmann/json.hpp>

#include "install_config.h"

namespace modelfs::adopt::detail {

ConfigDirs fooocus_config(const std::filesystem::path& config_txt,
                          const std::filesystem::path& root) {
    // The view folder each key feeds; inpaint and prompt_expansion have none in the fooocus view,
    // so their files are kept as plain files where they are.
    static const std::pair<const char*, const char*> kKeys[] = {
        {"path_checkpoints", "checkpoints"},
        {"path_loras", "loras"},
        {"path_embeddings", "embeddings"},
        {"path_vae", "vae"},
        {"path_vae_approx", "vae_approx"},
        {"path_upscale_models", "upscale_models"},
        {"path_inpaint", "inpaint"},
        {"path_controlnet", "controlnet"},
        {"path_clip_vision", "clip_vision"},
        {"path_fooocus_expansion", "prompt_expansion/fooocus_expansion"},
    };
    ConfigDirs out;
    const std::string fname = config_txt.filename().string();
    const auto settings = read_json_settings(config_txt, out.notes);
    if (!settings) return out;
    const nlohmann::json& j = *settings;
    for (const auto& [key, folder] : kKeys) {
        const auto it = j.find(key);
        if (it == j.end()) continue;
        const std::string origin = fname + ": " + key;
        // folder by init-capture: clang 14 (the fuzz build) cannot capture structured bindings.
        const auto add = [&, folder = folder](const nlohmann::json& v) {
            if (!v.is_string()) {
                out.notes.push_back(origin + ": " + v.dump() + " is not a path, ignored");
                return;
            }
            const std::string p = v.get<std::string>();
            if (!p.empty()) out.dirs.push_back({absolute_against(p, root), folder, origin});
        };
        if (it->is_array()) {
            for (const auto& v : *it) add(v);
        } else {
            add(*it);
        }
    }
    return out;
}

}  // namespace modelfs::adopt::detail
