// How one AI tool expects its models folder to look: which sub-folder holds which category, and
// which file names the tool lists there. The mount uses a ViewLayout to turn the catalog into a
// directory tree (path_for) and to understand files written into that tree (classify).
//
// A view replaces the tool's `models/` folder, so every path here is relative to it:
//   ComfyUI  ComfyUI/models                -> checkpoints/x.safetensors, loras/sdxl/foo.safetensors
//   A1111    stable-diffusion-webui/models -> Stable-diffusion/x.safetensors, Lora/foo.safetensors
// A1111 and Forge read textual-inversion embeddings from `embeddings/` at the webui root, not under
// models/ (modules/shared_cmd_options.py --embeddings-dir, default <data dir>/embeddings). Their
// view still has `embeddings/` inside it (next to Stable-diffusion/), and users start the webui
// with `--embeddings-dir <mount>/embeddings` so one mount serves everything (a view cannot reach
// above the models/ folder it replaces).
// Forge lists diffusion models (Flux, .gguf) only among its checkpoints, so its view shows them
// in Stable-diffusion/diffusion_models/, a folder inside another (see ViewLayout's constructor).
//
// Pure logic: no file system access, no FUSE. Folder paths use '/', are matched case-sensitively
// (Linux), and extensions case-insensitively (the tools lower-case before comparing).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "modelfs/store/catalog.h"
#include "modelfs/store/category.h"

namespace modelfs::layouts {

struct ViewFolder {
    std::string path;  // relative to the view root, '/'-separated, e.g. "loras" or "ESRGAN"
    Category category = Category::other;
    // Lower-case, with the dot (".safetensors", ".fooocus.patch"); empty means any extension.
    std::vector<std::string> extensions;
    // The one folder of its category in which the catalog's models are shown. A tool may read a
    // category from several folders (A1111 Lora and LyCORIS, ComfyUI diffusion_models and the
    // legacy unet); showing a model in all of them would list it twice in the tool's menus, so
    // the others only classify files that users or the tool write there.
    bool primary = false;
    // Lower-case file-name endings the tool skips in this folder even though the extension is
    // accepted: A1111 ignores "*.vae.safetensors" in Stable-diffusion/ because users park VAEs
    // next to the checkpoint they belong to. Empty for almost every folder.
    std::vector<std::string> exclude;

    bool operator==(const ViewFolder&) const = default;
};

// What a path inside a view means.
struct ViewPath {
    Category category = Category::other;
    std::string folder;  // the ViewFolder::path it is in
    // The model name: the path below the folder, extension included ("sdxl/foo.safetensors";
    // store/include/modelfs/store/model_name.h).
    std::string name;
    // The extension the folder lists that the name ends with, as spelled in the path
    // (".SafeTensors" stays so); compare it case-insensitively. Empty for a folder model
    // (diffusers).
    std::string ext;

    bool operator==(const ViewPath&) const = default;
};

class ViewLayout {
  public:
    // Validates as from_json does; throws StoreError (bad_input) on a bad layout. Folders are
    // disjoint, except that a folder may lie inside another of another category when it is
    // listed before it: the inner one then owns every path below it.
    ViewLayout(std::string name, std::vector<ViewFolder> folders);

    // The view of a tool of the registry (modelfs/layouts/tools.h) by its name or an alias:
    // "a1111" (alias "automatic1111"), "forge", "sdnext", "comfyui", "fooocus", "invokeai";
    // case-insensitive.
    static std::optional<ViewLayout> builtin(std::string_view name);
    // The canonical names builtin() accepts, in the registry's stable order.
    static std::vector<std::string> builtin_names();

    // A user-defined layout:
    //   {"name": "mytool",
    //    "folders": [{"path": "loras", "category": "lora", "extensions": [".safetensors"],
    //                 "primary": true, "exclude": [".vae.safetensors"]}]}
    // "extensions" (default: any), "primary" and "exclude" (default: none) are optional. When no
    // folder of a category says "primary", the first one listed without the key becomes primary,
    // so simple layouts need not mention it. Categories accept the aliases parse_category()
    // knows. Throws StoreError (bad_input) naming the offending field, e.g.
    // `folders[2].path: ".." is not allowed`.
    static ViewLayout from_json(const nlohmann::json& j);
    // Writes every field explicitly; from_json(to_json()) == *this.
    nlohmann::json to_json() const;

    const std::string& name() const { return name_; }
    const std::vector<ViewFolder>& folders() const { return folders_; }

    // Version aliases (NAME@LABEL.EXT) are listed in this view's folders, not only found by
    // lookup. Off by default: tools would offer every version as a separate model. Layout JSON
    // key "show_versions" (optional, default false); the config file can set it for built-ins.
    bool show_versions() const { return show_versions_; }
    void set_show_versions(bool on) { show_versions_ = on; }

    // The primary folder of a category, or std::nullopt when the tool has none (the model is
    // then not shown in this view at all).
    std::optional<std::string> folder_for(Category c) const;

    // What `rel_path` (relative to the view root, no leading '/') names: a model file the tool
    // would list in one of the folders, primary or not. std::nullopt for the folders themselves,
    // paths outside category folders ("configs/x.yaml"), extensions the folder does not accept,
    // skipped names, and malformed paths (empty, ".", ".." components).
    //
    // In a diffusers folder the models are folders; without the catalog the boundary between a
    // model's folder and the files inside it is unknown, so the whole remainder is returned as
    // the name with an empty ext and the mount resolves it against the catalog.
    std::optional<ViewPath> classify(std::string_view rel_path) const;

    // Where version `v` of `m` appears: "<primary folder>/<name>" (the name ends with v.ext) for a
    // single file and for a multi-file (tree) version, which only diffusers folders show.
    // std::nullopt when the view does not show it: no folder for the category, an extension the
    // folder does not list, a name the tool skips, or a single file in a diffusers folder. Whenever
    // it returns a path, classify() of that path gives back m.category, m.name and v.ext.
    std::optional<std::string> path_for(const Model& m, const ModelVersion& v) const;

    // Where this view shows version `v` of `m`, for every category: a view's own stored file
    // (category `file`, store/view_files.h) at the path it was saved at, in that view alone;
    // any other model where path_for puts it. The one answer the mount's tree, adopt's plan and
    // `lock --view` use.
    std::optional<std::string> shown_at(const Model& m, const ModelVersion& v) const;

    bool operator==(const ViewLayout&) const = default;

  private:
    std::string name_;
    std::vector<ViewFolder> folders_;
    bool show_versions_ = false;
};

}  // namespace modelfs::layouts
