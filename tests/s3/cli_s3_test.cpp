// `modelfs add s3://...` and `modelfs fetch` against the real radosgw (which checks SigV4
// signatures): credentials and endpoint come from the config file's [s3] table, which beats the
// AWS_* variables, which are used when the file says nothing.
#include <gtest/gtest.h>

#include <map>
#include <string>

#include <nlohmann/json.hpp>

#include "support/http_servers.h"
#include "support/test_env.h"

namespace modelfs::test {
namespace {

using modelfs::testing::CliResult;
using modelfs::testing::run_modelfs;
using modelfs::testing::sha256_hex_of_file;
using modelfs::testing::TempDir;
using modelfs::testing::write_random_file;
using modelfs::testing::write_text_file;
using nlohmann::json;

class CliS3 : public ::testing::Test {
  protected:
    void SetUp() override {
        bucket_ = S3Fixture::unique_bucket("cli");
        s3_.create_bucket(bucket_);
        write_random_file(dir_ / "m.safetensors", 600'000, 3);
        sha_ = sha256_hex_of_file(dir_ / "m.safetensors");
        s3_.put_object(bucket_, "loras/m.safetensors", dir_ / "m.safetensors");
        url_ = "s3://" + bucket_ + "/loras/m.safetensors";
        ASSERT_EQ(mfs({"init"}, {}).exit_code, 0);
    }
    CliResult mfs(std::vector<std::string> args, std::map<std::string, std::string> env) {
        args.insert(args.begin(), {"--store", (dir_ / "store").string()});
        return run_modelfs(args, env);
    }
    std::string config(const std::string& secret) {
        const auto p = dir_ / ("config-" + std::to_string(++configs_) + ".toml");
        write_text_file(p, "[s3]\nendpoint = \"" + s3_.endpoint() + "\"\nregion = \"" +
                               s3_.region() + "\"\naccess_key = \"" + s3_.access_key() +
                               "\"\nsecret_key = \"" + secret + "\"\n");
        return p.string();
    }

    S3Fixture s3_;
    TempDir dir_{"modelfs-cli-s3"};
    std::string bucket_, sha_, url_;
    int configs_ = 0;
};

TEST_F(CliS3, TheConfigFilesKeysBeatTheEnvironments) {
    const std::map<std::string, std::string> env{{"MODELFS_CONFIG", config(s3_.secret_key())},
                                                 {"AWS_ACCESS_KEY_ID", "wrong"},
                                                 {"AWS_SECRET_ACCESS_KEY", "wrong"},
                                                 {"AWS_ENDPOINT_URL", "http://127.0.0.1:9"}};
    CliResult r = mfs({"add", url_, "--as", "lora/m", "--sha256", sha_}, env);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    r = mfs({"--json", "fetch"}, env);
    ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
    EXPECT_EQ(json::parse(r.out)["fetched"].size(), 1u);
    EXPECT_EQ(sha256_hex_of_file(dir_ / "store" / "blobs" / "sha256" / sha_.substr(0, 2) / sha_),
              sha_);
}

TEST_F(CliS3, TheEnvironmentIsUsedWhenTheFileSaysNothing) {
    const std::map<std::string, std::string> env{{"AWS_ACCESS_KEY_ID", s3_.access_key()},
                                                 {"AWS_SECRET_ACCESS_KEY", s3_.secret_key()},
                                                 {"AWS_REGION", s3_.region()},
                                                 {"AWS_ENDPOINT_URL_S3", s3_.endpoint()}};
    CliResult r = mfs({"--json", "add", url_, "--as", "lora/m"}, env);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(json::parse(r.out)["models"][0]["size"], 600'000);
}

TEST_F(CliS3, AWrongSecretIsRefusedAndNothingIsRegistered) {
    const std::map<std::string, std::string> env{{"MODELFS_CONFIG", config("not-the-secret")}};
    CliResult r = mfs({"add", url_, "--as", "lora/m"}, env);
    EXPECT_EQ(r.exit_code, 1) << r.out;
    EXPECT_NE(r.err.find(url_.substr(5)), std::string::npos) << r.err;  // names the object
    EXPECT_NE(r.err.find("nothing was registered"), std::string::npos) << r.err;
    r = mfs({"--json", "ls"}, env);
    EXPECT_EQ(json::parse(r.out).size(), 0u);
}

}  // namespace
}  // namespace modelfs::test
