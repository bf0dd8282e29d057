// Remote models in the store (store/src/remote_models.cpp): add_remote (records in state remote,
// placeholders, sources merged into present blobs, versions as import makes them), touch_accessed,
// set_keep, the cache quota's evict (LRU; never pinned, source-less or open blobs), and how gc,
// verify and stats treat remote blobs. Real stores in temp dirs; no network.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/file.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "modelfs/store/catalog.h"
#include "modelfs/store/errors.h"
#include "modelfs/store/hash.h"
#include "modelfs/store/store.h"
#include "modelfs/store/unique_fd.h"
#include "support/test_env.h"

namespace modelfs {
namespace {

namespace stdfs = std::filesystem;
namespace mt = modelfs::testing;

Sha256 fake(char fill) {
    return *Sha256::from_hex(std::string(64, fill));
}

RemoteFile rfile(std::optional<Sha256> sha, std::uint64_t size, std::vector<std::string> urls,
                 std::string path = "") {
    RemoteFile f;
    f.path = std::move(path);
    f.sha256 = sha;
    f.size = size;
    for (auto& u : urls) f.sources.push_back({u, false});
    return f;
}

RemoteModel single(const std::string& name, RemoteFile f, std::optional<std::string> label = {}) {
    RemoteModel m;
    m.category = Category::lora;
    m.name = name;
    m.ext = ".safetensors";
    m.label = std::move(label);
    m.files.push_back(std::move(f));
    return m;
}

std::vector<std::string> urls_of(const BlobRecord& r) {
    std::vector<std::string> out;
    for (const auto& s : r.sources) out.push_back(s.url);
    return out;
}

class RemoteStoreTest : public ::testing::Test {
  protected:
    mt::TempDir dir_{"modelfs-remote"};
    std::optional<Store> store_;

    void SetUp() override { store_.emplace(Store::init(dir_ / "store")); }
    Store& s() { return *store_; }

    std::optional<BlobRecord> rec(const Sha256& h) { return s().catalog().read().get_blob(h); }
    std::optional<Model> model(const std::string& key) {
        return s().catalog().read().get_model(key);
    }

    // Imports a random file as lora/NAME; returns its hash.
    Sha256 import(const std::string& name, std::uint64_t size, std::uint64_t seed) {
        stdfs::path p = dir_ / "src" / (name + ".bin");
        stdfs::create_directories(p.parent_path());
        mt::write_random_file(p, size, seed);
        ImportOptions o;
        o.category = Category::lora;
        o.name = name;
        auto r = s().import({p}, o);
        EXPECT_TRUE(r.ok());
        return *Sha256::from_hex(mt::sha256_hex_of_file(p));
    }

    // A stored blob that can be downloaded again, last used at `accessed`.
    Sha256 refetchable(const std::string& name, std::uint64_t size, std::uint64_t seed,
                       std::int64_t accessed) {
        Sha256 h = import(name, size, seed);
        s().add_remote(single(name, rfile(h, size, {"https://example.org/" + name})));
        auto txn = s().catalog().write();
        auto r = txn.get_blob(h);
        r->accessed = accessed;
        txn.put_blob(h, *r);
        txn.commit();
        return h;
    }
};

// ---- add_remote -----------------------------------------------------------------------------

TEST_F(RemoteStoreTest, AddRegistersARemoteBlobAndAModelVersion) {
    const Sha256 h = fake('a');
    RemoteModel m = single("foo", rfile(h, 1234,
                                        {"https://user:secret@example.org/foo.safetensors?token=x",
                                         "hf://owner/repo/foo.safetensors"}));
    m.note = "from the web";
    RemoteAddResult r = s().add_remote(m);
    EXPECT_EQ(r.model_key, "lora/foo.safetensors");
    EXPECT_EQ(r.label, "v1");
    EXPECT_TRUE(r.new_version);
    EXPECT_EQ(r.present, 0u);
    EXPECT_EQ(r.remote, 1u);
    ASSERT_EQ(r.blobs, std::vector<Sha256>{h});

    auto b = rec(h);
    ASSERT_TRUE(b);
    EXPECT_EQ(b->state, BlobState::remote);
    EXPECT_EQ(b->size, 1234u);
    EXPECT_FALSE(b->placeholder);
    EXPECT_EQ(urls_of(*b),
              (std::vector<std::string>{"https://user:secret@example.org/foo.safetensors?token=x",
                                        "hf://owner/repo/foo.safetensors"}))
        << "a download needs the full URL";
    EXPECT_FALSE(stdfs::exists(s().blobs().path_of(h)));

    auto mod = model("lora/foo.safetensors");
    ASSERT_TRUE(mod);
    const ModelVersion& v = mod->current_version();
    EXPECT_EQ(v.blob, h);
    EXPECT_EQ(v.ext, ".safetensors");
    EXPECT_EQ(v.size, 1234u);
    EXPECT_EQ(v.note, "from the web");
    EXPECT_EQ(v.source, "https://example.org/foo.safetensors") << "credentials and query go";
}

TEST_F(RemoteStoreTest, ContentAlreadyStoredOnlyGainsSources) {
    const Sha256 h = import("local", 4096, 1);
    RemoteAddResult r = s().add_remote(single("web", rfile(h, 4096, {"https://example.org/w"})));
    EXPECT_EQ(r.present, 1u);
    EXPECT_EQ(r.remote, 0u);
    auto b = rec(h);
    EXPECT_EQ(b->state, BlobState::present);
    EXPECT_TRUE(b->xxh128) << "the present record keeps what import recorded";
    EXPECT_EQ(urls_of(*b), std::vector<std::string>{"https://example.org/w"});
    EXPECT_EQ(model("lora/web.safetensors")->current_version().blob, h);
}

TEST_F(RemoteStoreTest, SourcesMergeInOrderWithoutDuplicates) {
    const Sha256 h = fake('b');
    s().add_remote(single("a", rfile(h, 10, {"https://one/x", "https://two/x"})));
    RemoteFile f = rfile(h, 10, {"https://two/x", "https://three/x"});
    f.sources[0].stream = true;
    s().add_remote(single("b", f));
    auto b = rec(h);
    EXPECT_EQ(urls_of(*b),
              (std::vector<std::string>{"https://one/x", "https://two/x", "https://three/x"}));
    EXPECT_TRUE(b->sources[1].stream) << "the newest word on streaming wins";
    EXPECT_FALSE(b->sources[0].stream);
}

TEST_F(RemoteStoreTest, WithoutAHashTheKeyIsAPlaceholderOfTheFirstUrl) {
    RemoteAddResult r = s().add_remote(single("p", rfile(std::nullopt, 77, {"https://h/p.bin"})));
    const Sha256 key = sha256_of("modelfs-placeholder:https://h/p.bin");
    ASSERT_EQ(r.blobs, std::vector<Sha256>{key});
    auto b = rec(key);
    ASSERT_TRUE(b);
    EXPECT_TRUE(b->placeholder);
    EXPECT_EQ(b->state, BlobState::remote);
    EXPECT_EQ(b->size, 77u);
    // The same URL again is the same record and the same version.
    RemoteAddResult again =
        s().add_remote(single("p", rfile(std::nullopt, 77, {"https://h/p.bin"})));
    EXPECT_FALSE(again.new_version);
    EXPECT_EQ(again.label, "v1");
    EXPECT_EQ(model("lora/p.safetensors")->versions.size(), 1u);
}

TEST_F(RemoteStoreTest, VersionsFollowImportRules) {
    s().add_remote(single("m", rfile(fake('1'), 1, {"https://h/1"})));
    auto same = s().add_remote(single("m", rfile(fake('1'), 1, {"https://h/1b"})));
    EXPECT_FALSE(same.new_version);
    EXPECT_EQ(same.label, "v1");
    auto second = s().add_remote(single("m", rfile(fake('2'), 2, {"https://h/2"})));
    EXPECT_TRUE(second.new_version);
    EXPECT_EQ(second.label, "v2");
    auto labelled = s().add_remote(single("m", rfile(fake('3'), 3, {"https://h/3"}), "final"));
    EXPECT_EQ(labelled.label, "final");
    auto back = s().add_remote(single("m", rfile(fake('1'), 1, {"https://h/1"})));
    EXPECT_EQ(back.label, "v1");
    EXPECT_TRUE(back.new_version) << "an older version became current again";
    EXPECT_EQ(model("lora/m.safetensors")->current_version().label, "v1");
    try {
        s().add_remote(single("m", rfile(fake('4'), 4, {"https://h/4"}), "final"));
        ADD_FAILURE() << "a taken label with other content must be refused";
    } catch (const StoreError& e) {
        EXPECT_EQ(e.kind(), ErrorKind::conflict);
        EXPECT_NE(std::string(e.what()).find("final"), std::string::npos) << e.what();
    }
    EXPECT_FALSE(rec(fake('4'))) << "nothing of a refused add is written";
    EXPECT_EQ(model("lora/m.safetensors")->versions.size(), 3u);
}

TEST_F(RemoteStoreTest, ASizeThatContradictsTheRecordIsRefused) {
    const Sha256 h = import("x", 100, 2);
    try {
        s().add_remote(single("y", rfile(h, 101, {"https://h/y"})));
        ADD_FAILURE() << "accepted a wrong size";
    } catch (const StoreError& e) {
        EXPECT_EQ(e.kind(), ErrorKind::conflict);
        EXPECT_NE(std::string(e.what()).find(h.hex()), std::string::npos) << e.what();
    }
    EXPECT_FALSE(model("lora/y.safetensors"));
    EXPECT_TRUE(rec(h)->sources.empty());
}

TEST_F(RemoteStoreTest, BadModelsAreRefusedAndNothingIsWritten) {
    auto refused = [&](RemoteModel m, const std::string& says) {
        try {
            s().add_remote(m);
            ADD_FAILURE() << "accepted " << m.name;
        } catch (const StoreError& e) {
            EXPECT_EQ(e.kind(), ErrorKind::bad_input) << e.what();
            EXPECT_NE(std::string(e.what()).find(says), std::string::npos) << e.what();
        }
    };
    refused(single("a/../b", rfile(fake('c'), 1, {"https://h/c"})), "invalid model name");
    refused(single("a@b", rfile(fake('c'), 1, {"https://h/c"})), "'@'");
    refused(single("nosrc", rfile(fake('c'), 1, {})), "no source");
    RemoteModel t;
    t.category = Category::diffusers;
    t.name = "tree";
    t.tree = true;
    t.files = {rfile(fake('c'), 1, {"https://h/c"}, "unet/../x")};
    refused(t, "invalid file path");
    t.files = {rfile(fake('c'), 1, {"https://h/c"}, "a"),
               rfile(fake('d'), 1, {"https://h/d"}, "a")};
    refused(t, "listed twice");
    t.tree = false;
    refused(t, "exactly one file");
    EXPECT_FALSE(rec(fake('c')));
    std::size_t models = 0;
    s().catalog().read().for_each_model([&](const Model&) { ++models; });
    EXPECT_EQ(models, 0u);
}

TEST_F(RemoteStoreTest, TreeModelsSortTheirFilesAndSumTheirSizes) {
    RemoteModel t;
    t.category = Category::diffusers;
    t.name = "pipe";
    t.tree = true;
    t.files = {rfile(fake('e'), 10, {"https://h/unet"}, "unet/model.safetensors"),
               rfile(std::nullopt, 5, {"https://h/index"}, "model_index.json")};
    RemoteAddResult r = s().add_remote(t);
    EXPECT_EQ(r.remote, 2u);
    const ModelVersion v = model("diffusers/pipe")->current_version();
    ASSERT_TRUE(v.is_tree());
    ASSERT_EQ(v.tree.size(), 2u);
    EXPECT_EQ(v.tree[0].path, "model_index.json");
    EXPECT_EQ(v.tree[0].blob, sha256_of("modelfs-placeholder:https://h/index"));
    EXPECT_EQ(v.tree[1].path, "unet/model.safetensors");
    EXPECT_EQ(v.size, 15u);
}

TEST_F(RemoteStoreTest, TouchAndKeep) {
    const Sha256 h = fake('f');
    s().add_remote(single("k", rfile(h, 1, {"https://h/k"})));
    EXPECT_EQ(rec(h)->accessed, 0);
    s().touch_accessed({h, fake('9')});  // unknown blobs are ignored
    EXPECT_GT(rec(h)->accessed, 0);
    s().set_keep(h, true);
    EXPECT_TRUE(rec(h)->keep);
    s().set_keep(h, false);
    EXPECT_FALSE(rec(h)->keep);
    try {
        s().set_keep(fake('9'), true);
        ADD_FAILURE() << "kept an unknown blob";
    } catch (const StoreError& e) {
        EXPECT_EQ(e.kind(), ErrorKind::not_found);
    }
}

// ---- evict ----------------------------------------------------------------------------------

TEST_F(RemoteStoreTest, EvictRemovesLeastRecentlyUsedFirstAndKeepsTheCatalog) {
    const Sha256 old = refetchable("old", 1000, 10, 100);
    const Sha256 mid = refetchable("mid", 1000, 11, 200);
    const Sha256 fresh = refetchable("fresh", 1000, 12, 300);
    EvictReport r = s().evict(1500, false);
    ASSERT_EQ(r.evicted.size(), 2u);
    EXPECT_EQ(r.evicted[0].blob, old);
    EXPECT_EQ(r.evicted[0].accessed, 100);
    EXPECT_EQ(r.evicted[1].blob, mid);
    EXPECT_EQ(r.bytes, 2000u);
    EXPECT_EQ(r.store_bytes, 1000u);
    for (const Sha256& h : {old, mid}) {
        EXPECT_FALSE(stdfs::exists(s().blobs().path_of(h)));
        EXPECT_EQ(rec(h)->state, BlobState::remote);
        EXPECT_EQ(rec(h)->sources.size(), 1u);
    }
    EXPECT_EQ(rec(fresh)->state, BlobState::present);
    EXPECT_TRUE(stdfs::exists(s().blobs().path_of(fresh)));
    EXPECT_EQ(model("lora/old.safetensors")->current_version().blob, old) << "models stay";
    EXPECT_TRUE(s().evict(1500, false).evicted.empty()) << "under the quota: nothing to do";
}

TEST_F(RemoteStoreTest, EvictNeverTakesPinnedSourcelessOrOpenBlobs) {
    const Sha256 pinned = refetchable("pinned", 1000, 20, 1);
    s().set_keep(pinned, true);
    const Sha256 local = import("local", 1000, 21);  // no source: the only copy
    {
        auto txn = s().catalog().write();
        auto r = txn.get_blob(local);
        r->accessed = 2;
        txn.put_blob(local, *r);
        txn.commit();
    }
    const Sha256 open = refetchable("open", 1000, 22, 3);
    const Sha256 spare = refetchable("spare", 1000, 23, 4);
    // What a mount does with a blob a tool has open.
    UniqueFd fd(::open(s().blobs().path_of(open).c_str(), O_RDONLY | O_CLOEXEC));
    ASSERT_TRUE(fd);
    ASSERT_EQ(::flock(fd.get(), LOCK_SH), 0);

    EvictReport r = s().evict(0, false);
    ASSERT_EQ(r.evicted.size(), 1u);
    EXPECT_EQ(r.evicted[0].blob, spare);
    EXPECT_EQ(r.skipped_open, 1u);
    EXPECT_EQ(r.store_bytes, 3000u);
    for (const Sha256& h : {pinned, local, open}) {
        EXPECT_EQ(rec(h)->state, BlobState::present) << h.hex();
        EXPECT_TRUE(stdfs::exists(s().blobs().path_of(h)));
    }
    fd.reset();  // closed: now it may go
    r = s().evict(0, false);
    ASSERT_EQ(r.evicted.size(), 1u);
    EXPECT_EQ(r.evicted[0].blob, open);
}

TEST_F(RemoteStoreTest, EvictDryRunChangesNothing) {
    const Sha256 h = refetchable("d", 1000, 30, 1);
    EvictReport r = s().evict(0, true);
    ASSERT_EQ(r.evicted.size(), 1u);
    EXPECT_EQ(r.bytes, 1000u);
    EXPECT_EQ(rec(h)->state, BlobState::present);
    EXPECT_TRUE(stdfs::exists(s().blobs().path_of(h)));
}

// ---- gc, verify, stats ----------------------------------------------------------------------

TEST_F(RemoteStoreTest, GcKeepsRemoteRecordsModelsUseAndDropsTheRest) {
    const Sha256 used = fake('a');
    const Sha256 unused = fake('b');
    s().add_remote(single("used", rfile(used, 10, {"https://h/used"})));
    s().add_remote(single("gone", rfile(unused, 20, {"https://h/gone"})));
    ASSERT_TRUE(s().remove_model("lora/gone.safetensors"));
    GcReport g = s().gc(false);
    ASSERT_EQ(g.blobs.size(), 1u);
    EXPECT_EQ(g.blobs[0].first, unused);
    EXPECT_EQ(g.bytes, 0u) << "a remote blob frees nothing";
    EXPECT_TRUE(rec(used));
    EXPECT_FALSE(rec(unused));
}

TEST_F(RemoteStoreTest, GcRemovesPartialDownloadsOfDeletedRecordsUnlessOneIsRunning) {
    const Sha256 used = fake('a'), idle = fake('b'), busy = fake('c');
    s().add_remote(single("used", rfile(used, 10, {"https://h/used"})));
    s().add_remote(single("idle", rfile(idle, 4096, {"https://h/idle"})));
    s().add_remote(single("busy", rfile(busy, 4096, {"https://h/busy"})));
    const stdfs::path dir = s().partial_dir();
    stdfs::create_directories(dir);
    for (const Sha256* h : {&used, &idle, &busy}) {
        mt::write_random_file(dir / (h->hex() + ".part"), 4096, 1);
        mt::write_text_file(dir / (h->hex() + ".state"), "{}");
    }
    ASSERT_TRUE(s().remove_model("lora/idle.safetensors"));
    ASSERT_TRUE(s().remove_model("lora/busy.safetensors"));
    // A download still running holds its .part locked, as the fetcher does.
    UniqueFd running(::open((dir / (busy.hex() + ".part")).c_str(), O_RDWR));
    ASSERT_TRUE(running);
    ASSERT_EQ(::flock(running.get(), LOCK_EX | LOCK_NB), 0);

    GcReport g = s().gc(false);
    EXPECT_EQ(g.partials_removed, 1u);
    EXPECT_GE(g.bytes, 4096u) << "the partial file's space is freed";
    EXPECT_FALSE(stdfs::exists(dir / (idle.hex() + ".part")));
    EXPECT_FALSE(stdfs::exists(dir / (idle.hex() + ".state")));
    EXPECT_TRUE(stdfs::exists(dir / (busy.hex() + ".part"))) << "still downloading";
    EXPECT_TRUE(stdfs::exists(dir / (used.hex() + ".part"))) << "a model uses that record";
    EXPECT_TRUE(stdfs::exists(dir / (used.hex() + ".state")));
}

TEST_F(RemoteStoreTest, AnInterruptedEvictionsFileIsNotedByVerifyAndRemovedByGc) {
    const Sha256 h = refetchable("stray", 1000, 40, 1);
    // The catalog says remote but the file is still there: a crash between the two steps.
    {
        auto txn = s().catalog().write();
        auto r = txn.get_blob(h);
        r->state = BlobState::remote;
        txn.put_blob(h, *r);
        txn.commit();
    }
    VerifyReport v = s().verify(false);
    EXPECT_TRUE(v.problems.empty());
    ASSERT_EQ(v.notes.size(), 1u);
    EXPECT_NE(v.notes[0].find("remote"), std::string::npos) << v.notes[0];
    GcReport g = s().gc(false);
    EXPECT_EQ(g.orphan_files.size(), 1u);
    EXPECT_FALSE(stdfs::exists(s().blobs().path_of(h)));
    EXPECT_EQ(rec(h)->state, BlobState::remote) << "the record stays: a model uses it";
}

TEST_F(RemoteStoreTest, VerifyDoesNotReportRemoteBlobsAsMissing) {
    s().add_remote(single("r", rfile(fake('a'), 10, {"https://h/r"})));
    auto txn = s().catalog().write();
    BlobRecord partial;
    partial.size = 5;
    partial.state = BlobState::partial;
    partial.sources = {{"https://h/p", false}};
    txn.put_blob(fake('b'), partial);
    txn.commit();
    VerifyReport v = s().verify(false);
    EXPECT_TRUE(v.problems.empty()) << v.problems.front().what << ": " << v.problems.front().detail;
    EXPECT_EQ(v.blobs_checked, 0u);
}

TEST_F(RemoteStoreTest, StatsCountRemoteBytesApart) {
    import("here", 1000, 50);
    s().add_remote(single("there", rfile(fake('a'), 5000, {"https://h/there"})));
    s().add_remote(single("there2", rfile(fake('a'), 5000, {"https://h/there"})));
    StoreStats st = s().stats();
    EXPECT_EQ(st.blobs, 1u);
    EXPECT_EQ(st.physical_bytes, 1000u);
    EXPECT_EQ(st.remote_blobs, 1u);
    EXPECT_EQ(st.remote_bytes, 5000u);
    EXPECT_EQ(st.logical_bytes, 11000u);
    EXPECT_EQ(st.saved(), 5000u) << "the shared remote blob counts once";
}

}  // namespace
}  // namespace modelfs
