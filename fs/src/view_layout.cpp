#include "modelfs/fs/view_layout.h"

#include <algorithm>
#include <cstddef>
#include <initializer_list>
#include <map>
#include <stdexcept>
#include <utility>

namespace modelfs::fs {

namespace {

std::string lower(std::string_view s) {
    std::string out(s);
    for (char& c : out) {
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    }
    return out;
}

using Exts = std::vector<std::string>;

// The tables below follow /work/shared/reference/tool-layouts.md, which was gathered from the
// tools' own sources: ComfyUI folder_paths.py (supported_pt_extensions), A1111/Forge
// modules/sd_models.py, modules/modelloader.py and friends, Fooocus config.txt / modules/config.py,
// SD.Next config.json. Where it names no extension list, kAnyModel is used: every single-file
// format the ecosystem ships, so a tool that is pickier just ignores the extra files.
const Exts kAnyModel{".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".sft", ".gguf"};

// A1111 sd_models.list_models: ext_filter [".ckpt", ".safetensors"]; Forge adds ".gguf".
const Exts kA1111Checkpoint{".ckpt", ".safetensors"};
const Exts kForgeCheckpoint{".ckpt", ".safetensors", ".gguf"};
// A1111 skips these in Stable-diffusion/ (ext_blacklist): they are VAEs named after a checkpoint.
const Exts kA1111CheckpointSkip{".vae.ckpt", ".vae.safetensors"};
const Exts kA1111Lora{".pt", ".ckpt", ".safetensors"};
const Exts kA1111Embedding{".pt", ".bin", ".safetensors"};
const Exts kA1111Upscaler{".pth", ".pt", ".safetensors"};
// A1111's LDSR loads model.ckpt (modules/ldsr_model.py), so a download into LDSR/ is a .ckpt.
const Exts kA1111Ldsr{".pth", ".pt", ".safetensors", ".ckpt"};

// ComfyUI folder_paths.supported_pt_extensions, used for every model folder.
const Exts kComfy{".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"};
// ComfyUI-GGUF (city96), the de-facto way to run quantized Flux/SD3 in ComfyUI, lists ".gguf"
// from the unet/diffusion_models and clip/text_encoders folders. Core ComfyUI ignores the extra
// files, so showing them costs nothing and keeps GGUF users on the mount.
const Exts kComfyGguf{".ckpt",        ".pt",  ".pt2", ".bin", ".pth",
                      ".safetensors", ".pkl", ".sft", ".gguf"};

// Fooocus modules/config.py get_model_filenames default extension list.
const Exts kFooocus{".pth", ".ckpt", ".bin", ".safetensors", ".fooocus.patch"};

// Diffusers models are folders; an extension list means nothing there.
const Exts kFolderModels{};

ViewFolder folder(std::string path, Category c, const Exts& exts, bool primary,
                  const Exts& exclude = {}) {
    return ViewFolder{std::move(path), c, exts, primary, exclude};
}

std::vector<ViewFolder> a1111_folders(bool forge) {
    std::vector<ViewFolder> f{
        folder("Stable-diffusion", Category::checkpoint,
               forge ? kForgeCheckpoint : kA1111Checkpoint, true, kA1111CheckpointSkip),
    };
    if (forge) f.push_back(folder("unet", Category::diffusion_model, kAnyModel, true));
    for (auto&& extra : {
             folder("Lora", Category::lora, kA1111Lora, true),
             // The LyCORIS extension's folder; the built-in Lora loader reads it too.
             folder("LyCORIS", Category::lora, kA1111Lora, false),
             folder("VAE", Category::vae, kAnyModel, true),
             folder("VAE-approx", Category::vae_approx, kAnyModel, true),
             // At the webui root in a real install; see the header for --embeddings-dir.
             folder("embeddings", Category::embedding, kA1111Embedding, true),
             folder("hypernetworks", Category::hypernetwork, kAnyModel, true),
             folder("ControlNet", Category::controlnet, kAnyModel, true),
             folder("ESRGAN", Category::upscaler, kA1111Upscaler, true),
             folder("RealESRGAN", Category::upscaler, kA1111Upscaler, false),
             folder("SwinIR", Category::upscaler, kA1111Upscaler, false),
             folder("LDSR", Category::upscaler, kA1111Ldsr, false),
             folder("ScuNET", Category::upscaler, kA1111Upscaler, false),
             folder("text_encoder", Category::text_encoder, kAnyModel, true),
         }) {
        f.push_back(std::move(extra));
    }
    return f;
}

std::vector<ViewFolder> sdnext_folders() {
    return {
        folder("Stable-diffusion", Category::checkpoint, kAnyModel, true),
        folder("UNET", Category::diffusion_model, kAnyModel, true),
        folder("Lora", Category::lora, kAnyModel, true),
        folder("LyCORIS", Category::lora, kAnyModel, false),
        folder("VAE", Category::vae, kAnyModel, true),
        folder("embeddings", Category::embedding, kA1111Embedding, true),
        folder("hypernetworks", Category::hypernetwork, kAnyModel, true),
        folder("ControlNet", Category::controlnet, kAnyModel, true),
        folder("ESRGAN", Category::upscaler, kA1111Upscaler, true),
        folder("CLIP", Category::text_encoder, kAnyModel, true),
        folder("Diffusers", Category::diffusers, kFolderModels, true),
    };
}

std::vector<ViewFolder> comfyui_folders() {
    return {
        folder("checkpoints", Category::checkpoint, kComfy, true),
        folder("diffusion_models", Category::diffusion_model, kComfyGguf, true),
        folder("unet", Category::diffusion_model, kComfyGguf, false),  // legacy name
        folder("loras", Category::lora, kComfy, true),
        folder("vae", Category::vae, kComfy, true),
        folder("vae_approx", Category::vae_approx, kComfy, true),
        folder("embeddings", Category::embedding, kComfy, true),
        folder("hypernetworks", Category::hypernetwork, kComfy, true),
        folder("controlnet", Category::controlnet, kComfy, true),
        folder("t2i_adapter", Category::controlnet, kComfy, false),
        folder("upscale_models", Category::upscaler, kComfy, true),
        folder("text_encoders", Category::text_encoder, kComfyGguf, true),
        folder("clip", Category::text_encoder, kComfyGguf, false),  // legacy name
        folder("clip_vision", Category::clip_vision, kComfy, true),
        folder("diffusers", Category::diffusers, kFolderModels, true),
        // Not core ComfyUI: ComfyUI_IPAdapter_plus registers models/ipadapter.
        folder("ipadapter", Category::ipadapter, kComfy, true),
    };
}

std::vector<ViewFolder> fooocus_folders() {
    return {
        folder("checkpoints", Category::checkpoint, kFooocus, true),
        folder("loras", Category::lora, kFooocus, true),
        folder("vae", Category::vae, kFooocus, true),
        folder("vae_approx", Category::vae_approx, kFooocus, true),
        folder("embeddings", Category::embedding, kFooocus, true),
        folder("controlnet", Category::controlnet, kFooocus, true),
        folder("upscale_models", Category::upscaler, kFooocus, true),
        folder("clip", Category::text_encoder, kFooocus, true),
        folder("clip_vision", Category::clip_vision, kFooocus, true),
    };
}

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
    throw std::invalid_argument(msg + ": " + what);
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
            // Nested folders would make a model name like "LyCORIS/x" in "Lora" ambiguous.
            const auto inside = [](const std::string& a, const std::string& b) {
                return a.size() > b.size() && a.starts_with(b) && a[b.size()] == '/';
            };
            if (inside(f.path, other) || inside(other, f.path)) {
                fail(name_, field(i, "path") + " \"" + f.path + "\" and " + field(j, "path") +
                                " \"" + other + "\" are nested; folders must be disjoint");
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

std::optional<ViewLayout> ViewLayout::builtin(std::string_view name) {
    const std::string n = lower(name);
    if (n == "a1111" || n == "automatic1111") return ViewLayout("a1111", a1111_folders(false));
    if (n == "forge") return ViewLayout("forge", a1111_folders(true));
    if (n == "sdnext") return ViewLayout("sdnext", sdnext_folders());
    if (n == "comfyui") return ViewLayout("comfyui", comfyui_folders());
    if (n == "fooocus") return ViewLayout("fooocus", fooocus_folders());
    return std::nullopt;
}

std::vector<std::string> ViewLayout::builtin_names() {
    return {"a1111", "forge", "sdnext", "comfyui", "fooocus"};
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
        // Folders are disjoint (checked at construction), so the first match is the only one.
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
        return ViewPath{f.category, f.path, std::string(rest.substr(0, rest.size() - ext.size())),
                        std::string(ext)};
    }
    return std::nullopt;
}

std::optional<std::string> ViewLayout::path_for(const Model& m, const ModelVersion& v) const {
    const auto it = std::find_if(folders_.begin(), folders_.end(), [&](const ViewFolder& f) {
        return f.primary && f.category == m.category;
    });
    if (it == folders_.end()) return std::nullopt;
    if (is_folder_models(*it) != v.is_tree()) return std::nullopt;
    const std::string path = it->path + "/" + m.name + (v.is_tree() ? std::string() : v.ext);
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

}  // namespace modelfs::fs
