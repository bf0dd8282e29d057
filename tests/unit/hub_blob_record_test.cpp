// The `unverified` flag of blob records (import --hf-cache / --ollama): an optional CBOR key, so
// stores written before it, and records without it, read as verified.
#include <gtest/gtest.h>
#include <lmdb.h>

#include <nlohmann/json.hpp>

#include "modelfs/store/catalog.h"
#include "support/test_env.h"

namespace stdfs = std::filesystem;
using namespace modelfs;
using namespace modelfs::testing;

namespace {

Sha256 key(std::uint8_t b) {
    Sha256 h;
    h.bytes.fill(b);
    return h;
}

// The raw CBOR of a blob record, read through LMDB's C API as an older modelfs would see it.
nlohmann::json raw_record(const stdfs::path& dir, const Sha256& h) {
    MDB_env* env = nullptr;
    EXPECT_EQ(mdb_env_create(&env), 0);
    mdb_env_set_maxdbs(env, 8);
    mdb_env_set_mapsize(env, std::size_t{32} << 30);
    EXPECT_EQ(mdb_env_open(env, dir.c_str(), MDB_NOTLS | MDB_RDONLY, 0644), 0);
    MDB_txn* txn = nullptr;
    EXPECT_EQ(mdb_txn_begin(env, nullptr, MDB_RDONLY, &txn), 0);
    MDB_dbi dbi;
    EXPECT_EQ(mdb_dbi_open(txn, "blobs", 0, &dbi), 0);
    MDB_val k{h.bytes.size(), const_cast<std::uint8_t*>(h.bytes.data())}, v;
    EXPECT_EQ(mdb_get(txn, dbi, &k, &v), 0);
    const auto* p = static_cast<const std::uint8_t*>(v.mv_data);
    auto j = nlohmann::json::from_cbor(p, p + v.mv_size);
    mdb_txn_abort(txn);
    mdb_env_close(env);
    return j;
}

TEST(HubBlobRecord, UnverifiedIsAnOptionalKeyThatRoundTrips) {
    TempDir dir("modelfs-hub-record");
    {
        Catalog c = Catalog::open(dir.path(), true);
        auto txn = c.write();
        BlobRecord trusted;
        trusted.size = 10;
        trusted.unverified = true;
        txn.put_blob(key(1), trusted);
        BlobRecord plain;
        plain.size = 20;
        txn.put_blob(key(2), plain);
        txn.commit();
        EXPECT_EQ(c.schema_version(), kSchemaVersion) << "no schema bump: older readers ignore it";
    }
    Catalog c = Catalog::open(dir.path(), false);
    auto txn = c.read();
    EXPECT_TRUE(txn.get_blob(key(1))->unverified);
    EXPECT_FALSE(txn.get_blob(key(2))->unverified);
    // Verified records carry no key at all: their bytes are what older versions wrote.
    EXPECT_EQ(raw_record(dir.path(), key(1)).value("unverified", false), true);
    EXPECT_FALSE(raw_record(dir.path(), key(2)).contains("unverified"));
    EXPECT_EQ(raw_record(dir.path(), key(1))["state"], "present");
}

}  // namespace
