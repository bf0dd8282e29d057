// Publishing a store to a team remote and reading one back (store/FORMAT.md "Team remotes"):
// `modelfs push` and `modelfs pull`. The catalogue side (snapshots, merge, what a pull registers)
// is store/team_remote.h; this moves the bytes, over fetch/s3_client.h for s3:// remotes and plain
// GETs for a read-only http(s) mirror.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "modelfs/fetch/config.h"
#include "modelfs/fetch/s3_client.h"
#include "modelfs/store/store.h"
#include "modelfs/store/team_remote.h"

namespace modelfs::fetch {

// The S3 settings of a remote: its own endpoint, region and profile over the AWS chain
// (aws_credentials.h) over cfg.s3. Throws StoreError bad_input for a profile named but missing.
S3Config remote_s3_config(const TeamRemote& r, const FetchConfig& cfg);
// `cfg` with an S3Remote for every s3:// remote of the store, so downloads of pulled blobs
// (s3://BUCKET/PREFIX/blobs/...) go to the right endpoint with the right keys. A remote whose
// settings cannot be resolved is left out (its downloads then say why they are refused).
FetchConfig with_team_remotes(Store& s, FetchConfig cfg);

struct PushOptions {
    std::vector<std::string> patterns;  // models to publish (model_matches); empty: every model
    unsigned connections = 8;           // requests at once
    // Measured against radosgw on 2 cores: 16, 32 and 64 MiB push equally fast (the server is
    // the limit); 16 MiB keeps the memory at connections x 16 MiB.
    std::uint64_t part_size = 16ull << 20;
    bool dry_run = false;
    std::string writer;  // empty: writer_id(store)
};

struct PushReport {
    std::string writer;
    std::uint64_t seq = 0;  // of the snapshot published (the previous one when unchanged)
    Sha256 snapshot;
    bool unchanged = false;  // the remote had exactly this already: nothing written
    std::size_t models = 0, versions = 0;
    std::size_t blobs_uploaded = 0, blobs_skipped = 0;  // skipped: the bucket had them
    std::uint64_t bytes_uploaded = 0;
    std::size_t resumed_parts = 0;
    std::vector<std::string> left_out;
};

// Uploads the blobs the bucket lacks (each once, by SHA-256, in parallel, resumable, checked by
// the object store's Content-MD5), then the snapshot, then this writer's pointer, then the index
// a mirror reads. One push per store at a time (STORE/push.lock): a second one fails busy. A
// push that fails leaves the remote's catalogue as it was (the pointer is written last).
PushReport push(Store& s, const TeamRemote& r, const PushOptions& o, const FetchConfig& cfg,
                const std::function<void(std::uint64_t done, std::uint64_t total)>& progress = {});

struct PullResult {
    PullReport report;
    std::size_t writers = 0;
    bool unchanged = false;  // `only_if_changed` and every writer's pointer was as last pulled
};

// Reads every writer's pointer and snapshot (each snapshot checked against its SHA-256 name),
// merges them and registers the result (apply_pull). With `only_if_changed` (pull --follow), a
// remote whose writers point where they did at the last pull is not applied again.
PullResult pull(Store& s, const TeamRemote& r, const FetchConfig& cfg,
                bool only_if_changed = false);

}  // namespace modelfs::fetch
