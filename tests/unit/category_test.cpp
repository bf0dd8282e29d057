#include "modelfs/store/category.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <set>
#include <string>
#include <system_error>
#include <vector>

#include "modelfs/store/safetensors.h"
#include "support/safetensors_writer.h"

namespace modelfs {
namespace {

namespace stdfs = std::filesystem;
namespace mt = modelfs::testing;

// Parses a spec's header as the store would see it; no file needed.
SafetensorsInfo info_of(const mt::SafetensorsSpec& spec) {
    const std::string header = mt::safetensors_header(spec);
    return parse_safetensors_header(header, 8 + header.size() + mt::data_size(spec));
}

// A file with these tensor names (each a single U8), for the name heuristics.
SafetensorsInfo info_of_names(const std::vector<std::string>& names) {
    mt::SafetensorsSpec spec;
    for (const auto& n : names) spec.tensors.push_back({n, "U8", {1}, std::nullopt, std::nullopt});
    return info_of(spec);
}

std::optional<Category> category_of_names(const std::vector<std::string>& names) {
    return category_from_tensors(info_of_names(names));
}

// ---- Names ----------------------------------------------------------------------------------

TEST(CategoryNames, CanonicalNamesRoundTrip) {
    const std::vector<std::string> expected = {
        "checkpoint",      "diffusion_model",  "lora",         "vae",         "vae_approx",
        "embedding",       "hypernetwork",     "controlnet",   "upscaler",    "text_encoder",
        "clip_vision",     "ipadapter",        "diffusers",    "style_model", "gligen",
        "latent_upscaler", "photomaker",       "classifier",   "model_patch", "audio_encoder",
        "inpaint",         "prompt_expansion", "face_restore", "file",        "other",
    };
    const auto all = all_categories();
    ASSERT_EQ(all.size(), expected.size());
    for (std::size_t i = 0; i < all.size(); ++i) {
        EXPECT_EQ(to_string(all[i]), expected[i]);
        EXPECT_EQ(parse_category(expected[i]), all[i]) << expected[i];
    }
    EXPECT_EQ(all.front(), Category::checkpoint);
    EXPECT_EQ(all.back(), Category::other);
}

TEST(CategoryNames, AliasesAndCase) {
    const std::vector<std::pair<std::string, Category>> cases = {
        {"unet", Category::diffusion_model},
        {"UNET", Category::diffusion_model},
        {"diffusion_models", Category::diffusion_model},
        {"checkpoints", Category::checkpoint},
        {"ckpt", Category::checkpoint},
        {"stable-diffusion", Category::checkpoint},
        {"Stable-diffusion", Category::checkpoint},
        {"CHECKPOINT", Category::checkpoint},
        {"loras", Category::lora},
        {"LyCORIS", Category::lora},
        {"locon", Category::lora},
        {"loha", Category::lora},
        {"LoRA", Category::lora},
        {"vaes", Category::vae},
        {"VAE", Category::vae},
        {"VAE-approx", Category::vae_approx},
        {"embeddings", Category::embedding},
        {"textual_inversion", Category::embedding},
        {"textual-inversion", Category::embedding},
        {"hypernetworks", Category::hypernetwork},
        {"t2i_adapter", Category::controlnet},
        {"T2I-Adapter", Category::controlnet},
        {"controlnets", Category::controlnet},
        {"ControlNet", Category::controlnet},
        {"upscale_models", Category::upscaler},
        {"esrgan", Category::upscaler},
        {"upscalers", Category::upscaler},
        {"clip", Category::text_encoder},
        {"text_encoders", Category::text_encoder},
        {"clip-vision", Category::clip_vision},
        {"ipadapter", Category::ipadapter},
        {"ip_adapter", Category::ipadapter},
        {"IP-Adapter", Category::ipadapter},
        {"Diffusers", Category::diffusers},
        {"OTHER", Category::other},
    };
    for (const auto& [name, category] : cases) {
        EXPECT_EQ(parse_category(name), category) << name;
    }
}

TEST(CategoryNames, UnknownNames) {
    for (const char* name : {"", "foo", "loras2", " lora", "lora ", "checkpoint.", "models",
                             "configs", "style_modelz", "\xff"}) {
        EXPECT_EQ(parse_category(name), std::nullopt) << name;
    }
}

// ---- Folders ----------------------------------------------------------------------------------

TEST(CategoryFolder, EveryToolFolder) {
    // The folders of the built-in views (fs/src/view_layout.cpp), spelled as each tool spells it.
    const std::vector<std::pair<std::string, Category>> folders = {
        // A1111 / Forge
        {"Stable-diffusion", Category::checkpoint},
        {"unet", Category::diffusion_model},
        {"Lora", Category::lora},
        {"LyCORIS", Category::lora},
        {"VAE", Category::vae},
        {"VAE-approx", Category::vae_approx},
        {"embeddings", Category::embedding},
        {"hypernetworks", Category::hypernetwork},
        {"ControlNet", Category::controlnet},
        {"ESRGAN", Category::upscaler},
        {"RealESRGAN", Category::upscaler},
        {"SwinIR", Category::upscaler},
        {"LDSR", Category::upscaler},
        {"ScuNET", Category::upscaler},
        {"DAT", Category::upscaler},
        {"text_encoder", Category::text_encoder},
        // SD.Next
        {"UNET", Category::diffusion_model},
        {"CLIP", Category::text_encoder},
        {"Diffusers", Category::diffusers},
        // ComfyUI
        {"checkpoints", Category::checkpoint},
        {"diffusion_models", Category::diffusion_model},
        {"loras", Category::lora},
        {"vae", Category::vae},
        {"vae_approx", Category::vae_approx},
        {"controlnet", Category::controlnet},
        {"t2i_adapter", Category::controlnet},
        {"upscale_models", Category::upscaler},
        {"text_encoders", Category::text_encoder},
        {"clip", Category::text_encoder},
        {"clip_vision", Category::clip_vision},
        {"diffusers", Category::diffusers},
        {"ipadapter", Category::ipadapter},
        // Folders the tools read that had no category before issue 16.
        {"style_models", Category::style_model},               // ComfyUI
        {"gligen", Category::gligen},                          // ComfyUI
        {"latent_upscale_models", Category::latent_upscaler},  // ComfyUI
        {"photomaker", Category::photomaker},                  // ComfyUI
        {"classifiers", Category::classifier},                 // ComfyUI
        {"model_patches", Category::model_patch},              // ComfyUI
        {"audio_encoders", Category::audio_encoder},           // ComfyUI
        {"prompt_expansion", Category::prompt_expansion},      // Fooocus
        {"Codeformer", Category::face_restore},                // A1111, SD.Next
        {"GFPGAN", Category::face_restore},                    // A1111, SD.Next
        {"Text-encoder", Category::text_encoder},              // SD.Next
        {"BSRGAN", Category::upscaler},                        // SD.Next
        {"SCUNet", Category::upscaler},                        // SD.Next
        // Case does not matter
        {"LORA", Category::lora},
        {"stable-DIFFUSION", Category::checkpoint},
        {"Checkpoints", Category::checkpoint},
    };
    for (const auto& [folder, category] : folders) {
        EXPECT_EQ(category_from_folder(folder), category) << folder;
    }
}

// ---- GGUF general.architecture -----------------------------------------------------------------

TEST(CategoryFromGguf, ArchitecturesTheToolsLoad) {
    // ComfyUI-GGUF loader.py IMG_ARCH_LIST and the conversions Forge loads.
    for (const char* arch : {"flux", "sd1", "sdxl", "sd3", "aura", "hidream", "wan", "ltxv",
                             "hyvid", "cosmos", "lumina2", "chroma", "qwen_image", "Flux"}) {
        EXPECT_EQ(category_from_gguf_architecture(arch), Category::diffusion_model) << arch;
    }
    // ComfyUI-GGUF TXT_ARCH_LIST: T5 and the LLMs used as text encoders.
    for (const char* arch : {"t5", "t5encoder", "umt5", "llama", "qwen2vl", "qwen3"}) {
        EXPECT_EQ(category_from_gguf_architecture(arch), Category::text_encoder) << arch;
    }
    for (const char* arch : {"", "phi3", "gpt2", "mistral3", "bert", "flux2x", "x"}) {
        EXPECT_EQ(category_from_gguf_architecture(arch), std::nullopt) << arch;
    }
}

TEST(CategoryFolder, FoldersWithoutACategory) {
    for (const char* folder :
         // Fooocus inpaint and SD.Next control: common sub-folder names inside other category
         // folders (checkpoints/inpaint/), so an import does not read them as a category.
         {"configs", "inpaint", "control", "custom_nodes", "models", "", "random", "Lora2",
          "checkpoint/"}) {
        EXPECT_EQ(category_from_folder(folder), std::nullopt) << folder;
    }
}

// ---- Tensors ----------------------------------------------------------------------------------

struct BuilderCase {
    const char* name;
    std::function<mt::SafetensorsSpec()> make;
    Category expected;
};

class CategoryFromBuilder : public ::testing::TestWithParam<BuilderCase> {};

TEST_P(CategoryFromBuilder, InfersCategory) {
    const BuilderCase& c = GetParam();
    // Through a real file, as the store reads it.
    std::string tmpl = (stdfs::temp_directory_path() / "modelfs-category-XXXXXX").string();
    const int fd = ::mkstemp(tmpl.data());
    ASSERT_GE(fd, 0) << std::strerror(errno);
    ::close(fd);
    const stdfs::path path = tmpl;
    const std::uint64_t size = mt::write_safetensors(path, c.make());
    const int rfd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(rfd, 0);
    const SafetensorsInfo info = read_safetensors_header(rfd, size);
    ::close(rfd);
    stdfs::remove(path);

    EXPECT_EQ(category_from_tensors(info), c.expected);

    // Growing a file does not change what it is, nor does the seed.
    auto grown = c.make();
    mt::grow_to(grown, 64 * 1024);
    EXPECT_EQ(category_from_tensors(info_of(grown)), c.expected);
}

const BuilderCase kBuilderCases[] = {
    {"sd15_checkpoint", [] { return mt::sd15_checkpoint(); }, Category::checkpoint},
    {"sdxl_checkpoint", [] { return mt::sdxl_checkpoint(1); }, Category::checkpoint},
    {"kohya_lora", [] { return mt::kohya_lora(); }, Category::lora},
    {"diffusers_lora", [] { return mt::diffusers_lora(); }, Category::lora},
    {"vae", [] { return mt::vae(); }, Category::vae},
    {"ti_emb_params", [] { return mt::textual_inversion(0, mt::EmbeddingStyle::emb_params); },
     Category::embedding},
    {"ti_string_to_param",
     [] { return mt::textual_inversion(0, mt::EmbeddingStyle::string_to_param); },
     Category::embedding},
    {"ti_sdxl", [] { return mt::textual_inversion(0, mt::EmbeddingStyle::sdxl); },
     Category::embedding},
    {"controlnet_ldm", [] { return mt::controlnet(0, mt::ControlNetStyle::ldm); },
     Category::controlnet},
    {"controlnet_diffusers", [] { return mt::controlnet(0, mt::ControlNetStyle::diffusers); },
     Category::controlnet},
    {"unet_sd", [] { return mt::unet_only(0, mt::UnetStyle::sd); }, Category::diffusion_model},
    {"unet_flux", [] { return mt::unet_only(0, mt::UnetStyle::flux); }, Category::diffusion_model},
    {"unet_sd3", [] { return mt::unet_only(0, mt::UnetStyle::sd3); }, Category::diffusion_model},
    {"unet_diffusers", [] { return mt::unet_only(0, mt::UnetStyle::diffusers); },
     Category::diffusion_model},
    {"text_encoder_clip_l", [] { return mt::text_encoder(0, mt::TextEncoderStyle::clip_l); },
     Category::text_encoder},
    {"text_encoder_t5", [] { return mt::text_encoder(0, mt::TextEncoderStyle::t5); },
     Category::text_encoder},
    {"clip_vision", [] { return mt::clip_vision(); }, Category::clip_vision},
    {"ip_adapter", [] { return mt::ip_adapter(); }, Category::ipadapter},
};

INSTANTIATE_TEST_SUITE_P(CategoryBuilders, CategoryFromBuilder, ::testing::ValuesIn(kBuilderCases),
                         [](const ::testing::TestParamInfo<BuilderCase>& p) {
                             return p.param.name;
                         });

TEST(CategoryFromTensors, LycorisVariants) {
    EXPECT_EQ(category_of_names({"lora_unet_x.hada_w1_a", "lora_unet_x.hada_w1_b",
                                 "lora_unet_x.hada_w2_a", "lora_unet_x.alpha"}),
              Category::lora);
    EXPECT_EQ(category_of_names({"lora_unet_x.lokr_w1", "lora_unet_x.lokr_w2_a"}), Category::lora);
    EXPECT_EQ(category_of_names({"lora_unet_x.oft_blocks", "lora_unet_x.alpha"}), Category::lora);
    EXPECT_EQ(category_of_names({"oft_diag.weight"}), Category::lora);
    // Old diffusers attention-processor LoRA.
    EXPECT_EQ(category_of_names({"unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1."
                                 "processor.to_q_lora.down.weight"}),
              Category::lora);
    // A LoRA trained on a checkpoint's layers keeps its LoRA-ness over the prefixes it names.
    EXPECT_EQ(category_of_names({"model.diffusion_model.input_blocks.0.lora_A.weight",
                                 "first_stage_model.x.lora_B.weight"}),
              Category::lora);
}

TEST(CategoryFromTensors, LoraPatternsNeedWordBoundaries) {
    // "soft_" contains "oft_", an alpha alone is not a LoRA.
    EXPECT_EQ(category_of_names({"head.soft_gate.weight", "head.alpha"}), std::nullopt);
}

TEST(CategoryFromTensors, CheckpointParts) {
    EXPECT_EQ(category_of_names({"model.diffusion_model.a", "cond_stage_model.b"}),
              Category::checkpoint);
    EXPECT_EQ(category_of_names({"model.diffusion_model.a", "first_stage_model.decoder.b"}),
              Category::checkpoint);
    EXPECT_EQ(category_of_names({"model.diffusion_model.a", "conditioner.embedders.0.b"}),
              Category::checkpoint);
    EXPECT_EQ(category_of_names({"model.diffusion_model.input_blocks.0.0.weight",
                                 "model.diffusion_model.out.2.weight"}),
              Category::diffusion_model);
}

TEST(CategoryFromTensors, VaeShapes) {
    EXPECT_EQ(category_of_names({"first_stage_model.encoder.conv_in.weight",
                                 "first_stage_model.decoder.conv_out.weight"}),
              Category::vae);
    EXPECT_EQ(category_of_names({"encoder.down_blocks.0.resnets.0.conv1.weight",
                                 "decoder.up_blocks.0.resnets.0.conv1.weight", "quant_conv.weight",
                                 "post_quant_conv.weight"}),
              Category::vae);
    // Training leftovers do not hide a VAE.
    EXPECT_EQ(category_of_names({"encoder.conv_in.weight", "decoder.conv_out.weight",
                                 "loss.discriminator.main.0.weight", "model_ema.decay"}),
              Category::vae);
    // A stray non-VAE key does.
    EXPECT_EQ(category_of_names({"encoder.conv_in.weight", "decoder.conv_out.weight", "head.w"}),
              std::nullopt);
    // An encoder alone cannot decode: not a VAE.
    EXPECT_EQ(category_of_names({"encoder.conv_in.weight"}), std::nullopt);
}

TEST(CategoryFromTensors, EmbeddingNeedsFewTensors) {
    std::vector<std::string> names = {"clip_l", "clip_g"};
    for (int i = 0; i < 20; ++i) names.push_back("blocks." + std::to_string(i) + ".weight");
    EXPECT_EQ(category_of_names(names), std::nullopt);
    EXPECT_EQ(category_of_names({"clip_l"}), Category::embedding);
    EXPECT_EQ(category_of_names({"string_to_param.*", "string_to_token.*"}), Category::embedding);
}

TEST(CategoryFromTensors, ControlNetMarkers) {
    EXPECT_EQ(category_of_names({"input_hint_block.0.weight", "input_blocks.0.0.weight",
                                 "zero_convs.0.0.weight"}),
              Category::controlnet);
    EXPECT_EQ(category_of_names({"controlnet_blocks.0.weight", "transformer_blocks.0.x"}),
              Category::controlnet);
}

TEST(CategoryFromTensors, UnprefixedUnets) {
    EXPECT_EQ(category_of_names({"double_blocks.0.img_attn.qkv.weight"}),
              Category::diffusion_model);
    EXPECT_EQ(category_of_names({"joint_blocks.0.x_block.attn.qkv.weight"}),
              Category::diffusion_model);
    // down_blocks alone could be many things (a diffusers VAE encoder has them too).
    EXPECT_EQ(category_of_names({"down_blocks.0.resnets.0.conv1.weight"}), std::nullopt);
    EXPECT_EQ(category_of_names(
                  {"down_blocks.0.resnets.0.conv1.weight", "time_embedding.linear_1.weight"}),
              Category::diffusion_model);
}

TEST(CategoryFromTensors, TextEncoders) {
    // T5 keys start with "encoder." like a VAE's; they must not pass as one.
    EXPECT_EQ(category_of_names({"encoder.block.0.layer.0.SelfAttention.q.weight",
                                 "encoder.final_layer_norm.weight"}),
              Category::text_encoder);
    EXPECT_EQ(category_of_names({"encoder.block.0.layer.0.SelfAttention.q.weight",
                                 "decoder.block.0.layer.0.SelfAttention.q.weight"}),
              Category::text_encoder);
    EXPECT_EQ(category_of_names({"shared.weight"}), Category::text_encoder);
    // A checkpoint's text encoder extracted with its prefix.
    EXPECT_EQ(category_of_names({"cond_stage_model.transformer.text_model.encoder.layers.0.x"}),
              Category::text_encoder);
    // A full CLIP (both towers) counts as a text encoder.
    EXPECT_EQ(
        category_of_names({"text_model.encoder.layers.0.x", "vision_model.encoder.layers.0.x"}),
        Category::text_encoder);
}

TEST(CategoryFromTensors, NotTelling) {
    EXPECT_EQ(category_from_tensors(SafetensorsInfo{}), std::nullopt);
    EXPECT_EQ(category_of_names({"weight", "bias"}), std::nullopt);
    EXPECT_EQ(category_of_names({"model.0.weight", "model.1.bias"}), std::nullopt);
    EXPECT_EQ(category_of_names({"loss.x"}), std::nullopt);
}

TEST(CategoryFromTensors, UsesFlagsWhenNamesAreAbsent) {
    // A caller that filled only the flags still gets an answer.
    SafetensorsInfo info;
    info.tensor_names = {"x"};
    info.has_unet = true;
    info.has_vae = true;
    EXPECT_EQ(category_from_tensors(info), Category::checkpoint);
}

}  // namespace
}  // namespace modelfs
