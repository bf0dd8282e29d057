// Reading the tools' own configuration files for the model folders they name (detect_install's
// helpers, one file per tool, found through config_reader()). Each reader returns folders as the
// file names them (made absolute, not checked) plus notes for whatever it could not use;
// detect_install checks existence, drops folders inside the models folder and duplicates. No reader
// throws for a bad file: a user's broken config must never stop an adopt, only be reported.
#pragma once

#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace modelfs::adopt::detail {

struct ConfiguredDir {
    std::filesystem::path path;  // absolute, lexically normal
    std::string view_folder;     // the tool's view folder it stands for ("loras")
    std::string origin;          // "extra_model_paths.yaml: comfyui.loras"
};

struct ConfigDirs {
    std::vector<ConfiguredDir> dirs;
    std::vector<std::string> notes;
    // SD.Next's models_dir setting (or A1111 --models-dir): a models folder other than
    // root/models; empty when the file keeps the default.
    std::filesystem::path models_dir;
};

// ComfyUI extra_model_paths.yaml (a hand-parsed subset of YAML, see comfyui_paths.cpp).
ConfigDirs comfyui_extra_model_paths(const std::filesystem::path& yaml_file);
// Fooocus config.txt (JSON); relative paths resolve against `root`.
ConfigDirs fooocus_config(const std::filesystem::path& config_txt,
                          const std::filesystem::path& root);
// SD.Next config.json; relative paths resolve against `root`.
ConfigDirs sdnext_config(const std::filesystem::path& config_json,
                         const std::filesystem::path& root);
// A1111 / Forge: the root embeddings/ folder and the folder flags in webui-user.sh.
ConfigDirs a1111_dirs(const std::filesystem::path& root);

// What detect_install runs on an install's root folder for a tool (config_readers.cpp); an
// install without the tool's file gets empty ConfigDirs.
using ConfigReader = ConfigDirs (*)(const std::filesystem::path& root);
// The reader of the tool named `tool` (layouts::Tool::name); nullptr when it has none.
ConfigReader config_reader(std::string_view tool);
// The tool names that have a reader, for the test that every detected tool has one.
std::vector<std::string_view> tools_with_config_readers();

// "~", "~user", "$VAR" and "${VAR}" expanded as Python's os.path.expanduser(expandvars()) does;
// an unset variable is left as written.
std::string expand_user_and_vars(std::string_view s);

// The comfyui view folder a ComfyUI folder key stands for: itself, or the current name of a
// legacy key (unet -> diffusion_models, clip -> text_encoders).
std::string comfyui_view_folder(std::string_view key);

// `p` made absolute against `base` and lexically normalised, without a trailing '/'.
std::filesystem::path absolute_against(const std::filesystem::path& p,
                                       const std::filesystem::path& base);

// `p` is `dir` or inside it (compared component by component; give both canonical).
bool inside(const std::filesystem::path& p, const std::filesystem::path& dir);
// weakly_canonical(p), or p lexically normalised when that fails (a folder we may not enter).
std::filesystem::path canonical_or_normal(const std::filesystem::path& p);

// A tool's JSON settings file (Fooocus config.txt, SD.Next config.json) as an object; std::nullopt
// with a note in `notes` when it cannot be read or is not a JSON object.
std::optional<nlohmann::json> read_json_settings(const std::filesystem::path& file,
                                                 std::vector<std::string>& notes);

// A settings key and the view folder it feeds.
using FolderKey = std::pair<const char*, const char*>;
// Adds to `out` the folders that JSON settings (read from a file named `fname`) name under `keys`:
// each a path, relative ones against `root`; an empty one keeps the tool's default and is
// skipped; anything else is noted and ignored. With `lists`, a key may also hold a list of paths
// (Fooocus reads every entry).
void add_json_folders(const nlohmann::json& settings, std::span<const FolderKey> keys,
                      const std::string& fname, const std::filesystem::path& root, bool lists,
                      ConfigDirs& out);

}  // namespace modelfs::adopt::detail
