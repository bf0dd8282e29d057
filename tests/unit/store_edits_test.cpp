// Store edits a mount makes (store/src/edits.cpp): commit_file of models and sidecars (hard-linked
// into blobs/ by BlobStore::publish_link), remove_model, remove_sidecar, rename_model,
// set_shown_attrs, and the per-category change times folder mtimes derive from. Real stores in
// temp dirs; the committed files are written inside the store's root, as a mount writes them into
// STORE/views/.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "modelfs/store/catalog.h"
#include "modelfs/store/errors.h"
#include "modelfs/store/hash.h"
#include "modelfs/store/store.h"
#include "modelfs/store/unique_fd.h"
#include "support/safetensors_writer.h"
#include "support/test_env.h"

namespace modelfs {
namespace {

namespace fs = std::filesystem;
namespace mt = modelfs::testing;

std::vector<fs::path> files_under(const fs::path& dir) {
    std::vector<fs::path> out;
    std::error_code ec;
    for (fs::recursive_directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
        if (it->is_regular_file()) out.push_back(it->path());
    std::sort(out.begin(), out.end());
    return out;
}

Sha256 sha_of_file(const fs::path& p) {
    return *Sha256::from_hex(mt::sha256_hex_of_file(p));
}

Xxh128 xxh_of_file(const fs::path& p) {
    const std::string bytes = mt::read_file(p);
    Xxh128Hasher h;
    h.update(bytes.data(), bytes.size());
    return h.finish();
}

std::uint64_t header_len_of_file(const fs::path& p) {
    const std::string bytes = mt::read_file(p);
    std::uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = n << 8 | static_cast<unsigned char>(bytes.at(i));
    return n;
}

struct stat stat_of(const fs::path& p) {
    struct stat st{};
    EXPECT_EQ(::stat(p.c_str(), &st), 0) << p;
    return st;
}

std::int64_t now_s() {
    return std::chrono::duration_cast<std::chrono::seconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

std::vector<std::string> suffixes_of(const ModelVersion& v) {
    std::vector<std::string> out;
    for (const auto& s : v.sidecars) out.push_back(s.suffix);
    return out;
}

std::vector<std::string> labels_of(const Model& m) {
    std::vector<std::string> out;
    for (const auto& v : m.versions) out.push_back(v.label);
    return out;
}

class StoreEditsTest : public ::testing::Test {
  protected:
    void SetUp() override { store_.emplace(Store::init(root_)); }

    Store& s() { return *store_; }

    // A path in the store's views/ folder (same filesystem as blobs/).
    fs::path view(const std::string& rel) {
        fs::path p = root_ / "views" / rel;
        fs::create_directories(p.parent_path());
        return p;
    }
    fs::path st(const std::string& rel, const mt::SafetensorsSpec& spec) {
        fs::path p = view(rel);
        mt::write_safetensors(p, spec);
        return p;
    }
    fs::path rnd(const std::string& rel, std::uint64_t size, std::uint64_t seed) {
        fs::path p = view(rel);
        mt::write_random_file(p, size, seed);
        return p;
    }
    fs::path text(const std::string& rel, const std::string& content) {
        fs::path p = view(rel);
        mt::write_text_file(p, content);
        return p;
    }

    struct Commit {
        Category category = Category::lora;
        std::string name;
        std::string ext = ".safetensors";
        std::string sidecar;
        std::int64_t mtime = 0;
        std::uint32_t mode = 0;
        std::string source;
        bool keep_source = false;  // else unlinked after the commit, as the mount does
    };

    // Opens, hashes and commits `p` like the mount's ingester; the source is unlinked afterwards
    // unless asked not to (also when the commit throws, the source stays).
    FileCommitResult commit(const fs::path& p, const Commit& c) {
        UniqueFd fd(::open(p.c_str(), O_RDONLY | O_CLOEXEC));
        EXPECT_TRUE(fd) << p;
        FileCommit f;
        f.path = p;
        f.fd = fd.get();
        f.digests = digest_fd(fd.get());
        f.category = c.category;
        f.name = c.name;
        f.ext = c.ext;
        f.sidecar = c.sidecar;
        f.mtime = c.mtime;
        f.mode = c.mode;
        f.source = c.source;
        last_ = f.digests;
        FileCommitResult r = s().commit_file(f);
        if (!c.keep_source) fs::remove(p);
        return r;
    }
    FileCommitResult commit_model(const fs::path& p, Category cat, const std::string& name,
                                  const std::string& ext = ".safetensors") {
        Commit c;
        c.category = cat;
        c.name = name;
        c.ext = ext;
        return commit(p, c);
    }
    FileCommitResult commit_sidecar(const fs::path& p, Category cat, const std::string& name,
                                    const std::string& suffix) {
        Commit c;
        c.category = cat;
        c.name = name;
        c.sidecar = suffix;
        return commit(p, c);
    }

    std::optional<Model> model(const std::string& key) {
        return s().catalog().read().get_model(key);
    }
    std::optional<BlobRecord> blob_record(const Sha256& h) {
        return s().catalog().read().get_blob(h);
    }
    std::map<std::string, Model> all_models() {
        std::map<std::string, Model> out;
        s().catalog().read().for_each_model([&](const Model& m) { out.emplace(m.key(), m); });
        return out;
    }
    std::vector<Sha256> all_blob_records() {
        std::vector<Sha256> out;
        s().catalog().read().for_each_blob(
            [&](const Sha256& h, const BlobRecord&) { out.push_back(h); });
        return out;
    }
    std::vector<fs::path> blob_files() { return files_under(root_ / "blobs"); }
    std::int64_t changed(Category c) { return s().catalog().read().category_changed_ns(c); }
    bool blob_on_disk(const Sha256& h) { return fs::exists(s().blobs().path_of(h)); }

    mt::TempDir tmp_{"modelfs-edits"};
    fs::path root_ = tmp_ / "store";
    std::optional<Store> store_;
    FileDigests last_;  // digests of the last committed file
};

// ---- commit_file: models ---------------------------------------------------------------------

TEST_F(StoreEditsTest, CommitOfANewModelCreatesV1AndHardLinksTheFileAsItsBlob) {
    fs::path p = st("comfyui/loras/x.safetensors", mt::kohya_lora(1));
    const Sha256 sha = sha_of_file(p);
    const std::uint64_t size = fs::file_size(p);
    const struct stat before = stat_of(p);
    ASSERT_EQ(before.st_nlink, 1u);

    const std::int64_t t0 = now_s();
    Commit c;
    c.category = Category::lora;
    c.name = "x";
    c.mtime = 1'700'000'000;
    c.mode = 0600;
    c.source = "mount:comfyui/loras/x.safetensors";
    c.keep_source = true;
    FileCommitResult r = commit(p, c);
    const std::int64_t t1 = now_s();

    EXPECT_TRUE(r.new_blob);
    EXPECT_TRUE(r.new_version);
    EXPECT_EQ(r.label, "v1");
    EXPECT_EQ(last_.sha256, sha);

    // The blob is the very file: same inode, read-only, two names until the caller unlinks it.
    const fs::path blob = s().blobs().path_of(sha);
    ASSERT_TRUE(fs::exists(blob));
    struct stat bst = stat_of(blob);
    EXPECT_EQ(bst.st_ino, before.st_ino);
    EXPECT_EQ(bst.st_dev, before.st_dev);
    EXPECT_EQ(bst.st_mode & 07777, 0444u);
    EXPECT_EQ(bst.st_nlink, 2u);
    EXPECT_EQ(static_cast<std::uint64_t>(bst.st_size), size);
    EXPECT_EQ(stat_of(p).st_mode & 07777, 0444u);  // one inode, so the source is read-only too
    EXPECT_EQ(blob_files(), std::vector<fs::path>{blob});

    ASSERT_EQ(::unlink(p.c_str()), 0);
    EXPECT_EQ(stat_of(blob).st_nlink, 1u);
    EXPECT_EQ(sha_of_file(blob), sha);

    auto rec = blob_record(sha);
    ASSERT_TRUE(rec);
    EXPECT_EQ(rec->size, size);
    EXPECT_EQ(rec->state, BlobState::present);
    ASSERT_TRUE(rec->xxh128);
    EXPECT_EQ(*rec->xxh128, xxh_of_file(blob));
    EXPECT_GT(rec->safetensors_header_len, 0u);
    EXPECT_EQ(rec->safetensors_header_len, header_len_of_file(blob));
    EXPECT_FALSE(rec->autov3);
    EXPECT_GE(rec->ingested, t0);
    EXPECT_LE(rec->ingested, t1);

    auto m = model("lora/x");
    ASSERT_TRUE(m);
    EXPECT_EQ(m->category, Category::lora);
    EXPECT_EQ(m->name, "x");
    ASSERT_EQ(m->versions.size(), 1u);
    EXPECT_EQ(m->current, 0u);
    const ModelVersion& v = m->versions[0];
    EXPECT_EQ(v.label, "v1");
    ASSERT_TRUE(v.blob);
    EXPECT_EQ(*v.blob, sha);
    EXPECT_EQ(v.ext, ".safetensors");
    EXPECT_EQ(v.size, size);
    EXPECT_EQ(v.source, "mount:comfyui/loras/x.safetensors");
    EXPECT_GE(v.added, t0);
    EXPECT_LE(v.added, t1);
    EXPECT_EQ(v.mtime, 1'700'000'000);
    EXPECT_EQ(v.mode, 0600u);
    EXPECT_EQ(v.shown_mtime(), 1'700'000'000);
    EXPECT_EQ(v.shown_mode(), 0600u);
    EXPECT_TRUE(v.sidecars.empty());
    EXPECT_TRUE(v.tree.empty());
    EXPECT_EQ(all_models().size(), 1u);
}

TEST_F(StoreEditsTest, CommitWithoutMtimeOrModeShowsNowAnd0644) {
    const std::int64_t t0 = now_s();
    commit_model(st("x.safetensors", mt::kohya_lora(1)), Category::lora, "sdxl/x");
    const std::int64_t t1 = now_s();
    auto m = model("lora/sdxl/x");
    ASSERT_TRUE(m);
    const ModelVersion& v = m->current_version();
    EXPECT_EQ(v.mtime, v.added);
    EXPECT_GE(v.shown_mtime(), t0);
    EXPECT_LE(v.shown_mtime(), t1);
    EXPECT_EQ(v.mode, 0u);
    EXPECT_EQ(v.shown_mode(), 0644u);
}

TEST_F(StoreEditsTest, BrokenOrNonSafetensorsFilesAreStoredWithoutHeaderLength) {
    // Garbage under a .safetensors name: still the user's data, stored as is.
    fs::path bad = rnd("bad.safetensors", 5000, 7);
    const Sha256 bad_sha = sha_of_file(bad);
    FileCommitResult r = commit_model(bad, Category::lora, "bad");
    EXPECT_TRUE(r.new_blob);
    EXPECT_EQ(r.label, "v1");
    auto rec = blob_record(bad_sha);
    ASSERT_TRUE(rec);
    EXPECT_EQ(rec->size, 5000u);
    EXPECT_EQ(rec->safetensors_header_len, 0u);
    EXPECT_TRUE(blob_on_disk(bad_sha));

    // A valid safetensors file committed under another extension is not parsed.
    fs::path ckpt = st("good.ckpt", mt::sd15_checkpoint(3));
    const Sha256 ckpt_sha = sha_of_file(ckpt);
    commit_model(ckpt, Category::checkpoint, "good", ".ckpt");
    rec = blob_record(ckpt_sha);
    ASSERT_TRUE(rec);
    EXPECT_EQ(rec->safetensors_header_len, 0u);
    EXPECT_EQ(model("checkpoint/good")->current_version().ext, ".ckpt");
}

TEST_F(StoreEditsTest, DifferentContentBecomesV2AndCarriesTheSidecarsOver) {
    fs::path p = st("loras/x.safetensors", mt::kohya_lora(1));
    const Sha256 sha1 = sha_of_file(p);
    commit_model(p, Category::lora, "x");
    fs::path png = rnd("loras/x.preview.png", 300, 11);
    const Sha256 png_sha = sha_of_file(png);
    EXPECT_EQ(commit_sidecar(png, Category::lora, "x", ".preview.png").label, "v1");

    p = st("loras/x.safetensors", mt::kohya_lora(2));
    const Sha256 sha2 = sha_of_file(p);
    ASSERT_NE(sha1, sha2);
    Commit c;
    c.name = "x";
    c.mtime = 1'650'000'000;
    c.mode = 0640;
    FileCommitResult r = commit(p, c);
    EXPECT_TRUE(r.new_blob);
    EXPECT_TRUE(r.new_version);
    EXPECT_EQ(r.label, "v2");

    auto m = model("lora/x");
    ASSERT_TRUE(m);
    ASSERT_EQ(labels_of(*m), (std::vector<std::string>{"v1", "v2"}));
    EXPECT_EQ(m->current, 1u);
    EXPECT_EQ(*m->versions[0].blob, sha1);
    EXPECT_EQ(*m->versions[1].blob, sha2);
    EXPECT_EQ(m->versions[1].mtime, 1'650'000'000);
    EXPECT_EQ(m->versions[1].mode, 0640u);
    EXPECT_EQ(m->versions[0].mode, 0u);
    const std::vector<Sidecar> expected{{".preview.png", png_sha, 300}};
    EXPECT_EQ(m->versions[1].sidecars, expected);
    EXPECT_EQ(m->versions[0].sidecars, expected);  // v1 keeps its own
    EXPECT_TRUE(blob_on_disk(sha1));
    EXPECT_TRUE(blob_on_disk(sha2));
    EXPECT_TRUE(blob_on_disk(png_sha));
    EXPECT_EQ(blob_files().size(), 3u);
}

TEST_F(StoreEditsTest, ContentOfAnOlderVersionMakesThatVersionCurrentAgain) {
    commit_model(st("x.safetensors", mt::kohya_lora(1)), Category::lora, "x");
    const Sha256 sha1 = last_.sha256;
    commit_model(st("x.safetensors", mt::kohya_lora(2)), Category::lora, "x");
    const Sha256 sha2 = last_.sha256;
    ASSERT_EQ(model("lora/x")->current, 1u);

    fs::path again = st("x.safetensors", mt::kohya_lora(1));
    const ino_t ino = stat_of(again).st_ino;
    Commit c;
    c.name = "x";
    c.mtime = 1'600'000'123;
    c.mode = 0604;
    c.keep_source = true;
    FileCommitResult r = commit(again, c);
    EXPECT_FALSE(r.new_blob);
    EXPECT_TRUE(r.new_version);  // the current version changed (header: "a new current version")
    EXPECT_EQ(r.label, "v1");
    // Nothing was linked: the source keeps one name and its permissions, the blob is another file.
    EXPECT_EQ(stat_of(again).st_nlink, 1u);
    EXPECT_NE(stat_of(again).st_mode & 07777, 0444u);
    EXPECT_NE(stat_of(s().blobs().path_of(sha1)).st_ino, ino);
    fs::remove(again);

    auto m = model("lora/x");
    ASSERT_TRUE(m);
    ASSERT_EQ(labels_of(*m), (std::vector<std::string>{"v1", "v2"}));
    EXPECT_EQ(m->current, 0u);
    EXPECT_EQ(*m->versions[0].blob, sha1);
    EXPECT_EQ(*m->versions[1].blob, sha2);
    EXPECT_EQ(m->versions[0].mtime, 1'600'000'123);
    EXPECT_EQ(m->versions[0].mode, 0604u);
    EXPECT_EQ(blob_files().size(), 2u);

    // The same bytes once more: already current, so nothing new at all.
    r = commit_model(st("x.safetensors", mt::kohya_lora(1)), Category::lora, "x");
    EXPECT_FALSE(r.new_blob);
    EXPECT_FALSE(r.new_version);
    EXPECT_EQ(r.label, "v1");
    m = model("lora/x");
    EXPECT_EQ(m->versions.size(), 2u);
    EXPECT_EQ(m->current, 0u);
    EXPECT_EQ(m->versions[0].mode, 0604u);  // mode 0 in the commit leaves the shown mode alone
}

TEST_F(StoreEditsTest, LabelsSkipTakenOnesAfterSwitchingBack) {
    commit_model(st("x.safetensors", mt::kohya_lora(1)), Category::lora, "x");
    commit_model(st("x.safetensors", mt::kohya_lora(2)), Category::lora, "x");
    commit_model(st("x.safetensors", mt::kohya_lora(1)), Category::lora, "x");  // v1 current
    FileCommitResult r = commit_model(st("x.safetensors", mt::kohya_lora(3)), Category::lora, "x");
    EXPECT_EQ(r.label, "v3");
    auto m = model("lora/x");
    EXPECT_EQ(labels_of(*m), (std::vector<std::string>{"v1", "v2", "v3"}));
    EXPECT_EQ(m->current, 2u);
}

TEST_F(StoreEditsTest, ContentStoredUnderAnotherModelIsNotStoredTwice) {
    commit_model(st("a.safetensors", mt::kohya_lora(5)), Category::lora, "a");
    const Sha256 sha = last_.sha256;
    const auto blobs_before = blob_files();
    ASSERT_EQ(blobs_before.size(), 1u);

    Commit c;
    c.category = Category::lora;
    c.name = "b";
    c.keep_source = true;
    fs::path b = st("b.safetensors", mt::kohya_lora(5));
    FileCommitResult r = commit(b, c);
    EXPECT_FALSE(r.new_blob);
    EXPECT_TRUE(r.new_version);
    EXPECT_EQ(r.label, "v1");
    EXPECT_EQ(blob_files(), blobs_before);
    EXPECT_EQ(stat_of(b).st_nlink, 1u);  // not linked
    EXPECT_EQ(stat_of(s().blobs().path_of(sha)).st_nlink, 1u);
    EXPECT_EQ(*model("lora/b")->current_version().blob, sha);
    EXPECT_EQ(*model("lora/a")->current_version().blob, sha);
    EXPECT_EQ(all_blob_records().size(), 1u);
}

TEST_F(StoreEditsTest, ExistingBlobFileOfTheWrongSizeIsQuarantinedAndReplaced) {
    fs::path p = st("x.safetensors", mt::kohya_lora(1));
    const Sha256 sha = sha_of_file(p);
    const fs::path blob = s().blobs().path_of(sha);
    fs::create_directories(blob.parent_path());
    mt::write_text_file(blob, "short");
    FileCommitResult r = commit_model(p, Category::lora, "x");
    EXPECT_TRUE(r.new_blob);
    EXPECT_EQ(sha_of_file(blob), sha);
    auto q = files_under(root_ / "quarantine");
    ASSERT_EQ(q.size(), 1u);
    EXPECT_EQ(mt::read_file(q[0]), "short");
}

// ---- commit_file: sidecars -------------------------------------------------------------------

TEST_F(StoreEditsTest, SidecarsAttachToTheCurrentVersionSortedAndReplacedBySuffix) {
    commit_model(st("x.safetensors", mt::kohya_lora(1)), Category::lora, "x");
    commit_model(st("x.safetensors", mt::kohya_lora(2)), Category::lora, "x");
    const Sha256 model_sha = last_.sha256;

    std::map<std::string, Sha256> sha;
    for (const char* suffix : {".preview.png", ".civitai.info", ".json"}) {
        fs::path p = text(std::string("x") + suffix, std::string("content of ") + suffix);
        sha[suffix] = sha_of_file(p);
        FileCommitResult r = commit_sidecar(p, Category::lora, "x", suffix);
        EXPECT_TRUE(r.new_blob) << suffix;
        EXPECT_FALSE(r.new_version) << suffix;
        EXPECT_EQ(r.label, "v2") << suffix;
    }
    auto m = model("lora/x");
    ASSERT_TRUE(m);
    ASSERT_EQ(m->versions.size(), 2u);
    EXPECT_EQ(m->current, 1u);
    EXPECT_TRUE(m->versions[0].sidecars.empty());
    EXPECT_EQ(suffixes_of(m->versions[1]),
              (std::vector<std::string>{".civitai.info", ".json", ".preview.png"}));
    ASSERT_TRUE(m->versions[1].sidecar(".json"));
    EXPECT_EQ(m->versions[1].sidecar(".json")->blob, sha[".json"]);
    EXPECT_EQ(m->versions[1].sidecar(".json")->size, std::string("content of .json").size());
    auto rec = blob_record(sha[".json"]);
    ASSERT_TRUE(rec);
    EXPECT_EQ(rec->size, std::string("content of .json").size());
    EXPECT_EQ(rec->safetensors_header_len, 0u);

    // The same suffix again replaces it.
    fs::path p = text("x.json", "{\"new\": true}");
    const Sha256 json2 = sha_of_file(p);
    EXPECT_EQ(commit_sidecar(p, Category::lora, "x", ".json").label, "v2");
    m = model("lora/x");
    ASSERT_EQ(m->versions[1].sidecars.size(), 3u);
    EXPECT_EQ(m->versions[1].sidecar(".json")->blob, json2);
    EXPECT_EQ(m->versions[1].sidecar(".json")->size, 13u);
    EXPECT_EQ(m->versions[1].model_blobs_note_unused_guard_, 0);
}

}  // namespace
}  // namespace modelfs
