// Team remotes (store/FORMAT.md "Team remotes"): the remotes a store knows, the catalogue it
// publishes there as immutable snapshots, how the snapshots of several writers merge, and how a
// pull registers the merged catalogue here. Pure data and catalog transactions: the bytes travel
// through fetch/team_store.h, which calls these.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "modelfs/store/catalog.h"
#include "modelfs/store/hash.h"
#include "modelfs/store/tensor_map.h"

namespace modelfs {

class Store;

inline constexpr int kRemoteFormatVersion = 1;

// A remote as `modelfs remote add` records it (meta key "remote/<name>"). Never a credential:
// those come from the environment and ~/.aws at each use (fetch/aws_credentials.h).
struct TeamRemote {
    std::string name;      // [A-Za-z0-9_.-], 1-64, not starting with '.' or '-'
    std::string url;       // "s3://BUCKET" or "s3://BUCKET/PREFIX"; or an http(s) mirror
    std::string endpoint;  // S3 endpoint ("http://rgw:7480"); empty: the AWS settings decide
    std::string region;    // empty: the AWS settings decide
    std::string profile;   // AWS profile; empty: AWS_PROFILE, else "default"
    // Pulled blobs get `stream` sources: a mount serves what has arrived before the whole file is
    // verified (`remote add --stream`; FORMAT.md "Pull" says what that costs).
    bool stream = false;
    std::int64_t added = 0;
    // What the last pull applied: writer id -> snapshot (SHA-256 hex). A pull whose writers point
    // at exactly these changes nothing and writes nothing.
    std::map<std::string, std::string> pulled;
    std::int64_t pulled_at = 0;  // unix seconds of the last pull that changed something

    bool is_s3() const;          // s3://; else a read-only http(s) mirror
    std::string bucket() const;  // s3 only
    std::string prefix() const;  // s3: the key prefix without a trailing '/' (may be empty)
    // The URL of an object of the remote's layout ("blobs/sha256/ab/<hex>"): s3://BUCKET/PREFIX/KEY
    // or MIRROR/KEY. Pulled blobs get it as their download source.
    std::string object_url(std::string_view key) const;
    // The object key in the bucket (PREFIX/KEY).
    std::string object_key(std::string_view key) const;
};

// Throws StoreError bad_input saying what is wrong and the expected form.
void check_remote_name(std::string_view name);
// s3://BUCKET[/PREFIX] (bucket: 3-63 of a-z 0-9 . -; prefix: names.h rules) or http(s)://HOST/...
void check_remote_url(std::string_view url);

// The remote's layout, relative to its prefix.
std::string remote_blob_key(const Sha256& h);            // "blobs/sha256/ab/<hex>"
std::string remote_snapshot_key(const Sha256& id);       // "snapshots/<hex>.cbor"
std::string remote_writer_key(std::string_view writer);  // "writers/<id>.json"
inline constexpr std::string_view kRemoteWritersPrefix = "writers/";
inline constexpr std::string_view kRemoteIndexKey = "writers.json";

// The registry. add: conflict when the name exists (unless `replace`).
void add_team_remote(Store& s, const TeamRemote& r, bool replace = false);
std::vector<TeamRemote> team_remotes(Store& s);
std::optional<TeamRemote> find_team_remote(Store& s, std::string_view name);
// Throws not_found naming the remotes there are.
TeamRemote get_team_remote(Store& s, std::string_view name);
// The store's models that came from it stay (FORMAT.md). False when there was none.
bool remove_team_remote(Store& s, std::string_view name);
// This store's id as a writer of remotes: 16 random hex digits, made on first use and kept in
// the catalog ("writer"), so a store that is copied elsewhere should get `--writer` anew.
std::string writer_id(Store& s);

// Which models a PATTERN names: fnmatch(3) on "category/name" or on the name alone (as `ls`).
bool model_matches(const Model& m, const std::string& pattern);

// What a snapshot says of a blob (enough to register it lazily and check it when it arrives).
struct SnapshotBlob {
    std::uint64_t size = 0;
    std::optional<Xxh128> xxh3;
    std::uint64_t st_hdr = 0;
    // The file's tensor map (tensor_map.h) when the writer had one: a store that pulls it
    // downloads only the pieces it lacks. Empty: none.
    std::vector<PieceSum> pieces;
};

// One writer's published catalogue. Immutable once written: it is named by its SHA-256.
struct Snapshot {
    std::string writer;
    std::string host;       // for people
    std::uint64_t seq = 0;  // 1, 2, ... per writer
    std::int64_t pushed = 0;
    std::vector<Model> models;             // sorted by key, unique
    std::map<Sha256, SnapshotBlob> blobs;  // every blob the models use, nothing else

    std::string encode() const;  // CBOR, FORMAT.md
    // Validates everything (format version, names by names.h, labels, every used blob listed);
    // throws StoreError corrupt naming `source` and the problem.
    static Snapshot decode(std::string_view bytes, const std::string& source);
};

// The pointer a writer rewrites at each push ("writers/<id>.json").
struct WriterPointer {
    std::string writer;
    std::uint64_t seq = 0;
    Sha256 snapshot;
    std::int64_t pushed = 0;
    std::string host;

    std::string to_text() const;
    static WriterPointer parse(std::string_view text, const std::string& source);
};

// What push publishes: this store's versions that did not come from a remote, of the models the
// patterns name (every model when empty), whose blobs `available` says the remote will have
// (present here, or in the bucket already). Models of `previous` the patterns do not name stay as
// they were published; with no pattern the snapshot is exactly this store, so a model deleted
// here disappears from this writer's snapshot.
struct SnapshotPlan {
    Snapshot snapshot;
    std::vector<std::string> left_out;  // one message per version left out, and why
    std::size_t versions = 0;
};
SnapshotPlan make_snapshot(Store& s, const std::vector<std::string>& patterns,
                           const Snapshot* previous,
                           const std::function<bool(const Sha256&, const BlobRecord&)>& available);

// Every writer's snapshot merged (FORMAT.md "Several writers"): the union of the models and of
// their versions by content; a label two writers gave different contents is kept by the writer
// whose model switched last, the other's version gets "<label>-<8 hex of its content id>"; the
// current version and pins are those of the writer whose model switched last.
struct RemoteCatalog {
    std::vector<Model> models;  // sorted by key
    std::map<Sha256, SnapshotBlob> blobs;
    std::vector<std::string> relabelled;  // one message per version that got a new label
};
RemoteCatalog merge_snapshots(const std::vector<Snapshot>& snapshots);

struct PullReport {
    std::size_t models_added = 0;
    std::size_t versions_added = 0;
    std::size_t current_moved = 0;  // models whose current version followed the remote
    std::size_t models_removed = 0;
    std::size_t blobs_registered = 0;  // new remote blob records (bytes to fetch on first use)
    std::uint64_t bytes_registered = 0;
    // Models the remote no longer has that stay: they have a version that did not come from
    // this remote, or a registered lock holds them.
    std::vector<std::string> kept;
    std::vector<std::string> relabelled;
    bool changed = false;  // anything written
};
// Registers `cat` here in one catalog transaction (FORMAT.md "Pulling"): models and versions the
// store lacks (their blobs `remote`, downloaded on first use from remote.object_url), the remote's
// current version where this store's current one came from the remote, removals of models that
// only the remote had; records `pulled` in the remote's record. No byte is downloaded.
PullReport apply_pull(Store& s, const TeamRemote& remote, const RemoteCatalog& cat,
                      const std::map<std::string, std::string>& pulled);

// Where the store's remotes would hold blob `h` (remote.object_url(remote_blob_key(h)), one per
// remote): a lock file's version whose blob is not here and has no source of its own is fetched
// from there (`modelfs apply`).
std::vector<std::string> team_remote_blob_urls(const Txn& t, const Sha256& h);

// Adds remote.object_url(remote_blob_key(h)) to the sources of each blob (after a push), so
// lock files made here name a source other machines with the remote can use, and the cache
// quota may evict them.
void add_remote_sources(Store& s, const TeamRemote& remote, const std::vector<Sha256>& blobs);

}  // namespace modelfs
