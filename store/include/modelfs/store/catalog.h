// The catalog: what every blob and every model is, in an LMDB environment shared safely by every
// process that opens the store (CLI commands, the mount daemon). The schema is documented in
// store/FORMAT.md; keep the two in step.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "modelfs/store/category.h"
#include "modelfs/store/hash.h"

namespace modelfs {

// 2 added sidecars and the shown mtime/mode of versions; 3 added models' `previous` and `pins`
// and registered lock files; 4 added models' `switched` (an older modelfs would drop it on its
// next write and set shown mtimes back) and put the extension in single-file model names; 5 added
// composed blobs (`extents`) and the `tensors` index: an older gc would delete the blobs that
// only extents use. An older catalog is upgraded on open (split_by_extension).
inline constexpr std::uint32_t kSchemaVersion = 5;

enum class BlobState {
    present,      // the file is in blobs/ and matched its hash when stored (unless `unverified`)
    remote,       // known (size, hash, sources) but not on this machine
    partial,      // a download is under way or was interrupted
    quarantined,  // failed verification; the bytes were moved to quarantine/
};
std::string_view to_string(BlobState s);

// One byte range of a composed blob (tensor-level dedup, store/tensor_split.h): `length` bytes of
// blob `blob` from `offset`. A composed blob's extents, in order, are its exact bytes.
struct Extent {
    Sha256 blob;
    std::uint64_t offset = 0;
    std::uint64_t length = 0;
};

// A place a blob can be downloaded from. A blob may have several (mirrors), tried in order.
struct BlobSource {
    std::string url;  // https://..., hf://OWNER/REPO[@REV]/PATH, s3://BUCKET/KEY
    // Reads through a mount may be served from the ranges that have arrived before the whole
    // blob is verified (default: no unverified byte is ever served).
    bool stream = false;

    bool operator==(const BlobSource&) const = default;
};

// What the blob file looked like (fstat) right after its last link change, when it was known to
// hold its content: an open whose fstat still matches needs no re-hash (Store::check_blob).
struct BlobStat {
    std::uint64_t ino = 0;
    std::uint64_t size = 0;
    std::int64_t mtime_ns = 0;
    std::int64_t ctime_ns = 0;

    bool operator==(const BlobStat&) const = default;
};

struct BlobRecord {
    std::uint64_t size = 0;
    BlobState state = BlobState::present;
    std::optional<Xxh128> xxh128;
    std::uint64_t safetensors_header_len = 0;  // N of a valid safetensors file, else 0
    std::optional<Sha256> autov3;              // computed on demand, then kept
    std::int64_t ingested = 0;                 // unix seconds
    std::int64_t accessed = 0;                 // unix seconds
    // Non-empty: a composed blob, whose bytes are these ranges of other (never composed) blobs.
    // Its own file in blobs/, when there is one, is a materialised copy that may be dropped.
    std::vector<Extent> extents;
    // A blob a split made: the bytes of composed blobs that nothing stored had (their headers and
    // new tensors). No model uses it directly; composed blobs' extents keep it.
    bool pieces = false;
    bool composed() const { return !extents.empty(); }
    // Where the blob can be downloaded again; empty for blobs that exist only here.
    std::vector<BlobSource> sources;
    // The record's key is not the content's SHA-256 but a stand-in (the hash of its first URL),
    // because the URL was added without one and the server gave none. The first download
    // computes the real hash and replaces the stand-in everywhere.
    bool placeholder = false;
    // Never evicted by the cache quota (`modelfs fetch --keep`).
    bool keep = false;
    // The last download failure (message, unix seconds); cleared when a download succeeds.
    std::string fetch_error;
    std::int64_t fetch_failed_at = 0;
    // A `present` blob catalogued under the SHA-256 its source's name gave (a Hugging Face hub
    // cache or Ollama blob, Store::commit_trusted_tree) without reading it: nothing has checked
    // the bytes yet. `verify` hashes it and clears the flag, or quarantines it.
    bool unverified = false;
    // The file's stat when its content last matched (absent in stores written before it, and
    // for blobs that are not present).
    std::optional<BlobStat> seen;
};

// Where the tensors index (the `tensors` database, FORMAT.md) saw a piece of a model file: at
// `offset` in the (never composed) blob `blob`. Keyed by the piece's XXH3-128 and length; a hint
// only: a split compares the bytes before it relies on one.
struct TensorPlace {
    Sha256 blob;
    std::uint64_t offset = 0;
};

// One file of a multi-file model (a diffusers folder): its path inside the model.
struct TreeEntry {
    std::string path;
    Sha256 blob;
    std::uint64_t size = 0;
};

// A small file that belongs beside a model in every view (`foo.preview.png` next to
// `foo.safetensors`): the suffix after the model's name, and its content.
struct Sidecar {
    std::string suffix;  // ".preview.png", ".civitai.info", ".json", ...
    Sha256 blob;
    std::uint64_t size = 0;

    bool operator==(const Sidecar&) const = default;
};

struct ModelVersion {
    std::string label;
    std::int64_t added = 0;  // unix seconds
    std::string source;      // where it came from (a path now; URLs later)
    std::string note;
    // A single-file model has `blob` and `ext` (".safetensors"); a multi-file model has `tree`.
    std::optional<Sha256> blob;
    std::string ext;
    std::uint64_t size = 0;  // the file's size, or the tree's total
    std::vector<TreeEntry> tree;
    std::vector<Sidecar> sidecars;  // sorted by suffix
    // What the mount shows as the file's mtime and permission bits: set by writes, utimens and
    // chmod through a mount; 0 means `added` and 0644.
    std::int64_t mtime = 0;
    std::uint32_t mode = 0;
    // `mtime` was set explicitly (touch) after the model's last switch: shown as set, even when
    // older than Model::switched_ns, which the other versions other views show still follow.
    // Cleared by the next switch.
    bool mtime_exact = false;

    bool is_tree() const { return !blob.has_value(); }
    // Every blob the version uses: the model's files and its sidecars.
    std::vector<Sha256> blobs() const;
    std::int64_t shown_mtime() const { return mtime ? mtime : added; }
    std::uint32_t shown_mode() const { return mode ? mode : 0644; }
    const Sidecar* sidecar(std::string_view suffix) const;
    bool same_content(const ModelVersion& o) const;
    // What identifies the version's content: its blob for a single file; for a tree, SHA-256 of
    // its sorted "path\0<blob hex>\n" lines. Lock files and hash-prefix labels use it.
    Sha256 content_id() const;
};

// What Model::add_version did: the version's index, and whether it is new (false: the model
// already had that content, under that label when one was asked for).
struct AddedVersion {
    std::size_t index = 0;
    bool added = false;
};

struct Model {
    Category category = Category::other;
    // May contain '/' for sub-folders. A single-file model's name ends with its extension, which
    // every version's `ext` repeats ("sdxl/foo.safetensors"; model_name.h); a tree model's
    // (diffusers) has none.
    std::string name;
    std::vector<ModelVersion> versions;
    std::size_t current = 0;
    // The label that was current before the last change of `current` (`modelfs rollback` goes
    // back to it); empty when there is none.
    std::string previous;
    // Per-view pins: view name -> label. That view shows the pinned version as NAME.EXT whatever
    // is current.
    std::map<std::string, std::string> pins;
    // Unix nanoseconds of the last change of what a view shows (a new current version, a pin, an
    // unpin); 0: none yet. Views show max(version's mtime, this), so a
    // switched file always looks newer than before: A1111 and Forge re-hash a file only when its
    // mtime is newer than the one they cached.
    std::int64_t switched_ns = 0;

    std::string key() const;  // "category/name"
    // The name without its extension (the current version's ext; the name itself for a tree):
    // sidecars are <stem>.preview.png, version aliases <stem>@<label><ext> (model_name.h).
    std::string_view stem() const;
    const ModelVersion& current_version() const { return versions.at(current); }
    // Makes version `i` current, remembering the old current label in `previous` (when it
    // changes), so every path that changes the current version can be rolled back.
    void make_current(std::size_t i);
    // The one way a version joins a model (import, downloads, mount saves, trusted caches, lock
    // files, renames). With `label`: a version of that label and the same content is returned
    // as it is, one with other content is refused (StoreError conflict); otherwise `v` is added
    // under it. Without: content the model already has returns that version; otherwise `v` is
    // added under next_label(). The returned version is made current when `make_current` (the
    // first version always is).
    AddedVersion add_version(ModelVersion v, const std::optional<std::string>& label,
                             bool make_current = true);
    bool has_label(std::string_view label) const;
    // "v<N>" for an N above every "v<digits>" label the model has and above its number of
    // versions, so a label that retention dropped below the newest is not given again.
    std::string next_label() const;
    // Records a change of what views show now (see switched_ns): later than anything shown.
    void mark_switched();
    // What a view shows as the mtime of version `v` of this model, in nanoseconds.
    std::int64_t shown_mtime_ns(const ModelVersion& v) const;
    // The version a view shows as NAME.EXT: its pin when it has one (and the label exists),
    // else the current one.
    std::size_t shown_in(std::string_view view) const;
};

// A version of `m` by label, else (at least 6 hex digits, labels winning) by a unique prefix of
// its content_id(). std::nullopt when nothing matches; `error` (when given) then says why
// ("no version 'v9' of lora/foo; it has v1, v2", "'abcdef' matches 2 versions").
std::optional<std::size_t> find_version(const Model& m, std::string_view label_or_prefix,
                                        std::string* error = nullptr);
// A label users may give: non-empty, at most 100 bytes, no '/', NUL, '@' or control characters,
// not "." or "..". Throws StoreError bad_input saying what is wrong.
void check_version_label(std::string_view label);

// A lock file that holds versions on this machine (`modelfs lock`, `apply`, `mount --lock`):
// retention never drops a version any registered lock lists.
struct LockHold {
    std::string id;               // first 16 hex digits of SHA-256 of the lock file's text
    std::string name;             // where it was seen: an absolute path, or "stdout"
    std::int64_t registered = 0;  // unix seconds
    std::vector<std::pair<std::string, Sha256>> versions;  // model key, ModelVersion::content_id
};

std::string model_key(Category c, std::string_view name);

// The schema <= 3 to 4 upgrade of one model, whose name lacked the extension: one model per
// extension its versions have, named name + ext as the views showed it (tree versions keep the
// name), each with its own versions in order and labels; `pins` and `previous` go where their
// label is, `switched` to every part; the current version is the old current one in its part,
// the newest elsewhere. A model with one extension gives one model.
std::vector<Model> split_by_extension(const Model& m);

class Catalog;

// A model record's bytes as the `models` database stores them (CBOR, FORMAT.md), and back. A team
// remote's snapshots carry models in this form too. decode throws StoreError corrupt for bytes
// that are not a model record.
std::string encode_model_record(const Model& m);
Model decode_model_record(std::string_view data);

// A transaction. Read transactions see one consistent snapshot; a write transaction is the only
// writer in the whole store until it commits or is destroyed (which aborts it).
class Txn {
  public:
    ~Txn();
    Txn(Txn&&) noexcept;
    Txn& operator=(Txn&&) noexcept;

    std::optional<BlobRecord> get_blob(const Sha256& h) const;
    std::optional<Model> get_model(std::string_view key) const;
    void for_each_blob(const std::function<void(const Sha256&, const BlobRecord&)>& fn) const;
    void for_each_model(const std::function<void(const Model&)>& fn) const;
    // Blobs whose hex form starts with `hex_prefix` (any length >= 1), at most `limit`.
    std::vector<Sha256> blobs_with_prefix(std::string_view hex_prefix, std::size_t limit) const;

    void put_blob(const Sha256& h, const BlobRecord& r);
    void del_blob(const Sha256& h);

    // The tensors index: pieces of stored model files by XXH3-128 and length.
    std::optional<TensorPlace> get_tensor(const Xxh128& x, std::uint64_t length) const;
    void put_tensor(const Xxh128& x, std::uint64_t length, const TensorPlace& p);
    void del_tensor(const Xxh128& x, std::uint64_t length);
    void for_each_tensor(
        const std::function<void(const Xxh128&, std::uint64_t, const TensorPlace&)>& fn) const;
    // Writing or deleting a model also records when its category last changed (below).
    void put_model(const Model& m);
    void del_model(std::string_view key);

    // When a model of this category was last written or deleted (unix nanoseconds, strictly
    // increasing per category; 0: never). Folder mtimes in a mount derive from it, so a tool
    // that rescans a folder when its mtime changes also notices deletions.
    std::int64_t category_changed_ns(Category c) const;

    // Registered lock files (meta keys "lock/<id>").
    std::optional<LockHold> get_lock(std::string_view id) const;
    std::vector<LockHold> locks() const;
    void put_lock(const LockHold& l);
    void del_lock(std::string_view id);

    // Other small records of the `meta` database (FORMAT.md lists every key): team remotes
    // ("remote/<name>"), this store's writer id ("writer"). Values are opaque bytes here.
    std::optional<std::string> get_meta(std::string_view key) const;
    // Every (key, value) whose key starts with `prefix`, in key order.
    std::vector<std::pair<std::string, std::string>> meta_with_prefix(
        std::string_view prefix) const;
    void put_meta(std::string_view key, std::string_view value);
    void del_meta(std::string_view key);

    void commit();

    // The id of the committed transaction this one reads (for a read transaction: its snapshot).
    std::uint64_t id() const;

  private:
    void touch_category(Category c);
    friend class Catalog;
    struct Impl;
    explicit Txn(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

class Catalog {
  public:
    // Opens (or with `create`, creates) the LMDB environment in `dir`. Throws StoreError:
    // schema when the catalog was written by a newer modelfs, no_store when it is missing.
    static Catalog open(const std::filesystem::path& dir, bool create);
    ~Catalog();
    Catalog(Catalog&&) noexcept;
    Catalog& operator=(Catalog&&) noexcept;

    Txn read() const;
    Txn write();

    std::uint32_t schema_version() const;
    // Id of the newest committed transaction, in any process: a cheap way to notice changes.
    // It can run ahead of what a read transaction begun just after sees (LMDB publishes the meta
    // page before the readers' table), so compare it with Txn::id() of the snapshot in use.
    std::uint64_t last_txn_id() const;
    const std::filesystem::path& dir() const;

    struct Env;  // defined in catalog.cpp; shared with open transactions

  private:
    explicit Catalog(std::shared_ptr<Env> env);
    // Renames every model by split_by_extension and re-points registered locks, in `w`.
    static void upgrade_model_names(Txn& w);
    std::shared_ptr<Env> env_;
};

}  // namespace modelfs
