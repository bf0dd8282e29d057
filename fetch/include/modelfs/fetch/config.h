// Settings of the downloader: limits, retries, and credentials of the remote sources. Defaults are
// built in; the CLI's table of settings (tools/config.cpp) layers the environment (HF_ENDPOINT,
// HF_TOKEN, AWS_*), its config file and flags on top.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace modelfs::fetch {

// An S3-compatible object store (AWS, Ceph RGW, MinIO, ...). Requests are signed with AWS SigV4
// by libcurl.
struct S3Config {
    std::string endpoint;  // "http://127.0.0.1:7480"; empty: https://s3.REGION.amazonaws.com
    std::string region = "us-east-1";
    std::string access_key;  // empty: anonymous (unsigned) requests
    std::string secret_key;
    std::string session_token;  // sent as x-amz-security-token when set
    bool path_style = true;     // ENDPOINT/BUCKET/KEY (false: BUCKET.ENDPOINT/KEY)
};

// The S3 settings of one team remote (fetch/team_store.h fills them from the store's remotes and
// the AWS credentials chain): an s3:// URL under `url` ("s3://BUCKET" or "s3://BUCKET/PREFIX") is
// sent with these instead of FetchConfig::s3, so each remote keeps its own endpoint and keys.
struct S3Remote {
    std::string url;
    S3Config s3;
};

struct FetchConfig {
    unsigned max_connections = 16;           // in all, over every host
    unsigned max_per_host = 8;               // to one host
    unsigned connections_per_blob = 4;       // parallel ranged requests for one blob
    unsigned max_blobs = 4;                  // blobs downloading at once (`modelfs fetch --jobs`)
    std::uint64_t chunk_size = 32ull << 20;  // bytes per ranged request
    std::uint64_t limit_rate = 0;            // bytes per second over all downloads; 0: none
    unsigned retries = 5;                    // per request, before a source counts as failed
    std::chrono::milliseconds backoff_initial{500};  // doubled per retry, with jitter
    std::chrono::milliseconds backoff_max{30'000};   // also caps a server's Retry-After
    std::chrono::seconds connect_timeout{15};
    std::chrono::seconds stall_timeout{30};  // a request receiving nothing this long is retried
    // The most one request may take in all, per chunk_size bytes it carries (a trickling server
    // defeats the stall limit); past it the request fails and is retried as any other. 30 min per
    // 32 MiB is an average of 18 KiB/s per connection: a 7 GB checkpoint still arrives over a
    // 2.5 Mbit/s link with 16 connections sharing it, and a hostile server holds a request at
    // most that long. $MODELFS_TRANSFER_TIMEOUT, config fetch.transfer_timeout (seconds).
    std::chrono::seconds transfer_timeout{1800};
    std::string hf_endpoint = "https://huggingface.co";
    std::string hf_token;  // Authorization: Bearer, for hf:// sources only
    S3Config s3;
    std::vector<S3Remote> s3_remotes;  // the longest `url` that prefixes a source wins
    std::string user_agent = "modelfs";
    // After each finished download, evict least-recently-used re-fetchable blobs until the store
    // holds at most this many bytes; 0: no quota.
    std::uint64_t cache_max_bytes = 0;
};

}  // namespace modelfs::fetch
