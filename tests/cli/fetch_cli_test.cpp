// `modelfs add`, `fetch`, `status`, `evict` as a user drives them, against real servers on
// 127.0.0.1: nginx (sizes, ranges, no hashes) and our fault server (hashes in X-Linked-Etag as
// Hugging Face sends them, failures, slow bodies).
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "support/http_servers.h"
#include "support/safetensors_writer.h"
#include "support/test_env.h"

namespace stdfs = std::filesystem;
using namespace modelfs::testing;
using modelfs::test::Fault;
using modelfs::test::FaultServer;
using modelfs::test::NginxServer;
using nlohmann::json;

namespace {

class FetchCli : public ::testing::Test {
  protected:
    TempDir dir{"modelfs-fetch-cli"};
    stdfs::path store = dir / "store";
    stdfs::path www = dir / "www";

    void SetUp() override {
        stdfs::create_directories(www);
        ASSERT_EQ(mfs({"init"}).exit_code, 0);
    }
    CliResult mfs(std::vector<std::string> args) {
        args.insert(args.begin(), {"--store", store.string()});
        return run_modelfs(args);
    }
    json mfs_json(std::vector<std::string> args, int expect_exit = 0) {
        args.insert(args.begin(), "--json");
        CliResult r = mfs(args);
        EXPECT_EQ(r.exit_code, expect_exit) << r.err << r.out;
        return json::parse(r.out.empty() ? "null" : r.out);
    }
    // A file served at /NAME; returns its SHA-256.
    std::string serve(const std::string& name, std::uint64_t size, std::uint64_t seed) {
        write_random_file(www / name, size, seed);
        return sha256_hex_of_file(www / name);
    }
    json models() { return mfs_json({"ls"}); }
    stdfs::path blob_path(const std::string& hex) {
        return store / "blobs" / "sha256" / hex.substr(0, 2) / hex;
    }
};

TEST_F(FetchCli, EveryNewSubcommandHasHelp) {
    for (const char* sub : {"add", "fetch", "status", "evict"}) {
        CliResult r = run_modelfs({sub, "--help"});
        EXPECT_EQ(r.exit_code, 0) << sub;
        EXPECT_NE(r.out.find("Usage"), std::string::npos) << sub << ": " << r.out;
    }
    EXPECT_NE(run_modelfs({"--help"}).out.find("130 fetch interrupted"), std::string::npos);
}

// ---- add ------------------------------------------------------------------------------------

TEST_F(FetchCli, AddAsksTheServerForTheSizeAndDownloadsNothing) {
    NginxServer nginx(www);
    serve("a.safetensors", 5000, 1);
    CliResult r = mfs({"add", nginx.url("a.safetensors"), "--as", "lora/sdxl/a"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.out.find("added  lora/sdxl/a.safetensors@v1"), std::string::npos) << r.out;
    // nginx states no hash: said plainly, not glossed over.
    EXPECT_NE(r.out.find("no known SHA-256"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("hashed at the first download"), std::string::npos) << r.out;
    for (const auto& line : nginx.access_log())
        EXPECT_EQ(line.find("GET"), std::string::npos) << "a body was requested: " << line;
    json ls = models();
    ASSERT_EQ(ls.size(), 1u);
    EXPECT_EQ(ls[0]["model"], "lora/sdxl/a.safetensors");
    EXPECT_EQ(ls[0]["size"], 5000);
    EXPECT_EQ(ls[0]["ext"], ".safetensors");
    EXPECT_EQ(ls[0]["state"], "remote");
    json show = mfs_json({"show", "lora/sdxl/a"});
    EXPECT_EQ(show["file"]["placeholder"], true);
    EXPECT_EQ(show["file"]["sources"][0]["url"], nginx.url("a.safetensors"));
    EXPECT_EQ(show["versions"][0]["source"], nginx.url("a.safetensors"));
}

// Issue 20: a plain URL has no tensor map, so `add` reads the file's header (two ranged GETs
// within it, never the tensors) and says what looks like stored tensors and why none of it is
// reused on that evidence.
TEST_F(FetchCli, AddReadsASafetensorsHeaderAndSaysWhatLooksShared) {
    SafetensorsSpec base;
    for (int i = 0; i < 4; ++i)
        base.tensors.push_back({"model.diffusion_model.b" + std::to_string(i) + ".weight",
                                "F32",
                                {256, 256},
                                10 + i,
                                std::nullopt});
    write_safetensors(dir / "base.safetensors", base);
    ASSERT_EQ(mfs({"import", (dir / "base.safetensors").string(), "-c", "checkpoint", "-n", "base"})
                  .exit_code,
              0);
    SafetensorsSpec ft = base;
    ft.tensors[1].seed = 99;  // same name, dtype and shape; other bytes
    ft.tensors.push_back({"extra", "F16", {8}, 1, std::nullopt});
    const std::uint64_t size = write_safetensors(www / "ft.safetensors", ft);
    const std::uint64_t header = 8 + safetensors_header(ft).size();
    NginxServer nginx(www);
    CliResult r = mfs({"add", nginx.url("ft.safetensors"), "--as", "checkpoint/ft"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.out.find("its header lists 5 tensors"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("4 (1.0 MiB) have the name, dtype and shape of tensors of "
                         "checkpoint/base.safetensors"),
              std::string::npos)
        << r.out;
    EXPECT_NE(r.out.find("the whole file will be"), std::string::npos) << r.out;
    std::uint64_t sent = 0;
    for (const auto& q : nginx.requests()) {
        if (q.method != "GET") continue;
        EXPECT_EQ(q.range.rfind("bytes=0-", 0), 0u) << "a GET beyond the header: " << q.range;
        sent += q.bytes;
    }
    EXPECT_LE(sent, 8 + header) << "more than the header was read";
    EXPECT_LT(sent, size);
    json j = mfs_json({"add", nginx.url("ft.safetensors"), "--as", "checkpoint/ft2"});
    EXPECT_EQ(j["models"][0]["header"]["tensors"], 5) << j.dump();
    EXPECT_EQ(j["models"][0]["header"]["like_stored"], 4) << j.dump();
}

TEST_F(FetchCli, AddTakesTheServersHashAndRefusesAContradiction) {
    FaultServer srv(www);
    const std::string sha = serve("b.safetensors", 3000, 2);
    srv.set_headers("b.safetensors", {"X-Linked-Etag: \"" + sha + "\""});
    json bad = mfs_json(
        {"add", srv.url("b.safetensors"), "--as", "lora/b", "--sha256", std::string(64, 'c')}, 1);
    EXPECT_EQ(bad["ok"], false);
    CliResult r =
        mfs({"add", srv.url("b.safetensors"), "--as", "lora/b", "--sha256", std::string(64, 'c')});
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_NE(r.err.find(sha), std::string::npos) << r.err;
    EXPECT_NE(r.err.find(std::string(64, 'c')), std::string::npos) << r.err;
    EXPECT_TRUE(models().empty()) << "nothing written";

    json ok = mfs_json({"add", srv.url("b.safetensors"), "--as", "lora/b", "--keep"});
    ASSERT_EQ(ok["models"].size(), 1u);
    EXPECT_EQ(ok["models"][0]["sha256"], sha);
    EXPECT_EQ(ok["models"][0]["size"], 3000);
    EXPECT_EQ(ok["models"][0]["placeholders"], 0);
    EXPECT_EQ(ok["models"][0]["keep"], true);
    EXPECT_EQ(mfs_json({"show", "lora/b"})["file"]["keep"], true);
}

TEST_F(FetchCli, AddOfStoredContentCostsNoRequest) {
    NginxServer nginx(www);
    const std::string sha = serve("c.bin", 4000, 3);
    ASSERT_EQ(mfs({"import", (www / "c.bin").string(), "-c", "lora"}).exit_code, 0);
    CliResult r = mfs({"add", nginx.url("c.bin"), "--as", "lora/c-web", "--sha256", sha});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.out.find("already in store"), std::string::npos) << r.out;
    EXPECT_EQ(nginx.requests_for("c.bin"), 0u);
    json ls = models();
    ASSERT_EQ(ls.size(), 2u);
    for (const auto& m : ls) EXPECT_EQ(m["state"], "present");
}

TEST_F(FetchCli, BadArgumentsAreUsageErrorsAndWriteNothing) {
    const std::string url = "http://127.0.0.1:9/x.safetensors";
    struct Case {
        std::vector<std::string> args;
        std::string says;
    };
    const Case cases[] = {
        {{"add", "ftp://h/x.safetensors", "--as", "lora/x"}, "ftp://h/x.safetensors"},
        {{"add", url, "--as", "lorax/x"}, "unknown category 'lorax'"},
        {{"add", url, "--as", "lora/../x"}, "invalid model name"},
        {{"add", url, "--as", "lora/x", "--sha256", "abc"}, "--sha256 'abc'"},
        {{"add", url, "--as", "lora/x", "--size", "lots"}, "--size 'lots'"},
        {{"add", url}, "--as"},
        {{"add", "http://127.0.0.1:9/download", "--as", "lora/x"}, "--as lora/x.safetensors"},
        {{"add", "--manifest", "m.json", url}, "--manifest takes no URL"},
        {{"fetch", "--limit-rate", "fast"}, "--limit-rate 'fast'"},
        {{"fetch", "--limit-rate", "5Q"}, "--limit-rate '5Q'"},
        {{"evict"}, "no cache quota"},
        {{"evict", "--max-size", "1.5X"}, "--max-size '1.5X'"},
    };
    for (const auto& c : cases) {
        CliResult r = mfs(c.args);
        EXPECT_EQ(r.exit_code, 2) << c.args[1] << " " << r.err;
        EXPECT_NE(r.err.find(c.says), std::string::npos) << r.err;
    }
    EXPECT_TRUE(models().empty());
}

TEST_F(FetchCli, AManifestOfTwentyLorasAsksOnlyForWhatItDoesNotSay) {
    NginxServer nginx(www);
    json m = {{"models", json::array()}};
    for (int i = 0; i < 20; ++i) {
        const std::string name = "l" + std::to_string(i) + ".safetensors";
        const std::string sha = serve(name, 1000 + i, 100 + i);
        json e = {{"as", "lora/pack/l" + std::to_string(i)}, {"url", nginx.url(name)}};
        if (i % 2 == 0) {  // these say everything: no request
            e["size"] = 1000 + i;
            e["sha256"] = sha;
        }
        m["models"].push_back(e);
    }
    m["models"][3]["keep"] = true;
    write_text_file(dir / "pack.json", m.dump(1));
    json r = mfs_json({"add", "--manifest", (dir / "pack.json").string()});
    ASSERT_EQ(r["models"].size(), 20u);
    EXPECT_EQ(r["ok"], true);
    for (int i = 0; i < 20; ++i) {
        const std::string name = "l" + std::to_string(i) + ".safetensors";
        EXPECT_EQ(nginx.requests_for(name), i % 2 == 0 ? 0u : 1u) << name;
        EXPECT_EQ(r["models"][i]["size"], 1000 + i);
        EXPECT_EQ(r["models"][i]["placeholders"], i % 2 == 0 ? 0 : 1);
    }
    EXPECT_EQ(r["models"][3]["keep"], true);
    EXPECT_EQ(models().size(), 20u);
    // The same manifest again changes nothing.
    json again = mfs_json({"add", "--manifest", (dir / "pack.json").string()});
    for (const auto& e : again["models"]) EXPECT_EQ(e["new_version"], false);
}

TEST_F(FetchCli, ABadManifestIsNamedAndNothingIsWritten) {
    NginxServer nginx(www);
    serve("ok.safetensors", 100, 5);
    json m = {{"models",
               {{{"as", "lora/ok"}, {"url", nginx.url("ok.safetensors")}},
                {{"as", "lora/bad"}, {"url", nginx.url("ok.safetensors")}, {"size", "big"}}}}};
    write_text_file(dir / "bad.json", m.dump());
    CliResult r = mfs({"add", "--manifest", (dir / "bad.json").string()});
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_NE(r.err.find("bad.json: models[1] (lora/bad): 'size'"), std::string::npos) << r.err;
    // A URL the server does not have: every failure is listed, nothing registered.
    m["models"][1] = {{"as", "lora/gone"}, {"url", nginx.url("gone.safetensors")}};
    write_text_file(dir / "gone.json", m.dump());
    r = mfs({"add", "--manifest", (dir / "gone.json").string()});
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_NE(r.err.find("lora/gone"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("nothing was registered"), std::string::npos) << r.err;
    EXPECT_TRUE(models().empty());
}

// ---- evict ----------------------------------------------------------------------------------

TEST_F(FetchCli, EvictKeepsTheModelAndOnlyTakesWhatCanBeFetchedAgain) {
    NginxServer nginx(www);
    const std::string web = serve("web.bin", 8000, 6);
    const std::string local = serve("local.bin", 8000, 7);
    ASSERT_EQ(
        mfs({"import", (www / "web.bin").string(), (www / "local.bin").string(), "-c", "lora"})
            .exit_code,
        0);
    ASSERT_EQ(mfs({"add", nginx.url("web.bin"), "--as", "lora/web", "--sha256", web}).exit_code, 0);
    json dry = mfs_json({"evict", "--max-size", "0", "--dry-run"});
    ASSERT_EQ(dry["evicted"].size(), 1u);
    EXPECT_TRUE(stdfs::exists(blob_path(web)));

    json r = mfs_json({"evict", "--max-size", "0"});
    ASSERT_EQ(r["evicted"].size(), 1u);
    EXPECT_EQ(r["evicted"][0]["sha256"], web);
    EXPECT_EQ(r["bytes"], 8000);
    EXPECT_EQ(r["store_bytes"], 8000) << "the import without a source stays";
    EXPECT_FALSE(stdfs::exists(blob_path(web)));
    EXPECT_TRUE(stdfs::exists(blob_path(local)));
    EXPECT_EQ(mfs_json({"show", "lora/web"})["file"]["state"], "remote");
    EXPECT_EQ(mfs({"verify"}).exit_code, 0) << "an evicted blob is not missing";
    json st = mfs_json({"status"});
    EXPECT_EQ(st["remote"]["blobs"], 1);
    EXPECT_EQ(st["present"]["bytes"], 8000);
}

// ---- fetch and status -----------------------------------------------------------------------

TEST_F(FetchCli, FetchBringsEverythingInAndOneFailureSpoilsNothingElse) {
    NginxServer nginx(www);
    std::vector<std::string> shas;
    for (int i = 0; i < 3; ++i) {
        const std::string name = "f" + std::to_string(i) + ".safetensors";
        shas.push_back(serve(name, 200'000 + i, 10 + i));
        ASSERT_EQ(mfs({"add", nginx.url(name), "--as", "lora/f" + std::to_string(i)}).exit_code, 0);
    }
    // Registered with its size and hash, but the server does not have it.
    ASSERT_EQ(mfs({"add", nginx.url("missing.safetensors"), "--as", "lora/missing", "--size",
                   "1000", "--sha256", std::string(64, 'd')})
                  .exit_code,
              0);
    CliResult r = mfs({"fetch", "--jobs", "2"});
    EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
    EXPECT_NE(r.out.find("failed   lora/missing"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("fetched 3 file(s)"), std::string::npos) << r.out;
    json ls = models();
    for (const auto& m : ls) {
        if (m["model"] == "lora/missing.safetensors") {
            EXPECT_EQ(m["state"], "remote");
            continue;
        }
        EXPECT_EQ(m["state"], "present") << m.dump();
        const int i = m["name"].get<std::string>()[1] - '0';
        EXPECT_EQ(m["sha256"], shas[i]) << "the placeholder became the real hash";
        EXPECT_EQ(sha256_hex_of_file(blob_path(shas[i])), shas[i]);
    }
    json st = mfs_json({"status"});
    ASSERT_EQ(st["failed"].size(), 1u);
    EXPECT_EQ(st["failed"][0]["name"], "lora/missing.safetensors");
    EXPECT_FALSE(st["failed"][0]["error"].get<std::string>().empty());
    EXPECT_GT(st["failed"][0]["failed_at"].get<std::int64_t>(), 0);
    EXPECT_EQ(st["present"]["blobs"], 3);
    ASSERT_EQ(st["done"].size(), 3u);
    for (const auto& d : st["done"]) EXPECT_NE(d["name"], "lora/missing");

    // Again: what is present costs nothing; the failure is tried again and reported again.
    const std::size_t before = nginx.requests_for("f0.safetensors");
    json again = mfs_json({"fetch"}, 1);
    EXPECT_EQ(again["already_present"], 3);
    EXPECT_EQ(again["failed"].size(), 1u);
    EXPECT_EQ(nginx.requests_for("f0.safetensors"), before);
    EXPECT_EQ(mfs_json({"fetch", "lora/f*"})["already_present"], 3);
}

TEST_F(FetchCli, FetchSelectsByPatternAndRefusesPatternsThatMatchNothing) {
    NginxServer nginx(www);
    serve("p.safetensors", 1000, 20);
    serve("q.safetensors", 1000, 21);
    ASSERT_EQ(mfs({"add", nginx.url("p.safetensors"), "--as", "lora/p"}).exit_code, 0);
    ASSERT_EQ(mfs({"add", nginx.url("q.safetensors"), "--as", "vae/q"}).exit_code, 0);
    CliResult none = mfs({"fetch", "lora/nope*"});
    EXPECT_EQ(none.exit_code, 3);
    EXPECT_NE(none.err.find("lora/nope*"), std::string::npos) << none.err;
    json r = mfs_json({"fetch", "lora/*", "--limit-rate", "10M"});
    EXPECT_EQ(r["fetched"].size(), 1u);
    EXPECT_EQ(r["fetched"][0]["name"], "lora/p.safetensors");
    EXPECT_EQ(nginx.requests_for("q.safetensors"), 1u) << "only the add's HEAD";
}

TEST_F(FetchCli, TheConfigFilesQuotaKeepsDownloadsWithinIt) {
    NginxServer nginx(www);
    for (int i = 0; i < 4; ++i) {
        const std::string name = "q" + std::to_string(i) + ".bin";
        serve(name, 100'000, 40 + i);
        ASSERT_EQ(mfs({"add", nginx.url(name), "--as", "lora/q" + std::to_string(i)}).exit_code, 0);
    }
    write_text_file(dir / "config.toml", "[fetch]\ncache_max_size = 250000\njobs = 1\n");
    const std::map<std::string, std::string> env{
        {"MODELFS_CONFIG", (dir / "config.toml").string()}};
    CliResult r = run_modelfs({"--store", store.string(), "--json", "fetch"}, env);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(json::parse(r.out)["fetched"].size(), 4u);
    json st = mfs_json({"status"});
    EXPECT_LE(st["present"]["bytes"].get<std::uint64_t>(), 250'000u) << st.dump();
    EXPECT_EQ(st["present"]["blobs"], 2);
    EXPECT_EQ(st["remote"]["blobs"], 2);
    // `evict` without --max-size uses the same setting: nothing more to do.
    r = run_modelfs({"--store", store.string(), "--json", "evict"}, env);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_TRUE(json::parse(r.out)["evicted"].empty());
    EXPECT_EQ(json::parse(r.out)["max_bytes"], 250000);
}

TEST_F(FetchCli, InterruptedFetchStopsCleanlyAndResumes) {
    FaultServer srv(www);
    const std::string sha = serve("slow.safetensors", 1'000'000, 30);
    ASSERT_EQ(mfs({"add", srv.url("slow.safetensors"), "--as", "lora/slow", "--sha256", sha,
                   "--size", "1000000"})
                  .exit_code,
              0);
    // The first body request crawls; everything after it is served normally.
    srv.set_faults("slow.safetensors", {Fault::throttle(100'000).only("GET")});
    const stdfs::path log = dir / "fetch.log";
    pid_t pid = spawn_modelfs({"--store", store.string(), "fetch"}, log);
    // Wait until some bytes arrived (the partial state says so), then Ctrl-C.
    json st;
    for (int i = 0; i < 100; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        st = mfs_json({"status"});
        if (!st["in_flight"].empty() && st["in_flight"][0]["done_bytes"].get<std::uint64_t>() > 0)
            break;
    }
    ASSERT_FALSE(st["in_flight"].empty()) << st.dump() << read_file(log);
    ::kill(pid, SIGINT);
    EXPECT_EQ(wait_child(pid), 130) << read_file(log);
    EXPECT_NE(read_file(log).find("resume"), std::string::npos) << read_file(log);
    st = mfs_json({"status"});
    ASSERT_EQ(st["interrupted"].size(), 1u) << st.dump();
    const auto kept = st["interrupted"][0]["done_bytes"].get<std::uint64_t>();
    EXPECT_GT(kept, 0u);

    json r = mfs_json({"fetch"});
    ASSERT_EQ(r["fetched"].size(), 1u) << r.dump();
    EXPECT_EQ(sha256_hex_of_file(blob_path(sha)), sha);
    bool resumed = false;
    for (const auto& line : srv.request_log())
        if (line.starts_with("GET") && line.find("bytes=") != std::string::npos &&
            line.find("bytes=0-") == std::string::npos)
            resumed = true;
    EXPECT_TRUE(resumed) << "no request started past the kept bytes";
}

}  // namespace
