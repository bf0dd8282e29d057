// SD.Next config.json: the settings file SD.Next writes at its root, with a folder per model kind
// (empty or missing means the default under models/). Relative paths are taken against the root,
// SD.Next's working folder.
#include <fstream>
#include <iterator>
#include <string>
#include <utility>

#include <nlohmann/json.hpp>

#include "install_config.h"

namespace modelfs::adopt::detail {

ConfigDirs sdnext_config(const std::filesystem::path& config_json,
                         const std::filesystem::path& root) {
    static const FolderKey kKeys[] = {
        {"ckpt_dir", "Stable-diffusion"},
        {"diffusers_dir", "Diffusers"},
        {"vae_dir", "VAE"},
        {"lora_dir", "Lora"},
        {"lyco_dir", "LyCORIS"},
        {"embeddings_dir", "embeddings"},
        {"unet_dir", "UNET"},
        {"clip_models_path", "CLIP"},
        {"control_net_models_path", "ControlNet"},
        {"hypernetwork_dir", "hypernetworks"},
        {"esrgan_models_path", "ESRGAN"},
    };
    ConfigDirs out;
    const std::string fname = config_json.filename().string();
    const auto settings = read_json_settings(config_json, out.notes);
    if (!settings) return out;
    const nlohmann::json& j = *settings;
    if (auto it = j.find("models_dir"); it != j.end()) {
        if (it->is_string() && !it->get<std::string>().empty())
            out.models_dir = absolute_against(it->get<std::string>(), root);
        else if (!it->is_string())
            out.notes.push_back(fname + ": models_dir is not a path, ignored");
    }
    add_json_folders(j, kKeys, fname, root, /*lists=*/false, out);
    return out;
}

}  // namespace modelfs::adopt::detail
