#include "modelfs/layouts/view_layout.h"

#include <gtest/gtest.h>

#include <map>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "modelfs/store/errors.h"

namespace modelfs::layouts {
namespace {

using nlohmann::json;
using Expected = std::map<Category, std::optional<std::string>>;

ViewLayout layout(std::string_view name) {
    auto l = ViewLayout::builtin(name);
    if (!l) throw std::runtime_error("no builtin layout " + std::string(name));
    return *l;
}

struct Fixture {
    Model model;
    ModelVersion version;
};

Fixture file_model(Category c, std::string name, std::string ext) {
    Fixture f;
    f.model.category = c;
    f.model.name = name + ext;  // a single file's name ends with its extension (model_name.h)
    f.version.blob = Sha256{};
    f.version.ext = std::move(ext);
    f.version.size = 1;
    f.model.versions.push_back(f.version);
    return f;
}

Fixture tree_model(Category c, std::string name) {
    Fixture f;
    f.model.category = c;
    f.model.name = std::move(name);
    f.version.tree.push_back({"model_index.json", Sha256{}, 1});
    f.version.tree.push_back({"unet/diffusion_pytorch_model.safetensors", Sha256{}, 2});
    f.version.size = 3;
    f.model.versions.push_back(f.version);
    return f;
}

std::optional<std::string> path_of(const ViewLayout& l, const Fixture& f) {
    return l.path_for(f.model, f.version);
}

// The tables restated independently of view_layout.cpp, from the tools' own code (each cited
// there): A1111 modules/, Forge modules_forge/, SD.Next modules/shared.py, ComfyUI
// folder_paths.py, Fooocus modules/config.py.
Expected expected_primary(std::string_view tool) {
    Expected e;
    for (Category c : all_categories()) e[c] = std::nullopt;
    if (tool == "a1111" || tool == "forge") {
        e[Category::checkpoint] = "Stable-diffusion";
        // Forge lists diffusion models only among its checkpoints.
        if (tool == "forge") e[Category::diffusion_model] = "Stable-diffusion/diffusion_models";
        e[Category::lora] = "Lora";
        e[Category::vae] = "VAE";
        e[Category::vae_approx] = "VAE-approx";
        e[Category::embedding] = "embeddings";
        e[Category::hypernetwork] = "hypernetworks";
        e[Category::controlnet] = "ControlNet";
        e[Category::upscaler] = "ESRGAN";
        e[Category::face_restore] = "Codeformer";
        if (tool == "forge") e[Category::text_encoder] = "text_encoder";
    } else if (tool == "sdnext") {
        e[Category::checkpoint] = "Stable-diffusion";
        e[Category::diffusion_model] = "UNET";
        e[Category::lora] = "Lora";
        e[Category::vae] = "VAE";
        e[Category::embedding] = "embeddings";
        e[Category::hypernetwork] = "hypernetworks";
        e[Category::controlnet] = "control";
        e[Category::upscaler] = "ESRGAN";
        e[Category::face_restore] = "Codeformer";
        e[Category::text_encoder] = "Text-encoder";
        e[Category::diffusers] = "Diffusers";
    } else if (tool == "comfyui") {
        e[Category::checkpoint] = "checkpoints";
        e[Category::diffusion_model] = "diffusion_models";
        e[Category::lora] = "loras";
        e[Category::vae] = "vae";
        e[Category::vae_approx] = "vae_approx";
        e[Category::embedding] = "embeddings";
        e[Category::hypernetwork] = "hypernetworks";
        e[Category::controlnet] = "controlnet";
        e[Category::upscaler] = "upscale_models";
        e[Category::text_encoder] = "text_encoders";
        e[Category::clip_vision] = "clip_vision";
        e[Category::diffusers] = "diffusers";
        e[Category::ipadapter] = "ipadapter";
        e[Category::style_model] = "style_models";
        e[Category::gligen] = "gligen";
        e[Category::latent_upscaler] = "latent_upscale_models";
        e[Category::photomaker] = "photomaker";
        e[Category::classifier] = "classifiers";
        e[Category::model_patch] = "model_patches";
        e[Category::audio_encoder] = "audio_encoders";
    } else if (tool == "fooocus") {
        e[Category::checkpoint] = "checkpoints";
        e[Category::lora] = "loras";
        e[Category::vae] = "vae";
        e[Category::vae_approx] = "vae_approx";
        e[Category::embedding] = "embeddings";
        e[Category::controlnet] = "controlnet";
        e[Category::upscaler] = "upscale_models";
        e[Category::clip_vision] = "clip_vision";
        e[Category::inpaint] = "inpaint";
        e[Category::prompt_expansion] = "prompt_expansion";
    } else if (tool == "invokeai") {
        // One folder per category InvokeAI loads, named after it: paths that never change.
        for (Category c : {Category::checkpoint, Category::diffusion_model, Category::lora,
                           Category::vae, Category::embedding, Category::controlnet,
                           Category::ipadapter, Category::clip_vision, Category::text_encoder,
                           Category::upscaler, Category::style_model, Category::diffusers}) {
            e[c] = std::string(to_string(c));
        }
    }
    return e;
}

// Secondary folder -> category, per tool.
std::map<std::string, Category> expected_secondary(std::string_view tool) {
    if (tool == "a1111" || tool == "forge") {
        std::map<std::string, Category> m{
            {"LyCORIS", Category::lora},       {"RealESRGAN", Category::upscaler},
            {"SwinIR", Category::upscaler},    {"LDSR", Category::upscaler},
            {"ScuNET", Category::upscaler},    {"DAT", Category::upscaler},
            {"GFPGAN", Category::face_restore}};
        if (tool == "forge") m.emplace("unet", Category::diffusion_model);
        return m;
    }
    if (tool == "sdnext") {
        return {{"LyCORIS", Category::lora},        {"ControlNet", Category::controlnet},
                {"RealESRGAN", Category::upscaler}, {"SwinIR", Category::upscaler},
                {"SCUNet", Category::upscaler},     {"BSRGAN", Category::upscaler},
                {"GFPGAN", Category::face_restore}, {"CLIP", Category::text_encoder}};
    }
    if (tool == "comfyui") {
        return {{"unet", Category::diffusion_model},
                {"t2i_adapter", Category::controlnet},
                {"clip", Category::text_encoder}};
    }
    return {};
}

class ViewLayoutBuiltin : public ::testing::TestWithParam<std::string> {};

INSTANTIATE_TEST_SUITE_P(ViewLayoutTools, ViewLayoutBuiltin,
                         ::testing::ValuesIn(ViewLayout::builtin_names()),
                         [](const auto& info) { return info.param; });

TEST_P(ViewLayoutBuiltin, NameMatches) {
    EXPECT_EQ(layout(GetParam()).name(), GetParam());
}

TEST_P(ViewLayoutBuiltin, FolderForEveryCategory) {
    const ViewLayout l = layout(GetParam());
    for (const auto& [c, folder] : expected_primary(GetParam())) {
        EXPECT_EQ(l.folder_for(c), folder) << to_string(c);
    }
    EXPECT_EQ(l.folder_for(Category::other), std::nullopt);
}

TEST_P(ViewLayoutBuiltin, FoldersAreExactlyPrimariesPlusSecondaries) {
    const ViewLayout l = layout(GetParam());
    std::set<std::string> expected;
    for (const auto& [c, folder] : expected_primary(GetParam())) {
        if (folder) expected.insert(*folder);
    }
    for (const auto& [folder, c] : expected_secondary(GetParam())) expected.insert(folder);
    std::set<std::string> actual;
    for (const auto& f : l.folders()) actual.insert(f.path);
    EXPECT_EQ(actual, expected);
    EXPECT_EQ(actual.size(), l.folders().size()) << "a folder is listed twice";
}

TEST_P(ViewLayoutBuiltin, ExtensionsAreLowerCaseWithDot) {
    const ViewLayout l = layout(GetParam());
    for (const auto& f : l.folders()) {
        if (f.category == Category::diffusers) {
            EXPECT_TRUE(f.extensions.empty()) << f.path;
            continue;
        }
        EXPECT_FALSE(f.extensions.empty()) << f.path;
        for (const auto& e : f.extensions) {
            ASSERT_GE(e.size(), 2U);
            EXPECT_EQ(e.front(), '.') << f.path << " " << e;
            for (char ch : e) EXPECT_FALSE(ch >= 'A' && ch <= 'Z') << f.path << " " << e;
        }
    }
}

// Every category the tool shows, with every extension its folder lists, plain and in a
// sub-folder: path_for is primary/name+ext and classify gives it all back.
TEST_P(ViewLayoutBuiltin, RoundTripEveryShownCategoryAndExtension) {
    const ViewLayout l = layout(GetParam());
    int checked = 0;
    for (const auto& f : l.folders()) {
        if (!f.primary) continue;
        for (const std::string name : {"foo", "sdxl/foo", "a/b/c d-e.f"}) {
            if (f.category == Category::diffusers) {
                const Fixture m = tree_model(f.category, name);
                const auto p = path_of(l, m);
                ASSERT_EQ(p, f.path + "/" + name);
                const auto back = l.classify(*p);
                ASSERT_TRUE(back.has_value()) << *p;
                EXPECT_EQ(*back, (ViewPath{f.category, f.path, name, ""}));
                ++checked;
                continue;
            }
            for (const auto& ext : f.extensions) {
                const Fixture m = file_model(f.category, name, ext);
                const auto p = path_of(l, m);
                ASSERT_EQ(p, f.path + "/" + name + ext) << to_string(f.category);
                const auto back = l.classify(*p);
                ASSERT_TRUE(back.has_value()) << *p;
                EXPECT_EQ(*back, (ViewPath{f.category, f.path, name + ext, ext}));
                ++checked;
            }
        }
    }
    EXPECT_GT(checked, 0);
}

TEST_P(ViewLayoutBuiltin, RepresentativeModels) {
    const ViewLayout l = layout(GetParam());
    const Expected e = expected_primary(GetParam());
    const Fixture lora = file_model(Category::lora, "foo", ".safetensors");
    const Fixture sub = file_model(Category::lora, "sdxl/foo", ".safetensors");
    EXPECT_EQ(path_of(l, lora), *e.at(Category::lora) + "/foo.safetensors");
    EXPECT_EQ(path_of(l, sub), *e.at(Category::lora) + "/sdxl/foo.safetensors");
    const Fixture ckpt = file_model(Category::checkpoint, "sd15/dreamshaper_8", ".safetensors");
    EXPECT_EQ(path_of(l, ckpt), *e.at(Category::checkpoint) + "/sd15/dreamshaper_8.safetensors");
    const Fixture tree = tree_model(Category::diffusers, "sd15");
    if (const auto& d = e.at(Category::diffusers)) {
        EXPECT_EQ(path_of(l, tree), *d + "/sd15");
    } else {
        EXPECT_EQ(path_of(l, tree), std::nullopt);
    }
}

TEST_P(ViewLayoutBuiltin, CategoriesWithoutFolderAreNotShown) {
    const ViewLayout l = layout(GetParam());
    for (const auto& [c, folder] : expected_primary(GetParam())) {
        if (folder) continue;
        EXPECT_EQ(path_of(l, file_model(c, "foo", ".safetensors")), std::nullopt) << to_string(c);
        EXPECT_EQ(path_of(l, tree_model(c, "foo")), std::nullopt) << to_string(c);
    }
}

TEST_P(ViewLayoutBuiltin, SecondaryFoldersClassifyButAreNeverShown) {
    const ViewLayout l = layout(GetParam());
    const auto secondary = expected_secondary(GetParam());
    // .safetensors where the folder takes it, else its first extension (GFPGAN: only .pth).
    const auto ext_of = [&](const std::string& folder) -> std::string {
        for (const auto& f : l.folders()) {
            if (f.path != folder || f.extensions.empty()) continue;
            for (const auto& e : f.extensions)
                if (e == ".safetensors") return e;
            return f.extensions.front();
        }
        return ".safetensors";
    };
    for (const auto& [folder, c] : secondary) {
        const std::string ext = ext_of(folder);
        const auto back = l.classify(folder + "/sub/foo" + ext);
        ASSERT_TRUE(back.has_value()) << folder;
        EXPECT_EQ(*back, (ViewPath{c, folder, "sub/foo" + ext, ext}));
        EXPECT_NE(l.folder_for(c), folder);
    }
    for (const auto& f : l.folders()) {
        EXPECT_EQ(f.primary, secondary.count(f.path) == 0) << f.path;
    }
    // A model whose name starts like a secondary folder still lands in the primary one.
    for (const auto& [folder, c] : secondary) {
        const std::string ext = ext_of(folder);
        const auto p = path_of(l, file_model(c, folder + "/x", ext));
        ASSERT_TRUE(p.has_value()) << folder;
        EXPECT_EQ(*p, *l.folder_for(c) + "/" + folder + "/x" + ext);
    }
}

TEST_P(ViewLayoutBuiltin, PathsOutsideCategoryFolders) {
    const ViewLayout l = layout(GetParam());
    const std::string lora = *l.folder_for(Category::lora);
    for (const std::string& p : {
             std::string("configs/x.yaml"),
             std::string("x.safetensors"),
             std::string("nowhere/foo.safetensors"),
             std::string(),
             lora,
             lora + "/",
             "/" + lora + "/foo.safetensors",
             lora + "/../foo.safetensors",
             lora + "/./foo.safetensors",
             lora + "//foo.safetensors",
             lora + "/foo.safetensors/",
             lora + "/.safetensors",
             lora + "/sdxl/.safetensors",
             lora + "/foo",
             lora + "/foo.txt",
             lora + "/foo.yaml",
             lora + "X/foo.safetensors",
             lora.substr(0, lora.size() - 1) + "/foo.safetensors",
         }) {
        EXPECT_EQ(l.classify(p), std::nullopt) << '"' << p << '"';
    }
}

TEST_P(ViewLayoutBuiltin, FolderMatchIsCaseSensitiveExtensionIsNot) {
    const ViewLayout l = layout(GetParam());
    const std::string lora = *l.folder_for(Category::lora);
    const std::string flipped = lora == "Lora" ? "lora" : "Loras";
    EXPECT_EQ(l.classify(flipped + "/foo.safetensors"), std::nullopt);

    const auto back = l.classify(lora + "/Foo.SafeTensors");
    ASSERT_TRUE(back.has_value());
    EXPECT_EQ(*back, (ViewPath{Category::lora, lora, "Foo.SafeTensors", ".SafeTensors"}));
    const auto p = path_of(l, file_model(Category::lora, "Foo", ".SAFETENSORS"));
    EXPECT_EQ(p, lora + "/Foo.SAFETENSORS");
    EXPECT_EQ(l.classify(*p)->ext, ".SAFETENSORS");
}

TEST_P(ViewLayoutBuiltin, OtherCategoryNeverShown) {
    const ViewLayout l = layout(GetParam());
    EXPECT_EQ(path_of(l, file_model(Category::other, "foo", ".safetensors")), std::nullopt);
    for (const auto& f : l.folders()) EXPECT_NE(f.category, Category::other) << f.path;
}

TEST_P(ViewLayoutBuiltin, TreeOnlyInDiffusersFolderAndFileNeverThere) {
    const ViewLayout l = layout(GetParam());
    EXPECT_EQ(path_of(l, tree_model(Category::lora, "peft-lora")), std::nullopt);
    EXPECT_EQ(path_of(l, tree_model(Category::checkpoint, "sd15")), std::nullopt);
    EXPECT_EQ(path_of(l, file_model(Category::diffusers, "sd15", ".safetensors")), std::nullopt);
}

TEST_P(ViewLayoutBuiltin, BadModelNamesAreNotShown) {
    const ViewLayout l = layout(GetParam());
    for (const std::string name : {"", "../foo", "a//b", "./foo", "a/", "/abs"}) {
        EXPECT_EQ(path_of(l, file_model(Category::lora, name, ".safetensors")), std::nullopt)
            << '"' << name << '"';
    }
    EXPECT_EQ(path_of(l, file_model(Category::lora, "foo", "")), std::nullopt);
}

TEST_P(ViewLayoutBuiltin, JsonRoundTrip) {
    const ViewLayout l = layout(GetParam());
    const json j = l.to_json();
    EXPECT_EQ(j.at("name"), GetParam());
    EXPECT_EQ(j.at("folders").size(), l.folders().size());
    const ViewLayout back = ViewLayout::from_json(j);
    EXPECT_EQ(back, l);
    EXPECT_EQ(back.to_json(), j);
    // Through text too, as a user's file would be read.
    EXPECT_EQ(ViewLayout::from_json(json::parse(j.dump(2))), l);
}

TEST(ViewLayoutBuiltins, NamesAndAliases) {
    EXPECT_EQ(
        ViewLayout::builtin_names(),
        (std::vector<std::string>{"a1111", "forge", "sdnext", "comfyui", "fooocus", "invokeai"}));
    for (const char* alias : {"A1111", "automatic1111", "AUTOMATIC1111", "Automatic1111"}) {
        const auto l = ViewLayout::builtin(alias);
        ASSERT_TRUE(l.has_value()) << alias;
        EXPECT_EQ(l->name(), "a1111");
    }
    EXPECT_EQ(ViewLayout::builtin("ComfyUI")->name(), "comfyui");
    EXPECT_EQ(ViewLayout::builtin("SDNext")->name(), "sdnext");
    EXPECT_EQ(ViewLayout::builtin("FOOOCUS")->name(), "fooocus");
    EXPECT_EQ(ViewLayout::builtin("Forge")->name(), "forge");
    EXPECT_EQ(ViewLayout::builtin("InvokeAI")->name(), "invokeai");
    for (const char* bad : {"", "invoke", "comfy", "a1111 ", "automatic"}) {
        EXPECT_EQ(ViewLayout::builtin(bad), std::nullopt) << bad;
    }
}

TEST(ViewLayoutExtensions, PthCheckpointShownByComfyNotByA1111) {
    const Fixture m = file_model(Category::checkpoint, "old", ".pth");
    EXPECT_EQ(path_of(layout("a1111"), m), std::nullopt);
    EXPECT_EQ(path_of(layout("forge"), m), std::nullopt);
    EXPECT_EQ(path_of(layout("comfyui"), m), "checkpoints/old.pth");
    EXPECT_EQ(path_of(layout("fooocus"), m), "checkpoints/old.pth");
    EXPECT_EQ(layout("a1111").classify("Stable-diffusion/old.pth"), std::nullopt);
    EXPECT_TRUE(layout("comfyui").classify("checkpoints/old.pth").has_value());
}

TEST(ViewLayoutExtensions, GgufCheckpointOnlyInForge) {
    const Fixture m = file_model(Category::checkpoint, "flux-q4", ".gguf");
    EXPECT_EQ(path_of(layout("a1111"), m), std::nullopt);
    EXPECT_EQ(path_of(layout("forge"), m), "Stable-diffusion/flux-q4.gguf");
    EXPECT_EQ(path_of(layout("comfyui"), m), std::nullopt);
    EXPECT_EQ(path_of(layout("fooocus"), m), std::nullopt);
    // Forge's UNet folder and ComfyUI's (for ComfyUI-GGUF) take quantized diffusion models.
    const Fixture unet = file_model(Category::diffusion_model, "flux-q4", ".gguf");
    // Forge lists them among its checkpoints (issue 16 finding 7), not from unet/.
    EXPECT_EQ(path_of(layout("forge"), unet), "Stable-diffusion/diffusion_models/flux-q4.gguf");
    EXPECT_EQ(path_of(layout("comfyui"), unet), "diffusion_models/flux-q4.gguf");
    EXPECT_EQ(path_of(layout("comfyui"), file_model(Category::text_encoder, "t5", ".gguf")),
              "text_encoders/t5.gguf");
    EXPECT_EQ(path_of(layout("comfyui"), file_model(Category::lora, "x", ".gguf")), std::nullopt);
}

TEST(ViewLayoutExtensions, PerToolLists) {
    const ViewLayout a1111 = layout("a1111");
    const ViewLayout comfy = layout("comfyui");
    const ViewLayout fooocus = layout("fooocus");
    // A1111 LoRA: .pt .ckpt .safetensors.
    EXPECT_EQ(path_of(a1111, file_model(Category::lora, "x", ".pt")), "Lora/x.pt");
    EXPECT_EQ(path_of(a1111, file_model(Category::lora, "x", ".ckpt")), "Lora/x.ckpt");
    EXPECT_EQ(path_of(a1111, file_model(Category::lora, "x", ".bin")), std::nullopt);
    // A1111 embeddings: .pt .bin .safetensors.
    EXPECT_EQ(path_of(a1111, file_model(Category::embedding, "e", ".bin")), "embeddings/e.bin");
    EXPECT_EQ(path_of(a1111, file_model(Category::embedding, "e", ".ckpt")), std::nullopt);
    // A1111 upscalers: .pth .pt .safetensors.
    EXPECT_EQ(path_of(a1111, file_model(Category::upscaler, "4x", ".pth")), "ESRGAN/4x.pth");
    EXPECT_EQ(path_of(a1111, file_model(Category::upscaler, "4x", ".ckpt")), std::nullopt);
    // ComfyUI's own formats.
    EXPECT_EQ(path_of(comfy, file_model(Category::lora, "x", ".pt2")), "loras/x.pt2");
    EXPECT_EQ(path_of(comfy, file_model(Category::lora, "x", ".pkl")), "loras/x.pkl");
    EXPECT_EQ(path_of(comfy, file_model(Category::lora, "x", ".sft")), "loras/x.sft");
    EXPECT_EQ(path_of(a1111, file_model(Category::lora, "x", ".pkl")), std::nullopt);
    // Fooocus: the two-dot extension is one extension.
    EXPECT_EQ(path_of(fooocus, file_model(Category::lora, "inpaint", ".fooocus.patch")),
              "loras/inpaint.fooocus.patch");
    EXPECT_EQ(fooocus.classify("loras/inpaint_v26.Fooocus.Patch"),
              (ViewPath{Category::lora, "loras", "inpaint_v26.Fooocus.Patch", ".Fooocus.Patch"}));
    EXPECT_EQ(fooocus.classify("loras/x.patch"), std::nullopt);
    EXPECT_EQ(path_of(fooocus, file_model(Category::lora, "x", ".pt")), std::nullopt);
    // A name ending in ".fooocus" with ext ".patch" would read back as another model.
    EXPECT_EQ(path_of(fooocus, file_model(Category::lora, "x.fooocus", ".patch")), std::nullopt);
    // Dots inside names are fine.
    EXPECT_EQ(path_of(comfy, file_model(Category::lora, "v1.5/x.y", ".safetensors")),
              "loras/v1.5/x.y.safetensors");
    EXPECT_EQ(comfy.classify("loras/v1.5/x.y.safetensors"),
              (ViewPath{Category::lora, "loras", "v1.5/x.y.safetensors", ".safetensors"}));
}

TEST(ViewLayoutA1111, SkipsVaeNamedCheckpoints) {
    for (const char* tool : {"a1111", "forge"}) {
        const ViewLayout l = layout(tool);
        EXPECT_EQ(path_of(l, file_model(Category::checkpoint, "foo.vae", ".safetensors")),
                  std::nullopt)
            << tool;
        EXPECT_EQ(path_of(l, file_model(Category::checkpoint, "foo.vae", ".ckpt")), std::nullopt);
        EXPECT_EQ(path_of(l, file_model(Category::checkpoint, "foo.VAE", ".SafeTensors")),
                  std::nullopt);
        EXPECT_EQ(l.classify("Stable-diffusion/foo.vae.safetensors"), std::nullopt);
        EXPECT_EQ(l.classify("Stable-diffusion/sub/foo.Vae.Ckpt"), std::nullopt);
        // Only the exact ending: a "vae" elsewhere in the name is an ordinary checkpoint.
        EXPECT_EQ(path_of(l, file_model(Category::checkpoint, "sdxl_vae_fix", ".safetensors")),
                  "Stable-diffusion/sdxl_vae_fix.safetensors");
        EXPECT_EQ(path_of(l, file_model(Category::checkpoint, "foo.vae.v2", ".safetensors")),
                  "Stable-diffusion/foo.vae.v2.safetensors");
        // The skip is a checkpoint-folder rule; VAE/ shows such names.
        EXPECT_EQ(path_of(l, file_model(Category::vae, "foo.vae", ".safetensors")),
                  "VAE/foo.vae.safetensors");
    }
    EXPECT_EQ(path_of(layout("comfyui"), file_model(Category::checkpoint, "foo.vae", ".ckpt")),
              "checkpoints/foo.vae.ckpt");
}

TEST(ViewLayoutA1111, EmbeddingsAndSecondaryFolders) {
    const ViewLayout l = layout("a1111");
    EXPECT_EQ(path_of(l, file_model(Category::embedding, "easynegative", ".safetensors")),
              "embeddings/easynegative.safetensors");
    EXPECT_EQ(l.classify("LyCORIS/locon.safetensors"),
              (ViewPath{Category::lora, "LyCORIS", "locon.safetensors", ".safetensors"}));
    EXPECT_EQ(l.classify("LDSR/model.ckpt"),
              (ViewPath{Category::upscaler, "LDSR", "model.ckpt", ".ckpt"}));
    EXPECT_EQ(l.classify("ESRGAN/model.ckpt"), std::nullopt);
    EXPECT_EQ(l.classify("Codeformer/codeformer-v0.1.0.pth"),
              (ViewPath{Category::face_restore, "Codeformer", "codeformer-v0.1.0.pth", ".pth"}));
    EXPECT_EQ(l.classify("diffusers/sd15"), std::nullopt);
}

TEST(ViewLayoutDiffusers, FolderModels) {
    const ViewLayout comfy = layout("comfyui");
    const ViewLayout sdnext = layout("sdnext");
    EXPECT_EQ(path_of(comfy, tree_model(Category::diffusers, "sd15")), "diffusers/sd15");
    EXPECT_EQ(path_of(sdnext, tree_model(Category::diffusers, "sd15")), "Diffusers/sd15");
    EXPECT_EQ(path_of(comfy, tree_model(Category::diffusers, "runwayml/sd15")),
              "diffusers/runwayml/sd15");
    for (const char* tool : {"a1111", "forge", "fooocus"}) {
        EXPECT_EQ(path_of(layout(tool), tree_model(Category::diffusers, "sd15")), std::nullopt)
            << tool;
    }
    EXPECT_EQ(comfy.classify("diffusers/sd15"),
              (ViewPath{Category::diffusers, "diffusers", "sd15", ""}));
    // Without the catalog the model's folder and its files cannot be told apart.
    EXPECT_EQ(comfy.classify("diffusers/sd15/model_index.json"),
              (ViewPath{Category::diffusers, "diffusers", "sd15/model_index.json", ""}));
    EXPECT_EQ(comfy.classify("diffusers"), std::nullopt);
    EXPECT_EQ(comfy.classify("diffusers/"), std::nullopt);
    EXPECT_EQ(sdnext.classify("diffusers/sd15"), std::nullopt);
}

TEST(ViewLayoutComfyUI, LegacyAndPluginFolders) {
    const ViewLayout l = layout("comfyui");
    EXPECT_EQ(
        l.classify("unet/flux1-dev.safetensors"),
        (ViewPath{Category::diffusion_model, "unet", "flux1-dev.safetensors", ".safetensors"}));
    EXPECT_EQ(l.classify("clip/t5xxl.safetensors"),
              (ViewPath{Category::text_encoder, "clip", "t5xxl.safetensors", ".safetensors"}));
    EXPECT_EQ(l.classify("t2i_adapter/sketch.pth"),
              (ViewPath{Category::controlnet, "t2i_adapter", "sketch.pth", ".pth"}));
    EXPECT_EQ(path_of(l, file_model(Category::ipadapter, "ip-adapter_sd15", ".safetensors")),
              "ipadapter/ip-adapter_sd15.safetensors");
    EXPECT_EQ(l.classify("configs/v1-inference.yaml"), std::nullopt);
    EXPECT_EQ(l.classify("style_models/x.safetensors"),
              (ViewPath{Category::style_model, "style_models", "x.safetensors", ".safetensors"}));
    EXPECT_EQ(l.classify("latent_upscale_models/x.safetensors"),
              (ViewPath{Category::latent_upscaler, "latent_upscale_models", "x.safetensors",
                        ".safetensors"}));
    for (const char* tool : {"a1111", "forge", "sdnext", "fooocus"}) {
        EXPECT_EQ(path_of(layout(tool), file_model(Category::ipadapter, "ip", ".safetensors")),
                  std::nullopt)
            << tool;
    }
}

// ---- user-defined layouts ----

TEST(ViewLayoutJson, MinimalUserLayout) {
    const ViewLayout l = ViewLayout::from_json(json::parse(R"({
        "name": "mytool",
        "folders": [
            {"path": "models/Lora", "category": "lora"},
            {"path": "models/LyCORIS", "category": "LyCORIS"},
            {"path": "ckpt", "category": "checkpoint", "extensions": [".SafeTensors", ".ckpt"]}
        ]})"));
    EXPECT_EQ(l.name(), "mytool");
    ASSERT_EQ(l.folders().size(), 3U);
    EXPECT_EQ(l.folders()[0], (ViewFolder{"models/Lora", Category::lora, {}, true, {}}));
    EXPECT_EQ(l.folders()[1], (ViewFolder{"models/LyCORIS", Category::lora, {}, false, {}}));
    EXPECT_EQ(l.folders()[2].extensions, (std::vector<std::string>{".safetensors", ".ckpt"}));
    EXPECT_TRUE(l.folders()[2].primary);
    EXPECT_EQ(l.folder_for(Category::lora), "models/Lora");
    // No extension list: anything with an extension is a model file.
    EXPECT_EQ(l.classify("models/LyCORIS/x.whatever"),
              (ViewPath{Category::lora, "models/LyCORIS", "x.whatever", ".whatever"}));
    EXPECT_EQ(l.classify("models/Lora/noext"), std::nullopt);
    EXPECT_EQ(l.classify("models/x.safetensors"), std::nullopt);
    EXPECT_EQ(path_of(l, file_model(Category::lora, "a/b", ".safetensors")),
              "models/Lora/a/b.safetensors");
    EXPECT_EQ(path_of(l, file_model(Category::checkpoint, "c", ".CKPT")), "ckpt/c.CKPT");
    EXPECT_EQ(path_of(l, file_model(Category::checkpoint, "c", ".pt")), std::nullopt);
    EXPECT_EQ(ViewLayout::from_json(l.to_json()), l);
}

TEST(ViewLayoutJson, ExplicitPrimaryWinsOverDefault) {
    const ViewLayout l = ViewLayout::from_json(json::parse(R"({"name": "t", "folders": [
        {"path": "a", "category": "lora"},
        {"path": "b", "category": "lora", "primary": true},
        {"path": "c", "category": "vae", "primary": false}]})"));
    EXPECT_FALSE(l.folders()[0].primary);
    EXPECT_TRUE(l.folders()[1].primary);
    EXPECT_FALSE(l.folders()[2].primary);
    EXPECT_EQ(l.folder_for(Category::lora), "b");
    // All-secondary: the category classifies writes but nothing is shown.
    EXPECT_EQ(l.folder_for(Category::vae), std::nullopt);
    EXPECT_EQ(l.classify("c/x.pt"), (ViewPath{Category::vae, "c", "x.pt", ".pt"}));
    EXPECT_EQ(path_of(l, file_model(Category::vae, "x", ".pt")), std::nullopt);
}

TEST(ViewLayoutJson, ExcludeAndEmptyFolders) {
    const ViewLayout l = ViewLayout::from_json(json::parse(R"({"name": "t", "folders": [
        {"path": "sd", "category": "checkpoint", "extensions": [".safetensors"],
         "exclude": [".VAE.safetensors"]}]})"));
    EXPECT_EQ(l.folders()[0].exclude, (std::vector<std::string>{".vae.safetensors"}));
    EXPECT_EQ(l.classify("sd/x.vae.safetensors"), std::nullopt);
    EXPECT_TRUE(l.classify("sd/x.safetensors").has_value());
    EXPECT_EQ(l.to_json()["folders"][0]["exclude"], json::array({".vae.safetensors"}));
    const ViewLayout empty = ViewLayout::from_json(json::parse(R"({"name": "e", "folders": []})"));
    EXPECT_TRUE(empty.folders().empty());
    EXPECT_EQ(empty.classify("loras/x.safetensors"), std::nullopt);
    EXPECT_EQ(ViewLayout::from_json(empty.to_json()), empty);
}

TEST(ViewLayoutJson, ToJsonShape) {
    const json j = layout("a1111").to_json();
    EXPECT_EQ(j["folders"][0], json::parse(R"({"path": "Stable-diffusion",
        "category": "checkpoint", "extensions": [".ckpt", ".safetensors"], "primary": true,
        "exclude": [".vae.ckpt", ".vae.safetensors"]})"));
    for (std::size_t i = 1; i < j["folders"].size(); ++i) {
        EXPECT_FALSE(j["folders"][i].contains("exclude")) << i;
    }
}

// from_json must throw StoreError (bad_input) whose message names the field at fault.
void expect_error(const std::string& text, const std::vector<std::string>& needles) {
    SCOPED_TRACE(text);
    try {
        ViewLayout::from_json(json::parse(text));
        ADD_FAILURE() << "accepted";
    } catch (const StoreError& e) {
        EXPECT_EQ(e.kind(), ErrorKind::bad_input);
        const std::string msg = e.what();
        for (const auto& n : needles) {
            EXPECT_NE(msg.find(n), std::string::npos) << "message: " << msg << "\nwant: " << n;
        }
    }
}

std::string one_folder(const std::string& folder_json) {
    return R"({"name": "bad", "folders": [)" + folder_json + "]}";
}

TEST(ViewLayoutJsonErrors, TopLevel) {
    expect_error("[]", {"JSON object"});
    expect_error(R"({"folders": []})", {"\"name\""});
    expect_error(R"({"name": 3, "folders": []})", {"\"name\""});
    expect_error(R"({"name": "", "folders": []})", {"\"name\"", "empty"});
    expect_error(R"({"name": "x"})", {"\"x\"", "\"folders\""});
    expect_error(R"({"name": "x", "folders": {}})", {"\"folders\"", "array"});
    expect_error(R"({"name": "x", "folders": [], "folder": []})", {"unknown key", "\"folder\""});
    expect_error(R"({"name": "x", "folders": ["loras"]})", {"folders[0]", "object"});
}

TEST(ViewLayoutJsonErrors, UnknownCategory) {
    expect_error(one_folder(R"({"path": "l", "category": "lorra"})"),
                 {"view layout \"bad\"", "folders[0].category", "unknown category", "\"lorra\""});
    expect_error(one_folder(R"({"path": "l"})"), {"folders[0].category"});
    expect_error(one_folder(R"({"path": "l", "category": 1})"), {"folders[0].category"});
}

TEST(ViewLayoutJsonErrors, BadPaths) {
    expect_error(one_folder(R"({"category": "lora"})"), {"folders[0].path"});
    expect_error(one_folder(R"({"path": 1, "category": "lora"})"), {"folders[0].path"});
    expect_error(one_folder(R"({"path": "", "category": "lora"})"), {"folders[0].path", "empty"});
    expect_error(one_folder(R"({"path": "/models/loras", "category": "lora"})"),
                 {"folders[0].path", "\"/models/loras\"", "absolute"});
    expect_error(one_folder(R"({"path": "models/../loras", "category": "lora"})"),
                 {"folders[0].path", "\"..\""});
    expect_error(one_folder(R"({"path": "..", "category": "lora"})"),
                 {"folders[0].path", "\"..\""});
    expect_error(one_folder(R"({"path": "./loras", "category": "lora"})"),
                 {"folders[0].path", "\".\""});
    expect_error(one_folder(R"({"path": "a//b", "category": "lora"})"),
                 {"folders[0].path", "empty component"});
    expect_error(one_folder(R"({"path": "loras/", "category": "lora"})"),
                 {"folders[0].path", "empty component"});
}

TEST(ViewLayoutJsonErrors, TwoPrimaryFoldersForOneCategory) {
    expect_error(R"({"name": "bad", "folders": [
        {"path": "Lora", "category": "lora", "primary": true},
        {"path": "vae", "category": "vae"},
        {"path": "LyCORIS", "category": "lycoris", "primary": true}]})",
                 {"folders[2].primary", "\"lora\"", "folders[0].path", "\"Lora\""});
}

TEST(ViewLayoutJsonErrors, DuplicateAndNestedPaths) {
    expect_error(R"({"name": "bad", "folders": [
        {"path": "loras", "category": "lora"},
        {"path": "loras", "category": "vae"}]})",
                 {"folders[1].path", "\"loras\"", "duplicates", "folders[0].path"});
    expect_error(R"({"name": "bad", "folders": [
        {"path": "loras/lycoris", "category": "lora"},
        {"path": "loras", "category": "lora", "primary": false}]})",
                 {"folders[1].path", "nested"});
    // Same letters, different case: distinct folders on Linux.
    EXPECT_NO_THROW(ViewLayout::from_json(json::parse(R"({"name": "ok", "folders": [
        {"path": "Lora", "category": "lora"}, {"path": "lora", "category": "lora"}]})")));
    // A shared prefix that is not a whole component is not nesting.
    EXPECT_NO_THROW(ViewLayout::from_json(json::parse(R"({"name": "ok", "folders": [
        {"path": "vae", "category": "vae"}, {"path": "vae_approx", "category": "vae_approx"}]})")));
}

TEST(ViewLayoutJsonErrors, BadOptionalFields) {
    expect_error(one_folder(R"({"path": "l", "category": "lora", "extensions": ".pt"})"),
                 {"folders[0].extensions", "array"});
    expect_error(one_folder(R"({"path": "l", "category": "lora", "extensions": [".pt", 3]})"),
                 {"folders[0].extensions[1]", "string"});
    expect_error(one_folder(R"({"path": "l", "category": "lora", "extensions": ["pt"]})"),
                 {"folders[0].extensions[0]", "\"pt\""});
    expect_error(one_folder(R"({"path": "l", "category": "lora", "extensions": ["."]})"),
                 {"folders[0].extensions[0]"});
    expect_error(one_folder(R"({"path": "l", "category": "lora", "primary": "yes"})"),
                 {"folders[0].primary"});
    expect_error(one_folder(R"({"path": "l", "category": "lora", "exclude": [""]})"),
                 {"folders[0].exclude[0]"});
    expect_error(one_folder(R"({"path": "l", "category": "lora", "extention": [".pt"]})"),
                 {"folders[0].extention", "unknown key"});
}

TEST(ViewLayoutJsonErrors, ConstructorValidatesToo) {
    EXPECT_THROW(ViewLayout("x", {ViewFolder{"a", Category::lora, {}, true, {}},
                                  ViewFolder{"b", Category::lora, {}, true, {}}}),
                 StoreError);
    EXPECT_THROW(ViewLayout("", {}), StoreError);
    EXPECT_THROW(ViewLayout("x", {ViewFolder{"../a", Category::lora, {}, true, {}}}), StoreError);
}

// ---- Issue 16 finding 7: the folders each tool's own code reads ------------------------------
// Categories added by issue 16 are looked up by name, so these tests also build against a tree
// that lacks them (and fail there, as they should).

Category named(std::string_view name) {
    const auto c = parse_category(name);
    if (!c) throw std::runtime_error("no category " + std::string(name));
    return *c;
}

TEST(ViewLayoutToolCode, ForgeShowsDiffusionModelsAmongItsCheckpoints) {
    // Forge's list_models walks Stable-diffusion/ (recursively) for .ckpt .safetensors .gguf and
    // loads unet-only Flux from there; no other folder feeds its model menu.
    const ViewLayout forge = layout("forge");
    const auto flux =
        path_of(forge, file_model(Category::diffusion_model, "flux1-dev-Q4_K_S", ".gguf"));
    ASSERT_TRUE(flux.has_value());
    EXPECT_EQ(*flux, "Stable-diffusion/diffusion_models/flux1-dev-Q4_K_S.gguf");
    const auto st =
        path_of(forge, file_model(Category::diffusion_model, "flux/dev", ".safetensors"));
    EXPECT_EQ(st, "Stable-diffusion/diffusion_models/flux/dev.safetensors");
    for (const auto& f : forge.folders()) {
        if (f.category != Category::diffusion_model || !f.primary) continue;
        EXPECT_TRUE(f.path.starts_with("Stable-diffusion/")) << f.path;
    }
    // What Forge or a user saves there is a diffusion model (for ComfyUI's diffusion_models/),
    // what is saved next to it a checkpoint.
    EXPECT_EQ(forge.classify("Stable-diffusion/diffusion_models/x.gguf"),
              (ViewPath{Category::diffusion_model, "Stable-diffusion/diffusion_models", "x.gguf",
                        ".gguf"}));
    EXPECT_EQ(forge.classify("Stable-diffusion/x.gguf"),
              (ViewPath{Category::checkpoint, "Stable-diffusion", "x.gguf", ".gguf"}));
    // A checkpoint whose name would put it inside the diffusion models' folder is not shown
    // there as something it is not.
    EXPECT_EQ(
        path_of(forge, file_model(Category::checkpoint, "diffusion_models/x", ".safetensors")),
        std::nullopt);
    // Legacy forge/unet/ still classifies, but shows nothing: Forge does not read it.
    EXPECT_EQ(forge.classify("unet/y.safetensors")->category, Category::diffusion_model);
    // A1111 loads no unet-only model at all.
    EXPECT_EQ(layout("a1111").folder_for(Category::diffusion_model), std::nullopt);
}

TEST(ViewLayoutToolCode, A1111EmbeddingsAtTheWebuiRootAndNoTextEncoderFolder) {
    // modules/shared_cmd_options.py: --embeddings-dir defaults to <data dir>/embeddings, beside
    // models/, not models/embeddings; the view's embeddings/ is what --embeddings-dir names.
    for (const char* tool : {"a1111", "forge"}) {
        const ViewLayout l = layout(tool);
        EXPECT_EQ(l.folder_for(Category::embedding), "embeddings") << tool;
        EXPECT_EQ(l.classify("embeddings/easynegative.safetensors")->category, Category::embedding);
        EXPECT_EQ(l.classify("embeddings/bad-hands.pt")->category, Category::embedding);
        EXPECT_EQ(l.classify("embeddings/x.ckpt"), std::nullopt);  // not in load_from_dir
    }
    // Only Forge reads models/text_encoder (modules_forge/main_entry.py).
    EXPECT_EQ(layout("a1111").folder_for(Category::text_encoder), std::nullopt);
    EXPECT_EQ(layout("forge").folder_for(Category::text_encoder), "text_encoder");
    // A1111's face restorers (modules/codeformer_model.py, gfpgan_model.py) take .pth.
    EXPECT_EQ(layout("a1111").classify("GFPGAN/GFPGANv1.4.pth")->category, named("face_restore"));
    EXPECT_EQ(
        path_of(layout("a1111"), file_model(named("face_restore"), "codeformer-v0.1.0", ".pth")),
        "Codeformer/codeformer-v0.1.0.pth");
}

TEST(ViewLayoutToolCode, ComfyUIHasEveryModelKeyOfFolderPaths) {
    // ComfyUI folder_paths.py folder_names_and_paths, every key whose folders are under models/
    // (custom_nodes is not; configs holds .yaml text kept plain), and ComfyUI_IPAdapter_plus.
    const std::map<std::string, std::string> keys{
        {"checkpoints", "checkpoint"},
        {"loras", "lora"},
        {"vae", "vae"},
        {"text_encoders", "text_encoder"},
        {"clip", "text_encoder"},
        {"diffusion_models", "diffusion_model"},
        {"unet", "diffusion_model"},
        {"clip_vision", "clip_vision"},
        {"style_models", "style_model"},
        {"embeddings", "embedding"},
        {"diffusers", "diffusers"},
        {"vae_approx", "vae_approx"},
        {"controlnet", "controlnet"},
        {"t2i_adapter", "controlnet"},
        {"gligen", "gligen"},
        {"upscale_models", "upscaler"},
        {"latent_upscale_models", "latent_upscaler"},
        {"hypernetworks", "hypernetwork"},
        {"photomaker", "photomaker"},
        {"classifiers", "classifier"},
        {"model_patches", "model_patch"},
        {"audio_encoders", "audio_encoder"},
        {"ipadapter", "ipadapter"},
    };
    const ViewLayout l = layout("comfyui");
    std::map<std::string, std::string> actual;
    for (const auto& f : l.folders()) actual[f.path] = std::string(to_string(f.category));
    EXPECT_EQ(actual, keys);
    for (const char* key : {"style_models", "gligen", "latent_upscale_models", "photomaker",
                            "model_patches", "audio_encoders"}) {
        const auto back = l.classify(std::string(key) + "/sub/x.safetensors");
        ASSERT_TRUE(back.has_value()) << key;
        EXPECT_EQ(back->category, named(keys.at(key))) << key;
        EXPECT_EQ(l.folder_for(back->category), key);
    }
    EXPECT_EQ(l.classify("configs/v1-inference.yaml"), std::nullopt);
}

TEST(ViewLayoutToolCode, FooocusInpaintAndPromptExpansion) {
    // Fooocus modules/config.py path_inpaint and path_fooocus_expansion.
    const ViewLayout l = layout("fooocus");
    EXPECT_EQ(
        l.classify("inpaint/inpaint_v26.fooocus.patch"),
        (ViewPath{named("inpaint"), "inpaint", "inpaint_v26.fooocus.patch", ".fooocus.patch"}));
    EXPECT_EQ(l.classify("inpaint/fooocus_inpaint_head.pth")->category, named("inpaint"));
    EXPECT_EQ(l.classify("prompt_expansion/fooocus_expansion/pytorch_model.bin"),
              (ViewPath{named("prompt_expansion"), "prompt_expansion",
                        "fooocus_expansion/pytorch_model.bin", ".bin"}));
    // The tokenizer files beside it are text, kept plain.
    EXPECT_EQ(l.classify("prompt_expansion/fooocus_expansion/tokenizer.json"), std::nullopt);
    EXPECT_EQ(path_of(l, file_model(named("inpaint"), "inpaint_v26", ".fooocus.patch")),
              "inpaint/inpaint_v26.fooocus.patch");
    // modules/config.py has no clip/ folder.
    EXPECT_EQ(l.folder_for(Category::text_encoder), std::nullopt);
}

TEST(ViewLayoutToolCode, NewCategoriesAreSharedBetweenViewsThatHaveTheFolder) {
    const Fixture style = file_model(named("style_model"), "flux1-redux-dev", ".safetensors");
    EXPECT_EQ(path_of(layout("comfyui"), style), "style_models/flux1-redux-dev.safetensors");
    EXPECT_EQ(path_of(layout("invokeai"), style), "style_model/flux1-redux-dev.safetensors");
    EXPECT_EQ(path_of(layout("a1111"), style), std::nullopt);
    const Fixture face = file_model(named("face_restore"), "GFPGANv1.4", ".pth");
    for (const char* tool : {"a1111", "forge", "sdnext"})
        EXPECT_EQ(path_of(layout(tool), face), "Codeformer/GFPGANv1.4.pth") << tool;
}

TEST(ViewLayoutToolCode, InvokeAIPathsAreCategoryAndCataloguedName) {
    const ViewLayout l = layout("invokeai");
    EXPECT_EQ(path_of(l, file_model(Category::checkpoint, "sd15/dreamshaper_8", ".safetensors")),
              "checkpoint/sd15/dreamshaper_8.safetensors");
    EXPECT_EQ(path_of(l, file_model(Category::diffusion_model, "flux1-dev-Q4_K_S", ".gguf")),
              "diffusion_model/flux1-dev-Q4_K_S.gguf");
    EXPECT_EQ(path_of(l, tree_model(Category::diffusers, "sdxl-base")), "diffusers/sdxl-base");
    EXPECT_EQ(path_of(l, file_model(Category::lora, "detail", ".pt")), "lora/detail.pt");
}

TEST(ViewLayoutJsonErrors, InnerFolderFirstAndOfAnotherCategoryIsAllowed) {
    const ViewLayout l = ViewLayout::from_json(json::parse(R"({"name": "ok", "folders": [
        {"path": "ckpt/unet", "category": "diffusion_model"},
        {"path": "ckpt", "category": "checkpoint"}]})"));
    EXPECT_EQ(l.classify("ckpt/unet/a.safetensors")->category, Category::diffusion_model);
    EXPECT_EQ(l.classify("ckpt/a.safetensors")->category, Category::checkpoint);
    EXPECT_EQ(l.classify("ckpt/unetx/a.safetensors")->category, Category::checkpoint);
    // Listed after its parent: refused, whatever the category.
    expect_error(R"({"name": "bad", "folders": [
        {"path": "ckpt", "category": "checkpoint"},
        {"path": "ckpt/unet", "category": "diffusion_model"}]})",
                 {"folders[1].path", "nested", "listed before"});
}

// A view's own stored file (category `file`) shows in that view alone, at the path it was saved
// at, whatever the view's folders list; every other model where path_for puts it.
TEST(ViewLayout, ShownAtPutsAViewsOwnFileAtItsPathInThatViewAlone) {
    const ViewLayout comfy = layout("comfyui");
    const ViewLayout a1111 = layout("a1111");
    const Fixture onnx = file_model(Category::file, "comfyui/rembg/u2net", ".onnx");
    EXPECT_EQ(comfy.shown_at(onnx.model, onnx.version), "rembg/u2net.onnx");
    EXPECT_FALSE(comfy.path_for(onnx.model, onnx.version));
    EXPECT_FALSE(a1111.shown_at(onnx.model, onnx.version));
    // The view's name must be the whole first component.
    const Fixture other = file_model(Category::file, "comfyuix/rembg/u2net", ".onnx");
    EXPECT_FALSE(comfy.shown_at(other.model, other.version));

    const Fixture lora = file_model(Category::lora, "sdxl/foo", ".safetensors");
    EXPECT_EQ(comfy.shown_at(lora.model, lora.version), path_of(comfy, lora));
    EXPECT_EQ(a1111.shown_at(lora.model, lora.version), "Lora/sdxl/foo.safetensors");
    const Fixture unlisted = file_model(Category::lora, "foo", ".onnx");
    EXPECT_FALSE(a1111.shown_at(unlisted.model, unlisted.version));
}

}  // namespace
}  // namespace modelfs::layouts
