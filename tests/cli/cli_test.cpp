// The `modelfs` program as a user meets it: help, exit codes, JSON output, bad input.
#include <gtest/gtest.h>
#include <lmdb.h>

#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <set>

#include <nlohmann/json.hpp>

#include "support/safetensors_writer.h"
#include "support/sized_models.h"
#include "support/test_env.h"

namespace stdfs = std::filesystem;
using namespace modelfs::testing;
using nlohmann::json;

namespace {

// write_safetensors into a folder that may not exist yet.
void put(const stdfs::path& p, const modelfs::testing::SafetensorsSpec& spec) {
    stdfs::create_directories(p.parent_path());
    write_safetensors(p, spec);
}
void put_raw(const stdfs::path& p, const std::string& bytes) {
    stdfs::create_directories(p.parent_path());
    write_file(p, bytes);
}

class Cli : public ::testing::Test {
  protected:
    TempDir dir{"modelfs-cli"};
    stdfs::path store = dir / "store";

    CliResult mfs(std::vector<std::string> args, std::map<std::string, std::string> env = {}) {
        args.insert(args.begin(), {"--store", store.string()});
        return run_modelfs(args, env);
    }
    json mfs_json(std::vector<std::string> args, int expect_exit = 0) {
        args.insert(args.begin(), "--json");
        CliResult r = mfs(args);
        EXPECT_EQ(r.exit_code, expect_exit) << r.err;
        return json::parse(r.out);
    }
    void SetUp() override { ASSERT_EQ(mfs({"init"}).exit_code, 0); }
};

TEST_F(Cli, EverySubcommandHasHelp) {
    for (const char* sub :
         {"init", "import", "ls", "show", "verify", "gc", "stats", "mount", "umount", "views"}) {
        CliResult r = run_modelfs({sub, "--help"});
        EXPECT_EQ(r.exit_code, 0) << sub;
        EXPECT_NE(r.out.find("Usage"), std::string::npos) << sub << ": " << r.out;
    }
    CliResult top = run_modelfs({"--help"});
    EXPECT_EQ(top.exit_code, 0);
    EXPECT_NE(top.out.find("import"), std::string::npos);
}

TEST_F(Cli, UsageErrorsExitTwo) {
    EXPECT_EQ(run_modelfs({}).exit_code, 2);
    EXPECT_EQ(run_modelfs({"frobnicate"}).exit_code, 2);
    EXPECT_EQ(mfs({"import"}).exit_code, 2);  // PATH is required
    write_random_file(dir / "a.bin", 100, 1);
    CliResult r = mfs({"import", (dir / "a.bin").string(), "--category", "nonsense"});
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_NE(r.err.find("unknown category 'nonsense'"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("checkpoint"), std::string::npos) << "lists the categories";
}

TEST_F(Cli, MissingStoreExitsFourAndSaysWhatToDo) {
    CliResult r = run_modelfs({"--store", (dir / "nowhere").string(), "ls"});
    EXPECT_EQ(r.exit_code, 4);
    EXPECT_NE(r.err.find("modelfs init"), std::string::npos) << r.err;

    stdfs::create_directories(dir / "plain");
    write_random_file(dir / "plain" / "keep.txt", 10, 2);
    r = run_modelfs({"--store", (dir / "plain").string(), "init"});
    EXPECT_EQ(r.exit_code, 4);
    EXPECT_NE(r.err.find("not a modelfs store"), std::string::npos) << r.err;
    EXPECT_TRUE(stdfs::exists(dir / "plain" / "keep.txt"));
    EXPECT_FALSE(stdfs::exists(dir / "plain" / "catalog"));
}

TEST_F(Cli, StoreFromEnvironment) {
    write_random_file(dir / "m.safetensors.bin", 1000, 3);
    stdfs::path other = dir / "envstore";
    ASSERT_EQ(run_modelfs({"init"}, {{"MODELFS_STORE", other.string()}}).exit_code, 0);
    EXPECT_TRUE(stdfs::exists(other / "catalog" / "data.mdb"));
    stdfs::path xdg = dir / "xdg";
    CliResult r = run_modelfs({"init"}, {{"MODELFS_STORE", ""}, {"XDG_DATA_HOME", xdg.string()}});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_TRUE(stdfs::exists(xdg / "modelfs" / "catalog" / "data.mdb"));
}

TEST_F(Cli, NewerSchemaIsRefusedAndLeftAlone) {
    // Bump the schema as a future modelfs would.
    {
        MDB_env* env = nullptr;
        ASSERT_EQ(mdb_env_create(&env), 0);
        mdb_env_set_maxdbs(env, 8);
        mdb_env_set_mapsize(env, std::size_t{32} << 30);
        ASSERT_EQ(mdb_env_open(env, (store / "catalog").c_str(), 0, 0644), 0);
        MDB_txn* txn = nullptr;
        ASSERT_EQ(mdb_txn_begin(env, nullptr, 0, &txn), 0);
        MDB_dbi dbi;
        ASSERT_EQ(mdb_dbi_open(txn, "meta", 0, &dbi), 0);
        std::string k = "schema", v = "99";
        MDB_val kv{k.size(), k.data()}, vv{v.size(), v.data()};
        ASSERT_EQ(mdb_put(txn, dbi, &kv, &vv, 0), 0);
        ASSERT_EQ(mdb_txn_commit(txn), 0);
        mdb_env_close(env);
    }
    write_random_file(dir / "x.bin", 100, 4);
    for (std::vector<std::string> args :
         {std::vector<std::string>{"ls"}, {"import", (dir / "x.bin").string()}, {"gc"}}) {
        CliResult r = mfs(args);
        EXPECT_EQ(r.exit_code, 4) << args[0];
        EXPECT_NE(r.err.find("newer"), std::string::npos) << r.err;
        EXPECT_NE(r.err.find("99"), std::string::npos) << r.err;
    }
    EXPECT_TRUE(stdfs::is_empty(store / "blobs" / "sha256"));
}

TEST_F(Cli, ImportListShowStatsJson) {
    auto spec = modelfs::testing::kohya_lora(7);
    put(dir / "tool" / "models" / "loras" / "style.safetensors", spec);
    put(dir / "tool" / "models" / "checkpoints" / "base.safetensors",
        modelfs::testing::sd15_checkpoint(8));
    stdfs::copy_file(dir / "tool" / "models" / "loras" / "style.safetensors",
                     dir / "tool" / "models" / "loras" / "style-copy.safetensors");
    write_text_file(dir / "tool" / "models" / "loras" / "style.civitai.info", "{}");

    json imp = mfs_json({"import", (dir / "tool" / "models").string()});
    ASSERT_EQ(imp["items"].size(), 3u);
    EXPECT_TRUE(imp["ok"].get<bool>());
    EXPECT_EQ(imp["skipped_files"], 1);

    json ls = mfs_json({"ls"});
    std::set<std::string> keys;
    for (const auto& m : ls) keys.insert(m["model"]);
    EXPECT_EQ(keys, (std::set<std::string>{"checkpoint/base.safetensors", "lora/style.safetensors",
                                           "lora/style-copy.safetensors"}));

    std::string sha = sha256_hex_of_file(dir / "tool" / "models" / "loras" / "style.safetensors");
    json show = mfs_json({"show", "lora/style"});
    EXPECT_EQ(show["file"]["sha256"], sha);
    EXPECT_EQ(show["file"]["autov2"], sha.substr(0, 10));
    EXPECT_TRUE(show["file"].contains("autov3"));
    EXPECT_EQ(show["file"]["safetensors"]["tensors"].get<std::size_t>(), spec.tensors.size());

    // By AutoV2 (a hash prefix), by full hash and by path: the same blob, used by both names.
    json by_prefix = mfs_json({"show", sha.substr(0, 10)});
    EXPECT_EQ(by_prefix["file"]["sha256"], sha);
    EXPECT_EQ(by_prefix["models"].size(), 2u);
    json by_path =
        mfs_json({"show", (dir / "tool" / "models" / "loras" / "style.safetensors").string()});
    EXPECT_TRUE(by_path["in_store"].get<bool>());
    EXPECT_EQ(by_path["file"]["sha256"], sha);

    json ck = mfs_json({"show", "base"});
    auto comps = ck["file"]["safetensors"]["components"];
    EXPECT_EQ(comps.size(), 3u) << comps.dump();

    json st = mfs_json({"stats"});
    EXPECT_EQ(st["models"], 3);
    EXPECT_EQ(st["blobs"], 2);
    auto lora_size = stdfs::file_size(dir / "tool" / "models" / "loras" / "style.safetensors");
    EXPECT_EQ(st["saved_bytes"].get<std::uint64_t>(), lora_size);
    EXPECT_EQ(st["logical_bytes"].get<std::uint64_t>() - st["physical_bytes"].get<std::uint64_t>(),
              lora_size);
}

// Issue 16, finding 5: `stats` said a logical total its categories did not add up to (the
// categories counted only current versions). One definition (store/FORMAT.md "Saving"): every
// version and sidecar, in the total and in its category alike.
TEST_F(Cli, StatsCategoriesAddUpToTheLogicalTotal) {
    write_sized_safetensors(dir / "in" / "a.safetensors", 40000, 1);
    write_sized_safetensors(dir / "in2" / "a.safetensors", 50000, 2);
    write_sized_safetensors(dir / "in" / "b.safetensors", 30000, 3);
    ASSERT_EQ(mfs({"import", "-c", "lora", (dir / "in" / "a.safetensors").string()}).exit_code, 0);
    ASSERT_EQ(mfs({"import", "-c", "lora", (dir / "in2" / "a.safetensors").string()}).exit_code, 0);
    ASSERT_EQ(
        mfs({"import", "-c", "checkpoint", (dir / "in" / "b.safetensors").string()}).exit_code, 0);
    json st = mfs_json({"stats"});
    EXPECT_EQ(st["versions"], 3) << st.dump();
    std::uint64_t sum = 0;
    for (const auto& [name, c] : st["categories"].items()) sum += c["bytes"].get<std::uint64_t>();
    EXPECT_EQ(sum, st["logical_bytes"].get<std::uint64_t>()) << st.dump();
    EXPECT_EQ(st["logical_bytes"].get<std::uint64_t>(), 40000u + 50000u + 30000u);
    EXPECT_EQ(st["saved_bytes"].get<std::uint64_t>(), 0u);
}

TEST_F(Cli, ShowUnknownExitsThree) {
    CliResult r = mfs({"show", "no-such-model"});
    EXPECT_EQ(r.exit_code, 3);
    EXPECT_NE(r.err.find("no-such-model"), std::string::npos);
}

TEST_F(Cli, MalformedSafetensorsIsRefusedAndStoreStaysValid) {
    stdfs::path good = dir / "in" / "loras" / "good.safetensors";
    stdfs::path bad = dir / "in" / "loras" / "bad.safetensors";
    put(good, modelfs::testing::kohya_lora(1));
    put_raw(bad, raw_safetensors_with_length(1ull << 40, "{}"));
    CliResult r = mfs({"import", (dir / "in").string()});
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_NE(r.err.find(bad.string()), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("header"), std::string::npos) << r.err;
    json ls = mfs_json({"ls"});
    ASSERT_EQ(ls.size(), 1u);
    EXPECT_EQ(ls[0]["model"], "lora/good.safetensors");
    json v = mfs_json({"verify"});
    EXPECT_TRUE(v["ok"].get<bool>());
    EXPECT_TRUE(v["notes"].empty()) << v.dump();
    EXPECT_TRUE(stdfs::is_empty(store / "staging"));
    EXPECT_TRUE(stdfs::exists(bad)) << "the user's file is untouched";
}

TEST_F(Cli, MissingPathIsNamedAndOthersStillImport) {
    write_random_file(dir / "ok.ckpt", 5000, 9);
    CliResult r = mfs({"import", (dir / "ok.ckpt").string(), (dir / "missing.ckpt").string()});
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_NE(r.err.find("missing.ckpt"), std::string::npos) << r.err;
    EXPECT_EQ(mfs_json({"ls"}).size(), 1u);
}

// Root reads anything; dropping the DAC-override capabilities makes mode 000 bite even in CI.
TEST_F(Cli, UnreadableFileIsNamedAndSkipped) {
    if (!stdfs::exists("/usr/bin/setpriv")) GTEST_SKIP() << "util-linux setpriv not installed";
    write_random_file(dir / "in" / "vae" / "ok.pt", 5000, 30);
    write_random_file(dir / "in" / "vae" / "secret.pt", 5000, 31);
    stdfs::permissions(dir / "in" / "vae" / "secret.pt", stdfs::perms::none);
    std::vector<std::string> args{"--store", store.string(), "import", (dir / "in").string()};
    CliResult r;
    if (::geteuid() == 0) {
        std::vector<std::string> wrapped{"--bounding-set=-dac_override,-dac_read_search",
                                         modelfs_binary().string()};
        wrapped.insert(wrapped.end(), args.begin(), args.end());
        r = run_program("/usr/bin/setpriv", wrapped);
    } else {
        r = run_modelfs(args);
    }
    EXPECT_EQ(r.exit_code, 1) << r.err;
    EXPECT_NE(r.err.find("secret.pt"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("Permission denied"), std::string::npos) << r.err;
    json ls = mfs_json({"ls"});
    ASSERT_EQ(ls.size(), 1u);
    EXPECT_EQ(ls[0]["model"], "vae/ok.pt");
}

TEST_F(Cli, VerifyQuarantinesCorruptBlobAndFails) {
    write_random_file(dir / "m.ckpt", 300000, 10);
    std::string sha = sha256_hex_of_file(dir / "m.ckpt");
    ASSERT_EQ(mfs({"import", (dir / "m.ckpt").string()}).exit_code, 0);
    stdfs::path blob = store / "blobs" / "sha256" / sha.substr(0, 2) / sha;
    stdfs::permissions(blob, stdfs::perms::owner_write, stdfs::perm_options::add);
    {
        std::fstream f(blob, std::ios::in | std::ios::out | std::ios::binary);
        f.seekp(1234);
        f.put('\x5a' ^ read_file(blob)[1234]);
    }
    json fast = mfs_json({"verify", "--fast"}, 1);
    ASSERT_EQ(fast["problems"].size(), 1u);
    EXPECT_EQ(fast["problems"][0]["problem"], "corrupt");
    EXPECT_EQ(fast["problems"][0]["sha256"], sha);
    EXPECT_FALSE(stdfs::exists(blob)) << "corrupt bytes are never served again";
    ASSERT_FALSE(stdfs::is_empty(store / "quarantine")) << "and never silently deleted";
    json show = mfs_json({"show", sha});
    EXPECT_EQ(show["file"]["state"], "quarantined");
    // gc leaves the evidence alone.
    mfs({"gc"});
    EXPECT_FALSE(stdfs::is_empty(store / "quarantine"));
    // Re-importing the good file repairs the store.
    ASSERT_EQ(mfs({"import", (dir / "m.ckpt").string()}).exit_code, 0);
    EXPECT_TRUE(stdfs::exists(blob));
    EXPECT_TRUE(mfs_json({"verify"})["ok"].get<bool>());
}

TEST_F(Cli, GcRemovesOnlyUnreferenced) {
    write_random_file(dir / "keep.ckpt", 4000, 11);
    ASSERT_EQ(mfs({"import", (dir / "keep.ckpt").string()}).exit_code, 0);
    // An orphan, as a crash between placing a blob and cataloguing it would leave.
    write_random_file(store / "blobs" / "sha256" / "ab" / std::string(64, 'a'), 777, 12);
    json dry = mfs_json({"gc", "--dry-run"});
    EXPECT_EQ(dry["orphan_files"].size(), 1u);
    EXPECT_EQ(dry["bytes"], 777);
    EXPECT_TRUE(stdfs::exists(store / "blobs" / "sha256" / "ab" / std::string(64, 'a')));
    json real = mfs_json({"gc"});
    EXPECT_EQ(real["orphan_files"].size(), 1u);
    EXPECT_FALSE(stdfs::exists(store / "blobs" / "sha256" / "ab" / std::string(64, 'a')));
    EXPECT_TRUE(mfs_json({"verify"})["ok"].get<bool>());
    EXPECT_EQ(mfs_json({"ls"}).size(), 1u);
}

TEST_F(Cli, MoveAcrossFilesystemsCopiesVerifiesThenDeletes) {
    if (!stdfs::exists("/dev/shm")) GTEST_SKIP() << "no /dev/shm";
    const char* old = std::getenv("TMPDIR");
    setenv("TMPDIR", "/dev/shm", 1);
    TempDir other("modelfs-move");
    if (old)
        setenv("TMPDIR", old, 1);
    else
        unsetenv("TMPDIR");
    stdfs::path src = other / "loras" / "far.safetensors";
    put(src, modelfs::testing::kohya_lora(21));
    std::string sha = sha256_hex_of_file(src);
    json imp = mfs_json({"import", "--move", src.string()});
    EXPECT_EQ(imp["items"][0]["sha256"], sha);
    EXPECT_FALSE(stdfs::exists(src));
    EXPECT_EQ(sha256_hex_of_file(store / "blobs" / "sha256" / sha.substr(0, 2) / sha), sha);
}

TEST_F(Cli, MoveOnOneFilesystemIsARename) {
    stdfs::path src = dir / "models" / "vae" / "v.safetensors";
    put(src, modelfs::testing::vae(5));
    std::string sha = sha256_hex_of_file(src);
    struct stat before;
    ASSERT_EQ(::stat(src.c_str(), &before), 0);
    json imp = mfs_json({"import", "--move", src.string()});
    EXPECT_EQ(imp["items"][0]["model"], "vae/v.safetensors");
    EXPECT_FALSE(stdfs::exists(src));
    stdfs::path blob = store / "blobs" / "sha256" / sha.substr(0, 2) / sha;
    struct stat after;
    ASSERT_EQ(::stat(blob.c_str(), &after), 0);
    EXPECT_EQ(before.st_ino, after.st_ino) << "zero copy: the same inode";
    EXPECT_TRUE(stdfs::is_empty(store / "staging"));
}

}  // namespace
