#include "modelfs/layouts/view_layout.h"

#include <algorithm>
#include <cstddef>
#include <initializer_list>
#include <map>
#include <stdexcept>
#include <utility>

#include "builtin_folders.h"
#include "modelfs/store/errors.h"
#include "modelfs/store/text.h"
#include "modelfs/store/view_files.h"

namespace modelfs::layouts {

namespace {

using Exts = std::vector<std::string>;

// Each table below is what the tool's own code reads, citing the file that says it. A view
// replaces the tool's models/ folder, so folders the tool keeps elsewhere (A1111's embeddings/ at
// the webui root) are inside the view and the tool is pointed at them (see the header). Where a
// tool loads fixed file names from a folder instead of listing it, kAnyModel is used: every
// single-file format the ecosystem ships, so a file the tool would not open just sits there.
const Exts kAnyModel{".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".sft", ".gguf"};

// A1111 modules/sd_models.py list_models: ext_filter [".ckpt", ".safetensors"]. Forge's
// list_models adds ".gguf", and Forge loads unet-only (Flux) files from there too.
const Exts kA1111Checkpoint{".ckpt", ".safetensors"};
const Exts kForgeCheckpoint{".ckpt", ".safetensors", ".gguf"};
// A1111 list_models ext_blacklist: VAEs parked next to the checkpoint they belong to.
const Exts kA1111CheckpointSkip{".vae.ckpt", ".vae.safetensors"};
// extensions-builtin/Lora/networks.py list_available_networks: [".pt", ".ckpt", ".safetensors"].
const Exts kA1111Lora{".pt", ".ckpt", ".safetensors"};
// modules/sd_vae.py refresh_vae_list: models/VAE/**/*.{ckpt,pt,safetensors}.
const Exts kA1111Vae{".ckpt", ".pt", ".safetensors"};
// modules/sd_vae_approx.py (model.pt, vaeapprox-sdxl.pt) and modules/sd_vae_taesd.py (*.pth).
const Exts kA1111VaeApprox{".pt", ".pth"};
// modules/textual_inversion/textual_inversion.py load_from_dir: .pt .bin .safetensors (and
// embeddings hidden in .png/.webp/.jxl/.avif images, which stay plain files: an image in a model
// folder is far more often a preview than an embedding).
const Exts kA1111Embedding{".pt", ".bin", ".safetensors"};
// modules/hypernetworks/hypernetwork.py list_hypernetworks: **/*.pt.
const Exts kA1111Hypernetwork{".pt"};
// modules/esrgan_model.py, dat_model.py, swinir_model.py: [".pt", ".pth", ".safetensors"];
// realesrgan_model.py and scunet_model.py list a subset of it.
const Exts kA1111Upscaler{".pth", ".pt", ".safetensors"};
// modules/ldsr_model.py loads model.ckpt or model.safetensors.
const Exts kA1111Ldsr{".pth", ".pt", ".safetensors", ".ckpt"};
// modules/codeformer_model.py and gfpgan_model.py: ext_filter [".pth"].
const Exts kA1111FaceRestore{".pth"};
// sd-webui-controlnet (the extension every A1111/Forge ControlNet user has; Forge bundles it as
// extensions-builtin/sd_forge_controlnet) scripts/global_state.py cn_models_exts.
const Exts kA1111ControlNet{".pt", ".pth", ".ckpt", ".safetensors", ".bin"};
// Forge modules_forge/main_entry.py refresh_models: the VAE and text_encoder folders feed the
// "VAE / Text Encoder" menu with these.
const Exts kForgeModules{".pt", ".ckpt", ".bin", ".safetensors", ".gguf"};

// ComfyUI folder_paths.py supported_pt_extensions, used for every model folder.
const Exts kComfy{".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"};
// ComfyUI-GGUF (city96) nodes.py registers ".gguf" for the unet/diffusion_models and
// clip/text_encoders folders; it is how quantized Flux/SD3/Wan run in ComfyUI. Core ComfyUI
// ignores the extra files, so showing them costs nothing.
const Exts kComfyGguf{".ckpt",        ".pt",  ".pt2", ".bin", ".pth",
                      ".safetensors", ".pkl", ".sft", ".gguf"};

// Fooocus modules/config.py get_model_filenames default extension list.
const Exts kFooocus{".pth", ".ckpt", ".bin", ".safetensors", ".fooocus.patch"};
// Fooocus extras/expansion.py loads pytorch_model.bin from path_fooocus_expansion; the tokenizer
// files next to it (.json, .txt) are small and stay plain.
const Exts kFooocusExpansion{".bin", ".safetensors"};

// Diffusers models are folders; an extension list means nothing there.
const Exts kFolderModels{};

ViewFolder folder(std::string path, Category c, const Exts& exts, bool primary,
                  const Exts& exclude = {}) {
    return ViewFolder{std::move(path), c, exts, primary, exclude};
}

}  // namespace

// The built-in views' folders; the registry of tools (tools.cpp) names them.
namespace detail {

// A1111: modules/paths_internal.py (models_path = <data dir>/models) and the folder each loader
// module names; modules/shared_cmd_options.py --embeddings-dir (default <data dir>/embeddings, at
// the webui root: the view has it, see the header). Forge is the same program (modules/ kept) with
// modules_forge/ and backend/ on top.
std::vector<ViewFolder> a1111_folders(bool forge) {
    std::vector<ViewFolder> f;
    if (forge) {
        // Forge lists checkpoints only from Stable-diffusion/ (and --ckpt-dir), recursively, and
        // loads unet-only models (Flux, .gguf) from that list: there is no unet menu. So the
        // forge view shows diffusion models in a sub-folder of Stable-diffusion/, where Forge
        // lists them as "diffusion_models/<name>"; kept apart from checkpoints so a file saved
        // there is still a diffusion model for ComfyUI's diffusion_models/. Listed before its
        // parent: inner folders come first (see ViewLayout).
        f.push_back(folder("Stable-diffusion/diffusion_models", Category::diffusion_model,
                           kForgeCheckpoint, true));
    }
    f.push_back(folder("Stable-diffusion", Category::checkpoint,
                       forge ? kForgeCheckpoint : kA1111Checkpoint, true, kA1111CheckpointSkip));
    if (forge) {
        // Not read by Forge; earlier modelfs versions showed diffusion models here, so files a
        // user still saves there are catalogued as diffusion models rather than left plain.
        f.push_back(folder("unet", Category::diffusion_model, kForgeCheckpoint, false));
    }
    for (auto&& extra : {
             folder("Lora", Category::lora, kA1111Lora, true),
             // networks.py also lists cmd_opts.lyco_dir_backcompat, models/LyCORIS.
             folder("LyCORIS", Category::lora, kA1111Lora, false),
             folder("VAE", Category::vae, forge ? kForgeModules : kA1111Vae, true),
             folder("VAE-approx", Category::vae_approx, kA1111VaeApprox, true),
             // At the webui root in a real install; see the header for --embeddings-dir.
             folder("embeddings", Category::embedding, kA1111Embedding, true),
             folder("hypernetworks", Category::hypernetwork, kA1111Hypernetwork, true),
             folder("ControlNet", Category::controlnet, kA1111ControlNet, true),
             folder("ESRGAN", Category::upscaler, kA1111Upscaler, true),
             folder("RealESRGAN", Category::upscaler, kA1111Upscaler, false),
             folder("SwinIR", Category::upscaler, kA1111Upscaler, false),
             folder("LDSR", Category::upscaler, kA1111Ldsr, false),
             folder("ScuNET", Category::upscaler, kA1111Upscaler, false),
             folder("DAT", Category::upscaler, kA1111Upscaler, false),
             folder("Codeformer", Category::face_restore, kA1111FaceRestore, true),
             folder("GFPGAN", Category::face_restore, kA1111FaceRestore, false),
         }) {
        f.push_back(std::move(extra));
    }
    // Forge modules_forge/main_entry.py: models/text_encoder (and --text-encoder-dir). A1111 has
    // no such folder: its checkpoints carry their text encoders.
    if (forge) f.push_back(folder("text_encoder", Category::text_encoder, kForgeModules, true));
    return f;
}

// SD.Next modules/shared.py, "System Paths" options (ckpt_dir, diffusers_dir, vae_dir, unet_dir,
// te_dir, lora_dir, embeddings_dir, control_dir, *_models_path), all under models/; its
// modules/cmd_args.py keeps --hypernetwork-dir (models/hypernetworks).
std::vector<ViewFolder> sdnext_folders() {
    return {
        folder("Stable-diffusion", Category::checkpoint, kAnyModel, true),
        folder("UNET", Category::diffusion_model, kAnyModel, true),
        folder("Lora", Category::lora, kAnyModel, true),
        // Earlier SD.Next releases had lyco_dir; folders users still keep are catalogued.
        folder("LyCORIS", Category::lora, kAnyModel, false),
        folder("VAE", Category::vae, kAnyModel, true),
        folder("embeddings", Category::embedding, kA1111Embedding, true),
        folder("hypernetworks", Category::hypernetwork, kAnyModel, true),
        folder("control", Category::controlnet, kAnyModel, true),
        // Before control_dir SD.Next (and its ControlNet extension) used models/ControlNet.
        folder("ControlNet", Category::controlnet, kAnyModel, false),
        folder("ESRGAN", Category::upscaler, kA1111Upscaler, true),
        folder("RealESRGAN", Category::upscaler, kA1111Upscaler, false),
        folder("SwinIR", Category::upscaler, kA1111Upscaler, false),
        folder("SCUNet", Category::upscaler, kA1111Upscaler, false),
        folder("BSRGAN", Category::upscaler, kA1111Upscaler, false),
        folder("Codeformer", Category::face_restore, kA1111FaceRestore, true),
        folder("GFPGAN", Category::face_restore, kA1111FaceRestore, false),
        folder("Text-encoder", Category::text_encoder, kAnyModel, true),
        // clip_models_path: the CLIP models of the interrogator; the older text encoder folder.
        folder("CLIP", Category::text_encoder, kAnyModel, false),
        folder("Diffusers", Category::diffusers, kFolderModels, true),
    };
}

// ComfyUI folder_paths.py: every folder_names_and_paths key under models/ (custom_nodes is not),
// in its order, but configs: its [".yaml"] files are small text ComfyUI ships in its own tree and
// users edit, so they stay plain files of the view (as sidecars do), not catalogued models. Keys
// with two folders (text_encoders: text_encoders and the legacy clip; diffusion_models:
// diffusion_models and the legacy unet; controlnet: controlnet and t2i_adapter) show models in the
// first and classify what is saved in the other.
std::vector<ViewFolder> comfyui_folders() {
    return {
        folder("checkpoints", Category::checkpoint, kComfy, true),
        folder("loras", Category::lora, kComfy, true),
        folder("vae", Category::vae, kComfy, true),
        folder("text_encoders", Category::text_encoder, kComfyGguf, true),
        folder("clip", Category::text_encoder, kComfyGguf, false),
        folder("diffusion_models", Category::diffusion_model, kComfyGguf, true),
        folder("unet", Category::diffusion_model, kComfyGguf, false),
        folder("clip_vision", Category::clip_vision, kComfy, true),
        folder("style_models", Category::style_model, kComfy, true),
        folder("embeddings", Category::embedding, kComfy, true),
        folder("diffusers", Category::diffusers, kFolderModels, true),
        folder("vae_approx", Category::vae_approx, kComfy, true),
        folder("controlnet", Category::controlnet, kComfy, true),
        folder("t2i_adapter", Category::controlnet, kComfy, false),
        folder("gligen", Category::gligen, kComfy, true),
        folder("upscale_models", Category::upscaler, kComfy, true),
        folder("latent_upscale_models", Category::latent_upscaler, kComfy, true),
        folder("hypernetworks", Category::hypernetwork, kComfy, true),
        folder("photomaker", Category::photomaker, kComfy, true),
        // folder_paths.py gives classifiers the extension set {""}: files without one. A model
        // name needs an extension, so the usual ones are taken and extension-less files stay
        // plain.
        folder("classifiers", Category::classifier, kComfy, true),
        folder("model_patches", Category::model_patch, kComfy, true),
        folder("audio_encoders", Category::audio_encoder, kComfy, true),
        // Not core ComfyUI: ComfyUI_IPAdapter_plus registers models/ipadapter.
        folder("ipadapter", Category::ipadapter, kComfy, true),
    };
}

// Fooocus modules/config.py: paths_checkpoints, paths_loras, path_embeddings, path_vae_approx,
// path_vae, path_upscale_models, path_inpaint, path_controlnet, path_clip_vision and
// path_fooocus_expansion (models/prompt_expansion/fooocus_expansion), all under models/.
std::vector<ViewFolder> fooocus_folders() {
    return {
        folder("checkpoints", Category::checkpoint, kFooocus, true),
        folder("loras", Category::lora, kFooocus, true),
        folder("embeddings", Category::embedding, kFooocus, true),
        folder("vae_approx", Category::vae_approx, kFooocus, true),
        folder("vae", Category::vae, kFooocus, true),
        folder("upscale_models", Category::upscaler, kFooocus, true),
        // inpaint_v26.fooocus.patch and fooocus_inpaint_head.pth (modules/config.py
        // downloading_inpaint_models).
        folder("inpaint", Category::inpaint, kFooocus, true),
        folder("controlnet", Category::controlnet, kFooocus, true),
        folder("clip_vision", Category::clip_vision, kFooocus, true),
        folder("prompt_expansion", Category::prompt_expansion, kFooocusExpansion, true),
    };
}

// InvokeAI keeps its own database of models and registers a file or folder by path, "in place"
// (Model Manager → Add Models → by path, or Scan Folder): it never moves a model it did not
// install itself. So its view is one folder per category it can load, named after the category,
// with the catalogued file names; a model's path changes only if it is renamed or recategorized.
// InvokeAI probes each file's content for its type, so any common extension is listed.
std::vector<ViewFolder> invokeai_folders() {
    std::vector<ViewFolder> f;
    for (Category c :
         {Category::checkpoint, Category::diffusion_model, Category::lora, Category::vae,
          Category::embedding, Category::controlnet, Category::ipadapter, Category::clip_vision,
          Category::text_encoder, Category::upscaler, Category::style_model, Category::diffusers}) {
        f.push_back(folder(std::string(to_string(c)), c,
                           c == Category::diffusers ? kFolderModels : kAnyModel, true));
    }
    return f;
}

}  // namespace detail

namespace {

// Splits on '/' keeping empty pieces, so callers can reject "a//b" and "a/".
std::vector<std::string_view> components(std::string_view p) {
    std::vector<std::string_view> out;
    std::size_t start = 0;
    while (true) {
        const std::size_t slash = p.find('/', start);
        if (slash == p.npos) {
            out.push_back(p.substr(start));
            return out;
        }
        out.push_back(p.substr(start, slash - start));
        start = slash + 1;
    }
}

// Why a relative path is unusable, or empty when it is fine.
std::string path_problem(std::string_view p) {
    if (p.empty()) return "must not be empty";
    if (p.front() == '/') return "must be relative, not absolute";
    for (std::string_view c : components(p)) {
        if (c.empty()) return "has an empty component";
        if (c == "..") return "\"..\" is not allowed";
        if (c == ".") return "\".\" is not allowed";
    }
    return {};
}

bool ends_with_ci(std::string_view lowered, std::string_view suffix) {
    return lowered.size() >= suffix.size() && lowered.ends_with(suffix);
}

bool is_folder_models(const ViewFolder& f) {
    return f.category == Category::diffusers;
}

// The extension of `file` as this folder sees it: the longest listed one (so ".fooocus.patch"
// wins over a shorter match), or with no list the part from the last dot. Empty when the folder
// does not take the file or nothing would be left for the name.
std::string_view extension_in(const ViewFolder& f, std::string_view file) {
    const std::string lowered = lower(file);
    std::size_t best = 0;
    if (f.extensions.empty()) {
        const std::size_t dot = file.rfind('.');
        if (dot == file.npos || dot == 0 || dot + 1 == file.size()) return {};
        best = file.size() - dot;
    } else {
        for (const auto& e : f.extensions) {
            if (e.size() > best && lowered.size() > e.size() && ends_with_ci(lowered, e)) {
                best = e.size();
            }
        }
        if (best == 0) return {};
    }
    for (const auto& skip : f.exclude) {
        if (ends_with_ci(lowered, skip)) return {};
    }
    return file.substr(file.size() - best);
}

[[noreturn]] void fail(std::string_view layout, const std::string& what) {
    std::string msg = "view layout";
    if (!layout.empty()) msg += " \"" + std::string(layout) + "\"";
    throw StoreError(ErrorKind::bad_input, msg + ": " + what);
}

std::string field(std::size_t i, std::string_view key) {
    return "folders[" + std::to_string(i) + "]." + std::string(key);
}

std::vector<std::string> string_list(std::string_view layout, const nlohmann::json& j,
                                     const std::string& where) {
    if (!j.is_array()) fail(layout, where + " must be an array of strings");
    std::vector<std::string> out;
    for (std::size_t k = 0; k < j.size(); ++k) {
        if (!j[k].is_string()) {
            fail(layout, where + "[" + std::to_string(k) + "] must be a string");
        }
        out.push_back(j[k].get<std::string>());
    }
    return out;
}

}  // namespace

ViewLayout::ViewLayout(std::string name, std::vector<ViewFolder> folders)
    : name_(std::move(name)), folders_(std::move(folders)) {
    if (name_.empty()) fail(name_, "\"name\" must not be empty");
    std::map<Category, std::size_t> primary_of;
    for (std::size_t i = 0; i < folders_.size(); ++i) {
        ViewFolder& f = folders_[i];
        if (const std::string why = path_problem(f.path); !why.empty()) {
            fail(name_, field(i, "path") + " \"" + f.path + "\" " + why);
        }
        // Stored lower-case so matching only ever lowers the incoming name.
        for (std::size_t k = 0; k < f.extensions.size(); ++k) {
            std::string& e = f.extensions[k];
            e = lower(e);
            if (e.size() < 2 || e.front() != '.' || e.find('/') != e.npos) {
                fail(name_, field(i, "extensions") + "[" + std::to_string(k) + "] \"" + e +
                                "\" must be a dot and a suffix, like \".safetensors\"");
            }
        }
        for (std::size_t k = 0; k < f.exclude.size(); ++k) {
            std::string& e = f.exclude[k];
            e = lower(e);
            if (e.empty() || e.find('/') != e.npos) {
                fail(name_, field(i, "exclude") + "[" + std::to_string(k) + "] \"" + e +
                                "\" must be a non-empty file-name ending");
            }
        }
        for (std::size_t j = 0; j < i; ++j) {
            const std::string& other = folders_[j].path;
            if (other == f.path) {
                fail(name_,
                     field(i, "path") + " \"" + f.path + "\" duplicates " + field(j, "path"));
            }
            // A folder inside another is allowed only listed first and of another category
            // (Forge's Stable-diffusion/diffusion_models): then every "first folder that holds
            // this path" lookup finds the inner one, and no model of the outer category can be
            // shown inside it (path_for's round trip refuses). Otherwise a model name like
            // "LyCORIS/x" in "Lora" would be ambiguous.
            const auto inside = [](const std::string& a, const std::string& b) {
                return a.size() > b.size() && a.starts_with(b) && a[b.size()] == '/';
            };
            if (inside(f.path, other) ||
                (inside(other, f.path) && folders_[j].category == f.category)) {
                fail(name_, field(i, "path") + " \"" + f.path + "\" and " + field(j, "path") +
                                " \"" + other +
                                "\" are nested; a folder inside another must be of another "
                                "category and listed before it");
            }
        }
        if (f.primary) {
            const auto [it, fresh] = primary_of.emplace(f.category, i);
            if (!fresh) {
                fail(name_, field(i, "primary") + ": category \"" +
                                std::string(to_string(f.category)) +
                                "\" already has a primary folder, " + field(it->second, "path") +
                                " \"" + folders_[it->second].path + "\"");
            }
        }
    }
}

ViewLayout ViewLayout::from_json(const nlohmann::json& j) {
    if (!j.is_object()) fail({}, "expected a JSON object");
    std::string name;
    if (auto it = j.find("name"); it == j.end() || !it->is_string()) {
        fail({}, "\"name\" must be a string");
    } else {
        name = it->get<std::string>();
    }
    for (const auto& [key, value] : j.items()) {
        // Strict keys: a typo like "folder" would otherwise yield an empty view silently.
        if (key != "name" && key != "folders" && key != "show_versions")
            fail(name, "unknown key \"" + key + "\"");
    }
    bool show_versions = false;
    if (auto it = j.find("show_versions"); it != j.end()) {
        if (!it->is_boolean()) fail(name, "\"show_versions\" must be true or false");
        show_versions = it->get<bool>();
    }
    const auto fs_it = j.find("folders");
    if (fs_it == j.end() || !fs_it->is_array()) fail(name, "\"folders\" must be an array");

    std::vector<ViewFolder> folders;
    std::vector<bool> primary_given;
    for (std::size_t i = 0; i < fs_it->size(); ++i) {
        const nlohmann::json& e = (*fs_it)[i];
        if (!e.is_object()) fail(name, "folders[" + std::to_string(i) + "] must be an object");
        for (const auto& [key, value] : e.items()) {
            if (key != "path" && key != "category" && key != "extensions" && key != "primary" &&
                key != "exclude") {
                fail(name, field(i, key) + ": unknown key");
            }
        }
        ViewFolder f;
        if (auto it = e.find("path"); it == e.end() || !it->is_string()) {
            fail(name, field(i, "path") + " must be a string");
        } else {
            f.path = it->get<std::string>();
        }
        if (auto it = e.find("category"); it == e.end() || !it->is_string()) {
            fail(name, field(i, "category") + " must be a string");
        } else if (auto c = parse_category(it->get<std::string>())) {
            f.category = *c;
        } else {
            fail(name,
                 field(i, "category") + ": unknown category \"" + it->get<std::string>() + "\"");
        }
        if (auto it = e.find("extensions"); it != e.end()) {
            f.extensions = string_list(name, *it, field(i, "extensions"));
        }
        if (auto it = e.find("exclude"); it != e.end()) {
            f.exclude = string_list(name, *it, field(i, "exclude"));
        }
        const auto it = e.find("primary");
        primary_given.push_back(it != e.end());
        if (it != e.end()) {
            if (!it->is_boolean()) fail(name, field(i, "primary") + " must be true or false");
            f.primary = it->get<bool>();
        }
        folders.push_back(std::move(f));
    }
    // Default primary: the first folder of a category that leaves the choice open, unless some
    // folder of that category claims it explicitly.
    for (std::size_t i = 0; i < folders.size(); ++i) {
        if (primary_given[i]) continue;
        const bool taken = std::any_of(folders.begin(), folders.end(), [&](const ViewFolder& o) {
            return o.category == folders[i].category && o.primary;
        });
        if (!taken) folders[i].primary = true;
    }
    ViewLayout out(std::move(name), std::move(folders));
    out.set_show_versions(show_versions);
    return out;
}

nlohmann::json ViewLayout::to_json() const {
    nlohmann::json folders = nlohmann::json::array();
    for (const auto& f : folders_) {
        nlohmann::json e{
            {"path", f.path},
            {"category", std::string(to_string(f.category))},
            {"extensions", f.extensions},
            {"primary", f.primary},
        };
        if (!f.exclude.empty()) e["exclude"] = f.exclude;
        folders.push_back(std::move(e));
    }
    return nlohmann::json{
        {"name", name_}, {"folders", std::move(folders)}, {"show_versions", show_versions_}};
}

std::optional<std::string> ViewLayout::folder_for(Category c) const {
    for (const auto& f : folders_) {
        if (f.primary && f.category == c) return f.path;
    }
    return std::nullopt;
}

std::optional<ViewPath> ViewLayout::classify(std::string_view rel_path) const {
    if (!path_problem(rel_path).empty()) return std::nullopt;
    for (const auto& f : folders_) {
        // A folder inside another is listed first (checked at construction), so the first match
        // is the innermost.
        if (rel_path.size() <= f.path.size() + 1 || !rel_path.starts_with(f.path) ||
            rel_path[f.path.size()] != '/') {
            continue;
        }
        const std::string_view rest = rel_path.substr(f.path.size() + 1);
        if (is_folder_models(f)) {
            return ViewPath{f.category, f.path, std::string(rest), {}};
        }
        const std::size_t slash = rest.rfind('/');
        const std::string_view file = slash == rest.npos ? rest : rest.substr(slash + 1);
        const std::string_view ext = extension_in(f, file);
        if (ext.empty()) return std::nullopt;
        return ViewPath{f.category, f.path, std::string(rest), std::string(ext)};
    }
    return std::nullopt;
}

std::optional<std::string> ViewLayout::path_for(const Model& m, const ModelVersion& v) const {
    const auto it = std::find_if(folders_.begin(), folders_.end(), [&](const ViewFolder& f) {
        return f.primary && f.category == m.category;
    });
    if (it == folders_.end()) return std::nullopt;
    if (is_folder_models(*it) != v.is_tree()) return std::nullopt;
    const std::string path = it->path + "/" + m.name;
    // Checking the round trip instead of re-deriving the rules here keeps the two directions from
    // drifting apart: a name the tool would skip, an unlisted extension, or a name whose tail the
    // folder would read as part of a longer extension (".fooocus" + ".patch") all fail it.
    const auto back = classify(path);
    if (!back || back->category != m.category || back->folder != it->path || back->name != m.name ||
        back->ext != (v.is_tree() ? std::string() : v.ext)) {
        return std::nullopt;
    }
    return path;
}

std::optional<std::string> ViewLayout::shown_at(const Model& m, const ModelVersion& v) const {
    if (m.category == Category::file) return view_file_path(m.name, name_);
    return path_for(m, v);
}

}  // namespace modelfs::layouts
