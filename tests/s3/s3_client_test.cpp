// The S3 client of push and pull (fetch/s3_client.h) against the real Ceph radosgw, which checks
// SigV4 signatures, Content-MD5 and multipart rules: objects put, read, listed (keys that need
// escaping, more than one page), removed; uploads of small and multipart files, in parallel, and
// an interrupted multipart upload resumed; and the errors: a wrong secret, a missing bucket, a
// server that is not there.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "modelfs/fetch/config.h"
#include "modelfs/fetch/probe.h"
#include "modelfs/fetch/s3_client.h"
#include "modelfs/store/errors.h"
#include "modelfs/store/hash.h"
#include "support/http_servers.h"
#include "support/test_env.h"

namespace modelfs::test {
namespace {

namespace stdfs = std::filesystem;
using fetch::S3Bucket;
using fetch::S3Client;
using fetch::S3Object;
using fetch::S3Upload;
using fetch::S3UploadReport;
using modelfs::testing::read_file;
using modelfs::testing::sha256_hex_of_file;
using modelfs::testing::TempDir;
using modelfs::testing::write_random_file;
using modelfs::testing::write_text_file;
using namespace std::chrono_literals;

constexpr std::uint64_t kMiB = 1 << 20;
constexpr std::uint64_t kPart = 5 * kMiB;  // S3's smallest part

class S3ClientTest : public ::testing::Test {
  protected:
    void SetUp() override {
        bucket_ = S3Fixture::unique_bucket("s3client");
        s3_.create_bucket(bucket_);
    }

    S3Bucket bucket(std::string name = "", std::string secret = "") const {
        S3Bucket b;
        b.endpoint = s3_.endpoint();
        b.region = s3_.region();
        b.bucket = name.empty() ? bucket_ : name;
        b.credentials.access_key = s3_.access_key();
        b.credentials.secret_key = secret.empty() ? s3_.secret_key() : secret;
        b.credentials.origin = "the test";
        return b;
    }
    static fetch::FetchConfig config() {
        fetch::FetchConfig cfg;
        cfg.retries = 1;
        cfg.backoff_initial = 10ms;
        cfg.backoff_max = 50ms;
        return cfg;
    }
    S3Client client() const { return S3Client(bucket(), config()); }

    S3Upload file(const std::string& key, std::uint64_t size, std::uint64_t seed) const {
        S3Upload u;
        u.key = key;
        u.path = dir_ / ("f" + std::to_string(seed));
        write_random_file(u.path, size, seed);
        u.size = size;
        u.sha256 = *Sha256::from_hex(sha256_hex_of_file(u.path));
        return u;
    }

    // The SHA-256 the object states (x-amz-meta-sha256), as the fetcher's probe reads it.
    std::optional<Sha256> stated_sha256(const std::string& key) const {
        fetch::FetchConfig cfg = config();
        cfg.s3.endpoint = s3_.endpoint();
        cfg.s3.region = s3_.region();
        cfg.s3.access_key = s3_.access_key();
        cfg.s3.secret_key = s3_.secret_key();
        return fetch::probe("s3://" + bucket_ + "/" + key, cfg).sha256;
    }

    S3Fixture s3_;
    TempDir dir_{"modelfs-s3client"};
    std::string bucket_;
};

template <typename F>
StoreError error_of(F&& f) {
    try {
        f();
    } catch (const StoreError& e) {
        return e;
    }
    ADD_FAILURE() << "no StoreError";
    return StoreError(ErrorKind::io, "");
}

TEST_F(S3ClientTest, PutGetHeadRemove) {
    S3Client c = client();
    EXPECT_EQ(c.bucket().bucket, bucket_);
    const std::string body = "{\"hello\": \"world\"}\n";
    c.put("meta/index.json", body, {"Content-Type: application/json", "x-amz-meta-note: hi"});
    auto got = c.get("meta/index.json");
    ASSERT_TRUE(got);
    EXPECT_EQ(*got, body);
    auto h = c.head("meta/index.json");
    ASSERT_TRUE(h);
    EXPECT_EQ(h->key, "meta/index.json");
    EXPECT_EQ(h->size, body.size());
    // A single PUT's ETag is the MD5 of the body (what Content-MD5 carried).
    EXPECT_EQ(h->etag, "50521abab7a013be83ee00ded3f9f424") << "md5 of the body";

    // Overwriting, and an empty object.
    c.put("meta/index.json", "v2");
    EXPECT_EQ(c.get("meta/index.json").value_or(""), "v2");
    c.put("meta/empty", "");
    EXPECT_EQ(c.get("meta/empty").value_or("x"), "");
    EXPECT_EQ(c.head("meta/empty").value_or(S3Object{}).size, 0u);

    EXPECT_FALSE(c.get("meta/none"));
    EXPECT_FALSE(c.head("meta/none"));
    c.remove("meta/index.json");
    EXPECT_FALSE(c.get("meta/index.json"));
    EXPECT_FALSE(c.head("meta/index.json"));
    EXPECT_NO_THROW(c.remove("meta/index.json"));  // already gone: fine
}

TEST_F(S3ClientTest, GetRefusesMoreThanMaxBytes) {
    S3Client c = client();
    c.put("big", std::string(4096, 'x'));
    EXPECT_EQ(c.get("big", 4096).value_or("").size(), 4096u);
    StoreError e = error_of([&] { c.get("big", 4095); });
    EXPECT_EQ(e.kind(), ErrorKind::bad_input) << e.what();
    EXPECT_NE(std::string(e.what()).find("s3://" + bucket_ + "/big"), std::string::npos)
        << e.what();
    // A missing object is still nullopt with a tiny limit (the error answer is not the object).
    EXPECT_FALSE(c.get("none", 1));
}

TEST_F(S3ClientTest, ListsAPrefixSortedWithAwkwardKeys) {
    S3Client c = client();
    std::set<std::string> want;
    for (int i = 0; i < 30; ++i) {
        std::string key = "blobs/sha256/" + std::to_string(1000 + i * 7);
        c.put(key, std::string(static_cast<std::size_t>(i), 'b'));
        want.insert(key);
    }
    // Keys that need encoding in the URL and entities in the XML answer.
    const std::vector<std::string> awkward = {
        "blobs/with space & <amp> 'q' \"dq\".bin", "blobs/plus+equals=percent%25.bin",
        "blobs/ünïcödé ✓.bin", "blobs/semi;colon,comma?query#hash.bin", "blobs/dots/../x.bin"};
    for (const auto& k : awkward) {
        c.put(k, k);
        EXPECT_EQ(c.get(k).value_or(""), k);
        want.insert(k);
    }
    c.put("other/1", "x");
    c.put("blobsx", "x");

    std::vector<S3Object> got = c.list("blobs/");
    std::vector<std::string> keys;
    for (const auto& o : got) keys.push_back(o.key);
    EXPECT_EQ(keys, std::vector<std::string>(want.begin(), want.end()));
    for (const auto& o : got) {
        EXPECT_FALSE(o.etag.empty()) << o.key;
        EXPECT_EQ(o.etag.find('"'), std::string::npos) << o.etag;
        if (o.key.rfind("blobs/sha256/", 0) == 0) {
            EXPECT_EQ(o.size, static_cast<std::uint64_t>((std::stoi(o.key.substr(13)) - 1000) / 7));
        } else {
            EXPECT_EQ(o.size, o.key.size());
        }
    }
    EXPECT_EQ(c.list("blobs/sha256/100").size(), 2u);  // 1000 and 1007
    EXPECT_TRUE(c.list("nothing/").empty());
    EXPECT_EQ(c.list("").size(), want.size() + 2);
}

// More than the 1000 keys of a page: the continuation tokens are followed (and signed right).
// Uploaded as many small files at once, which is also upload()'s many-small-files case.
TEST_F(S3ClientTest, ListFollowsPagesAndUploadSendsManySmallFiles) {
    std::vector<S3Upload> files;
    for (int i = 0; i < 1010; ++i) {
        S3Upload u;
        u.key = "many/" + std::to_string(100000 + i);
        u.path = dir_ / "small";
        u.size = 3;
        files.push_back(u);
    }
    write_text_file(dir_ / "small", "abc");
    for (auto& u : files) u.sha256 = *Sha256::from_hex(sha256_hex_of_file(u.path));
    S3Client c = client();
    S3UploadReport r = c.upload(files, 8, kPart);
    EXPECT_EQ(r.uploaded, files.size());
    EXPECT_EQ(r.bytes, 3 * files.size());
    EXPECT_EQ(r.resumed_parts, 0u);
    auto got = c.list("many/");
    ASSERT_EQ(got.size(), files.size());
    for (std::size_t i = 0; i < got.size(); ++i) {
        EXPECT_EQ(got[i].key, files[i].key);
        EXPECT_EQ(got[i].size, 3u);
    }
}

TEST_F(S3ClientTest, UploadsSmallAndMultipartFilesInParallel) {
    std::vector<S3Upload> files = {
        file("blobs/empty", 0, 1),
        file("blobs/small", 1000, 2),
        file("blobs/one-part", kPart, 3),  // exactly the part size: one PUT
        file("blobs/multi-a", 17 * kMiB + 5, 4),
        file("blobs/multi-b", kPart + 1, 5),  // a last part of one byte
        file("blobs/multi-c", 12 * kMiB, 6),
    };
    std::uint64_t total = 0;
    for (const auto& f : files) total += f.size;
    std::mutex mu;
    std::vector<std::uint64_t> seen;
    S3Client c = client();
    S3UploadReport r = c.upload(files, 4, kPart, [&](std::uint64_t done) {
        std::lock_guard lk(mu);
        seen.push_back(done);
    });
    EXPECT_EQ(r.uploaded, files.size());
    EXPECT_EQ(r.resumed_parts, 0u);
    EXPECT_EQ(r.bytes, total);
    ASSERT_FALSE(seen.empty());
    EXPECT_TRUE(std::is_sorted(seen.begin(), seen.end()));
    EXPECT_EQ(seen.back(), total);

    for (const auto& f : files) {
        SCOPED_TRACE(f.key);
        auto body = c.get(f.key, 64 * kMiB);
        ASSERT_TRUE(body);
        EXPECT_TRUE(*body == read_file(f.path)) << body->size() << " bytes";
        auto h = c.head(f.key);
        ASSERT_TRUE(h);
        EXPECT_EQ(h->size, f.size);
        const std::uint64_t parts = f.size <= kPart ? 0 : (f.size + kPart - 1) / kPart;
        if (parts) {
            EXPECT_EQ(h->etag.substr(h->etag.find('-')), "-" + std::to_string(parts)) << h->etag;
        } else {
            EXPECT_EQ(h->etag.find('-'), std::string::npos) << h->etag;
        }
        // The SHA-256 travels with the object, single PUT or multipart.
        EXPECT_EQ(stated_sha256(f.key), f.sha256);
    }
    // Nothing is left half-done.
    EXPECT_EQ(c.list("blobs/").size(), files.size());
}

TEST_F(S3ClientTest, AnInterruptedMultipartUploadIsResumed) {
    S3Upload f = file("blobs/resumed", 17 * kMiB, 7);  // 4 parts
    S3Client c = client();
    // One connection: the first part is sent, then the progress callback stops the upload.
    EXPECT_THROW(
        c.upload({f}, 1, kPart, [](std::uint64_t) { throw std::runtime_error("interrupted"); }),
        std::runtime_error);
    EXPECT_FALSE(c.head(f.key));

    std::uint64_t last = 0;
    S3UploadReport r = c.upload({f}, 3, kPart, [&](std::uint64_t done) { last = done; });
    EXPECT_EQ(r.resumed_parts, 1u);
    EXPECT_EQ(r.uploaded, 1u);
    EXPECT_EQ(r.bytes, f.size - kPart);  // the resumed part is not sent again
    EXPECT_EQ(last, f.size);             // but counts as done
    EXPECT_TRUE(c.get(f.key, 64 * kMiB).value_or("") == read_file(f.path));
    EXPECT_EQ(stated_sha256(f.key), f.sha256);

    // Uploaded again whole: no upload is left to resume.
    r = c.upload({f}, 2, kPart);
    EXPECT_EQ(r.resumed_parts, 0u);
    EXPECT_EQ(r.bytes, f.size);
}

// An interrupted upload of the same key with other content: its parts are not ours (MD5), so all
// are sent again; and its x-amz-meta-sha256 is the other content's, which the check after
// completing catches: the object is deleted, and the next run starts afresh.
TEST_F(S3ClientTest, AnInterruptedUploadOfOtherContentIsNotTrusted) {
    S3Upload old = file("blobs/changed", 11 * kMiB, 8);
    S3Client c = client();
    EXPECT_THROW(c.upload({old}, 1, kPart, [](std::uint64_t) { throw std::runtime_error("x"); }),
                 std::runtime_error);
    S3Upload now = file("blobs/changed", 11 * kMiB, 9);
    StoreError e = error_of([&] { c.upload({now}, 2, kPart); });
    EXPECT_EQ(e.kind(), ErrorKind::corrupt) << e.what();
    EXPECT_NE(std::string(e.what()).find("x-amz-meta-sha256"), std::string::npos) << e.what();
    EXPECT_FALSE(c.head(now.key));

    S3UploadReport r = c.upload({now}, 2, kPart);
    EXPECT_EQ(r.resumed_parts, 0u);
    EXPECT_TRUE(c.get(now.key, 64 * kMiB).value_or("") == read_file(now.path));
    EXPECT_EQ(stated_sha256(now.key), now.sha256);
}

TEST_F(S3ClientTest, UploadChecksItsArguments) {
    S3Client c = client();
    S3Upload f = file("blobs/x", 10, 10);
    EXPECT_EQ(error_of([&] { c.upload({f}, 1, kPart - 1); }).kind(), ErrorKind::bad_input);
    f.key.clear();
    EXPECT_EQ(error_of([&] { c.upload({f}, 1, kPart); }).kind(), ErrorKind::bad_input);
    EXPECT_EQ(c.upload({}, 4, kPart).uploaded, 0u);
    // A file shorter than said: it changed under us.
    S3Upload shorter = file("blobs/short", 100, 11);
    shorter.size = 200;
    EXPECT_EQ(error_of([&] { c.upload({shorter}, 1, kPart); }).kind(), ErrorKind::io);
    EXPECT_FALSE(c.head("blobs/short"));
}

TEST_F(S3ClientTest, AWrongSecretIsUnauthorized) {
    client().put("k", "v");
    S3Client c(bucket("", s3_.secret_key() + "x"), config());
    S3Upload f = file("blobs/x", 10, 12);
    S3Upload big = file("blobs/big", kPart + 10, 13);
    const std::vector<std::pair<const char*, std::function<void()>>> calls = {
        {"get", [&] { c.get("k"); }},
        {"head", [&] { c.head("k"); }},
        {"list", [&] { c.list(""); }},
        {"put", [&] { c.put("k", "w"); }},
        {"remove", [&] { c.remove("k"); }},
        {"upload", [&] { c.upload({f}, 2, kPart); }},
        {"multipart upload", [&] { c.upload({big}, 2, kPart); }},
    };
    for (const auto& [name, call] : calls) {
        SCOPED_TRACE(name);
        StoreError e = error_of(call);
        EXPECT_EQ(e.kind(), ErrorKind::unauthorized) << e.what();
        std::string m = e.what();
        EXPECT_NE(m.find("HTTP 403"), std::string::npos) << m;
        EXPECT_NE(m.find("AWS_SECRET_ACCESS_KEY"), std::string::npos) << m;
        EXPECT_NE(m.find("the test"), std::string::npos) << m;  // where the keys came from
        EXPECT_EQ(m.find(s3_.secret_key()), std::string::npos) << m;
        if (std::string(name) != "head") {  // a HEAD answer has no body to name the code
            EXPECT_NE(m.find("SignatureDoesNotMatch"), std::string::npos) << m;
        }
    }
    EXPECT_EQ(client().get("k").value_or(""), "v");
}

TEST_F(S3ClientTest, NoCredentialsSaysSo) {
    S3Bucket b = bucket();
    b.credentials = {};
    S3Client c(b, config());
    StoreError e = error_of([&] { c.list(""); });
    EXPECT_EQ(e.kind(), ErrorKind::unauthorized) << e.what();
    EXPECT_NE(std::string(e.what()).find("no AWS credentials"), std::string::npos) << e.what();
}

TEST_F(S3ClientTest, AMissingBucketIsNotFound) {
    const std::string none = S3Fixture::unique_bucket("missing");
    S3Client c(bucket(none), config());
    S3Upload f = file("blobs/x", 10, 14);
    S3Upload big = file("blobs/big", kPart + 10, 15);
    const std::vector<std::pair<const char*, std::function<void()>>> calls = {
        {"get", [&] { c.get("k"); }},
        {"head", [&] { c.head("k"); }},
        {"list", [&] { c.list("p/"); }},
        {"put", [&] { c.put("k", "w"); }},
        {"remove", [&] { c.remove("k"); }},
        {"upload", [&] { c.upload({f}, 2, kPart); }},
        {"multipart upload", [&] { c.upload({big}, 2, kPart); }},
    };
    for (const auto& [name, call] : calls) {
        SCOPED_TRACE(name);
        StoreError e = error_of(call);
        EXPECT_EQ(e.kind(), ErrorKind::not_found) << e.what();
        std::string m = e.what();
        EXPECT_NE(m.find("'" + none + "' does not exist"), std::string::npos) << m;
        EXPECT_NE(m.find("HTTP 404"), std::string::npos) << m;
    }
}

TEST_F(S3ClientTest, NoServerIsAnIoErrorAfterTheRetries) {
    S3Bucket b = bucket();
    b.endpoint = "http://127.0.0.1:1";
    S3Client c(b, config());
    auto start = std::chrono::steady_clock::now();
    StoreError e = error_of([&] { c.list(""); });
    EXPECT_EQ(e.kind(), ErrorKind::io) << e.what();
    EXPECT_NE(std::string(e.what()).find("2 attempts"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("127.0.0.1:1"), std::string::npos) << e.what();
    S3Upload f = file("blobs/big", kPart + 10, 16);
    EXPECT_EQ(error_of([&] { c.upload({f}, 2, kPart); }).kind(), ErrorKind::io);
    EXPECT_LT(std::chrono::steady_clock::now() - start, 10s);
}

}  // namespace
}  // namespace modelfs::test
