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
    static const FolderKey kKeys[] = {
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
    add_json_folders(*settings, kKeys, fname, root, /*lists=*/true, out);
    return out;
}

}  // namespace modelfs::adopt::detail
