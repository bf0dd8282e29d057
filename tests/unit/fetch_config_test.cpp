// The config file's [fetch] and [s3] tables (tools/config.cpp): parsing, mistakes named by
// file:line:column, byte sizes ("50M"), and the layering file > environment > default.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <string>

#include "config.h"
#include "modelfs/store/errors.h"

namespace {

using modelfs::cli::Config;
using modelfs::cli::ConfigError;
using modelfs::cli::fetch_config;
using modelfs::cli::parse_config;
using modelfs::cli::parse_size;
using modelfs::fetch::FetchConfig;

Config parse(const std::string& text) {
    return parse_config(text, "/cfg/config.toml");
}

std::string error_of(const std::string& text) {
    try {
        parse(text);
    } catch (const ConfigError& e) {
        return e.what();
    }
    ADD_FAILURE() << "accepted: " << text;
    return "";
}

TEST(FetchConfigFile, EveryKey) {
    Config c = parse(R"(
[fetch]
jobs = 3
connections_per_blob = 2
max_per_host = 5
max_connections = 12
retries = 0
limit_rate = "1.5M"
cache_max_size = 1000
hf_endpoint = "http://127.0.0.1:8080/"
[s3]
endpoint = "http://127.0.0.1:7480"
region = "eu-west-1"
access_key = "AK"
secret_key = "SK"
)");
    FetchConfig base;  // the built-in defaults, no environment
    FetchConfig f = fetch_config(c, base);
    EXPECT_EQ(f.max_blobs, 3u);
    EXPECT_EQ(f.connections_per_blob, 2u);
    EXPECT_EQ(f.max_per_host, 5u);
    EXPECT_EQ(f.max_connections, 12u);
    EXPECT_EQ(f.retries, 0u);
    EXPECT_EQ(f.limit_rate, 1572864u);
    EXPECT_EQ(f.cache_max_bytes, 1000u);
    EXPECT_EQ(f.hf_endpoint, "http://127.0.0.1:8080") << "a trailing slash is dropped";
    EXPECT_EQ(f.s3.endpoint, "http://127.0.0.1:7480");
    EXPECT_EQ(f.s3.region, "eu-west-1");
    EXPECT_EQ(f.s3.access_key, "AK");
    EXPECT_EQ(f.s3.secret_key, "SK");
}

TEST(FetchConfigFile, TransferTimeoutFromTheFileOrTheEnvironment) {
    EXPECT_EQ(FetchConfig{}.transfer_timeout, std::chrono::seconds(1800));
    FetchConfig f = fetch_config(parse("[fetch]\ntransfer_timeout = 60\n"), FetchConfig{});
    EXPECT_EQ(f.transfer_timeout, std::chrono::seconds(60));
    EXPECT_NE(error_of("[fetch]\ntransfer_timeout = 0\n").find("'fetch.transfer_timeout' must be"),
              std::string::npos);
    ::setenv("MODELFS_TRANSFER_TIMEOUT", "90", 1);
    EXPECT_EQ(modelfs::cli::environment_fetch_config().transfer_timeout, std::chrono::seconds(90));
    ::setenv("MODELFS_TRANSFER_TIMEOUT", "soon", 1);
    EXPECT_THROW(modelfs::cli::environment_fetch_config(), ConfigError);
    ::unsetenv("MODELFS_TRANSFER_TIMEOUT");
}

TEST(FetchConfigFile, TheFileOverridesTheEnvironmentWhichOverridesDefaults) {
    FetchConfig env;  // as environment_fetch_config() would make it
    env.s3.access_key = "from-env";
    env.s3.secret_key = "env-secret";
    env.hf_endpoint = "https://env.example";
    env.hf_token = "tok";
    Config c = parse("[s3]\naccess_key = \"from-file\"\n");
    FetchConfig f = fetch_config(c, env);
    EXPECT_EQ(f.s3.access_key, "from-file");
    EXPECT_EQ(f.s3.secret_key, "env-secret") << "keys the file does not set stay";
    EXPECT_EQ(f.hf_endpoint, "https://env.example");
    EXPECT_EQ(f.hf_token, "tok");
    EXPECT_EQ(f.max_blobs, FetchConfig{}.max_blobs);
    // No config at all: exactly the base.
    FetchConfig none = fetch_config(Config{}, env);
    EXPECT_EQ(none.s3.access_key, "from-env");
}

TEST(FetchConfigFile, MistakesAreNamed) {
    EXPECT_NE(error_of("[fetch]\njobz = 2\n")
                  .find("/cfg/config.toml:2:1: unknown key 'jobz' in "
                        "[fetch]"),
              std::string::npos);
    EXPECT_NE(error_of("[fetch]\njobs = 0\n")
                  .find(":2:8: 'fetch.jobs' must be a whole number of "
                        "at least 1"),
              std::string::npos);
    EXPECT_NE(error_of("[fetch]\njobs = \"4\"\n").find("'fetch.jobs'"), std::string::npos);
    EXPECT_NE(error_of("[fetch]\nlimit_rate = \"fast\"\n").find("'fetch.limit_rate' must be"),
              std::string::npos);
    EXPECT_NE(error_of("[fetch]\ncache_max_size = -5\n").find("must not be negative"),
              std::string::npos);
    EXPECT_NE(error_of("[fetch]\nhf_endpoint = \"huggingface.co\"\n").find("http://"),
              std::string::npos);
    EXPECT_NE(error_of("[s3]\nbucket = \"x\"\n").find("unknown key 'bucket' in [s3]"),
              std::string::npos);
    EXPECT_NE(error_of("[s3]\nregion = 5\n").find("'s3.region' must be a string"),
              std::string::npos);
    EXPECT_NE(error_of("fetch = 3\n").find("'fetch' must be a table"), std::string::npos);
}

TEST(ParseSize, UnitsArePowersOf1024) {
    EXPECT_EQ(parse_size("0"), 0u);
    EXPECT_EQ(parse_size("1234"), 1234u);
    EXPECT_EQ(parse_size("50M"), 50u << 20);
    EXPECT_EQ(parse_size("50m"), 50u << 20);
    EXPECT_EQ(parse_size("50MB"), 50u << 20);
    EXPECT_EQ(parse_size("50MiB/s"), 50u << 20);
    EXPECT_EQ(parse_size("1.5G"), 3ull << 29);
    EXPECT_EQ(parse_size("700 K"), 700u << 10);
    EXPECT_EQ(parse_size("2T"), 2ull << 40);
    EXPECT_EQ(parse_size("12B"), 12u);
    EXPECT_EQ(parse_size("18446744073709551615"), 18446744073709551615ull);
    for (const char* bad :
         {"", "M", "-1", "1.2.3", "5X", "1e6", "fast", "16777216T", "18446744073709551616", "."})
        EXPECT_FALSE(parse_size(bad)) << bad;
}

}  // namespace
