// Which reader of its own configuration each tool adopt detects gets: the part of a tool's row
// (modelfs/layouts/tools.h) that reads files, kept here by tool name because the layouts library
// never touches the file system. AdoptDetect.EveryDetectedToolHasAConfigReader keeps the two in
// step.
#include <array>
#include <system_error>
#include <utility>

#include "install_config.h"

namespace modelfs::adopt::detail {

namespace {

namespace stdfs = std::filesystem;

bool is_file(const stdfs::path& p) {
    std::error_code ec;
    return stdfs::is_regular_file(p, ec);
}

// An install without the file keeps the tool's defaults: nothing to read, nothing to note.
ConfigDirs comfyui(const stdfs::path& root) {
    const stdfs::path f = root / "extra_model_paths.yaml";
    return is_file(f) ? comfyui_extra_model_paths(f) : ConfigDirs{};
}
ConfigDirs fooocus(const stdfs::path& root) {
    const stdfs::path f = root / "config.txt";
    return is_file(f) ? fooocus_config(f, root) : ConfigDirs{};
}
ConfigDirs sdnext(const stdfs::path& root) {
    const stdfs::path f = root / "config.json";
    return is_file(f) ? sdnext_config(f, root) : ConfigDirs{};
}

// Forge keeps A1111's command-line flags and folders.
constexpr std::array<std::pair<std::string_view, ConfigReader>, 5> kReaders{{
    {"a1111", a1111_dirs},
    {"forge", a1111_dirs},
    {"sdnext", sdnext},
    {"comfyui", comfyui},
    {"fooocus", fooocus},
}};

}  // namespace

ConfigReader config_reader(std::string_view tool) {
    for (const auto& [name, read] : kReaders) {
        if (name == tool) return read;
    }
    return nullptr;
}

std::vector<std::string_view> tools_with_config_readers() {
    std::vector<std::string_view> out;
    for (const auto& [name, read] : kReaders) out.push_back(name);
    return out;
}

}  // namespace modelfs::adopt::detail
