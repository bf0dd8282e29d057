// Scans a folder as an install of `tool` without detect_install, so tests of planning and moving
// need no install markers: the real scan_install on an Install made by hand (root/models, the
// tool's built-in view). AdoptTest and the CLI tests use detect_install as well.
#pragma once

#include <filesystem>
#include <string>

#include "modelfs/adopt/scan.h"
#include "modelfs/layouts/view_layout.h"

namespace modelfs::adopt::fake {

inline InstallScan fake_scan(const std::string& tool, const std::filesystem::path& root) {
    Install inst;
    inst.tool = tool;
    inst.root = std::filesystem::weakly_canonical(root);
    inst.models_dir = inst.root / "models";
    inst.dirs.push_back(ModelDir{inst.models_dir, "", true, "layout"});
    return scan_install(inst, *layouts::ViewLayout::builtin(tool));
}

}  // namespace modelfs::adopt::fake
