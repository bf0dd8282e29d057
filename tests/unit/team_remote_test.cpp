// Team remotes without a network (store/src/team_remote.cpp): the registry, snapshots and their
// validation, what push publishes, how writers merge, and what a pull registers, keeps and
// removes. Real stores in temp dirs; the S3 side is tests/s3/team_store_test.cpp.
#include <gtest/gtest.h>

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "modelfs/store/catalog.h"
#include "modelfs/store/errors.h"
#include "modelfs/store/hash.h"
#include "modelfs/store/lock_file.h"
#include "modelfs/store/store.h"
#include "modelfs/store/team_remote.h"
#include "modelfs/store/version_source.h"
#include "support/catalog_builders.h"
#include "support/test_env.h"

namespace modelfs {
namespace {

namespace stdfs = std::filesystem;
namespace mt = modelfs::testing;

class TeamRemoteTest : public ::testing::Test {
  protected:
    mt::TempDir dir_{"modelfs-team"};

    Store make(const std::string& name) { return Store::init(dir_ / name); }

    // Imports a random file as lora/NAME.safetensors (a .bin content: no header check).
    Sha256 import(Store& s, const std::string& name, std::uint64_t size, std::uint64_t seed,
                  std::optional<std::string> label = {}) {
        stdfs::path p = dir_ / "src" / (name + std::to_string(seed) + ".bin");
        stdfs::create_directories(p.parent_path());
        mt::write_random_file(p, size, seed);
        ImportOptions o;
        o.category = Category::lora;
        o.name = name + ".bin";
        o.version = label;
        auto r = s.import({p}, o);
        EXPECT_TRUE(r.ok()) << (r.items.empty() ? "" : r.items[0].error);
        return *Sha256::from_hex(mt::sha256_hex_of_file(p));
    }

    static TeamRemote remote(const std::string& name = "team") {
        TeamRemote r;
        r.name = name;
        r.url = "s3://team-bucket/models";
        return r;
    }

    static std::optional<Model> model(Store& s, const std::string& key) {
        return s.catalog().read().get_model(key);
    }

    // What a push from `s` would publish (every blob present here counts as available).
    static Snapshot publish(Store& s, const std::string& writer, std::uint64_t seq = 1,
                            std::vector<std::string> patterns = {},
                            const Snapshot* previous = nullptr) {
        SnapshotPlan p = make_snapshot(
            s, patterns, previous,
            [](const Sha256&, const BlobRecord& r) { return r.state == BlobState::present; });
        p.snapshot.writer = writer;
        p.snapshot.seq = seq;
        p.snapshot.pushed = 1000 + static_cast<std::int64_t>(seq);
        // Through the bytes, as a reader gets it.
        return Snapshot::decode(p.snapshot.encode(), "test");
    }
};

TEST_F(TeamRemoteTest, TheRegistryKeepsRemotesWithoutCredentials) {
    Store s = make("a");
    TeamRemote r = remote();
    r.endpoint = "http://127.0.0.1:7480";
    r.profile = "lab";
    add_team_remote(s, r);
    EXPECT_THROW(add_team_remote(s, r), StoreError);  // the name is taken
    r.region = "eu-west-1";
    add_team_remote(s, r, true);
    auto all = team_remotes(s);
    ASSERT_EQ(all.size(), 1u);
    EXPECT_EQ(all[0].name, "team");
    EXPECT_EQ(all[0].bucket(), "team-bucket");
    EXPECT_EQ(all[0].prefix(), "models");
    EXPECT_EQ(all[0].region, "eu-west-1");
    EXPECT_EQ(all[0].object_url(remote_blob_key(mt::hx('a'))),
              "s3://team-bucket/models/blobs/sha256/aa/" + std::string(64, 'a'));
    try {
        get_team_remote(s, "nope");
        FAIL() << "no error";
    } catch (const StoreError& e) {
        EXPECT_EQ(e.kind(), ErrorKind::not_found);
        EXPECT_NE(std::string(e.what()).find("team"), std::string::npos) << e.what();
    }
    EXPECT_TRUE(remove_team_remote(s, "team"));
    EXPECT_FALSE(remove_team_remote(s, "team"));
    EXPECT_TRUE(team_remotes(s).empty());
    const std::string w = writer_id(s);
    EXPECT_EQ(w.size(), 16u);
    EXPECT_EQ(writer_id(s), w);
}

TEST_F(TeamRemoteTest, BadNamesAndUrlsAreRefusedWithTheExpectedForm) {
    for (const char* n : {"", "-x", ".x", "a/b", "a b", "é"})
        EXPECT_THROW(check_remote_name(n), StoreError) << n;
    EXPECT_NO_THROW(check_remote_name("team_1.eu-west"));
    for (const char* u : {"s3://", "s3://AB", "s3://ok-bucket/../x", "ftp://h/x", "https://",
                          "https:///x", "https://h/x?sig=1", "s3://b_b/x"})
        EXPECT_THROW(check_remote_url(u), StoreError) << u;
    for (const char* u : {"s3://bucket", "s3://bucket/", "s3://bucket/a/b", "https://h/x/",
                          "http://127.0.0.1:8080/store"})
        EXPECT_NO_THROW(check_remote_url(u)) << u;
    TeamRemote m;
    m.name = "mirror";
    m.url = "https://cdn.example.org/team/";
    EXPECT_FALSE(m.is_s3());
    EXPECT_EQ(m.object_url("writers.json"), "https://cdn.example.org/team/writers.json");
}

TEST_F(TeamRemoteTest, ASnapshotRoundTripsAndADamagedOneIsRefused) {
    Store s = make("a");
    import(s, "one", 1000, 1);
    import(s, "one", 2000, 2);
    Snapshot snap = publish(s, "w1");
    ASSERT_EQ(snap.models.size(), 1u);
    EXPECT_EQ(snap.models[0].versions.size(), 2u);
    EXPECT_EQ(snap.blobs.size(), 2u);
    EXPECT_EQ(snap.models[0].versions[0].source, "") << "a local path is not published";
    const std::string bytes = snap.encode();
    Snapshot back = Snapshot::decode(bytes, "x");
    EXPECT_EQ(back.encode(), bytes);

    // A model whose blob the snapshot does not list, a size that does not add up, a bad name.
    Snapshot bad = snap;
    bad.blobs.erase(bad.blobs.begin());
    EXPECT_THROW(Snapshot::decode(bad.encode(), "x"), StoreError);
    bad = snap;
    bad.models[0].versions[0].size += 1;
    EXPECT_THROW(Snapshot::decode(bad.encode(), "x"), StoreError);
    bad = snap;
    bad.models[0].name = "../evil.bin";
    EXPECT_THROW(Snapshot::decode(bad.encode(), "x"), StoreError);
    bad = snap;
    bad.models.push_back(bad.models[0]);
    EXPECT_THROW(Snapshot::decode(bad.encode(), "x"), StoreError);
    EXPECT_THROW(Snapshot::decode("not cbor at all", "x"), StoreError);
    std::string cut = bytes.substr(0, bytes.size() / 2);
    EXPECT_THROW(Snapshot::decode(cut, "x"), StoreError);

    WriterPointer p{"w1", 3, mt::hx('b'), 5, "host"};
    WriterPointer q = WriterPointer::parse(p.to_text(), "x");
    EXPECT_EQ(q.writer, "w1");
    EXPECT_EQ(q.seq, 3u);
    EXPECT_EQ(q.snapshot, mt::hx('b'));
    EXPECT_THROW(WriterPointer::parse("{\"modelfs_remote\": 9}", "x"), StoreError);
    EXPECT_THROW(WriterPointer::parse("{", "x"), StoreError);
}

TEST_F(TeamRemoteTest, PushLeavesOutWhatCameFromARemoteOrIsNotHere) {
    Store a = make("a");
    import(a, "mine", 1000, 1);
    // A pulled model: its versions came from the remote and are not this writer's to publish.
    Store b = make("b");
    import(b, "theirs", 1500, 7);
    apply_pull(a, remote(), merge_snapshots({publish(b, "wb")}), {});
    // A remote model of this store not downloaded yet.
    RemoteModel rm;
    rm.category = Category::lora;
    rm.name = "far.safetensors";
    rm.ext = ".safetensors";
    rm.files.push_back({"", mt::hx('c'), 42, {{"https://example.org/far.safetensors", false}}});
    a.add_remote(rm);

    SnapshotPlan p = make_snapshot(a, {}, nullptr, [](const Sha256&, const BlobRecord& r) {
        return r.state == BlobState::present;
    });
    ASSERT_EQ(p.snapshot.models.size(), 1u);
    EXPECT_EQ(p.snapshot.models[0].key(), "lora/mine.bin");
    ASSERT_EQ(p.left_out.size(), 1u);
    EXPECT_NE(p.left_out[0].find("far.safetensors"), std::string::npos) << p.left_out[0];
    EXPECT_NE(p.left_out[0].find("modelfs fetch"), std::string::npos) << p.left_out[0];
}

TEST_F(TeamRemoteTest, PatternsReplaceOnlyTheModelsTheyName) {
    Store a = make("a");
    import(a, "one", 1000, 1);
    import(a, "two", 1000, 2);
    Snapshot first = publish(a, "w", 1);
    ASSERT_EQ(first.models.size(), 2u);
    ASSERT_TRUE(a.remove_model("lora/two.bin"));
    import(a, "one", 1000, 3);  // a new version of one
    // `push REMOTE lora/one*`: two stays as published; one gets its new version.
    Snapshot second = publish(a, "w", 2, {"lora/one*"}, &first);
    ASSERT_EQ(second.models.size(), 2u);
    EXPECT_EQ(second.models[0].versions.size(), 2u);
    EXPECT_EQ(second.models[1].key(), "lora/two.bin");
    // `push REMOTE`: the snapshot is this store; two is gone.
    Snapshot third = publish(a, "w", 3, {}, &second);
    ASSERT_EQ(third.models.size(), 1u);
    EXPECT_EQ(third.models[0].key(), "lora/one.bin");
}

TEST_F(TeamRemoteTest, WritersMergeByContentAndALabelClashIsRelabelled) {
    Store a = make("a"), b = make("b");
    const Sha256 shared = import(a, "base", 1000, 1);
    import(b, "base", 1000, 1);                    // the same content in both: one version
    const Sha256 a2 = import(a, "base", 1000, 2);  // v2 in a
    const Sha256 b2 = import(b, "base", 1000, 3);  // v2 in b, other content
    import(b, "lora-b", 500, 4);
    Snapshot sa = publish(a, "wa"), sb = publish(b, "wb");
    RemoteCatalog cat = merge_snapshots({sa, sb});
    ASSERT_EQ(cat.models.size(), 2u);
    const Model& m = cat.models[0];
    EXPECT_EQ(m.key(), "lora/base.bin");
    ASSERT_EQ(m.versions.size(), 3u);
    std::vector<Sha256> blobs;
    for (const auto& v : m.versions) blobs.push_back(*v.blob);
    EXPECT_NE(std::find(blobs.begin(), blobs.end(), shared), blobs.end());
    EXPECT_NE(std::find(blobs.begin(), blobs.end(), a2), blobs.end());
    EXPECT_NE(std::find(blobs.begin(), blobs.end(), b2), blobs.end());
    ASSERT_EQ(cat.relabelled.size(), 1u) << "one v2 keeps its label, the other is renamed";
    EXPECT_NE(cat.relabelled[0].find("v2"), std::string::npos);
    // The writer whose model switched last decides what is current: b imported last.
    EXPECT_EQ(*m.current_version().blob, b2);
    EXPECT_EQ(cat.models[1].key(), "lora/lora-b.bin");
    // Merging is the same whatever the order the writers were listed in.
    EXPECT_EQ(encode_model_record(merge_snapshots({sb, sa}).models[0]), encode_model_record(m));
}

TEST_F(TeamRemoteTest, PullRegistersModelsLazilyAndASecondPullChangesNothing) {
    Store a = make("a"), c = make("c");
    const Sha256 h = import(a, "one", 3000, 1);
    const TeamRemote r = remote();
    add_team_remote(c, r);
    PullReport p = apply_pull(c, r, merge_snapshots({publish(a, "wa")}), {{"wa", "x"}});
    EXPECT_TRUE(p.changed);
    EXPECT_EQ(p.models_added, 1u);
    EXPECT_EQ(p.blobs_registered, 1u);
    EXPECT_EQ(p.bytes_registered, 3000u);
    auto m = model(c, "lora/one.bin");
    ASSERT_TRUE(m);
    EXPECT_EQ(parse_source(m->current_version().source).kind, SourceKind::remote);
    auto rec = c.catalog().read().get_blob(h);
    ASSERT_TRUE(rec);
    EXPECT_EQ(rec->state, BlobState::remote);
    ASSERT_EQ(rec->sources.size(), 1u);
    EXPECT_EQ(rec->sources[0].url, r.object_url(remote_blob_key(h)));
    EXPECT_TRUE(rec->xxh128) << "the published XXH3 travels";
    EXPECT_EQ(get_team_remote(c, "team").pulled.at("wa"), "x");
    EXPECT_FALSE(rec->sources[0].stream) << "verified before served unless the remote streams";

    const auto txn_before = c.catalog().last_txn_id();
    PullReport again = apply_pull(c, r, merge_snapshots({publish(a, "wa")}), {{"wa", "x"}});
    EXPECT_FALSE(again.changed);
    EXPECT_EQ(c.catalog().last_txn_id(), txn_before) << "nothing written";

    // `remote add --stream --replace`: the next pull makes the remote's sources streamable.
    TeamRemote streaming = get_team_remote(c, "team");
    streaming.stream = true;
    add_team_remote(c, streaming, true);
    EXPECT_TRUE(get_team_remote(c, "team").stream);
    EXPECT_TRUE(apply_pull(c, streaming, merge_snapshots({publish(a, "wa")}), {{"wa", "x"}}).changed);
    EXPECT_TRUE(c.catalog().read().get_blob(h)->sources.at(0).stream);
}

TEST_F(TeamRemoteTest, PullFollowsTheRemoteButNeverOverridesOrDeletesWhatIsLocal) {
    Store a = make("a"), c = make("c");
    import(a, "shared", 1000, 1);
    import(a, "gone", 1000, 2);
    import(a, "mixed", 1000, 3);
    const TeamRemote r = remote();
    add_team_remote(c, r);
    apply_pull(c, r, merge_snapshots({publish(a, "wa", 1)}), {});
    // Here: a version of our own for "mixed", made current.
    const Sha256 own = import(c, "mixed", 1000, 9);
    // There: a new current version of "shared"; "gone" and "mixed" deleted.
    const Sha256 newer = import(a, "shared", 1000, 4);
    ASSERT_TRUE(a.remove_model("lora/gone.bin"));
    ASSERT_TRUE(a.remove_model("lora/mixed.bin"));
    PullReport p = apply_pull(c, r, merge_snapshots({publish(a, "wa", 2)}), {});
    EXPECT_EQ(p.versions_added, 1u);
    EXPECT_EQ(p.current_moved, 1u);
    EXPECT_EQ(*model(c, "lora/shared.bin")->current_version().blob, newer);
    EXPECT_EQ(p.models_removed, 1u);
    EXPECT_FALSE(model(c, "lora/gone.bin"));
    ASSERT_EQ(p.kept, std::vector<std::string>{"lora/mixed.bin"});
    auto mixed = model(c, "lora/mixed.bin");
    ASSERT_TRUE(mixed);
    EXPECT_EQ(*mixed->current_version().blob, own);

    // A model of this store's own that a remote also has: its current version stays ours.
    Store d = make("d");
    const Sha256 mine = import(d, "shared", 1000, 50);
    add_team_remote(d, r);
    apply_pull(d, r, merge_snapshots({publish(a, "wa", 3)}), {});
    auto m = model(d, "lora/shared.bin");
    ASSERT_TRUE(m);
    EXPECT_EQ(*m->current_version().blob, mine);
    EXPECT_EQ(m->versions.size(), 3u);
}

TEST_F(TeamRemoteTest, AUseHereStaysUntilTheRemoteSwitchesAgain) {
    Store a = make("a"), c = make("c");
    const Sha256 v1 = import(a, "m", 1000, 1);
    const Sha256 v2 = import(a, "m", 1000, 2);
    const TeamRemote r = remote();
    apply_pull(c, r, merge_snapshots({publish(a, "wa", 1)}), {});
    ASSERT_EQ(*model(c, "lora/m.bin")->current_version().blob, v2);
    c.use_version("lora/m.bin", "v1");
    PullReport p = apply_pull(c, r, merge_snapshots({publish(a, "wa", 1)}), {});
    EXPECT_FALSE(p.changed);
    EXPECT_EQ(*model(c, "lora/m.bin")->current_version().blob, v1);
    // The writer switches (a new version): that is newer than the use here, so it is followed.
    const Sha256 v3 = import(a, "m", 1000, 3);
    p = apply_pull(c, r, merge_snapshots({publish(a, "wa", 2)}), {});
    EXPECT_EQ(p.current_moved, 1u);
    EXPECT_EQ(*model(c, "lora/m.bin")->current_version().blob, v3);
}

TEST_F(TeamRemoteTest, ALockedPulledModelStaysWhenTheRemoteDropsIt) {
    Store a = make("a"), c = make("c");
    import(a, "held", 1000, 1);
    const TeamRemote r = remote();
    add_team_remote(c, r);
    apply_pull(c, r, merge_snapshots({publish(a, "wa", 1)}), {});
    MadeLock made = make_lock(c.catalog().read(), "", {}, false);
    c.register_lock(made.lock, "project.lock");
    ASSERT_TRUE(a.remove_model("lora/held.bin"));
    PullReport p = apply_pull(c, r, merge_snapshots({publish(a, "wa", 2)}), {});
    EXPECT_EQ(p.models_removed, 0u);
    EXPECT_EQ(p.kept, std::vector<std::string>{"lora/held.bin"});
    EXPECT_TRUE(model(c, "lora/held.bin"));
}

TEST_F(TeamRemoteTest, ALockFileAppliesWhereOnlyTheRemoteHasTheBytes) {
    Store a = make("a"), c = make("c");
    const Sha256 h = import(a, "locked", 2000, 1);
    MadeLock made = make_lock(a.catalog().read(), "", {}, false);
    ASSERT_EQ(made.lock.models.size(), 1u);
    ASSERT_TRUE(made.lock.models[0].files[0].sources.empty()) << "imported: no source of its own";
    // Without a remote, c cannot get the bytes.
    ApplyReport none = c.apply_lock(made.lock, "x.lock");
    EXPECT_FALSE(none.ok());
    // With one, the version is registered with the remote's blob as its source.
    Store d = make("d");
    add_team_remote(d, remote());
    ApplyReport rep = d.apply_lock(made.lock, "x.lock");
    ASSERT_TRUE(rep.ok()) << rep.items[0].error;
    EXPECT_EQ(rep.items[0].remote_files, 1u);
    auto rec = d.catalog().read().get_blob(h);
    ASSERT_TRUE(rec);
    ASSERT_EQ(rec->sources.size(), 1u);
    EXPECT_EQ(rec->sources[0].url, remote().object_url(remote_blob_key(h)));
}

}  // namespace
}  // namespace modelfs
