// A modelfs store: the blob files and the catalog, opened together, with the operations the CLI
// and the mount daemon build on (import, resolve, verify, gc, stats).
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "modelfs/store/blob_store.h"
#include "modelfs/store/catalog.h"
#include "modelfs/store/category.h"
#include "modelfs/store/lock_file.h"
#include "modelfs/store/progress.h"
#include "modelfs/store/safetensors.h"
#include "modelfs/store/tensor_split.h"

namespace modelfs {

struct ImportOptions {
    std::optional<Category> category;    // else inferred from folders, then from the file
    std::optional<std::string> name;     // only with a single model
    std::optional<std::string> version;  // label; default v1, v2, ...
    bool move = false;  // take the file away from its place (zero copy if possible)
    unsigned jobs = 0;  // files hashed at once; 0 = number of cores
};

struct ImportItem {
    std::filesystem::path source;
    std::string model_key;  // "category/name"
    std::string label;
    Sha256 sha256;  // the file's hash (single-file models)
    std::uint64_t size = 0;
    std::size_t files = 1;
    bool new_blob = false;  // any byte actually added to the store
    // A new single file that shares tensors with stored blobs is stored composed (tensor_split.h).
    std::optional<SplitReport> split;
    enum class Outcome { added, new_version, unchanged, failed } outcome = Outcome::added;
    std::string error;  // when failed: what went wrong, naming the file
};

struct ImportReport {
    std::vector<ImportItem> items;
    std::size_t skipped_files = 0;  // files in folders that are not models (sidecars, configs)
    bool ok() const;
};

struct VerifyProblem {
    std::string what;  // "corrupt", "missing", "wrong size", "orphan", "dangling"
    std::string detail;
    std::optional<Sha256> blob;
};
struct VerifyReport {
    std::size_t blobs_checked = 0;
    std::uint64_t bytes_checked = 0;
    std::vector<VerifyProblem> problems;  // anything here makes `verify` fail
    std::vector<std::string> notes;       // harmless findings (orphans gc will remove)
    // Blobs that were catalogued `unverified` (a trusted name) and now matched their hash.
    std::size_t newly_verified = 0;
};

struct GcReport {
    std::vector<std::pair<Sha256, std::uint64_t>> blobs;  // removed (or, dry run, removable)
    std::vector<std::filesystem::path> orphan_files;      // files under blobs/ with no record
    std::uint64_t bytes = 0;
    std::size_t staging_removed = 0;
    // Partial downloads (partial/<key>.part + .state) of records gc deleted, and their bytes
    // (counted in `bytes` too). One a process is still downloading stays.
    std::size_t partials_removed = 0;
    // Unused blobs left alone because a process (a mount serving an old version) has them open;
    // a later gc removes them.
    std::size_t skipped_open = 0;
    std::size_t tensors_unindexed = 0;  // tensors index entries of removed blobs, dropped
};

struct CategoryStats {
    std::size_t models = 0;
    std::uint64_t bytes = 0;  // logical bytes (as StoreStats::logical_bytes) of its models
};
// Files of adopted installs that the store's blobs stand for (FORMAT.md "Saving"): per model key,
// per content, how many of the installs' files with that content are gone from disk outside the
// store (moved in by adopt, deleted by confirm). adopt::adopted_files() reads the records.
using AdoptedFiles = std::map<std::string, std::map<Sha256, std::size_t>>;
struct StoreStats {
    std::size_t models = 0, versions = 0, blobs = 0, files = 0;
    // Tensor-level dedup (FORMAT.md "Saving"): composed blobs, the bytes they read from other
    // blobs (what composing saves beyond file-level dedup), and materialised copies' bytes
    // (counted in physical_bytes).
    std::size_t composed_blobs = 0;
    std::uint64_t tensor_saved_bytes = 0;
    std::uint64_t materialised_bytes = 0;
    std::uint64_t logical_bytes = 0;   // FORMAT.md "Saving"; the sum of per_category bytes
    std::uint64_t physical_bytes = 0;  // blob files actually on disk
    // Blobs known by size and sources but not on this machine (remote, or partly downloaded).
    std::size_t remote_blobs = 0;
    std::uint64_t remote_bytes = 0;
    std::map<Category, CategoryStats> per_category;
    // What file-level deduplication saves (FORMAT.md "Saving", the one definition): logical
    // bytes against each distinct content counted once, wherever it is.
    std::uint64_t saved() const {
        const std::uint64_t distinct =
            physical_bytes - materialised_bytes + tensor_saved_bytes + remote_bytes;
        return logical_bytes > distinct ? logical_bytes - distinct : 0;
    }
};

// What Store::materialise did.
struct MaterialiseResult {
    bool materialised = false;  // a copy was made now
    bool already = false;       // there was one
    std::uint64_t size = 0;
    std::vector<Sha256> dropped;  // older copies dropped to make room
    std::string why_not;          // nothing done: why
};

// What a user's NAME|HASH|HASH-PREFIX|PATH refers to.
struct Resolved {
    std::optional<Model> model;                 // a model by name
    std::optional<Sha256> blob;                 // a blob by (prefix of) hash or by path content
    std::optional<std::filesystem::path> path;  // the query was a file on disk
    bool in_store = false;                      // for a path: is its content stored
};

// A finished file on the store's own filesystem (a mount writes into STORE/views/) that becomes a
// version of a model, or a sidecar of a model's current version.
struct FileCommit {
    std::filesystem::path path;  // hard-linked into blobs/ when its content is new
    int fd = -1;                 // open on `path`; the content is final
    FileDigests digests;         // of that content
    Category category = Category::other;
    std::string
        name;  // the model's name ("sdxl/foo.safetensors"; `ext` is appended when it lacks it)
    std::string ext;         // a model's extension (".safetensors"); unused for sidecars
    std::string sidecar;     // non-empty: the file is this sidecar (".preview.png") of the model
    std::int64_t mtime = 0;  // shown as the file's mtime (0: now)
    std::uint32_t mode = 0;  // shown permission bits (0: 0644)
    std::string source;      // recorded in the version ("mount:comfyui/loras/foo.safetensors")
};
struct FileCommitResult {
    bool new_blob = false;     // bytes were added to the store
    bool new_version = false;  // the model got a new current version (or was created)
    std::string label;         // the model version the file is (part of) now
};

// One file of a multi-file model taken from a cache that names its files by their content (the
// Hugging Face hub cache, Ollama's models folder): see Store::commit_trusted_tree.
struct TrustedFile {
    std::string path;              // inside the model ("unet/diffusion_pytorch_model.safetensors")
    std::filesystem::path source;  // the cache's file; left where it is
    Sha256 sha256;                 // what its name says its content is
    // Set when the caller hashed the file (small files, names that are not SHA-256): the blob is
    // then verified. Without it the name is trusted and the file is not read.
    std::optional<FileDigests> digests;
    // Open on the file when the caller opened it without following links (safe_open.h): the
    // file is then read from it and copied, never opened or linked by `source`. Borrowed.
    int opened_fd = -1;
};
struct TrustedTree {
    Category category = Category::other;
    std::string name;
    std::string label;   // the version's label (a commit, a tag)
    std::string source;  // recorded in the version
    std::string note;
    // Make this version current even when the model already has one (a cache's `main`, `latest`).
    // A new model's first version is current anyway.
    bool make_current = false;
    // Catalogue the one file of `files` as a single-file model (its blob, and the extension of
    // its path by file_model_name, store/model_name.h; `name` ends with it) instead of a tree: a
    // cache's repo that is one model file.
    bool single_file = false;
    std::vector<TrustedFile> files;
};
struct TrustedTreeResult {
    std::string model_key;
    std::string label;            // of the version with this content (an existing one if unchanged)
    bool new_version = false;     // false: the model already had this content
    bool made_current = false;    // the current version changed
    std::size_t linked = 0;       // files hard-linked into blobs/ (zero copy)
    std::size_t copied = 0;       // files copied (another filesystem, or not ours to link)
    std::size_t present = 0;      // files whose content the store had already
    std::size_t unverified = 0;   // blobs catalogued under a trusted name, not yet read
    std::uint64_t size = 0;       // bytes of the tree
    std::uint64_t new_bytes = 0;  // bytes of the blobs linked or copied
};

// Throws StoreError (bad_input) for a model name no view could show: empty, NUL, empty or
// '.'/'..' components, components over 200 bytes, '@' (reserved for version labels). For callers
// that check a name before doing anything costly (`modelfs add` before probing URLs).
void check_model_name(const std::string& name);

// Whether a file name has the extension of a model file (the list `import` takes from a folder:
// .safetensors .sft .ckpt .pt .pt2 .pth .bin .pkl .gguf .onnx, .fooocus.patch); sidecars,
// configs and READMEs do not.
bool is_model_file_name(const std::string& filename);

// One file of a model registered from remote sources (`modelfs add URL`, a manifest): known by
// size and, where anyone knew it, SHA-256; downloaded on first use.
struct RemoteFile {
    std::string path;  // inside a multi-file model ("unet/diffusion_pytorch_model.safetensors");
                       // empty for a single-file model
    std::optional<Sha256> sha256;  // std::nullopt: a placeholder record (BlobRecord::placeholder)
    std::uint64_t size = 0;
    std::vector<BlobSource> sources;  // mirrors, in the order they are tried; never empty
};
struct RemoteModel {
    Category category = Category::other;
    std::string name;
    std::string ext;    // single-file model: ".safetensors"; empty for a tree
    bool tree = false;  // a multi-file model (files[i].path set), else exactly one file
    std::optional<std::string> label;
    std::string note;
    std::vector<RemoteFile> files;
};
struct RemoteAddResult {
    std::string model_key;
    std::string label;
    bool new_version = false;   // false: that content was already a version of the model
    std::size_t present = 0;    // files whose content is already in the store (nothing to fetch)
    std::size_t remote = 0;     // files left to download
    std::vector<Sha256> blobs;  // the record keys of the files, in files order
};

// One blob the cache quota removed (or, dry run, would remove).
struct EvictedBlob {
    Sha256 blob;
    std::uint64_t size = 0;
    std::int64_t accessed = 0;
};
struct EvictReport {
    std::vector<EvictedBlob> evicted;
    std::uint64_t bytes = 0;        // freed
    std::uint64_t store_bytes = 0;  // present blob bytes after eviction
    std::size_t skipped_open = 0;   // candidates some process has open
};

// A model and one of its versions, as `modelfs use NAME@LABEL` names them.
struct VersionRef {
    Model model;
    std::size_t index = 0;  // into model.versions
    const ModelVersion& version() const { return model.versions.at(index); }
};

// What `use`, `rollback`, `pin` changed.
struct VersionChange {
    std::string model_key;
    std::string from_label;  // what was current (or pinned; empty: nothing was)
    std::string to_label;
    bool changed = false;  // false: it already was so
};

// One version `retain` drops (or, dry run, would drop).
struct DroppedVersion {
    std::string model_key;
    std::string label;
    std::uint64_t size = 0;
    std::int64_t added = 0;
};
struct RetainReport {
    std::vector<DroppedVersion> dropped;
    // Versions beyond the newest `keep` that stayed because they are current, pinned or held
    // by a registered lock file.
    std::size_t kept_current = 0, kept_pinned = 0, kept_locked = 0;
    std::uint64_t bytes = 0;  // sizes of the dropped versions (freed by gc unless shared)
};

// What `modelfs apply` did for each model of a lock file.
struct ApplyItem {
    std::string model_key;
    std::string label;
    enum class Outcome {
        unchanged,     // that version already was current
        made_current,  // the store had that version; it is current now
        added,         // a new version (its blobs present, or registered to fetch lazily)
        failed,        // see error
    } outcome = Outcome::unchanged;
    std::size_t remote_files = 0;  // files to be downloaded on first use
    std::string error;
};
struct ApplyReport {
    std::string lock_id;
    std::vector<ApplyItem> items;
    bool ok() const;
};

class Store {
  public:
    // $MODELFS_STORE, else $XDG_DATA_HOME/modelfs, else ~/.local/share/modelfs.
    static std::filesystem::path default_path();

    // Creates a store at `root` (or opens the one there). Refuses a non-empty folder that is not a
    // store.
    static Store init(const std::filesystem::path& root);
    // Opens an existing store. Throws StoreError no_store / schema with a message saying what to
    // do. Cleans what crashed imports left in staging.
    static Store open(const std::filesystem::path& root);

    ~Store();
    Store(Store&&) noexcept;
    Store& operator=(Store&&) noexcept;

    const std::filesystem::path& root() const;
    BlobStore& blobs();
    Catalog& catalog();

    ImportReport import(const std::vector<std::filesystem::path>& paths, const ImportOptions& opts,
                        Progress* progress = nullptr);

    Resolved resolve(const std::string& query, Progress* progress = nullptr);
    // Models whose current or older versions use the blob.
    std::vector<std::string> models_using(const Sha256& blob);

    // AutoV3 of a stored safetensors blob: computed on first request (a full read), then kept in
    // the blob record. std::nullopt for other files.
    std::optional<Sha256> autov3(const Sha256& blob, Progress* progress = nullptr);
    // The header of a stored safetensors blob (std::nullopt for other files).
    std::optional<SafetensorsInfo> safetensors_info(const Sha256& blob);

    // Edits a mount makes. Each is one catalog transaction; commit_file also holds the shared
    // store lock from publishing the blob to cataloguing it (so gc never removes it in between).
    //
    // Adds `f` as the new current version of its model (created if needed; content equal to an
    // existing version makes that one current again) or, for a sidecar, sets that sidecar on the
    // model's current version. Throws StoreError (not_found: a sidecar's model is gone).
    FileCommitResult commit_file(const FileCommit& f);
    // Adds a multi-file model version whose files come from a cache that names them by content.
    // Each file whose content the store lacks becomes a blob without being read: on the store's
    // filesystem, and when the caller owns it, it is hard-linked (publish_link: the inode becomes
    // 0444, shared by the cache and the store); otherwise it is copied while hashing, and a
    // content that does not match its name fails the version (StoreError corrupt). Blobs taken on
    // trust are recorded `unverified` until `verify` reads them. Content the model already has
    // changes nothing (a version's label with other content: StoreError conflict; nothing is
    // linked before these checks pass). One catalog transaction, under the shared store lock.
    TrustedTreeResult commit_trusted_tree(const TrustedTree& t, Progress* progress = nullptr);
    // Removes a model with all its versions (its blobs stay until gc). False if it did not exist.
    bool remove_model(std::string_view key);
    // Removes one sidecar from a model's current version. False if there was none.
    bool remove_sidecar(std::string_view key, std::string_view suffix);
    // Renames model `from` to (category, name), every single-file version's extension becoming
    // `ext` (the end of `name`). When that model exists already, it gets `from`'s current version
    // (with its sidecars) as its new current version and `from` is removed: what rename(2) does to
    // the replaced file, without losing the replaced model's older versions.
    void rename_model(std::string_view from, Category category, const std::string& name,
                      const std::string& ext);
    // Sets the mtime and/or permission bits a mount shows for version `label` of a model (the
    // one the view shows: a pin, or the current one; empty: the current one).
    void set_shown_attrs(std::string_view key, std::optional<std::int64_t> mtime,
                         std::optional<std::uint32_t> mode, std::string_view label = {});

    // Remote models (lazy fetch). The store itself never touches the network: fetch/ downloads
    // into partial_dir() and calls commit_download.
    //
    // Registers a model whose files are downloaded later: blob records in state `remote` with
    // their sources (a blob already present just gains the sources), and a model version using
    // them (a new current version, as import does). Throws StoreError bad_input / conflict.
    RemoteAddResult add_remote(const RemoteModel& m);
    // Where downloads keep their partial files and state (STORE/partial/).
    std::filesystem::path partial_dir() const;
    // Makes a finished download a blob. `fd` is open on `path` (in partial_dir()); `digests` are
    // of its content; `key` is the record it was downloaded for. For a real hash the digests must
    // match it, else StoreError corrupt and the file moves to quarantine/ (nothing catalogued);
    // a placeholder key is replaced everywhere (records, model versions) by the real hash.
    // The file is hard-linked into blobs/ and unlinked from `path`. Returns the blob's real hash.
    Sha256 commit_download(const Sha256& key, int fd, const std::filesystem::path& path,
                           const FileDigests& digests);
    // Records (or with an empty message, clears) the last download failure of a blob.
    void record_fetch_error(const Sha256& key, const std::string& message);
    // Marks blobs as used now (the cache quota evicts the least recently used first).
    void touch_accessed(const std::vector<Sha256>& blobs);
    // Sets or clears a blob's `keep` flag (never evicted).
    void set_keep(const Sha256& blob, bool keep);
    // Evicts present blobs that can be downloaded again (they have sources; not `keep`; not open,
    // i.e. no process holds a flock on the blob file) least recently used first, until present
    // blob bytes are at most `max_bytes`. Records stay, in state `remote`.
    EvictReport evict(std::uint64_t max_bytes, bool dry_run);

    // Versions (path aliases). Every change below is one catalog transaction, so a running mount
    // shows it at its next catalog check.
    //
    // "NAME@LABEL", "CATEGORY/NAME@LABEL", or without "@LABEL" the current version. NAME is
    // resolved as resolve() resolves model names; LABEL as find_version() finds it. Throws
    // StoreError not_found / conflict (ambiguous) with the choices in the message.
    VersionRef resolve_version(std::string_view ref);
    // Makes that version current; the old current becomes `previous`.
    VersionChange use_version(std::string_view model_key, std::string_view label);
    // Makes `previous` current again (and the current one `previous`, so a second rollback
    // undoes the first). Throws StoreError bad_input when there is no previous version.
    VersionChange rollback(std::string_view model_key);
    // Pins a version for one view: it shows that version as NAME.EXT whatever is current.
    VersionChange pin(std::string_view model_key, std::string_view label, const std::string& view);
    // False when the model had no pin for that view.
    bool unpin(std::string_view model_key, const std::string& view);
    // Keeps the newest `keep` versions of each model (of `only_model` when given) and drops the
    // others, except current, pinned and lock-held ones. Blobs stay until gc. keep >= 1.
    RetainReport retain(std::size_t keep, bool dry_run,
                        std::optional<std::string> only_model = std::nullopt);

    // Lock files. register_lock records which versions the lock holds (retention keeps them);
    // registering the same content again only updates its name. Returns the id.
    std::string register_lock(const LockFile& lock, const std::string& name);
    // Releases a lock by id (or unique id prefix) or by the name it was registered under.
    // False when none matched.
    bool release_lock(std::string_view id_or_name);
    std::vector<LockHold> locks();
    // Makes every locked version current, adding versions the store lacks (as lazily fetched
    // remote models when their blobs are not here; a missing blob without sources fails that
    // model only), then registers the lock under `name`.
    ApplyReport apply_lock(const LockFile& lock, const std::string& name);

    // The second line of defence against blob bytes changed behind the store's back (the first:
    // BlobStore::why_not_take). `fd` is open on blob `h`. When its fstat matches the record's
    // `seen` stat, the answer is `ok` with no I/O beyond fstat. Otherwise the file is hashed
    // (SHA-256): content that still matches refreshes `seen` (`rehashed`); content that does not
    // is moved to quarantine/ and the record marked `quarantined`, as `verify` does
    // (`quarantined`: the caller must not serve the bytes, EIO). A record without `seen` (an
    // older store) is hashed once, then recorded. No record, or one that is not `present`:
    // `ok` (nothing to compare with; such a blob is not served from its file).
    enum class BlobCheck { ok, rehashed, quarantined };
    BlobCheck check_blob(const Sha256& h, int fd);
    // Refreshes the record's `seen` stat after a link change of the blob's inode that the store
    // did not make itself (a mount's ingest unlinking the overlay name it published from, adopt
    // removing the backup's name): unlink() changes the ctime. Only when inode, size and mtime are
    // still the recorded ones, so bytes changed since the commit are never vouched for (the next
    // check_blob hashes them). False when nothing was refreshed.
    bool record_blob_stat(const Sha256& h);
    // How many times this process has hashed a blob in check_blob (for tests and logs).
    static std::uint64_t blob_rehashes();

    // Tensor-level dedup (tensor_split.h, FORMAT.md "Composed blobs").
    //
    // Indexes the pieces of present blob `h` and, when it shares at least kMinSharedBytes with
    // other stored blobs (byte-compared), stores it composed: its new pieces go to a `pieces`
    // blob, its record gets extents, its file is removed. Not for composed, pieces or placeholder
    // blobs, files that are not safetensors/GGUF, or blobs composed blobs read from. With
    // MODELFS_TENSOR_DEDUP=0 (or `dry_run`) it only indexes (dry run: not even that) and reports.
    SplitReport split_tensors(const Sha256& h, bool dry_run = false);
    // Rebuilds composed blob `h` as a file in blobs/ (checked against its SHA-256 before it is
    // published), so it is read like any blob. `within_budget`: older copies (least recently
    // used first, none some process has open) are dropped to stay within
    // materialise_budget(), and nothing is done when it cannot; otherwise (a command that needs
    // the file) the budget is ignored.
    MaterialiseResult materialise(const Sha256& h, bool within_budget = true);
    // Removes a composed blob's materialised copy (false: none, or some process has it open).
    bool drop_materialised(const Sha256& h);
    // Bytes materialised copies may take (meta `tensors/materialise_budget`, default 8 GiB).
    std::uint64_t materialise_budget();
    void set_materialise_budget(std::uint64_t bytes);
    // How blob `h` is stored and what it shares with which models (`modelfs show`).
    StorageInfo storage_info(const Sha256& h);
    // SHA-256 and XXH3-128 of composed blob `rec` (key `h`) read through its extents from byte
    // `from`; the bytes also go to `out_fd` when >= 0. Throws StoreError when a source cannot be
    // read.
    FileDigests digest_composed(const Sha256& h, const BlobRecord& rec, int out_fd = -1,
                                Progress* progress = nullptr, std::uint64_t from = 0);
    // Opens blob `h`'s file for reading; a composed blob without one is materialised first
    // (ignoring the budget): for commands that need the whole file (export, push, unadopt).
    UniqueFd open_blob_file(const Sha256& h);

    // Full: SHA-256 + XXH3-128 of every present blob. Fast: a blob whose stat matches its
    // record's `seen` is read for XXH3-128 only (bit rot); any other is hashed with SHA-256
    // (something touched it, and XXH3 is no proof against someone who did). Either way a blob
    // that matches gets its `seen` stat refreshed.
    VerifyReport verify(bool fast, unsigned jobs = 0, Progress* progress = nullptr);
    GcReport gc(bool dry_run);
    StoreStats stats(const AdoptedFiles& adopted = {});

    struct Impl;  // defined in store/src/store_impl.h

  private:
    explicit Store(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

}  // namespace modelfs
