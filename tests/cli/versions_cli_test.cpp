// Versions as a user drives them with the real `modelfs` program: versions, use, rollback, pin,
// unpin, retain (with gc after it), and lock files carried from one store to another.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/file.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "support/http_servers.h"
#include "support/mount_fixture.h"
#include "support/test_env.h"

namespace stdfs = std::filesystem;
using namespace modelfs::testing;
using modelfs::test::NginxServer;
using nlohmann::json;

namespace {

#define EXPECT_HAS(haystack, needle) \
    EXPECT_NE((haystack).find(needle), std::string::npos) << (haystack)

class VersionsCli : public ::testing::Test {
  protected:
    TempDir dir{"modelfs-versions-cli"};
    stdfs::path store = dir / "store";

    void SetUp() override { ASSERT_EQ(mfs({"init"}).exit_code, 0); }

    CliResult mfs(std::vector<std::string> args, std::map<std::string, std::string> env = {},
                  const stdfs::path& which = {}) {
        args.insert(args.begin(), {"--store", (which.empty() ? store : which).string()});
        return run_modelfs(args, env);
    }
    json mfs_json(std::vector<std::string> args, int expect_exit = 0,
                  const stdfs::path& which = {}) {
        args.insert(args.begin(), "--json");
        CliResult r = mfs(args, {}, which);
        EXPECT_EQ(r.exit_code, expect_exit) << r.err << r.out;
        return json::parse(r.out.empty() ? "null" : r.out);
    }
    // Imports content `seed` as checkpoint/NAME (a new version when the name exists); returns
    // the content's SHA-256.
    std::string import_version(const std::string& name, std::uint64_t seed,
                               const stdfs::path& which = {}) {
        const stdfs::path f = dir / "in" / std::to_string(seed) / (name + ".ckpt");
        stdfs::create_directories(f.parent_path());
        write_random_file(f, 4096 + seed, seed);
        CliResult r = mfs({"import", "--category", "checkpoint", f.string()}, {}, which);
        EXPECT_EQ(r.exit_code, 0) << r.err;
        return sha256_hex_of_file(f);
    }
    json versions(const std::string& name, const stdfs::path& which = {}) {
        return mfs_json({"versions", name}, 0, which);
    }
    std::string current(const std::string& name, const stdfs::path& which = {}) {
        return versions(name, which)["current"];
    }
    std::vector<std::string> labels(const std::string& name) {
        std::vector<std::string> out;
        const json j = versions(name);  // the loop must not range over a temporary's member
        for (const auto& v : j["versions"]) out.push_back(v["label"]);
        return out;
    }
};

TEST_F(VersionsCli, EveryCommandHasHelp) {
    for (const char* sub : {"versions", "use", "rollback", "pin", "unpin", "retain", "lock",
                            "apply", "locks", "unlock", "config"}) {
        CliResult r = run_modelfs({sub, "--help"});
        EXPECT_EQ(r.exit_code, 0) << sub;
        EXPECT_HAS(r.out, "Usage");
    }
}

TEST_F(VersionsCli, ImportingChangedContentAddsAVersion) {
    const std::string a = import_version("foo", 1);
    const std::string b = import_version("foo", 2);
    import_version("foo", 2);  // the same content again: no third version

    json j = versions("foo");
    EXPECT_EQ(j["model"], "checkpoint/foo.ckpt");
    ASSERT_EQ(j["versions"].size(), 2u) << j;
    EXPECT_EQ(j["versions"][0]["label"], "v1");
    EXPECT_EQ(j["versions"][0]["sha256"], a);
    EXPECT_EQ(j["versions"][0]["current"], false);
    EXPECT_EQ(j["versions"][1]["label"], "v2");
    EXPECT_EQ(j["versions"][1]["sha256"], b);
    EXPECT_EQ(j["versions"][1]["current"], true);
    EXPECT_EQ(j["current"], "v2");

    CliResult r = mfs({"versions", "checkpoint/foo.ckpt"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_HAS(r.out, "checkpoint/foo.ckpt\n");
    EXPECT_HAS(r.out, "* v2");
    EXPECT_HAS(r.out, b.substr(0, 10));
    EXPECT_HAS(r.out, a.substr(0, 10));

    r = mfs({"versions", "nosuchmodel"});
    EXPECT_EQ(r.exit_code, 3) << r.err;
    EXPECT_HAS(r.err, "nosuchmodel");
}

TEST_F(VersionsCli, UseAndRollback) {
    const std::string a = import_version("foo", 1);
    import_version("foo", 2);

    CliResult r = mfs({"use", "foo@v1"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_HAS(r.out, "checkpoint/foo.ckpt: current is now v1 (was v2)");
    EXPECT_EQ(current("foo"), "v1");
    // The hash of the current version is what `ls` shows.
    json ls = mfs_json({"ls"});
    ASSERT_EQ(ls.size(), 1u);
    EXPECT_EQ(ls[0]["sha256"], a);

    r = mfs({"use", "foo@v1"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_HAS(r.out, "already is current");

    // A unique hash prefix works as a label.
    json v2 = versions("foo")["versions"][1];
    json use = mfs_json({"use", "foo@" + v2["sha256"].get<std::string>().substr(0, 8)});
    EXPECT_EQ(use["to"], "v2");
    EXPECT_EQ(use["changed"], true);

    ASSERT_EQ(mfs({"rollback", "foo"}).exit_code, 0);
    EXPECT_EQ(current("foo"), "v1");
    r = mfs({"rollback", "foo"});  // a second rollback undoes the first
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_HAS(r.out, "current is now v2 (was v1)");
    EXPECT_EQ(current("foo"), "v2");
}

TEST_F(VersionsCli, BadVersionReferencesSayWhatToDo) {
    import_version("foo", 1);
    import_version("foo", 2);
    import_version("single", 3);

    CliResult r = mfs({"use", "foo@v9"});
    EXPECT_EQ(r.exit_code, 3) << r.err;
    EXPECT_HAS(r.err, "v9");
    EXPECT_HAS(r.err, "v1");  // the labels it does have
    EXPECT_HAS(r.err, "v2");
    EXPECT_EQ(current("foo"), "v2") << "a failed use changed something";

    r = mfs({"use", "foo"});
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_HAS(r.err, "NAME@LABEL");
    EXPECT_HAS(r.err, "modelfs versions foo");

    r = mfs({"use", "nosuch@v1"});
    EXPECT_EQ(r.exit_code, 3) << r.err;

    r = mfs({"rollback", "single"});  // only one version: nothing to go back to
    EXPECT_NE(r.exit_code, 0);
    EXPECT_HAS(r.err, "checkpoint/single");
    EXPECT_EQ(current("single"), "v1");
}

TEST_F(VersionsCli, PinAndUnpinNameARealView) {
    import_version("foo", 1);
    import_version("foo", 2);

    CliResult r = mfs({"pin", "foo@v1", "--view", "ComfyUI"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_HAS(r.out, "checkpoint/foo.ckpt: pinned in view comfyui is now v1");
    json j = versions("foo");
    EXPECT_EQ(j["pins"], json({{"comfyui", "v1"}})) << j;
    EXPECT_EQ(j["versions"][0]["pinned_in"], json::array({"comfyui"}));
    EXPECT_EQ(j["current"], "v2") << "a pin is not a use";

    // The alias of a built-in names it too.
    ASSERT_EQ(mfs({"pin", "foo@v1", "--view", "automatic1111"}).exit_code, 0);
    EXPECT_EQ(versions("foo")["pins"], json({{"a1111", "v1"}, {"comfyui", "v1"}}));

    r = mfs({"pin", "foo@v1", "--view", "comfy"});
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_HAS(r.err, "unknown view 'comfy'");
    EXPECT_HAS(r.err, "comfyui");
    EXPECT_HAS(r.err, "a1111");
    r = mfs({"unpin", "foo", "--view", "comfy"});
    EXPECT_EQ(r.exit_code, 2) << r.err;

    r = mfs({"pin", "foo@v7", "--view", "comfyui"});
    EXPECT_EQ(r.exit_code, 3) << r.err;
    EXPECT_HAS(r.err, "v7");

    r = mfs({"unpin", "foo", "--view", "comfyui"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_HAS(r.out, "view comfyui shows the current version again");
    EXPECT_EQ(versions("foo")["pins"], json({{"a1111", "v1"}}));
    r = mfs({"unpin", "foo", "--view", "comfyui"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_HAS(r.out, "was not pinned in view comfyui");
}

TEST_F(VersionsCli, AConfigLayoutIsAViewToPinIn) {
    const stdfs::path config = dir / "config.toml";
    write_text_file(config,
                    "[[layout]]\nname = \"mytool\"\n[[layout.folder]]\npath = \"ckpt\"\n"
                    "category = \"checkpoint\"\n");
    import_version("foo", 1);
    import_version("foo", 2);
    CliResult r = mfs({"--config", config.string(), "pin", "foo@v1", "--view", "mytool"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(versions("foo")["pins"], json({{"mytool", "v1"}}));
    // Without the config file there is no such view.
    r = mfs({"pin", "foo@v1", "--view", "mytool"});
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_HAS(r.err, "unknown view 'mytool'");
}

TEST_F(VersionsCli, RetainNeverDropsCurrentPinnedOrLockedAndGcRemovesOnlyWhatIsUnreachable) {
    std::vector<std::string> hashes;  // of v1..v5
    for (std::uint64_t seed = 1; seed <= 5; ++seed) hashes.push_back(import_version("foo", seed));
    const std::string other = import_version("bar", 9);  // a model of one version, untouched

    // v3 locked (current when the lock is made), v2 current, v1 pinned; v5 is the newest.
    ASSERT_EQ(mfs({"use", "foo@v3"}).exit_code, 0);
    const stdfs::path lock = dir / "project.lock";
    CliResult r = mfs({"lock", "-o", lock.string()});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    ASSERT_EQ(mfs({"use", "foo@v2"}).exit_code, 0);
    ASSERT_EQ(mfs({"pin", "foo@v1", "--view", "comfyui"}).exit_code, 0);
    json v = versions("foo");
    EXPECT_FALSE(v["versions"][2]["locked_by"].empty()) << v;

    // A dry run changes nothing.
    json dry = mfs_json({"retain", "--keep", "1", "--dry-run"});
    ASSERT_EQ(dry["dropped"].size(), 1u) << dry;
    EXPECT_EQ(dry["dropped"][0]["model"], "checkpoint/foo.ckpt");
    EXPECT_EQ(dry["dropped"][0]["label"], "v4");
    EXPECT_EQ(labels("foo").size(), 5u);

    r = mfs({"retain", "--keep", "1"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_HAS(r.out, "dropped checkpoint/foo.ckpt@v4");
    EXPECT_HAS(r.out, "`modelfs gc` can now free 4.0 KiB");
    EXPECT_EQ(labels("foo"), (std::vector<std::string>{"v1", "v2", "v3", "v5"}));
    EXPECT_EQ(current("foo"), "v2");
    EXPECT_EQ(labels("bar"), std::vector<std::string>{"v1"});

    // gc removes v4's blob and nothing else.
    json gc = mfs_json({"gc"});
    ASSERT_EQ(gc["blobs"].size(), 1u) << gc;
    EXPECT_EQ(gc["blobs"][0]["sha256"], hashes[3]);
    for (std::size_t i : {0u, 1u, 2u, 4u}) {
        json s = mfs_json({"show", hashes[i]});
        EXPECT_EQ(s["file"]["state"], "present") << "v" << i + 1;
    }
    EXPECT_EQ(mfs_json({"show", other})["file"]["state"], "present");
    EXPECT_EQ(mfs({"verify"}).exit_code, 0);

    // Released, the lock keeps nothing; unpinned, v1 goes too.
    r = mfs({"unlock", lock.string()});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_TRUE(mfs_json({"locks"}).empty());
    ASSERT_EQ(mfs({"unpin", "foo", "--view", "comfyui"}).exit_code, 0);
    json second = mfs_json({"retain", "--keep", "1", "foo"});
    std::set<std::string> dropped;
    for (const auto& d : second["dropped"]) dropped.insert(d["label"]);
    EXPECT_EQ(dropped, (std::set<std::string>{"v1", "v3"}));
    EXPECT_EQ(labels("foo"), (std::vector<std::string>{"v2", "v5"}));
    gc = mfs_json({"gc"});
    std::set<std::string> removed;
    for (const auto& b : gc["blobs"]) removed.insert(b["sha256"]);
    EXPECT_EQ(removed, (std::set<std::string>{hashes[0], hashes[2]}));
}

// Issue 16, duplicate version labels: five versions, `use foo@v1`, `retain --keep 2`, a new
// import. The new version used to be labelled v4 like a kept one, and `use foo@v4` could not pick
// it.
TEST_F(VersionsCli, RetainThenImportGivesTheNewVersionItsOwnLabel) {
    for (std::uint64_t i = 1; i <= 5; ++i) import_version("foo", i);
    ASSERT_EQ(mfs({"use", "foo@v1"}).exit_code, 0);
    CliResult r = mfs({"retain", "--keep", "2"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    ASSERT_EQ(labels("foo"), (std::vector<std::string>{"v1", "v4", "v5"}));

    const std::string fresh = import_version("foo", 6);
    EXPECT_EQ(labels("foo"), (std::vector<std::string>{"v1", "v4", "v5", "v6"}));
    r = mfs({"use", "foo@v6"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(current("foo"), "v6");
    EXPECT_EQ(mfs_json({"show", "foo"})["file"]["sha256"], fresh);
    // The kept v4 is still the content it was.
    ASSERT_EQ(mfs({"use", "foo@v4"}).exit_code, 0);
    EXPECT_NE(mfs_json({"show", "foo"})["file"]["sha256"], fresh);
}

// A version retain dropped whose blob some process still reads (a mount holds a shared flock
// on what it serves) keeps its blob through gc until it is closed.
TEST_F(VersionsCli, GcAfterRetainLeavesOpenBlobs) {
    const std::string old = import_version("foo", 1);
    import_version("foo", 2);
    ASSERT_EQ(mfs({"retain", "--keep", "1"}).exit_code, 0);
    ASSERT_EQ(labels("foo"), std::vector<std::string>{"v2"});

    const stdfs::path blob = store / "blobs" / "sha256" / old.substr(0, 2) / old;
    ASSERT_TRUE(stdfs::exists(blob));
    {
        const int fd = ::open(blob.c_str(), O_RDONLY | O_CLOEXEC);
        ASSERT_GE(fd, 0);
        ASSERT_EQ(::flock(fd, LOCK_SH), 0);
        json gc = mfs_json({"gc"});
        EXPECT_TRUE(gc["blobs"].empty()) << gc;
        EXPECT_EQ(gc["skipped_open"], 1) << gc;
        CliResult r = mfs({"gc"});
        EXPECT_HAS(r.out, "kept 1 unused blob(s) that are open");
        EXPECT_TRUE(stdfs::exists(blob));
        ::close(fd);
    }
    json gc = mfs_json({"gc"});
    ASSERT_EQ(gc["blobs"].size(), 1u) << gc;
    EXPECT_EQ(gc["blobs"][0]["sha256"], old);
    EXPECT_FALSE(stdfs::exists(blob));
}

TEST_F(VersionsCli, RetainKeepComesFromFlagThenConfigThenEnvironment) {
    for (std::uint64_t seed = 1; seed <= 6; ++seed) import_version("foo", seed);
    const stdfs::path config = dir / "config.toml";
    write_text_file(config, "[versions]\nkeep = 4\n");
    auto dropped = [&](std::vector<std::string> args, std::map<std::string, std::string> env,
                       const std::string& origin) {
        args.insert(args.begin(), "--json");
        args.insert(args.end(), {"retain", "--dry-run"});
        CliResult r = mfs(args, env);
        EXPECT_EQ(r.exit_code, 0) << r.err;
        json j = json::parse(r.out);
        EXPECT_EQ(j["keep_from"], origin);
        return j["dropped"].size();
    };
    EXPECT_EQ(dropped({}, {}, "default"), 3u);  // keep 3 of 6
    EXPECT_EQ(dropped({}, {{"MODELFS_KEEP_VERSIONS", "5"}}, "env MODELFS_KEEP_VERSIONS"), 1u);
    EXPECT_EQ(dropped({"--config", config.string()}, {{"MODELFS_KEEP_VERSIONS", "5"}},
                      "file " + config.string()),
              2u);
    std::vector<std::string> args{"--json", "--config", config.string(), "retain", "--dry-run",
                                  "--keep", "2"};
    json j = json::parse(mfs(args).out);
    EXPECT_EQ(j["keep_from"], "flag --keep");
    EXPECT_EQ(j["dropped"].size(), 4u);

    CliResult r = mfs({"retain", "--keep", "0"});
    EXPECT_EQ(r.exit_code, 2);
    r = mfs({"retain"}, {{"MODELFS_KEEP_VERSIONS", "lots"}});
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_HAS(r.err, "MODELFS_KEEP_VERSIONS='lots'");
    EXPECT_EQ(labels("foo").size(), 6u);
}

TEST_F(VersionsCli, LockFollowsTheViewAndIsRegistered) {
    const std::string a = import_version("foo", 1);
    const std::string b = import_version("foo", 2);
    ASSERT_EQ(mfs({"pin", "foo@v1", "--view", "comfyui"}).exit_code, 0);

    // --register: a lock on stdout is kept from `retain` only when asked (issue 17).
    CliResult r = mfs({"lock", "--register"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    json all = json::parse(r.out);  // the lock file itself, on stdout
    EXPECT_EQ(all["modelfs_lock"], 1);
    ASSERT_EQ(all["models"].size(), 1u);
    EXPECT_EQ(all["models"][0]["sha256"], b);

    r = mfs({"lock", "--register", "--view", "comfyui"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    json comfy = json::parse(r.out);
    EXPECT_EQ(comfy["view"], "comfyui");
    ASSERT_EQ(comfy["models"].size(), 1u);
    EXPECT_EQ(comfy["models"][0]["sha256"], a) << "the pinned version";
    EXPECT_EQ(comfy["models"][0]["label"], "v1");
    EXPECT_EQ(comfy["models"][0]["size"], 4097);

    // A view without a checkpoint folder shows none of it.
    const stdfs::path config = dir / "config.toml";
    write_text_file(config,
                    "[[layout]]\nname = \"loras-only\"\n[[layout.folder]]\npath = \"loras\"\n"
                    "category = \"lora\"\n");
    r = mfs({"--config", config.string(), "lock", "--register", "--view", "loras-only"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_TRUE(json::parse(r.out)["models"].empty()) << r.out;

    r = mfs({"lock", "--view", "nosuchview"});
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_HAS(r.err, "unknown view 'nosuchview'");

    json locks = mfs_json({"locks"});
    std::set<std::string> names;
    for (const auto& l : locks) names.insert(l["name"]);
    EXPECT_EQ(names, std::set<std::string>{"stdout"});
    EXPECT_EQ(locks.size(), 3u) << "three different lock files, each registered once";

    r = mfs({"unlock", "nosuchlock"});
    EXPECT_EQ(r.exit_code, 3);
    EXPECT_HAS(r.err, "modelfs locks");
    const std::string id = locks[0]["id"];
    ASSERT_EQ(mfs({"unlock", id}).exit_code, 0);
    EXPECT_EQ(mfs_json({"locks"}).size(), 2u);
}

TEST_F(VersionsCli, ALockFileCarriesVersionsToAnotherStore) {
    // Store A: foo with v1 current (of two), a model downloaded from nginx, and a model whose
    // content exists only in A.
    stdfs::create_directories(dir / "www");
    write_random_file(dir / "www" / "remote.safetensors", 20000, 77);
    const std::string remote_sha = sha256_hex_of_file(dir / "www" / "remote.safetensors");
    NginxServer nginx(dir / "www");
    const std::string a1 = import_version("foo", 1);
    import_version("foo", 2);
    ASSERT_EQ(mfs({"use", "foo@v1"}).exit_code, 0);
    CliResult r = mfs({"add", nginx.url("remote.safetensors"), "--as", "lora/remote"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    ASSERT_EQ(mfs({"fetch"}).exit_code, 0);
    import_version("only-in-a", 5);

    const stdfs::path lock = dir / "models.lock";
    r = mfs({"lock", "-o", lock.string()});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_HAS(r.out, "wrote 3 model(s) to " + lock.string());
    const std::string text = read_file(lock);
    EXPECT_HAS(text, nginx.url("remote.safetensors"));
    EXPECT_HAS(text, remote_sha);

    // Store B has foo's content (imported the other way round: v2 current) and nothing else.
    const stdfs::path b = dir / "store-b";
    ASSERT_EQ(mfs({"init"}, {}, b).exit_code, 0);
    import_version("foo", 1, b);
    import_version("foo", 2, b);
    ASSERT_EQ(mfs({"use", "foo@v2"}, {}, b).exit_code, 0);

    r = mfs({"apply", lock.string()}, {}, b);
    EXPECT_EQ(r.exit_code, 1) << "only-in-a has no source: that model fails\n" << r.out << r.err;
    EXPECT_HAS(r.err, "checkpoint/only-in-a.ckpt");
    json applied = mfs_json({"apply", lock.string()}, 1, b);
    std::map<std::string, std::string> outcome;
    for (const auto& it : applied["items"]) outcome[it["model"]] = it["outcome"];
    EXPECT_EQ(outcome["checkpoint/foo.ckpt"], "unchanged");  // the first apply made it current
    EXPECT_EQ(outcome["lora/remote.safetensors"], "unchanged");
    EXPECT_EQ(outcome["checkpoint/only-in-a.ckpt"], "failed");

    // The same hashes are current in B as in A.
    json ls_b = mfs_json({"ls"}, 0, b);
    std::map<std::string, json> by_model;
    for (const auto& m : ls_b) by_model[m["model"]] = m;
    ASSERT_TRUE(by_model.count("checkpoint/foo.ckpt")) << ls_b;
    EXPECT_EQ(by_model["checkpoint/foo.ckpt"]["sha256"], a1);
    ASSERT_TRUE(by_model.count("lora/remote.safetensors")) << ls_b;
    EXPECT_EQ(by_model["lora/remote.safetensors"]["sha256"], remote_sha);
    EXPECT_EQ(by_model["lora/remote.safetensors"]["state"], "remote")
        << "registered, not downloaded";
    EXPECT_FALSE(by_model.count("checkpoint/only-in-a.ckpt"));

    // B registered the lock, and what was registered lazily downloads from A's source.
    json locks = mfs_json({"locks"}, 0, b);
    ASSERT_EQ(locks.size(), 1u);
    EXPECT_EQ(locks[0]["name"], lock.string());
    ASSERT_EQ(mfs({"fetch"}, {}, b).exit_code, 0);
    json show = mfs_json({"show", remote_sha}, 0, b);
    EXPECT_EQ(show["file"]["state"], "present");

    // A file that is not a lock file is refused, naming it, and changes nothing.
    write_text_file(dir / "bad.lock", "{\"modelfs_lock\": 99, \"models\": []}\n");
    r = mfs({"apply", (dir / "bad.lock").string()}, {}, b);
    EXPECT_NE(r.exit_code, 0);
    EXPECT_HAS(r.err, (dir / "bad.lock").string());
    r = mfs({"apply", (dir / "missing.lock").string()}, {}, b);
    EXPECT_EQ(r.exit_code, 3);
    EXPECT_HAS(r.err, "missing.lock");
}

TEST_F(VersionsCli, MountRefusesABadLockFileBeforeMounting) {
    stdfs::create_directories(dir / "mnt");
    write_text_file(dir / "bad.lock", "not json\n");
    CliResult r = mfs({"mount", "--lock", (dir / "bad.lock").string(), (dir / "mnt").string()});
    EXPECT_NE(r.exit_code, 0);
    EXPECT_HAS(r.err, (dir / "bad.lock").string());
    EXPECT_TRUE(mfs_json({"locks"}).empty());
}

// What `use` and `rollback` change, a running mount shows (waiting up to a deadline for it).
TEST_F(VersionsCli, UseAndRollbackReachARunningMount) {
    if (!stdfs::exists("/dev/fuse")) GTEST_SKIP() << "no /dev/fuse";
    const std::string a = import_version("foo", 1);
    const std::string b = import_version("foo", 2);
    const stdfs::path mnt = dir / "mnt";
    Mount m(store, mnt);
    ASSERT_TRUE(m.ok());
    const stdfs::path file = mnt / "comfyui" / "checkpoints" / "foo.ckpt";
    auto shows = [&](const std::string& sha) {
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
        for (;;) {
            std::error_code ec;
            if (stdfs::exists(file, ec) && sha256_hex_of_file(file) == sha) return true;
            if (std::chrono::steady_clock::now() > deadline) return false;
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
    };
    EXPECT_TRUE(shows(b));
    ASSERT_EQ(mfs({"use", "foo@v1"}).exit_code, 0);
    EXPECT_TRUE(shows(a)) << "the mount still shows v2 after `modelfs use foo@v1`";
    ASSERT_EQ(mfs({"rollback", "foo"}).exit_code, 0);
    EXPECT_TRUE(shows(b)) << "the mount still shows v1 after `modelfs rollback foo`";
}

TEST_F(VersionsCli, MountWithALockRegistersIt) {
    if (!stdfs::exists("/dev/fuse")) GTEST_SKIP() << "no /dev/fuse";
    import_version("foo", 1);
    const stdfs::path lock = dir / "models.lock";
    ASSERT_EQ(mfs({"lock", "-o", lock.string()}).exit_code, 0);
    ASSERT_EQ(mfs({"unlock", lock.string()}).exit_code, 0);
    ASSERT_TRUE(mfs_json({"locks"}).empty());

    Mount m(store, dir / "mnt", {"--lock", lock.string()});
    ASSERT_TRUE(m.ok());
    json locks = mfs_json({"locks"});
    ASSERT_EQ(locks.size(), 1u) << locks;
    EXPECT_EQ(locks[0]["name"], lock.string());
    EXPECT_TRUE(stdfs::exists(dir / "mnt" / "comfyui" / "checkpoints" / "foo.ckpt"));
}

}  // namespace
