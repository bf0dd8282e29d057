// Finding what `modelfs adopt` works on: installs of known AI tools (detect_install) and every
// file their models folders hold, classified the way the tool's view would classify it
// (scan_install). Reads the file system and the tools' own configuration files; never writes,
// never hashes. Planning and moving are in adopt.h.
//
// Install detection. A folder is an install when the files its tool's repository keeps at the
// root are there: the markers of the tool's row in the registry of tools (modelfs/layouts/tools.h;
// known_install_markers() lists them). Its models folder is root/models (SD.Next's config.json
// models_dir and A1111's --models-dir / --data-dir move it); that is what the view mount replaces.
// The folders the tool's configuration adds are read too and left in place: ComfyUI
// extra_model_paths.yaml (a documented subset of YAML, parsed by hand), Fooocus config.txt path_*,
// SD.Next config.json *_dir, A1111 / Forge embeddings/ at the root and the folder flags in
// webui-user.sh. A folder that is inside models/ already, named twice, or missing is not listed
// again; what cannot be read becomes an Install note naming the file and line, never an error.
// Without arguments the CLI looks in default_install_locations(): each tool's home folders from
// the registry and StabilityMatrix's Data/Packages/* (under ~/ and ~/.config/).
//
// Scanning. Every file reachable from those folders, following folder links (their targets become
// ModelDirs kept in place) and never going round a loop, is one ScannedFile. A file is a model
// when the view shows it at its exact path (its category's primary folder, a listed extension, a
// name the tool does not skip, the first of two files that would be the same model); a sidecar
// when it is "<stem of a model beside it>.<anything>" (longest stem wins); anything else is plain,
// with `problem` saying why, and adopt keeps it as a plain file at its path.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "modelfs/layouts/view_layout.h"
#include "modelfs/store/category.h"

namespace modelfs::adopt {

// One folder a tool reads models from.
struct ModelDir {
    std::filesystem::path path;  // absolute
    // The folder of the tool's view it stands for ("loras", "Stable-diffusion"); empty for the
    // install's models folder itself, whose sub-folders are matched against the view as they are.
    std::string view_folder;
    // Inside the install's models folder, which the mount replaces. False for folders the tool's
    // configuration points to elsewhere (ComfyUI extra_model_paths.yaml, Fooocus config.txt,
    // SD.Next config.json) and for the targets of folder links: adopt leaves those in place.
    bool replaced = false;
    // Why it is read, for reports: "layout", "extra_model_paths.yaml: comfyui.loras",
    // "config.txt: path_loras", "link models/checkpoints -> /data/sd".
    std::string origin;
};

struct Install {
    std::string tool;                  // the tool's name in the registry (layouts::Tool::name)
    std::filesystem::path root;        // the install folder (absolute, canonical)
    std::filesystem::path models_dir;  // root/models: what the view mount replaces
    std::vector<ModelDir> dirs;        // models_dir first, then folders outside it
    std::vector<std::string> notes;    // detection remarks ("config.txt: not JSON, ignored")
};

// The install at `dir`, told apart by its tool's install markers (modelfs/layouts/tools.h; the
// first tool in detection order whose markers are there). std::nullopt when `dir` is not an
// install of a known tool.
std::optional<Install> detect_install(const std::filesystem::path& dir);

// What detect_install looks for, per tool, for "not an install of a known tool: DIR (looked
// for ...)".
std::string_view known_install_markers();
// The tools detect_install knows, for messages: "A1111, Forge, SD.Next, ComfyUI, Fooocus".
std::string known_tool_names();

// The usual install places that hold an install: each tool's home folders in the registry's order
// (~/stable-diffusion-webui, ~/stable-diffusion-webui-forge, ~/automatic and ~/sdnext, ~/ComfyUI,
// ~/Fooocus), then StabilityMatrix's Data/Packages/* (~/StabilityMatrix and
// ~/.config/StabilityMatrix), each install once. $HOME decides where ~ is.
std::vector<std::filesystem::path> default_install_locations();

struct ScannedFile {
    enum class Kind {
        model,        // a file the view shows as a model at view_rel
        sidecar,      // a file beside a model, "<model stem><suffix>" in the same folder
        plain,        // anything else in the models folder (configs, notes, diffusers parts)
        broken_link,  // a symlink whose target does not exist; link_target says where it pointed
        unreadable,   // could not be opened or listed; problem says why
        special,      // a socket, fifo or device node
    } kind = Kind::plain;
    std::filesystem::path path;  // as the tool reaches it (possibly through a linked folder)
    std::filesystem::path real;  // with every symlink resolved; equal to path when none
    // Where the file sits inside the tool's view ("loras/sdxl/foo.safetensors"); for files of a
    // folder outside models_dir, where the view would show them.
    std::string view_rel;
    bool replaced = false;  // goes away when models_dir becomes a mount (see ModelDir::replaced)
    std::string origin;     // the ModelDir::origin it was found through
    // model: what the view makes of view_rel; sidecar: its model's category and name.
    Category category = Category::other;
    std::string name;  // "sdxl/foo"
    std::string ext;   // ".safetensors", as spelled
    // sidecar: the view_rel of its model, and the suffix after the model's stem (".preview.png").
    std::string sidecar_of;
    std::string suffix;
    // lstat of `real` at scan time: a later change means the file changed while adopting.
    std::uint64_t size = 0;
    dev_t dev = 0;
    ino_t ino = 0;
    std::int64_t mtime_ns = 0, ctime_ns = 0;
    mode_t mode = 0;
    // The file's own symlink target as written (readlink), also for a broken link; empty for a
    // file reached through a linked folder (origin names that link).
    std::string link_target;
    // unreadable / broken_link / special: the error, naming the path. plain: why the view does
    // not show it as a model or sidecar ("in LyCORIS/, which the a1111 view shows in Lora/").
    std::string problem;
};

struct InstallScan {
    Install install;
    std::vector<ScannedFile> files;  // sorted by path
    std::vector<std::string> notes;  // e.g. "models/foo -> /gone: broken link"
    // Root scanning another user's install (modelfs/store/safe_open.h): that user ("alice (uid
    // 1001)"), and the configured folders outside the install left out for it.
    std::string acting_for;
    std::vector<std::filesystem::path> outside;
    // Why the models folder itself may not be adopted for that user (outside the install, or
    // not theirs to change): the plan skips the install with this reason.
    std::string models_refused;
};

struct ScanOptions {
    // Root acting for a user also scans folders the tool's configuration names outside the
    // install (`modelfs adopt --outside-install`); files there are judged by the same rules.
    bool outside_install = false;
};

// Walks every ModelDir of `inst` (following folder links, never leaving a loop) and classifies
// each file with `layout` (the tool's view). Never throws for a file; problems are reported in
// the result. When root scans the install of another user (SUDO_UID, else the install's owner),
// no link is followed (a link becomes an unreadable entry naming it), files and folders that
// user could not read or change are unreadable entries saying so, and configured folders outside
// the install are left out unless `opts.outside_install`.
InstallScan scan_install(const Install& inst, const layouts::ViewLayout& layout,
                         const ScanOptions& opts = {});

}  // namespace modelfs::adopt
