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

namespace stdfs = std::filesystem;
namespace mt = modelfs::testing;

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

Xxh128 xxh_of_file(const stdfs::path& p) {
    const std::string bytes = mt::read_file(p);
    Xxh128Hasher h;
    h.update(bytes.data(), bytes.size());
    return h.finish();
}

std::uint64_t header_len_of_file(const stdfs::path& p) {
    const std::string bytes = mt::read_file(p);
    std::uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = n << 8 | static_cast<unsigned char>(bytes.at(i));
    return n;
}

struct stat stat_of(const stdfs::path& p) {
    struct stat st {};
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
    stdfs::path view(const std::string& rel) {
        stdfs::path p = root_ / "views" / rel;
        stdfs::create_directories(p.parent_path());
        return p;
    }
    stdfs::path st(const std::string& rel, const mt::SafetensorsSpec& spec) {
        stdfs::path p = view(rel);
        mt::write_safetensors(p, spec);
        return p;
    }
    stdfs::path rnd(const std::string& rel, std::uint64_t size, std::uint64_t seed) {
        stdfs::path p = view(rel);
        mt::write_random_file(p, size, seed);
        return p;
    }
    stdfs::path text(const std::string& rel, const std::string& content) {
        stdfs::path p = view(rel);
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
    FileCommitResult commit(const stdfs::path& p, const Commit& c) {
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
        if (!c.keep_source) stdfs::remove(p);
        return r;
    }
    FileCommitResult commit_model(const stdfs::path& p, Category cat, const std::string& name,
                                  const std::string& ext = ".safetensors") {
        Commit c;
        c.category = cat;
        c.name = name;
        c.ext = ext;
        return commit(p, c);
    }
    FileCommitResult commit_sidecar(const stdfs::path& p, Category cat, const std::string& name,
                                    const std::string& suffix) {
        Commit c;
        c.category = cat;
        // A sidecar names its model, as the mount does: its full name.
        auto m = model(model_key(cat, name));
        c.name = m ? m->name : name;
        c.sidecar = suffix;
        return commit(p, c);
    }

    // `key` exactly, else the one model whose key without extension it is ("lora/x" for
    // lora/x.safetensors: names carry their extension, model_name.h).
    std::optional<Model> model(const std::string& key) {
        auto txn = s().catalog().read();
        if (auto m = txn.get_model(key)) return m;
        std::optional<Model> found;
        txn.for_each_model([&](const Model& m) {
            if (model_key(m.category, m.stem()) == key && m.stem() != m.name) found = m;
        });
        return found;
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
    std::vector<stdfs::path> blob_files() { return files_under(root_ / "blobs"); }
    std::int64_t changed(Category c) { return s().catalog().read().category_changed_ns(c); }
    bool blob_on_disk(const Sha256& h) { return stdfs::exists(s().blobs().path_of(h)); }

    mt::TempDir tmp_{"modelfs-edits"};
    stdfs::path root_ = tmp_ / "store";
    std::optional<Store> store_;
    FileDigests last_;  // digests of the last committed file
};

// ---- commit_file: models ---------------------------------------------------------------------

TEST_F(StoreEditsTest, CommitOfANewModelCreatesV1AndHardLinksTheFileAsItsBlob) {
    stdfs::path p = st("comfyui/loras/x.safetensors", mt::kohya_lora(1));
    const Sha256 sha = sha_of_file(p);
    const std::uint64_t size = stdfs::file_size(p);
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
    const stdfs::path blob = s().blobs().path_of(sha);
    ASSERT_TRUE(stdfs::exists(blob));
    struct stat bst = stat_of(blob);
    EXPECT_EQ(bst.st_ino, before.st_ino);
    EXPECT_EQ(bst.st_dev, before.st_dev);
    EXPECT_EQ(bst.st_mode & 07777, 0444u);
    EXPECT_EQ(bst.st_nlink, 2u);
    EXPECT_EQ(static_cast<std::uint64_t>(bst.st_size), size);
    EXPECT_EQ(stat_of(p).st_mode & 07777, 0444u);  // one inode, so the source is read-only too
    EXPECT_EQ(blob_files(), std::vector<stdfs::path>{blob});

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

    auto m = model("lora/x.safetensors");
    ASSERT_TRUE(m);
    EXPECT_EQ(m->category, Category::lora);
    EXPECT_EQ(m->name, "x.safetensors");
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

TEST_F(StoreEditsTest, BrokenSafetensorsAreRefusedAndOtherExtensionsStoredWithoutHeaderLength) {
    // Garbage under a .safetensors name is no model (issue 14: import refuses it too); the mount
    // leaves it a plain file of its view. Nothing is linked or catalogued.
    stdfs::path bad = rnd("bad.safetensors", 5000, 7);
    const Sha256 bad_sha = sha_of_file(bad);
    Commit c;
    c.category = Category::lora;
    c.name = "bad";
    c.keep_source = true;
    try {
        commit(bad, c);
        FAIL() << "expected StoreError bad_input";
    } catch (const StoreError& e) {
        EXPECT_EQ(e.kind(), ErrorKind::bad_input) << e.what();
        EXPECT_NE(std::string(e.what()).find("incomplete or malformed safetensors file"),
                  std::string::npos)
            << e.what();
    }
    EXPECT_FALSE(blob_record(bad_sha));
    EXPECT_FALSE(blob_on_disk(bad_sha));
    EXPECT_FALSE(model("lora/bad"));
    EXPECT_EQ(stat_of(bad).st_nlink, 1u);

    // A valid safetensors file committed under another extension is not parsed.
    stdfs::path ckpt = st("good.ckpt", mt::sd15_checkpoint(3));
    const Sha256 ckpt_sha = sha_of_file(ckpt);
    commit_model(ckpt, Category::checkpoint, "good", ".ckpt");
    auto rec = blob_record(ckpt_sha);
    ASSERT_TRUE(rec);
    EXPECT_EQ(rec->safetensors_header_len, 0u);
    EXPECT_EQ(model("checkpoint/good")->current_version().ext, ".ckpt");
}

TEST_F(StoreEditsTest, DifferentContentBecomesV2AndCarriesTheSidecarsOver) {
    stdfs::path p = st("loras/x.safetensors", mt::kohya_lora(1));
    const Sha256 sha1 = sha_of_file(p);
    commit_model(p, Category::lora, "x");
    stdfs::path png = rnd("loras/x.preview.png", 300, 11);
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
    commit_sidecar(text("x.json", "{}"), Category::lora, "x", ".json");  // on v2 only
    const Sha256 json = last_.sha256;

    stdfs::path again = st("x.safetensors", mt::kohya_lora(1));
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
    stdfs::remove(again);

    auto m = model("lora/x");
    ASSERT_TRUE(m);
    ASSERT_EQ(labels_of(*m), (std::vector<std::string>{"v1", "v2"}));
    EXPECT_EQ(m->current, 0u);
    EXPECT_EQ(*m->versions[0].blob, sha1);
    EXPECT_EQ(*m->versions[1].blob, sha2);
    EXPECT_EQ(m->versions[0].mtime, 1'600'000'123);
    EXPECT_EQ(m->versions[0].mode, 0604u);
    // As edits.cpp intends ("keeping the sidecars it had"): v1 comes back with its own sidecars
    // (none), unlike a new version, which inherits the current one's. See the report.
    EXPECT_TRUE(m->versions[0].sidecars.empty());
    EXPECT_EQ(m->versions[1].sidecars, (std::vector<Sidecar>{{".json", json, 2}}));
    EXPECT_EQ(blob_files().size(), 3u);

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

TEST_F(StoreEditsTest, NewContentAfterSwitchingBackGetsTheNextFreeLabel) {
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
    stdfs::path b = st("b.safetensors", mt::kohya_lora(5));
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
    stdfs::path p = st("x.safetensors", mt::kohya_lora(1));
    const Sha256 sha = sha_of_file(p);
    const stdfs::path blob = s().blobs().path_of(sha);
    stdfs::create_directories(blob.parent_path());
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
        stdfs::path p = text(std::string("x") + suffix, std::string("content of ") + suffix);
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
    stdfs::path p = text("x.json", "{\"new\": true}");
    const Sha256 json2 = sha_of_file(p);
    EXPECT_EQ(commit_sidecar(p, Category::lora, "x", ".json").label, "v2");
    m = model("lora/x");
    ASSERT_EQ(m->versions[1].sidecars.size(), 3u);
    EXPECT_EQ(m->versions[1].sidecar(".json")->blob, json2);
    EXPECT_EQ(m->versions[1].sidecar(".json")->size, 13u);
    // Every blob the version uses, so gc keeps them; the replaced .json content is not among them.
    std::vector<Sha256> used = m->versions[1].blobs();
    std::sort(used.begin(), used.end());
    std::vector<Sha256> want{model_sha, sha[".civitai.info"], json2, sha[".preview.png"]};
    std::sort(want.begin(), want.end());
    EXPECT_EQ(used, want);
}

TEST_F(StoreEditsTest, GcKeepsSidecarBlobsAndRemovesTheReplacedOne) {
    commit_model(st("x.safetensors", mt::kohya_lora(1)), Category::lora, "x");
    const Sha256 model_sha = last_.sha256;
    commit_sidecar(text("x.json", "old"), Category::lora, "x", ".json");
    const Sha256 old_json = last_.sha256;
    commit_sidecar(text("x.json", "new!"), Category::lora, "x", ".json");
    const Sha256 new_json = last_.sha256;
    commit_sidecar(rnd("x.preview.png", 777, 3), Category::lora, "x", ".preview.png");
    const Sha256 png = last_.sha256;
    ASSERT_EQ(blob_files().size(), 4u);

    GcReport rep = s().gc(false);
    ASSERT_EQ(rep.blobs.size(), 1u);
    EXPECT_EQ(rep.blobs[0].first, old_json);
    EXPECT_EQ(rep.blobs[0].second, 3u);
    EXPECT_TRUE(rep.orphan_files.empty());
    EXPECT_FALSE(blob_on_disk(old_json));
    EXPECT_FALSE(blob_record(old_json));
    for (const Sha256& h : {model_sha, new_json, png}) {
        EXPECT_TRUE(blob_on_disk(h)) << h.hex();
        EXPECT_TRUE(blob_record(h)) << h.hex();
    }
    EXPECT_EQ(blob_files().size(), 3u);
}

TEST_F(StoreEditsTest, SidecarOfAMissingModelIsNotFoundAndChangesNothing) {
    commit_model(st("other.safetensors", mt::kohya_lora(1)), Category::lora, "other");
    const auto blobs_before = blob_files();
    const auto records_before = all_blob_records();
    const auto models_before = all_models();
    const std::int64_t lora_ns = changed(Category::lora);

    stdfs::path png = rnd("ghost.preview.png", 400, 9);
    const Sha256 png_sha = sha_of_file(png);
    const auto mode_before = stat_of(png).st_mode;
    Commit c;
    c.category = Category::lora;
    c.name = "ghost";
    c.sidecar = ".preview.png";
    try {
        commit(png, c);
        FAIL() << "expected StoreError not_found";
    } catch (const StoreError& e) {
        EXPECT_EQ(e.kind(), ErrorKind::not_found) << e.what();
        EXPECT_NE(std::string(e.what()).find("lora/ghost"), std::string::npos) << e.what();
    }
    EXPECT_EQ(blob_files(), blobs_before);
    EXPECT_EQ(all_blob_records(), records_before);
    EXPECT_FALSE(blob_record(png_sha));
    EXPECT_FALSE(blob_on_disk(png_sha));
    EXPECT_EQ(all_models().size(), models_before.size());
    EXPECT_FALSE(model("lora/ghost"));
    EXPECT_EQ(changed(Category::lora), lora_ns);
    // The source was left alone: not linked, not made read-only.
    EXPECT_EQ(stat_of(png).st_nlink, 1u);
    EXPECT_EQ(stat_of(png).st_mode, mode_before);
}

// ---- commit_file: invalid names ----------------------------------------------------------------

TEST_F(StoreEditsTest, InvalidNamesAreRefusedBeforeAnythingIsWritten) {
    commit_model(st("keep.safetensors", mt::kohya_lora(1)), Category::lora, "keep");
    const auto blobs_before = blob_files();
    const auto records_before = all_blob_records();
    const std::int64_t lora_ns = changed(Category::lora);

    const std::vector<std::string> names{
        "",     "a@b",       "x@v2", "sdxl/../x",          "..", "a/./b", "a//b",
        "/abs", "trailing/", "a/..", std::string(201, 'n')};
    int i = 0;
    for (const std::string& name : names) {
        for (bool sidecar : {false, true}) {
            SCOPED_TRACE("name '" + name + "'" + (sidecar ? " (sidecar)" : ""));
            ++i;
            stdfs::path p = st("bad" + std::to_string(i) + ".safetensors", mt::kohya_lora(100 + i));
            const auto mode_before = stat_of(p).st_mode;
            Commit c;
            c.category = Category::lora;
            c.name = name;
            if (sidecar) c.sidecar = ".json";
            try {
                commit(p, c);
                ADD_FAILURE() << "expected StoreError bad_input";
            } catch (const StoreError& e) {
                EXPECT_EQ(e.kind(), ErrorKind::bad_input) << e.what();
            }
            EXPECT_EQ(blob_files(), blobs_before);
            EXPECT_EQ(all_blob_records(), records_before);
            EXPECT_EQ(stat_of(p).st_nlink, 1u);
            EXPECT_EQ(stat_of(p).st_mode, mode_before);
        }
    }
    EXPECT_EQ(all_models().size(), 1u);
    EXPECT_EQ(changed(Category::lora), lora_ns);
}

// A name whose components are each valid (<= 200 bytes) but whose catalog key is over LMDB's
// 511 bytes must be refused before publish_link runs (which would chmod the caller's file 0444 and
// hard-link it into blobs/, leaving an orphan blob when put_model refuses the key).
TEST_F(StoreEditsTest, OverlongKeyIsRefusedBeforeTheBlobIsPublished) {
    const std::string part(200, 'n');
    const std::string name = part + "/" + part + "/" + part;  // key "lora/" + 602 bytes
    stdfs::path p = st("long.safetensors", mt::kohya_lora(1));
    const Sha256 sha = sha_of_file(p);
    const auto mode_before = stat_of(p).st_mode;
    Commit c;
    c.category = Category::lora;
    c.name = name;
    try {
        commit(p, c);
        FAIL() << "expected StoreError bad_input";
    } catch (const StoreError& e) {
        EXPECT_EQ(e.kind(), ErrorKind::bad_input) << e.what();
    }
    EXPECT_TRUE(all_models().empty());
    EXPECT_FALSE(blob_record(sha));
    EXPECT_TRUE(blob_files().empty()) << "orphan blob " << s().blobs().path_of(sha);
    EXPECT_EQ(stat_of(p).st_nlink, 1u);
    EXPECT_EQ(stat_of(p).st_mode, mode_before);
}

// ---- remove_model, remove_sidecar ----------------------------------------------------------

TEST_F(StoreEditsTest, RemoveModelKeepsItsBlobsUntilGc) {
    commit_model(st("x.safetensors", mt::kohya_lora(1)), Category::lora, "x");
    const Sha256 v1 = last_.sha256;
    commit_model(st("x.safetensors", mt::kohya_lora(2)), Category::lora, "x");
    const Sha256 v2 = last_.sha256;
    commit_sidecar(text("x.json", "{}"), Category::lora, "x", ".json");
    const Sha256 json = last_.sha256;
    commit_model(st("y.safetensors", mt::kohya_lora(3)), Category::lora, "y");
    const Sha256 y = last_.sha256;

    EXPECT_TRUE(s().remove_model("lora/x.safetensors"));
    EXPECT_FALSE(model("lora/x"));
    EXPECT_TRUE(model("lora/y"));
    EXPECT_FALSE(s().remove_model("lora/x.safetensors"));
    EXPECT_FALSE(s().remove_model("lora/never"));
    EXPECT_FALSE(s().remove_model("checkpoint/y"));  // right name, wrong category
    for (const Sha256& h : {v1, v2, json, y}) {
        EXPECT_TRUE(blob_on_disk(h)) << h.hex();
        EXPECT_TRUE(blob_record(h)) << h.hex();
    }

    GcReport rep = s().gc(false);
    std::vector<Sha256> removed;
    for (const auto& [h, size] : rep.blobs) removed.push_back(h);
    std::sort(removed.begin(), removed.end());
    std::vector<Sha256> want{v1, v2, json};
    std::sort(want.begin(), want.end());
    EXPECT_EQ(removed, want);
    for (const Sha256& h : {v1, v2, json}) {
        EXPECT_FALSE(blob_on_disk(h)) << h.hex();
        EXPECT_FALSE(blob_record(h)) << h.hex();
    }
    EXPECT_TRUE(blob_on_disk(y));
    EXPECT_TRUE(blob_record(y));
    EXPECT_EQ(blob_files().size(), 1u);
}

TEST_F(StoreEditsTest, RemoveSidecarTakesItOffTheCurrentVersionOnly) {
    commit_model(st("x.safetensors", mt::kohya_lora(1)), Category::lora, "x");
    commit_sidecar(text("x.json", "{}"), Category::lora, "x", ".json");
    const Sha256 json = last_.sha256;
    commit_model(st("x.safetensors", mt::kohya_lora(2)), Category::lora, "x");  // carries .json
    commit_sidecar(text("x.txt", "notes"), Category::lora, "x", ".txt");
    ASSERT_EQ(suffixes_of(model("lora/x")->current_version()),
              (std::vector<std::string>{".json", ".txt"}));

    EXPECT_TRUE(s().remove_sidecar("lora/x.safetensors", ".json"));
    auto m = model("lora/x");
    EXPECT_EQ(suffixes_of(m->versions[1]), std::vector<std::string>{".txt"});
    EXPECT_EQ(m->versions[0].sidecars, (std::vector<Sidecar>{{".json", json, 2}}));
    EXPECT_TRUE(blob_on_disk(json));  // still used by v1

    EXPECT_FALSE(s().remove_sidecar("lora/x.safetensors", ".json"));
    EXPECT_FALSE(s().remove_sidecar("lora/x.safetensors", ".preview.png"));
    EXPECT_FALSE(s().remove_sidecar("lora/nope", ".txt"));
    EXPECT_TRUE(s().remove_sidecar("lora/x.safetensors", ".txt"));
    m = model("lora/x");
    EXPECT_TRUE(m->versions[1].sidecars.empty());
    EXPECT_EQ(m->versions.size(), 2u);
    EXPECT_EQ(m->current, 1u);
}

// ---- rename_model ----------------------------------------------------------------------------

TEST_F(StoreEditsTest, RenameToAFreeNameMovesEveryVersion) {
    commit_model(st("a.safetensors", mt::kohya_lora(1)), Category::lora, "a");
    const Sha256 v1 = last_.sha256;
    commit_model(st("a.safetensors", mt::kohya_lora(2)), Category::lora, "a");
    const Sha256 v2 = last_.sha256;
    commit_sidecar(text("a.json", "{}"), Category::lora, "a", ".json");
    const Model before = *model("lora/a");

    s().rename_model("lora/a.safetensors", Category::checkpoint, "sub/b.ckpt", ".ckpt");
    EXPECT_FALSE(model("lora/a"));
    auto m = model("checkpoint/sub/b.ckpt");
    ASSERT_TRUE(m);
    EXPECT_EQ(m->category, Category::checkpoint);
    EXPECT_EQ(m->name, "sub/b.ckpt");
    ASSERT_EQ(labels_of(*m), (std::vector<std::string>{"v1", "v2"}));
    EXPECT_EQ(m->current, 1u);
    EXPECT_EQ(*m->versions[0].blob, v1);
    EXPECT_EQ(*m->versions[1].blob, v2);
    EXPECT_EQ(m->versions[1].ext, ".ckpt");
    // The extension is the name's (model_name.h): the whole model moves.
    EXPECT_EQ(m->versions[0].ext, ".ckpt");
    EXPECT_EQ(m->versions[1].sidecars, before.versions[1].sidecars);
    EXPECT_EQ(m->versions[1].added, before.versions[1].added);
    EXPECT_EQ(m->versions[1].mtime, before.versions[1].mtime);
    EXPECT_EQ(all_models().size(), 1u);
    EXPECT_EQ(blob_files().size(), 3u);

    // Another extension is another name: the model moves again, with every version.
    s().rename_model("checkpoint/sub/b.ckpt", Category::checkpoint, "sub/b.pt", ".pt");
    EXPECT_FALSE(model("checkpoint/sub/b.ckpt"));
    m = model("checkpoint/sub/b.pt");
    ASSERT_TRUE(m);
    EXPECT_EQ(m->versions.size(), 2u);
    EXPECT_EQ(m->current_version().ext, ".pt");
    EXPECT_EQ(m->versions[0].ext, ".pt");
    EXPECT_EQ(all_models().size(), 1u);
}

TEST_F(StoreEditsTest, RenameOntoAnExistingModelAppendsTheSourcesCurrentVersion) {
    commit_model(st("d.safetensors", mt::kohya_lora(1)), Category::lora, "d");
    const Sha256 d1 = last_.sha256;
    commit_model(st("d.safetensors", mt::kohya_lora(2)), Category::lora, "d");
    const Sha256 d2 = last_.sha256;
    commit_sidecar(text("d.json", "dst"), Category::lora, "d", ".json");
    const Sha256 d_json = last_.sha256;

    commit_model(st("s.safetensors", mt::kohya_lora(3)), Category::lora, "s");
    const Sha256 s1 = last_.sha256;
    Commit c;
    c.name = "s";
    c.mtime = 1'555'555'555;
    c.mode = 0600;
    commit(st("s.safetensors", mt::kohya_lora(4)), c);
    const Sha256 s2 = last_.sha256;
    commit_sidecar(rnd("s.preview.png", 64, 1), Category::lora, "s", ".preview.png");
    const Sha256 s_png = last_.sha256;

    s().rename_model("lora/s.safetensors", Category::lora, "d.safetensors", ".safetensors");
    EXPECT_FALSE(model("lora/s"));
    auto m = model("lora/d");
    ASSERT_TRUE(m);
    // The source's label v2 is taken in the destination: the next free one.
    ASSERT_EQ(labels_of(*m), (std::vector<std::string>{"v1", "v2", "v3"}));
    EXPECT_EQ(m->current, 2u);
    EXPECT_EQ(*m->versions[0].blob, d1);
    EXPECT_EQ(*m->versions[1].blob, d2);
    EXPECT_EQ(m->versions[1].sidecars, (std::vector<Sidecar>{{".json", d_json, 3}}));
    const ModelVersion& v = m->versions[2];
    EXPECT_EQ(*v.blob, s2);
    EXPECT_EQ(v.ext, ".safetensors");
    EXPECT_EQ(v.mtime, 1'555'555'555);
    EXPECT_EQ(v.mode, 0600u);
    EXPECT_EQ(v.sidecars, (std::vector<Sidecar>{{".preview.png", s_png, 64}}));
    EXPECT_EQ(all_models().size(), 1u);

    // The source's older version went with it: gc removes only that blob.
    GcReport rep = s().gc(false);
    ASSERT_EQ(rep.blobs.size(), 1u);
    EXPECT_EQ(rep.blobs[0].first, s1);
    EXPECT_FALSE(blob_on_disk(s1));
    for (const Sha256& h : {d1, d2, d_json, s2, s_png}) EXPECT_TRUE(blob_on_disk(h)) << h.hex();
}

TEST_F(StoreEditsTest, RenameOntoAModelWithTheSameContentReusesThatVersion) {
    commit_model(st("d.safetensors", mt::kohya_lora(1)), Category::lora, "d");
    const Sha256 x = last_.sha256;
    commit_model(st("d.safetensors", mt::kohya_lora(2)), Category::lora, "d");
    const Sha256 y = last_.sha256;
    commit_model(st("s.safetensors", mt::kohya_lora(1)), Category::checkpoint, "s");
    commit_sidecar(text("s.json", "src"), Category::checkpoint, "s", ".json");
    const Sha256 s_json = last_.sha256;

    s().rename_model("checkpoint/s.safetensors", Category::lora, "d.safetensors", ".safetensors");
    EXPECT_FALSE(model("checkpoint/s"));
    auto m = model("lora/d");
    ASSERT_TRUE(m);
    ASSERT_EQ(labels_of(*m), (std::vector<std::string>{"v1", "v2"}));
    EXPECT_EQ(m->current, 0u);
    EXPECT_EQ(*m->versions[0].blob, x);
    EXPECT_EQ(*m->versions[1].blob, y);
    EXPECT_EQ(m->versions[0].sidecars, (std::vector<Sidecar>{{".json", s_json, 3}}));
    EXPECT_EQ(all_models().size(), 1u);
}

TEST_F(StoreEditsTest, RenameRefusesInvalidNamesAndMissingSources) {
    commit_model(st("a.safetensors", mt::kohya_lora(1)), Category::lora, "a");
    const Model before = *model("lora/a");
    const std::int64_t lora_ns = changed(Category::lora);

    const std::string part(200, 'n');
    for (const std::string& bad :
         {std::string(""), std::string("a@b"), std::string("x/../y"), std::string(".."),
          std::string("a//b"), part + "/" + part + "/" + part /* key over 511 bytes */}) {
        try {
            s().rename_model("lora/a.safetensors", Category::lora, bad, ".safetensors");
            ADD_FAILURE() << "expected bad_input for '" << bad << "'";
        } catch (const StoreError& e) {
            EXPECT_EQ(e.kind(), ErrorKind::bad_input) << bad << ": " << e.what();
        }
    }
    try {
        s().rename_model("lora/missing.safetensors", Category::lora, "b.safetensors",
                         ".safetensors");
        ADD_FAILURE() << "expected not_found";
    } catch (const StoreError& e) {
        EXPECT_EQ(e.kind(), ErrorKind::not_found) << e.what();
    }
    auto models = all_models();
    ASSERT_EQ(models.size(), 1u);
    const Model& after = models.at("lora/a.safetensors");
    EXPECT_EQ(labels_of(after), labels_of(before));
    EXPECT_EQ(after.current_version().ext, ".safetensors");
    EXPECT_FALSE(model("lora/b"));
    EXPECT_EQ(changed(Category::lora), lora_ns);
}

// ---- set_shown_attrs -------------------------------------------------------------------------

TEST_F(StoreEditsTest, SetShownAttrsChangesTheCurrentVersionOnly) {
    Commit c;
    c.name = "x";
    c.mtime = 1'000;
    c.mode = 0644;
    commit(st("x.safetensors", mt::kohya_lora(1)), c);
    c.mtime = 2'000;
    c.mode = 0640;
    commit(st("x.safetensors", mt::kohya_lora(2)), c);

    s().set_shown_attrs("lora/x.safetensors", 1'234'567'890, std::nullopt);
    auto m = model("lora/x");
    EXPECT_EQ(m->versions[1].mtime, 1'234'567'890);
    EXPECT_EQ(m->versions[1].mode, 0640u);
    EXPECT_EQ(m->versions[0].mtime, 1'000);

    s().set_shown_attrs("lora/x.safetensors", std::nullopt, 0100755);  // file type bits are dropped
    m = model("lora/x");
    EXPECT_EQ(m->versions[1].mode, 0755u);
    EXPECT_EQ(m->versions[1].shown_mode(), 0755u);
    EXPECT_EQ(m->versions[1].mtime, 1'234'567'890);
    EXPECT_EQ(m->versions[0].mode, 0644u);

    s().set_shown_attrs("lora/x.safetensors", 42, 04711);
    m = model("lora/x");
    EXPECT_EQ(m->versions[1].mtime, 42);
    EXPECT_EQ(m->versions[1].mode, 04711u);

    s().set_shown_attrs("lora/x.safetensors", std::nullopt, std::nullopt);
    m = model("lora/x");
    EXPECT_EQ(m->versions[1].mtime, 42);
    EXPECT_EQ(m->versions[1].mode, 04711u);

    try {
        s().set_shown_attrs("lora/missing", 1, 0600);
        ADD_FAILURE() << "expected not_found";
    } catch (const StoreError& e) {
        EXPECT_EQ(e.kind(), ErrorKind::not_found) << e.what();
    }
    EXPECT_FALSE(model("lora/missing"));
}

// ---- category change times -------------------------------------------------------------------

TEST_F(StoreEditsTest, EveryEditAdvancesItsCategorysChangeTimeOnly) {
    for (Category c : all_categories()) EXPECT_EQ(changed(c), 0) << to_string(c);

    std::int64_t lora = 0, ckpt = 0;
    auto lora_bumped = [&](const char* what) {
        std::int64_t now = changed(Category::lora);
        EXPECT_GT(now, lora) << what;
        lora = now;
    };
    auto lora_same = [&](const char* what) { EXPECT_EQ(changed(Category::lora), lora) << what; };
    auto untouched = [&](const char* what) {
        EXPECT_EQ(changed(Category::vae), 0) << what;
        EXPECT_EQ(changed(Category::embedding), 0) << what;
        EXPECT_EQ(changed(Category::other), 0) << what;
    };

    commit_model(st("x.safetensors", mt::kohya_lora(1)), Category::lora, "x");
    lora_bumped("commit new model");
    EXPECT_GT(lora, 0);
    EXPECT_EQ(changed(Category::checkpoint), 0);
    untouched("commit new model");

    commit_model(st("x.safetensors", mt::kohya_lora(2)), Category::lora, "x");
    lora_bumped("commit v2");
    commit_sidecar(text("x.json", "{}"), Category::lora, "x", ".json");
    lora_bumped("commit sidecar");
    EXPECT_TRUE(s().remove_sidecar("lora/x.safetensors", ".json"));
    lora_bumped("remove_sidecar");
    EXPECT_FALSE(s().remove_sidecar("lora/x.safetensors", ".json"));
    lora_same("remove_sidecar of a missing sidecar");
    s().set_shown_attrs("lora/x.safetensors", 5, 0600);
    lora_bumped("set_shown_attrs");
    s().rename_model("lora/x.safetensors", Category::lora, "y.safetensors", ".safetensors");
    lora_bumped("rename within the category");
    EXPECT_EQ(changed(Category::checkpoint), 0);

    s().rename_model("lora/y.safetensors", Category::checkpoint, "y.safetensors", ".safetensors");
    lora_bumped("rename out of the category");
    ckpt = changed(Category::checkpoint);
    EXPECT_GT(ckpt, 0);
    untouched("rename across categories");

    EXPECT_THROW(s().rename_model("lora/gone", Category::lora, "z", ".safetensors"), StoreError);
    lora_same("failed rename");
    EXPECT_FALSE(s().remove_model("lora/gone"));
    lora_same("remove_model of a missing model");

    EXPECT_TRUE(s().remove_model("checkpoint/y.safetensors"));
    EXPECT_GT(changed(Category::checkpoint), ckpt);
    lora_same("remove_model in another category");
    untouched("remove_model");

    // Many quick edits in a row still give distinct, increasing times.
    std::int64_t prev = changed(Category::checkpoint);
    commit_model(st("c.safetensors", mt::sd15_checkpoint(1)), Category::checkpoint, "c");
    for (int i = 0; i < 20; ++i) {
        s().set_shown_attrs("checkpoint/c.safetensors", i + 1, std::nullopt);
        std::int64_t now = changed(Category::checkpoint);
        ASSERT_GT(now, prev) << i;
        prev = now;
    }
    lora_same("edits of checkpoints");
    untouched("edits of checkpoints");
}

}  // namespace
}  // namespace modelfs
