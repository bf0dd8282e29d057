// Versions in the store (store/src/versions.cpp, lock_file.cpp): labels and hash-prefix lookup,
// use/rollback, per-view pins, retention (never current, pinned or lock-held versions), lock
// files (text round trip, registration, apply into a second store), gc leaving open blobs.
// Real stores in temp dirs.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <optional>
#include <string>

#include "modelfs/store/catalog.h"
#include "modelfs/store/errors.h"
#include "modelfs/store/hash.h"
#include "modelfs/store/lock_file.h"
#include "modelfs/store/store.h"
#include "modelfs/store/unique_fd.h"
#include "support/test_env.h"

namespace modelfs {
namespace {

namespace stdfs = std::filesystem;
namespace mt = modelfs::testing;

class VersionsTest : public ::testing::Test {
  protected:
    mt::TempDir dir_{"modelfs-versions"};
    std::optional<Store> store_;
    int files_ = 0;

    void SetUp() override { store_.emplace(Store::init(dir_ / "store")); }
    Store& s() { return *store_; }
    Model model(const std::string& key) { return *s().catalog().read().get_model(key); }

    // Imports new random content as lora/NAME (a new version); returns its hash.
    Sha256 add(const std::string& name, std::uint64_t seed,
               std::optional<std::string> label = std::nullopt, Store* into = nullptr) {
        stdfs::path p = dir_ / "src" / (std::to_string(files_++) + ".bin");
        stdfs::create_directories(p.parent_path());
        mt::write_random_file(p, 1000 + seed, seed);
        ImportOptions o;
        o.category = Category::lora;
        o.name = name;
        o.version = std::move(label);
        auto r = (into ? *into : s()).import({p}, o);
        EXPECT_TRUE(r.ok()) << (r.items.empty() ? "" : r.items.front().error);
        return *Sha256::from_hex(mt::sha256_hex_of_file(p));
    }
    std::string current(const std::string& key) { return model(key).current_version().label; }
};

TEST_F(VersionsTest, NewContentAddsVersionsAndRemembersThePreviousCurrent) {
    add("foo", 1);
    add("foo", 2, "fp16");
    Model m = model("lora/foo.bin");
    ASSERT_EQ(m.versions.size(), 2u);
    EXPECT_EQ(m.versions[0].label, "v1");
    EXPECT_EQ(m.current_version().label, "fp16");
    EXPECT_EQ(m.previous, "v1");
}

TEST_F(VersionsTest, FindVersionByLabelOrUniqueHashPrefix) {
    Sha256 a = add("foo", 1);
    add("foo", 2, "2026-12-03");
    Model m = model("lora/foo.bin");
    EXPECT_EQ(find_version(m, "v1"), 0u);
    EXPECT_EQ(find_version(m, "2026-12-03"), 1u);
    EXPECT_EQ(find_version(m, a.hex().substr(0, 8)), 0u);
    EXPECT_EQ(find_version(m, a.hex().substr(0, 64)), 0u);
    std::string err;
    EXPECT_FALSE(find_version(m, a.hex().substr(0, 5), &err)) << "shorter than 6 digits";
    EXPECT_FALSE(find_version(m, "v9", &err));
    EXPECT_NE(err.find("v1, 2026-12-03"), std::string::npos) << err;
}

TEST_F(VersionsTest, BadLabelsAreRefusedWithTheReason) {
    for (const std::string& bad :
         std::vector<std::string>{"", "a/b", "a@b", "..", "a\nb", std::string(101, 'x')}) {
        try {
            check_version_label(bad);
            ADD_FAILURE() << "accepted '" << bad << "'";
        } catch (const StoreError& e) {
            EXPECT_EQ(e.kind(), ErrorKind::bad_input);
            EXPECT_NE(std::string(e.what()).find("version label"), std::string::npos);
        }
    }
    stdfs::path p = dir_ / "x.bin";
    mt::write_random_file(p, 100, 9);
    ImportOptions o;
    o.category = Category::lora;
    o.version = "a/b";
    EXPECT_THROW(s().import({p}, o), StoreError);
    EXPECT_FALSE(s().catalog().read().get_model("lora/x"));
}

TEST_F(VersionsTest, UseAndRollbackToggleTheCurrentVersion) {
    add("foo", 1);
    add("foo", 2);
    add("foo", 3);
    auto c = s().use_version("lora/foo.bin", "v1");
    EXPECT_TRUE(c.changed);
    EXPECT_EQ(c.from_label, "v3");
    EXPECT_EQ(current("lora/foo.bin"), "v1");
    EXPECT_FALSE(s().use_version("lora/foo.bin", "v1").changed);
    c = s().rollback("lora/foo.bin");
    EXPECT_EQ(c.to_label, "v3");
    EXPECT_EQ(current("lora/foo.bin"), "v3");
    s().rollback("lora/foo.bin");
    EXPECT_EQ(current("lora/foo.bin"), "v1") << "a second rollback undoes the first";
    EXPECT_THROW(s().use_version("lora/foo.bin", "v7"), StoreError);
    EXPECT_THROW(s().use_version("lora/nope", "v1"), StoreError);
}

TEST_F(VersionsTest, RollbackWithoutPreviousSaysWhatToDo) {
    add("foo", 1);
    try {
        s().rollback("lora/foo.bin");
        FAIL();
    } catch (const StoreError& e) {
        EXPECT_EQ(e.kind(), ErrorKind::bad_input);
        EXPECT_NE(std::string(e.what()).find("modelfs use"), std::string::npos) << e.what();
    }
}

TEST_F(VersionsTest, ResolveVersionTakesNamesKeysAndPrefixes) {
    Sha256 a = add("sdxl/foo", 1);
    add("sdxl/foo", 2);
    EXPECT_EQ(s().resolve_version("lora/sdxl/foo@v1").index, 0u);
    EXPECT_EQ(s().resolve_version("sdxl/foo").index, 1u) << "no label: current";
    EXPECT_EQ(s().resolve_version("lora/sdxl/foo@" + a.hex().substr(0, 10)).index, 0u);
    EXPECT_THROW(s().resolve_version("lora/sdxl/foo@v5"), StoreError);
}

TEST_F(VersionsTest, PinsArePerViewAndSurviveNewVersions) {
    add("foo", 1);
    add("foo", 2);
    auto c = s().pin("lora/foo.bin", "v1", "comfyui");
    EXPECT_TRUE(c.changed);
    add("foo", 3);
    Model m = model("lora/foo.bin");
    EXPECT_EQ(m.versions[m.shown_in("comfyui")].label, "v1");
    EXPECT_EQ(m.versions[m.shown_in("a1111")].label, "v3");
    EXPECT_TRUE(s().unpin("lora/foo.bin", "comfyui"));
    EXPECT_FALSE(s().unpin("lora/foo.bin", "comfyui"));
    m = model("lora/foo.bin");
    EXPECT_EQ(m.versions[m.shown_in("comfyui")].label, "v3");
}

TEST_F(VersionsTest, RetainKeepsNewestCurrentPinnedAndLocked) {
    for (int i = 1; i <= 6; ++i) add("foo", i);
    s().use_version("lora/foo.bin", "v1");     // current: oldest
    s().pin("lora/foo.bin", "v2", "comfyui");  // pinned
    // A lock holding v3.
    LockFile lock;
    lock.models.push_back(lock_entry(s().catalog().read(), model("lora/foo.bin"), 2));
    s().register_lock(lock, "/tmp/x.lock");

    auto dry = s().retain(2, /*dry_run=*/true);
    ASSERT_EQ(dry.dropped.size(), 1u);
    EXPECT_EQ(dry.dropped[0].label, "v4");
    EXPECT_EQ(model("lora/foo.bin").versions.size(), 6u) << "dry run changes nothing";

    auto rep = s().retain(2, false);
    ASSERT_EQ(rep.dropped.size(), 1u);
    EXPECT_EQ(rep.kept_current, 1u);
    EXPECT_EQ(rep.kept_pinned, 1u);
    EXPECT_EQ(rep.kept_locked, 1u);
    Model m = model("lora/foo.bin");
    std::vector<std::string> labels;
    for (const auto& v : m.versions) labels.push_back(v.label);
    EXPECT_EQ(labels, (std::vector<std::string>{"v1", "v2", "v3", "v5", "v6"}));
    EXPECT_EQ(m.current_version().label, "v1");

    EXPECT_TRUE(s().release_lock("/tmp/x.lock"));
    rep = s().retain(2, false);
    ASSERT_EQ(rep.dropped.size(), 1u);
    EXPECT_EQ(rep.dropped[0].label, "v3");
    EXPECT_THROW(s().retain(0, false), StoreError);
}

// Issue 16, duplicate version labels: after retain dropped versions from the middle, a new
// version's label was "v" + (count + 1), which a kept version already had. Every path that adds a
// version goes through Model::add_version; each is checked here after the same retain.
class RetainThenAddTest : public VersionsTest {
  protected:
    // Five versions, v1 current, retain --keep 2: v1 (current), v4, v5 stay.
    void SetUp() override {
        VersionsTest::SetUp();
        for (int i = 1; i <= 5; ++i) add("foo", i);
        s().use_version("lora/foo.bin", "v1");
        s().retain(2, false);
        ASSERT_EQ(labels(), (std::vector<std::string>{"v1", "v4", "v5"}));
    }
    std::vector<std::string> labels() {
        std::vector<std::string> out;
        for (const auto& v : model("lora/foo.bin").versions) out.push_back(v.label);
        return out;
    }
    // The new version has a label no other version has, and `use LABEL` selects it.
    void expect_new_label_selectable(const Sha256& content) {
        const Model m = model("lora/foo.bin");
        ASSERT_EQ(m.versions.size(), 4u);
        std::vector<std::string> l = labels();
        std::sort(l.begin(), l.end());
        EXPECT_EQ(std::adjacent_find(l.begin(), l.end()), l.end()) << "a label is used twice";
        const std::string label = m.versions.back().label;
        EXPECT_EQ(label, "v6") << "after the highest vN there was";
        EXPECT_EQ(m.versions.back().blob, content);
        s().use_version("lora/foo.bin", "v1");
        s().use_version("lora/foo.bin", label);
        EXPECT_EQ(model("lora/foo.bin").current_version().blob, content);
    }
};

TEST_F(RetainThenAddTest, ImportGetsALabelNoKeptVersionHas) {
    expect_new_label_selectable(add("foo", 6));
}

TEST_F(RetainThenAddTest, ASaveThroughAMountGetsALabelNoKeptVersionHas) {
    // As the mount's ingester commits a closed file: written inside the store, linked as a blob.
    stdfs::path p = dir_ / "store" / "views" / "a1111" / "foo.bin";
    stdfs::create_directories(p.parent_path());
    mt::write_random_file(p, 4242, 6);
    UniqueFd fd(::open(p.c_str(), O_RDONLY | O_CLOEXEC));
    ASSERT_TRUE(fd);
    FileCommit f;
    f.path = p;
    f.fd = fd.get();
    f.digests = digest_fd(fd.get());
    f.category = Category::lora;
    f.name = "foo";
    f.ext = ".bin";  // the model's extension (another one is another model); random bytes
    f.source = "mount:a1111/models/Lora/foo.bin";
    FileCommitResult r = s().commit_file(f);
    EXPECT_TRUE(r.new_version);
    EXPECT_EQ(r.label, "v6");
    expect_new_label_selectable(f.digests.sha256);
}

TEST_F(RetainThenAddTest, AnAddedURLGetsALabelNoKeptVersionHas) {
    RemoteModel m;
    m.category = Category::lora;
    m.name = "foo";
    m.ext = ".bin";
    RemoteFile f;
    f.sha256 = Sha256::from_hex(std::string(64, 'a'));
    f.size = 1234;
    f.sources.push_back({"https://example.invalid/foo.bin"});
    m.files.push_back(f);
    RemoteAddResult r = s().add_remote(m);
    EXPECT_TRUE(r.new_version);
    EXPECT_EQ(r.label, "v6");
    expect_new_label_selectable(*f.sha256);
}

// Issue 16: `touch -d` in a view with a pin sets the pinned version's mtime, shown exactly as set
// while the other views keep showing the switch time; the next switch is newer than both.
TEST_F(VersionsTest, AnExplicitMtimeIsShownAsSetUntilTheNextSwitch) {
    add("foo", 1);
    add("foo", 2);
    s().pin("lora/foo.bin", "v1", "comfyui");
    Model m = model("lora/foo.bin");
    const std::int64_t switched = m.switched_ns;
    ASSERT_GT(switched, 0);
    s().set_shown_attrs("lora/foo.bin", 1'000'000'000, std::nullopt, "v1");
    m = model("lora/foo.bin");
    EXPECT_EQ(m.shown_mtime_ns(m.versions[0]), 1'000'000'000ll * 1'000'000'000);
    EXPECT_EQ(m.shown_mtime_ns(m.versions[1]), switched) << "what the other views show stays";
    EXPECT_EQ(m.versions[1].mtime, 0) << "the current version was not touched";
    s().unpin("lora/foo.bin", "comfyui");
    m = model("lora/foo.bin");
    EXPECT_GT(m.shown_mtime_ns(m.versions[0]), switched);
    EXPECT_GT(m.shown_mtime_ns(m.versions[1]), switched);
}

TEST_F(VersionsTest, GcAfterRetainRemovesOnlyUnreachableAndNotOpenBlobs) {
    Sha256 v1 = add("foo", 1);
    Sha256 v2 = add("foo", 2);
    add("foo", 3);
    s().retain(1, false);
    // v1 is held open the way a mount holds a blob it serves.
    UniqueFd open_fd = s().blobs().open_blob(v1);
    ASSERT_TRUE(open_fd);
    ASSERT_EQ(::flock(open_fd.get(), LOCK_SH | LOCK_NB), 0);
    auto rep = s().gc(false);
    EXPECT_EQ(rep.skipped_open, 1u);
    ASSERT_EQ(rep.blobs.size(), 1u);
    EXPECT_EQ(rep.blobs[0].first, v2);
    EXPECT_TRUE(stdfs::exists(s().blobs().path_of(v1)));
    EXPECT_FALSE(stdfs::exists(s().blobs().path_of(v2)));
    open_fd.reset();
    rep = s().gc(false);
    ASSERT_EQ(rep.blobs.size(), 1u);
    EXPECT_EQ(rep.blobs[0].first, v1);
    EXPECT_FALSE(stdfs::exists(s().blobs().path_of(v1)));
}

TEST_F(VersionsTest, LockTextRoundTripsAndRejectsEdits) {
    add("foo", 1);
    add("bar", 2);
    auto txn = s().catalog().read();
    LockFile lock;
    lock.view = "comfyui";
    lock.models.push_back(lock_entry(txn, *txn.get_model("lora/bar.bin"), 0));
    lock.models.push_back(lock_entry(txn, *txn.get_model("lora/foo.bin"), 0));
    const std::string text = lock.to_text();
    LockFile back = LockFile::parse(text, "models.lock");
    EXPECT_EQ(back.to_text(), text);
    EXPECT_EQ(back.id(), lock.id());
    EXPECT_NE(text.find("\"model\": \"lora/bar.bin\""), std::string::npos) << text;

    auto expect_bad = [](const std::string& t, const std::string& says) {
        try {
            LockFile::parse(t, "models.lock");
            ADD_FAILURE() << "accepted: " << t;
        } catch (const StoreError& e) {
            EXPECT_NE(std::string(e.what()).find(says), std::string::npos) << e.what();
            EXPECT_NE(std::string(e.what()).find("models.lock"), std::string::npos);
        }
    };
    expect_bad("{", "not JSON");
    expect_bad("{\"models\": []}", "modelfs_lock");
    expect_bad("{\"modelfs_lock\": 99, \"models\": []}", "newer");
    std::string dup = text;
    dup.replace(dup.find("lora/foo.bin"), 12, "lora/bar.bin");
    expect_bad(dup, "listed twice");
    std::string badhash = text;
    badhash.replace(badhash.find("\"sha256\": \"") + 11, 4, "zzzz");
    expect_bad(badhash, "64 hex");
}

// Found by fuzzing (tests/fuzz/corpus/lock_file/number-overflow.lock): a number beyond a double's
// range is refused by the JSON parser with out_of_range, not parse_error; `apply` must still say
// which lock file is not JSON (StoreError bad_input), not fail anonymously.
// The format number is read whole: 2^32 + 1 once wrapped to an int and passed as format 1.
TEST(LockFileParse, AFormatNumberBeyondAnIntIsNewerNotFormatOne) {
    for (const char* format : {"4294967297", "9223372036854775807"}) {
        try {
            LockFile::parse(std::string("{\"modelfs_lock\": ") + format + ", \"models\": []}",
                            "models.lock");
            ADD_FAILURE() << "accepted format " << format;
        } catch (const StoreError& e) {
            EXPECT_NE(std::string(e.what()).find("is newer than this modelfs understands"),
                      std::string::npos)
                << e.what();
        }
    }
    // Beyond int64 (an unsigned JSON number) and negative ones are no format at all.
    for (const char* format : {"18446744073709551615", "-4294967295"}) {
        try {
            LockFile::parse(std::string("{\"modelfs_lock\": ") + format + ", \"models\": []}",
                            "models.lock");
            ADD_FAILURE() << "accepted format " << format;
        } catch (const StoreError& e) {
            EXPECT_EQ(e.kind(), ErrorKind::bad_input) << e.what();
        }
    }
}

// A size is a whole number of bytes. -1 once wrapped to 2^64 - 1 and 1.5 to 1; 1e300 was
// converted to an integer out of range (undefined behaviour, caught by the fuzz target's UBSan).
TEST(LockFileParse, SizesAreWholeNumbersOfBytes) {
    const std::string hash(64, 'a');
    for (const char* size : {"-1", "1.5", "1e300"}) {
        const std::string single = std::string(R"({"modelfs_lock": 1, "models": [{"model": "lora/x",
            "label": "v1", "ext": ".safetensors", "sha256": ")") +
                                   hash + R"(", "size": )" + size + R"(, "sources": []}]})";
        const std::string tree = std::string(R"({"modelfs_lock": 1, "models": [{"model":
            "diffusers/d", "label": "v1", "sha256": ")") +
                                 hash + R"(", "size": 1, "files": [{"path": "a", "sha256": ")" +
                                 hash + R"(", "size": )" + size + R"(, "sources": []}]}]})";
        for (const std::string& text : {single, tree}) {
            try {
                LockFile::parse(text, "models.lock");
                ADD_FAILURE() << "accepted size " << size << " in " << text;
            } catch (const StoreError& e) {
                EXPECT_EQ(e.kind(), ErrorKind::bad_input);
                EXPECT_NE(std::string(e.what()).find("\"size\" must be a whole number of bytes"),
                          std::string::npos)
                    << e.what();
            }
        }
    }
}

TEST(LockFileParse, NumberBeyondADoubleIsNotJson) {
    try {
        LockFile::parse("{\"modelfs_lock\": 1, \"models\": [], \"x\": -1e999}", "models.lock");
        ADD_FAILURE() << "accepted";
    } catch (const StoreError& e) {
        EXPECT_EQ(e.kind(), ErrorKind::bad_input);
        EXPECT_NE(std::string(e.what()).find("models.lock: not a lock file (not JSON)"),
                  std::string::npos)
            << e.what();
    }
}

TEST_F(VersionsTest, MakeLockTakesEveryCurrentVersionSortedByKey) {
    add("foo", 1);
    add("foo", 2);
    s().use_version("lora/foo.bin", "v1");
    add("bar", 3);
    const MadeLock made = make_lock(s().catalog().read(), "", {}, false);
    EXPECT_TRUE(made.left_out.empty());
    EXPECT_EQ(made.lock.view, "");
    ASSERT_EQ(made.lock.models.size(), 2u);
    EXPECT_EQ(made.lock.models[0].key(), "lora/bar.bin");
    EXPECT_EQ(made.lock.models[1].key(), "lora/foo.bin");
    EXPECT_EQ(made.lock.models[1].label, "v1");
}

TEST_F(VersionsTest, MakeLockKeepsTheVersionsItIsGivenAndLeavesOutTheRest) {
    add("foo", 1);
    const Sha256 v2 = add("foo", 2);
    add("bar", 3);
    // As a view would: bar is not shown there, foo at its first version's successor.
    auto version_of = [](const Model& m) -> std::optional<std::size_t> {
        if (m.name == "bar.bin") return std::nullopt;
        return 1;
    };
    const MadeLock made = make_lock(s().catalog().read(), "comfyui", version_of, false);
    EXPECT_EQ(made.lock.view, "comfyui");
    ASSERT_EQ(made.lock.models.size(), 1u);
    EXPECT_EQ(made.lock.models[0].key(), "lora/foo.bin");
    EXPECT_EQ(made.lock.models[0].content_id, v2);
}

TEST_F(VersionsTest, ApplyReproducesALockInAnotherStore) {
    add("foo", 1);
    Sha256 v2 = add("foo", 2);
    add("foo", 3);
    s().use_version("lora/foo.bin", "v2");
    add("bar", 4);
    // A remote model whose blob is not here but has a source.
    RemoteModel rm;
    rm.category = Category::vae;
    rm.name = "far";
    rm.ext = ".safetensors";
    RemoteFile rf;
    rf.sha256 = *Sha256::from_hex(std::string(64, 'e'));
    rf.size = 77;
    rf.sources.push_back({"http://127.0.0.1:9/far.safetensors", false});
    rm.files.push_back(rf);
    s().add_remote(rm);

    LockFile lock;
    {
        auto txn = s().catalog().read();
        txn.for_each_model(
            [&](const Model& m) { lock.models.push_back(lock_entry(txn, m, m.current)); });
    }
    lock = LockFile::parse(lock.to_text(), "a.lock");

    Store other = Store::init(dir_ / "other");
    add("foo", 2, std::nullopt, &other);  // same bytes as v2 here: present, labelled v1 there
    add("foo", 9, std::nullopt, &other);  // something else is current there
    auto rep = other.apply_lock(lock, "/tmp/a.lock");
    ASSERT_EQ(rep.items.size(), 3u);
    EXPECT_FALSE(rep.ok()) << "bar's blob is neither there nor downloadable";
    for (const auto& item : rep.items) {
        if (item.model_key == "lora/foo.bin") {
            EXPECT_EQ(item.outcome, ApplyItem::Outcome::made_current);
            EXPECT_EQ(item.label, "v1");
        } else if (item.model_key == "vae/far.safetensors") {
            EXPECT_EQ(item.outcome, ApplyItem::Outcome::added);
            EXPECT_EQ(item.remote_files, 1u);
        } else {
            EXPECT_EQ(item.model_key, "lora/bar.bin");
            EXPECT_EQ(item.outcome, ApplyItem::Outcome::failed);
            EXPECT_NE(item.error.find("no source"), std::string::npos) << item.error;
        }
    }
    auto txn = other.catalog().read();
    EXPECT_EQ(*txn.get_model("lora/foo.bin")->current_version().blob, v2);
    EXPECT_FALSE(txn.get_model("lora/bar.bin"));
    auto far = txn.get_model("vae/far.safetensors");
    ASSERT_TRUE(far);
    EXPECT_EQ(txn.get_blob(*far->current_version().blob)->state, BlobState::remote);
    ASSERT_EQ(other.locks().size(), 1u);
    EXPECT_EQ(other.locks()[0].name, "/tmp/a.lock");
    EXPECT_EQ(other.locks()[0].id, lock.id());
}

TEST_F(VersionsTest, ApplyKeepsTheLockLabelOrMarksAClash) {
    add("foo", 1, "release");
    LockFile lock;
    lock.models.push_back(lock_entry(s().catalog().read(), model("lora/foo.bin"), 0));
    Store other = Store::init(dir_ / "other");
    add("zzz", 1, std::nullopt, &other);  // the locked bytes, under another name
    add("foo", 5, "release", &other);     // the locked label, on other bytes
    auto rep = other.apply_lock(lock, "stdout");
    ASSERT_TRUE(rep.ok()) << rep.items[0].error;
    EXPECT_EQ(rep.items[0].outcome, ApplyItem::Outcome::added);
    EXPECT_EQ(rep.items[0].label, "release-lock");
    EXPECT_EQ(rep.items[0].remote_files, 0u);
    Model m = *other.catalog().read().get_model("lora/foo.bin");
    EXPECT_EQ(m.current_version().label, "release-lock");
    EXPECT_EQ(m.versions[0].label, "release") << "the clashing version stays";
}

}  // namespace
}  // namespace modelfs
