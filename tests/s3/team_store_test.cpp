// A team store on the real Ceph radosgw (store/FORMAT.md "Team remotes"): stores as machines,
// `modelfs remote add`, `push`, `pull`, `pull --follow`, lock files, and failures: a server that
// goes away mid-push and mid-pull (a proxy of ours in front of radosgw, killed and restarted, so
// other tests keep their server), wrong credentials, a damaged object in the bucket.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "modelfs/fetch/s3_client.h"
#include "support/http_servers.h"
#include "support/mount_fixture.h"
#include "support/safetensors_writer.h"
#include "support/sized_models.h"
#include "support/test_env.h"

namespace modelfs::test {
namespace {

namespace stdfs = std::filesystem;
using modelfs::testing::CliResult;
using modelfs::testing::eventually;
using modelfs::testing::Mount;
using modelfs::testing::read_file;
using modelfs::testing::run_modelfs;
using modelfs::testing::sha256_hex_of_file;
using modelfs::testing::spawn_modelfs;
using modelfs::testing::TempDir;
using modelfs::testing::wait_child;
using modelfs::testing::write_safetensors;
using modelfs::testing::write_sized_safetensors;
using modelfs::testing::write_text_file;
using nlohmann::json;

// tests/support/tcp_proxy.py in front of radosgw: kill() is the server going away for this test.
class Proxy {
  public:
    Proxy(int target_port, int port = 0, long rate = 0) {
        int out[2];
        if (pipe(out) != 0) throw std::runtime_error("pipe");
        pid_ = fork();
        if (pid_ == 0) {
            dup2(out[1], 1);
            close(out[0]);
            std::vector<std::string> args{"/usr/bin/python3", MODELFS_TCP_PROXY_PY,
                                          std::to_string(port), std::to_string(target_port)};
            if (rate) {
                args.push_back("--rate");
                args.push_back(std::to_string(rate));
            }
            std::vector<char*> argv;
            for (auto& a : args) argv.push_back(a.data());
            argv.push_back(nullptr);
            execv(argv[0], argv.data());
            _exit(127);
        }
        close(out[1]);
        FILE* f = fdopen(out[0], "r");
        int p = 0;
        if (!f || fscanf(f, "port %d", &p) != 1)
            throw std::runtime_error("tcp_proxy did not start");
        fclose(f);
        port_ = p;
    }
    ~Proxy() { kill(); }
    void kill() {
        if (pid_ > 0) {
            ::kill(pid_, SIGKILL);
            waitpid(pid_, nullptr, 0);
            pid_ = 0;
        }
    }
    int port() const { return port_; }

  private:
    pid_t pid_ = 0;
    int port_ = 0;
};

int port_of(const std::string& endpoint) {
    return std::stoi(endpoint.substr(endpoint.rfind(':') + 1));
}

class TeamStore : public ::testing::Test {
  protected:
    void SetUp() override {
        bucket_ = S3Fixture::unique_bucket("team");
        s3_.create_bucket(bucket_);
        // Machines a and b use the environment; c a profile in its own ~/.aws files.
        write_text_file(dir_ / "aws" / "credentials",
                        "[default]\naws_access_key_id = wrong\naws_secret_access_key = wrong\n\n"
                        "[team]\naws_access_key_id = " +
                            s3_.access_key() + "\naws_secret_access_key = " + s3_.secret_key() +
                            "\n");
        write_text_file(dir_ / "aws" / "config", "[profile team]\nregion = " + s3_.region() + "\n");
        for (const char* m : {"a", "b", "c"}) ASSERT_EQ(mfs(m, {"init"}).exit_code, 0);
    }

    std::map<std::string, std::string> env(const std::string& machine) {
        std::map<std::string, std::string> e{
            {"HOME", (dir_ / ("home-" + machine)).string()},
            {"AWS_SHARED_CREDENTIALS_FILE", (dir_ / "aws" / "credentials").string()},
            {"AWS_CONFIG_FILE", (dir_ / "aws" / "config").string()},
            {"MODELFS_CONFIG", config_.empty() ? "/dev/null" : config_}};
        if (machine != "c") {
            e["AWS_ACCESS_KEY_ID"] = s3_.access_key();
            e["AWS_SECRET_ACCESS_KEY"] = secret_;
            e["AWS_REGION"] = s3_.region();
        }
        return e;
    }
    // `modelfs ARGS` in the background with `machine`'s environment, output to `log`.
    pid_t spawn(const std::string& machine, std::vector<std::string> args, const stdfs::path& log) {
        args.insert(args.begin(), {"--store", store(machine).string()});
        const auto e = env(machine);
        for (const auto& [k, v] : e) setenv(k.c_str(), v.c_str(), 1);
        const pid_t pid = spawn_modelfs(args, log);
        for (const auto& [k, v] : e) unsetenv(k.c_str());
        return pid;
    }
    stdfs::path store(const std::string& machine) { return dir_ / ("store-" + machine); }
    CliResult mfs(const std::string& machine, std::vector<std::string> args) {
        args.insert(args.begin(), {"--store", store(machine).string()});
        return run_modelfs(args, env(machine));
    }
    json mfs_json(const std::string& machine, std::vector<std::string> args) {
        args.insert(args.begin(), "--json");
        CliResult r = mfs(machine, args);
        EXPECT_EQ(r.exit_code, 0) << machine << ": " << r.err << r.out;
        return r.out.empty() ? json() : json::parse(r.out);
    }
    // remote add "team" on `machine` pointing at `endpoint` (default: the server itself).
    void add_remote(const std::string& machine, std::string endpoint = "") {
        if (endpoint.empty()) endpoint = s3_.endpoint();
        std::vector<std::string> args{"remote",     "add",   "team", "s3://" + bucket_ + "/models",
                                      "--endpoint", endpoint};
        if (machine == "c") {
            args.push_back("--profile");
            args.push_back("team");
        }
        CliResult r = mfs(machine, args);
        ASSERT_EQ(r.exit_code, 0) << r.err;
    }
    // A safetensors file imported into `machine` as lora NAME; returns its SHA-256.
    std::string import(const std::string& machine, const std::string& name, std::uint64_t size,
                       std::uint64_t seed, const std::string& category = "lora") {
        const stdfs::path p =
            dir_ / "src" / (machine + "-" + name + "-" + std::to_string(seed) + ".safetensors");
        stdfs::create_directories(p.parent_path());
        write_sized_safetensors(p, size, seed);
        CliResult r = mfs(machine, {"import", p.string(), "-c", category, "-n", name});
        EXPECT_EQ(r.exit_code, 0) << r.err;
        return sha256_hex_of_file(p);
    }
    std::set<std::string> model_keys(const std::string& machine) {
        std::set<std::string> out;
        for (const auto& m : mfs_json(machine, {"ls"})) out.insert(m["model"].get<std::string>());
        return out;
    }
    stdfs::path blob(const std::string& machine, const std::string& sha) {
        return store(machine) / "blobs" / "sha256" / sha.substr(0, 2) / sha;
    }

    S3Fixture s3_;
    TempDir dir_{"modelfs-team"};
    std::string bucket_;
    std::string secret_ = s3_.secret_key();
    std::string config_;
};

TEST_F(TeamStore, TwoWritersPushAtOnceAndAThirdMachineSeesBoth) {
    const std::string a1 = import("a", "style-a", 3'000'000, 1);
    const std::string shared_a = import("a", "base", 2'000'000, 7, "checkpoint");
    const std::string b1 = import("b", "style-b", 12'000'000, 2);  // multipart with 5 MiB parts
    const std::string shared_b = import("b", "base", 2'000'000, 7, "checkpoint");  // same bytes
    ASSERT_EQ(shared_a, shared_b);
    const std::string b2 = import("b", "style-b", 1'000'000, 3);  // a v2
    add_remote("a");
    add_remote("b");
    add_remote("c");

    // Both at once.
    const pid_t pa = spawn("a", {"push", "team"}, dir_ / "push-a.log");
    CliResult rb = mfs("b", {"push", "team", "--part-size", "5M", "--jobs", "3"});
    EXPECT_EQ(rb.exit_code, 0) << rb.err;
    EXPECT_EQ(wait_child(pa), 0) << read_file(dir_ / "push-a.log");

    json p = mfs_json("c", {"pull", "team"});
    EXPECT_EQ(p["writers"], 2);
    EXPECT_EQ(p["models_added"], 3);
    EXPECT_EQ(model_keys("c"),
              (std::set<std::string>{"checkpoint/base.safetensors", "lora/style-a.safetensors",
                                     "lora/style-b.safetensors"}));
    json v = mfs_json("c", {"versions", "lora/style-b.safetensors"});
    EXPECT_EQ(v["versions"].size(), 2u) << v.dump();
    EXPECT_FALSE(stdfs::exists(blob("c", b1))) << "a pull downloads nothing";

    // Fetching verifies each file against its hash; the shared checkpoint is one object. `fetch`
    // takes current versions; the older one of style-b comes when it is made current.
    CliResult f = mfs("c", {"fetch"});
    ASSERT_EQ(f.exit_code, 0) << f.err;
    for (const auto& h : {a1, shared_a, b2}) EXPECT_EQ(sha256_hex_of_file(blob("c", h)), h);
    EXPECT_FALSE(stdfs::exists(blob("c", b1)));
    ASSERT_EQ(mfs("c", {"use", "lora/style-b.safetensors@v1"}).exit_code, 0);
    ASSERT_EQ(mfs("c", {"fetch"}).exit_code, 0);
    EXPECT_EQ(sha256_hex_of_file(blob("c", b1)), b1);

    // A second push of an unchanged store uploads nothing and publishes nothing new.
    json again = mfs_json("a", {"push", "team"});
    EXPECT_EQ(again["blobs_uploaded"], 0);
    EXPECT_EQ(again["unchanged"], true);
    json c2 = mfs_json("c", {"pull", "team"});
    EXPECT_EQ(c2["unchanged"], true);
}

// Issue 20: a snapshot carries tensor maps, so a machine that has the base pulls a fine-tune by
// downloading only the tensors that changed; the whole file is verified and stored sharing the
// base's tensors.
TEST_F(TeamStore, AFineTuneIsPulledByDownloadingOnlyItsNewTensors) {
    using modelfs::testing::SafetensorsSpec;
    SafetensorsSpec base;
    base.metadata = {{"title", "base"}};
    for (int i = 0; i < 16; ++i)
        base.tensors.push_back({"model.diffusion_model.b" + std::to_string(i) + ".weight",
                                "F32",
                                {512, 512},
                                100 + i,
                                std::nullopt});
    SafetensorsSpec ft = base;
    ft.metadata = {{"title", "ft"}};
    ft.tensors[2].seed = 42;  // 1 MiB of 16 changed
    stdfs::create_directories(dir_ / "src");
    const std::uint64_t size = write_safetensors(dir_ / "src" / "ft.safetensors", ft);
    write_safetensors(dir_ / "src" / "base.safetensors", base);
    const std::string ft_sha = sha256_hex_of_file(dir_ / "src" / "ft.safetensors");
    for (const char* m : {"a", "b"}) {
        CliResult r = mfs(m, {"import", (dir_ / "src" / "base.safetensors").string(), "-c",
                              "checkpoint", "-n", "base"});
        ASSERT_EQ(r.exit_code, 0) << r.err;
    }
    ASSERT_EQ(mfs("a", {"import", (dir_ / "src" / "ft.safetensors").string(), "-c", "checkpoint",
                        "-n", "ft"})
                  .exit_code,
              0);
    EXPECT_FALSE(stdfs::exists(blob("a", ft_sha))) << "stored as extents of the base on a";
    add_remote("a");
    add_remote("b");
    CliResult push = mfs("a", {"push", "team"});
    ASSERT_EQ(push.exit_code, 0) << push.err;
    ASSERT_EQ(mfs("b", {"pull", "team"}).exit_code, 0);
    json f = mfs_json("b", {"fetch", "checkpoint/ft.safetensors"});
    ASSERT_EQ(f["ok"], true) << f.dump();
    const std::uint64_t changed = 512 * 512 * 4;
    const std::uint64_t header = size - 16 * changed;
    EXPECT_EQ(f["reused_bytes"].get<std::uint64_t>(), size - changed - header) << f.dump();
    json show = mfs_json("b", {"show", "ft"});
    EXPECT_EQ(show["file"]["stored_as"], "composed") << show.dump();
    EXPECT_EQ(mfs("b", {"verify"}).exit_code, 0);
}

TEST_F(TeamStore, AMountShowsPulledModelsAndFollowPicksUpANewPush) {
    if (access("/dev/fuse", R_OK | W_OK) != 0) GTEST_SKIP() << "no /dev/fuse";
    const std::string a1 = import("a", "first", 2'000'000, 1);
    add_remote("a");
    add_remote("c");
    ASSERT_EQ(mfs("a", {"push", "team"}).exit_code, 0);
    ASSERT_EQ(mfs("c", {"pull", "team"}).exit_code, 0);

    // The mount's downloads need c's profile: the daemon runs with c's environment.
    for (const auto& [k, v] : env("c")) setenv(k.c_str(), v.c_str(), 1);
    const stdfs::path mnt = dir_ / "mnt";
    stdfs::create_directories(mnt);
    Mount m(store("c"), mnt);
    ASSERT_TRUE(m.ok());
    const stdfs::path first = mnt / "comfyui" / "loras" / "first.safetensors";
    ASSERT_TRUE(stdfs::exists(first));
    EXPECT_EQ(stdfs::file_size(first), 2'000'000u);
    const auto t0 = std::chrono::steady_clock::now();
    {
        std::ifstream in(first, std::ios::binary);
        char c;
        ASSERT_TRUE(in.get(c)) << "first open fetches from the remote";
    }
    const auto first_byte = std::chrono::steady_clock::now() - t0;
    std::cerr << "open to first byte: "
              << std::chrono::duration_cast<std::chrono::milliseconds>(first_byte).count()
              << " ms\n";
    EXPECT_EQ(sha256_hex_of_file(first), a1);

    // pull --follow: a new push shows in the live mount within a few intervals.
    const pid_t follower =
        spawn("c", {"pull", "team", "--follow", "--interval", "1"}, dir_ / "follow.log");
    const std::string a2 = import("a", "second", 1'000'000, 2);
    ASSERT_EQ(mfs("a", {"push", "team"}).exit_code, 0);
    const stdfs::path second = mnt / "comfyui" / "loras" / "second.safetensors";
    EXPECT_TRUE(eventually([&] { return stdfs::exists(second); }, std::chrono::seconds(20)))
        << read_file(dir_ / "follow.log");
    EXPECT_EQ(sha256_hex_of_file(second), a2);
    ::kill(follower, SIGTERM);
    wait_child(follower);
    for (const auto& [k, v] : env("c")) unsetenv(k.c_str());
}

TEST_F(TeamStore, ALockFileFromOneMachineAppliesOnAnotherThatHasTheRemote) {
    const std::string v1 = import("a", "locked", 1'500'000, 1);
    import("a", "locked", 1'500'000, 2);  // v2 is current; the lock says v1
    add_remote("a");
    ASSERT_EQ(mfs("a", {"push", "team"}).exit_code, 0);
    ASSERT_EQ(mfs("a", {"use", "lora/locked.safetensors@v1"}).exit_code, 0);
    const stdfs::path lock = dir_ / "project.lock";
    ASSERT_EQ(mfs("a", {"lock", "-o", lock.string()}).exit_code, 0);
    EXPECT_NE(read_file(lock).find("s3://" + bucket_ + "/models/blobs/sha256/"), std::string::npos)
        << "pushed blobs get the remote as a source";

    add_remote("c");  // c has the remote but never pulled
    CliResult r = mfs("c", {"apply", lock.string()});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    ASSERT_EQ(mfs("c", {"fetch"}).exit_code, 0);
    EXPECT_EQ(sha256_hex_of_file(blob("c", v1)), v1);
    json ls = mfs_json("c", {"ls"});
    ASSERT_EQ(ls.size(), 1u);
    EXPECT_EQ(ls[0]["model"], "lora/locked.safetensors");
    EXPECT_EQ(ls[0]["sha256"], v1) << "the locked version, not the newer one";
}

TEST_F(TeamStore, AReadOnlyHttpMirrorOfThePrefixCanBePulledAndFetchedFrom) {
    const std::string h = import("a", "mirrored", 1'200'000, 1);
    add_remote("a");
    ASSERT_EQ(mfs("a", {"push", "team"}).exit_code, 0);
    // The mirror: a copy of every object below the prefix, served by nginx (as a CDN would).
    fetch::S3Bucket b;
    b.endpoint = s3_.endpoint();
    b.region = s3_.region();
    b.bucket = bucket_;
    b.credentials.access_key = s3_.access_key();
    b.credentials.secret_key = s3_.secret_key();
    fetch::S3Client client(b, fetch::FetchConfig{});
    const stdfs::path root = dir_ / "mirror";
    for (const auto& o : client.list("models/")) {
        const stdfs::path p = root / o.key;
        stdfs::create_directories(p.parent_path());
        write_text_file(p, *client.get(o.key));
    }
    NginxServer nginx(root);
    CliResult r = mfs("c", {"remote", "add", "mirror", nginx.url("models")});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    json p = mfs_json("c", {"pull", "mirror"});
    EXPECT_EQ(p["writers"], 1);
    EXPECT_EQ(model_keys("c"), std::set<std::string>{"lora/mirrored.safetensors"});
    ASSERT_EQ(mfs("c", {"fetch"}).exit_code, 0);
    EXPECT_EQ(sha256_hex_of_file(blob("c", h)), h);
    // Read-only: a push says where to push instead.
    r = mfs("c", {"push", "mirror"});
    EXPECT_NE(r.exit_code, 0);
    EXPECT_NE(r.err.find("read-only mirror"), std::string::npos) << r.err;
}

TEST_F(TeamStore, WrongCredentialsAreRefusedAndChangeNothing) {
    import("a", "x", 500'000, 1);
    add_remote("a");
    secret_ = "not-the-secret";
    CliResult r = mfs("a", {"push", "team"});
    EXPECT_EQ(r.exit_code, 1) << r.out;
    EXPECT_NE(r.err.find("403"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("AWS_"), std::string::npos) << "says what to check: " << r.err;
    secret_ = s3_.secret_key();
    ASSERT_EQ(mfs("a", {"push", "team"}).exit_code, 0);

    // c's profile with a wrong secret: the pull fails and registers nothing.
    write_text_file(
        dir_ / "aws" / "credentials",
        "[team]\naws_access_key_id = " + s3_.access_key() + "\naws_secret_access_key = wrong\n");
    add_remote("c");
    r = mfs("c", {"pull", "team"});
    EXPECT_EQ(r.exit_code, 1) << r.out;
    EXPECT_TRUE(model_keys("c").empty());
    // A profile that does not exist is named.
    r = mfs("c", {"remote", "add", "other", "s3://" + bucket_, "--profile", "nosuch"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    r = mfs("c", {"pull", "other"});
    EXPECT_NE(r.err.find("nosuch"), std::string::npos) << r.err;
}

TEST_F(TeamStore, ADamagedObjectIsQuarantinedNeverServed) {
    const std::string h = import("a", "victim", 1'000'000, 1);
    add_remote("a");
    add_remote("c");
    ASSERT_EQ(mfs("a", {"push", "team"}).exit_code, 0);
    // Someone overwrites the blob's object with other bytes of the same size.
    write_sized_safetensors(dir_ / "evil.safetensors", 1'000'000, 99);
    s3_.put_object(bucket_, "models/blobs/sha256/" + h.substr(0, 2) + "/" + h,
                   dir_ / "evil.safetensors");
    ASSERT_EQ(mfs("c", {"pull", "team"}).exit_code, 0);
    CliResult f = mfs("c", {"fetch"});
    EXPECT_NE(f.exit_code, 0);
    EXPECT_FALSE(stdfs::exists(blob("c", h)));
    bool quarantined = false;
    for (const auto& e : stdfs::directory_iterator(store("c") / "quarantine"))
        quarantined |= e.path().filename().string().rfind(h, 0) == 0;
    EXPECT_TRUE(quarantined) << "the damaged download is kept for inspection";

    // A damaged snapshot is refused whole.
    json p = mfs_json("a", {"push", "team"});  // unchanged: find the snapshot name
    const std::string snap = "models/snapshots/" + p["snapshot"].get<std::string>() + ".cbor";
    write_text_file(dir_ / "junk", "junk");
    s3_.put_object(bucket_, snap, dir_ / "junk");
    CliResult r = mfs("c", {"pull", "team"});
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_NE(r.err.find("does not match its SHA-256"), std::string::npos) << r.err;
}

TEST_F(TeamStore, TheServerGoingAwayMidPushOrMidPullLosesNothing) {
    config_ = (dir_ / "config.toml").string();
    write_text_file(config_, "[fetch]\nretries = 1\n");
    const std::string big = import("a", "big", 24'000'000, 1);
    {
        Proxy slow(port_of(s3_.endpoint()), 0, 4'000'000);  // about 6 s for the upload
        add_remote("a", "http://127.0.0.1:" + std::to_string(slow.port()));
        add_remote("c", "http://127.0.0.1:" + std::to_string(slow.port()));
        const pid_t push =
            spawn("a", {"push", "team", "--part-size", "5M", "--jobs", "2"}, dir_ / "push.log");
        std::this_thread::sleep_for(std::chrono::milliseconds(2500));
        const int port = slow.port();
        slow.kill();  // the server is gone
        EXPECT_NE(wait_child(push), 0) << read_file(dir_ / "push.log");
        // No pointer was written: another machine sees nothing, not half a push.
        Proxy back(port_of(s3_.endpoint()), port);
        json p = mfs_json("c", {"pull", "team"});
        EXPECT_EQ(p["writers"], 0);
        EXPECT_TRUE(model_keys("c").empty());
        // The next push resumes the multipart upload.
        json again = mfs_json("a", {"push", "team", "--part-size", "5M", "--jobs", "2"});
        EXPECT_GE(again["resumed_parts"].get<int>(), 1) << again.dump();
        back.kill();
        // Mid-pull: the server is gone; the pull fails and changes nothing.
        CliResult r = mfs("c", {"pull", "team"});
        EXPECT_EQ(r.exit_code, 1);
        EXPECT_TRUE(model_keys("c").empty());
        Proxy again_back(port_of(s3_.endpoint()), port);
        ASSERT_EQ(mfs("c", {"pull", "team"}).exit_code, 0);
        ASSERT_EQ(mfs("c", {"fetch"}).exit_code, 0);
    }
    EXPECT_EQ(sha256_hex_of_file(blob("c", big)), big);
}

}  // namespace
}  // namespace modelfs::test
