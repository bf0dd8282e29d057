// Store: init/open, import (single files, folder walks in the tools' layouts, diffusers trees,
// versions, --move), resolve, AutoV3, verify, gc, stats and crash recovery of moves. Real stores
// in temp dirs, synthetic safetensors files from the test support writer.
#include "modelfs/store/store.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "modelfs/store/errors.h"
#include "modelfs/store/hash.h"
#include "support/gguf_writer.h"
#include "support/safetensors_writer.h"
#include "support/test_env.h"

namespace modelfs {
namespace {

namespace stdfs = std::filesystem;
namespace mt = modelfs::testing;
using Outcome = ImportItem::Outcome;

std::vector<stdfs::path> files_under(const stdfs::path& dir) {
    std::vector<stdfs::path> out;
    std::error_code ec;
    for (stdfs::recursive_directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
        if (it->is_regular_file()) out.push_back(it->path());
    std::sort(out.begin(), out.end());
    return out;
}

Sha256 sha_of_file(const stdfs::path& p) {
    return *Sha256::from_hex(mt::sha256_hex_of_file(p));
}

// AutoV3 computed from the raw bytes: SHA-256 of everything after the 8-byte length and the
// header it announces.
std::string autov3_of_file(const stdfs::path& p) {
    const std::string bytes = mt::read_file(p);
    std::uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = n << 8 | static_cast<unsigned char>(bytes.at(i));
    return sha256_of(std::string_view(bytes).substr(8 + n)).hex();
}

std::uint64_t header_len_of_file(const stdfs::path& p) {
    const std::string bytes = mt::read_file(p);
    std::uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = n << 8 | static_cast<unsigned char>(bytes.at(i));
    return n;
}

void flip_byte(const stdfs::path& p, std::uint64_t offset) {
    stdfs::permissions(p, stdfs::perms::owner_write, stdfs::perm_options::add);
    int fd = ::open(p.c_str(), O_RDWR | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    char c = 0;
    ASSERT_EQ(::pread(fd, &c, 1, static_cast<off_t>(offset)), 1);
    c = static_cast<char>(c ^ 0x5a);
    ASSERT_EQ(::pwrite(fd, &c, 1, static_cast<off_t>(offset)), 1);
    ::close(fd);
}

bool contains(const std::string& haystack, const std::string& needle) {
    return haystack.find(needle) != std::string::npos;
}

class StoreTest : public ::testing::Test {
  protected:
    void SetUp() override { store_.emplace(Store::init(root_)); }

    Store& s() { return *store_; }
    void close() { store_.reset(); }
    void reopen() {
        store_.reset();
        store_.emplace(Store::open(root_));
    }

    ImportReport imp(const std::vector<stdfs::path>& paths, ImportOptions opts = {}) {
        if (opts.jobs == 0) opts.jobs = 2;
        return s().import(paths, opts);
    }
    ImportReport imp1(const stdfs::path& p, ImportOptions opts = {}) { return imp({p}, opts); }

    static const ImportItem* find_item(const ImportReport& r, const std::string& key) {
        for (const auto& it : r.items)
            if (it.model_key == key) return &it;
        return nullptr;
    }
    static std::set<std::string> keys_of(const ImportReport& r) {
        std::set<std::string> out;
        for (const auto& it : r.items) out.insert(it.model_key);
        return out;
    }
    static std::string errors_of(const ImportReport& r) {
        std::string out;
        for (const auto& it : r.items)
            if (it.outcome == Outcome::failed) out += it.source.string() + ": " + it.error + "\n";
        return out;
    }

    std::optional<Model> model(const std::string& key) {
        return s().catalog().read().get_model(key);
    }
    std::optional<BlobRecord> blob_record(const Sha256& h) {
        return s().catalog().read().get_blob(h);
    }
    std::vector<stdfs::path> blob_files() { return files_under(root_ / "blobs"); }
    std::vector<stdfs::path> staging_files() { return files_under(root_ / "staging"); }
    std::vector<stdfs::path> quarantine_files() { return files_under(root_ / "quarantine"); }

    // A small safetensors file.
    stdfs::path st(const stdfs::path& p, const mt::SafetensorsSpec& spec) {
        stdfs::create_directories(p.parent_path());
        mt::write_safetensors(p, spec);
        return p;
    }
    stdfs::path rnd(const stdfs::path& p, std::uint64_t size, std::uint64_t seed) {
        mt::write_random_file(p, size, seed);
        return p;
    }

    mt::TempDir tmp_{"modelfs-store"};
    stdfs::path root_ = tmp_ / "store";
    stdfs::path src_ = tmp_ / "src";
    std::optional<Store> store_;
};

// ---- init / open ---------------------------------------------------------------------------

TEST_F(StoreTest, InitCreatesTheLayout) {
    EXPECT_TRUE(stdfs::is_directory(root_ / "blobs" / "sha256"));
    EXPECT_TRUE(stdfs::is_directory(root_ / "staging"));
    EXPECT_TRUE(stdfs::is_directory(root_ / "quarantine"));
    EXPECT_TRUE(stdfs::exists(root_ / "catalog" / "data.mdb"));
    EXPECT_TRUE(stdfs::exists(root_ / "README.txt"));
    EXPECT_EQ(s().root(), stdfs::absolute(root_).lexically_normal());
    EXPECT_EQ(s().catalog().schema_version(), kSchemaVersion);
    EXPECT_EQ(s().blobs().root(), s().root());
}

TEST_F(StoreTest, InitOnAnEmptyExistingFolder) {
    close();
    const stdfs::path empty = tmp_ / "empty";
    stdfs::create_directories(empty);
    Store st = Store::init(empty);
    EXPECT_TRUE(stdfs::exists(empty / "catalog" / "data.mdb"));
}

TEST_F(StoreTest, InitOnAnExistingStoreReopensIt) {
    auto r = imp1(rnd(src_ / "a.bin", 1000, 1));
    ASSERT_TRUE(r.ok()) << errors_of(r);
    close();
    Store again = Store::init(root_);
    EXPECT_TRUE(again.catalog().read().get_model("other/a.bin"));
    EXPECT_EQ(files_under(root_ / "blobs").size(), 1u);
}

TEST_F(StoreTest, InitRefusesNonEmptyFolderThatIsNotAStore) {
    close();
    const stdfs::path busy = tmp_ / "busy";
    mt::write_text_file(busy / "notes.txt", "mine");
    try {
        Store::init(busy);
        FAIL() << "init took over a non-empty folder";
    } catch (const StoreError& e) {
        EXPECT_EQ(e.kind(), ErrorKind::no_store);
        EXPECT_TRUE(contains(e.what(), busy.string())) << e.what();
    }
    // Nothing was added to it.
    EXPECT_EQ(files_under(busy), std::vector<stdfs::path>{busy / "notes.txt"});
    EXPECT_FALSE(stdfs::exists(busy / "blobs"));

    mt::write_text_file(tmp_ / "a-file", "x");
    EXPECT_THROW(Store::init(tmp_ / "a-file"), StoreError);
}

TEST_F(StoreTest, OpenMissingOrNonStoreFolderSaysToInit) {
    close();
    for (const stdfs::path& p : {tmp_ / "missing", src_}) {
        stdfs::create_directories(src_);
        mt::write_text_file(src_ / "x.txt", "x");
        try {
            Store::open(p);
            FAIL() << "opened " << p;
        } catch (const StoreError& e) {
            EXPECT_EQ(e.kind(), ErrorKind::no_store);
            EXPECT_TRUE(contains(e.what(), "modelfs init")) << e.what();
            EXPECT_TRUE(contains(e.what(), p.string())) << e.what();
        }
    }
    EXPECT_FALSE(stdfs::exists(tmp_ / "missing"));
}

TEST_F(StoreTest, OpenRemovesAbandonedStagingFiles) {
    close();
    mt::write_text_file(root_ / "staging" / "1234-dead.tmp", "half a blob");
    reopen();
    EXPECT_TRUE(staging_files().empty());
}

TEST(StoreDefaultPath, FollowsTheEnvironment) {
    struct Saved {
        std::string name;
        std::optional<std::string> value;
    };
    std::vector<Saved> saved;
    for (const char* n : {"MODELFS_STORE", "XDG_DATA_HOME", "HOME"}) {
        const char* v = std::getenv(n);
        saved.push_back({n, v ? std::optional<std::string>(v) : std::nullopt});
    }
    ::setenv("MODELFS_STORE", "/s/store", 1);
    ::setenv("XDG_DATA_HOME", "/x/data", 1);
    ::setenv("HOME", "/h/me", 1);
    EXPECT_EQ(Store::default_path(), stdfs::path("/s/store"));
    ::setenv("MODELFS_STORE", "", 1);  // empty counts as unset
    EXPECT_EQ(Store::default_path(), stdfs::path("/x/data/modelfs"));
    ::unsetenv("MODELFS_STORE");
    ::unsetenv("XDG_DATA_HOME");
    EXPECT_EQ(Store::default_path(), stdfs::path("/h/me/.local/share/modelfs"));
    ::unsetenv("HOME");
    try {
        Store::default_path();
        ADD_FAILURE() << "no path and no error";
    } catch (const StoreError& e) {
        EXPECT_EQ(e.kind(), ErrorKind::no_store);
    }
    for (const auto& sv : saved) {
        if (sv.value)
            ::setenv(sv.name.c_str(), sv.value->c_str(), 1);
        else
            ::unsetenv(sv.name.c_str());
    }
}

// ---- Import: single files ------------------------------------------------------------------

TEST_F(StoreTest, ImportSingleFileRecordsEverything) {
    const stdfs::path p = st(src_ / "loras" / "foo.safetensors", mt::kohya_lora(1));
    const Sha256 h = sha_of_file(p);
    const std::uint64_t size = stdfs::file_size(p);

    auto r = imp1(p);
    ASSERT_TRUE(r.ok()) << errors_of(r);
    ASSERT_EQ(r.items.size(), 1u);
    const ImportItem& it = r.items[0];
    EXPECT_EQ(it.model_key, "lora/foo.safetensors");
    EXPECT_EQ(it.outcome, Outcome::added);
    EXPECT_EQ(it.label, "v1");
    EXPECT_EQ(it.sha256, h);
    EXPECT_EQ(it.size, size);
    EXPECT_EQ(it.files, 1u);
    EXPECT_TRUE(it.new_blob);
    EXPECT_TRUE(it.error.empty());
    EXPECT_EQ(r.skipped_files, 0u);

    auto m = model("lora/foo.safetensors");
    ASSERT_TRUE(m);
    EXPECT_EQ(m->category, Category::lora);
    EXPECT_EQ(m->name, "foo.safetensors");
    ASSERT_EQ(m->versions.size(), 1u);
    EXPECT_EQ(m->current, 0u);
    const ModelVersion& v = m->versions[0];
    EXPECT_EQ(v.label, "v1");
    EXPECT_EQ(v.blob, h);
    EXPECT_EQ(v.ext, ".safetensors");
    EXPECT_EQ(v.size, size);
    EXPECT_EQ(v.source, stdfs::absolute(p).lexically_normal().string());
    EXPECT_GT(v.added, 0);

    auto rec = blob_record(h);
    ASSERT_TRUE(rec);
    EXPECT_EQ(rec->state, BlobState::present);
    EXPECT_EQ(rec->size, size);
    EXPECT_EQ(rec->safetensors_header_len, header_len_of_file(p));
    ASSERT_TRUE(rec->xxh128);
    UniqueFd fd(::open(p.c_str(), O_RDONLY | O_CLOEXEC));
    EXPECT_EQ(*rec->xxh128, xxh128_fd(fd.get()));
    EXPECT_GT(rec->ingested, 0);

    EXPECT_EQ(mt::read_file(s().blobs().path_of(h)), mt::read_file(p));
    EXPECT_TRUE(stdfs::exists(p)) << "a copy import must leave the source";
    EXPECT_TRUE(staging_files().empty());
}

TEST_F(StoreTest, CategoryFromParentFolderWinsOverTensors) {
    // Checkpoint tensors in a LoRA folder: the user's folder decides.
    auto r = imp({st(src_ / "loras" / "a.safetensors", mt::sd15_checkpoint(1)),
                  st(src_ / "Stable-diffusion" / "b.safetensors", mt::kohya_lora(2)),
                  st(src_ / "VAE" / "c.safetensors", mt::kohya_lora(3)),
                  rnd(src_ / "embeddings" / "d.pt", 100, 4)});
    ASSERT_TRUE(r.ok()) << errors_of(r);
    EXPECT_EQ(keys_of(r), (std::set<std::string>{"lora/a.safetensors", "checkpoint/b.safetensors",
                                                 "vae/c.safetensors", "embedding/d.pt"}));
}

TEST_F(StoreTest, CategoryFromAGrandparentFolder) {
    // A single file keeps only its stem as name; the category may come from higher up.
    auto r = imp1(st(src_ / "loras" / "sdxl" / "styles" / "ink.safetensors", mt::vae(1)));
    ASSERT_TRUE(r.ok()) << errors_of(r);
    EXPECT_EQ(keys_of(r), (std::set<std::string>{"lora/ink.safetensors"}));
}

TEST_F(StoreTest, CategoryFromTensorsElseOther) {
    auto r = imp({st(src_ / "misc" / "l.safetensors", mt::kohya_lora(1)),
                  st(src_ / "misc" / "c.safetensors", mt::sd15_checkpoint(2)),
                  st(src_ / "misc" / "v.safetensors", mt::vae(3)),
                  st(src_ / "misc" / "t.safetensors", mt::text_encoder(4)),
                  rnd(src_ / "misc" / "o.bin", 5000, 5), rnd(src_ / "misc" / "tiny.ckpt", 3, 6)});
    ASSERT_TRUE(r.ok()) << errors_of(r);
    EXPECT_EQ(keys_of(r), (std::set<std::string>{"lora/l.safetensors", "checkpoint/c.safetensors",
                                                 "vae/v.safetensors", "text_encoder/t.safetensors",
                                                 "other/o.bin", "other/tiny.ckpt"}));
    // Only the safetensors files carry a header length.
    EXPECT_EQ(blob_record(sha_of_file(src_ / "misc" / "o.bin"))->safetensors_header_len, 0u);
    EXPECT_GT(blob_record(sha_of_file(src_ / "misc" / "v.safetensors"))->safetensors_header_len,
              0u);
}

TEST_F(StoreTest, ExplicitCategoryNameAndVersion) {
    ImportOptions o;
    o.category = Category::vae;
    o.name = "sdxl/my vae";
    o.version = "fp16-fix";
    auto r = imp1(st(src_ / "loras" / "x.safetensors", mt::kohya_lora(1)), o);
    ASSERT_TRUE(r.ok()) << errors_of(r);
    ASSERT_EQ(r.items.size(), 1u);
    EXPECT_EQ(r.items[0].model_key, "vae/sdxl/my vae.safetensors");
    EXPECT_EQ(r.items[0].label, "fp16-fix");
    auto m = model("vae/sdxl/my vae.safetensors");
    ASSERT_TRUE(m);
    EXPECT_EQ(m->current_version().label, "fp16-fix");
    EXPECT_FALSE(model("lora/x"));
}

TEST_F(StoreTest, NameWithSeveralModelsIsRefused) {
    ImportOptions o;
    o.name = "one";
    try {
        imp({rnd(src_ / "a.bin", 10, 1), rnd(src_ / "b.bin", 10, 2)}, o);
        FAIL() << "--name accepted for two models";
    } catch (const StoreError& e) {
        EXPECT_EQ(e.kind(), ErrorKind::bad_input);
    }
    EXPECT_TRUE(blob_files().empty());
}

TEST_F(StoreTest, InvalidNamesFail) {
    for (const std::string& name : {std::string("a@b"), std::string("../up"), std::string("x//y"),
                                    std::string("/abs"), std::string("trail/")}) {
        ImportOptions o;
        o.name = name;
        auto r = imp1(rnd(src_ / "n.bin", 10, 1), o);
        ASSERT_EQ(r.items.size(), 1u) << name;
        EXPECT_EQ(r.items[0].outcome, Outcome::failed) << name;
        EXPECT_TRUE(contains(r.items[0].error, "invalid model name")) << r.items[0].error;
        EXPECT_FALSE(r.ok());
    }
    std::size_t models = 0;
    s().catalog().read().for_each_model([&](const Model&) { ++models; });
    EXPECT_EQ(models, 0u);
}

TEST_F(StoreTest, SameContentUnderTwoNamesIsOneBlobTwoModels) {
    const stdfs::path a = rnd(src_ / "a.bin", 300000, 9);
    const stdfs::path b = src_ / "b.bin";
    stdfs::copy_file(a, b);
    auto r = imp({a, b});
    ASSERT_TRUE(r.ok()) << errors_of(r);
    ASSERT_EQ(r.items.size(), 2u);
    EXPECT_EQ(r.items[0].sha256, r.items[1].sha256);
    // Exactly one of the two added bytes.
    EXPECT_NE(r.items[0].new_blob, r.items[1].new_blob);
    EXPECT_EQ(blob_files().size(), 1u);
    EXPECT_TRUE(model("other/a.bin"));
    EXPECT_TRUE(model("other/b.bin"));
    auto users = s().models_using(r.items[0].sha256);
    std::sort(users.begin(), users.end());
    EXPECT_EQ(users, (std::vector<std::string>{"other/a.bin@v1", "other/b.bin@v1"}));
    EXPECT_TRUE(staging_files().empty());
}

TEST_F(StoreTest, SamePathTwiceIsUnchanged) {
    const stdfs::path p = st(src_ / "loras" / "foo.safetensors", mt::kohya_lora(1));
    ASSERT_TRUE(imp1(p).ok());
    auto r = imp1(p);
    ASSERT_TRUE(r.ok()) << errors_of(r);
    ASSERT_EQ(r.items.size(), 1u);
    EXPECT_EQ(r.items[0].outcome, Outcome::unchanged);
    EXPECT_EQ(r.items[0].label, "v1");
    EXPECT_FALSE(r.items[0].new_blob);
    auto m = model("lora/foo.safetensors");
    ASSERT_TRUE(m);
    EXPECT_EQ(m->versions.size(), 1u);
    EXPECT_EQ(blob_files().size(), 1u);
    EXPECT_TRUE(staging_files().empty());
}

TEST_F(StoreTest, ChangedContentBecomesNewCurrentVersion) {
    const stdfs::path p = src_ / "loras" / "foo.safetensors";
    st(p, mt::kohya_lora(1));
    const Sha256 h1 = sha_of_file(p);
    ASSERT_TRUE(imp1(p).ok());
    st(p, mt::kohya_lora(2));
    const Sha256 h2 = sha_of_file(p);
    ASSERT_NE(h1, h2);

    auto r = imp1(p);
    ASSERT_TRUE(r.ok()) << errors_of(r);
    ASSERT_EQ(r.items.size(), 1u);
    EXPECT_EQ(r.items[0].outcome, Outcome::new_version);
    EXPECT_EQ(r.items[0].label, "v2");
    EXPECT_TRUE(r.items[0].new_blob);

    auto m = model("lora/foo.safetensors");
    ASSERT_TRUE(m);
    ASSERT_EQ(m->versions.size(), 2u);
    EXPECT_EQ(m->current, 1u);
    EXPECT_EQ(m->versions[0].label, "v1");
    EXPECT_EQ(m->versions[0].blob, h1);
    EXPECT_EQ(m->versions[1].label, "v2");
    EXPECT_EQ(m->versions[1].blob, h2);
    // v1's bytes are still there.
    EXPECT_TRUE(s().blobs().exists(h1));
    EXPECT_EQ(blob_record(h1)->state, BlobState::present);
    EXPECT_EQ(blob_files().size(), 2u);
}

TEST_F(StoreTest, ExplicitVersionLabelTakenByOtherContentFails) {
    const stdfs::path p = src_ / "foo.bin";
    rnd(p, 1000, 1);
    const Sha256 h1 = sha_of_file(p);
    ASSERT_TRUE(imp1(p).ok());
    rnd(p, 1000, 2);
    ImportOptions o;
    o.version = "v1";
    auto r = imp1(p, o);
    ASSERT_EQ(r.items.size(), 1u);
    EXPECT_EQ(r.items[0].outcome, Outcome::failed);
    EXPECT_TRUE(contains(r.items[0].error, "already has a version labelled 'v1'"))
        << r.items[0].error;
    EXPECT_TRUE(contains(r.items[0].error, "other/foo.bin")) << r.items[0].error;
    EXPECT_FALSE(r.ok());
    auto m = model("other/foo.bin");
    ASSERT_TRUE(m);
    ASSERT_EQ(m->versions.size(), 1u);
    EXPECT_EQ(m->versions[0].blob, h1);

    // The same label with the same content is fine: unchanged.
    rnd(p, 1000, 1);
    auto again = imp1(p, o);
    ASSERT_TRUE(again.ok()) << errors_of(again);
    EXPECT_EQ(again.items[0].outcome, Outcome::unchanged);

    // A new label for new content is a new version under that label.
    rnd(p, 1000, 3);
    o.version = "beta";
    auto beta = imp1(p, o);
    ASSERT_TRUE(beta.ok()) << errors_of(beta);
    EXPECT_EQ(beta.items[0].outcome, Outcome::new_version);
    EXPECT_EQ(beta.items[0].label, "beta");
    EXPECT_EQ(model("other/foo.bin")->current_version().label, "beta");
}

TEST_F(StoreTest, ProgressCountsEveryByteAndFile) {
    Progress progress;
    ImportOptions o;
    o.jobs = 3;
    auto r = s().import(
        {rnd(src_ / "a.bin", 5 << 20, 1), rnd(src_ / "b.bin", 1000, 2), rnd(src_ / "c.bin", 0, 3)},
        o, &progress);
    // The empty file is refused (an empty file is never a model), and still counted as done.
    ASSERT_EQ(r.items.size(), 3u);
    for (const auto& it : r.items) {
        if (it.source.filename() == "c.bin") {
            EXPECT_EQ(it.outcome, Outcome::failed);
            EXPECT_NE(it.error.find("c.bin: empty file"), std::string::npos) << it.error;
        } else {
            EXPECT_NE(it.outcome, Outcome::failed) << it.error;
        }
    }
    EXPECT_EQ(progress.total_bytes.load(), (5u << 20) + 1000u);
    EXPECT_EQ(progress.done_bytes.load(), (5u << 20) + 1000u);
    EXPECT_EQ(progress.total_items.load(), 3u);
    EXPECT_EQ(progress.done_items.load(), 3u);
}

// ---- Import: failures ----------------------------------------------------------------------

TEST_F(StoreTest, MissingPathFailsNamingItWhileOthersImport) {
    const stdfs::path missing = src_ / "nope.safetensors";
    auto r = imp({missing, rnd(src_ / "ok.bin", 100, 1)});
    EXPECT_FALSE(r.ok());
    ASSERT_EQ(r.items.size(), 2u);
    const ImportItem* bad = nullptr;
    for (const auto& it : r.items)
        if (it.outcome == Outcome::failed) bad = &it;
    ASSERT_NE(bad, nullptr);
    EXPECT_TRUE(contains(bad->error, missing.string())) << bad->error;
    ASSERT_NE(find_item(r, "other/ok.bin"), nullptr);
    EXPECT_EQ(find_item(r, "other/ok.bin")->outcome, Outcome::added);
}

TEST_F(StoreTest, UnreadableFileFails) {
    if (::geteuid() == 0) GTEST_SKIP() << "root reads mode 000 files";
    const stdfs::path p = rnd(src_ / "secret.bin", 100, 1);
    stdfs::permissions(p, stdfs::perms::none);
    auto r = imp1(p);
    stdfs::permissions(p, stdfs::perms::owner_all);
    ASSERT_EQ(r.items.size(), 1u);
    EXPECT_EQ(r.items[0].outcome, Outcome::failed);
    EXPECT_TRUE(contains(r.items[0].error, p.string())) << r.items[0].error;
    EXPECT_TRUE(blob_files().empty());
}

TEST_F(StoreTest, MalformedSafetensorsFailsOnlyThatFile) {
    const stdfs::path models = src_ / "models";
    stdfs::create_directories(models / "loras");
    mt::write_file(models / "loras" / "bad.safetensors", "this is not a safetensors file at all");
    mt::write_file(models / "loras" / "lies.safetensors",
                   mt::raw_safetensors_with_length(1'000'000, "{}"));
    st(models / "loras" / "good.safetensors", mt::kohya_lora(1));
    st(models / "vae" / "v.safetensors", mt::vae(1));
    auto r = imp1(models);
    EXPECT_FALSE(r.ok());
    ASSERT_EQ(r.items.size(), 4u) << errors_of(r);
    for (const char* name : {"bad", "lies"}) {
        const ImportItem* it = find_item(r, std::string("lora/") + name + ".safetensors");
        ASSERT_NE(it, nullptr) << name;
        EXPECT_EQ(it->outcome, Outcome::failed);
        EXPECT_TRUE(contains(it->error, std::string(name) + ".safetensors")) << it->error;
        EXPECT_FALSE(model(std::string("lora/") + name));
        EXPECT_FALSE(s().blobs().exists(
            sha_of_file(models / "loras" / (std::string(name) + ".safetensors"))))
            << "a rejected file was stored";
    }
    EXPECT_EQ(find_item(r, "lora/good.safetensors")->outcome, Outcome::added);
    EXPECT_EQ(find_item(r, "vae/v.safetensors")->outcome, Outcome::added);
    EXPECT_TRUE(model("lora/good.safetensors"));
    EXPECT_TRUE(model("vae/v.safetensors"));
    EXPECT_TRUE(staging_files().empty());
}

TEST_F(StoreTest, NonSafetensorsModelFilesNeedNoHeader) {
    // A .ckpt is a zip, a .bin anything: not safetensors, not an error.
    auto r = imp({rnd(src_ / "checkpoints" / "old.ckpt", 4096, 1),
                  rnd(src_ / "clip" / "pytorch_model.bin", 7, 2)});
    ASSERT_TRUE(r.ok()) << errors_of(r);
    EXPECT_EQ(keys_of(r),
              (std::set<std::string>{"checkpoint/old.ckpt", "text_encoder/pytorch_model.bin"}));
}

// ---- Import: folder walks ------------------------------------------------------------------

TEST_F(StoreTest, ComfyUiTree) {
    const stdfs::path models = src_ / "ComfyUI" / "models";
    st(models / "loras" / "sdxl" / "foo.safetensors", mt::kohya_lora(1));
    st(models / "loras" / "bar.safetensors", mt::diffusers_lora(2));
    st(models / "checkpoints" / "base.safetensors", mt::sdxl_checkpoint(3));
    st(models / "vae" / "sdxl_vae.safetensors", mt::vae(4));
    st(models / "diffusion_models" / "flux" / "dev.safetensors",
       mt::unet_only(5, mt::UnetStyle::flux));
    mt::write_text_file(models / "loras" / "sdxl" / "foo.txt", "trigger words");
    mt::write_text_file(models / "loras" / "sdxl" / "foo.preview.png", "png");
    mt::write_text_file(models / "configs" / "v1-inference.yaml", "model: {}");
    st(models / ".cache" / "hidden.safetensors", mt::kohya_lora(6));
    st(models / "loras" / ".trash.safetensors", mt::kohya_lora(7));

    auto r = imp1(models);
    ASSERT_TRUE(r.ok()) << errors_of(r);
    EXPECT_EQ(keys_of(r),
              (std::set<std::string>{"lora/sdxl/foo.safetensors", "lora/bar.safetensors",
                                     "checkpoint/base.safetensors", "vae/sdxl_vae.safetensors",
                                     "diffusion_model/flux/dev.safetensors"}));
    EXPECT_EQ(r.skipped_files, 3u);
    for (const auto& it : r.items) EXPECT_EQ(it.outcome, Outcome::added) << it.model_key;
    auto m = model("lora/sdxl/foo.safetensors");
    ASSERT_TRUE(m);
    EXPECT_EQ(m->name, "sdxl/foo.safetensors");
    EXPECT_EQ(m->current_version().blob,
              sha_of_file(models / "loras" / "sdxl" / "foo.safetensors"));
    EXPECT_EQ(blob_files().size(), 5u);
    EXPECT_FALSE(s().blobs().exists(sha_of_file(models / ".cache" / "hidden.safetensors")));
}

TEST_F(StoreTest, A1111Tree) {
    const stdfs::path webui = src_ / "stable-diffusion-webui";
    st(webui / "models" / "Stable-diffusion" / "x.safetensors", mt::sd15_checkpoint(1));
    st(webui / "models" / "Lora" / "y.safetensors", mt::kohya_lora(2));
    st(webui / "models" / "VAE" / "z.safetensors", mt::vae(3));
    st(webui / "embeddings" / "e.safetensors", mt::textual_inversion(4));
    rnd(webui / "models" / "ESRGAN" / "4x.pth", 100, 5);

    auto r = imp1(webui / "models" / "Stable-diffusion");
    ASSERT_TRUE(r.ok()) << errors_of(r);
    EXPECT_EQ(keys_of(r), (std::set<std::string>{"checkpoint/x.safetensors"}));

    auto all = imp1(webui);
    ASSERT_TRUE(all.ok()) << errors_of(all);
    EXPECT_EQ(keys_of(all), (std::set<std::string>{"checkpoint/x.safetensors", "lora/y.safetensors",
                                                   "vae/z.safetensors", "embedding/e.safetensors",
                                                   "upscaler/4x.pth"}));
    EXPECT_EQ(find_item(all, "checkpoint/x.safetensors")->outcome, Outcome::unchanged);
}

TEST_F(StoreTest, WalkWithoutCategoryFolderKeepsSubfoldersInTheName) {
    st(src_ / "stuff" / "sub" / "deep" / "y.safetensors", mt::vae(1));
    mt::GgufWriter gguf;
    gguf.tensor("t", mt::GgmlTensorType::f32, {4});
    gguf.write(src_ / "stuff" / "z.gguf");
    auto r = imp1(src_ / "stuff");
    ASSERT_TRUE(r.ok()) << errors_of(r);
    EXPECT_EQ(keys_of(r), (std::set<std::string>{"vae/sub/deep/y.safetensors", "other/z.gguf"}));
}

// Issue 16 finding 9: a GGUF file's category comes from its general.architecture, as ComfyUI-GGUF
// and Forge read it; a folder naming a category still wins, and an LLM for llama.cpp stays other.
TEST_F(StoreTest, GgufCategoryFromItsArchitecture) {
    const auto gguf = [&](const stdfs::path& p, const char* arch) {
        mt::GgufWriter w;
        if (arch) w.kv_string("general.architecture", arch);
        w.tensor("t", mt::GgmlTensorType::f32, {4});
        stdfs::create_directories(p.parent_path());
        w.write(p);
    };
    gguf(src_ / "dl" / "flux1-dev-Q4_K_S.gguf", "flux");
    gguf(src_ / "dl" / "wan2.1-t2v-14b-Q8_0.gguf", "wan");
    gguf(src_ / "dl" / "t5-v1_1-xxl-encoder-Q5_K_M.gguf", "t5encoder");
    gguf(src_ / "dl" / "phi-3-mini.gguf", "phi3");
    gguf(src_ / "dl" / "bare.gguf", nullptr);
    gguf(src_ / "dl" / "loras" / "flux-lora.gguf", "flux");
    auto r = imp1(src_ / "dl");
    ASSERT_TRUE(r.ok()) << errors_of(r);
    EXPECT_EQ(keys_of(r), (std::set<std::string>{
                              "diffusion_model/flux1-dev-Q4_K_S.gguf",
                              "diffusion_model/wan2.1-t2v-14b-Q8_0.gguf",
                              "text_encoder/t5-v1_1-xxl-encoder-Q5_K_M.gguf",
                              "other/phi-3-mini.gguf",
                              "other/bare.gguf",
                              "lora/flux-lora.gguf",
                          }));
    // A single file, as `modelfs import flux1-dev-Q4_K_S.gguf` gives it (no -c).
    gguf(src_ / "one" / "flux1-schnell-Q4_0.gguf", "flux");
    auto one = imp1(src_ / "one" / "flux1-schnell-Q4_0.gguf");
    ASSERT_TRUE(one.ok()) << errors_of(one);
    EXPECT_EQ(keys_of(one), (std::set<std::string>{"diffusion_model/flux1-schnell-Q4_0.gguf"}));
}

TEST_F(StoreTest, FolderWithoutModelsImportsNothing) {
    mt::write_text_file(src_ / "docs" / "readme.md", "hi");
    mt::write_text_file(src_ / "docs" / "a" / "config.json", "{}");
    auto r = imp1(src_ / "docs");
    EXPECT_TRUE(r.items.empty());
    EXPECT_TRUE(r.ok());
    EXPECT_EQ(r.skipped_files, 2u);
    EXPECT_TRUE(blob_files().empty());
}

TEST_F(StoreTest, SymlinkLoopInWalkTerminatesAndBrokenLinkIsReported) {
    const stdfs::path models = src_ / "models";
    st(models / "loras" / "a.safetensors", mt::kohya_lora(1));
    stdfs::create_directory_symlink("..", models / "loras" / "again");
    stdfs::create_symlink(models / "nowhere.safetensors",
                          models / "loras" / "dangling.safetensors");
    auto r = imp1(models);
    ASSERT_NE(find_item(r, "lora/a.safetensors"), nullptr) << errors_of(r);
    EXPECT_EQ(find_item(r, "lora/a.safetensors")->outcome, Outcome::added);
    std::size_t added = 0, failed = 0;
    for (const auto& it : r.items) {
        if (it.outcome == Outcome::added) ++added;
        if (it.outcome == Outcome::failed) {
            ++failed;
            EXPECT_TRUE(contains(it.error, "dangling.safetensors")) << it.error;
        }
    }
    EXPECT_EQ(added, 1u) << "the loop imported a model twice";
    EXPECT_EQ(failed, 1u);
}

// A diffusers folder: model_index.json plus component folders, one multi-file model.
class StoreDiffusersTest : public StoreTest {
  protected:
    void make(const stdfs::path& d) {
        mt::write_text_file(d / "model_index.json",
                            R"({"_class_name": "StableDiffusionPipeline"})");
        mt::write_text_file(d / "unet" / "config.json", R"({"sample_size": 64})");
        st(d / "unet" / "diffusion_pytorch_model.safetensors",
           mt::unet_only(1, mt::UnetStyle::diffusers));
        mt::write_text_file(d / "vae" / "config.json", R"({"sample_size": 64})");  // same bytes
        st(d / "vae" / "diffusion_pytorch_model.safetensors", mt::vae(2));
        st(d / "text_encoder" / "model.safetensors", mt::text_encoder(3));
        mt::write_text_file(d / "scheduler" / "scheduler_config.json", "{}");
        mt::write_text_file(d / "tokenizer" / "vocab.json", R"({"a": 1})");
        mt::write_text_file(d / ".git" / "HEAD", "ref: refs/heads/main");
        mt::write_text_file(d / ".gitattributes", "*.safetensors filter=lfs");
    }
    const std::vector<std::string> expected_paths_ = {
        "model_index.json",
        "scheduler/scheduler_config.json",
        "text_encoder/model.safetensors",
        "tokenizer/vocab.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "vae/config.json",
        "vae/diffusion_pytorch_model.safetensors",
    };

    void check_tree(const stdfs::path& d, const std::string& key) {
        auto m = model(key);
        ASSERT_TRUE(m) << key;
        EXPECT_EQ(m->category, Category::diffusers);
        ASSERT_EQ(m->versions.size(), 1u);
        const ModelVersion& v = m->current_version();
        EXPECT_TRUE(v.is_tree());
        EXPECT_FALSE(v.blob);
        std::vector<std::string> paths;
        std::uint64_t total = 0;
        for (const auto& e : v.tree) {
            paths.push_back(e.path);
            EXPECT_EQ(e.blob, sha_of_file(d / e.path)) << e.path;
            EXPECT_EQ(e.size, stdfs::file_size(d / e.path)) << e.path;
            EXPECT_TRUE(s().blobs().exists(e.blob)) << e.path;
            auto rec = blob_record(e.blob);
            ASSERT_TRUE(rec) << e.path;
            EXPECT_EQ(rec->state, BlobState::present);
            if (e.path.ends_with(".safetensors")) {
                EXPECT_EQ(rec->safetensors_header_len, header_len_of_file(d / e.path)) << e.path;
            }
            total += e.size;
        }
        EXPECT_EQ(paths, expected_paths_);
        EXPECT_EQ(v.size, total);
        // Two identical config.json files share a blob.
        EXPECT_EQ(v.tree[4].blob, v.tree[6].blob);
    }
};

TEST_F(StoreDiffusersTest, FolderIsOneTreeModel) {
    const stdfs::path d = src_ / "sd-turbo";
    make(d);
    auto r = imp1(d);
    ASSERT_TRUE(r.ok()) << errors_of(r);
    ASSERT_EQ(r.items.size(), 1u);
    EXPECT_EQ(r.items[0].model_key, "diffusers/sd-turbo");
    EXPECT_EQ(r.items[0].files, expected_paths_.size());
    EXPECT_EQ(r.items[0].outcome, Outcome::added);
    check_tree(d, "diffusers/sd-turbo");
    EXPECT_EQ(blob_files().size(), expected_paths_.size() - 1);  // one duplicate

    // Again, with a trailing slash: the same model, unchanged.
    auto again = imp1(stdfs::path(d.string() + "/"));
    ASSERT_TRUE(again.ok()) << errors_of(again);
    ASSERT_EQ(again.items.size(), 1u);
    EXPECT_EQ(again.items[0].model_key, "diffusers/sd-turbo");
    EXPECT_EQ(again.items[0].outcome, Outcome::unchanged);
}

TEST_F(StoreDiffusersTest, FolderInsideAWalk) {
    const stdfs::path models = src_ / "models";
    make(models / "diffusers" / "sd-turbo");
    st(models / "loras" / "l.safetensors", mt::kohya_lora(9));
    auto r = imp1(models);
    ASSERT_TRUE(r.ok()) << errors_of(r);
    EXPECT_EQ(keys_of(r), (std::set<std::string>{"diffusers/sd-turbo", "lora/l.safetensors"}));
    check_tree(models / "diffusers" / "sd-turbo", "diffusers/sd-turbo");
    // The component folders were not walked as models of their own ("vae/...").
    EXPECT_FALSE(model("vae/diffusion_pytorch_model"));
}

TEST_F(StoreDiffusersTest, ChangedFileMakesANewVersion) {
    const stdfs::path d = src_ / "sd-turbo";
    make(d);
    ASSERT_TRUE(imp1(d).ok());
    mt::write_text_file(d / "scheduler" / "scheduler_config.json", R"({"steps": 1})");
    auto r = imp1(d);
    ASSERT_TRUE(r.ok()) << errors_of(r);
    EXPECT_EQ(r.items[0].outcome, Outcome::new_version);
    auto m = model("diffusers/sd-turbo");
    ASSERT_TRUE(m);
    ASSERT_EQ(m->versions.size(), 2u);
    EXPECT_EQ(m->current, 1u);
    EXPECT_EQ(m->versions[1].tree.size(), expected_paths_.size());
}

// ---- Import: --move ------------------------------------------------------------------------

// Whatever a move import reports, the user's bytes must be somewhere they can be found: back at
// the original path, or stored and catalogued.
void expect_bytes_safe(Store& s, const stdfs::path& origin, const std::string& bytes,
                       const Sha256& h) {
    const bool at_origin = stdfs::exists(origin) && mt::read_file(origin) == bytes;
    auto rec = s.catalog().read().get_blob(h);
    const bool stored = rec && rec->state == BlobState::present && s.blobs().exists(h) &&
                        mt::read_file(s.blobs().path_of(h)) == bytes && !s.models_using(h).empty();
    EXPECT_TRUE(at_origin || stored)
        << origin << " is neither at its place nor in the store; staging holds: " << [&] {
               std::string out;
               for (const auto& p : files_under(s.root() / "staging")) out += p.string() + " ";
               return out;
           }();
}

TEST_F(StoreTest, MoveOnSameFilesystem) {
    const stdfs::path p = st(src_ / "loras" / "moved.safetensors", mt::kohya_lora(1));
    const std::string bytes = mt::read_file(p);
    const Sha256 h = sha_of_file(p);
    ImportOptions o;
    o.move = true;
    auto r = imp1(p, o);
    expect_bytes_safe(s(), p, bytes, h);
    ASSERT_EQ(r.items.size(), 1u);
    EXPECT_EQ(r.items[0].outcome, Outcome::added) << r.items[0].error;
    EXPECT_EQ(r.items[0].sha256, h);
    EXPECT_FALSE(stdfs::exists(p)) << "the source is still there";
    ASSERT_TRUE(s().blobs().exists(h));
    EXPECT_EQ(mt::read_file(s().blobs().path_of(h)), bytes);
    auto rec = blob_record(h);
    ASSERT_TRUE(rec);
    EXPECT_EQ(rec->state, BlobState::present);
    EXPECT_TRUE(model("lora/moved.safetensors"));
    EXPECT_TRUE(staging_files().empty());
}

TEST_F(StoreTest, MoveOfADuplicate) {
    const stdfs::path first = rnd(src_ / "first.bin", 20000, 1);
    const stdfs::path dup = src_ / "dup.bin";
    stdfs::copy_file(first, dup);
    const std::string bytes = mt::read_file(first);
    const Sha256 h = sha_of_file(first);
    ASSERT_TRUE(imp1(first).ok());

    ImportOptions o;
    o.move = true;
    auto r = imp1(dup, o);
    expect_bytes_safe(s(), dup, bytes, h);
    ASSERT_EQ(r.items.size(), 1u);
    EXPECT_EQ(r.items[0].outcome, Outcome::added) << r.items[0].error;
    EXPECT_FALSE(r.items[0].new_blob);
    EXPECT_FALSE(stdfs::exists(dup));
    EXPECT_TRUE(stdfs::exists(first));
    EXPECT_EQ(blob_files().size(), 1u);
    EXPECT_EQ(mt::read_file(s().blobs().path_of(h)), bytes);
    EXPECT_TRUE(model("other/dup.bin"));
    EXPECT_TRUE(staging_files().empty());
}

TEST_F(StoreTest, MoveThatFailsToCommitPutsTheFileBack) {
    const stdfs::path p = rnd(src_ / "foo.bin", 3000, 1);
    ASSERT_TRUE(imp1(p).ok());
    rnd(p, 3000, 2);  // new content, same name
    const std::string bytes = mt::read_file(p);
    ImportOptions o;
    o.move = true;
    o.version = "v1";  // taken by the old content: the commit is refused
    auto r = imp1(p, o);
    ASSERT_EQ(r.items.size(), 1u);
    EXPECT_EQ(r.items[0].outcome, Outcome::failed);
    ASSERT_TRUE(stdfs::exists(p)) << "the user's file was not put back";
    EXPECT_EQ(mt::read_file(p), bytes);
    EXPECT_TRUE(staging_files().empty());
    EXPECT_EQ(model("other/foo.bin")->versions.size(), 1u);
}

TEST_F(StoreTest, MoveOfADuplicateThatFailsToCommitPutsTheFileBack) {
    const stdfs::path a = rnd(src_ / "a.bin", 3000, 1);
    ASSERT_TRUE(imp1(a).ok());
    const stdfs::path foo = rnd(src_ / "x" / "foo.bin", 3000, 2);
    ASSERT_TRUE(imp1(foo).ok());
    stdfs::remove(foo);
    stdfs::copy_file(a, foo);  // foo now holds bytes the store has (as other/a)
    ImportOptions o;
    o.move = true;
    o.version = "v1";
    auto r = imp1(foo, o);
    EXPECT_EQ(r.items.at(0).outcome, Outcome::failed);
    ASSERT_TRUE(stdfs::exists(foo));
    EXPECT_EQ(mt::read_file(foo), mt::read_file(a));
    EXPECT_TRUE(staging_files().empty());
    EXPECT_EQ(blob_files().size(), 2u);
}

TEST_F(StoreTest, MoveOfAMalformedFileLeavesItInPlace) {
    stdfs::create_directories(src_);
    mt::write_file(src_ / "bad.safetensors", "garbage, not a header");
    ImportOptions o;
    o.move = true;
    auto r = imp1(src_ / "bad.safetensors", o);
    EXPECT_EQ(r.items.at(0).outcome, Outcome::failed);
    EXPECT_EQ(mt::read_file(src_ / "bad.safetensors"), "garbage, not a header");
    EXPECT_TRUE(staging_files().empty());
    EXPECT_TRUE(blob_files().empty());
}

TEST_F(StoreTest, MoveOfADiffusersFolder) {
    const stdfs::path d = src_ / "pipe";
    mt::write_text_file(d / "model_index.json", "{}");
    mt::write_text_file(d / "unet" / "config.json", "{\"x\": 1}");
    mt::write_text_file(d / "vae" / "config.json", "{\"x\": 1}");  // a duplicate inside the tree
    st(d / "vae" / "diffusion_pytorch_model.safetensors", mt::vae(1));
    std::map<std::string, std::string> before;
    for (const auto& f : files_under(d))
        before[f.lexically_relative(d).string()] = mt::read_file(f);
    ImportOptions o;
    o.move = true;
    auto r = imp1(d, o);
    ASSERT_TRUE(r.ok()) << errors_of(r);
    EXPECT_TRUE(files_under(d).empty()) << "moved files left behind";
    auto m = model("diffusers/pipe");
    ASSERT_TRUE(m);
    ASSERT_EQ(m->current_version().tree.size(), before.size());
    for (const auto& e : m->current_version().tree)
        EXPECT_EQ(mt::read_file(s().blobs().path_of(e.blob)), before.at(e.path)) << e.path;
    EXPECT_EQ(blob_files().size(), before.size() - 1);
    EXPECT_TRUE(staging_files().empty());
}

TEST_F(StoreTest, ManyFilesForOneModelInOneImportLoseNoVersion) {
    // Files are committed by whichever worker finishes them; each commit must see the others.
    std::vector<stdfs::path> paths;
    std::set<std::string> hashes;
    for (int i = 0; i < 8; ++i) {
        paths.push_back(rnd(src_ / ("d" + std::to_string(i)) / "same-name.bin", 2000 + i, 100 + i));
        hashes.insert(mt::sha256_hex_of_file(paths.back()));
    }
    ImportOptions o;
    o.jobs = 8;
    auto r = imp(paths, o);
    ASSERT_TRUE(r.ok()) << errors_of(r);
    std::multiset<Outcome> outcomes;
    std::set<std::string> labels;
    for (const auto& it : r.items) {
        outcomes.insert(it.outcome);
        labels.insert(it.label);
    }
    EXPECT_EQ(outcomes.count(Outcome::added), 1u);
    EXPECT_EQ(outcomes.count(Outcome::new_version), 7u);
    EXPECT_EQ(labels, (std::set<std::string>{"v1", "v2", "v3", "v4", "v5", "v6", "v7", "v8"}));
    auto m = model("other/same-name.bin");
    ASSERT_TRUE(m);
    ASSERT_EQ(m->versions.size(), 8u);
    std::set<std::string> stored;
    for (const auto& v : m->versions) stored.insert(v.blob->hex());
    EXPECT_EQ(stored, hashes);
}

TEST_F(StoreTest, SameContentUnderOneNameFromManyFoldersIsOneVersion) {
    rnd(src_ / "d0" / "x.bin", 5000, 1);
    std::vector<stdfs::path> paths{src_ / "d0" / "x.bin"};
    for (int i = 1; i < 6; ++i) {
        paths.push_back(src_ / ("d" + std::to_string(i)) / "x.bin");
        stdfs::create_directories(paths.back().parent_path());
        stdfs::copy_file(paths[0], paths.back());
    }
    ImportOptions o;
    o.jobs = 6;
    auto r = imp(paths, o);
    ASSERT_TRUE(r.ok()) << errors_of(r);
    std::size_t added = 0, unchanged = 0, new_blob = 0;
    for (const auto& it : r.items) {
        added += it.outcome == Outcome::added;
        unchanged += it.outcome == Outcome::unchanged;
        new_blob += it.new_blob;
    }
    EXPECT_EQ(added, 1u);
    EXPECT_EQ(unchanged, 5u);
    EXPECT_EQ(new_blob, 1u);
    EXPECT_EQ(model("other/x.bin")->versions.size(), 1u);
    EXPECT_EQ(blob_files().size(), 1u);
    EXPECT_TRUE(staging_files().empty());
}

TEST_F(StoreTest, MoveAcrossFilesystems) {
    struct stat shm, store;
    if (::stat("/dev/shm", &shm) != 0 || ::stat(root_.c_str(), &store) != 0 ||
        shm.st_dev == store.st_dev || ::access("/dev/shm", W_OK) != 0)
        GTEST_SKIP() << "needs a writable /dev/shm on another filesystem";
    const char* old_tmpdir = std::getenv("TMPDIR");
    const std::optional<std::string> saved =
        old_tmpdir ? std::optional<std::string>(old_tmpdir) : std::nullopt;
    ::setenv("TMPDIR", "/dev/shm", 1);
    mt::TempDir far("modelfs-store-xfs");  // on the other filesystem
    if (saved)
        ::setenv("TMPDIR", saved->c_str(), 1);
    else
        ::unsetenv("TMPDIR");
    const stdfs::path dir = far.path();
    ASSERT_TRUE(dir.string().starts_with("/dev/shm/"));
    const stdfs::path p = rnd(dir / "far.bin", 50000, 3);
    const std::string bytes = mt::read_file(p);
    const Sha256 h = sha_of_file(p);

    ImportOptions o;
    o.move = true;
    auto r = imp1(p, o);
    expect_bytes_safe(s(), p, bytes, h);
    EXPECT_EQ(r.items.at(0).outcome, Outcome::added) << r.items[0].error;
    EXPECT_FALSE(stdfs::exists(p));
    EXPECT_EQ(mt::read_file(s().blobs().path_of(h)), bytes);
    EXPECT_TRUE(staging_files().empty());
}

// ---- resolve -------------------------------------------------------------------------------

TEST_F(StoreTest, ResolveByKeyNameHashPrefixAndPath) {
    const stdfs::path lora = st(src_ / "loras" / "foo.safetensors", mt::kohya_lora(1));
    const stdfs::path ckpt = st(src_ / "checkpoints" / "foo.safetensors", mt::sd15_checkpoint(2));
    const stdfs::path vae = st(src_ / "vae" / "unique-vae-name.safetensors", mt::vae(3));
    ASSERT_TRUE(imp({lora, ckpt, vae}).ok());
    const Sha256 hv = sha_of_file(vae);

    // A key or name without its extension names the one model it is the stem of.
    auto by_key = s().resolve("lora/foo");
    ASSERT_TRUE(by_key.model);
    EXPECT_EQ(by_key.model->key(), "lora/foo.safetensors");
    EXPECT_EQ(s().resolve("lora/foo.safetensors").model->key(), "lora/foo.safetensors");
    EXPECT_FALSE(by_key.blob);

    auto by_name = s().resolve("unique-vae-name");
    ASSERT_TRUE(by_name.model);
    EXPECT_EQ(by_name.model->key(), "vae/unique-vae-name.safetensors");

    try {
        s().resolve("foo");
        ADD_FAILURE() << "ambiguous name resolved";
    } catch (const StoreError& e) {
        EXPECT_EQ(e.kind(), ErrorKind::conflict);
        EXPECT_TRUE(contains(e.what(), "lora/foo")) << e.what();
        EXPECT_TRUE(contains(e.what(), "checkpoint/foo")) << e.what();
    }

    auto full = s().resolve(hv.hex());
    EXPECT_FALSE(full.model);
    EXPECT_EQ(full.blob, hv);
    std::string upper = hv.hex();
    for (auto& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    EXPECT_EQ(s().resolve(upper).blob, hv);
    EXPECT_EQ(s().resolve(hv.hex().substr(0, 10)).blob, hv);  // AutoV2-length prefix

    // A prefix must have 4+ digits: with 3, nothing (unless a model is called that).
    EXPECT_THROW(s().resolve(hv.hex().substr(0, 3)), StoreError);

    auto in_store = s().resolve(vae.string());
    EXPECT_EQ(in_store.blob, hv);
    EXPECT_EQ(in_store.path, stdfs::absolute(vae));
    EXPECT_TRUE(in_store.in_store);
    EXPECT_FALSE(in_store.model);

    const stdfs::path outside = rnd(src_ / "never-imported.bin", 777, 4);
    auto not_stored = s().resolve(outside.string());
    EXPECT_EQ(not_stored.blob, sha_of_file(outside));
    EXPECT_TRUE(not_stored.path);
    EXPECT_FALSE(not_stored.in_store);

    try {
        s().resolve("no-such-model-anywhere");
        ADD_FAILURE() << "unknown query resolved";
    } catch (const StoreError& e) {
        EXPECT_EQ(e.kind(), ErrorKind::not_found);
        EXPECT_TRUE(contains(e.what(), "no-such-model-anywhere")) << e.what();
    }
    // A well-formed hash nobody stored.
    try {
        s().resolve(sha256_of("not stored").hex());
        ADD_FAILURE();
    } catch (const StoreError& e) {
        EXPECT_EQ(e.kind(), ErrorKind::not_found);
    }
}

TEST_F(StoreTest, ResolveAmbiguousHashPrefix) {
    // Two contents whose SHA-256 share the first four hex digits (a birthday search: fast).
    std::map<std::string, std::string> by_prefix;
    std::string a, b;
    for (int i = 0; a.empty(); ++i) {
        std::string content = "content " + std::to_string(i);
        auto [it, fresh] = by_prefix.emplace(sha256_of(content).hex().substr(0, 4), content);
        if (!fresh) {
            a = it->second;
            b = content;
        }
    }
    mt::write_text_file(src_ / "a.bin", a);
    mt::write_text_file(src_ / "b.bin", b);
    ASSERT_TRUE(imp({src_ / "a.bin", src_ / "b.bin"}).ok());
    const std::string ha = sha256_of(a).hex(), hb = sha256_of(b).hex();
    std::size_t common = 0;
    while (ha[common] == hb[common]) ++common;
    ASSERT_GE(common, 4u);

    try {
        s().resolve(ha.substr(0, 4));
        ADD_FAILURE() << "ambiguous prefix resolved";
    } catch (const StoreError& e) {
        EXPECT_EQ(e.kind(), ErrorKind::conflict);
        EXPECT_TRUE(contains(e.what(), ha)) << e.what();
        EXPECT_TRUE(contains(e.what(), hb)) << e.what();
    }
    EXPECT_EQ(s().resolve(ha.substr(0, common + 1)).blob->hex(), ha);
    EXPECT_EQ(s().resolve(hb.substr(0, common + 1)).blob->hex(), hb);
}

// ---- AutoV3 and headers --------------------------------------------------------------------

TEST_F(StoreTest, AutoV3OfSafetensorsBlobIsComputedThenCached) {
    auto spec = mt::sdxl_checkpoint(7);
    mt::grow_to(spec, (4u << 20) + 100);  // more than one read chunk after the header
    const stdfs::path p = st(src_ / "checkpoints" / "big.safetensors", spec);
    ASSERT_TRUE(imp1(p).ok());
    const Sha256 h = sha_of_file(p);
    ASSERT_FALSE(blob_record(h)->autov3);

    Progress progress;
    auto v3 = s().autov3(h, &progress);
    ASSERT_TRUE(v3);
    EXPECT_EQ(v3->hex(), autov3_of_file(p));
    EXPECT_NE(*v3, h);
    const std::uint64_t data = stdfs::file_size(p) - 8 - header_len_of_file(p);
    EXPECT_EQ(progress.done_bytes.load(), data);
    EXPECT_EQ(progress.total_bytes.load(), data);

    auto rec = blob_record(h);
    ASSERT_TRUE(rec);
    EXPECT_EQ(rec->autov3, v3);
    // Kept across a reopen, and served from the record without reading the blob.
    reopen();
    EXPECT_EQ(blob_record(h)->autov3, v3);
    Progress second;
    EXPECT_EQ(s().autov3(h, &second), v3);
    EXPECT_EQ(second.done_bytes.load(), 0u);
}

TEST_F(StoreTest, AutoV3OfOtherFilesIsNullopt) {
    const stdfs::path bin = rnd(src_ / "x.bin", 1000, 1);
    ASSERT_TRUE(imp1(bin).ok());
    EXPECT_FALSE(s().autov3(sha_of_file(bin)));
    EXPECT_FALSE(s().autov3(sha256_of("never stored")));
    EXPECT_FALSE(s().safetensors_info(sha_of_file(bin)));
}

TEST_F(StoreTest, SafetensorsInfoOfStoredBlob) {
    const auto spec = mt::kohya_lora(3);
    const stdfs::path p = st(src_ / "loras" / "l.safetensors", spec);
    ASSERT_TRUE(imp1(p).ok());
    auto info = s().safetensors_info(sha_of_file(p));
    ASSERT_TRUE(info);
    EXPECT_EQ(info->tensor_count, spec.tensors.size());
    EXPECT_EQ(info->header_len, header_len_of_file(p));
}

// ---- verify --------------------------------------------------------------------------------

class StoreMaintenanceTest : public StoreTest {
  protected:
    void SetUp() override {
        StoreTest::SetUp();
        auto r = imp({st(src_ / "loras" / "a.safetensors", mt::kohya_lora(1)),
                      rnd(src_ / "b.bin", (4u << 20) + 10, 2), rnd(src_ / "c.bin", 1000, 3)});
        ASSERT_TRUE(r.ok()) << errors_of(r);
        a_ = sha_of_file(src_ / "loras" / "a.safetensors");
        b_ = sha_of_file(src_ / "b.bin");
        c_ = sha_of_file(src_ / "c.bin");
        total_ = stdfs::file_size(src_ / "loras" / "a.safetensors") + (4u << 20) + 10 + 1000;
    }
    static std::vector<std::string> whats(const VerifyReport& r) {
        std::vector<std::string> out;
        for (const auto& p : r.problems) out.push_back(p.what);
        return out;
    }
    // Puts a blob file in blobs/ with a catalog record but no model.
    Sha256 unreferenced_blob(const std::string& content, BlobState state = BlobState::present) {
        mt::write_text_file(src_ / "unref", content);
        UniqueFd fd(::open((src_ / "unref").c_str(), O_RDONLY | O_CLOEXEC));
        Ingested in = s().blobs().ingest_copy(fd.get(), "unref", nullptr);
        BlobRecord rec;
        rec.size = in.digests.size;
        rec.state = state;
        rec.xxh128 = in.digests.xxh128;
        auto t = s().catalog().write();
        t.put_blob(in.digests.sha256, rec);
        t.commit();
        return in.digests.sha256;
    }
    // A blob file with no record at all.
    Sha256 orphan_file(const std::string& content) {
        mt::write_text_file(src_ / "orphan", content);
        UniqueFd fd(::open((src_ / "orphan").c_str(), O_RDONLY | O_CLOEXEC));
        return s().blobs().ingest_copy(fd.get(), "orphan", nullptr).digests.sha256;
    }
    Sha256 a_, b_, c_;
    std::uint64_t total_ = 0;
};

TEST_F(StoreMaintenanceTest, VerifyCleanStore) {
    for (bool fast : {false, true}) {
        Progress progress;
        auto r = s().verify(fast, 2, &progress);
        EXPECT_TRUE(r.problems.empty()) << fast;
        EXPECT_TRUE(r.notes.empty()) << fast;
        EXPECT_EQ(r.blobs_checked, 3u);
        EXPECT_EQ(r.bytes_checked, total_);
        EXPECT_EQ(progress.total_bytes.load(), total_);
        EXPECT_EQ(progress.done_bytes.load(), total_);
        EXPECT_EQ(progress.total_items.load(), 3u);
        EXPECT_EQ(progress.done_items.load(), 3u);
    }
}

TEST_F(StoreMaintenanceTest, FullVerifyQuarantinesACorruptBlob) {
    const stdfs::path blob = s().blobs().path_of(b_);
    const std::string original = mt::read_file(src_ / "b.bin");
    flip_byte(blob, (4u << 20) + 3);  // in the second chunk
    ASSERT_EQ(stdfs::file_size(blob), original.size());

    auto r = s().verify(false, 1);
    ASSERT_EQ(whats(r), std::vector<std::string>{"corrupt"});
    EXPECT_EQ(r.problems[0].blob, b_);
    EXPECT_TRUE(contains(r.problems[0].detail, b_.hex())) << r.problems[0].detail;
    EXPECT_TRUE(contains(r.problems[0].detail, "quarantine")) << r.problems[0].detail;
    EXPECT_FALSE(stdfs::exists(blob));
    auto q = quarantine_files();
    ASSERT_EQ(q.size(), 1u);
    EXPECT_TRUE(q[0].filename().string().starts_with(b_.hex() + "."));
    EXPECT_EQ(stdfs::file_size(q[0]), original.size());
    EXPECT_NE(mt::read_file(q[0]), original);
    EXPECT_EQ(blob_record(b_)->state, BlobState::quarantined);
    // The others are untouched.
    EXPECT_EQ(blob_record(a_)->state, BlobState::present);
    EXPECT_TRUE(s().blobs().exists(a_));

    // Re-importing the model brings the good bytes back.
    auto again = imp1(src_ / "b.bin");
    ASSERT_TRUE(again.ok()) << errors_of(again);
    EXPECT_EQ(blob_record(b_)->state, BlobState::present);
    EXPECT_EQ(mt::read_file(blob), original);
    EXPECT_TRUE(s().verify(false).problems.empty());
}

TEST_F(StoreMaintenanceTest, FastVerifyAlsoCatchesCorruption) {
    const stdfs::path blob = s().blobs().path_of(c_);
    flip_byte(blob, 0);
    auto r = s().verify(true, 2);
    ASSERT_EQ(whats(r), std::vector<std::string>{"corrupt"});
    EXPECT_EQ(r.problems[0].blob, c_);
    EXPECT_FALSE(stdfs::exists(blob));
    EXPECT_EQ(blob_record(c_)->state, BlobState::quarantined);
    EXPECT_EQ(quarantine_files().size(), 1u);
}

TEST_F(StoreMaintenanceTest, VerifyReportsWrongSize) {
    const stdfs::path blob = s().blobs().path_of(c_);
    stdfs::permissions(blob, stdfs::perms::owner_write, stdfs::perm_options::add);
    stdfs::resize_file(blob, 999);
    auto r = s().verify(true);
    ASSERT_EQ(r.problems.size(), 1u);
    EXPECT_TRUE(r.problems[0].what == "corrupt" || r.problems[0].what == "wrong size")
        << r.problems[0].what;
    EXPECT_EQ(r.problems[0].blob, c_);
    EXPECT_TRUE(contains(r.problems[0].detail, "999")) << r.problems[0].detail;
    EXPECT_FALSE(stdfs::exists(blob));
    EXPECT_EQ(blob_record(c_)->state, BlobState::quarantined);
}

TEST_F(StoreMaintenanceTest, VerifyReportsMissingBlob) {
    const stdfs::path blob = s().blobs().path_of(a_);
    stdfs::remove(blob);
    auto r = s().verify(false);
    ASSERT_EQ(whats(r), std::vector<std::string>{"missing"});
    EXPECT_EQ(r.problems[0].blob, a_);
    EXPECT_TRUE(contains(r.problems[0].detail, blob.string())) << r.problems[0].detail;
    EXPECT_EQ(r.blobs_checked, 2u);
}

TEST_F(StoreMaintenanceTest, VerifyReportsDanglingReferencesAndNotesOrphans) {
    Model m;
    m.category = Category::lora;
    m.name = "ghost";
    ModelVersion v;
    v.label = "v1";
    v.blob = sha256_of("no such blob");
    v.ext = ".safetensors";
    m.versions = {v};
    {
        auto t = s().catalog().write();
        t.put_model(m);
        t.commit();
    }
    const Sha256 orphan = orphan_file("orphan bytes");
    auto r = s().verify(false);
    ASSERT_EQ(whats(r), std::vector<std::string>{"dangling"});
    EXPECT_EQ(r.problems[0].blob, sha256_of("no such blob"));
    EXPECT_TRUE(contains(r.problems[0].detail, "lora/ghost")) << r.problems[0].detail;
    ASSERT_EQ(r.notes.size(), 1u);
    EXPECT_TRUE(contains(r.notes[0], s().blobs().path_of(orphan).string())) << r.notes[0];
    EXPECT_TRUE(s().blobs().exists(orphan)) << "verify must not delete anything";
}

TEST_F(StoreMaintenanceTest, VerifyRebuildsExtentRecordsAndReportsOnesThatDoNotMatch) {
    // A composed blob (tensor_split.h) is checked by rebuilding it from its extents. One whose
    // extents give other bytes is reported corrupt; there is no file of its own to quarantine, so
    // nothing moves and its sources (checked as blobs of their own) stay.
    const Sha256 x = sha256_of("made of extents");
    {
        BlobRecord rec;
        rec.size = 10;
        rec.state = BlobState::present;
        rec.extents = {{a_, 0, 10}};
        auto t = s().catalog().write();
        t.put_blob(x, rec);
        t.commit();
    }
    auto r = s().verify(false);
    ASSERT_EQ(whats(r), std::vector<std::string>{"corrupt"});
    EXPECT_EQ(r.problems[0].blob, x);
    EXPECT_NE(r.problems[0].detail.find("its extents rebuild to"), std::string::npos)
        << r.problems[0].detail;
    EXPECT_EQ(blob_record(x)->state, BlobState::present);
    EXPECT_TRUE(quarantine_files().empty());
    EXPECT_EQ(r.blobs_checked, 4u);  // the three files, and the composed blob rebuilt

    // Extents that do rebuild it: no problem.
    const std::string bytes = mt::read_file(s().blobs().path_of(a_)).substr(0, 10);
    const Sha256 y = sha256_of(bytes);
    {
        auto t = s().catalog().write();
        t.del_blob(x);
        BlobRecord rec;
        rec.size = 10;
        rec.state = BlobState::present;
        rec.extents = {{a_, 0, 4}, {a_, 4, 6}};
        t.put_blob(y, rec);
        t.commit();
    }
    auto ok = s().verify(false);
    EXPECT_TRUE(ok.problems.empty()) << ok.problems[0].detail;
}

// ---- gc ------------------------------------------------------------------------------------

TEST_F(StoreMaintenanceTest, GcRemovesOnlyUnreferencedBlobsAndOrphans) {
    // b gets a second version: both versions stay referenced.
    rnd(src_ / "b.bin", 3000, 20);
    const Sha256 b2 = sha_of_file(src_ / "b.bin");
    ASSERT_TRUE(imp1(src_ / "b.bin").ok());

    const Sha256 unref = unreferenced_blob("nobody uses me");
    const Sha256 remote = sha256_of("remote bytes");
    {
        BlobRecord rec;
        rec.size = 12345;
        rec.state = BlobState::remote;
        auto t = s().catalog().write();
        t.put_blob(remote, rec);
        t.commit();
    }
    const Sha256 quarantined = unreferenced_blob("suspect", BlobState::quarantined);
    const Sha256 orphan = orphan_file("stray file");
    const stdfs::path misnamed = root_ / "blobs" / "sha256" / "zz" / "not-a-hash";
    mt::write_text_file(misnamed, "junk!");
    mt::write_text_file(root_ / "staging" / "1-dead.tmp", "abandoned");
    mt::write_text_file(root_ / "staging" / "1-x.journal", "{}");

    auto check_report = [&](const GcReport& r) {
        std::map<std::string, std::uint64_t> removed;
        for (const auto& [h, size] : r.blobs) removed[h.hex()] = size;
        EXPECT_EQ(removed,
                  (std::map<std::string, std::uint64_t>{
                      {unref.hex(), std::string("nobody uses me").size()}, {remote.hex(), 12345}}));
        EXPECT_EQ(std::set<stdfs::path>(r.orphan_files.begin(), r.orphan_files.end()),
                  (std::set<stdfs::path>{s().blobs().path_of(orphan), misnamed}));
        // Bytes actually freed: present blobs and orphan files, not remote records.
        EXPECT_EQ(r.bytes, std::string("nobody uses me").size() + std::string("stray file").size() +
                               std::string("junk!").size());
    };

    auto dry = s().gc(/*dry_run=*/true);
    check_report(dry);
    EXPECT_EQ(dry.staging_removed, 0u);
    EXPECT_TRUE(s().blobs().exists(unref));
    EXPECT_TRUE(blob_record(unref));
    EXPECT_TRUE(blob_record(remote));
    EXPECT_TRUE(s().blobs().exists(orphan));
    EXPECT_TRUE(stdfs::exists(misnamed));
    EXPECT_TRUE(stdfs::exists(root_ / "staging" / "1-dead.tmp"));

    auto real = s().gc(false);
    check_report(real);
    EXPECT_EQ(real.staging_removed, 1u);
    EXPECT_FALSE(s().blobs().exists(unref));
    EXPECT_FALSE(blob_record(unref));
    EXPECT_FALSE(blob_record(remote));
    EXPECT_FALSE(s().blobs().exists(orphan));
    EXPECT_FALSE(stdfs::exists(misnamed));
    EXPECT_FALSE(stdfs::exists(root_ / "staging" / "1-dead.tmp"));
    EXPECT_TRUE(stdfs::exists(root_ / "staging" / "1-x.journal")) << "journals are recovery's";

    // Referenced blobs (every version) and quarantined ones stay.
    for (const Sha256& h : {a_, b_, b2, c_}) {
        EXPECT_TRUE(s().blobs().exists(h)) << h.hex();
        EXPECT_EQ(blob_record(h)->state, BlobState::present) << h.hex();
    }
    EXPECT_TRUE(s().blobs().exists(quarantined));
    ASSERT_TRUE(blob_record(quarantined));
    EXPECT_EQ(blob_record(quarantined)->state, BlobState::quarantined);
    EXPECT_TRUE(s().verify(false).problems.empty());

    // Nothing left to do.
    auto again = s().gc(false);
    EXPECT_TRUE(again.blobs.empty());
    EXPECT_TRUE(again.orphan_files.empty());
    EXPECT_EQ(again.bytes, 0u);
}

TEST_F(StoreMaintenanceTest, GcLeavesQuarantinedEvidenceAlone) {
    flip_byte(s().blobs().path_of(c_), 10);
    ASSERT_EQ(whats(s().verify(false)), std::vector<std::string>{"corrupt"});
    const auto q = quarantine_files();
    ASSERT_EQ(q.size(), 1u);
    // Drop the model: the quarantined blob is now unreferenced too.
    {
        auto t = s().catalog().write();
        t.del_model("other/c");
        t.commit();
    }
    auto r = s().gc(false);
    EXPECT_TRUE(r.blobs.empty());
    EXPECT_EQ(quarantine_files(), q);
    EXPECT_EQ(blob_record(c_)->state, BlobState::quarantined);
}

// The catalog lost a record (verify calls that "dangling") but a model still uses the bytes: gc
// must not delete the only copy of a referenced blob because its record is missing.
TEST_F(StoreMaintenanceTest, GcNeverDeletesAReferencedBlobFile) {
    {
        auto t = s().catalog().write();
        t.del_blob(a_);
        t.commit();
    }
    auto dry = s().gc(true);
    auto real = s().gc(false);
    EXPECT_TRUE(s().blobs().exists(a_)) << "gc deleted the bytes of lora/a";
    EXPECT_TRUE(std::find(dry.orphan_files.begin(), dry.orphan_files.end(),
                          s().blobs().path_of(a_)) == dry.orphan_files.end());
}

// ---- stats ---------------------------------------------------------------------------------

TEST_F(StoreTest, StatsOfAKnownScenario) {
    // other/a and other/b: the same 1000 bytes. other/c: 300 bytes, then 500 bytes (v2).
    // diffusers/pipe: a 20-byte model_index.json and a copy of a's bytes.
    rnd(src_ / "a.bin", 1000, 1);
    stdfs::copy_file(src_ / "a.bin", src_ / "b.bin");
    rnd(src_ / "c.bin", 300, 2);
    ASSERT_TRUE(imp({src_ / "a.bin", src_ / "b.bin", src_ / "c.bin"}).ok());
    rnd(src_ / "c.bin", 500, 3);
    ASSERT_TRUE(imp1(src_ / "c.bin").ok());
    mt::write_text_file(src_ / "pipe" / "model_index.json", "{\"_class_name\": \"x\"}");
    ASSERT_EQ(stdfs::file_size(src_ / "pipe" / "model_index.json"), 20u);
    stdfs::create_directories(src_ / "pipe" / "unet");
    stdfs::copy_file(src_ / "a.bin", src_ / "pipe" / "unet" / "w.bin");
    auto r = imp1(src_ / "pipe");
    ASSERT_TRUE(r.ok()) << errors_of(r);

    StoreStats st = s().stats();
    EXPECT_EQ(st.models, 4u);
    EXPECT_EQ(st.versions, 5u);
    EXPECT_EQ(st.files, 6u);  // a, b, c v1, c v2, two in the tree
    EXPECT_EQ(st.blobs, 4u);  // a, c v1, c v2, model_index.json
    EXPECT_EQ(st.logical_bytes, 1000u + 1000u + 300u + 500u + 1020u);
    EXPECT_EQ(st.physical_bytes, 1000u + 300u + 500u + 20u);
    EXPECT_EQ(st.saved(), 2000u);
    ASSERT_EQ(st.per_category.size(), 2u);
    EXPECT_EQ(st.per_category[Category::other].models, 3u);
    // Every version, as logical_bytes counts them (FORMAT.md "Saving"): the categories add up.
    EXPECT_EQ(st.per_category[Category::other].bytes, 1000u + 1000u + 300u + 500u);
    EXPECT_EQ(st.per_category[Category::diffusers].models, 1u);
    EXPECT_EQ(st.per_category[Category::diffusers].bytes, 1020u);
    EXPECT_EQ(st.per_category[Category::other].bytes + st.per_category[Category::diffusers].bytes,
              st.logical_bytes);

    // Physical bytes are what blobs/ really holds.
    std::uint64_t on_disk = 0;
    for (const auto& p : blob_files()) on_disk += stdfs::file_size(p);
    EXPECT_EQ(st.physical_bytes, on_disk);
}

TEST_F(StoreTest, StatsOfEmptyStore) {
    StoreStats st = s().stats();
    EXPECT_EQ(st.models, 0u);
    EXPECT_EQ(st.blobs, 0u);
    EXPECT_EQ(st.logical_bytes, 0u);
    EXPECT_EQ(st.physical_bytes, 0u);
    EXPECT_EQ(st.saved(), 0u);
    EXPECT_TRUE(st.per_category.empty());
}

// ---- Recovery of interrupted moves ---------------------------------------------------------

class StoreRecoveryTest : public StoreTest {
  protected:
    // What a move leaves in staging/ when the process dies after renaming the user's file in
    // (store/FORMAT.md): <x>.journal, one JSON object per line, and <x>.move holding the bytes.
    void crashed_move(const stdfs::path& origin, const std::string& bytes, const std::string& x,
                      std::optional<std::string> sha = std::nullopt, bool with_moved = true) {
        std::string text =
            nlohmann::json{{"origin", origin.string()}, {"moved", x + ".move"}}.dump() + "\n";
        if (sha) text += nlohmann::json{{"sha256", *sha}}.dump() + "\n";
        mt::write_text_file(journal_path(x), text);
        if (with_moved) {
            mt::write_text_file(root_ / "staging" / (x + ".move"), bytes);
            stdfs::permissions(root_ / "staging" / (x + ".move"), stdfs::perms::owner_read |
                                                                      stdfs::perms::group_read |
                                                                      stdfs::perms::others_read);
        }
    }
    stdfs::path journal_path(const std::string& x) { return root_ / "staging" / (x + ".journal"); }
};

TEST_F(StoreRecoveryTest, OpenPutsAMovedFileBack) {
    close();
    const stdfs::path origin = src_ / "loras" / "precious.safetensors";
    stdfs::create_directories(origin.parent_path());
    const std::string bytes = mt::safetensors_bytes(mt::kohya_lora(5));
    crashed_move(origin, bytes, "4242-deadbeef");
    reopen();
    ASSERT_TRUE(stdfs::exists(origin));
    EXPECT_EQ(mt::read_file(origin), bytes);
    EXPECT_TRUE(staging_files().empty());
    EXPECT_TRUE(blob_files().empty());
}

TEST_F(StoreRecoveryTest, OpenDoesNotOverwriteANewFileAtTheOrigin) {
    close();
    const stdfs::path origin = src_ / "x.bin";
    mt::write_text_file(origin, "the user put something new here");
    crashed_move(origin, "the old bytes", "1-a");
    reopen();
    EXPECT_EQ(mt::read_file(origin), "the user put something new here");
    const stdfs::path recovered = src_ / "x.bin.modelfs-recovered";
    ASSERT_TRUE(stdfs::exists(recovered));
    EXPECT_EQ(mt::read_file(recovered), "the old bytes");
    EXPECT_TRUE(staging_files().empty());
}

TEST_F(StoreRecoveryTest, PublishedButUncataloguedMoveIsCopiedBack) {
    // The crash came after the blob was published, before the catalog commit.
    const std::string bytes = "bytes that made it into blobs/";
    mt::write_text_file(src_ / "tmp", bytes);
    UniqueFd fd(::open((src_ / "tmp").c_str(), O_RDONLY | O_CLOEXEC));
    const Sha256 h = s().blobs().ingest_copy(fd.get(), "tmp", nullptr).digests.sha256;
    stdfs::remove(src_ / "tmp");
    close();
    const stdfs::path origin = src_ / "gone.bin";
    crashed_move(origin, "", "2-b", h.hex(), /*with_moved=*/false);
    reopen();
    ASSERT_TRUE(stdfs::exists(origin));
    EXPECT_EQ(mt::read_file(origin), bytes);
    EXPECT_TRUE(staging_files().empty());
}

TEST_F(StoreRecoveryTest, CataloguedMoveIsLeftDone) {
    // The crash came after the catalog commit: the move is complete, only the journal remains.
    const stdfs::path p = rnd(src_ / "done.bin", 500, 1);
    ASSERT_TRUE(imp1(p).ok());
    const Sha256 h = sha_of_file(p);
    const std::string source = model("other/done.bin")->current_version().source;
    stdfs::remove(p);
    close();
    crashed_move(source, "", "3-c", h.hex(), /*with_moved=*/false);
    reopen();
    EXPECT_FALSE(stdfs::exists(p)) << "a finished move was undone";
    EXPECT_TRUE(staging_files().empty());
    EXPECT_TRUE(s().blobs().exists(h));
}

TEST_F(StoreRecoveryTest, TornLastJournalLineIsIgnored) {
    close();
    const stdfs::path origin = src_ / "torn.bin";
    stdfs::create_directories(src_);
    crashed_move(origin, "bytes of torn.bin", "6-f");
    {
        std::ofstream out(journal_path("6-f"), std::ios::app);
        out << "{\"sha256\": \"abc";  // the kill came in the middle of this line
    }
    reopen();
    ASSERT_TRUE(stdfs::exists(origin));
    EXPECT_EQ(mt::read_file(origin), "bytes of torn.bin");
    EXPECT_TRUE(staging_files().empty());
}

TEST_F(StoreRecoveryTest, NothingToUndoWhenTheOriginIsThere) {
    // Killed after writing the journal, before the rename: the user's file never moved.
    close();
    const stdfs::path origin = rnd(src_ / "still-here.bin", 100, 1);
    const std::string bytes = mt::read_file(origin);
    crashed_move(origin, "", "7-g", std::nullopt, /*with_moved=*/false);
    reopen();
    EXPECT_EQ(mt::read_file(origin), bytes);
    EXPECT_TRUE(staging_files().empty());
}

TEST_F(StoreRecoveryTest, EmptyJournalIsDroppedOnlyWhenOld) {
    close();
    // Young and empty: maybe a writer between creating and locking it.
    mt::write_text_file(journal_path("5-young"), "");
    // Old and empty: the crash came before anything was written.
    mt::write_text_file(journal_path("5-old"), "");
    stdfs::last_write_time(journal_path("5-old"),
                           stdfs::file_time_type::clock::now() - std::chrono::minutes(10));
    reopen();
    EXPECT_EQ(staging_files(), std::vector<stdfs::path>{journal_path("5-young")});
}

// A damaged journal (it names an origin but no moved file, which the importer never writes) must
// not make recovery move something else, least of all staging/ itself, to the user's path.
TEST_F(StoreRecoveryTest, DamagedJournalWithoutMovedFileMovesNothing) {
    close();
    const stdfs::path origin = src_ / "lost.bin";
    stdfs::create_directories(src_);
    mt::write_text_file(journal_path("8-h"),
                        nlohmann::json{{"origin", origin.string()}}.dump() + "\n");
    reopen();
    EXPECT_TRUE(stdfs::is_directory(root_ / "staging")) << "staging/ was moved away";
    EXPECT_FALSE(stdfs::is_directory(origin)) << origin << " became a folder";
}

TEST_F(StoreRecoveryTest, LiveMoveIsNotTouched) {
    close();
    const stdfs::path origin = src_ / "busy.bin";
    BlobStore other_process(root_);
    StagingFile journal = other_process.make_staging(".journal");
    const stdfs::path moved = stdfs::path(journal.path()).replace_extension(".move");
    const std::string text =
        nlohmann::json{{"origin", origin.string()}, {"moved", moved.filename().string()}}.dump();
    ASSERT_EQ(::pwrite(journal.fd(), text.data(), text.size(), 0),
              static_cast<ssize_t>(text.size()));
    mt::write_text_file(moved, "in flight");
    StagingFile moved_lock = other_process.adopt_staging(moved);
    reopen();
    EXPECT_FALSE(stdfs::exists(origin));
    EXPECT_TRUE(stdfs::exists(journal.path()));
    EXPECT_TRUE(stdfs::exists(moved));
}

}  // namespace
}  // namespace modelfs

namespace modelfs {
namespace {

// Issue 16 finding 2: foo.safetensors and foo.pt are two models; "foo" alone is ambiguous.
TEST_F(StoreTest, AStemOfSeveralModelsIsAnErrorListingThem) {
    const stdfs::path a = st(src_ / "loras" / "foo.safetensors", mt::kohya_lora(1));
    const stdfs::path b = rnd(src_ / "loras" / "foo.pt", 1000, 7);
    ASSERT_TRUE(imp({a, b}).ok());
    EXPECT_TRUE(model("lora/foo.safetensors"));
    EXPECT_TRUE(model("lora/foo.pt"));
    EXPECT_EQ(model("lora/foo.pt")->versions.size(), 1u);
    EXPECT_EQ(s().resolve("foo.pt").model->key(), "lora/foo.pt");
    for (const char* q : {"foo", "lora/foo"}) {
        try {
            s().resolve(q);
            ADD_FAILURE() << "ambiguous stem '" << q << "' resolved";
        } catch (const StoreError& e) {
            EXPECT_EQ(e.kind(), ErrorKind::conflict);
            EXPECT_TRUE(contains(e.what(), "lora/foo.safetensors")) << e.what();
            EXPECT_TRUE(contains(e.what(), "lora/foo.pt")) << e.what();
            EXPECT_TRUE(contains(e.what(), "give the extension")) << e.what();
        }
    }
}

// Issue 17: a model's file name alone, with or without its extension, names it when one model in
// any subfolder has that file name; exact names and stems still come first.
TEST_F(StoreTest, AUniqueFileNameNamesTheModelInItsSubfolder) {
    st(src_ / "loras" / "set3" / "lora_0003.safetensors", mt::kohya_lora(1));
    st(src_ / "loras" / "set3" / "twin.safetensors", mt::kohya_lora(2));
    st(src_ / "loras" / "set4" / "twin.safetensors", mt::kohya_lora(3));
    st(src_ / "loras" / "set5" / "pair.safetensors", mt::kohya_lora(4));
    rnd(src_ / "loras" / "set5" / "pair.pt", 1000, 5);
    st(src_ / "loras" / "set6" / "top.safetensors", mt::kohya_lora(6));
    st(src_ / "loras" / "top.safetensors", mt::kohya_lora(7));
    auto r = imp1(src_ / "loras");
    ASSERT_TRUE(r.ok()) << errors_of(r);
    ASSERT_TRUE(model("lora/set3/lora_0003.safetensors"));

    for (const char* q : {"lora_0003", "lora_0003.safetensors", "set3/lora_0003"}) {
        auto hit = s().resolve(q);
        ASSERT_TRUE(hit.model) << q;
        EXPECT_EQ(hit.model->key(), "lora/set3/lora_0003.safetensors") << q;
    }
    EXPECT_EQ(s().resolve("pair.pt").model->key(), "lora/set5/pair.pt");
    // An exact name (and the stem of one) wins over a file name deeper down.
    EXPECT_EQ(s().resolve("top.safetensors").model->key(), "lora/top.safetensors");
    EXPECT_EQ(s().resolve("top").model->key(), "lora/top.safetensors");
    // A file name of several models lists them all.
    for (const char* q : {"twin", "twin.safetensors", "pair"}) {
        try {
            s().resolve(q);
            ADD_FAILURE() << "ambiguous file name '" << q << "' resolved";
        } catch (const StoreError& e) {
            EXPECT_EQ(e.kind(), ErrorKind::conflict) << q;
            const bool twin = std::string_view(q).starts_with("twin");
            EXPECT_TRUE(contains(
                e.what(), twin ? "lora/set3/twin.safetensors" : "lora/set5/pair.safetensors"))
                << e.what();
            EXPECT_TRUE(
                contains(e.what(), twin ? "lora/set4/twin.safetensors" : "lora/set5/pair.pt"))
                << e.what();
        }
    }
    // Only a bare file name: a path's tail is no name.
    EXPECT_THROW(s().resolve("set3/lora_0003.sft"), StoreError);
    EXPECT_THROW(s().resolve("lora_0003.pt"), StoreError);
}

}  // namespace
}  // namespace modelfs
