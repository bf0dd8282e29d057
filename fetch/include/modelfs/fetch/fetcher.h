// The downloader: brings remote blobs into the store, verified.
//
// One Fetcher per process runs every transfer on its own thread (libcurl multi): several blobs at
// once, each in parallel ranged requests, within per-host and overall connection limits and an
// optional bandwidth limit. Partial data and the list of finished ranges live in
// STORE/partial/<key hex>.part / .state (see store/FORMAT.md), so an interrupted download resumes,
// in this process or the next. The .part file is flock()ed by the one process downloading it;
// another process asking for the same blob waits for that one instead of downloading again, and
// within a process every caller of fetch() for one blob shares one Download.
//
// Nothing unverified becomes a blob: the SHA-256 of the whole file is checked (computed as the
// data arrives) before Store::commit_download publishes it.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "modelfs/fetch/config.h"
#include "modelfs/store/hash.h"
#include "modelfs/store/store.h"

namespace modelfs::fetch {

enum class FetchState {
    queued,   // waiting for a slot (max_blobs) or for another process that is downloading it
    running,  // transferring
    done,     // the blob is present and verified
    failed,   // every source failed; `error` says why
};
std::string_view to_string(FetchState s);

struct FetchStatus {
    Sha256 key;                  // the record's key (may be a placeholder)
    std::optional<Sha256> blob;  // the real hash, once known
    std::string name;            // a model using it ("lora/foo"), for display
    std::uint64_t size = 0;
    std::uint64_t done_bytes = 0;        // arrived (and, after a resume, already there)
    std::uint64_t bytes_per_second = 0;  // recent average
    FetchState state = FetchState::queued;
    std::string source;          // the URL in use (redacted)
    std::string error;           // when failed: the last error of each source tried
    unsigned requests = 0;       // HTTP requests made so far (for tests and `status`)
    bool other_process = false;  // another process holds the download; this one waits for it
    // Bytes copied from tensors the store already held (its tensor map, store/tensor_map.h)
    // rather than downloaded; counted in done_bytes too.
    std::uint64_t reused_bytes = 0;
};

struct FetchResult {
    bool ok = false;
    Sha256 blob;        // the real hash (differs from the key for a placeholder)
    std::string error;  // when !ok
};

// One blob being brought in. Shared by everyone who asked for it; outlives the transfer.
class Download {
  public:
    virtual ~Download() = default;
    virtual const Sha256& key() const = 0;
    virtual std::uint64_t size() const = 0;
    virtual FetchStatus status() const = 0;

    // Blocks until the blob is present or the download failed.
    virtual FetchResult wait() = 0;
    // Runs `fn` once, when done or failed: at once on this thread if it already is, else later
    // on the fetcher's thread (keep it short; it must not call wait()).
    virtual void on_done(std::function<void(const FetchResult&)> fn) = 0;

    // Streaming (a source with `stream`, only in the process that downloads): ranges are fetched
    // in order from the start of the file. `on_range` runs `fn(true)` once [offset, offset+len)
    // has arrived in the partial file (at once if it has), or `fn(false)` if the download fails
    // first. Asking for a range moves it to the front of the queue. False from streamable(): the
    // caller must wait for on_done.
    virtual bool streamable() const = 0;
    virtual void on_range(std::uint64_t offset, std::uint64_t length,
                          std::function<void(bool arrived)> fn) = 0;
    // The partial file, open for reading arrived ranges; -1 when not streamable. Valid as long as
    // this Download object lives (even after the data moved into blobs/).
    virtual int partial_fd() const = 0;
};

// Progress of fetch_all, polled by the CLI from its own thread.
struct BatchProgress {
    std::vector<std::shared_ptr<Download>> downloads;
};

class Fetcher {
  public:
    // Starts the transfer thread. `store` must outlive the Fetcher.
    Fetcher(Store& store, FetchConfig cfg);
    // Interrupts transfers (their partial state is kept for a resume) and joins the thread.
    ~Fetcher();
    Fetcher(const Fetcher&) = delete;
    Fetcher& operator=(const Fetcher&) = delete;

    // Starts (or joins) the download of the blob recorded under `key`. A blob already present
    // gives a Download that is done. Throws StoreError not_found when there is no such record,
    // bad_input when it has no sources.
    std::shared_ptr<Download> fetch(const Sha256& key);

    // Every download this Fetcher knows (queued, running, finished or failed in this process).
    std::vector<FetchStatus> downloads() const;

    // Changes the overall bandwidth limit (bytes/s, 0: none) of running transfers too.
    void set_limit_rate(std::uint64_t bytes_per_second);

    const FetchConfig& config() const;

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

// Downloads the store knows of without a process: partial files (interrupted, or in flight in
// another process: `other_process`), and blobs whose last download failed. For `modelfs status`.
std::vector<FetchStatus> stored_fetch_states(Store& store);

}  // namespace modelfs::fetch
