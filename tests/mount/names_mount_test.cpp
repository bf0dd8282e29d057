// Issue 15 through a real mount: a file saved under a name the one rule (names.h) refuses stays a
// plain file of its view, written as the tool wrote it, and `modelfs status` says why, escaped.
#include <gtest/gtest.h>

#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "support/mount_fixture.h"
#include "support/safetensors_writer.h"
#include "support/test_env.h"

namespace stdfs = std::filesystem;
using namespace modelfs::testing;
using nlohmann::json;

namespace {

TEST(MountNames, ASaveUnderARefusedNameStaysPlainWithItsReason) {
    if (!stdfs::exists("/dev/fuse")) GTEST_SKIP() << "no /dev/fuse";
    TempDir dir{"modelfs-names-mount"};
    const stdfs::path store = dir / "store", mnt = dir / "mnt";
    ASSERT_EQ(run_modelfs({"--store", store.string(), "init"}).exit_code, 0);
    stdfs::create_directories(mnt);
    Mount m(store, mnt);
    ASSERT_TRUE(m.ok());
    const std::string bytes = safetensors_bytes(kohya_lora(3));
    const std::string esc = "esc\x1b[2J.safetensors", bad = "bad\xff.safetensors";
    for (const auto& name : {esc, bad}) {
        std::ofstream out(mnt / "comfyui" / "loras" / name, std::ios::binary);
        out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    }
    CliResult st;
    ASSERT_TRUE(eventually([&] {
        st = run_modelfs({"--store", store.string(), "status"});
        return st.out.find("esc\\x1b[2J") != std::string::npos &&
               st.out.find("bad\\xff") != std::string::npos;
    })) << st.out
        << st.err;
    EXPECT_EQ(st.out.find('\x1b'), std::string::npos) << st.out;
    EXPECT_NE(st.out.find("control character 0x1b"), std::string::npos) << st.out;
    EXPECT_NE(st.out.find("is not UTF-8"), std::string::npos) << st.out;
    // Plain files of the view, as written; no model.
    EXPECT_EQ(read_file(mnt / "comfyui" / "loras" / esc), bytes);
    EXPECT_EQ(read_file(mnt / "comfyui" / "loras" / bad), bytes);
    CliResult ls = run_modelfs({"--store", store.string(), "--json", "ls"});
    EXPECT_EQ(ls.exit_code, 0) << ls.err;
    EXPECT_EQ(json::parse(ls.out).size(), 0u) << ls.out;
}

}  // namespace
