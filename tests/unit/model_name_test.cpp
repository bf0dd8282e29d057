// A file's name, extension included, is its identity in a folder (model_name.h), and the
// upgrade of older catalogs to it (split_by_extension, Catalog::open).
#include "modelfs/store/model_name.h"

#include <gtest/gtest.h>
#include <lmdb.h>

#include <filesystem>
#include <stdexcept>

#include "modelfs/store/catalog.h"
#include "modelfs/store/errors.h"
#include "support/test_env.h"

namespace modelfs {
namespace {

namespace stdfs = std::filesystem;

Sha256 hx(char fill) {
    return *Sha256::from_hex(std::string(64, fill));
}

ModelVersion file_version(std::string label, char fill, std::string ext, std::int64_t added) {
    ModelVersion v;
    v.label = std::move(label);
    v.blob = hx(fill);
    v.ext = std::move(ext);
    v.size = 10;
    v.added = added;
    return v;
}

TEST(ModelName, SplitExtensionKnowsCompoundOnesAndLooksAtTheLeafOnly) {
    using P = std::pair<std::string, std::string>;
    EXPECT_EQ(split_extension("sdxl/foo.safetensors"), (P{"sdxl/foo", ".safetensors"}));
    EXPECT_EQ(split_extension("foo.SafeTensors"), (P{"foo", ".SafeTensors"}));
    EXPECT_EQ(split_extension("inpaint_v26.fooocus.patch"), (P{"inpaint_v26", ".fooocus.patch"}));
    EXPECT_EQ(split_extension("x.vae.safetensors"), (P{"x.vae", ".safetensors"}));
    EXPECT_EQ(split_extension("v1.5/model"), (P{"v1.5/model", ""}));
    EXPECT_EQ(split_extension(".hidden"), (P{".hidden", ""}));
    EXPECT_EQ(split_extension("dir/.hidden"), (P{"dir/.hidden", ""}));
}

TEST(ModelName, LeafOfIsTheLastComponent) {
    EXPECT_EQ(leaf_of("sdxl/set3/foo.safetensors"), "foo.safetensors");
    EXPECT_EQ(leaf_of("foo.pt"), "foo.pt");
    EXPECT_EQ(leaf_of("dir/"), "");
    EXPECT_EQ(leaf_of(""), "");
}

TEST(ModelName, SingleFileNameAppendsTheExtensionUnlessTheNameHasIt) {
    auto n = single_file_name("foo", ".safetensors");
    EXPECT_EQ(n.name, "foo.safetensors");
    EXPECT_EQ(n.ext, ".safetensors");
    n = single_file_name("sdxl/foo.safetensors", ".safetensors");
    EXPECT_EQ(n.name, "sdxl/foo.safetensors");
    // Any case: the name's spelling is the file's.
    n = single_file_name("foo.SafeTensors", ".safetensors");
    EXPECT_EQ(n.name, "foo.SafeTensors");
    EXPECT_EQ(n.ext, ".SafeTensors");
    n = single_file_name("foo.v2", ".pt");
    EXPECT_EQ(n.name, "foo.v2.pt");
    EXPECT_EQ(single_file_name("foo", "").name, "foo");
    EXPECT_EQ(name_stem("sdxl/foo.safetensors", ".safetensors"), "sdxl/foo");
    EXPECT_EQ(name_stem("diffusers-model", ""), "diffusers-model");
}

// A file nobody named (a folder import, a hub cache's single-file repo) is its leaf, extension
// included: the same rule as single_file_name, never a stem.
TEST(ModelName, FileModelNameIsTheLeafWithItsExtension) {
    auto n = file_model_name("detail_tweaker.safetensors");
    EXPECT_EQ(n.name, "detail_tweaker.safetensors");
    EXPECT_EQ(n.ext, ".safetensors");
    n = file_model_name("flux1-dev-Q4_K_S.gguf");
    EXPECT_EQ(n.name, "flux1-dev-Q4_K_S.gguf");
    EXPECT_EQ(n.ext, ".gguf");
    n = file_model_name("inpaint_v26.fooocus.patch");
    EXPECT_EQ(n.name, "inpaint_v26.fooocus.patch");
    EXPECT_EQ(n.ext, ".fooocus.patch");
    n = file_model_name("Foo.SafeTensors");
    EXPECT_EQ(n.name, "Foo.SafeTensors");
    EXPECT_EQ(n.ext, ".SafeTensors");
    n = file_model_name("README");
    EXPECT_EQ(n.name, "README");
    EXPECT_EQ(n.ext, "");
}

TEST(ModelName, AVersionWithAnotherExtensionIsAnotherModel) {
    Model m;
    m.category = Category::lora;
    m.name = "foo.safetensors";
    m.add_version(file_version("", '1', ".safetensors", 1), std::nullopt);
    try {
        m.add_version(file_version("", '2', ".pt", 2), std::nullopt);
        FAIL() << "a .pt became a version of " << m.key();
    } catch (const StoreError& e) {
        EXPECT_EQ(e.kind(), ErrorKind::conflict);
        EXPECT_NE(std::string(e.what()).find("foo.safetensors.pt"), std::string::npos) << e.what();
    }
    EXPECT_EQ(m.versions.size(), 1u);
    EXPECT_EQ(m.stem(), "foo");
}

// The finding's store: a .pt saved beside foo.safetensors became v2 of model "foo".
Model old_mixed_model() {
    Model m;
    m.category = Category::lora;
    m.name = "foo";
    m.versions = {file_version("v1", '1', ".safetensors", 100), file_version("v2", '2', ".pt", 200),
                  file_version("v3", '3', ".safetensors", 300),
                  file_version("v4", '4', ".pt", 400)};
    m.current = 1;      // v2, a .pt
    m.previous = "v3";  // a .safetensors
    m.pins = {{"a1111", "v1"}, {"comfyui", "v4"}};
    m.switched_ns = 5'000'000'000'000;
    return m;
}

TEST(ModelName, SplitByExtensionKeepsEachVersionWithItsLabelsPinsAndCurrent) {
    auto parts = split_by_extension(old_mixed_model());
    ASSERT_EQ(parts.size(), 2u);
    const Model& st = parts[0];
    const Model& pt = parts[1];
    EXPECT_EQ(st.key(), "lora/foo.safetensors");
    EXPECT_EQ(pt.key(), "lora/foo.pt");
    ASSERT_EQ(st.versions.size(), 2u);
    ASSERT_EQ(pt.versions.size(), 2u);
    EXPECT_EQ(st.versions[0].label, "v1");
    EXPECT_EQ(st.versions[1].label, "v3");
    EXPECT_EQ(pt.versions[0].label, "v2");
    EXPECT_EQ(pt.versions[1].label, "v4");
    // The old current (v2) stays current in its part; the other part shows its newest.
    EXPECT_EQ(pt.current_version().label, "v2");
    EXPECT_EQ(st.current_version().label, "v3");
    EXPECT_EQ(st.previous, "v3");
    EXPECT_EQ(pt.previous, "");
    EXPECT_EQ(st.pins, (std::map<std::string, std::string>{{"a1111", "v1"}}));
    EXPECT_EQ(pt.pins, (std::map<std::string, std::string>{{"comfyui", "v4"}}));
    EXPECT_EQ(st.switched_ns, 5'000'000'000'000);
    EXPECT_EQ(pt.switched_ns, 5'000'000'000'000);
    // A model of one extension is renamed only; a tree keeps its name.
    Model one = old_mixed_model();
    one.versions.resize(1);
    one.current = 0;
    auto renamed = split_by_extension(one);
    ASSERT_EQ(renamed.size(), 1u);
    EXPECT_EQ(renamed[0].name, "foo.safetensors");
    Model tree;
    tree.category = Category::diffusers;
    tree.name = "sd-1.5";
    ModelVersion tv;
    tv.label = "v1";
    tv.tree = {{"model_index.json", hx('5'), 1}};
    tree.versions = {tv};
    auto kept = split_by_extension(tree);
    ASSERT_EQ(kept.size(), 1u);
    EXPECT_EQ(kept[0].name, "sd-1.5");
}

void set_schema(const stdfs::path& dir, const std::string& value) {
    MDB_env* env = nullptr;
    auto check = [](int rc) {
        if (rc != MDB_SUCCESS) throw std::runtime_error(mdb_strerror(rc));
    };
    check(mdb_env_create(&env));
    check(mdb_env_set_maxdbs(env, 8));
    check(mdb_env_set_mapsize(env, std::size_t{32} << 30));
    check(mdb_env_open(env, dir.c_str(), 0, 0600));
    MDB_txn* txn = nullptr;
    check(mdb_txn_begin(env, nullptr, 0, &txn));
    MDB_dbi dbi;
    check(mdb_dbi_open(txn, "meta", 0, &dbi));
    const std::string key = "schema";
    MDB_val k{key.size(), const_cast<char*>(key.data())};
    MDB_val v{value.size(), const_cast<char*>(value.data())};
    check(mdb_put(txn, dbi, &k, &v, 0));
    check(mdb_txn_commit(txn));
    mdb_env_close(env);
}

// A schema-3 catalog (models keyed without extension, a lock holding versions by those keys),
// written through the catalog's own record code and then marked 3, opened by this build.
TEST(ModelName, OpeningASchemaThreeCatalogRenamesAndSplitsModelsAndTheirLocks) {
    testing::TempDir tmp;
    const stdfs::path dir = tmp.path() / "catalog";
    {
        Catalog c = Catalog::open(dir, true);
        auto t = c.write();
        t.put_model(old_mixed_model());
        Model plain;
        plain.category = Category::checkpoint;
        plain.name = "sdxl/base";
        plain.versions = {file_version("v1", '6', ".ckpt", 100)};
        t.put_model(plain);
        LockHold l;
        l.id = "0123456789abcdef";
        l.name = "/tmp/x.lock";
        l.versions = {
            {"lora/foo", hx('1')}, {"lora/foo", hx('4')}, {"checkpoint/sdxl/base", hx('6')}};
        t.put_lock(l);
        t.commit();
    }
    set_schema(dir, "3");
    Catalog c = Catalog::open(dir, false);
    EXPECT_EQ(c.schema_version(), kSchemaVersion);
    auto t = c.read();
    EXPECT_FALSE(t.get_model("lora/foo"));
    EXPECT_FALSE(t.get_model("checkpoint/sdxl/base"));
    auto st = t.get_model("lora/foo.safetensors");
    auto pt = t.get_model("lora/foo.pt");
    auto base = t.get_model("checkpoint/sdxl/base.ckpt");
    ASSERT_TRUE(st && pt && base);
    EXPECT_EQ(st->versions.size(), 2u);
    EXPECT_EQ(pt->current_version().label, "v2");
    EXPECT_EQ(st->current_version().label, "v3");
    EXPECT_EQ(st->pins.at("a1111"), "v1");
    EXPECT_EQ(pt->pins.at("comfyui"), "v4");
    auto locks = t.locks();
    ASSERT_EQ(locks.size(), 1u);
    EXPECT_EQ(locks[0].versions, (std::vector<std::pair<std::string, Sha256>>{
                                     {"lora/foo.safetensors", hx('1')},
                                     {"lora/foo.pt", hx('4')},
                                     {"checkpoint/sdxl/base.ckpt", hx('6')}}));
    // Upgraded once: opening again changes nothing.
    t = c.read();
    Catalog again = Catalog::open(dir, false);
    int n = 0;
    again.read().for_each_model([&](const Model&) { ++n; });
    EXPECT_EQ(n, 3);
}

}  // namespace
}  // namespace modelfs
