// `modelfs import` of files the completeness rule refuses (store/FORMAT.md, "Complete model
// files"): each is named with its reason, the others are imported, the exit code says one failed.
#include <gtest/gtest.h>

#include <set>
#include <string>

#include <nlohmann/json.hpp>

#include "support/gguf_writer.h"
#include "support/safetensors_writer.h"
#include "support/test_env.h"

namespace stdfs = std::filesystem;
using namespace modelfs::testing;
using nlohmann::json;

namespace {

TEST(CliIncompleteImport, TruncatedAndEmptyFilesFailWithTheirReasonAndTheRestIsImported) {
    TempDir dir{"modelfs-cli-incomplete"};
    const std::string store = (dir / "store").string();
    ASSERT_EQ(run_modelfs({"--store", store, "init"}).exit_code, 0);

    const std::string lora = safetensors_bytes(kohya_lora(1));
    write_file(dir / "good_st.safetensors", lora);
    write_file(dir / "cut.safetensors", lora.substr(0, lora.size() - 1));
    GgufWriter g;
    g.tensor("token_embd.weight", GgmlTensorType::q4_0, {64, 8});
    const std::string gguf = g.bytes();
    write_file(dir / "good_gguf.gguf", gguf);
    write_file(dir / "cut.gguf", gguf.substr(0, gguf.size() - 1));
    write_file(dir / "empty.ckpt", "");

    CliResult r = run_modelfs({"--store", store, "import", (dir / "good_st.safetensors").string(),
                               (dir / "cut.safetensors").string(),
                               (dir / "good_gguf.gguf").string(), (dir / "cut.gguf").string(),
                               (dir / "empty.ckpt").string(), "--category", "other"});
    EXPECT_EQ(r.exit_code, 1) << r.err;
    EXPECT_NE(r.err.find("cut.safetensors: incomplete or malformed safetensors file: "),
              std::string::npos)
        << r.err;
    EXPECT_NE(r.err.find("cut.gguf: incomplete or malformed GGUF file: truncated: "),
              std::string::npos)
        << r.err;
    EXPECT_NE(r.err.find("empty.ckpt: empty file"), std::string::npos) << r.err;

    r = run_modelfs({"--store", store, "--json", "ls"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    std::set<std::string> names;
    for (const auto& m : json::parse(r.out)) names.insert(m.value("name", ""));
    EXPECT_EQ(names, (std::set<std::string>{"good_st.safetensors", "good_gguf.gguf"})) << r.out;
}

}  // namespace
