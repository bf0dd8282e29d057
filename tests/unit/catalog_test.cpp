// The LMDB catalog: opening and schema checks, record round trips, prefix lookups, iteration
// order, transaction semantics (abort on destruction, snapshots, one writer) and sharing one
// environment between Catalog objects and processes. Real LMDB environments in temp dirs.
#include "modelfs/store/catalog.h"

#include <gtest/gtest.h>
#include <lmdb.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "modelfs/store/errors.h"
#include "modelfs/store/hash.h"
#include "support/test_env.h"

namespace modelfs {
namespace {

namespace stdfs = std::filesystem;
namespace mt = modelfs::testing;

// A hash whose hex form starts with `prefix`, the rest filled with `fill`.
Sha256 hx(const std::string& prefix, char fill = '0') {
    auto h = Sha256::from_hex(prefix + std::string(64 - prefix.size(), fill));
    if (!h) throw std::invalid_argument("bad test hash " + prefix);
    return *h;
}

BlobRecord rec(std::uint64_t size, BlobState state = BlobState::present) {
    BlobRecord r;
    r.size = size;
    r.state = state;
    return r;
}

Xxh128 xx(char fill) {
    return *Xxh128::from_hex(std::string(32, fill));
}

// The raw LMDB environment, opened as the catalog opens it, to write what Catalog would not.
class RawEnv {
  public:
    explicit RawEnv(const stdfs::path& dir) {
        check(mdb_env_create(&env_));
        check(mdb_env_set_maxdbs(env_, 8));
        check(mdb_env_set_mapsize(env_, std::size_t{32} << 30));  // same as catalog.cpp
        check(mdb_env_open(env_, dir.c_str(), 0, 0644));
    }
    ~RawEnv() { mdb_env_close(env_); }
    RawEnv(const RawEnv&) = delete;
    RawEnv& operator=(const RawEnv&) = delete;

    void put(const char* db, const std::string& key, const std::string& value) {
        MDB_txn* txn = nullptr;
        check(mdb_txn_begin(env_, nullptr, 0, &txn));
        MDB_dbi dbi;
        check(mdb_dbi_open(txn, db, MDB_CREATE, &dbi));
        MDB_val k{key.size(), const_cast<char*>(key.data())};
        MDB_val v{value.size(), const_cast<char*>(value.data())};
        check(mdb_put(txn, dbi, &k, &v, 0));
        check(mdb_txn_commit(txn));
    }

    // Deletes a whole named database (mdb_drop), as a catalog older than it never had it.
    void drop(const char* db) {
        MDB_txn* txn = nullptr;
        check(mdb_txn_begin(env_, nullptr, 0, &txn));
        MDB_dbi dbi;
        check(mdb_dbi_open(txn, db, 0, &dbi));
        check(mdb_drop(txn, dbi, 1));
        check(mdb_txn_commit(txn));
    }

    std::optional<std::string> get(const char* db, const std::string& key) {
        MDB_txn* txn = nullptr;
        check(mdb_txn_begin(env_, nullptr, MDB_RDONLY, &txn));
        MDB_dbi dbi;
        int rc = mdb_dbi_open(txn, db, 0, &dbi);
        std::optional<std::string> out;
        if (rc == MDB_SUCCESS) {
            MDB_val k{key.size(), const_cast<char*>(key.data())}, v;
            if (mdb_get(txn, dbi, &k, &v) == MDB_SUCCESS)
                out = std::string(static_cast<const char*>(v.mv_data), v.mv_size);
        }
        mdb_txn_abort(txn);
        return out;
    }

  private:
    static void check(int rc) {
        if (rc != MDB_SUCCESS) throw std::runtime_error(std::string("lmdb: ") + mdb_strerror(rc));
    }
    MDB_env* env_ = nullptr;
};

BlobRecord full_blob_record() {
    BlobRecord r;
    r.size = (std::uint64_t{1} << 40) + 12345;  // > 32 bits
    r.state = BlobState::partial;
    r.xxh128 = xx('7');
    r.safetensors_header_len = 4096;
    r.autov3 = hx("a3", 'c');
    r.ingested = 1700000000;
    r.accessed = -5;  // signed survives
    r.extents = {{hx("01"), 0, 100}, {hx("02", 'f'), 1ull << 35, 7}, {hx("01"), 100, 0}};
    r.sources = {{"https://example.org/a b.safetensors", false},
                 {"hf://owner/repo@main/x.safetensors", true},
                 {"s3://bucket/key", false}};
    r.placeholder = true;
    r.keep = true;
    r.fetch_error = "https://example.org/a: HTTP 503";
    r.fetch_failed_at = 1800000000;
    return r;
}

void expect_blob_eq(const BlobRecord& a, const BlobRecord& b) {
    EXPECT_EQ(a.size, b.size);
    EXPECT_EQ(a.state, b.state);
    EXPECT_EQ(a.xxh128, b.xxh128);
    EXPECT_EQ(a.safetensors_header_len, b.safetensors_header_len);
    EXPECT_EQ(a.autov3, b.autov3);
    EXPECT_EQ(a.ingested, b.ingested);
    EXPECT_EQ(a.accessed, b.accessed);
    ASSERT_EQ(a.extents.size(), b.extents.size());
    for (std::size_t i = 0; i < a.extents.size(); ++i) {
        EXPECT_EQ(a.extents[i].blob, b.extents[i].blob) << i;
        EXPECT_EQ(a.extents[i].offset, b.extents[i].offset) << i;
        EXPECT_EQ(a.extents[i].length, b.extents[i].length) << i;
    }
    EXPECT_EQ(a.sources, b.sources);
    EXPECT_EQ(a.placeholder, b.placeholder);
    EXPECT_EQ(a.keep, b.keep);
    EXPECT_EQ(a.fetch_error, b.fetch_error);
    EXPECT_EQ(a.fetch_failed_at, b.fetch_failed_at);
}

Model full_model() {
    Model m;
    m.category = Category::checkpoint;
    m.name = "sdxl/juggernaut XL";
    ModelVersion v1;
    v1.label = "v1";
    v1.added = 1600000000;
    v1.source = "/home/u/models/Stable-diffusion/juggernaut.safetensors";
    v1.note = "first";
    v1.blob = hx("11");
    v1.ext = ".safetensors";
    v1.size = 6'938'040'682;
    ModelVersion v2;  // a tree, no note, no source
    v2.label = "diffusers";
    v2.added = 1600000100;
    v2.size = 300;
    v2.tree = {{"model_index.json", hx("21"), 100},
               {"unet/diffusion_pytorch_model.safetensors", hx("22"), 150},
               {"vae/config.json", hx("21"), 50}};
    ModelVersion v3;
    v3.label = "v3 (fp16)";
    v3.added = 1600000200;
    v3.source = "https://example.invalid/x";
    v3.blob = hx("33");
    v3.ext = ".ckpt";
    v3.size = 1;
    v3.sidecars = {{".civitai.info", hx("41"), 900}, {".preview.png", hx("42"), 70000}};
    v3.mtime = 1600000300;
    v3.mode = 0600;
    m.versions = {v1, v2, v3};
    m.current = 1;
    return m;
}

void expect_model_eq(const Model& a, const Model& b) {
    EXPECT_EQ(a.category, b.category);
    EXPECT_EQ(a.name, b.name);
    EXPECT_EQ(a.current, b.current);
    ASSERT_EQ(a.versions.size(), b.versions.size());
    for (std::size_t i = 0; i < a.versions.size(); ++i) {
        const auto &x = a.versions[i], &y = b.versions[i];
        EXPECT_EQ(x.label, y.label) << i;
        EXPECT_EQ(x.added, y.added) << i;
        EXPECT_EQ(x.source, y.source) << i;
        EXPECT_EQ(x.note, y.note) << i;
        EXPECT_EQ(x.blob, y.blob) << i;
        EXPECT_EQ(x.ext, y.ext) << i;
        EXPECT_EQ(x.size, y.size) << i;
        ASSERT_EQ(x.tree.size(), y.tree.size()) << i;
        for (std::size_t t = 0; t < x.tree.size(); ++t) {
            EXPECT_EQ(x.tree[t].path, y.tree[t].path);
            EXPECT_EQ(x.tree[t].blob, y.tree[t].blob);
            EXPECT_EQ(x.tree[t].size, y.tree[t].size);
        }
        EXPECT_EQ(x.sidecars, y.sidecars) << i;
        EXPECT_EQ(x.mtime, y.mtime) << i;
        EXPECT_EQ(x.mode, y.mode) << i;
    }
}

Model simple_model(Category c, const std::string& name, const Sha256& blob) {
    Model m;
    m.category = c;
    m.name = name;
    ModelVersion v;
    v.label = "v1";
    v.blob = blob;
    v.ext = ".safetensors";
    v.size = 10;
    m.versions = {v};
    return m;
}

class CatalogTest : public ::testing::Test {
  protected:
    mt::TempDir tmp_{"modelfs-catalog"};
    stdfs::path dir_ = tmp_ / "catalog";
};

// ---- Opening -------------------------------------------------------------------------------

TEST_F(CatalogTest, CreateMakesTheFolderAndWritesTheSchemaVersion) {
    ASSERT_FALSE(stdfs::exists(dir_));
    {
        Catalog c = Catalog::open(dir_, /*create=*/true);
        EXPECT_EQ(c.schema_version(), kSchemaVersion);
        EXPECT_EQ(c.dir(), dir_);
    }
    EXPECT_TRUE(stdfs::exists(dir_ / "data.mdb"));
    {
        RawEnv raw(dir_);
        EXPECT_EQ(raw.get("meta", "schema"), std::to_string(kSchemaVersion));
    }
    Catalog again = Catalog::open(dir_, /*create=*/false);
    EXPECT_EQ(again.schema_version(), kSchemaVersion);
}

TEST_F(CatalogTest, CreateOnAnExistingCatalogKeepsItsData) {
    {
        Catalog c = Catalog::open(dir_, true);
        auto t = c.write();
        t.put_blob(hx("aa"), rec(5));
        t.commit();
    }
    Catalog c = Catalog::open(dir_, true);
    auto r = c.read().get_blob(hx("aa"));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->size, 5u);
}

TEST_F(CatalogTest, OpenWithoutCreateOnEmptyOrMissingFolderIsNoStore) {
    stdfs::create_directories(dir_);
    try {
        Catalog::open(dir_, false);
        FAIL() << "opened an empty folder";
    } catch (const StoreError& e) {
        EXPECT_EQ(e.kind(), ErrorKind::no_store);
        EXPECT_NE(std::string(e.what()).find(dir_.string()), std::string::npos) << e.what();
    }
    EXPECT_TRUE(stdfs::is_empty(dir_)) << "a failed open must not create files";

    try {
        Catalog::open(tmp_ / "nope", false);
        FAIL() << "opened a missing folder";
    } catch (const StoreError& e) {
        EXPECT_EQ(e.kind(), ErrorKind::no_store);
    }
    EXPECT_FALSE(stdfs::exists(tmp_ / "nope"));
}

TEST_F(CatalogTest, NewerSchemaIsRefusedNamingBothVersions) {
    { Catalog::open(dir_, true); }
    const std::string newer = std::to_string(kSchemaVersion + 1);
    { RawEnv(dir_).put("meta", "schema", newer); }

    for (bool create : {false, true}) {
        try {
            Catalog::open(dir_, create);
            FAIL() << "opened a newer schema, create=" << create;
        } catch (const StoreError& e) {
            EXPECT_EQ(e.kind(), ErrorKind::schema);
            const std::string msg = e.what();
            EXPECT_NE(msg.find("schema " + newer), std::string::npos) << msg;
            EXPECT_NE(msg.find("(" + std::to_string(kSchemaVersion) + ")"), std::string::npos)
                << msg;
            EXPECT_NE(msg.find("upgrade"), std::string::npos) << msg;
        }
    }
    // "nothing was changed": even the create path left the version alone.
    EXPECT_EQ(RawEnv(dir_).get("meta", "schema"), newer);
}

TEST_F(CatalogTest, SchemaOneIsUpgradedOnOpenAndItsRecordsStillRead) {
    {
        Catalog c = Catalog::open(dir_, true);
        auto t = c.write();
        Model m = full_model();
        for (auto& v : m.versions) v.sidecars.clear(), v.mtime = 0, v.mode = 0;
        t.put_model(m);
        t.commit();
    }
    { RawEnv(dir_).put("meta", "schema", "1"); }
    Catalog c = Catalog::open(dir_, false);
    EXPECT_EQ(c.schema_version(), kSchemaVersion);
    EXPECT_EQ(RawEnv(dir_).get("meta", "schema"), std::to_string(kSchemaVersion));
    // Its .ckpt version is a model of its own since schema 4 (model_name_test.cpp).
    auto got = c.read().get_model("checkpoint/sdxl/juggernaut XL.ckpt");
    ASSERT_TRUE(got);
    EXPECT_EQ(got->versions[0].shown_mtime(), 1600000200);  // no mtime: the time it was added
    EXPECT_EQ(got->versions[0].shown_mode(), 0644u);
}

// Schema 5 added the tensors index: a schema 4 catalog, which has no such database, gets it in
// the upgrade, keeps its records, and is refused by nothing older than it could misread.
TEST_F(CatalogTest, SchemaFourGetsTheTensorsIndexOnOpen) {
    {
        Catalog c = Catalog::open(dir_, true);
        auto t = c.write();
        t.put_model(simple_model(Category::lora, "foo.safetensors", hx("ab")));
        t.put_blob(hx("ab"), rec(10));
        t.commit();
    }
    {
        RawEnv raw(dir_);
        raw.drop("tensors");
        raw.put("meta", "schema", "4");
    }
    Catalog c = Catalog::open(dir_, false);
    EXPECT_EQ(c.schema_version(), 5u);
    EXPECT_EQ(RawEnv(dir_).get("meta", "schema"), "5");
    EXPECT_TRUE(c.read().get_model("lora/foo.safetensors"));  // names left alone (already 4)
    {
        auto t = c.write();
        t.put_tensor(Xxh128{}, 1 << 20, TensorPlace{hx("ab"), 64});
        t.commit();
    }
    auto got = c.read().get_tensor(Xxh128{}, 1 << 20);
    ASSERT_TRUE(got);
    EXPECT_EQ(got->blob, hx("ab"));
    EXPECT_EQ(got->offset, 64u);
    EXPECT_FALSE(c.read().get_tensor(Xxh128{}, 1 << 21));
    // A schema 5 catalog without it is damaged, and said so.
    {
        RawEnv raw(dir_);
        raw.drop("tensors");
    }
    try {
        Catalog::open(dir_, false);
        FAIL() << "opened a schema 5 catalog without its tensors database";
    } catch (const StoreError& e) {
        EXPECT_EQ(e.kind(), ErrorKind::corrupt);
        EXPECT_NE(std::string(e.what()).find("tensors"), std::string::npos) << e.what();
    }
}

TEST_F(CatalogTest, MuchNewerSchemaIsRefused) {
    { Catalog::open(dir_, true); }
    { RawEnv(dir_).put("meta", "schema", "4000000000"); }
    try {
        Catalog::open(dir_, false);
        FAIL();
    } catch (const StoreError& e) {
        EXPECT_EQ(e.kind(), ErrorKind::schema);
        EXPECT_NE(std::string(e.what()).find("4000000000"), std::string::npos) << e.what();
    }
}

// A damaged version string is a StoreError naming the catalog, never a bare std::exception, and
// never read as some other number (a value that wraps around to 1 in 32 bits included).
TEST_F(CatalogTest, UnreadableSchemaValueIsAStoreError) {
    { Catalog::open(dir_, true); }
    for (const std::string bad :
         {"not a number", "", "1x", "-1", " 1", "4294967297", "99999999999999999999999"}) {
        { RawEnv(dir_).put("meta", "schema", bad); }
        try {
            Catalog::open(dir_, false);
            ADD_FAILURE() << "opened a catalog with schema '" << bad << "'";
        } catch (const StoreError& e) {
            EXPECT_NE(e.kind(), ErrorKind::no_store) << bad;
            EXPECT_NE(std::string(e.what()).find(dir_.string()), std::string::npos) << e.what();
        } catch (const std::exception& e) {
            ADD_FAILURE() << "schema '" << bad << "': not a StoreError: " << e.what();
        }
    }
}

TEST_F(CatalogTest, LmdbFileWithoutOurDatabasesIsNoStore) {
    stdfs::create_directories(dir_);
    { RawEnv(dir_).put("other", "k", "v"); }
    try {
        Catalog::open(dir_, false);
        FAIL();
    } catch (const StoreError& e) {
        EXPECT_EQ(e.kind(), ErrorKind::no_store) << e.what();
    }
}

TEST_F(CatalogTest, MissingSchemaKeyIsNoStore) {
    stdfs::create_directories(dir_);
    {
        RawEnv raw(dir_);
        raw.put("meta", "other", "x");
        raw.put("blobs", "k", "v");
        raw.put("models", "k", "v");
    }
    try {
        Catalog::open(dir_, false);
        FAIL();
    } catch (const StoreError& e) {
        EXPECT_EQ(e.kind(), ErrorKind::no_store) << e.what();
    }
}

// ---- Records -------------------------------------------------------------------------------

TEST_F(CatalogTest, BlobRecordRoundTripsEveryField) {
    Catalog c = Catalog::open(dir_, true);
    const BlobRecord full = full_blob_record();
    BlobRecord minimal;  // every optional absent
    minimal.size = 0;
    minimal.state = BlobState::present;
    {
        auto t = c.write();
        t.put_blob(hx("f0"), full);
        t.put_blob(hx("f1"), minimal);
        t.commit();
    }
    // Read back from a fresh environment, not a cache.
    c = Catalog::open(dir_, false);
    auto t = c.read();
    auto a = t.get_blob(hx("f0"));
    ASSERT_TRUE(a);
    expect_blob_eq(*a, full);
    auto b = t.get_blob(hx("f1"));
    ASSERT_TRUE(b);
    expect_blob_eq(*b, minimal);
    EXPECT_FALSE(b->xxh128);
    EXPECT_FALSE(b->autov3);
    EXPECT_TRUE(b->extents.empty());
    EXPECT_TRUE(b->sources.empty());
    EXPECT_FALSE(b->placeholder);
    EXPECT_FALSE(b->keep);
    EXPECT_FALSE(t.get_blob(hx("f2")));
}

TEST_F(CatalogTest, EveryBlobStateRoundTrips) {
    Catalog c = Catalog::open(dir_, true);
    const BlobState states[] = {BlobState::present, BlobState::remote, BlobState::partial,
                                BlobState::quarantined};
    {
        auto t = c.write();
        for (int i = 0; i < 4; ++i) t.put_blob(hx("0" + std::to_string(i)), rec(0, states[i]));
        t.commit();
    }
    auto t = c.read();
    for (int i = 0; i < 4; ++i)
        EXPECT_EQ(t.get_blob(hx("0" + std::to_string(i)))->state, states[i]);
    EXPECT_EQ(to_string(BlobState::present), "present");
    EXPECT_EQ(to_string(BlobState::remote), "remote");
    EXPECT_EQ(to_string(BlobState::partial), "partial");
    EXPECT_EQ(to_string(BlobState::quarantined), "quarantined");
}

TEST_F(CatalogTest, PutBlobReplacesTheRecord) {
    Catalog c = Catalog::open(dir_, true);
    {
        auto t = c.write();
        t.put_blob(hx("ab"), full_blob_record());
        t.commit();
    }
    BlobRecord small = rec(3, BlobState::quarantined);
    {
        auto t = c.write();
        t.put_blob(hx("ab"), small);
        t.commit();
    }
    auto r = c.read().get_blob(hx("ab"));
    ASSERT_TRUE(r);
    expect_blob_eq(*r, small);
}

TEST_F(CatalogTest, ModelRecordRoundTripsEveryField) {
    Catalog c = Catalog::open(dir_, true);
    const Model m = full_model();
    {
        auto t = c.write();
        t.put_model(m);
        t.commit();
    }
    c = Catalog::open(dir_, false);
    auto got = c.read().get_model("checkpoint/sdxl/juggernaut XL");
    ASSERT_TRUE(got);
    expect_model_eq(*got, m);
    EXPECT_EQ(got->key(), "checkpoint/sdxl/juggernaut XL");
    EXPECT_EQ(got->current_version().label, "diffusers");
    EXPECT_TRUE(got->current_version().is_tree());
    EXPECT_FALSE(got->versions[0].is_tree());
    // Keys are exact: no lookup by bare name or other category.
    EXPECT_FALSE(c.read().get_model("sdxl/juggernaut XL"));
    EXPECT_FALSE(c.read().get_model("lora/sdxl/juggernaut XL"));
}

TEST_F(CatalogTest, DeleteRecords) {
    Catalog c = Catalog::open(dir_, true);
    {
        auto t = c.write();
        t.put_blob(hx("01"), rec(1));
        t.put_blob(hx("02"), rec(2));
        t.put_model(simple_model(Category::lora, "a", hx("01")));
        t.put_model(simple_model(Category::lora, "b", hx("02")));
        t.commit();
    }
    {
        auto t = c.write();
        t.del_blob(hx("01"));
        t.del_model("lora/a");
        // Deleting what is not there is not an error.
        EXPECT_NO_THROW(t.del_blob(hx("99")));
        EXPECT_NO_THROW(t.del_model("lora/zzz"));
        t.commit();
    }
    auto t = c.read();
    EXPECT_FALSE(t.get_blob(hx("01")));
    EXPECT_TRUE(t.get_blob(hx("02")));
    EXPECT_FALSE(t.get_model("lora/a"));
    EXPECT_TRUE(t.get_model("lora/b"));
}

TEST_F(CatalogTest, TooLongModelKeyIsBadInput) {
    Catalog c = Catalog::open(dir_, true);
    auto t = c.write();
    try {
        t.put_model(simple_model(Category::lora, std::string(600, 'x'), hx("01")));
        FAIL();
    } catch (const StoreError& e) {
        EXPECT_EQ(e.kind(), ErrorKind::bad_input);
    }
    // The longest key LMDB takes still works.
    const std::string name(511 - std::string("lora/").size(), 'y');
    t.put_model(simple_model(Category::lora, name, hx("01")));
    t.commit();
    EXPECT_TRUE(c.read().get_model("lora/" + name));
}

TEST(CatalogTypes, ModelVersionHelpers) {
    ModelVersion a;
    a.blob = hx("01");
    ModelVersion b = a;
    b.label = "other label";
    b.size = 99;
    EXPECT_TRUE(a.same_content(b));
    EXPECT_EQ(a.blobs(), std::vector<Sha256>{hx("01")});
    b.blob = hx("02");
    EXPECT_FALSE(a.same_content(b));

    ModelVersion t1, t2;
    t1.tree = {{"a", hx("01"), 1}, {"b/c", hx("02"), 2}};
    t2.tree = t1.tree;
    EXPECT_TRUE(t1.is_tree());
    EXPECT_TRUE(t1.same_content(t2));
    EXPECT_EQ(t1.blobs(), (std::vector<Sha256>{hx("01"), hx("02")}));
    EXPECT_FALSE(t1.same_content(a));
    EXPECT_FALSE(a.same_content(t1));
    t2.tree[1].path = "b/d";  // same bytes at another path is other content
    EXPECT_FALSE(t1.same_content(t2));
    t2.tree = {t1.tree[0]};
    EXPECT_FALSE(t1.same_content(t2));

    // Sidecars are not the model's content, but gc must see their blobs as used.
    ModelVersion s = a;
    s.sidecars = {{".preview.png", hx("09"), 3}};
    EXPECT_TRUE(s.same_content(a));
    EXPECT_EQ(s.blobs(), (std::vector<Sha256>{hx("01"), hx("09")}));
    ASSERT_NE(s.sidecar(".preview.png"), nullptr);
    EXPECT_EQ(s.sidecar(".preview.png")->size, 3u);
    EXPECT_EQ(s.sidecar(".png"), nullptr);

    EXPECT_EQ(model_key(Category::lora, "sdxl/x"), "lora/sdxl/x");
    EXPECT_EQ(model_key(Category::diffusion_model, "flux"), "diffusion_model/flux");
}

// ---- Prefix lookup and iteration order -----------------------------------------------------

class CatalogPrefixTest : public CatalogTest {
  protected:
    void SetUp() override {
        cat_.emplace(Catalog::open(dir_, true));
        auto t = cat_->write();
        for (const char* p : {"ff", "ab12", "00", "abc0", "ab1f", "ac", "ab13", "ab12f"})
            t.put_blob(hx(p), rec(1));
        t.commit();
    }
    std::vector<std::string> find(std::string_view prefix, std::size_t limit = 100) {
        std::vector<std::string> out;
        for (const auto& h : cat_->read().blobs_with_prefix(prefix, limit)) out.push_back(h.hex());
        return out;
    }
    static std::string H(const char* p) { return hx(p).hex(); }
    std::optional<Catalog> cat_;
};

TEST_F(CatalogPrefixTest, OddAndEvenLengths) {
    EXPECT_EQ(find("a"), (std::vector<std::string>{H("ab12"), H("ab12f"), H("ab13"), H("ab1f"),
                                                   H("abc0"), H("ac")}));
    EXPECT_EQ(find("ab"),
              (std::vector<std::string>{H("ab12"), H("ab12f"), H("ab13"), H("ab1f"), H("abc0")}));
    EXPECT_EQ(find("ab1"), (std::vector<std::string>{H("ab12"), H("ab12f"), H("ab13"), H("ab1f")}));
    EXPECT_EQ(find("ab12"), (std::vector<std::string>{H("ab12"), H("ab12f")}));
    EXPECT_EQ(find("ab12f"), (std::vector<std::string>{H("ab12f")}));
    EXPECT_EQ(find("abc"), (std::vector<std::string>{H("abc0")}));
    EXPECT_EQ(find("0"), (std::vector<std::string>{H("00")}));
    EXPECT_EQ(find("f"), (std::vector<std::string>{H("ff")}));
    EXPECT_EQ(find("ff"), (std::vector<std::string>{H("ff")}));
}

TEST_F(CatalogPrefixTest, FullHashAndTooLong) {
    EXPECT_EQ(find(H("ab12")), (std::vector<std::string>{H("ab12")}));
    EXPECT_EQ(find(H("ab12").substr(0, 63)), (std::vector<std::string>{H("ab12")}));
    EXPECT_TRUE(find(H("ab12") + "0").empty());
}

TEST_F(CatalogPrefixTest, UppercaseMatches) {
    EXPECT_EQ(find("AB1"), find("ab1"));
    EXPECT_EQ(find("aB12F"), (std::vector<std::string>{H("ab12f")}));
    EXPECT_EQ(find("FF"), (std::vector<std::string>{H("ff")}));
}

TEST_F(CatalogPrefixTest, Limit) {
    EXPECT_EQ(find("ab", 2), (std::vector<std::string>{H("ab12"), H("ab12f")}));
    EXPECT_EQ(find("ab1", 1), (std::vector<std::string>{H("ab12")}));
    EXPECT_TRUE(find("ab", 0).empty());
}

TEST_F(CatalogPrefixTest, NoMatchAndBadInput) {
    EXPECT_TRUE(find("ad").empty());
    EXPECT_TRUE(find("b").empty());
    EXPECT_TRUE(find("ab14").empty());
    EXPECT_TRUE(find("fff").empty());  // past the last key
    EXPECT_TRUE(find("01").empty());   // between keys
    EXPECT_TRUE(find("").empty());
    EXPECT_TRUE(find("abz").empty());
    EXPECT_TRUE(find("xyz").empty());
}

TEST_F(CatalogTest, ForEachVisitsInKeyOrder) {
    Catalog c = Catalog::open(dir_, true);
    {
        auto t = c.write();
        for (const char* p : {"9", "01", "f", "00", "a", "10"}) t.put_blob(hx(p), rec(1));
        for (const char* n : {"zeta", "Alpha", "alpha", "beta/x", "beta"})
            t.put_model(simple_model(Category::lora, n, hx("01")));
        t.put_model(simple_model(Category::checkpoint, "zz", hx("01")));
        t.put_model(simple_model(Category::vae, "aa", hx("01")));
        t.commit();
    }
    std::vector<std::string> blobs, models;
    auto t = c.read();
    t.for_each_blob([&](const Sha256& h, const BlobRecord&) { blobs.push_back(h.hex()); });
    t.for_each_model([&](const Model& m) { models.push_back(m.key()); });
    EXPECT_EQ(blobs, (std::vector<std::string>{hx("00").hex(), hx("01").hex(), hx("10").hex(),
                                               hx("9").hex(), hx("a").hex(), hx("f").hex()}));
    EXPECT_EQ(models,
              (std::vector<std::string>{"checkpoint/zz", "lora/Alpha", "lora/alpha", "lora/beta",
                                        "lora/beta/x", "lora/zeta", "vae/aa"}));
}

TEST_F(CatalogTest, ForEachOnEmptyCatalogVisitsNothing) {
    Catalog c = Catalog::open(dir_, true);
    int n = 0;
    auto t = c.read();
    t.for_each_blob([&](const Sha256&, const BlobRecord&) { ++n; });
    t.for_each_model([&](const Model&) { ++n; });
    EXPECT_EQ(n, 0);
    EXPECT_TRUE(t.blobs_with_prefix("a", 10).empty());
}

// ---- Transactions --------------------------------------------------------------------------

TEST_F(CatalogTest, WriteTxnDestroyedWithoutCommitLeavesNothing) {
    Catalog c = Catalog::open(dir_, true);
    {
        auto t = c.write();
        t.put_blob(hx("01"), rec(1));
        t.put_model(simple_model(Category::lora, "gone", hx("01")));
        // Within the transaction the writes are visible.
        EXPECT_TRUE(t.get_blob(hx("01")));
        EXPECT_TRUE(t.get_model("lora/gone"));
    }
    {
        auto t = c.write();
        t.put_blob(hx("02"), rec(1));
        Txn moved = std::move(t);  // the moved-to object owns (and aborts) it
        Txn other = c.read();
        other = std::move(moved);
    }
    auto t = c.read();
    EXPECT_FALSE(t.get_blob(hx("01")));
    EXPECT_FALSE(t.get_blob(hx("02")));
    EXPECT_FALSE(t.get_model("lora/gone"));
    // And the write lock was released: another writer gets through.
    auto w = c.write();
    w.put_blob(hx("03"), rec(1));
    w.commit();
    EXPECT_TRUE(c.read().get_blob(hx("03")));
}

TEST_F(CatalogTest, ReadTxnRefusesWrites) {
    Catalog c = Catalog::open(dir_, true);
    auto t = c.read();
    EXPECT_THROW(t.put_blob(hx("01"), rec(1)), StoreError);
    EXPECT_THROW(t.put_model(simple_model(Category::lora, "x", hx("01"))), StoreError);
    EXPECT_FALSE(c.read().get_blob(hx("01")));
}

TEST_F(CatalogTest, TxnOutlivesItsCatalog) {
    std::optional<Txn> t;
    {
        Catalog c = Catalog::open(dir_, true);
        auto w = c.write();
        w.put_blob(hx("01"), rec(7));
        w.commit();
        t.emplace(c.read());
    }
    auto r = t->get_blob(hx("01"));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->size, 7u);
}

TEST_F(CatalogTest, ReaderKeepsItsSnapshotWhileAWriterCommits) {
    Catalog c = Catalog::open(dir_, true);
    {
        auto w = c.write();
        w.put_blob(hx("01"), rec(1));
        w.put_model(simple_model(Category::lora, "m", hx("01")));
        w.commit();
    }
    auto before = c.read();
    {
        auto w = c.write();
        w.put_blob(hx("02"), rec(2));
        w.put_blob(hx("01"), rec(100));  // changed
        w.del_model("lora/m");
        w.put_model(simple_model(Category::vae, "n", hx("02")));
        w.commit();
    }
    // Many more commits, so LMDB would reuse pages if the reader's snapshot were not pinned.
    for (int i = 0; i < 50; ++i) {
        auto w = c.write();
        for (int k = 0; k < 20; ++k)
            w.put_blob(hx("c" + std::to_string(i % 10) + std::to_string(k % 10), 'e'),
                       full_blob_record());
        w.commit();
    }
    EXPECT_EQ(before.get_blob(hx("01"))->size, 1u);
    EXPECT_FALSE(before.get_blob(hx("02")));
    EXPECT_TRUE(before.get_model("lora/m"));
    EXPECT_FALSE(before.get_model("vae/n"));
    std::size_t n = 0;
    before.for_each_blob([&](const Sha256&, const BlobRecord&) { ++n; });
    EXPECT_EQ(n, 1u);

    auto after = c.read();
    EXPECT_EQ(after.get_blob(hx("01"))->size, 100u);
    EXPECT_TRUE(after.get_blob(hx("02")));
    EXPECT_FALSE(after.get_model("lora/m"));
    EXPECT_TRUE(after.get_model("vae/n"));
}

TEST_F(CatalogTest, OneWriterAtATime) {
    Catalog c = Catalog::open(dir_, true);
    auto first = c.write();
    first.put_blob(hx("01"), rec(1));

    std::atomic<bool> started{false}, acquired{false};
    std::optional<bool> second_saw_first;
    std::thread second([&] {
        started = true;
        auto w = c.write();  // blocks until `first` is done
        acquired = true;
        second_saw_first = w.get_blob(hx("01")).has_value();
        w.put_blob(hx("02"), rec(2));
        w.commit();
    });
    while (!started) std::this_thread::yield();
    // Give the second writer a moment to reach the lock; it must still be waiting.
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    EXPECT_FALSE(acquired.load());
    first.commit();
    second.join();
    ASSERT_TRUE(second_saw_first.has_value());
    EXPECT_TRUE(*second_saw_first) << "the second writer started before the first committed";
    auto t = c.read();
    EXPECT_TRUE(t.get_blob(hx("01")));
    EXPECT_TRUE(t.get_blob(hx("02")));
}

TEST_F(CatalogTest, TwoCatalogObjectsSeeEachOthersCommits) {
    Catalog a = Catalog::open(dir_, true);
    Catalog b = Catalog::open(dir_, false);
    {
        auto w = a.write();
        w.put_blob(hx("0a"), rec(10));
        w.commit();
    }
    EXPECT_EQ(b.read().get_blob(hx("0a"))->size, 10u);
    {
        auto w = b.write();
        w.put_model(simple_model(Category::vae, "from-b", hx("0a")));
        w.del_blob(hx("0a"));
        w.commit();
    }
    auto ta = a.read();
    EXPECT_TRUE(ta.get_model("vae/from-b"));
    EXPECT_FALSE(ta.get_blob(hx("0a")));
}

// A real second process, as the CLI and the mount daemon are.
TEST_F(CatalogTest, ChildProcessCommitsAreVisibleAndSnapshotsHold) {
    Catalog parent = Catalog::open(dir_, true);
    {
        auto w = parent.write();
        w.put_blob(hx("01"), rec(1));
        w.commit();
    }
    auto old_snapshot = parent.read();

    auto run_child = [&](auto&& body) {
        pid_t pid = ::fork();
        if (pid == 0) {
            int code = 1;
            try {
                code = body();
            } catch (...) {
                code = 3;
            }
            ::_exit(code);
        }
        return mt::wait_child(pid);
    };

    // The child writes.
    EXPECT_EQ(run_child([&] {
                  Catalog c = Catalog::open(dir_, false);
                  auto w = c.write();
                  w.put_blob(hx("02"), rec(2));
                  w.put_model(simple_model(Category::lora, "child", hx("02")));
                  w.commit();
                  return 0;
              }),
              0);
    auto now = parent.read();
    EXPECT_TRUE(now.get_blob(hx("02")));
    EXPECT_TRUE(now.get_model("lora/child"));
    EXPECT_FALSE(old_snapshot.get_blob(hx("02")));
    EXPECT_FALSE(old_snapshot.get_model("lora/child"));

    // The parent writes; a new child reads it.
    {
        auto w = parent.write();
        w.put_blob(hx("03"), rec(3));
        w.commit();
    }
    EXPECT_EQ(run_child([&] {
                  Catalog c = Catalog::open(dir_, false);
                  auto r = c.read().get_blob(hx("03"));
                  return r && r->size == 3 ? 0 : 2;
              }),
              0);
}

}  // namespace
}  // namespace modelfs

namespace modelfs {
namespace {
namespace mt = modelfs::testing;
TEST(CatalogTxnId, ReadTransactionsKnowTheCommitTheySee) {
    mt::TempDir tmp("modelfs-txnid");
    Catalog c = Catalog::open(tmp.path() / "catalog", true);
    const std::uint64_t before = c.read().id();
    EXPECT_EQ(before, c.last_txn_id());
    auto r = c.read();  // a snapshot taken before the next commit keeps its id
    {
        auto w = c.write();
        BlobRecord rec;
        rec.size = 1;
        w.put_blob(Sha256{}, rec);
        w.commit();
    }
    EXPECT_EQ(r.id(), before);
    EXPECT_EQ(c.read().id(), before + 1);
    EXPECT_EQ(c.last_txn_id(), before + 1);
}
}  // namespace
}  // namespace modelfs
