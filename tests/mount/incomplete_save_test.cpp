// Issue 14 through a real mount: a save cut short or a create-then-close is no model and no
// version. It stays a plain file of its view under its own name, the log says why, and once a
// later save completes it, it is stored as usual (store/FORMAT.md, "Complete model files").
#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "support/mount_fixture.h"
#include "support/safetensors_writer.h"
#include "support/test_env.h"

namespace stdfs = std::filesystem;
using namespace modelfs::testing;
using nlohmann::json;
using namespace std::chrono_literals;

namespace {

class MountIncompleteSaveTest : public StoreMountTest {
  protected:
    MountIncompleteSaveTest() : StoreMountTest("modelfs-incomplete") {}
    stdfs::path src = dir / "src";

    void SetUp() override {
        StoreMountTest::SetUp();
        if (IsSkipped() || HasFatalFailure()) return;
        import_base_checkpoint(src);
        stdfs::create_directories(mnt);
    }

    std::string log() const {
        std::ifstream in(dir / "mnt.log");  // where Mount sends the daemon's output
        std::stringstream ss;
        ss << in.rdbuf();
        return ss.str();
    }
    std::optional<json> show(const std::string& key) {
        CliResult r = run_modelfs({"--store", store.string(), "--json", "show", key});
        if (r.exit_code != 0) return std::nullopt;
        return json::parse(r.out);
    }
    static void write(const stdfs::path& p, const std::string& bytes) {
        std::ofstream out(p, std::ios::binary | std::ios::trunc);
        out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    }
};

TEST_F(MountIncompleteSaveTest, ATruncatedSaveStaysAPlainFileUntilItIsComplete) {
    Mount m(store, mnt);
    ASSERT_TRUE(m.ok());
    const std::string full = safetensors_bytes(kohya_lora(2));
    const std::string cut = full.substr(0, full.size() - 100);
    const stdfs::path shown = mnt / "comfyui" / "loras" / "cut.safetensors";
    write(shown, cut);

    ASSERT_TRUE(eventually([&] {
        return log().find(
                   "comfyui/loras/cut.safetensors stays a plain file of this view: "
                   "incomplete or malformed safetensors file: ") != std::string::npos;
    })) << log();
    EXPECT_FALSE(show("lora/cut"));
    // Under its own name, in this view only, with the bytes written.
    EXPECT_EQ(read_file(store / "views" / "comfyui" / "loras" / "cut.safetensors"), cut);
    EXPECT_EQ(read_file(shown), cut);
    EXPECT_FALSE(stdfs::exists(mnt / "a1111" / "Lora" / "cut.safetensors"));

    // The save completed: stored, shown in every view, gone from views/.
    write(shown, full);
    ASSERT_TRUE(eventually([&] { return show("lora/cut").has_value(); })) << log();
    EXPECT_TRUE(eventually(
        [&] { return !stdfs::exists(store / "views" / "comfyui" / "loras" / "cut.safetensors"); }));
    EXPECT_EQ(read_file(mnt / "a1111" / "Lora" / "cut.safetensors"), full);
}

TEST_F(MountIncompleteSaveTest, AnEmptyCreateThenCloseIsNoModelAndNoVersion) {
    Mount m(store, mnt);
    ASSERT_TRUE(m.ok());
    const std::string base = read_file(src / "checkpoints" / "base.safetensors");
    // A new empty file, and an existing model emptied in one view (open with O_TRUNC, close).
    write(mnt / "comfyui" / "checkpoints" / "x_psync.safetensors", "");
    write(mnt / "comfyui" / "checkpoints" / "base.safetensors", "");

    ASSERT_TRUE(eventually([&] {
        const std::string l = log();
        return l.find(
                   "comfyui/checkpoints/x_psync.safetensors stays a plain file of this view: "
                   "empty file") != std::string::npos &&
               l.find(
                   "comfyui/checkpoints/base.safetensors stays a plain file of this view: "
                   "empty file") != std::string::npos;
    })) << log();
    EXPECT_FALSE(show("checkpoint/x_psync"));
    auto b = show("checkpoint/base");
    ASSERT_TRUE(b);
    EXPECT_EQ((*b)["versions"].size(), 1u) << b->dump();
    EXPECT_EQ((*b)["current"], "v1");
    EXPECT_EQ((*b)["file"]["sha256"], sha256_hex_of_file(src / "checkpoints" / "base.safetensors"));
    // Other views still show the stored model.
    EXPECT_EQ(read_file(mnt / "a1111" / "Stable-diffusion" / "base.safetensors"), base);
}

}  // namespace
