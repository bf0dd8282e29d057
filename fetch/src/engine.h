// The downloader's insides, shared by its files (not part of the API: that is fetcher.h).
//
// The downloader. One thread drives every transfer through a libcurl multi handle; each blob being
// downloaded has a worker thread that hashes the arrived prefix of its partial file, persists the
// list of durable ranges, and commits the verified file. See fetcher.h and store/FORMAT.md
// ("Downloads").
//
// Who owns what:
// - Engine (one per Fetcher) runs the fetcher thread: its `mu` guards the members up to the
//   fetcher-thread-only part; the rest (the multi handle, the queue, the actives and their
//   requests) is touched by the fetcher thread only. Other threads hand it work through `posted`
//   (post()).
// - DownloadImpl is what callers hold (a Download); its `m_` guards its state, which the fetcher
//   thread and the worker both update.
// - Active is the fetcher thread's view of a download in progress; its worker thread reads the
//   partial file, and persist_mu orders a .state write against a restart from zero.
// - Lock order: a download's m_, then the Fetcher's mu; nothing takes them the other way.
//
// Where the code is:
//   download.cpp       DownloadImpl: status, waiters, results (what callers hold)
//   transfer_loop.cpp  the fetcher thread's loop, shutdown, bandwidth tokens, stalls, speeds
//   activation.cpp     the queue, starting a download (resume, locks), other processes
//   requests.cpp       planning ranges, starting requests, judging responses, writing data
//   retries.cpp        a request's end: retries with backoff, source switches, failure
//   verify_worker.cpp  the worker of one download (hash, persist, commit) and its results
//   fetcher.cpp        the public Fetcher and stored_fetch_states
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <functional>
#include <limits>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "curl_util.h"
#include "modelfs/fetch/fetcher.h"
#include "modelfs/fetch/source.h"
#include "modelfs/store/unique_fd.h"
#include "partial_state.h"

namespace modelfs::fetch::detail {

namespace stdfs = std::filesystem;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr std::uint64_t kUnknown = std::numeric_limits<std::uint64_t>::max();
// Large reads from the socket: fewer write callbacks and pwrites per gigabyte.
constexpr long kCurlBuffer = 512 * 1024;
constexpr std::size_t kHashBlock = 4 << 20;
constexpr std::uint64_t kProgressResetsRetries = 1 << 20;
constexpr auto kOtherProcessPoll = milliseconds(100);
constexpr auto kPersistEvery = milliseconds(1000);
constexpr std::size_t kHistory = 1000;

inline std::string join(const std::vector<std::string>& v, std::string_view sep) {
    std::string out;
    for (const auto& s : v) {
        if (!out.empty()) out += sep;
        out += s;
    }
    return out;
}

inline std::string model_name_for(Store& store, const Sha256& key) {
    auto users = store.models_using(key);
    if (users.empty()) return {};
    std::string n = users.front();
    if (auto at = n.rfind('@'); at != std::string::npos) n.resize(at);
    return n;
}

// ---------------------------------------------------------------------------------------------
// Download objects

struct Engine;

class DownloadImpl final : public Download, public std::enable_shared_from_this<DownloadImpl> {
  public:
    DownloadImpl(Engine* owner, Store& store, const Sha256& key, const BlobRecord& rec,
                 std::string name)
        : key_(key),
          placeholder_(rec.placeholder),
          sources_(rec.sources),
          name_(std::move(name)),
          store_(store),
          owner_(owner),
          size_(rec.size) {}

    const Sha256& key() const override { return key_; }
    std::uint64_t size() const override {
        std::lock_guard lk(m_);
        return size_;
    }
    FetchStatus status() const override;
    FetchResult wait() override {
        std::unique_lock lk(m_);
        cv_.wait(lk, [&] { return settled_; });
        return *result_;
    }
    void on_done(std::function<void(const FetchResult&)> fn) override {
        std::unique_lock lk(m_);
        if (result_) {
            FetchResult r = *result_;
            lk.unlock();
            fn(r);
            return;
        }
        done_fns_.push_back(std::move(fn));
    }
    bool streamable() const override {
        std::lock_guard lk(m_);
        if (result_) return result_->ok;
        return !other_process_ && source_ < sources_.size() && sources_[source_].stream;
    }
    void on_range(std::uint64_t offset, std::uint64_t length,
                  std::function<void(bool)> fn) override;
    int partial_fd() const override;

    // Sets the result and runs the callbacks (on the calling thread). False if it had one.
    bool finish(FetchResult r);

    const Sha256 key_;
    const bool placeholder_;
    const std::vector<BlobSource> sources_;
    std::string name_;  // under m_; found by the worker
    Store& store_;

    mutable std::mutex m_;
    std::condition_variable cv_;  // result_, and the worker's wake-ups
    Engine* owner_;               // null once the Fetcher is gone
    std::uint64_t size_;
    FetchState state_ = FetchState::queued;
    bool other_process_ = false;
    std::optional<FetchResult> result_;
    bool settled_ = false;  // result_ set and its callbacks run: wait() returns
    std::vector<std::function<void(const FetchResult&)>> done_fns_;
    struct Waiter {
        std::uint64_t begin, end;
        std::function<void(bool)> fn;
    };
    std::vector<Waiter> waiters_;
    RangeSet done_;                 // arrived bytes of the partial file (this generation)
    std::uint64_t other_done_ = 0;  // progress of another process, from its .state
    std::uint64_t reused_ = 0;      // bytes copied from stored pieces (reuse.h)
    std::uint64_t gen_ = 0;         // bumped whenever the partial file starts over
    bool complete_ = false;         // every byte arrived (fetcher thread -> worker)
    enum class Cmd { none, stop, fail } cmd_ = Cmd::none;
    std::string cmd_msg_;
    bool cmd_discard_ = false;  // with fail: the partial bytes are worthless
    std::string validator_;     // of the current source, for the .state file
    std::size_t source_ = 0;
    unsigned requests_ = 0;
    std::uint64_t bps_ = 0;
    mutable UniqueFd read_fd_;
};

// ---------------------------------------------------------------------------------------------
// The fetcher thread's view of a download in progress

enum class RangeSupport { unknown, yes, no };

struct SourceState {
    std::string url;  // as in the catalog
    std::string shown;
    std::optional<HttpTarget> target;
    RangeSupport ranges = RangeSupport::unknown;
    bool failed = false;
    std::string validator;
};

struct Task {
    std::uint64_t begin = 0, end = 0;
    unsigned attempts = 0;
    Clock::time_point not_before{};
    bool priority = false;
};

enum class Verdict { ok, source_bad, restart, fatal, transient };

struct Active;

struct Request {
    Engine* impl = nullptr;
    Active* a = nullptr;
    EasyPtr easy;
    SlistPtr headers;
    std::uint64_t begin = 0, end = 0, pos = 0;
    std::uint64_t gen = 0;
    std::size_t source = 0;
    std::string host;
    HttpTarget target;       // what this request asked (the source's, or where it redirected)
    unsigned redirects = 0;  // followed to get here
    Clock::time_point started = Clock::now();  // for its deadline (check_deadlines)
    Clock::time_point paused_at{};             // when `paused` was set
    bool past_deadline = false;
    bool ranged = false;
    bool priority = false;
    unsigned attempts = 0;
    std::vector<Response> chain;
    bool checked = false;
    bool accepted = false;
    bool cancelled = false;
    bool paused = false;
    Clock::time_point last_data = Clock::now();  // for stall detection
    long status = 0;
    Verdict verdict = Verdict::ok;
    std::string message;
    std::string error_body;
    char errbuf[CURL_ERROR_SIZE] = {};
};

// ---------------------------------------------------------------------------------------------

struct Engine {
    Engine(Store& s, FetchConfig c);
    ~Engine();

    Store& store;
    FetchConfig cfg;
    stdfs::path partial_dir;

    std::mutex mu;  // guards everything below up to the fetcher-thread-only part
    std::map<Sha256, std::shared_ptr<DownloadImpl>> live;
    std::map<Sha256, std::weak_ptr<DownloadImpl>> finished;
    std::deque<FetchStatus> history;
    std::vector<std::function<void()>> posted;
    bool stopping = false;
    std::uint64_t limit_rate = 0;
    std::mutex evict_mu;

    // Fetcher thread only.
    MultiPtr multi;
    std::deque<std::shared_ptr<DownloadImpl>> queue;
    std::list<std::unique_ptr<Active>> actives;
    struct Waiting {
        std::shared_ptr<DownloadImpl> dl;
        UniqueFd fd;
        Clock::time_point next_poll;
        Clock::time_point next_progress;
    };
    std::list<Waiting> waiting;
    std::map<std::string, unsigned> host_inflight;
    unsigned total_inflight = 0;
    std::uint64_t rate = 0;
    double tokens = 0;
    Clock::time_point refilled = Clock::now();
    std::vector<Request*> paused;
    Clock::time_point speed_at = Clock::now();
    std::mt19937_64 rng{std::random_device{}()};
    std::thread thread;

    void post(std::function<void()> fn);
    void run();
    void run_posted();
    void shutdown();

    void enqueue(std::shared_ptr<DownloadImpl> dl);
    void activate_queued();
    void activate(const std::shared_ptr<DownloadImpl>& dl);
    void poll_waiting();
    std::optional<Sha256> blob_present(const DownloadImpl& dl);
    void complete(const std::shared_ptr<DownloadImpl>& dl, FetchResult r);

    void schedule();
    // `via`: the redirected target (else the source's), after `redirects` redirects.
    void start_request(Active& a, const Task& t, const HttpTarget* via = nullptr,
                       unsigned redirects = 0);
    void check_response(Active& a, Request& r);
    std::size_t on_data(Request& r, const char* data, std::size_t len);
    void request_done(Request* r, CURLcode rc);
    void drop_request(Request* r);
    void sweep();
    void replan(Active& a);
    void reset_all(Active& a, Request* keep);
    void source_failed(Active& a, const std::string& msg);
    void transfer_failed(Active& a, const std::string& msg, bool discard);
    void check_complete(Active& a);
    void verify_failed(Active& a, const std::string& msg);
    void worker_finished(Active* a, FetchResult r);
    void prioritize(const std::shared_ptr<DownloadImpl>& dl, std::uint64_t off, std::uint64_t len);
    void fire_waiters(DownloadImpl& dl);
    void refill_tokens(Clock::time_point now);
    void check_stalls(Clock::time_point now);
    // Fails requests past their deadline (request_deadline()).
    void check_deadlines(Clock::time_point now);
    // A request `from` answered with a redirect to `location` after `redirects` of them: `t`
    // again at the new target, credentials per redirect_target(); or the source failed.
    void follow_redirect(Active& a, const HttpTarget& from, const std::string& location,
                         unsigned redirects, const Task& t);
    void update_speeds(Clock::time_point now);
    milliseconds backoff(unsigned attempt, long retry_after_s);

    void worker_main(Active& a);
    void persist(Active& a);
};

struct Active {
    std::shared_ptr<DownloadImpl> dl;
    stdfs::path part, state;
    UniqueFd fd;  // read-write, flock()ed for as long as this process downloads the blob
    std::vector<SourceState> srcs;
    std::size_t cur = 0;
    bool size_known = true;
    std::uint64_t size = 0;
    std::uint64_t gen = 0;
    std::deque<Task> pending;
    std::list<std::unique_ptr<Request>> requests;
    std::vector<std::string> errors;
    unsigned mismatches = 0;
    unsigned validator_resets = 0;
    bool over = false;  // failed, or every byte arrived: no more requests
    bool failed = false;
    bool new_bytes = false;  // since the last perform round
    std::uint64_t window_bytes = 0;
    std::mutex persist_mu;  // a .state write vs. a restart from zero
    std::uint64_t persisted_gen = kUnknown, persisted_bytes = 0;  // under persist_mu
    std::atomic<std::uint64_t> gen_atomic{0};
    std::atomic<bool> stop_flag{false};
    std::thread worker;

    unsigned live_requests() const {
        unsigned n = 0;
        for (const auto& r : requests)
            if (!r->cancelled) ++n;
        return n;
    }
};

}  // namespace modelfs::fetch::detail
