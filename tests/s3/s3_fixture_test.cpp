// The S3 server the S3 tests run against (Ceph radosgw, started once per ctest run by the
// "radosgw" fixture): it must keep what we put, serve ranges, and check SigV4 signatures, or
// the fetcher's S3 tests would prove nothing about authentication.
#include <string>

#include <gtest/gtest.h>

#include "support/http_servers.h"
#include "support/test_env.h"

namespace modelfs::test {
namespace {

using modelfs::testing::read_file;
using modelfs::testing::TempDir;
using modelfs::testing::write_random_file;

class S3FixtureTest : public ::testing::Test {
  protected:
    void SetUp() override {
        ASSERT_EQ(s3_.endpoint().rfind("http://127.0.0.1:", 0), 0u) << s3_.endpoint();
        bucket_ = S3Fixture::unique_bucket("fixture");
        s3_.create_bucket(bucket_);
        write_random_file(dir_ / "blob.bin", 3 * 1024 * 1024 + 17, 11);
        s3_.put_object(bucket_, "models/blob.bin", dir_ / "blob.bin");
        data_ = read_file(dir_ / "blob.bin");
    }

    S3Fixture s3_;
    TempDir dir_{"modelfs-s3-test"};
    std::string bucket_, data_;
};

TEST_F(S3FixtureTest, PutThenSignedGetReturnsTheBytes) {
    auto whole = s3_.get_object(bucket_, "models/blob.bin");
    EXPECT_EQ(whole.status, 200) << whole.body;
    EXPECT_TRUE(whole.body == data_) << "got " << whole.body.size() << " bytes";

    auto part = s3_.get_object(bucket_, "models/blob.bin", std::nullopt, "1048576-1048675");
    EXPECT_EQ(part.status, 206) << part.body;
    EXPECT_EQ(part.body, data_.substr(1048576, 100));

    auto missing = s3_.get_object(bucket_, "models/none.bin");
    EXPECT_EQ(missing.status, 404);
    EXPECT_NE(missing.body.find("NoSuchKey"), std::string::npos) << missing.body;
}

TEST_F(S3FixtureTest, AWrongSecretGets403SignatureDoesNotMatch) {
    auto r = s3_.get_object(bucket_, "models/blob.bin", s3_.secret_key() + "x");
    EXPECT_EQ(r.status, 403);
    EXPECT_NE(r.body.find("SignatureDoesNotMatch"), std::string::npos) << r.body;
    EXPECT_EQ(r.body.find(data_.substr(0, 64)), std::string::npos);
}

TEST_F(S3FixtureTest, AnUnsignedGetIsDenied) {
    auto r = s3_.get_anonymous(bucket_, "models/blob.bin");
    EXPECT_EQ(r.status, 403);
    EXPECT_NE(r.body.find("AccessDenied"), std::string::npos) << r.body;
}

TEST_F(S3FixtureTest, BucketsAreSeparateAndCreatingOneTwiceIsFine) {
    EXPECT_NO_THROW(s3_.create_bucket(bucket_));
    std::string other = S3Fixture::unique_bucket("fixture");
    EXPECT_NE(other, bucket_);
    s3_.create_bucket(other);
    EXPECT_EQ(s3_.get_object(other, "models/blob.bin").status, 404);
}

}  // namespace
}  // namespace modelfs::test
