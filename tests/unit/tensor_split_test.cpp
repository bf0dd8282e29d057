// Tensor-level dedup in the store (store/tensor_split.h): how files are cut into pieces, when a
// file is composed from stored blobs, and that its bytes, verify, gc, eviction and
// materialisation stay right. Real stores in temp folders, real safetensors and GGUF files.
#include "modelfs/store/tensor_split.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>

#include "modelfs/store/errors.h"
#include "modelfs/store/hash.h"
#include "modelfs/store/store.h"
#include "support/gguf_writer.h"
#include "support/safetensors_writer.h"
#include "support/test_env.h"

namespace stdfs = std::filesystem;
using namespace modelfs;
using namespace modelfs::testing;

namespace {

std::string read_all(const stdfs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
}

Sha256 sha_of_file(const stdfs::path& p) {
    return sha256_of(read_all(p));
}

// A checkpoint-like spec: `big` F32 tensors of 1 MiB each under the UNet prefix with a shared
// seed per name (so other specs built here share them), plus small biases and a VAE/text part.
SafetensorsSpec checkpoint(int big = 12) {
    SafetensorsSpec s;
    s.metadata = {{"modelspec.title", "base"}};
    for (int i = 0; i < big; ++i) {
        s.tensors.push_back({"model.diffusion_model.block" + std::to_string(i) + ".weight",
                             "F32",
                             {512, 512},
                             1000 + i,
                             std::nullopt});
        s.tensors.push_back({"model.diffusion_model.block" + std::to_string(i) + ".bias",
                             "F32",
                             {512},
                             5000 + i,
                             std::nullopt});
    }
    s.tensors.push_back({"first_stage_model.decoder.weight", "F32", {1024, 512}, 7, std::nullopt});
    s.tensors.push_back(
        {"cond_stage_model.transformer.embeddings", "F32", {1024, 512}, 8, std::nullopt});
    return s;
}

class TensorSplitTest : public ::testing::Test {
  protected:
    void SetUp() override {
        ::unsetenv("MODELFS_TENSOR_DEDUP");
        store_ = std::make_unique<Store>(Store::init(dir / "store"));
    }
    Store& s() { return *store_; }

    // Writes `spec` to src/NAME.safetensors and imports it as checkpoint NAME.
    ImportItem import(const std::string& name, const SafetensorsSpec& spec) {
        const stdfs::path f = dir / "src" / (name + ".safetensors");
        stdfs::create_directories(f.parent_path());
        write_safetensors(f, spec);
        ImportOptions o;
        o.category = Category::checkpoint;
        o.name = name;
        ImportReport r = s().import({f}, o);
        EXPECT_TRUE(r.ok()) << (r.items.empty() ? "" : r.items[0].error);
        return r.items.at(0);
    }
    std::optional<BlobRecord> rec(const Sha256& h) { return s().catalog().read().get_blob(h); }

    // The composed blob's bytes, read through its extents.
    std::string rebuilt(const Sha256& h) {
        auto r = rec(h);
        EXPECT_TRUE(r && r->composed());
        StagingFile out = s().blobs().make_staging(".test");
        s().digest_composed(h, *r, out.fd());
        return read_all(out.path());
    }

    TempDir dir{"tensor-split"};
    std::unique_ptr<Store> store_;
};

TEST(ModelFilePieces, CoverTheFileInOrderWithBigTensorsAlone) {
    TempDir dir("pieces");
    SafetensorsSpec spec = checkpoint(4);
    const stdfs::path f = dir / "a.safetensors";
    const std::uint64_t size = write_safetensors(f, spec);
    UniqueFd fd(::open(f.c_str(), O_RDONLY));
    const auto pieces = model_file_pieces(fd.get(), size);
    ASSERT_GE(pieces.size(), 2u);
    std::uint64_t at = 0;
    std::size_t tensors = 0;
    for (const auto& p : pieces) {
        EXPECT_EQ(p.offset, at);
        EXPECT_GT(p.length, 0u);
        at += p.length;
        if (p.tensor) {
            ++tensors;
            EXPECT_GE(p.length, kMinTensorPiece);
        }
    }
    EXPECT_EQ(at, size);
    EXPECT_EQ(pieces[0].length, 8 + safetensors_header(spec).size());
    EXPECT_EQ(tensors, 6u);  // 4 UNet weights, the VAE and the text encoder; biases are merged
}

TEST(ModelFilePieces, GgufTensorsAndNotModelFiles) {
    TempDir dir("pieces");
    GgufWriter g;
    g.kv_string("general.architecture", "llama");
    for (int i = 0; i < 4; ++i)  // 256 KiB per F32 tensor, and a small one between
        g.tensor("blk." + std::to_string(i) + ".w", GgmlTensorType::f32, {256, 256}, i)
            .tensor("blk." + std::to_string(i) + ".norm", GgmlTensorType::f32, {16}, 9 + i);
    const stdfs::path f = dir / "m.gguf";
    const std::uint64_t size = g.write(f);
    UniqueFd fd(::open(f.c_str(), O_RDONLY));
    const auto pieces = model_file_pieces(fd.get(), size);
    ASSERT_GE(pieces.size(), 2u);
    std::uint64_t at = 0;
    for (const auto& p : pieces) {
        EXPECT_EQ(p.offset, at);
        at += p.length;
    }
    EXPECT_EQ(at, size);
    EXPECT_EQ(std::count_if(pieces.begin(), pieces.end(), [](const Piece& p) { return p.tensor; }),
              4);

    write_file(dir / "x.bin", std::string(1 << 20, 'x'));
    UniqueFd x(::open((dir / "x.bin").c_str(), O_RDONLY));
    EXPECT_TRUE(model_file_pieces(x.get(), 1 << 20).empty());
    // A header whose offsets point outside the file is never cut (nor trusted).
    write_file(dir / "bad.safetensors",
               raw_safetensors(R"({"a":{"dtype":"U8","shape":[9],"data_offsets":[0,99]}})", "xx"));
    UniqueFd bad(::open((dir / "bad.safetensors").c_str(), O_RDONLY));
    EXPECT_TRUE(model_file_pieces(bad.get(), stdfs::file_size(dir / "bad.safetensors")).empty());
    // A GGUF without tensors whose aligned data section starts past its end (found by fuzzing).
    const std::string past(
        "\x47\x47\x55\x46\x03\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
        "\x01\x00\x00\x00\x00\x00\x00\x00\x11\x00\x00\x00\x00\x00\x00\x00"
        "\x67\x65\x6e\x65\x72\x61\x67\x2e\x61\x6c\x69\x67\x6e\x6d\x65\x6e"
        "\x74\x04\x00\x00\x00\x03\x00\x00\x00",
        57);
    ASSERT_EQ(past.size(), 57u);
    write_file(dir / "past.gguf", past);
    UniqueFd p(::open((dir / "past.gguf").c_str(), O_RDONLY));
    EXPECT_TRUE(model_file_pieces(p.get(), past.size()).empty());
}

TEST_F(TensorSplitTest, FineTuneIsComposedFromTheBaseAndRebuildsExactly) {
    const SafetensorsSpec base = checkpoint();
    ImportItem b = import("base", base);
    ASSERT_TRUE(b.split);
    EXPECT_FALSE(b.split->composed);  // nothing to share with yet

    SafetensorsSpec ft = base;
    ft.metadata = {{"modelspec.title", "fine-tune"}};
    ft.tensors[4].seed = 999;  // one UNet weight changed
    ImportItem f = import("ft", ft);
    const stdfs::path src = dir / "src" / "ft.safetensors";
    ASSERT_TRUE(f.split);
    ASSERT_TRUE(f.split->composed) << f.split->why_not;
    const std::uint64_t changed = tensor_data_size(ft.tensors[4]);
    EXPECT_GE(f.split->shared_bytes, stdfs::file_size(src) - changed - (256 << 10));
    EXPECT_LE(f.split->new_bytes, changed + (256 << 10));

    // The whole file is gone from blobs/; the record is composed and rebuilds the exact bytes.
    EXPECT_FALSE(stdfs::exists(s().blobs().path_of(f.sha256)));
    auto r = rec(f.sha256);
    ASSERT_TRUE(r && r->composed());
    EXPECT_EQ(rebuilt(f.sha256), read_all(src));
    EXPECT_EQ(s().autov3(f.sha256)->hex(),
              sha256_of(read_all(src).substr(8 + safetensors_header(ft).size())).hex());
    ASSERT_TRUE(s().safetensors_info(f.sha256));
    EXPECT_EQ(s().safetensors_info(f.sha256)->metadata.at("modelspec.title"), "fine-tune");

    // Tensor-level savings are counted apart from file-level ones.
    StoreStats st = s().stats();
    EXPECT_EQ(st.composed_blobs, 1u);
    EXPECT_EQ(st.tensor_saved_bytes, f.split->shared_bytes);
    EXPECT_EQ(st.physical_bytes,
              stdfs::file_size(dir / "src" / "base.safetensors") + f.split->new_bytes);
    EXPECT_EQ(st.saved(), 0u);

    StorageInfo how = s().storage_info(f.sha256);
    EXPECT_EQ(how.how, StorageInfo::How::composed);
    ASSERT_EQ(how.shared_with.size(), 1u);
    EXPECT_EQ(how.shared_with[0].first, "checkpoint/base.safetensors");
    EXPECT_EQ(s().storage_info(b.sha256).used_by_composed, 1u);

    VerifyReport v = s().verify(false);
    EXPECT_TRUE(v.problems.empty()) << v.problems[0].detail;
}

TEST_F(TensorSplitTest, ReorderedResaveSharesEveryTensor) {
    const SafetensorsSpec base = checkpoint();
    import("base", base);
    SafetensorsSpec re = base;
    std::mt19937 rng(3);
    std::shuffle(re.tensors.begin(), re.tensors.end(), rng);
    re.metadata = {{"format", "pt"}, {"resaved", "yes"}};
    ImportItem r = import("resaved", re);
    ASSERT_TRUE(r.split && r.split->composed) << (r.split ? r.split->why_not : "");
    EXPECT_EQ(rebuilt(r.sha256), read_all(dir / "src" / "resaved.safetensors"));
    // Only the header and the small merged runs are new.
    EXPECT_LT(r.split->new_bytes, 256u << 10);
}

TEST_F(TensorSplitTest, LittleSharedOrSwitchedOffStaysWhole) {
    SafetensorsSpec a = checkpoint(2);
    import("a", a);
    SafetensorsSpec b = checkpoint(2);
    for (auto& t : b.tensors) t.name = "other." + t.name;  // nothing in common
    b.tensors.push_back(a.tensors[0]);                     // but 1 MiB, below the rule
    ImportItem rb = import("b", b);
    ASSERT_TRUE(rb.split);
    EXPECT_FALSE(rb.split->composed);
    EXPECT_NE(rb.split->why_not.find("below"), std::string::npos) << rb.split->why_not;
    EXPECT_TRUE(stdfs::exists(s().blobs().path_of(rb.sha256)));

    ::setenv("MODELFS_TENSOR_DEDUP", "0", 1);
    SafetensorsSpec c = checkpoint();
    c.metadata = {{"x", "y"}};
    import("full", checkpoint());
    ImportItem rc = import("c", c);
    ::unsetenv("MODELFS_TENSOR_DEDUP");
    ASSERT_TRUE(rc.split);
    EXPECT_FALSE(rc.split->composed);
    EXPECT_TRUE(stdfs::exists(s().blobs().path_of(rc.sha256)));
    EXPECT_EQ(s().stats().composed_blobs, 0u);
}

TEST_F(TensorSplitTest, GcKeepsWhatExtentsUseAndDropsItWithTheLastUser) {
    const SafetensorsSpec base = checkpoint();
    ImportItem b = import("base", base);
    SafetensorsSpec ft = base;
    ft.tensors[0].seed = 4242;
    ft.metadata = {{"v", "2"}};
    ImportItem f = import("ft", ft);
    ASSERT_TRUE(f.split && f.split->composed);
    const Sha256 pieces = rec(f.sha256)->extents.front().blob;
    ASSERT_TRUE(rec(pieces)->pieces);

    // The base model goes; its blob stays while the fine-tune's extents read it.
    ASSERT_TRUE(s().remove_model("checkpoint/base.safetensors"));
    GcReport g1 = s().gc(false);
    EXPECT_TRUE(g1.blobs.empty());
    EXPECT_TRUE(stdfs::exists(s().blobs().path_of(b.sha256)));
    EXPECT_EQ(rebuilt(f.sha256), read_all(dir / "src" / "ft.safetensors"));
    EXPECT_TRUE(s().verify(false).problems.empty());

    // Then the fine-tune: every blob and every index entry goes.
    ASSERT_TRUE(s().remove_model("checkpoint/ft.safetensors"));
    GcReport g2 = s().gc(false);
    EXPECT_EQ(g2.blobs.size(), 3u);
    EXPECT_GT(g2.tensors_unindexed, 0u);
    EXPECT_FALSE(stdfs::exists(s().blobs().path_of(b.sha256)));
    EXPECT_FALSE(stdfs::exists(s().blobs().path_of(pieces)));
    std::size_t left = 0;
    s().catalog().read().for_each_tensor(
        [&](const Xxh128&, std::uint64_t, const TensorPlace&) { ++left; });
    EXPECT_EQ(left, 0u);
}

TEST_F(TensorSplitTest, VerifyFindsAComposedFileWhoseSourceChanged) {
    const SafetensorsSpec base = checkpoint();
    ImportItem b = import("base", base);
    SafetensorsSpec ft = base;
    ft.tensors[2].seed = 31337;
    ft.metadata = {{"v", "2"}};
    ImportItem f = import("ft", ft);
    ASSERT_TRUE(f.split && f.split->composed);
    // Bit rot in a tensor of the base that the fine-tune shares.
    const stdfs::path p = s().blobs().path_of(b.sha256);
    stdfs::permissions(p, stdfs::perms::owner_write, stdfs::perm_options::add);
    {
        std::fstream io(p, std::ios::in | std::ios::out | std::ios::binary);
        io.seekp(static_cast<std::streamoff>(stdfs::file_size(p) - 10));
        io.put('\x5a');
    }
    VerifyReport v = s().verify(false);
    std::set<std::string> problems;
    for (const auto& pr : v.problems) problems.insert(pr.what + ":" + pr.blob->hex());
    EXPECT_TRUE(problems.count("corrupt:" + f.sha256.hex())) << ::testing::PrintToString(problems);
    EXPECT_TRUE(problems.count("corrupt:" + b.sha256.hex())) << ::testing::PrintToString(problems);
}

TEST_F(TensorSplitTest, MaterialiseWithinBudgetDropAndEvictionLeavesSourcesAlone) {
    const SafetensorsSpec base = checkpoint();
    ImportItem b = import("base", base);
    std::vector<ImportItem> fts;
    for (int i = 0; i < 2; ++i) {
        SafetensorsSpec ft = base;
        ft.tensors[2 * i].seed = 700 + i;
        ft.metadata = {{"ft", std::to_string(i)}};
        fts.push_back(import("ft" + std::to_string(i), ft));
        ASSERT_TRUE(fts.back().split && fts.back().split->composed);
    }
    const std::uint64_t size = rec(fts[0].sha256)->size;

    s().set_materialise_budget(0);
    MaterialiseResult none = s().materialise(fts[0].sha256);
    EXPECT_FALSE(none.materialised);
    EXPECT_FALSE(none.why_not.empty());

    // Room for one copy: the second pushes out the first (least recently used).
    s().set_materialise_budget(size + size / 2);
    ASSERT_TRUE(s().materialise(fts[0].sha256).materialised);
    EXPECT_EQ(read_all(s().blobs().path_of(fts[0].sha256)),
              read_all(dir / "src" / "ft0.safetensors"));
    EXPECT_EQ(s().storage_info(fts[0].sha256).how, StorageInfo::How::materialised);
    MaterialiseResult second = s().materialise(fts[1].sha256);
    ASSERT_TRUE(second.materialised) << second.why_not;
    ASSERT_EQ(second.dropped.size(), 1u);
    EXPECT_EQ(second.dropped[0], fts[0].sha256);
    EXPECT_FALSE(stdfs::exists(s().blobs().path_of(fts[0].sha256)));
    EXPECT_EQ(s().stats().materialised_bytes, size);
    // A materialised copy is checked like any blob; verify is clean.
    EXPECT_TRUE(s().verify(false).problems.empty());
    EXPECT_TRUE(s().drop_materialised(fts[1].sha256));
    EXPECT_FALSE(stdfs::exists(s().blobs().path_of(fts[1].sha256)));

    // The base can be downloaded again (it has a source), but composed files read it: the cache
    // quota leaves it.
    {
        auto txn = s().catalog().write();
        auto r = txn.get_blob(b.sha256);
        r->sources.push_back({"https://127.0.0.1:9/base.safetensors", false});
        txn.put_blob(b.sha256, *r);
        txn.commit();
    }
    EvictReport e = s().evict(0, false);
    for (const auto& x : e.evicted) EXPECT_NE(x.blob, b.sha256);
    EXPECT_TRUE(stdfs::exists(s().blobs().path_of(b.sha256)));

    // A command that needs the whole file gets it rebuilt, ignoring the budget.
    s().set_materialise_budget(0);
    UniqueFd fd = s().open_blob_file(fts[0].sha256);
    ASSERT_TRUE(fd);
    EXPECT_EQ(sha_of_file(s().blobs().path_of(fts[0].sha256)), fts[0].sha256);
}

TEST_F(TensorSplitTest, ACrashAfterTheCommitLeavesAValidCopyAndOrphanPiecesGoWithGc) {
    const SafetensorsSpec base = checkpoint();
    import("base", base);
    SafetensorsSpec ft = base;
    ft.tensors[6].seed = 1;
    ft.metadata = {{"v", "3"}};
    ImportItem f = import("ft", ft);
    ASSERT_TRUE(f.split && f.split->composed);
    // As if the process died between the commit and the unlink: the whole file is still there.
    stdfs::create_directories(s().blobs().path_of(f.sha256).parent_path());
    write_file(s().blobs().path_of(f.sha256), read_all(dir / "src" / "ft.safetensors"));
    EXPECT_EQ(s().storage_info(f.sha256).how, StorageInfo::How::materialised);
    EXPECT_EQ(
        s().check_blob(f.sha256,
                       UniqueFd(::open(s().blobs().path_of(f.sha256).c_str(), O_RDONLY)).get()),
        Store::BlobCheck::rehashed);
    EXPECT_TRUE(s().verify(false).problems.empty());
    // As if it died before the commit: a pieces file no record names is an orphan.
    const stdfs::path stray = s().blobs().path_of(sha256_of("stray pieces"));
    stdfs::create_directories(stray.parent_path());
    write_file(stray, "stray pieces");
    GcReport g = s().gc(false);
    EXPECT_FALSE(stdfs::exists(stray));
    EXPECT_EQ(rebuilt(f.sha256), read_all(dir / "src" / "ft.safetensors"));
}

TEST_F(TensorSplitTest, DedupeComposesFilesStoredBefore) {
    ::setenv("MODELFS_TENSOR_DEDUP", "0", 1);
    const SafetensorsSpec base = checkpoint();
    import("base", base);
    SafetensorsSpec ft = base;
    ft.tensors[8].seed = 77;
    ft.metadata = {{"v", "4"}};
    ImportItem f = import("ft", ft);
    ::unsetenv("MODELFS_TENSOR_DEDUP");
    ASSERT_FALSE(rec(f.sha256)->composed());
    SplitReport dry = s().split_tensors(f.sha256, /*dry_run=*/true);
    EXPECT_FALSE(dry.composed);
    EXPECT_GE(dry.shared_bytes, kMinSharedBytes);
    SplitReport r = s().split_tensors(f.sha256);
    ASSERT_TRUE(r.composed) << r.why_not;
    EXPECT_EQ(rebuilt(f.sha256), read_all(dir / "src" / "ft.safetensors"));
}

}  // namespace
