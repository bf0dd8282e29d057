// Layouts from the config file on a real FUSE mount: imported models appear under the user's own
// folder names, next to the built-in views or alone with --view.
#include <gtest/gtest.h>

#include <signal.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "support/mount_fixture.h"
#include "support/safetensors_writer.h"
#include "support/test_env.h"

namespace stdfs = std::filesystem;
using namespace modelfs::testing;

namespace {

const char* kConfig = R"(
[[layout]]
name = "mytool"
[[layout.folder]]
path = "models/my-checkpoints"
category = "checkpoint"
extensions = [".safetensors"]
[[layout.folder]]
path = "my-loras"
category = "lora"

# Replaces the built-in ComfyUI view.
[[layout]]
name = "comfyui"
[[layout.folder]]
path = "ckpts"
category = "checkpoint"
)";

class UserLayoutMount : public StoreMountTest {
  protected:
    UserLayoutMount() : StoreMountTest("modelfs-user-layout") {}
    stdfs::path src = dir / "ComfyUI" / "models";
    stdfs::path config = dir / "config.toml";

    void SetUp() override {
        StoreMountTest::SetUp();
        if (IsSkipped() || HasFatalFailure()) return;
        stdfs::create_directories(src / "checkpoints");
        stdfs::create_directories(src / "loras" / "sdxl");
        write_safetensors(src / "checkpoints" / "base.safetensors", sd15_checkpoint(1));
        write_safetensors(src / "loras" / "sdxl" / "style.safetensors", kohya_lora(2));
        import_folder(src);
        write_text_file(config, kConfig);
    }

    std::string sha_of_source(const std::string& rel) { return sha256_hex_of_file(src / rel); }
};

TEST_F(UserLayoutMount, RootModeShowsTheUserFoldersNextToTheBuiltIns) {
    Mount m(store, mnt, {"--config", config.string()});
    ASSERT_TRUE(m.ok());
    EXPECT_EQ(sha256_hex_of_file(mnt / "mytool" / "models" / "my-checkpoints" / "base.safetensors"),
              sha_of_source("checkpoints/base.safetensors"));
    EXPECT_EQ(sha256_hex_of_file(mnt / "mytool" / "my-loras" / "sdxl" / "style.safetensors"),
              sha_of_source("loras/sdxl/style.safetensors"));
    // The built-ins are still there; the replaced one has the user's folders only.
    EXPECT_TRUE(stdfs::exists(mnt / "a1111" / "Stable-diffusion" / "base.safetensors"));
    EXPECT_TRUE(stdfs::exists(mnt / "comfyui" / "ckpts" / "base.safetensors"));
    EXPECT_FALSE(stdfs::exists(mnt / "comfyui" / "checkpoints"));
    EXPECT_FALSE(stdfs::exists(mnt / "comfyui" / "loras"));
    EXPECT_TRUE(stdfs::exists(mnt / "by-hash"));
    EXPECT_EQ(m.stop(), 0);
}

TEST_F(UserLayoutMount, OneUserViewAtTheMountPoint) {
    Mount m(store, mnt, {"--config", config.string(), "--view", "mytool"});
    ASSERT_TRUE(m.ok());
    EXPECT_EQ(sha256_hex_of_file(mnt / "models" / "my-checkpoints" / "base.safetensors"),
              sha_of_source("checkpoints/base.safetensors"));
    EXPECT_TRUE(stdfs::exists(mnt / "my-loras" / "sdxl" / "style.safetensors"));
    EXPECT_FALSE(stdfs::exists(mnt / "mytool"));
    EXPECT_FALSE(stdfs::exists(mnt / "comfyui"));
    EXPECT_FALSE(stdfs::exists(mnt / "by-hash"));
    EXPECT_EQ(m.stop(), 0);
}

TEST_F(UserLayoutMount, SighupServesTheConfigsNewLayouts) {
    Mount m(store, mnt, {"--config", config.string()});
    ASSERT_TRUE(m.ok());
    ASSERT_TRUE(stdfs::exists(mnt / "mytool" / "my-loras" / "sdxl" / "style.safetensors"));
    ASSERT_TRUE(stdfs::exists(mnt / "comfyui" / "ckpts" / "base.safetensors"));
    // An open file keeps reading through the reload.
    std::ifstream open_before(mnt / "comfyui" / "ckpts" / "base.safetensors", std::ios::binary);
    ASSERT_TRUE(open_before);

    // mytool's LoRA folder moves, a new layout appears, the ComfyUI replacement goes (the
    // built-in comes back).
    write_text_file(config, R"(
[[layout]]
name = "mytool"
[[layout.folder]]
path = "models/my-checkpoints"
category = "checkpoint"
[[layout.folder]]
path = "adapters"
category = "lora"

[[layout]]
name = "newtool"
[[layout.folder]]
path = "weights"
category = "checkpoint"
)");
    ASSERT_EQ(::kill(m.pid(), SIGHUP), 0);
    EXPECT_TRUE(eventually(
        [&] { return stdfs::exists(mnt / "newtool" / "weights" / "base.safetensors"); }));
    EXPECT_EQ(sha256_hex_of_file(mnt / "newtool" / "weights" / "base.safetensors"),
              sha_of_source("checkpoints/base.safetensors"));
    EXPECT_EQ(sha256_hex_of_file(mnt / "mytool" / "adapters" / "sdxl" / "style.safetensors"),
              sha_of_source("loras/sdxl/style.safetensors"));
    EXPECT_FALSE(stdfs::exists(mnt / "mytool" / "my-loras"));
    EXPECT_TRUE(stdfs::exists(mnt / "comfyui" / "checkpoints" / "base.safetensors"));
    EXPECT_FALSE(stdfs::exists(mnt / "comfyui" / "ckpts"));
    std::vector<std::string> top;
    for (const auto& e : stdfs::directory_iterator(mnt))
        top.push_back(e.path().filename().string());
    EXPECT_NE(std::find(top.begin(), top.end(), "newtool"), top.end());
    std::string first(8, '\0');
    EXPECT_TRUE(open_before.read(first.data(), 8));

    // A config with an error changes nothing.
    write_text_file(config, "[[layout]]\nname = \"mytool\"\n");
    ASSERT_EQ(::kill(m.pid(), SIGHUP), 0);
    EXPECT_TRUE(eventually([&] {
        return read_file(dir / "mnt.log").find("the config has an error") != std::string::npos;
    })) << read_file(dir / "mnt.log");
    EXPECT_TRUE(stdfs::exists(mnt / "newtool" / "weights" / "base.safetensors"));
    const std::string log = read_file(dir / "mnt.log");
    EXPECT_NE(log.find("added: newtool"), std::string::npos) << log;
    open_before.close();  // an open file keeps the mount busy
    EXPECT_EQ(m.stop(), 0);
}

TEST_F(UserLayoutMount, SighupKeepsAViewTheConfigNoLongerDefines) {
    Mount m(store, mnt, {"--config", config.string(), "--view", "mytool"});
    ASSERT_TRUE(m.ok());
    ASSERT_TRUE(stdfs::exists(mnt / "my-loras" / "sdxl" / "style.safetensors"));
    write_text_file(config, "# mytool is gone\n");
    ASSERT_EQ(::kill(m.pid(), SIGHUP), 0);
    EXPECT_TRUE(eventually([&] {
        return read_file(dir / "mnt.log").find("so the mount keeps its views") != std::string::npos;
    })) << read_file(dir / "mnt.log");
    EXPECT_TRUE(stdfs::exists(mnt / "my-loras" / "sdxl" / "style.safetensors"));
    EXPECT_EQ(m.stop(), 0);
}

TEST_F(UserLayoutMount, ABadConfigMountsNothing) {
    write_text_file(config, "[[layout]]\nname = \"mytool\"\n");
    stdfs::create_directories(mnt);
    CliResult r = run_modelfs(
        {"--store", store.string(), "--config", config.string(), "mount", mnt.string(), "-f"});
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_NE(r.err.find("layout 'mytool' has no folders"), std::string::npos) << r.err;
    EXPECT_FALSE(is_mounted(mnt));
}

}  // namespace
