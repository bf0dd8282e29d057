// Catalogued files whose blob is not on this machine yet (lazy fetch). The first open starts the
// download through the mount's Fetcher; every opener of the same blob shares that one download.
//
// No request thread ever waits for a download: the open is answered later, from the download's
// callback on the fetcher's thread (fuse_reply_* may be called from any thread; the request is
// kept until then). By default the open is answered once the blob is verified and in the store,
// and the file is then read like any stored blob. A source marked `stream` instead has the open
// answered as soon as the first byte arrived: its handle reads ranges as they arrive (each read
// is answered when its range is there) and the verified blob once the download is done; a
// failed download makes its reads EIO and drops its pages from the kernel's cache.
#pragma once

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "modelfs/fetch/fetcher.h"
#include "namespace.h"

namespace modelfs::fs {

struct Daemon;

// Requests answered later, from another thread. Each is answered exactly once, by whoever claims
// it first: the callback that has the answer, or the kernel's interrupt (the caller got a
// signal: it is answered EINTR, and the download goes on for the next open).
class PendingReplies {
  public:
    // Keeps `req` and has its interrupt claim it. Call before anything else can claim it.
    std::uint64_t add(fuse_req_t req);
    // The request, or nullptr when someone claimed it already.
    fuse_req_t claim(std::uint64_t id);
    std::vector<fuse_req_t> claim_all();

  private:
    std::mutex mu_;
    std::uint64_t next_ = 1;
    std::unordered_map<std::uint64_t, fuse_req_t> reqs_;
};

class RemoteFiles {
  public:
    RemoteFiles(Daemon& dm, fetch::FetchConfig cfg);
    // Stops the downloads (their partial state stays for a resume) and answers what still waits.
    ~RemoteFiles();
    RemoteFiles(const RemoteFiles&) = delete;
    RemoteFiles& operator=(const RemoteFiles&) = delete;

    // Opens the catalogued file `e` for reading; its blob file is missing. False when the blob is
    // not one to download (no sources, or no record): the caller answers as for any missing blob.
    // True: the request is answered, now or when the download ends.
    bool open(fuse_req_t req, fuse_file_info* fi, const Entry& e);

    // Streaming handles (their fh is a descriptor of the partial file, unique while open).
    bool is_stream(std::uint64_t fh);  // cheap while none is open
    void read(fuse_req_t req, fuse_file_info* fi, size_t size, off_t off);
    void release(fuse_file_info* fi);  // closes the handle's descriptor

    PendingReplies& pending() { return pending_; }

  private:
    struct Stream;
    fetch::Fetcher& fetcher();
    // Logs the download's start and, once, its end (however many opened it).
    void watch(const std::shared_ptr<fetch::Download>& dl, const Entry& e, const BlobRecord& rec);
    // Answers an open with the stored blob `blob` (the real hash of `e`'s content).
    void finish_open(fuse_req_t req, fuse_file_info fi, const Entry& e, const Sha256& blob);
    void open_stream(fuse_req_t req, fuse_file_info* fi, const Entry& e,
                     std::shared_ptr<fetch::Download> dl);
    void reply_stream(fuse_req_t req, fuse_file_info fi, const Entry& e,
                      const std::shared_ptr<fetch::Download>& dl);
    void stream_done(const std::shared_ptr<Stream>& s, const fetch::FetchResult& r);
    // Claims `req` under `id` when the kernel interrupts it (the caller got a signal).
    std::uint64_t keep(fuse_req_t req);

    Daemon& dm_;
    fetch::FetchConfig cfg_;
    PendingReplies pending_;
    std::atomic<bool> stopping_{false};  // unmounting: interrupted downloads are no failures

    std::mutex mu_;
    // The download last seen per record key, so that its end is logged once.
    std::map<Sha256, std::weak_ptr<fetch::Download>> watched_;
    // Placeholder keys downloaded here, with their real hash: the catalog forgets the key, while
    // the kernel may still hold an inode made for it.
    std::map<Sha256, Sha256> fetched_;

    std::mutex streams_mu_;
    std::unordered_map<std::uint64_t, std::shared_ptr<Stream>> streams_;
    std::atomic<std::size_t> stream_count_{0};

    std::mutex fetcher_mu_;
    std::unique_ptr<fetch::Fetcher> fetcher_;  // made on first use: it starts a thread
};

}  // namespace modelfs::fs
