// Synthetic safetensors files for tests.
//
// A file is described by a SafetensorsSpec (tensor names, dtypes, shapes, optional metadata and
// a seed) and written with write_safetensors(). The header is laid out like the reference writer
// does it: __metadata__ first, tensors in spec order packed back to back from offset 0, JSON padded
// with spaces to a multiple of 8 bytes. Tensor bytes are deterministic pseudo-random data derived
// from the seed and the tensor name, so:
//   - the same spec always produces byte-identical files;
//   - a different seed changes every tensor's bytes (and the file's SHA-256), not the header;
//   - a tensor with its own TensorSpec::seed has the same bytes in every file that contains it
//     under the same name (use it to fake checkpoints sharing a VAE or text encoder).
//
// The builders (sd15_checkpoint(), kohya_lora(), ...) return small (a few KB) but realistic specs
// whose tensor names follow the real formats, so category inference sees what it would see in
// the wild. Modify the returned spec freely; grow_to() makes one larger.
//
// For hostile input, raw_safetensors() / raw_safetensors_with_length() assemble arbitrary
// bytes around a header string, and write_file() puts any bytes on disk.
//
// Everything throws std::invalid_argument on a bad spec and std::system_error on I/O errors.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace modelfs::testing {

struct TensorSpec {
    std::string name;
    std::string dtype = "F16";          // any dtype the reader knows: "F32", "BF16", "F4", ...
    std::vector<std::uint64_t> shape;   // {} is a scalar (one element)
    std::optional<std::uint64_t> seed;  // overrides SafetensorsSpec::seed for this tensor
    std::optional<std::string> data;    // exact bytes; size must match dtype and shape
};

struct SafetensorsSpec {
    std::vector<TensorSpec> tensors;
    std::map<std::string, std::string> metadata;  // written as __metadata__ unless empty
    std::uint64_t seed = 0;
};

// Bits per element of a dtype name; throws std::invalid_argument for an unknown one.
std::uint64_t dtype_bits(std::string_view dtype);

// Bytes a tensor occupies: ceil(bits * elements / 8).
std::uint64_t tensor_data_size(const TensorSpec& tensor);

// Bytes of the data section (sum over tensors).
std::uint64_t data_size(const SafetensorsSpec& spec);

// The header JSON exactly as written to the file (padded with spaces to a multiple of 8), without
// the 8-byte length. Useful for parse_safetensors_header() and for corrupting a valid header.
std::string safetensors_header(const SafetensorsSpec& spec);

// The bytes of tensor `index` as they appear in the data section.
std::string tensor_bytes(const SafetensorsSpec& spec, std::size_t index);

// The whole file in memory. Fine for small specs; write_safetensors() streams big ones.
std::string safetensors_bytes(const SafetensorsSpec& spec);

// Writes the file (replacing any existing one), streaming the data; returns its size in bytes.
std::uint64_t write_safetensors(const std::filesystem::path& path, const SafetensorsSpec& spec);

// The 8-byte little-endian encoding of `value`.
std::string le64(std::uint64_t value);

// 8-byte length of `header`, then `header`, then `data`: a file image with an honest length field
// around whatever header text a test wants (invalid JSON, wrong offsets, ...).
std::string raw_safetensors(std::string_view header, std::string_view data = {});

// Like raw_safetensors() but with a length field that may lie about the header's size.
std::string raw_safetensors_with_length(std::uint64_t declared_length, std::string_view header,
                                        std::string_view data = {});

// Writes arbitrary bytes to `path` (replacing any existing file).
void write_file(const std::filesystem::path& path, std::string_view bytes);

// Enlarges the spec until its data section holds at least `min_data_bytes`, by growing the first
// dimension of its largest tensor (names, and so the category, stay the same). Returns `spec`.
SafetensorsSpec& grow_to(SafetensorsSpec& spec, std::uint64_t min_data_bytes);

// ---- Realistic small fakes -------------------------------------------------------------------

// Single-file SD 1.5 checkpoint: model.diffusion_model.*, first_stage_model.*,
// cond_stage_model.* tensors.
SafetensorsSpec sd15_checkpoint(std::uint64_t seed = 0);

// Single-file SDXL checkpoint: model.diffusion_model.*, first_stage_model.*, conditioner.*;
// modelspec metadata.
SafetensorsSpec sdxl_checkpoint(std::uint64_t seed = 0);

// kohya-ss LoRA: lora_unet_*/lora_te_* keys with .lora_down.weight, .lora_up.weight and .alpha;
// ss_* training metadata (ss_network_module = "networks.lora", ...).
SafetensorsSpec kohya_lora(std::uint64_t seed = 0);

// diffusers/PEFT LoRA: unet.*/text_encoder.* keys with .lora_A.weight and .lora_B.weight.
SafetensorsSpec diffusers_lora(std::uint64_t seed = 0);

// Standalone VAE: encoder.*, decoder.*, quant_conv.*, post_quant_conv.* (no prefix).
SafetensorsSpec vae(std::uint64_t seed = 0);

enum class EmbeddingStyle {
    emb_params,       // SD 1.5 textual inversion saved by A1111: one "emb_params" tensor
    string_to_param,  // the .pt layout converted to safetensors: "string_to_param.*"
    sdxl,             // SDXL: "clip_l" and "clip_g"
};
SafetensorsSpec textual_inversion(std::uint64_t seed = 0,
                                  EmbeddingStyle style = EmbeddingStyle::emb_params);

enum class ControlNetStyle {
    ldm,        // control_model.* with input_hint_block, zero_convs, middle_block_out
    diffusers,  // controlnet_cond_embedding.*, down_blocks.*, time_embedding.*
};
SafetensorsSpec controlnet(std::uint64_t seed = 0, ControlNetStyle style = ControlNetStyle::ldm);

enum class UnetStyle {
    sd,         // input_blocks.*, middle_block.*, output_blocks.* (no model.diffusion_model.)
    flux,       // double_blocks.*, single_blocks.*
    sd3,        // joint_blocks.*, x_embedder.*
    diffusers,  // down_blocks.*, up_blocks.*, time_embedding.*
};
// A UNet/transformer without VAE or text encoder, as ComfyUI's diffusion_models holds them.
SafetensorsSpec unet_only(std::uint64_t seed = 0, UnetStyle style = UnetStyle::sd);

enum class TextEncoderStyle {
    clip_l,  // text_model.embeddings.*, text_model.encoder.layers.*
    t5,      // encoder.block.*, encoder.final_layer_norm.weight, shared.weight
};
SafetensorsSpec text_encoder(std::uint64_t seed = 0,
                             TextEncoderStyle style = TextEncoderStyle::clip_l);

// CLIP vision tower: vision_model.*, visual_projection.weight.
SafetensorsSpec clip_vision(std::uint64_t seed = 0);

// IP-Adapter: image_proj.*, ip_adapter.*.
SafetensorsSpec ip_adapter(std::uint64_t seed = 0);

}  // namespace modelfs::testing
