// Manifests (fetch/src/manifest.cpp): what each field becomes in a RemoteModel, and that every
// mistake is reported naming the file, the entry (index and "as") and the field.
#include "modelfs/fetch/manifest.h"

#include <gtest/gtest.h>

#include <string>

#include "modelfs/store/errors.h"
#include "support/test_env.h"

namespace modelfs::fetch {
namespace {

namespace mt = modelfs::testing;

const std::string kHash(64, 'a');

std::vector<ManifestEntry> parse(const std::string& text) {
    return parse_manifest(text, "pack.json");
}

// The message of the StoreError parsing `text` throws ("" and a test failure when none).
std::string error_of(const std::string& text) {
    try {
        parse(text);
    } catch (const StoreError& e) {
        EXPECT_EQ(e.kind(), ErrorKind::bad_input) << e.what();
        return e.what();
    }
    ADD_FAILURE() << "accepted: " << text;
    return "";
}

std::string models(const std::string& entries) {
    return "{\"models\": [" + entries + "]}";
}

TEST(Manifest, SingleFileEntries) {
    auto e = parse(models(R"(
        // comments are allowed
        {"as": "lora/sdxl/detail@v2", "url": "https://h/x/detail.safetensors?download=1",
         "mirrors": ["hf://o/r/detail.safetensors", "s3://b/k/detail.safetensors"],
         "sha256": ")" + std::string(64, 'A') +
                          R"(", "size": 1234, "stream": true,
         "note": "n", "keep": true},
        {"as": "vae/plain.ckpt", "url": "https://civitai.example/api/download/1"},
        {"as": "embedding/e", "url": "https://h/e.pt", "size": 0})"));
    ASSERT_EQ(e.size(), 3u);
    const RemoteModel& a = e[0].model;
    EXPECT_EQ(e[0].index, 0u);
    EXPECT_EQ(e[0].as, "lora/sdxl/detail@v2");
    EXPECT_EQ(a.category, Category::lora);
    EXPECT_EQ(a.name, "sdxl/detail.safetensors");
    EXPECT_EQ(a.label, "v2");
    EXPECT_EQ(a.ext, ".safetensors") << "from the URL";
    EXPECT_EQ(a.note, "n");
    EXPECT_FALSE(a.tree);
    EXPECT_TRUE(e[0].keep);
    ASSERT_EQ(a.files.size(), 1u);
    EXPECT_EQ(a.files[0].sha256, Sha256::from_hex(kHash)) << "upper-case hex is fine";
    EXPECT_EQ(a.files[0].size, 1234u);
    EXPECT_EQ(e[0].size_given, std::vector<bool>{true});
    ASSERT_EQ(a.files[0].sources.size(), 3u);
    EXPECT_EQ(a.files[0].sources[0].url, "https://h/x/detail.safetensors?download=1");
    EXPECT_EQ(a.files[0].sources[2].url, "s3://b/k/detail.safetensors");
    for (const auto& s : a.files[0].sources) EXPECT_TRUE(s.stream);

    const RemoteModel& b = e[1].model;
    EXPECT_EQ(b.category, Category::vae);
    EXPECT_EQ(b.name, "plain.ckpt");
    EXPECT_EQ(b.ext, ".ckpt") << "from the name when the URL has none";
    EXPECT_FALSE(b.label);
    EXPECT_FALSE(b.files[0].sha256);
    EXPECT_EQ(e[1].size_given, std::vector<bool>{false});
    EXPECT_FALSE(e[1].keep);
    EXPECT_FALSE(b.files[0].sources[0].stream);

    EXPECT_EQ(e[2].size_given, std::vector<bool>{true}) << "an explicit 0 is a size";
}

TEST(Manifest, FolderEntries) {
    auto e = parse(models(R"({"as": "diffusers/sdxl-base", "stream": true, "files": [
        {"path": "unet/diffusion_pytorch_model.safetensors", "url": "https://h/u", "size": 10,
         "stream": false},
        {"path": "model_index.json", "url": "https://h/i", "sha256": ")" +
                          kHash + R"("}]})"));
    ASSERT_EQ(e.size(), 1u);
    const RemoteModel& m = e[0].model;
    EXPECT_TRUE(m.tree);
    EXPECT_EQ(m.ext, "");
    ASSERT_EQ(m.files.size(), 2u);
    EXPECT_EQ(m.files[0].path, "unet/diffusion_pytorch_model.safetensors");
    EXPECT_FALSE(m.files[0].sources[0].stream) << "a file's own stream wins";
    EXPECT_TRUE(m.files[1].sources[0].stream);
    EXPECT_EQ(e[0].size_given, (std::vector<bool>{true, false}));
}

TEST(Manifest, MistakesNameTheFileTheEntryAndTheField) {
    struct Case {
        std::string entry, says;
    };
    const Case cases[] = {
        {R"({"as": "lora/a", "url": "https://h/a.safetensors", "sha256": "abc"})",
         "pack.json: models[1] (lora/a): 'sha256': must be 64 hex digits"},
        {R"({"as": "lora/a", "url": "https://h/a.safetensors", "sha265": "x"})",
         "models[1] (lora/a): 'sha265': unknown key"},
        {R"({"as": "lora/a"})", "models[1] (lora/a): 'url': is missing"},
        {R"({"as": "lorax/a", "url": "https://h/a.safetensors"})",
         "models[1] (lorax/a): 'as': \"lorax/a\": unknown category 'lorax'"},
        {R"({"as": "lora/a/../b", "url": "https://h/a.safetensors"})",
         "models[1] (lora/a/../b): 'as':"},
        {R"({"as": "lora/a@", "url": "https://h/a.safetensors"})", "empty version"},
        {R"({"as": "lora/a", "url": "https://h/a.safetensors", "size": -1})",
         "models[1] (lora/a): 'size': must be a whole number"},
        {R"({"as": "lora/a", "url": "https://h/a.safetensors", "size": "1G"})", "'size':"},
        {R"({"as": "lora/a", "url": "https://h/a.safetensors", "mirrors": "https://m"})",
         "'mirrors': must be an array"},
        {R"({"as": "lora/a", "url": "ftp://h/a.safetensors"})", "models[1] (lora/a): 'url':"},
        {R"({"as": "lora/a", "url": "https://h/a.safetensors", "mirrors": ["nope"]})",
         "'mirrors[0]':"},
        {R"({"as": "lora/a", "url": "https://h/download"})", "add it to the name"},
        {R"({"url": "https://h/a.safetensors"})", "models[1]: 'as': is missing"},
        {R"({"as": "lora/a", "url": "https://h/a.safetensors", "keep": "yes"})",
         "'keep': must be true or false"},
        {R"({"as": "diffusers/d", "url": "https://h/x", "files": [{"path": "a", "url": "https://h/a"}]})",
         "'url': belongs to each of \"files\""},
        {R"({"as": "diffusers/d", "files": [{"path": "../a", "url": "https://h/a"}]})",
         "models[1] (diffusers/d): 'files[0].path':"},
        {R"({"as": "diffusers/d", "files": [{"path": "a", "url": "https://h/a"},
              {"path": "a", "url": "https://h/b"}]})",
         "'files[1].path': \"a\" is listed twice"},
        {R"({"as": "diffusers/d", "files": [{"path": "a"}]})", "'files[0].url': is missing"},
        {R"({"as": "diffusers/d", "files": []})", "'files': must be a non-empty array"},
        {R"({"as": "lora/first", "url": "https://h/other.safetensors"})",
         "models[1] (lora/first): 'as': the same model (and version) as models[0]"},
        {R"("lora/a")", "models[1]: must be an object"},
    };
    const std::string first = R"({"as": "lora/first", "url": "https://h/first.safetensors"},)";
    for (const auto& c : cases) {
        std::string msg = error_of(models(first + c.entry));
        EXPECT_NE(msg.find(c.says), std::string::npos) << "for " << c.entry << "\ngot: " << msg;
    }
}

TEST(Manifest, BrokenDocuments) {
    std::string msg = error_of("{\"models\": [\n  {\"as\": \"lora/a\",}\n]}");
    EXPECT_NE(msg.find("pack.json: not valid JSON"), std::string::npos) << msg;
    EXPECT_NE(msg.find("line 2"), std::string::npos) << msg;
    EXPECT_NE(error_of("[]").find("\"models\" array"), std::string::npos);
    EXPECT_NE(error_of(R"({"models": {}})").find("must be an array"), std::string::npos);
    EXPECT_NE(error_of(R"({"models": [], "model": []})").find("unknown top-level key 'model'"),
              std::string::npos);
    EXPECT_TRUE(parse(R"({"models": []})").empty());
}

// Found by fuzzing (tests/fuzz/corpus/manifest/number-overflow.json): the JSON parser refuses a
// number beyond a double's range with out_of_range, not parse_error. It must still be the
// file's bad input, named, not an anonymous "[json.exception.out_of_range.406]" failure.
TEST(Manifest, NumberBeyondADoubleIsBadJsonOfTheFile) {
    std::string msg =
        error_of(models(R"({"as": "lora/a", "url": "https://h/a.safetensors", "size": 1e999})"));
    EXPECT_NE(msg.find("pack.json: not valid JSON"), std::string::npos) << msg;
    EXPECT_NE(msg.find("1e999"), std::string::npos) << msg;
}

TEST(Manifest, LoadReadsFilesAndNamesMissingOnes) {
    mt::TempDir dir;
    try {
        load_manifest(dir / "none.json");
        ADD_FAILURE() << "no error for a missing file";
    } catch (const StoreError& e) {
        EXPECT_EQ(e.kind(), ErrorKind::not_found);
        EXPECT_NE(std::string(e.what()).find("none.json"), std::string::npos);
    }
    mt::write_text_file(dir / "p.json", models(R"({"as": "lora/x", "url": "https://h/x.pt"})"));
    auto e = load_manifest(dir / "p.json");
    ASSERT_EQ(e.size(), 1u);
    EXPECT_EQ(e[0].model.ext, ".pt");
    mt::write_text_file(dir / "bad.json", "{");
    try {
        load_manifest(dir / "bad.json");
        ADD_FAILURE();
    } catch (const StoreError& e) {
        EXPECT_NE(std::string(e.what()).find((dir / "bad.json").string()), std::string::npos)
            << e.what();
    }
}

TEST(ModelRef, ParsesCategoryNameExtensionAndLabel) {
    ModelRef r = parse_model_ref("LoRA/sdxl/foo.SafeTensors@final");
    EXPECT_EQ(r.category, Category::lora);
    EXPECT_EQ(r.name, "sdxl/foo");
    EXPECT_EQ(r.ext, ".SafeTensors");
    EXPECT_EQ(r.label, "final");
    r = parse_model_ref("checkpoint/v1.5-pruned");
    EXPECT_EQ(r.name, "v1.5-pruned") << "only model extensions are split off";
    EXPECT_EQ(r.ext, "");
    EXPECT_FALSE(r.label);
    EXPECT_EQ(parse_model_ref("loras/x").category, Category::lora) << "aliases work";
    for (const char* bad : {"foo", "/foo", "lora/", "lora/a//b", "lora/a@b@c", "nope/x"})
        EXPECT_THROW(parse_model_ref(bad), StoreError) << bad;
}

TEST(ModelRef, ExtensionOfUrl) {
    EXPECT_EQ(extension_of_url("https://h/a/b.safetensors?x=1#f"), ".safetensors");
    EXPECT_EQ(extension_of_url("hf://o/r@main/unet/model.fp16.safetensors"), ".safetensors");
    EXPECT_EQ(extension_of_url("s3://bucket/x.fooocus.patch"), ".fooocus.patch");
    EXPECT_EQ(extension_of_url("https://h/config.json"), ".json");
    EXPECT_EQ(extension_of_url("https://civitai.com/api/download/models/123"), "");
    EXPECT_EQ(extension_of_url("https://h.example.org"), "");
    EXPECT_EQ(extension_of_url("https://h/.hidden"), "");
    EXPECT_EQ(extension_of_url("https://h/a.b-c"), "");
}

}  // namespace
}  // namespace modelfs::fetch
