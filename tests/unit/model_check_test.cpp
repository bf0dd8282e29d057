// The completeness rule (model_check.h) where it is applied: Store::commit_file (a mount's save)
// refuses empty and incomplete files before linking anything, and `modelfs import`
// (Store::import) accepts and refuses exactly the same files.
#include "modelfs/store/model_check.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "modelfs/store/catalog.h"
#include "modelfs/store/errors.h"
#include "modelfs/store/hash.h"
#include "modelfs/store/store.h"
#include "modelfs/store/unique_fd.h"
#include "support/gguf_writer.h"
#include "support/safetensors_writer.h"
#include "support/test_env.h"

namespace modelfs {
namespace {

namespace stdfs = std::filesystem;
namespace mt = modelfs::testing;

bool contains(const std::string& s, const std::string& part) {
    return s.find(part) != std::string::npos;
}

std::vector<stdfs::path> files_under(const stdfs::path& dir) {
    std::vector<stdfs::path> out;
    std::error_code ec;
    for (stdfs::recursive_directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
        if (it->is_regular_file()) out.push_back(it->path());
    return out;
}

std::string gguf_model(std::uint64_t seed = 0) {
    mt::GgufWriter w;
    w.kv_string("general.architecture", "llama").kv_string_array("tokenizer.ggml.tokens", {"a"});
    w.tensor("token_embd.weight", mt::GgmlTensorType::q8_0, {64, 4}, seed)
        .tensor("output_norm.weight", mt::GgmlTensorType::f32, {64}, seed);
    return w.bytes();
}

// The measured case of issue 14: a 1 MiB tensor cut off halfway through its data.
std::string truncated_safetensors() {
    mt::SafetensorsSpec spec;
    spec.tensors.push_back({"weight", "U8", {1 << 20}, {}, {}});
    const std::string full = mt::safetensors_bytes(spec);
    return full.substr(0, full.size() / 2);
}

class ModelCheckTest : public ::testing::Test {
  protected:
    void SetUp() override { store_.emplace(Store::init(root_)); }
    Store& s() { return *store_; }

    stdfs::path view_file(const std::string& rel, const std::string& bytes) {
        stdfs::path p = root_ / "views" / "comfyui" / rel;
        stdfs::create_directories(p.parent_path());
        mt::write_file(p, bytes);
        return p;
    }

    // Commits `p` as the mount's ingester does.
    FileCommitResult commit(const stdfs::path& p, Category cat, const std::string& name,
                            const std::string& ext, const std::string& sidecar = "") {
        UniqueFd fd(::open(p.c_str(), O_RDONLY | O_CLOEXEC));
        EXPECT_TRUE(fd) << p;
        FileCommit f;
        f.path = p;
        f.fd = fd.get();
        f.digests = digest_fd(fd.get());
        f.category = cat;
        f.name = name;
        f.ext = ext;
        f.sidecar = sidecar;
        f.source = "mount:test";
        return s().commit_file(f);
    }

    // The StoreError commit_file throws (kind bad_input expected), or "" if it accepted.
    std::string refusal(const stdfs::path& p, Category cat, const std::string& name,
                        const std::string& ext, const std::string& sidecar = "") {
        try {
            commit(p, cat, name, ext, sidecar);
        } catch (const StoreError& e) {
            EXPECT_EQ(e.kind(), ErrorKind::bad_input) << e.what();
            return e.what();
        }
        return "";
    }

    std::optional<Model> model(const std::string& key) {
        return s().catalog().read().get_model(key);
    }
    std::size_t blob_records() {
        std::size_t n = 0;
        s().catalog().read().for_each_blob([&](const Sha256&, const BlobRecord&) { ++n; });
        return n;
    }

    mt::TempDir tmp_{"modelfs-model-check"};
    stdfs::path root_ = tmp_ / "store";
    std::optional<Store> store_;
};

// ---- commit_file
// ---------------------------------------------------------------------------------

TEST_F(ModelCheckTest, CommitFileRefusesIncompleteAndEmptyModelsBeforeLinkingAnything) {
    struct Case {
        const char* file;
        std::string bytes;
        const char* ext;
        const char* expect;
    };
    const std::string gguf = gguf_model();
    const std::vector<Case> cases{
        {"loras/cut.safetensors", truncated_safetensors(), ".safetensors",
         "incomplete or malformed safetensors file: "},
        {"loras/cut.sft", truncated_safetensors(), ".sft",
         "data_offsets [0, 1048576) extend past the end of the"},
        {"loras/garbage.safetensors", std::string(5000, 'x'), ".safetensors", "header"},
        {"llm/cut.gguf", gguf.substr(0, gguf.size() - 1), ".gguf",
         "incomplete or malformed GGUF file: truncated: tensor 'output_norm.weight'"},
        {"llm/header_only.gguf", gguf.substr(0, 40), ".gguf", "truncated"},
        {"loras/empty.safetensors", "", ".safetensors",
         "empty file: a 0-byte file stays a plain file until it has content"},
        {"checkpoints/empty.ckpt", "", ".ckpt", "empty file"},
        {"llm/empty.gguf", "", ".gguf", "empty file"},
    };
    for (const Case& c : cases) {
        SCOPED_TRACE(c.file);
        const stdfs::path p = view_file(c.file, c.bytes);
        const std::string err = refusal(p, Category::lora, "x", c.ext);
        EXPECT_TRUE(contains(err, c.expect)) << err;
        EXPECT_EQ(err.find('\n'), std::string::npos) << err;
        // Nothing linked, nothing catalogued, the file untouched.
        EXPECT_TRUE(files_under(root_ / "blobs").empty());
        EXPECT_EQ(blob_records(), 0u);
        EXPECT_FALSE(model("lora/x"));
        struct stat st {};
        ASSERT_EQ(::stat(p.c_str(), &st), 0);
        EXPECT_EQ(st.st_nlink, 1u);
        EXPECT_EQ(mt::read_file(p), c.bytes);
    }
}

TEST_F(ModelCheckTest, CommitFileAcceptsCompleteModels) {
    const stdfs::path st =
        view_file("loras/a.safetensors", mt::safetensors_bytes(mt::kohya_lora(1)));
    EXPECT_EQ(commit(st, Category::lora, "a", ".safetensors").label, "v1");
    const stdfs::path gg = view_file("llm/b.gguf", gguf_model());
    EXPECT_EQ(commit(gg, Category::other, "b", ".gguf").label, "v1");
    // Formats that cannot be checked only need content.
    const stdfs::path ck = view_file("checkpoints/c.ckpt", "PK\3\4 not really a zip");
    EXPECT_EQ(commit(ck, Category::checkpoint, "c", ".ckpt").label, "v1");
    // A GGUF version that cannot be checked is accepted as is.
    const stdfs::path v1 = view_file("llm/old.gguf", "GGUF" + mt::GgufWriter().u32(1) + "rest");
    EXPECT_EQ(commit(v1, Category::other, "old", ".gguf").label, "v1");
    // Names carry their extension (model_name.h).
    EXPECT_TRUE(model("lora/a.safetensors"));
    EXPECT_TRUE(model("other/b.gguf"));
    EXPECT_TRUE(model("checkpoint/c.ckpt"));
    EXPECT_TRUE(model("other/old.gguf"));
}

TEST_F(ModelCheckTest, NoEmptyOrIncompleteVersionOfAnExistingModel) {
    const std::string v1 = mt::safetensors_bytes(mt::sd15_checkpoint(1));
    commit(view_file("checkpoints/x_psync.safetensors", v1), Category::checkpoint, "x_psync",
           ".safetensors");
    // A tool's create-then-close, then a save cut short: neither becomes v2.
    EXPECT_TRUE(contains(refusal(view_file("checkpoints/x_psync.safetensors", ""),
                                 Category::checkpoint, "x_psync", ".safetensors"),
                         "empty file"));
    const std::string v2 = mt::safetensors_bytes(mt::sd15_checkpoint(2));
    EXPECT_TRUE(contains(refusal(view_file("checkpoints/x_psync.safetensors", v2.substr(0, 3000)),
                                 Category::checkpoint, "x_psync", ".safetensors"),
                         "safetensors"));
    auto m = model("checkpoint/x_psync.safetensors");
    ASSERT_TRUE(m);
    ASSERT_EQ(m->versions.size(), 1u);
    EXPECT_EQ(m->current_version().size, v1.size());
    // The complete save does.
    EXPECT_EQ(commit(view_file("checkpoints/x_psync.safetensors", v2), Category::checkpoint,
                     "x_psync", ".safetensors")
                  .label,
              "v2");
}

TEST_F(ModelCheckTest, EmptySidecarsAreRefusedAndKeepTheOldOne) {
    commit(view_file("loras/x.safetensors", mt::safetensors_bytes(mt::kohya_lora(1))),
           Category::lora, "x", ".safetensors");
    commit(view_file("loras/x.preview.png", "\x89PNG..."), Category::lora, "x.safetensors", "",
           ".preview.png");
    const std::string err =
        refusal(view_file("loras/x.preview.png", ""), Category::lora, "x", "", ".preview.png");
    EXPECT_TRUE(contains(err, "empty file")) << err;
    auto m = model("lora/x.safetensors");
    ASSERT_TRUE(m);
    ASSERT_TRUE(m->current_version().sidecar(".preview.png"));
    EXPECT_EQ(m->current_version().sidecar(".preview.png")->size, 7u);
}

// ---- import agrees
// -------------------------------------------------------------------------------

TEST_F(ModelCheckTest, ImportAndCommitFileAcceptAndRefuseTheSameFiles) {
    const std::string gguf = gguf_model(3);
    const std::string st = mt::safetensors_bytes(mt::kohya_lora(4));
    struct Case {
        const char* name;
        std::string bytes;
        bool complete;
    };
    const std::vector<Case> cases{
        {"st_ok.safetensors", st, true},
        {"st_cut.safetensors", truncated_safetensors(), false},
        {"st_trailing.safetensors", st + "extra", false},
        {"st_upper.SAFETENSORS", st.substr(0, st.size() - 1), false},
        {"gguf_ok.gguf", gguf, true},
        {"gguf_trailing.gguf", gguf + "extra", true},
        {"gguf_cut.gguf", gguf.substr(0, gguf.size() - 100), false},
        {"gguf_head.gguf", gguf.substr(0, 30), false},
        {"not_gguf.gguf", std::string(100, 'x'), false},
        {"empty.ckpt", "", false},
        {"empty.safetensors", "", false},
        {"empty.gguf", "", false},
        {"data.ckpt", "PK\3\4 some zip", true},
        {"gguf_cut_named.bin", gguf.substr(0, 100), true},  // not checked: not named .gguf
    };
    const stdfs::path src = tmp_ / "src";
    stdfs::create_directories(src);
    for (const Case& c : cases) {
        SCOPED_TRACE(c.name);
        const stdfs::path p = src / c.name;
        mt::write_file(p, c.bytes);
        ImportOptions o;
        o.category = Category::other;
        const ImportReport rep = s().import({p}, o);
        ASSERT_EQ(rep.items.size(), 1u);
        const ImportItem& it = rep.items[0];
        const std::string ext = stdfs::path(c.name).extension().string();
        const stdfs::path v = view_file(std::string("other/") + c.name, c.bytes);
        const std::string err = refusal(v, Category::other, std::string("m_") + c.name, ext);
        if (c.complete) {
            EXPECT_NE(it.outcome, ImportItem::Outcome::failed) << it.error;
            EXPECT_EQ(err, "");
        } else {
            EXPECT_EQ(it.outcome, ImportItem::Outcome::failed);
            ASSERT_NE(err, "");
            // The same reason, with the path and what happened around it.
            EXPECT_TRUE(contains(it.error, p.string() + ": " + err + " (file not imported)"))
                << it.error << "\nvs\n"
                << err;
        }
    }
}

TEST_F(ModelCheckTest, ImportOfATreeAllowsEmptyPlainFilesButNotEmptyModelFiles) {
    const stdfs::path tree = tmp_ / "pipe";
    stdfs::create_directories(tree / "unet");
    mt::write_file(tree / "model_index.json", "{}");
    mt::write_file(tree / "README.md", "");
    mt::write_safetensors(tree / "unet" / "diffusion_pytorch_model.safetensors",
                          mt::unet_only(1, mt::UnetStyle::diffusers));
    ImportReport rep = s().import({tree}, {});
    ASSERT_EQ(rep.items.size(), 1u);
    EXPECT_NE(rep.items[0].outcome, ImportItem::Outcome::failed) << rep.items[0].error;
    EXPECT_EQ(rep.items[0].files, 3u);

    mt::write_file(tree / "vae.safetensors", "");
    rep = s().import({tree}, {});
    ASSERT_EQ(rep.items.size(), 1u);
    EXPECT_EQ(rep.items[0].outcome, ImportItem::Outcome::failed);
    EXPECT_TRUE(contains(rep.items[0].error, "vae.safetensors: empty file")) << rep.items[0].error;
}

}  // namespace
}  // namespace modelfs
