#include "modelfs/store/category.h"

#include <array>
#include <string>
#include <utility>

#include "modelfs/store/gguf.h"
#include "modelfs/store/model_check.h"
#include "modelfs/store/safetensors.h"

namespace modelfs {

namespace {

constexpr std::array<Category, 25> kAllCategories{
    Category::checkpoint,   Category::diffusion_model,
    Category::lora,         Category::vae,
    Category::vae_approx,   Category::embedding,
    Category::hypernetwork, Category::controlnet,
    Category::upscaler,     Category::text_encoder,
    Category::clip_vision,  Category::ipadapter,
    Category::diffusers,    Category::style_model,
    Category::gligen,       Category::latent_upscaler,
    Category::photomaker,   Category::classifier,
    Category::model_patch,  Category::audio_encoder,
    Category::inpaint,      Category::prompt_expansion,
    Category::face_restore, Category::file,
    Category::other,
};

// Lower-cases ASCII and folds '-' and ' ' into '_', so "Stable-diffusion", "stable_diffusion"
// and "VAE-approx" compare equal to the table spellings. Tables below are written normalized.
std::string normalize(std::string_view s) {
    std::string out(s);
    for (char& c : out) {
        if (c >= 'A' && c <= 'Z') {
            c = static_cast<char>(c - 'A' + 'a');
        } else if (c == '-' || c == ' ') {
            c = '_';
        }
    }
    return out;
}

using NameEntry = std::pair<std::string_view, Category>;

std::optional<Category> lookup(std::span<const NameEntry> table, std::string_view name) {
    const std::string key = normalize(name);
    for (const auto& [n, c] : table) {
        if (n == key) return c;
    }
    return std::nullopt;
}

// What users type on a command line: canonical names, plurals, and the words the tools and
// model sites use for the same thing.
constexpr NameEntry kCategoryAliases[] = {
    {"unet", Category::diffusion_model},
    {"diffusion_models", Category::diffusion_model},
    {"checkpoints", Category::checkpoint},
    {"ckpt", Category::checkpoint},
    {"stable_diffusion", Category::checkpoint},
    {"loras", Category::lora},
    {"lycoris", Category::lora},
    {"locon", Category::lora},
    {"loha", Category::lora},
    {"lokr", Category::lora},
    {"vaes", Category::vae},
    {"taesd", Category::vae_approx},
    {"embeddings", Category::embedding},
    {"textual_inversion", Category::embedding},
    {"textual_inversions", Category::embedding},
    {"hypernetworks", Category::hypernetwork},
    {"controlnets", Category::controlnet},
    {"control_net", Category::controlnet},
    {"t2i_adapter", Category::controlnet},
    {"t2i_adapters", Category::controlnet},
    {"upscale_models", Category::upscaler},
    {"upscalers", Category::upscaler},
    {"esrgan", Category::upscaler},
    {"clip", Category::text_encoder},
    {"text_encoders", Category::text_encoder},
    {"clipvision", Category::clip_vision},
    {"ip_adapter", Category::ipadapter},
    {"ipadapters", Category::ipadapter},
    {"ip_adapters", Category::ipadapter},
    {"style_models", Category::style_model},
    {"latent_upscale_models", Category::latent_upscaler},
    {"classifiers", Category::classifier},
    {"model_patches", Category::model_patch},
    {"audio_encoders", Category::audio_encoder},
    {"face_restoration", Category::face_restore},
    {"codeformer", Category::face_restore},
    {"gfpgan", Category::face_restore},
};

// Folder names the tools read, normalized; each view's table in fs/src/view_layout.cpp cites the
// tool's source file that names it. A folder a tool reads gets a category even when no other tool
// has it (gligen, Fooocus inpaint), so a model saved there is catalogued and shared between the
// views that have the folder; guessing a near category instead would be wrong in a way users
// notice (a latent upscaler listed among pixel upscalers fails to load, a Fooocus inpaint patch
// is not a LoRA). Names absent here yield std::nullopt: the caller falls back to content
// inference and then to Category::other. ComfyUI's configs/ is absent on purpose: its .yaml files
// are small text that ComfyUI ships in its own tree and users edit, kept as plain files (and the
// few below).
constexpr NameEntry kFolderNames[] = {
    {"stable_diffusion", Category::checkpoint},       // A1111/Forge, SD.Next
    {"checkpoints", Category::checkpoint},            // ComfyUI, Fooocus
    {"unet", Category::diffusion_model},              // Forge, SD.Next (UNET), ComfyUI legacy
    {"diffusion_models", Category::diffusion_model},  // ComfyUI
    {"lora", Category::lora},                         // A1111/Forge, SD.Next
    {"lycoris", Category::lora},                      // A1111, SD.Next
    {"loras", Category::lora},                        // ComfyUI, Fooocus
    {"vae", Category::vae},
    {"vae_approx", Category::vae_approx},  // "VAE-approx" normalizes to this
    {"embeddings", Category::embedding},
    {"hypernetworks", Category::hypernetwork},
    {"controlnet", Category::controlnet},
    {"t2i_adapter", Category::controlnet},  // ComfyUI reads it as a second controlnet folder
    {"esrgan", Category::upscaler},
    {"realesrgan", Category::upscaler},
    {"swinir", Category::upscaler},
    {"ldsr", Category::upscaler},
    {"scunet", Category::upscaler},
    {"dat", Category::upscaler},     // A1111 1.7+
    {"bsrgan", Category::upscaler},  // SD.Next
    {"upscale_models", Category::upscaler},
    {"text_encoder", Category::text_encoder},   // Forge
    {"text_encoders", Category::text_encoder},  // ComfyUI
    {"clip", Category::text_encoder},           // ComfyUI legacy, Fooocus, SD.Next (CLIP)
    {"clip_vision", Category::clip_vision},
    {"ipadapter", Category::ipadapter},  // ComfyUI_IPAdapter_plus
    {"diffusers", Category::diffusers},  // SD.Next (Diffusers), ComfyUI
    // ComfyUI folder_paths.py keys that no other tool reads.
    {"style_models", Category::style_model},
    {"gligen", Category::gligen},
    {"latent_upscale_models", Category::latent_upscaler},
    {"photomaker", Category::photomaker},
    {"classifiers", Category::classifier},
    {"model_patches", Category::model_patch},
    {"audio_encoders", Category::audio_encoder},
    // Fooocus modules/config.py path_fooocus_expansion's parent. Its path_inpaint ("inpaint")
    // and SD.Next's control_dir ("control") are left out like configs: users name sub-folders of
    // other category folders so (checkpoints/inpaint/sd15-inpainting.safetensors), and the
    // nearest folder naming a category wins in an import. The views know them by full path.
    {"prompt_expansion", Category::prompt_expansion},
    // A1111 modules/codeformer_model.py and modules/gfpgan_model.py (models/Codeformer, GFPGAN).
    {"codeformer", Category::face_restore},
    {"gfpgan", Category::face_restore},
};

// general.architecture values. Diffusion: ComfyUI-GGUF loader.py IMG_ARCH_LIST (the archs its
// "Unet Loader (GGUF)" accepts) and Forge backend/loader.py, which loads the same GGUF
// conversions from Stable-diffusion/. Text encoders: ComfyUI-GGUF's TXT_ARCH_LIST, the archs its
// "CLIPLoader (GGUF)" accepts; the LLMs there (llama, qwen2vl, ...) are the text encoders of
// HunyuanVideo and Qwen-Image, so among the tools modelfs shows models to they are text encoders.
// Other LLM archs (gpt2, phi3, ...) are for llama.cpp and friends, which read no view: `other`.
constexpr NameEntry kGgufArchitectures[] = {
    {"flux", Category::diffusion_model},
    {"sd1", Category::diffusion_model},
    {"sdxl", Category::diffusion_model},
    {"sd3", Category::diffusion_model},
    {"aura", Category::diffusion_model},
    {"hidream", Category::diffusion_model},
    {"cosmos", Category::diffusion_model},
    {"ltxv", Category::diffusion_model},
    {"hyvid", Category::diffusion_model},
    {"wan", Category::diffusion_model},
    {"lumina2", Category::diffusion_model},
    {"chroma", Category::diffusion_model},
    {"qwen_image", Category::diffusion_model},
    // Text encoders.
    {"t5", Category::text_encoder},
    {"t5encoder", Category::text_encoder},
    {"umt5", Category::text_encoder},
    {"llama", Category::text_encoder},
    {"qwen2vl", Category::text_encoder},
    {"qwen3", Category::text_encoder},
    {"qwen3vl", Category::text_encoder},
    {"gemma3", Category::text_encoder},
};

bool starts_with(std::string_view s, std::string_view p) {
    return s.starts_with(p);
}
bool contains(std::string_view s, std::string_view p) {
    return s.find(p) != s.npos;
}

// True when `token` occurs in `name` at the start of a dot-separated component ("x.oft_blocks",
// "oft_diag"), so "oft_" does not match inside words like "soft_".
bool has_component_prefix(std::string_view name, std::string_view token) {
    for (std::size_t pos = name.find(token); pos != name.npos; pos = name.find(token, pos + 1)) {
        if (pos == 0 || name[pos - 1] == '.') return true;
    }
    return false;
}

bool is_lora_key(std::string_view n) {
    return contains(n, "lora_up.") || contains(n, "lora_down.") || contains(n, "lora_A.") ||
           contains(n, "lora_B.") || contains(n, "lora.up.") || contains(n, "lora.down.") ||
           contains(n, "lora_linear_layer.") || contains(n, "hada_w1") || contains(n, "hada_w2") ||
           contains(n, "lokr_w1") || contains(n, "lokr_w2") || has_component_prefix(n, "oft_");
}

bool is_vae_key(std::string_view n) {
    return starts_with(n, "encoder.") || starts_with(n, "decoder.") ||
           starts_with(n, "quant_conv.") || starts_with(n, "post_quant_conv.");
}

// A real textual-inversion file holds one tensor per text encoder, maybe a step counter; this
// bound keeps a big model that happens to have a "clip_l" tensor from passing as one.
constexpr std::size_t kMaxEmbeddingTensors = 8;

}  // namespace

std::span<const Category> all_categories() {
    return kAllCategories;
}

std::string_view to_string(Category c) {
    switch (c) {
        case Category::checkpoint:
            return "checkpoint";
        case Category::diffusion_model:
            return "diffusion_model";
        case Category::lora:
            return "lora";
        case Category::vae:
            return "vae";
        case Category::vae_approx:
            return "vae_approx";
        case Category::embedding:
            return "embedding";
        case Category::hypernetwork:
            return "hypernetwork";
        case Category::controlnet:
            return "controlnet";
        case Category::upscaler:
            return "upscaler";
        case Category::text_encoder:
            return "text_encoder";
        case Category::clip_vision:
            return "clip_vision";
        case Category::ipadapter:
            return "ipadapter";
        case Category::diffusers:
            return "diffusers";
        case Category::style_model:
            return "style_model";
        case Category::gligen:
            return "gligen";
        case Category::latent_upscaler:
            return "latent_upscaler";
        case Category::photomaker:
            return "photomaker";
        case Category::classifier:
            return "classifier";
        case Category::model_patch:
            return "model_patch";
        case Category::audio_encoder:
            return "audio_encoder";
        case Category::inpaint:
            return "inpaint";
        case Category::prompt_expansion:
            return "prompt_expansion";
        case Category::face_restore:
            return "face_restore";
        case Category::other:
            return "other";
        case Category::file:
            return "file";
    }
    return "other";  // unreachable for valid enumerators; keeps -Wreturn-type quiet
}

std::optional<Category> parse_category(std::string_view name) {
    const std::string key = normalize(name);
    for (Category c : kAllCategories) {
        if (to_string(c) == key) return c;
    }
    return lookup(kCategoryAliases, name);
}

std::optional<Category> category_from_folder(std::string_view folder_name) {
    return lookup(kFolderNames, folder_name);
}

std::optional<Category> category_from_gguf_architecture(std::string_view architecture) {
    // Normalized like folder names: converters write it lower-case, but a hand-made file saying
    // "Flux" or "qwen-image" still means what it says.
    return lookup(kGgufArchitectures, architecture);
}

std::optional<Category> category_from_tensors(const SafetensorsInfo& info) {
    const auto& names = info.tensor_names;
    if (names.empty()) return std::nullopt;

    bool lora = false, embedding = false, controlnet = false, ipadapter = false;
    bool unet = info.has_unet, vae = info.has_vae, text_encoder = info.has_text_encoder;
    bool bare_unet = false, diffusers_unet_blocks = false, time_embedding = false;
    bool t5 = false, clip_text = false, clip_vision = false;
    bool all_vae_keys = true, any_vae_decoder = false, all_first_stage = true;

    for (const std::string& n : names) {
        lora = lora || is_lora_key(n);
        embedding = embedding || n == "emb_params" || n == "clip_l" || n == "clip_g" ||
                    starts_with(n, "string_to_param");
        controlnet = controlnet || starts_with(n, "control_model.") ||
                     contains(n, "input_hint_block") || contains(n, "controlnet_cond_embedding") ||
                     starts_with(n, "controlnet_blocks.");
        ipadapter = ipadapter || starts_with(n, "image_proj.") || starts_with(n, "ip_adapter.");
        unet = unet || starts_with(n, "model.diffusion_model.");
        vae = vae || starts_with(n, "first_stage_model.");
        text_encoder =
            text_encoder || starts_with(n, "cond_stage_model.") || starts_with(n, "conditioner.");
        bare_unet = bare_unet || starts_with(n, "input_blocks.") ||
                    starts_with(n, "double_blocks.") || starts_with(n, "joint_blocks.");
        diffusers_unet_blocks = diffusers_unet_blocks || starts_with(n, "down_blocks.");
        time_embedding = time_embedding || starts_with(n, "time_embedding.");
        t5 = t5 || starts_with(n, "encoder.block.") || n == "shared.weight";
        clip_text = clip_text || contains(n, "text_model.encoder.");
        clip_vision = clip_vision || contains(n, "vision_model.");
        // Training leftovers some VAE exports keep; they do not make a file less of a VAE.
        const bool vae_extra = starts_with(n, "loss.") || starts_with(n, "model_ema.");
        if (!vae_extra) {
            all_vae_keys = all_vae_keys && is_vae_key(n);
            all_first_stage = all_first_stage && starts_with(n, "first_stage_model.");
        }
        any_vae_decoder = any_vae_decoder || starts_with(n, "decoder.") ||
                          starts_with(n, "first_stage_model.decoder.");
    }

    // Most specific first: adapters and embeddings are small files whose keys mention the base
    // model's layers, so the base-model rules would misfile them.
    if (lora) return Category::lora;
    if (embedding && names.size() <= kMaxEmbeddingTensors) return Category::embedding;
    if (controlnet) return Category::controlnet;
    if (ipadapter) return Category::ipadapter;
    if (unet && (vae || text_encoder)) return Category::checkpoint;
    if (unet) return Category::diffusion_model;
    if (bare_unet || (diffusers_unet_blocks && time_embedding)) return Category::diffusion_model;
    // T5 before the VAE rule: a T5 encoder's keys all start with "encoder." too.
    if (t5) return Category::text_encoder;
    if ((all_vae_keys || all_first_stage) && any_vae_decoder) return Category::vae;
    // A full CLIP (text and vision towers) is reported as a text encoder, the more common use;
    // the user can recategorize it.
    if (clip_text) return Category::text_encoder;
    if (clip_vision) return Category::clip_vision;
    return std::nullopt;
}

std::optional<Category> category_from_content(int fd, std::uint64_t size,
                                              std::string_view filename) {
    // Format by name, as Store::import decides it (model_check.h): a .bin that starts like GGUF
    // is not read as one.
    try {
        if (model_format_of(filename) == ModelFormat::gguf) {
            auto g = read_gguf_header(fd, size);
            return g ? category_from_gguf_architecture(g->architecture) : std::nullopt;
        }
        if (size < 8) return std::nullopt;
        return category_from_tensors(read_safetensors_header(fd, size));
    } catch (const GgufError&) {
    } catch (const SafetensorsError&) {
    }
    return std::nullopt;
}

}  // namespace modelfs
