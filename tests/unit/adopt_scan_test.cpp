// Install detection and scanning (modelfs/adopt/scan.h) on synthetic installs built in temp
// folders: tiny files with the names and layouts the real tools use.
#include "modelfs/adopt/scan.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "install_config.h"
#include "modelfs/layouts/tools.h"
#include "support/test_env.h"

namespace modelfs::adopt {
namespace {

namespace stdfs = std::filesystem;
using modelfs::testing::TempDir;
using modelfs::testing::write_text_file;
using Kind = ScannedFile::Kind;

void touch(const stdfs::path& p, const std::string& text = "x") {
    stdfs::create_directories(p.parent_path());
    write_text_file(p, text);
}

// Just the marker files detect_install looks at (and that real checkouts have).
stdfs::path make_install(const stdfs::path& root, const std::string& tool) {
    stdfs::create_directories(root / "models");
    if (tool == "comfyui") {
        touch(root / "main.py");
        touch(root / "folder_paths.py");
        touch(root / "nodes.py");
        stdfs::create_directories(root / "comfy");
    } else if (tool == "fooocus") {
        // Fooocus also has webui.py, launch.py and modules/: it must not pass for A1111.
        touch(root / "entry_with_update.py");
        touch(root / "fooocus_version.py");
        touch(root / "launch.py");
        touch(root / "webui.py");
        stdfs::create_directories(root / "modules");
        touch(root / "config_modification_tutorial.txt", "{}");
    } else {
        touch(root / "webui.py");
        touch(root / "launch.py");
        touch(root / "modules/sd_models.py");
        if (tool == "forge") stdfs::create_directories(root / "modules_forge");
        if (tool == "sdnext") touch(root / "installer.py");
    }
    return root;
}

// Sets an environment variable for one test and puts the old value back.
class ScopedEnv {
  public:
    ScopedEnv(const char* name, const std::string& value) : name_(name) {
        if (const char* old = std::getenv(name)) old_ = old;
        ::setenv(name, value.c_str(), 1);
    }
    ~ScopedEnv() {
        if (old_)
            ::setenv(name_, old_->c_str(), 1);
        else
            ::unsetenv(name_);
    }

  private:
    const char* name_;
    std::optional<std::string> old_;
};

const ModelDir* dir_for(const Install& inst, const stdfs::path& p) {
    for (const auto& d : inst.dirs)
        if (d.path == p) return &d;
    return nullptr;
}

bool has_note(const std::vector<std::string>& notes, const std::string& part) {
    for (const auto& n : notes)
        if (n.find(part) != std::string::npos) return true;
    return false;
}

std::string all_notes(const std::vector<std::string>& notes) {
    std::string s;
    for (const auto& n : notes) s += n + "\n";
    return s;
}

const ScannedFile* file_at(const InstallScan& s, const stdfs::path& p) {
    for (const auto& f : s.files)
        if (f.path == p) return &f;
    return nullptr;
}

InstallScan scan(const stdfs::path& root) {
    auto inst = detect_install(root);
    if (!inst) throw std::runtime_error("not detected: " + root.string());
    return scan_install(*inst, *layouts::ViewLayout::builtin(inst->tool));
}

// ---- detection -----------------------------------------------------------------------------

TEST(AdoptDetect, TellsTheFiveToolsApart) {
    TempDir t("adopt-detect");
    for (const std::string tool : {"a1111", "forge", "sdnext", "comfyui", "fooocus"}) {
        SCOPED_TRACE(tool);
        const stdfs::path root = make_install(t / tool, tool);
        auto inst = detect_install(root);
        ASSERT_TRUE(inst);
        EXPECT_EQ(inst->tool, tool);
        EXPECT_EQ(inst->root, stdfs::canonical(root));
        EXPECT_EQ(inst->models_dir, stdfs::canonical(root) / "models");
        ASSERT_FALSE(inst->dirs.empty());
        EXPECT_EQ(inst->dirs[0].path, inst->models_dir);
        EXPECT_TRUE(inst->dirs[0].replaced);
        EXPECT_EQ(inst->dirs[0].view_folder, "");
        // Every tool has a built-in view under the name detection gives.
        EXPECT_TRUE(layouts::ViewLayout::builtin(inst->tool));
    }
}

TEST(AdoptDetect, AFolderThatIsNoInstallIsNone) {
    TempDir t("adopt-detect");
    EXPECT_FALSE(detect_install(t.path()));
    EXPECT_FALSE(detect_install(t / "missing"));
    // Half an install: ComfyUI's main.py without comfy/ and folder_paths.py.
    touch(t / "half/main.py");
    stdfs::create_directories(t / "half/models/checkpoints");
    EXPECT_FALSE(detect_install(t / "half"));
    // A1111 without modules/.
    touch(t / "a/webui.py");
    touch(t / "a/launch.py");
    EXPECT_FALSE(detect_install(t / "a"));
    touch(t / "file");
    EXPECT_FALSE(detect_install(t / "file"));
    EXPECT_NE(known_install_markers().find("folder_paths.py"), std::string_view::npos);
}

TEST(AdoptDetect, MissingModelsFolderIsANote) {
    TempDir t("adopt-detect");
    const auto root = make_install(t / "ComfyUI", "comfyui");
    stdfs::remove(root / "models");
    auto inst = detect_install(root);
    ASSERT_TRUE(inst);
    EXPECT_TRUE(inst->dirs.empty());
    EXPECT_TRUE(has_note(inst->notes, "does not exist")) << all_notes(inst->notes);
}

TEST(AdoptDetect, ComfyuiExtraModelPaths) {
    TempDir t("adopt-detect");
    const auto root = make_install(t / "ComfyUI", "comfyui");
    const stdfs::path home = t / "home", a1111 = home / "sd-webui";
    for (const char* d : {"models/Stable-diffusion", "models/Lora", "models/LyCORIS",
                          "models/ESRGAN", "models/SwinIR", "embeddings", "models/VAE"})
        stdfs::create_directories(a1111 / d);
    stdfs::create_directories(t / "shared/unet");
    stdfs::create_directories(t / "shared/te");
    stdfs::create_directories(root / "rel/ipadapter");
    stdfs::create_directories(t / "quoted dir");
    ScopedEnv h("HOME", home.string());
    ScopedEnv v("MODELFS_TEST_SHARED", (t / "shared").string());
    write_text_file(root / "extra_model_paths.yaml", R"(# written by hand
a111:
    base_path: ~/sd-webui/   # trailing comment
    checkpoints: models/Stable-diffusion
    configs: models/Stable-diffusion
    vae: models/VAE
    loras: |
         models/Lora
         models/LyCORIS

    upscale_models: |
                  models/ESRGAN
                  models/SwinIR
    embeddings: embeddings
    hypernetworks: models/hypernetworks

other:
    base_path: ${MODELFS_TEST_SHARED}
    is_default: true
    unet: unet
    clip: "te"
    custom_nodes: nodes

norelative:
    ipadapter: rel/ipadapter
    controlnet: '{0}'
    models_again: models
    this line has no colon
    loras: [a, b]
)" + std::string("\t") + "vae: tabbed\n" + "spaced:\n    checkpoints: \"" +
                                                         (t / "quoted dir").string() + "\"\n");
    auto inst = detect_install(root);
    ASSERT_TRUE(inst);
    const std::string notes = all_notes(inst->notes);
    const auto* ckpt = dir_for(*inst, a1111 / "models/Stable-diffusion");
    ASSERT_TRUE(ckpt) << notes;  // ~ expanded, trailing '/' and comment dropped
    EXPECT_EQ(ckpt->view_folder, "checkpoints");
    EXPECT_FALSE(ckpt->replaced);
    EXPECT_EQ(ckpt->origin, "extra_model_paths.yaml: a111.checkpoints");
    // `configs` names the same folder: listed once, with a note.
    EXPECT_TRUE(has_note(inst->notes, "a111.configs")) << notes;
    ASSERT_TRUE(dir_for(*inst, a1111 / "models/Lora"));
    ASSERT_TRUE(dir_for(*inst, a1111 / "models/LyCORIS"));  // second line of the | block
    EXPECT_EQ(dir_for(*inst, a1111 / "models/LyCORIS")->view_folder, "loras");
    ASSERT_TRUE(dir_for(*inst, a1111 / "models/SwinIR"));
    EXPECT_EQ(dir_for(*inst, a1111 / "models/SwinIR")->view_folder, "upscale_models");
    ASSERT_TRUE(dir_for(*inst, a1111 / "embeddings"));
    // hypernetworks does not exist: a note, not a folder.
    EXPECT_FALSE(dir_for(*inst, a1111 / "models/hypernetworks"));
    EXPECT_TRUE(has_note(inst->notes, "hypernetworks")) << notes;
    // $VAR in base_path; legacy keys map to today's folders; custom_nodes is not a models folder.
    ASSERT_TRUE(dir_for(*inst, t / "shared/unet")) << notes;
    EXPECT_EQ(dir_for(*inst, t / "shared/unet")->view_folder, "diffusion_models");
    ASSERT_TRUE(dir_for(*inst, t / "shared/te"));
    EXPECT_EQ(dir_for(*inst, t / "shared/te")->view_folder, "text_encoders");
    EXPECT_FALSE(has_note(inst->notes, "nodes"));
    // Without base_path: relative to the yaml's folder; the models folder itself is not repeated.
    const auto* ipa = dir_for(*inst, stdfs::canonical(root) / "rel/ipadapter");
    ASSERT_TRUE(ipa) << notes;
    EXPECT_EQ(ipa->view_folder, "ipadapter");
    EXPECT_EQ(inst->dirs.size(), 12u) << notes;  // models/ + 11 configured folders
    ASSERT_TRUE(dir_for(*inst, t / "quoted dir")) << notes;
    // What it cannot read is a note naming file and line.
    EXPECT_TRUE(has_note(inst->notes, "extra_model_paths.yaml:28:")) << notes;  // no colon
    EXPECT_TRUE(has_note(inst->notes, "extra_model_paths.yaml:29:")) << notes;  // [a, b]
    EXPECT_TRUE(has_note(inst->notes, "extra_model_paths.yaml:30:")) << notes;  // tab
    // '{0}' is a quoted plain path (it does not exist), not a flow mapping.
    EXPECT_TRUE(has_note(inst->notes, "{0} does not exist")) << notes;
}

TEST(AdoptDetect, ComfyuiYamlThatIsNoYamlIsNotes) {
    TempDir t("adopt-detect");
    const auto root = make_install(t / "ComfyUI", "comfyui");
    write_text_file(root / "extra_model_paths.yaml",
                    std::string("\x01\x02 garbage: [\n  - ::\n: :\n\"unterminated: x\n") +
                        "top: value\nsec:\n  a: \"b\n  c: >\n    folded\n");
    auto inst = detect_install(root);
    ASSERT_TRUE(inst);
    EXPECT_EQ(inst->dirs.size(), 1u);
    EXPECT_GE(inst->notes.size(), 4u) << all_notes(inst->notes);
    EXPECT_TRUE(has_note(inst->notes, "extra_model_paths.yaml:5:")) << all_notes(inst->notes);

    // A BOM and CRLF line ends (a Windows editor), a relative base_path (against the yaml's
    // folder), an is_default that is no boolean.
    stdfs::create_directories(t / "ComfyUI/../sd/models/Lora");
    write_text_file(root / "extra_model_paths.yaml",
                    "\xEF\xBB\xBF"
                    "a111:\r\n  base_path: ../sd\r\n  is_default: maybe\r\n"
                    "  loras: models/Lora\r\n");
    inst = detect_install(root);
    ASSERT_TRUE(inst);
    ASSERT_EQ(inst->dirs.size(), 2u) << all_notes(inst->notes);
    EXPECT_EQ(inst->dirs[1].path, stdfs::canonical(t.path()) / "sd/models/Lora");
    EXPECT_EQ(inst->dirs[1].origin, "extra_model_paths.yaml: a111.loras");
    EXPECT_TRUE(has_note(inst->notes, "extra_model_paths.yaml:3: is_default"))
        << all_notes(inst->notes);
}

TEST(AdoptDetect, FooocusConfigTxt) {
    TempDir t("adopt-detect");
    const auto root = make_install(t / "Fooocus", "fooocus");
    stdfs::create_directories(t / "ckpt1");
    stdfs::create_directories(t / "ckpt2");
    stdfs::create_directories(t / "loras");
    stdfs::create_directories(root / "myvae");
    stdfs::create_directories(root / "models/checkpoints");
    stdfs::create_directories(t / "tutorial");
    write_text_file(root / "config.txt", R"({"path_checkpoints": [")" + (t / "ckpt1").string() +
                                             R"(", ")" + (t / "ckpt2").string() + R"(", ")" +
                                             (root / "models/checkpoints").string() +
                                             R"("], "path_loras": ")" + (t / "loras").string() +
                                             R"(", "path_vae": "myvae", "path_embeddings": 7,
                            "path_outputs": "/nowhere", "default_model": "x.safetensors"})");
    // Fooocus's sample file is not configuration.
    write_text_file(root / "config_modification_tutorial.txt",
                    R"({"path_loras": ")" + (t / "tutorial").string() + R"("})");
    auto inst = detect_install(root);
    ASSERT_TRUE(inst);
    const std::string notes = all_notes(inst->notes);
    ASSERT_TRUE(dir_for(*inst, t / "ckpt1")) << notes;
    ASSERT_TRUE(dir_for(*inst, t / "ckpt2")) << notes;
    EXPECT_EQ(dir_for(*inst, t / "ckpt2")->view_folder, "checkpoints");
    EXPECT_EQ(dir_for(*inst, t / "ckpt2")->origin, "config.txt: path_checkpoints");
    ASSERT_TRUE(dir_for(*inst, t / "loras"));
    EXPECT_EQ(dir_for(*inst, t / "loras")->view_folder, "loras");
    ASSERT_TRUE(dir_for(*inst, stdfs::canonical(root) / "myvae"));  // relative to the root
    EXPECT_FALSE(dir_for(*inst, t / "tutorial"));
    EXPECT_EQ(inst->dirs.size(), 5u) << notes;  // models/checkpoints is inside models/
    EXPECT_TRUE(has_note(inst->notes, "path_embeddings")) << notes;

    write_text_file(root / "config.txt", "{ not json");
    inst = detect_install(root);
    ASSERT_TRUE(inst);
    EXPECT_EQ(inst->dirs.size(), 1u);
    EXPECT_TRUE(has_note(inst->notes, "config.txt: not a JSON object")) << all_notes(inst->notes);
}

TEST(AdoptDetect, SdnextConfigJson) {
    TempDir t("adopt-detect");
    const auto root = make_install(t / "automatic", "sdnext");
    stdfs::create_directories(t / "big/Stable-diffusion");
    stdfs::create_directories(t / "big/Diffusers");
    stdfs::create_directories(root / "mylora");
    write_text_file(root / "config.json",
                    R"({"ckpt_dir": ")" + (t / "big/Stable-diffusion").string() +
                        R"(", "diffusers_dir": ")" + (t / "big/Diffusers").string() +
                        R"(", "lora_dir": "mylora", "vae_dir": "", "lyco_dir": ")" +
                        (root / "models/LyCORIS").string() + R"(", "unet_dir": ")" +
                        (t / "gone").string() +
                        R"(", "embeddings_dir": false, "sd_model_checkpoint": "x"})");
    stdfs::create_directories(root / "models/LyCORIS");
    auto inst = detect_install(root);
    ASSERT_TRUE(inst);
    const std::string notes = all_notes(inst->notes);
    ASSERT_TRUE(dir_for(*inst, t / "big/Stable-diffusion")) << notes;
    EXPECT_EQ(dir_for(*inst, t / "big/Stable-diffusion")->view_folder, "Stable-diffusion");
    EXPECT_EQ(dir_for(*inst, t / "big/Diffusers")->view_folder, "Diffusers");
    ASSERT_TRUE(dir_for(*inst, stdfs::canonical(root) / "mylora"));
    EXPECT_EQ(dir_for(*inst, stdfs::canonical(root) / "mylora")->origin, "config.json: lora_dir");
    EXPECT_EQ(inst->dirs.size(), 4u) << notes;  // LyCORIS is inside models/, vae_dir empty
    EXPECT_TRUE(has_note(inst->notes, "unet_dir")) << notes;
    EXPECT_TRUE(has_note(inst->notes, "embeddings_dir")) << notes;
}

TEST(AdoptDetect, A1111RootEmbeddingsAndWebuiUserFlags) {
    TempDir t("adopt-detect");
    const auto root = make_install(t / "webui", "a1111");
    stdfs::create_directories(root / "embeddings");
    auto inst = detect_install(root);
    ASSERT_TRUE(inst);
    ASSERT_EQ(inst->dirs.size(), 2u);
    EXPECT_EQ(inst->dirs[1].path, stdfs::canonical(root) / "embeddings");
    EXPECT_EQ(inst->dirs[1].view_folder, "embeddings");
    EXPECT_FALSE(inst->dirs[1].replaced);

    stdfs::create_directories(t / "ckpts");
    stdfs::create_directories(t / "my loras");
    stdfs::create_directories(t / "emb");
    write_text_file(root / "webui-user.sh",
                    "#!/bin/bash\n#export COMMANDLINE_ARGS=\"--ckpt-dir /commented\"\n"
                    "export COMMANDLINE_ARGS=\"--xformers --ckpt-dir " +
                        (t / "ckpts").string() + " --lora-dir '" + (t / "my loras").string() +
                        "' --embeddings-dir=" + (t / "emb").string() +
                        " --forge-ref-a1111-home /opt/a1111 --vae-dir\"\n");
    inst = detect_install(root);
    ASSERT_TRUE(inst);
    const std::string notes = all_notes(inst->notes);
    ASSERT_TRUE(dir_for(*inst, t / "ckpts")) << notes;
    EXPECT_EQ(dir_for(*inst, t / "ckpts")->view_folder, "Stable-diffusion");
    EXPECT_EQ(dir_for(*inst, t / "ckpts")->origin, "webui-user.sh: --ckpt-dir");
    ASSERT_TRUE(dir_for(*inst, t / "my loras")) << notes;
    EXPECT_EQ(dir_for(*inst, t / "my loras")->view_folder, "Lora");
    ASSERT_TRUE(dir_for(*inst, t / "emb")) << notes;
    // --embeddings-dir replaces the root embeddings/ folder.
    EXPECT_FALSE(dir_for(*inst, stdfs::canonical(root) / "embeddings"));
    EXPECT_EQ(inst->dirs.size(), 4u);
    EXPECT_TRUE(has_note(inst->notes, "--vae-dir without a folder")) << notes;
    EXPECT_TRUE(has_note(inst->notes, "--forge-ref-a1111-home /opt/a1111")) << notes;
}

TEST(AdoptDetect, DefaultInstallLocationsUnderHome) {
    TempDir t("adopt-detect");
    const stdfs::path home = t / "home";
    make_install(home / "stable-diffusion-webui", "a1111");
    make_install(home / "ComfyUI", "comfyui");
    stdfs::create_directories(home / "Fooocus");  // exists but is no install
    make_install(home / "StabilityMatrix/Data/Packages/ComfyUI", "comfyui");
    make_install(home / "StabilityMatrix/Data/Packages/stable-diffusion-webui-forge", "forge");
    stdfs::create_directories(home / "StabilityMatrix/Data/Packages/Empty");
    make_install(home / ".config/StabilityMatrix/Data/Packages/Fooocus", "fooocus");
    ScopedEnv h("HOME", home.string());
    auto found = default_install_locations();
    std::vector<std::string> tools;
    for (const auto& p : found) tools.push_back(detect_install(p)->tool);
    ASSERT_EQ(found.size(), 5u);
    EXPECT_EQ(found[0], home / "stable-diffusion-webui");
    EXPECT_EQ(found[1], home / "ComfyUI");
    EXPECT_EQ(tools, (std::vector<std::string>{"a1111", "comfyui", "comfyui", "forge", "fooocus"}));

    ScopedEnv h2("HOME", (t / "empty-home").string());
    EXPECT_TRUE(default_install_locations().empty());
}

// A tool's row (modelfs/layouts/tools.h) and its config reader (config_readers.cpp) are kept
// apart only because the layouts library reads no files; this keeps them in step.
TEST(AdoptDetect, EveryDetectedToolHasAConfigReader) {
    for (const layouts::Tool* t : layouts::detected_tools()) {
        EXPECT_NE(detail::config_reader(t->name), nullptr) << t->name;
    }
    for (std::string_view n : detail::tools_with_config_readers()) {
        const layouts::Tool* t = layouts::find_tool(n);
        ASSERT_NE(t, nullptr) << n << " has a config reader but no row in the registry";
        EXPECT_EQ(t->name, n) << "readers are keyed by the tool's name, not an alias";
        EXPECT_FALSE(t->markers.empty()) << n << " has a config reader but is never detected";
    }
}

TEST(AdoptDetect, MarkersAndNamesForMessagesComeFromTheRegistry) {
    EXPECT_EQ(known_install_markers(),
              "ComfyUI: main.py + folder_paths.py + comfy/; Fooocus: fooocus_version.py + "
              "(entry_with_update.py or launch.py); Forge: webui.py + modules/ + modules_forge/; "
              "SD.Next: launch.py + modules/ + installer.py; A1111: webui.py + launch.py + "
              "modules/");
    EXPECT_EQ(known_tool_names(), "A1111, Forge, SD.Next, ComfyUI, Fooocus");
}

// Fooocus's marker is fooocus_version.py with either of its launchers.
TEST(AdoptDetect, FooocusWithOnlyLaunchPyIsFooocus) {
    TempDir t("adopt-detect");
    const stdfs::path root = make_install(t / "fooocus", "fooocus");
    stdfs::remove(root / "entry_with_update.py");
    auto inst = detect_install(root);
    ASSERT_TRUE(inst);
    EXPECT_EQ(inst->tool, "fooocus");
    stdfs::remove(root / "launch.py");
    // webui.py and modules/ alone are nobody's install.
    EXPECT_FALSE(detect_install(root));
}

// ---- scanning ------------------------------------------------------------------------------

TEST(AdoptScan, ModelsSidecarsAndPlainFilesOfA1111) {
    TempDir t("adopt-scan");
    const auto root = stdfs::canonical(make_install(t / "webui", "a1111"));
    const stdfs::path m = root / "models";
    touch(m / "Stable-diffusion/a.safetensors");
    touch(m / "Stable-diffusion/a.preview.png");
    touch(m / "Stable-diffusion/a.civitai.info");
    touch(m / "Stable-diffusion/a.yaml");
    touch(m / "Stable-diffusion/a.vae.safetensors");  // excluded name
    touch(m / "Stable-diffusion/b.ckpt");
    touch(m / "Stable-diffusion/b.safetensors");  // another model than b.ckpt
    touch(m / "Stable-diffusion/b.txt");
    touch(m / "Stable-diffusion/notes.txt");
    touch(m / "Lora/sdxl/x.safetensors");
    touch(m / "Lora/sdxl/x.v2.safetensors");
    touch(m / "Lora/sdxl/x.v2.preview.png");  // longest stem: x.v2
    touch(m / "Lora/sdxl/x.json");
    touch(m / "LyCORIS/z.safetensors");  // not the primary lora folder
    touch(m / "LyCORIS/z.preview.png");
    touch(m / "README.txt");
    touch(root / "embeddings/e.pt");
    const InstallScan s = scan(root);
    EXPECT_TRUE(std::is_sorted(s.files.begin(), s.files.end(),
                               [](auto& a, auto& b) { return a.path < b.path; }));
    EXPECT_EQ(s.files.size(), 17u);

    const auto* a = file_at(s, m / "Stable-diffusion/a.safetensors");
    ASSERT_TRUE(a);
    EXPECT_EQ(a->kind, Kind::model);
    EXPECT_EQ(a->category, Category::checkpoint);
    EXPECT_EQ(a->name, "a.safetensors");
    EXPECT_EQ(a->ext, ".safetensors");
    EXPECT_EQ(a->view_rel, "Stable-diffusion/a.safetensors");
    EXPECT_TRUE(a->replaced);
    EXPECT_EQ(a->real, a->path);
    EXPECT_EQ(a->size, 1u);
    EXPECT_NE(a->ino, 0u);
    EXPECT_TRUE(S_ISREG(a->mode));
    EXPECT_EQ(a->origin, "layout");
    for (const char* sc : {".preview.png", ".civitai.info", ".yaml"}) {
        const auto* f = file_at(s, m / (std::string("Stable-diffusion/a") + sc));
        ASSERT_TRUE(f) << sc;
        EXPECT_EQ(f->kind, Kind::sidecar) << sc;
        EXPECT_EQ(f->suffix, sc);
        EXPECT_EQ(f->sidecar_of, "Stable-diffusion/a.safetensors");
        EXPECT_EQ(f->name, "a.safetensors");
    }
    const auto* vae = file_at(s, m / "Stable-diffusion/a.vae.safetensors");
    EXPECT_EQ(vae->kind, Kind::plain);
    EXPECT_NE(vae->problem.find("skips *.vae.safetensors"), std::string::npos) << vae->problem;
    EXPECT_EQ(file_at(s, m / "Stable-diffusion/b.ckpt")->kind, Kind::model);
    // A file's name, extension included, is its identity (issue 16 finding 2).
    const auto* b2 = file_at(s, m / "Stable-diffusion/b.safetensors");
    EXPECT_EQ(b2->kind, Kind::model);
    EXPECT_EQ(b2->name, "b.safetensors");
    EXPECT_EQ(file_at(s, m / "Stable-diffusion/b.ckpt")->name, "b.ckpt");
    EXPECT_EQ(file_at(s, m / "Stable-diffusion/b.txt")->kind, Kind::sidecar);
    EXPECT_EQ(file_at(s, m / "Stable-diffusion/b.txt")->sidecar_of, "Stable-diffusion/b.ckpt");
    EXPECT_EQ(file_at(s, m / "Stable-diffusion/notes.txt")->kind, Kind::plain);
    EXPECT_FALSE(file_at(s, m / "Stable-diffusion/notes.txt")->problem.empty());

    const auto* x = file_at(s, m / "Lora/sdxl/x.safetensors");
    EXPECT_EQ(x->kind, Kind::model);
    EXPECT_EQ(x->name, "sdxl/x.safetensors");
    EXPECT_EQ(x->category, Category::lora);
    const auto* v2p = file_at(s, m / "Lora/sdxl/x.v2.preview.png");
    EXPECT_EQ(v2p->kind, Kind::sidecar);
    EXPECT_EQ(v2p->sidecar_of, "Lora/sdxl/x.v2.safetensors");
    EXPECT_EQ(v2p->suffix, ".preview.png");
    EXPECT_EQ(file_at(s, m / "Lora/sdxl/x.json")->sidecar_of, "Lora/sdxl/x.safetensors");

    const auto* z = file_at(s, m / "LyCORIS/z.safetensors");
    EXPECT_EQ(z->kind, Kind::plain);
    EXPECT_NE(z->problem.find("Lora/"), std::string::npos) << z->problem;
    EXPECT_EQ(file_at(s, m / "LyCORIS/z.preview.png")->kind, Kind::plain);
    EXPECT_EQ(file_at(s, m / "README.txt")->kind, Kind::plain);

    // Root embeddings/: outside models/, shown in the view's embeddings/ folder, left in place.
    const auto* e = file_at(s, root / "embeddings/e.pt");
    ASSERT_TRUE(e);
    EXPECT_EQ(e->kind, Kind::model);
    EXPECT_EQ(e->category, Category::embedding);
    EXPECT_EQ(e->view_rel, "embeddings/e.pt");
    EXPECT_FALSE(e->replaced);
}

TEST(AdoptScan, ComfyuiLegacyFolderDiffusersAndExtraPaths) {
    TempDir t("adopt-scan");
    const auto root = stdfs::canonical(make_install(t / "ComfyUI", "comfyui"));
    const stdfs::path m = root / "models";
    touch(m / "unet/old.safetensors");  // legacy name: shown in diffusion_models/
    touch(m / "diffusers/sd15/model_index.json");
    touch(m / "diffusers/sd15/unet/diffusion_pytorch_model.safetensors");
    touch(m / "loras/same.safetensors", "inside");
    touch(m / "configs/v1.yaml");
    touch(t / "shared/loras/same.safetensors", "outside");
    touch(t / "shared/loras/only.safetensors");
    touch(t / "shared/loras/only.preview.png");
    write_text_file(root / "extra_model_paths.yaml",
                    "shared:\n  base_path: " + (t / "shared").string() + "\n  loras: loras\n");
    const InstallScan s = scan(root);
    EXPECT_EQ(file_at(s, m / "unet/old.safetensors")->kind, Kind::plain);
    EXPECT_NE(file_at(s, m / "unet/old.safetensors")->problem.find("diffusion_models/"),
              std::string::npos);
    const auto* part = file_at(s, m / "diffusers/sd15/unet/diffusion_pytorch_model.safetensors");
    EXPECT_EQ(part->kind, Kind::plain);
    EXPECT_NE(part->problem.find("diffusers/sd15"), std::string::npos) << part->problem;
    EXPECT_EQ(file_at(s, m / "configs/v1.yaml")->kind, Kind::plain);
    // The same name inside models/ and in an extra folder: the one at the view's path wins.
    EXPECT_EQ(file_at(s, m / "loras/same.safetensors")->kind, Kind::model);
    const auto* out_same = file_at(s, t / "shared/loras/same.safetensors");
    ASSERT_TRUE(out_same);
    EXPECT_EQ(out_same->kind, Kind::plain);
    EXPECT_NE(out_same->problem.find("same model as"), std::string::npos);
    const auto* only = file_at(s, t / "shared/loras/only.safetensors");
    EXPECT_EQ(only->kind, Kind::model);
    EXPECT_EQ(only->view_rel, "loras/only.safetensors");
    EXPECT_FALSE(only->replaced);
    EXPECT_EQ(only->origin, "extra_model_paths.yaml: shared.loras");
    EXPECT_EQ(file_at(s, t / "shared/loras/only.preview.png")->kind, Kind::sidecar);
}

TEST(AdoptScan, FolderLinkToOutsideStabilityMatrixStyle) {
    TempDir t("adopt-scan");
    const auto root = stdfs::canonical(make_install(t / "Data/Packages/ComfyUI", "comfyui"));
    const stdfs::path shared = stdfs::canonical(t.path()) / "Data/Models/StableDiffusion";
    touch(shared / "m.safetensors");
    touch(shared / "m.preview.png");
    stdfs::create_directory_symlink("../../../Models/StableDiffusion", root / "models/checkpoints");
    const InstallScan s = scan(root);
    const auto* f = file_at(s, root / "models/checkpoints/m.safetensors");
    ASSERT_TRUE(f);
    EXPECT_EQ(f->kind, Kind::model);
    EXPECT_EQ(f->real, shared / "m.safetensors");
    EXPECT_FALSE(f->replaced);  // the target stays in place
    EXPECT_EQ(f->view_rel, "checkpoints/m.safetensors");
    EXPECT_EQ(f->origin, "link models/checkpoints -> ../../../Models/StableDiffusion");
    EXPECT_TRUE(f->link_target.empty());
    EXPECT_EQ(file_at(s, root / "models/checkpoints/m.preview.png")->kind, Kind::sidecar);
    // The link's target is listed as a folder kept in place.
    const auto* d = dir_for(s.install, shared);
    ASSERT_TRUE(d);
    EXPECT_EQ(d->view_folder, "checkpoints");
    EXPECT_FALSE(d->replaced);
    EXPECT_TRUE(has_note(s.notes, "a folder link")) << all_notes(s.notes);
    // Only models/ was listed before the scan; the input Install is not changed.
    EXPECT_EQ(s.install.dirs.size(), 2u);
}

TEST(AdoptScan, FileLinkBrokenLinkLoopAndFifo) {
    TempDir t("adopt-scan");
    const auto root = stdfs::canonical(make_install(t / "ComfyUI", "comfyui"));
    const stdfs::path m = root / "models";
    touch(t / "blobs/abc", "twelve bytes");
    stdfs::create_directories(m / "loras");
    stdfs::create_symlink(stdfs::canonical(t.path()) / "blobs/abc", m / "loras/l.safetensors");
    stdfs::create_symlink("/nonexistent/gone.safetensors", m / "loras/gone.safetensors");
    stdfs::create_symlink("self.safetensors", m / "loras/self.safetensors");  // ELOOP
    stdfs::create_directory_symlink("..", m / "loras/up");                    // a folder loop
    touch(m / "vae/v.safetensors");
    ASSERT_EQ(::mkfifo((m / "vae/pipe").c_str(), 0600), 0);
    stdfs::create_symlink("v.safetensors", m / "vae/alias.safetensors");  // stays inside models/
    const InstallScan s = scan(root);

    const auto* l = file_at(s, m / "loras/l.safetensors");
    ASSERT_TRUE(l);
    EXPECT_EQ(l->kind, Kind::model);
    EXPECT_EQ(l->link_target, (stdfs::canonical(t.path()) / "blobs/abc").string());
    EXPECT_EQ(l->real, stdfs::canonical(t.path()) / "blobs/abc");
    EXPECT_EQ(l->size, 12u);  // the target's, not the link's
    EXPECT_TRUE(S_ISREG(l->mode));
    EXPECT_FALSE(l->replaced);

    const auto* g = file_at(s, m / "loras/gone.safetensors");
    ASSERT_TRUE(g);
    EXPECT_EQ(g->kind, Kind::broken_link);
    EXPECT_EQ(g->link_target, "/nonexistent/gone.safetensors");
    EXPECT_TRUE(g->replaced);
    EXPECT_TRUE(has_note(s.notes, "gone.safetensors")) << all_notes(s.notes);
    EXPECT_EQ(file_at(s, m / "loras/self.safetensors")->kind, Kind::broken_link);

    // models/loras/up -> models leads back into a folder being scanned: not followed.
    EXPECT_TRUE(has_note(s.notes, "loop")) << all_notes(s.notes);
    EXPECT_EQ(s.files.size(), 6u);

    const auto* p = file_at(s, m / "vae/pipe");
    ASSERT_TRUE(p);
    EXPECT_EQ(p->kind, Kind::special);
    EXPECT_NE(p->problem.find("fifo"), std::string::npos);
    EXPECT_EQ(file_at(s, m / "vae/v.safetensors")->kind, Kind::model);
    const auto* alias = file_at(s, m / "vae/alias.safetensors");
    ASSERT_TRUE(alias);
    EXPECT_EQ(alias->kind, Kind::model);
    EXPECT_EQ(alias->name, "alias.safetensors");
    EXPECT_EQ(alias->link_target, "v.safetensors");
    EXPECT_EQ(alias->real, m / "vae/v.safetensors");
    EXPECT_EQ(alias->ino, file_at(s, m / "vae/v.safetensors")->ino);
    EXPECT_TRUE(alias->replaced);  // its target goes away with models/ too
}

// Checks done as a user the permissions apply to; empty when all hold.
std::string check_unreadable(const stdfs::path& root) {
    const InstallScan s = scan(root);
    const stdfs::path m = root / "models";
    const auto* f = file_at(s, m / "loras/secret.safetensors");
    if (!f) return "secret.safetensors not listed";
    if (f->kind != Kind::unreadable) return "secret.safetensors is not unreadable";
    if (f->problem.find("Permission denied") == std::string::npos ||
        f->problem.find("secret.safetensors") == std::string::npos)
        return "problem does not say why: " + f->problem;
    const auto* d = file_at(s, m / "vae");
    if (!d || d->kind != Kind::unreadable) return "vae/ folder not unreadable";
    if (d->problem.find("cannot list folder") == std::string::npos) return d->problem;
    const auto* ok = file_at(s, m / "loras/ok.safetensors");
    if (!ok || ok->kind != Kind::model) return "ok.safetensors not a model";
    return {};
}

TEST(AdoptScan, UnreadableFileAndFolder) {
    TempDir t("adopt-scan");
    stdfs::permissions(t.path(), stdfs::perms::owner_all | stdfs::perms::group_exec |
                                     stdfs::perms::others_exec | stdfs::perms::group_read |
                                     stdfs::perms::others_read);
    const auto root = stdfs::canonical(make_install(t / "ComfyUI", "comfyui"));
    const stdfs::path m = root / "models";
    touch(m / "loras/secret.safetensors");
    touch(m / "loras/ok.safetensors");
    touch(m / "vae/hidden.safetensors");
    for (const auto& e : stdfs::recursive_directory_iterator(t.path()))
        if (e.is_directory()) stdfs::permissions(e.path(), stdfs::perms::all);
    stdfs::permissions(m / "loras/ok.safetensors", stdfs::perms::all);
    stdfs::permissions(m / "loras/secret.safetensors", stdfs::perms::none);
    stdfs::permissions(m / "vae", stdfs::perms::none);
    struct Restore {
        stdfs::path vae;
        ~Restore() { stdfs::permissions(vae, stdfs::perms::all); }
    } restore{m / "vae"};

    if (::geteuid() != 0) {
        const std::string why = check_unreadable(root);
        EXPECT_TRUE(why.empty()) << why;
        return;
    }
    // Root reads everything; check as nobody in a child so this process keeps its identity.
    const auto r = modelfs::testing::run_as_nobody([&] { return check_unreadable(root); });
    if (r.skipped) GTEST_SKIP() << "cannot become nobody (uid 65534)";
    EXPECT_TRUE(r.ok) << r.message;
}

}  // namespace
}  // namespace modelfs::adopt
