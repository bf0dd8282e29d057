// The real Fetcher against a real S3 server (Ceph radosgw, which checks SigV4 signatures): an
// s3:// source is downloaded with the fixture's credentials in ranged requests and verified; a
// wrong secret, or none, fails with an error naming the source and the 403.
#include <chrono>
#include <string>

#include <gtest/gtest.h>

#include "modelfs/fetch/config.h"
#include "modelfs/fetch/fetcher.h"
#include "modelfs/fetch/probe.h"
#include "modelfs/store/errors.h"
#include "modelfs/store/store.h"
#include "support/http_servers.h"
#include "support/test_env.h"

namespace modelfs::test {
namespace {

using modelfs::testing::read_file;
using modelfs::testing::sha256_hex_of_file;
using modelfs::testing::TempDir;
using modelfs::testing::write_random_file;
using namespace std::chrono_literals;

constexpr std::uint64_t kSize = 5 * 1024 * 1024 + 123;

class S3FetchTest : public ::testing::Test {
  protected:
    void SetUp() override {
        bucket_ = S3Fixture::unique_bucket("fetch");
        s3_.create_bucket(bucket_);
        file_ = dir_ / "src/model.safetensors";
        write_random_file(file_, kSize, 21);
        s3_.put_object(bucket_, "loras/model.safetensors", file_);
        sha_ = *Sha256::from_hex(sha256_hex_of_file(file_));
        url_ = "s3://" + bucket_ + "/loras/model.safetensors";
    }

    fetch::FetchConfig config(std::string secret) const {
        fetch::FetchConfig cfg;
        cfg.s3.endpoint = s3_.endpoint();
        cfg.s3.region = s3_.region();
        cfg.s3.access_key = s3_.access_key();
        cfg.s3.secret_key = std::move(secret);
        cfg.s3.path_style = true;
        cfg.chunk_size = 1 << 20;  // several ranged requests, each signed
        cfg.connections_per_blob = 4;
        cfg.retries = 1;
        cfg.backoff_initial = 10ms;
        cfg.backoff_max = 50ms;
        return cfg;
    }

    // Registers the S3 object as a remote LoRA; `known` false leaves its hash to the download.
    Sha256 add(Store& store, bool known) const {
        RemoteModel m;
        m.category = Category::lora;
        m.name = "s3-model";
        m.ext = ".safetensors";
        RemoteFile f;
        if (known) f.sha256 = sha_;
        f.size = kSize;
        f.sources.push_back(BlobSource{url_});
        m.files.push_back(f);
        auto r = store.add_remote(m);
        EXPECT_EQ(r.remote, 1u);
        return r.blobs.at(0);
    }

    S3Fixture s3_;
    TempDir dir_{"modelfs-s3-fetch"};
    std::filesystem::path file_;
    std::string bucket_, url_;
    Sha256 sha_;
};

TEST_F(S3FetchTest, ASignedS3SourceIsFetchedInRangesAndVerified) {
    Store store = Store::init(dir_ / "store");
    Sha256 key = add(store, true);
    fetch::Fetcher fetcher(store, config(s3_.secret_key()));
    auto result = fetcher.fetch(key)->wait();
    ASSERT_TRUE(result.ok) << result.error;
    EXPECT_EQ(result.blob, sha_);
    auto blob = store.blobs().path_of(sha_);
    EXPECT_TRUE(read_file(blob) == read_file(file_));
    auto st = fetcher.downloads();
    ASSERT_EQ(st.size(), 1u);
    EXPECT_EQ(st[0].state, fetch::FetchState::done);
    EXPECT_GE(st[0].requests, 2u);  // 5 MiB in 1 MiB chunks: ranged, not one GET
}

TEST_F(S3FetchTest, AnS3SourceWithoutAKnownHashGetsItsRealHash) {
    Store store = Store::init(dir_ / "store");
    Sha256 key = add(store, false);
    EXPECT_NE(key, sha_);
    fetch::Fetcher fetcher(store, config(s3_.secret_key()));
    auto result = fetcher.fetch(key)->wait();
    ASSERT_TRUE(result.ok) << result.error;
    EXPECT_EQ(result.blob, sha_);
    EXPECT_TRUE(read_file(store.blobs().path_of(sha_)) == read_file(file_));
}

TEST_F(S3FetchTest, AWrongSecretFailsNamingTheSourceAnd403) {
    Store store = Store::init(dir_ / "store");
    Sha256 key = add(store, true);
    fetch::Fetcher fetcher(store, config(s3_.secret_key() + "-wrong"));
    auto result = fetcher.fetch(key)->wait();
    ASSERT_FALSE(result.ok);
    EXPECT_NE(result.error.find(url_), std::string::npos) << result.error;
    EXPECT_NE(result.error.find("403"), std::string::npos) << result.error;
    EXPECT_FALSE(std::filesystem::exists(store.blobs().path_of(sha_)));
}

TEST_F(S3FetchTest, NoCredentialsFailWith403) {
    Store store = Store::init(dir_ / "store");
    Sha256 key = add(store, true);
    auto cfg = config("");
    cfg.s3.access_key.clear();
    fetch::Fetcher fetcher(store, cfg);
    auto result = fetcher.fetch(key)->wait();
    ASSERT_FALSE(result.ok);
    EXPECT_NE(result.error.find("403"), std::string::npos) << result.error;
    EXPECT_FALSE(std::filesystem::exists(store.blobs().path_of(sha_)));
}

TEST_F(S3FetchTest, ProbeReadsTheSizeAndTheStoredSha256) {
    // The hash as S3 user metadata, the way an uploader can publish it.
    s3_.put_object(bucket_, "loras/with-meta.safetensors", file_,
                   {"x-amz-meta-sha256: " + sha_.hex()});
    auto cfg = config(s3_.secret_key());
    auto info = fetch::probe("s3://" + bucket_ + "/loras/with-meta.safetensors", cfg);
    ASSERT_TRUE(info.size.has_value());
    EXPECT_EQ(*info.size, kSize);
    ASSERT_TRUE(info.sha256.has_value());
    EXPECT_EQ(*info.sha256, sha_);
    EXPECT_TRUE(info.accepts_ranges);

    auto plain = fetch::probe(url_, cfg);
    EXPECT_EQ(plain.size.value_or(0), kSize);
    EXPECT_FALSE(plain.sha256.has_value());
}

TEST_F(S3FetchTest, ProbeWithAWrongSecretNamesTheUrlAnd403) {
    try {
        fetch::probe(url_, config(s3_.secret_key() + "-wrong"));
        FAIL() << "probe with a wrong secret succeeded";
    } catch (const StoreError& e) {
        std::string what = e.what();
        EXPECT_NE(what.find(url_), std::string::npos) << what;
        EXPECT_NE(what.find("403"), std::string::npos) << what;
    }
}

}  // namespace
}  // namespace modelfs::test
