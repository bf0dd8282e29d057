// Model categories and how they are inferred from folder names and file contents.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace modelfs {

struct SafetensorsInfo;

// Order matters only for display; the on-disk form is the string name (see store/FORMAT.md).
enum class Category {
    checkpoint,
    diffusion_model,
    lora,
    vae,
    vae_approx,
    embedding,
    hypernetwork,
    controlnet,
    upscaler,
    text_encoder,
    clip_vision,
    ipadapter,
    diffusers,
    // Folders the tools read that hold neither of the above (each cites its tool in
    // store/src/category.cpp's folder table).
    style_model,
    gligen,
    latent_upscaler,
    photomaker,
    classifier,
    model_patch,
    audio_encoder,
    inpaint,
    prompt_expansion,
    face_restore,
    other,
    // A file of one view stored by content outside the model folders (view_files.h): never
    // classified into, shown only in its own view at its own path.
    file,
};

// Every category, in display order.
std::span<const Category> all_categories();

std::string_view to_string(Category c);

// Accepts the canonical names and the common aliases users type ("unet", "lycoris", "clip",
// "t2i_adapter", "embeddings", "loras", ...). Case-insensitive.
std::optional<Category> parse_category(std::string_view name);

// The category a folder name implies in any of the tools modelfs knows (A1111/Forge, SD.Next,
// ComfyUI, Fooocus): "Stable-diffusion", "checkpoints", "Lora", "LyCORIS", "loras", "VAE", ...
// Case-insensitive; std::nullopt when the name means nothing.
std::optional<Category> category_from_folder(std::string_view folder_name);

// The category suggested by a safetensors file's tensor names (LoRA key patterns, checkpoint
// prefixes, VAE-only key sets, embeddings, ...); std::nullopt when the tensors are not telling.
std::optional<Category> category_from_tensors(const SafetensorsInfo& info);

// The category a GGUF file's `general.architecture` names (GgufInfo::architecture): the
// diffusion architectures ComfyUI-GGUF and Forge load as a diffusion model ("flux", "sdxl",
// "wan", ...) give diffusion_model; the text encoders they load ("t5", "t5encoder", and the LLMs
// ComfyUI-GGUF's CLIP loader takes, "llama", "qwen2vl", ...) give text_encoder. std::nullopt for
// anything else, e.g. a chat LLM for llama.cpp: no view has a folder for those.
std::optional<Category> category_from_gguf_architecture(std::string_view architecture);

// The category an open model file's content implies, read from its header only: a .gguf by
// category_from_gguf_architecture, anything else that parses as safetensors by
// category_from_tensors. std::nullopt when the content says nothing (not telling, damaged, a
// pickle). For callers that classify a file without importing it through Store::import (the Hugging
// Face cache import); throws std::system_error when the file cannot be read.
std::optional<Category> category_from_content(int fd, std::uint64_t size,
                                              std::string_view filename);

}  // namespace modelfs
