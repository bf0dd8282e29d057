// A small S3 client for publishing a store (`modelfs push`) and reading one back (`modelfs pull`):
// the handful of S3 calls that needs, over libcurl with SigV4 (CURLOPT_AWS_SIGV4). Downloads of
// blobs do not go through here: they are ordinary s3:// sources of the Fetcher (resolve_source).
//
// Every call talks to one bucket. Errors are StoreError with the key, the HTTP status and the
// S3 error code and message in the text: unauthorized for 401/403 (with what to check), not_found
// for 404 (NoSuchBucket says so), io for network failures and 5xx after the retries, bad_input for
// a malformed answer. Requests are retried with backoff (FetchConfig::retries, backoff_*) on
// network errors, 5xx, 429, S3's SlowDown and RequestTimeout, and a 200 that carries an <Error>
// (CompleteMultipartUpload may answer so).
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "modelfs/fetch/aws_credentials.h"
#include "modelfs/fetch/config.h"
#include "modelfs/store/hash.h"

namespace modelfs::fetch {

struct S3Bucket {
    std::string endpoint;  // "http://127.0.0.1:7480"; empty: https://s3.REGION.amazonaws.com
    std::string region = "us-east-1";
    std::string bucket;
    bool path_style = true;      // ENDPOINT/BUCKET/KEY (false: BUCKET.ENDPOINT/KEY)
    AwsCredentials credentials;  // empty access_key: unsigned requests
};

struct S3Object {
    std::string key;
    std::uint64_t size = 0;
    std::string etag;  // without quotes
};

// One file to upload (S3Client::upload).
struct S3Upload {
    std::string key;
    std::filesystem::path path;  // read with pread; must not change while uploading
    std::uint64_t size = 0;
    Sha256 sha256;  // of the content: sent as x-amz-meta-sha256 (probe() reads it back)
};

struct S3UploadReport {
    std::size_t uploaded = 0;       // objects written
    std::size_t resumed_parts = 0;  // parts an interrupted multipart upload already had
    std::uint64_t bytes = 0;        // bytes sent (not counting resumed parts)
};

class S3Client {
  public:
    S3Client(S3Bucket bucket, FetchConfig cfg);
    ~S3Client();
    S3Client(S3Client&&) noexcept;
    S3Client& operator=(S3Client&&) noexcept;

    const S3Bucket& bucket() const;

    // HEAD: nullopt when there is no such object.
    std::optional<S3Object> head(const std::string& key);
    // GET of a small object into memory; nullopt when there is no such object. More than
    // `max_bytes` throws bad_input (a hostile or wrong object must not fill the memory).
    std::optional<std::string> get(const std::string& key, std::uint64_t max_bytes = 256ull << 20);
    // Every object whose key starts with `prefix` (ListObjectsV2, every page), sorted by key.
    std::vector<S3Object> list(const std::string& prefix);
    // PUT of a small body, with Content-MD5 (the server refuses a body that arrived damaged).
    // `headers`: extra "Name: value" lines (Content-Type, x-amz-meta-*).
    void put(const std::string& key, std::string_view body,
             const std::vector<std::string>& headers = {});
    // DELETE; no error when the object does not exist.
    void remove(const std::string& key);

    // Uploads files, `connections` requests at once over all of them. A file up to `part_size`
    // is one PUT; a larger one is a multipart upload of `part_size` parts sent in parallel. Every
    // request carries Content-MD5, so the server checks each body; after a multipart upload the
    // object's ETag (MD5 of the parts' MD5s, "-N") and size are compared with what was sent, and a
    // mismatch deletes the object and throws corrupt. A multipart upload of the same key left by
    // an earlier interrupted run (ListMultipartUploads) is resumed: parts it has whose ETag is the
    // MD5 of our bytes are not sent again (S3UploadReport::resumed_parts). The first failure
    // stops the rest and throws (parts already sent stay for the next run to resume).
    // `progress` (may be empty) is called with the bytes sent so far, from any thread.
    S3UploadReport upload(const std::vector<S3Upload>& files, unsigned connections,
                          std::uint64_t part_size,
                          const std::function<void(std::uint64_t)>& progress = {});

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

// S3's key encoding: every byte outside A-Z a-z 0-9 - _ . ~ percent-encoded, '/' kept.
std::string encode_s3_key(std::string_view key);

}  // namespace modelfs::fetch
