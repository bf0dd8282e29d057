// The crash campaign: the mount daemon killed with SIGKILL at random moments while a tool writes,
// saves by rename, overwrites and renames models through the mount (and while the daemon stores
// closed files in the background), and `modelfs import` / `import --move` killed at random
// moments. After each kill: `fusermount3 -uz`, mount again, and check that
//   - every file whose close() (or rename, or unlink) had returned is there with exactly those
//     bytes (SHA-256 against what was written), or gone when it was removed;
//   - a file whose write was cut holds only bytes that were written there (or zeros) and never
//     more than was written;
//   - no model version in the catalog has content that was not written whole: a partial file
//     may stay a plain file at its path, never become a model;
//   - imports: the user's files are untouched (copy) or each is at its origin or in the store
//     (move), and `modelfs verify` is clean.
// At the end, after a clean remount, every closed model file is catalogued as its model's
// current version and `modelfs verify` finds nothing.
//
// Reproducible: MODELFS_CRASH_SEED=N (default 20261204, printed) fixes every choice (operations,
// sizes, contents, kill delays); the interleaving with the daemon's threads is the machine's.
// MODELFS_CRASH_MOUNT_ROUNDS / MODELFS_CRASH_IMPORT_ROUNDS change the number of rounds (default
// 45 and 15). A watchdog aborts the mount's FUSE connection when the test runs longer than
// MODELFS_CRASH_WATCHDOG seconds (default 420): a hang fails the test and still unmounts. A tool
// blocked 5 s after a kill is reported with where the killed daemon's threads are stuck.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "modelfs/store/hash.h"
#include "support/mount_fixture.h"
#include "support/safetensors_writer.h"
#include "support/test_env.h"

namespace stdfs = std::filesystem;
using namespace modelfs::testing;
using nlohmann::json;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

std::uint64_t env_u64(const char* name, std::uint64_t def) {
    const char* v = std::getenv(name);
    if (!v || !*v) return def;
    return std::stoull(v);
}

std::uint64_t seed() {
    static const std::uint64_t s = env_u64("MODELFS_CRASH_SEED", 20261204);
    return s;
}

std::string sha_of(const std::string& bytes) {
    modelfs::Sha256Hasher h;
    h.update(bytes.data(), bytes.size());
    return h.finish().hex();
}

std::string mib(std::uint64_t n) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.2f MiB", static_cast<double>(n) / (1 << 20));
    return buf;
}

std::string short_sha(const std::optional<std::string>& s) {
    return s ? s->substr(0, 12) : std::string("(no file)");
}

double seconds_since(Clock::time_point t0) {
    return std::chrono::duration<double>(Clock::now() - t0).count();
}

// What a path of the mount reads as: no file, an error, or bytes.
struct Read {
    bool exists = false;
    int err = 0;
    std::string bytes;
};

Read read_path(const stdfs::path& p) {
    Read r;
    int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno != ENOENT) r.err = errno;
        return r;
    }
    r.exists = true;
    char buf[1 << 16];
    for (;;) {
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n < 0) {
            r.err = errno;
            break;
        }
        if (n == 0) break;
        r.bytes.append(buf, static_cast<std::size_t>(n));
    }
    ::close(fd);
    return r;
}

// Writes `bytes` to `p` as a tool does (open O_TRUNC, 128 KiB writes, close). Returns 0, or the
// errno with `step` naming the call that failed; `written` follows the bytes write() accepted.
int write_through(const stdfs::path& p, const std::string& bytes,
                  std::atomic<std::uint64_t>& written, std::string& step) {
    written = 0;
    step = "open(O_WRONLY|O_CREAT|O_TRUNC)";
    int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return errno;
    std::size_t off = 0;
    while (off < bytes.size()) {
        std::size_t n = std::min<std::size_t>(128 << 10, bytes.size() - off);
        ssize_t w = ::write(fd, bytes.data() + off, n);
        if (w < 0) {
            int e = errno;
            step = "write at " + std::to_string(off);
            ::close(fd);
            return e;
        }
        off += static_cast<std::size_t>(w);
        written = off;
    }
    step = "close";
    if (::close(fd) != 0) return errno;
    return 0;
}

// The daemon's log lines (without -vv's debug lines), the last `n` of them.
std::string log_tail(const stdfs::path& log, std::size_t n) {
    std::ifstream in(log);
    std::deque<std::string> lines;
    for (std::string line; std::getline(in, line);) {
        if (line.find(": debug: ") != std::string::npos) continue;
        lines.push_back(line);
        if (lines.size() > n) lines.pop_front();
    }
    std::string out;
    for (const auto& l : lines) out += "    " + l + "\n";
    return out;
}

// support/Mount appends every daemon's log to MNT.log and prints all of it when a test has
// failed; the campaign mounts dozens of times, so it prints what matters of each round itself
// (log_tail) and empties the file between daemons.
void empty_log(const stdfs::path& mnt) {
    std::ofstream(mnt.parent_path() / (mnt.filename().string() + ".log"), std::ios::trunc);
}

// "MAJOR:MINOR" of the FUSE file system mounted at `mnt` (/proc/self/mountinfo), or "".
std::string fuse_device_of(const stdfs::path& mnt) {
    std::ifstream in("/proc/self/mountinfo");
    for (std::string line; std::getline(in, line);) {
        std::istringstream f(line);
        std::string id, parent, dev, root, point;
        f >> id >> parent >> dev >> root >> point;
        if (point == mnt.string() && line.find("fuse.modelfs") != std::string::npos) return dev;
    }
    return "";
}

// Aborts the FUSE connection of device "MAJOR:MINOR" through fusectl (mounted at
// /sys/fs/fuse/connections first when it is not); says what it did.
std::string abort_fuse_connection(const std::string& dev) {
    if (dev.empty()) return "no FUSE mount found to abort";
    const std::string minor = dev.substr(dev.find(':') + 1);
    const stdfs::path dir = "/sys/fs/fuse/connections";
    std::error_code ec;
    if (!stdfs::exists(dir / minor, ec))
        ::mount("fusectl", dir.c_str(), "fusectl", 0, nullptr);  // not there: mount it
    std::ofstream abort_file(dir / minor / "abort");
    abort_file << "1" << std::flush;
    return abort_file ? "aborted through " + (dir / minor / "abort").string()
                      : "could not write " + (dir / minor / "abort").string();
}

// Each thread of a process: "TID STATE WAIT-CHANNEL", for a report of where it is stuck.
std::string thread_states(pid_t pid) {
    std::string out;
    std::error_code ec;
    for (auto it = stdfs::directory_iterator("/proc/" + std::to_string(pid) + "/task", ec);
         !ec && it != stdfs::directory_iterator(); it.increment(ec)) {
        std::ifstream st(it->path() / "stat"), wchan(it->path() / "wchan");
        std::string stat_line, w;
        std::getline(st, stat_line);
        std::getline(wchan, w);
        auto close = stat_line.rfind(')');
        std::string state = close == std::string::npos ? "?" : stat_line.substr(close + 2, 1);
        out += (out.empty() ? "" : ", ") + it->path().filename().string() + " " + state + " " +
               (w.empty() || w == "0" ? "-" : w);
    }
    return out.empty() ? "(gone)" : out;
}

// If the test is still running after `limit` (a daemon deadlocked, say), aborts the FUSE
// connection of `mnt` every second, so that whatever waits on it fails with ENOTCONN and the test
// fails and unmounts, instead of being killed by ctest's timeout with its mount left behind.
class Watchdog {
  public:
    Watchdog(stdfs::path mnt, std::chrono::seconds limit)
        : thread_([this, mnt, limit] {
              std::unique_lock lk(mu_);
              if (cv_.wait_for(lk, limit, [this] { return done_; })) return;
              fired_ = true;
              std::printf("watchdog: still running after %llds: aborting the mount's connection\n",
                          static_cast<long long>(limit.count()));
              ADD_FAILURE() << "the crash campaign hung for " << limit.count()
                            << " s; the FUSE connection was aborted";
              while (!cv_.wait_for(lk, 1s, [this] { return done_; }))
                  abort_fuse_connection(fuse_device_of(mnt));
          }) {}
    ~Watchdog() {
        {
            std::lock_guard lk(mu_);
            done_ = true;
        }
        cv_.notify_all();
        thread_.join();
    }
    bool fired() const { return fired_; }

  private:
    std::atomic<bool> fired_{false};
    std::mutex mu_;
    std::condition_variable cv_;
    bool done_ = false;
    std::thread thread_;
};

json cli_json(const stdfs::path& store, std::vector<std::string> args, int* rc = nullptr,
              std::string* err = nullptr) {
    args.insert(args.begin(), {"--store", store.string(), "--json"});
    CliResult r = run_modelfs(args);
    if (rc) *rc = r.exit_code;
    if (err) *err = r.err;
    try {
        return json::parse(r.out.empty() ? "null" : r.out);
    } catch (const std::exception&) {
        return json();
    }
}

// ---------------------------------------------------------------------------------------------

class CrashCampaign : public ::testing::Test {
  protected:
    TempDir dir{"modelfs-crash-campaign"};
    stdfs::path store = dir / "store";
    stdfs::path mnt = dir / "mnt";
    std::mt19937_64 rng{seed()};

    // Every content ever written whole or imported: a catalog version must be one of these.
    std::map<std::string, std::string> known;  // sha256 -> what it is
    int failures = 0;
    std::map<std::string, int> failure_kinds;
    std::set<std::string> reported;  // catalog versions already reported (once each)

    void SetUp() override {
        if (!stdfs::exists("/dev/fuse")) GTEST_SKIP() << "no /dev/fuse";
        ASSERT_EQ(run_modelfs({"--store", store.string(), "init"}).exit_code, 0);
        std::printf("crash campaign: seed %llu (MODELFS_CRASH_SEED=%llu reproduces the choices)\n",
                    static_cast<unsigned long long>(seed()),
                    static_cast<unsigned long long>(seed()));
    }

    std::uint64_t pick(std::uint64_t lo, std::uint64_t hi) {
        return std::uniform_int_distribution<std::uint64_t>(lo, hi)(rng);
    }

    // One failure, counted by kind; the first few in full.
    void fail(const std::string& kind, const std::string& what) {
        ++failures;
        ++failure_kinds[kind];
        if (failure_kinds[kind] <= 6) ADD_FAILURE() << "[" << kind << "] " << what;
    }

    void report_failures() {
        if (failure_kinds.empty()) return;
        std::ostringstream s;
        s << "crash campaign: " << failures << " failures:";
        for (const auto& [k, n] : failure_kinds) s << " " << k << " x" << n << ";";
        std::printf("%s\n", s.str().c_str());
    }

    // A real safetensors file of about `size` bytes (a LoRA or an SD 1.5 checkpoint).
    std::string make_model(bool checkpoint, std::uint64_t size, const std::string& what) {
        std::uint64_t s = rng();
        SafetensorsSpec spec = checkpoint ? sd15_checkpoint(s) : kohya_lora(s);
        grow_to(spec, size);
        std::string bytes = safetensors_bytes(spec);
        known.emplace(sha_of(bytes), what);
        return bytes;
    }

    // Every catalogued version's content was written whole (or imported). Returns the models,
    // key -> current sha256.
    std::map<std::string, std::string> check_catalog(const std::string& when) {
        return check_catalog(when, {});
    }
    // `paths_now`: view path -> the content reading it gave, checked against what was written.
    std::map<std::string, std::string> check_catalog(
        const std::string& when, const std::map<std::string, std::string>& paths_now) {
        std::map<std::string, std::string> current;
        int rc = -1;
        std::string err;
        json ls = cli_json(store, {"ls"}, &rc, &err);
        if (rc != 0 || !ls.is_array()) {
            fail("cli", when + ": modelfs ls failed (" + std::to_string(rc) + "): " + err);
            return current;
        }
        for (const auto& m : ls) {
            std::string key = m.value("model", "");
            if (m.contains("sha256")) current[key] = m["sha256"];
            std::vector<std::pair<std::string, std::string>> versions;  // label, sha
            if (m.value("versions", 1) > 1) {
                json show = cli_json(store, {"show", key}, &rc, &err);
                if (rc != 0) {
                    fail("cli", when + ": modelfs show " + key + " failed: " + err);
                    continue;
                }
                for (const auto& v : show["versions"])
                    if (v.contains("sha256")) versions.emplace_back(v["label"], v["sha256"]);
            } else if (m.contains("sha256")) {
                versions.emplace_back(m.value("version", "?"), m["sha256"]);
            }
            // A view's plain file (category `file`) has no header that tells a cut write from a
            // whole one, so a cut write it was left holding is stored as what it holds: allowed
            // when that is what reading its path gave after the kill, and known from then on.
            if (key.rfind("file/", 0) == 0 && current.count(key)) {
                auto p = paths_now.find(key.substr(5));
                if (p != paths_now.end() && p->second == current[key] && !known.count(current[key]))
                    known.emplace(current[key], "what a cut write left in " + key.substr(5));
            }
            for (const auto& [label, sha] : versions)
                if (!known.count(sha) && reported.insert(key + "@" + label + ":" + sha).second)
                    fail("partial-file-became-model",
                         when + ": " + key + " version " + label + " has content " +
                             sha.substr(0, 12) +
                             " that was never written whole: a cut write became a model");
        }
        return current;
    }

    void check_verify(const std::string& when, bool fast) {
        int rc = -1;
        std::string err;
        std::vector<std::string> args{"verify"};
        if (fast) args.push_back("--fast");
        json v = cli_json(store, args, &rc, &err);
        bool clean = rc == 0 && v.is_object() && v["problems"].empty();
        if (!clean)
            fail("verify", when + ": modelfs verify" + (fast ? " --fast" : "") + " exit code " +
                               std::to_string(rc) + ": " + v.dump() + " " + err);
    }
};

// ---------------------------------------------------------------------------------------------
// The mount daemon killed during writes, ingest and renames.

struct PathState {
    std::optional<std::string> sha;  // what reading the path must give (nullopt: no file)
    // Set while an operation on the path is under way; kept when the kill cut it: any of these
    // outcomes is right then...
    std::set<std::optional<std::string>> maybe;
    // ...or a partial file holding some of `partial_of`'s bytes (cut write).
    const std::string* partial_of = nullptr;
    // The last operations on the path, for the failure message.
    std::deque<std::string> history;
    void did(const std::string& what) {
        history.push_back(what);
        if (history.size() > 8) history.pop_front();
    }
    std::string trace() const {
        std::string out;
        for (const auto& h : history) out += (out.empty() ? "" : "; ") + h;
        return " [its last operations: " + out + "]";
    }
};

class MountCrash : public CrashCampaign {
  protected:
    // The paths the tool writes, relative to the mount.
    std::vector<std::string> models;  // model paths (comfyui/loras/crash/mN.safetensors, ...)
    std::vector<std::string> plains;  // plain files of the view
    std::map<std::string, PathState> paths;

    static std::string tmp_of(const std::string& model) {
        return model.substr(0, model.size() - std::string(".safetensors").size()) + ".tmp";
    }
    static bool is_checkpoint(const std::string& rel) {
        return rel.find("/checkpoints/") != std::string::npos;
    }
    // The catalog key of a model path, the file's name with its extension:
    // comfyui/loras/crash/m1.safetensors -> lora/crash/m1.safetensors.
    static std::string key_of(const std::string& rel) {
        std::string cat = is_checkpoint(rel) ? "checkpoint" : "lora";
        auto slash = rel.find('/', rel.find('/') + 1);
        return cat + "/" + rel.substr(slash + 1);
    }
    bool is_junk(const std::optional<std::string>& sha) const { return sha && !known.count(*sha); }
    // short_sha, and what the content is when it was written whole ("written in round 3").
    std::string what_is(const std::optional<std::string>& sha) const {
        if (!sha) return "(no file)";
        auto it = known.find(*sha);
        return sha->substr(0, 12) +
               (it == known.end() ? " (never written whole)" : " (" + it->second + ")");
    }
};

TEST_F(MountCrash, DaemonKilledDuringWritesIngestAndRenames) {
    const auto t_start = Clock::now();
    const int rounds = static_cast<int>(env_u64("MODELFS_CRASH_MOUNT_ROUNDS", 45));
    for (int i = 0; i < 5; ++i)
        models.push_back("comfyui/loras/crash/m" + std::to_string(i) + ".safetensors");
    for (int i = 0; i < 3; ++i)
        models.push_back("comfyui/checkpoints/crash/c" + std::to_string(i) + ".safetensors");
    for (int i = 0; i < 3; ++i)
        plains.push_back("comfyui/custom_folder/p" + std::to_string(i) + ".dat");
    for (const auto& m : models) {
        paths[m];
        paths[tmp_of(m)];
    }
    for (const auto& p : plains) paths[p];

    // Start with catalogued models to overwrite and rename: two LoRAs and a checkpoint imported.
    {
        stdfs::path src = dir / "seed-import";
        for (const std::string rel :
             {"comfyui/loras/crash/m0.safetensors", "comfyui/loras/crash/m1.safetensors",
              "comfyui/checkpoints/crash/c0.safetensors"}) {
            std::string bytes =
                make_model(is_checkpoint(rel), pick(256 << 10, 2 << 20), "seed " + rel);
            stdfs::path p = src / (is_checkpoint(rel) ? "checkpoints" : "loras") / "crash" /
                            stdfs::path(rel).filename();
            stdfs::create_directories(p.parent_path());
            write_file(p, bytes);
            paths[rel].sha = sha_of(bytes);
        }
        CliResult r = run_modelfs({"--store", store.string(), "import", src.string()});
        ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    }

    int cut_writes = 0, cut_renames = 0, kills_with_pending_ingest = 0, ops_total = 0;
    stdfs::path overlay = store / "views";

    // Model-named files the view's overlay holds: written, not stored yet.
    auto overlay_models = [&]() {
        std::vector<std::string> out;
        std::error_code ec;
        for (const char* sub : {"comfyui/loras/crash", "comfyui/checkpoints/crash"})
            for (auto it = stdfs::directory_iterator(overlay / sub, ec);
                 !ec && it != stdfs::directory_iterator(); it.increment(ec))
                if (it->path().extension() == ".safetensors")
                    out.push_back(std::string(sub) + "/" + it->path().filename().string());
        return out;
    };

    std::unique_ptr<Mount> m = std::make_unique<Mount>(store, mnt);
    ASSERT_TRUE(m->ok()) << "the mount did not come up";
    Watchdog watchdog(mnt, std::chrono::seconds(env_u64("MODELFS_CRASH_WATCHDOG", 420)));
    stdfs::create_directories(mnt / "comfyui" / "custom_folder");
    stdfs::create_directories(mnt / "comfyui" / "loras" / "crash");
    stdfs::create_directories(mnt / "comfyui" / "checkpoints" / "crash");

    int rounds_run = 0;
    for (int round = 0; round < rounds && !HasFatalFailure() && !watchdog.fired(); ++round) {
        ++rounds_run;
        const std::string R = "round " + std::to_string(round);
        SCOPED_TRACE(R);
        std::string cut;  // what the kill interrupted
        std::atomic<std::uint64_t> written{0};
        std::string step;  // the call of write_through that failed
        int ops = 0;
        // The round's contents, made before the clock starts so that the kill lands in I/O, not
        // in making files: safetensors LoRAs and checkpoints, and plain bytes.
        struct Content {
            std::string bytes, sha;
        };
        std::vector<Content> pool_lora, pool_ckpt, pool_plain;
        for (int i = 0; i < 8; ++i) {
            bool ckpt = i % 3 == 2;
            Content c;
            c.bytes = make_model(ckpt, pick(64 << 10, 6 << 20), "written in " + R);
            c.sha = sha_of(c.bytes);
            (ckpt ? pool_ckpt : pool_lora).push_back(std::move(c));
        }
        for (int i = 0; i < 3; ++i) {
            Content c;
            c.bytes.assign(pick(1, 1 << 20), '\0');
            for (auto& ch : c.bytes) ch = static_cast<char>(rng());
            c.sha = sha_of(c.bytes);
            known.emplace(c.sha, "plain file written in " + R);
            pool_plain.push_back(std::move(c));
        }
        std::size_t next_lora = 0, next_ckpt = 0, next_plain = 0;
        auto take = [&](bool ckpt) -> const Content& {
            return ckpt ? pool_ckpt[next_ckpt++ % pool_ckpt.size()]
                        : pool_lora[next_lora++ % pool_lora.size()];
        };
        // The kill, at a random moment of the round.
        const auto kill_after = std::chrono::milliseconds(pick(30, 1500));
        std::atomic<bool> killed{false};
        std::mutex mu;
        std::condition_variable cv;
        bool kill_now = false;
        pid_t daemon = m->pid();
        const std::string fuse_dev = fuse_device_of(mnt);
        std::atomic<bool> worker_done{false};
        std::string hang;  // set by the killer when the tool stayed blocked after the kill
        std::thread killer([&] {
            std::unique_lock lk(mu);
            cv.wait_for(lk, kill_after, [&] { return kill_now; });
            killed = true;
            ::kill(daemon, SIGKILL);
            lk.unlock();
            // A killed daemon closes /dev/fuse and the kernel fails what the tool waits for with
            // ENOTCONN. If the tool is still blocked 5 s later, the daemon could not exit: say
            // where its threads are, and abort the connection so that the campaign goes on.
            auto until = Clock::now() + 5s;
            while (!worker_done && Clock::now() < until) std::this_thread::sleep_for(20ms);
            if (!worker_done) {
                std::string threads = thread_states(daemon);
                hang = "the killed daemon could not exit (its threads: " + threads + ")";
                hang += "; " + abort_fuse_connection(fuse_dev);
            }
        });

        auto op_failed = [&](const std::string& what, int e) {
            if (!killed) {
                fail("syscall",
                     R + ": " + what + " failed with the daemon alive: " + std::strerror(e));
                std::lock_guard lk(mu);
                kill_now = true;
                cv.notify_all();
            }
        };
        // The tool: operations back to back (with short pauses, so that kills also land while
        // the daemon stores what was closed) until the daemon dies.
        while (!killed) {
            const std::uint64_t dice = pick(0, 99);
            const std::string& model = models[pick(0, models.size() - 1)];
            if (dice < 30 || (dice < 50 && !paths[model].sha)) {
                // Write (or overwrite in place, O_TRUNC) a model file.
                const Content& c = take(is_checkpoint(model));
                const std::string& bytes = c.bytes;
                const std::string& sha = c.sha;
                PathState& st = paths[model];
                st.maybe = {st.sha, sha};
                st.partial_of = &bytes;
                st.did(R + " write " + short_sha(sha));
                int e = write_through(mnt / model, bytes, written, step);
                if (e) {
                    op_failed(step + " of " + model, e);
                    cut = "write of " + model + " (" + mib(bytes.size()) + ") at " + mib(written);
                    cut_writes += written > 0;
                    break;
                }
                st.sha = sha;
                st.maybe.clear();
                st.partial_of = nullptr;
            } else if (dice < 50) {
                // Save by rename: write x.tmp, rename it to x.safetensors (over the old one).
                std::string tmp = tmp_of(model);
                const Content& c = take(is_checkpoint(model));
                const std::string& bytes = c.bytes;
                const std::string& sha = c.sha;
                PathState& t = paths[tmp];
                t.maybe = {t.sha, sha};
                t.partial_of = &bytes;
                int e = write_through(mnt / tmp, bytes, written, step);
                if (e) {
                    op_failed(step + " of " + tmp, e);
                    cut = "write of " + tmp + " (" + mib(bytes.size()) + ") at " + mib(written);
                    cut_writes += written > 0;
                    break;
                }
                t.sha = sha;
                t.maybe.clear();
                t.partial_of = nullptr;
                PathState& st = paths[model];
                t.maybe = {sha, std::nullopt};
                st.maybe = {st.sha, sha};
                st.did(R + " renamed onto from " + tmp + " " + short_sha(sha));
                if (::rename((mnt / tmp).c_str(), (mnt / model).c_str()) != 0) {
                    op_failed("rename " + tmp + " -> " + model, errno);
                    cut = "rename " + tmp + " -> " + model;
                    ++cut_renames;
                    break;
                }
                t.sha.reset();
                t.maybe.clear();
                st.sha = sha;
                st.maybe.clear();
            } else if (dice < 65) {
                // Rename a model to another model name of the same folder (a catalog edit when it
                // is stored; over the other one when it exists).
                std::vector<std::string> same;
                for (const auto& o : models)
                    if (o != model && is_checkpoint(o) == is_checkpoint(model)) same.push_back(o);
                const std::string& to = same[pick(0, same.size() - 1)];
                PathState& a = paths[model];
                PathState& b = paths[to];
                if (!a.sha || is_junk(a.sha)) continue;
                a.maybe = {a.sha, std::nullopt};
                b.maybe = {b.sha, a.sha};
                a.did(R + " renamed to " + to);
                b.did(R + " renamed onto from " + model + " " + short_sha(a.sha));
                if (::rename((mnt / model).c_str(), (mnt / to).c_str()) != 0) {
                    op_failed("rename " + model + " -> " + to, errno);
                    cut = "rename " + model + " -> " + to;
                    ++cut_renames;
                    break;
                }
                b.sha = a.sha;
                a.sha.reset();
                a.maybe.clear();
                b.maybe.clear();
            } else if (dice < 73) {
                // Delete a model.
                PathState& st = paths[model];
                if (!st.sha) continue;
                st.maybe = {st.sha, std::nullopt};
                st.did(R + " unlink");
                if (::unlink((mnt / model).c_str()) != 0) {
                    op_failed("unlink " + model, errno);
                    cut = "unlink " + model;
                    break;
                }
                st.sha.reset();
                st.maybe.clear();
            } else if (dice < 85) {
                // A plain file of the view (a tool's cache, say).
                const std::string& p = plains[pick(0, plains.size() - 1)];
                const Content& c = pool_plain[next_plain++ % pool_plain.size()];
                const std::string& bytes = c.bytes;
                const std::string& sha = c.sha;
                PathState& st = paths[p];
                st.maybe = {st.sha, sha};
                st.partial_of = &bytes;
                int e = write_through(mnt / p, bytes, written, step);
                if (e) {
                    op_failed(step + " of " + p, e);
                    cut = "write of " + p + " at " + mib(written);
                    cut_writes += written > 0;
                    break;
                }
                st.sha = sha;
                st.maybe.clear();
                st.partial_of = nullptr;
            } else {
                // Let the daemon store what was closed.
                std::this_thread::sleep_for(std::chrono::milliseconds(pick(5, 60)));
                continue;
            }
            ++ops;
        }
        worker_done = true;
        killer.join();
        ops_total += ops;
        if (!hang.empty())
            fail("hang-after-kill", R + ": after the SIGKILL the tool's " +
                                        (cut.empty() ? std::string("operation") : cut) +
                                        " stayed blocked for 5 s: " + hang +
                                        "; fusermount3 -uz would not have unblocked it");
        // The kill happened: what had been closed but not stored yet?
        std::vector<std::string> pending;
        for (const auto& rel : overlay_models())
            if (!is_junk(paths[rel].sha)) pending.push_back(rel);
        if (!pending.empty()) ++kills_with_pending_ingest;

        run_program("/bin/fusermount3", {"-uz", mnt.string()});
        m->stop();
        const stdfs::path logfile = dir / "mnt.log";
        std::string killed_log = log_tail(logfile, 12);
        empty_log(mnt);
        const int failures_before = failures;
        m = std::make_unique<Mount>(store, mnt);
        if (!m->ok()) {
            fail("remount", R + ": the mount did not come up again after the kill");
            break;
        }

        // Every path reads as it must.
        int cut_left_partial = 0;
        for (auto& [rel, st] : paths) {
            Read r = read_path(mnt / rel);
            if (r.err) {
                fail("read", R + ": reading " + rel + ": " + std::strerror(r.err));
                continue;
            }
            std::optional<std::string> got;
            if (r.exists) got = sha_of(r.bytes);
            if (st.maybe.empty()) {
                if (got != st.sha) {
                    // Lost, or only missing for a moment (while the new daemon stores it)?
                    std::this_thread::sleep_for(1500ms);
                    Read again = read_path(mnt / rel);
                    std::optional<std::string> later;
                    if (again.exists && !again.err) later = sha_of(again.bytes);
                    const std::string what =
                        R + ": " + rel + " reads " + what_is(got) + " (" + mib(r.bytes.size()) +
                        "), but its last completed write/rename left " + what_is(st.sha);
                    if (later == st.sha)
                        fail("wrong-for-a-moment", what + "; 1.5 s later it reads right");
                    else
                        fail("lost-or-changed",
                             what + "; 1.5 s later: " + short_sha(later) + st.trace());
                }
                continue;
            }
            if (st.maybe.count(got)) {
                st.sha = got;
            } else if (st.partial_of && got) {
                // A cut write: only bytes written there (or zeros, pages never flushed).
                const std::string& full = *st.partial_of;
                bool ok = r.bytes.size() <= full.size();
                for (std::size_t i = 0; ok && i < r.bytes.size(); ++i)
                    ok = r.bytes[i] == full[i] || r.bytes[i] == '\0';
                if (!ok)
                    fail("cut-write-garbage",
                         R + ": " + rel + " after a cut write holds " + mib(r.bytes.size()) +
                             " that are not a part of what was written (" + mib(full.size()) + ")");
                st.sha = got;
                if (!known.count(*got)) ++cut_left_partial;
            } else {
                std::string allowed;
                for (const auto& o : st.maybe) allowed += " " + short_sha(o);
                std::this_thread::sleep_for(1500ms);
                Read again = read_path(mnt / rel);
                std::optional<std::string> later;
                if (again.exists && !again.err) later = sha_of(again.bytes);
                const std::string what = R + ": " + rel + " reads " + what_is(got) +
                                         " after a cut operation; expected one of" + allowed;
                if (st.maybe.count(later)) {
                    fail("wrong-for-a-moment", what + "; 1.5 s later it reads " + short_sha(later));
                    got = later;
                } else {
                    fail("lost-or-changed",
                         what + "; 1.5 s later: " + short_sha(later) + st.trace());
                }
                st.sha = got;
            }
            st.maybe.clear();
            st.partial_of = nullptr;
        }

        // Let the new daemon store what the old one had not (files closed before the kill); a
        // partial file is allowed to stay a plain file, so it is not waited for.
        auto t0 = Clock::now();
        std::vector<std::string> waiting;
        do {
            waiting.clear();
            for (const auto& rel : overlay_models())
                if (!is_junk(paths[rel].sha)) waiting.push_back(rel);
            if (waiting.empty()) break;
            std::this_thread::sleep_for(50ms);
        } while (Clock::now() - t0 < 5s);
        std::map<std::string, std::string> read_now;  // path -> sha, as the checks above read
        for (const auto& [rel, st] : paths)
            if (st.sha) read_now[rel] = *st.sha;
        check_catalog(R, read_now);
        check_verify(R, true);

        std::printf(
            "%s: kill after %lld ms, %d ops; cut: %s; %zu closed files not stored yet at "
            "the kill%s%s\n",
            R.c_str(), static_cast<long long>(kill_after.count()), ops,
            cut.empty() ? "between operations" : cut.c_str(), pending.size(),
            cut_left_partial ? "; a partial file stays" : "",
            waiting.empty() ? "" : "; still not stored 5 s after the remount");
        if (failures > failures_before)
            std::printf("  the killed daemon's last lines:\n%s  the new daemon's:\n%s",
                        killed_log.c_str(), log_tail(logfile, 12).c_str());
        std::fflush(stdout);
        if (!m->ok() || !is_mounted(mnt)) {
            fail("daemon-died", R + ": the remounted daemon died");
            break;
        }
    }

    // The end: a clean unmount and mount; every closed model file is its model's current
    // version; removed ones are gone from the catalog; the store verifies in full.
    if (m && !watchdog.fired()) {
        int code = m->stop();
        if (code != 0) fail("unmount", "the last daemon exited with " + std::to_string(code));
        empty_log(mnt);
        m = std::make_unique<Mount>(store, mnt);
        ASSERT_TRUE(m->ok());
        std::map<std::string, std::string> current;
        std::vector<std::string> wrong;
        auto t0 = Clock::now();
        do {
            current = check_catalog("final (polling)");
            wrong.clear();
            for (const auto& rel : models) {
                const PathState& st = paths[rel];
                if (is_junk(st.sha)) continue;
                auto it = current.find(key_of(rel));
                std::optional<std::string> cat;
                if (it != current.end()) cat = it->second;
                if (cat != st.sha)
                    wrong.push_back(rel + ": catalog " + short_sha(cat) + ", written " +
                                    short_sha(st.sha));
            }
            if (wrong.empty()) break;
            std::this_thread::sleep_for(200ms);
        } while (Clock::now() - t0 < 10s);
        for (const auto& w : wrong) fail("not-stored", "final: " + w);
        for (const auto& [rel, st] : paths) {
            Read r = read_path(mnt / rel);
            std::optional<std::string> got;
            if (r.exists) got = sha_of(r.bytes);
            if (got != st.sha)
                fail("lost-or-changed", "final: " + rel + " reads " + short_sha(got) +
                                            ", expected " + short_sha(st.sha));
        }
        check_verify("final", false);
        m->stop();
        if (failures)
            std::printf("the last daemon's log:\n%s", log_tail(dir / "mnt.log", 20).c_str());
        empty_log(mnt);
    }
    std::printf(
        "crash campaign (mount): %d rounds, %d operations, %d writes and %d renames cut, "
        "%d kills with closed files not stored yet, %.1f s, seed %llu\n",
        rounds_run, ops_total, cut_writes, cut_renames, kills_with_pending_ingest,
        seconds_since(t_start), static_cast<unsigned long long>(seed()));
    report_failures();
    EXPECT_GT(cut_writes, 0) << "no kill landed in a write: the campaign proved little";
    EXPECT_GT(kills_with_pending_ingest, 0)
        << "no kill landed before a closed file was stored: the campaign proved little";
}

// ---------------------------------------------------------------------------------------------
// `modelfs import` and `import --move` killed, with a mount of the store up.

TEST_F(CrashCampaign, ImportKilledWhileMounted) {
    const auto t_start = Clock::now();
    const int rounds = static_cast<int>(env_u64("MODELFS_CRASH_IMPORT_ROUNDS", 15));
    Mount m(store, mnt);
    ASSERT_TRUE(m.ok());
    Watchdog watchdog(mnt, std::chrono::seconds(env_u64("MODELFS_CRASH_WATCHDOG", 420)));

    // A folder like a tool's: five LoRAs (2-12 MiB), one a duplicate of an earlier round's.
    std::string previous;  // bytes of a LoRA from the round before
    auto make_source = [&](const stdfs::path& root, int round) {
        std::map<stdfs::path, std::string> files;  // path -> sha
        for (int i = 0; i < 5; ++i) {
            stdfs::path p = root / "loras" / "imp" / ("i" + std::to_string(i) + ".safetensors");
            std::string bytes = (i == 4 && !previous.empty())
                                    ? previous
                                    : make_model(false, pick(2 << 20, 12 << 20),
                                                 "imported in round " + std::to_string(round));
            stdfs::create_directories(p.parent_path());
            write_file(p, bytes);
            files[p] = sha_of(bytes);
            if (i == 0) previous = bytes;
        }
        return files;
    };

    // How long a whole import takes here, so that kills land anywhere in one.
    auto t0 = Clock::now();
    auto calib = make_source(dir / "calibrate", -1);
    CliResult r = run_modelfs({"--store", store.string(), "import", (dir / "calibrate").string()});
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    const auto full = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0);

    int interrupted = 0;
    double window_ms = static_cast<double>(full.count());
    for (int round = 0; round < rounds && !watchdog.fired(); ++round) {
        const std::string R = "import round " + std::to_string(round);
        SCOPED_TRACE(R);
        const bool move = round % 2 == 1;
        stdfs::path src = dir / ("import" + std::to_string(round));
        auto files = make_source(src, round);
        // A random moment of a window that adapts to how long imports take now: narrower after
        // an import that finished before the kill, wider after a kill that found nothing begun.
        const auto kill_after = std::chrono::milliseconds(
            pick(0, 1000) * static_cast<std::uint64_t>(window_ms) / 1000 + 1);
        std::vector<std::string> args{"--store", store.string(), "import", "--jobs",
                                      "2",       src.string()};
        if (move) args.push_back("--move");
        pid_t pid = spawn_modelfs(args);
        std::this_thread::sleep_for(kill_after);
        ::kill(pid, SIGKILL);
        int sig = 0;
        int code = wait_child(pid, &sig);
        int staged = 0;  // files the killed import was writing into the store
        {
            std::error_code ec;
            for (auto it = stdfs::directory_iterator(store / "staging", ec);
                 !ec && it != stdfs::directory_iterator(); it.increment(ec))
                staged += it->is_regular_file(ec) && stdfs::file_size(it->path(), ec) > 0;
        }

        // verify opens the store for writing, which replays interrupted moves.
        check_verify(R, true);
        // The user's files: untouched (copy); at the origin, or in the store (move).
        std::map<std::string, std::string> stored;  // source path -> sha
        int rc = -1;
        json ls = cli_json(store, {"ls"}, &rc);
        for (const auto& model : ls) {
            if (model.value("model", "").rfind("lora/imp/", 0) != 0) continue;
            json show = cli_json(store, {"show", model["model"]});
            for (const auto& v : show["versions"])
                if (v.contains("sha256") && v.contains("source")) stored[v["source"]] = v["sha256"];
        }
        int at_origin = 0, in_store = 0;
        for (const auto& [p, sha] : files) {
            auto st = stored.find(p.string());
            in_store += st != stored.end() && st->second == sha;
            if (stdfs::exists(p)) {
                ++at_origin;
                if (sha256_hex_of_file(p) != sha)
                    fail("import-user-file-changed", R + ": " + p.string() + " changed");
                continue;
            }
            if (!move) {
                fail("import-user-file-lost",
                     R + ": " + p.string() + " is gone after a copy import");
                continue;
            }
            auto it = stored.find(p.string());
            if (it == stored.end() || it->second != sha) {
                fail("import-user-file-lost",
                     R + ": " + p.string() + " was moved but is not in the store");
                continue;
            }
            stdfs::path blob = store / "blobs" / "sha256" / sha.substr(0, 2) / sha;
            if (!stdfs::exists(blob) || sha256_hex_of_file(blob) != sha)
                fail("import-user-file-lost",
                     R + ": the blob of moved " + p.string() + " is wrong");
        }
        const int n = static_cast<int>(files.size());
        const bool mid_way =
            code == -1 && (staged > 0 || (in_store > 0 && in_store < n) || (move && at_origin < n));
        interrupted += mid_way;
        if (code != -1)
            window_ms = std::max(5.0, window_ms * 0.7);
        else if (!mid_way && in_store == 0)
            window_ms = std::min(4.0 * static_cast<double>(full.count()), window_ms * 1.3);
        auto current = check_catalog(R);
        // The mount shows what was catalogued (live, within a second).
        for (const auto& [key, sha] : current) {
            if (key.rfind("lora/imp/", 0) != 0) continue;
            stdfs::path p = mnt / "comfyui" / "loras" / key.substr(5);
            std::optional<std::string> got;
            auto until = Clock::now() + 3s;
            do {
                Read rd = read_path(p);
                got = rd.exists && !rd.err ? std::optional(sha_of(rd.bytes)) : std::nullopt;
                if (got == sha) break;
                std::this_thread::sleep_for(50ms);
            } while (Clock::now() < until);
            if (got != sha)
                fail("import-not-in-mount", R + ": " + key + " is catalogued as " +
                                                sha.substr(0, 12) + " but " + p.string() +
                                                " reads " + short_sha(got));
        }
        std::printf(
            "%s: %s, killed after %lld ms (a whole import took %lld ms)%s, %d of %zu "
            "files at their origin, %d in the store, %d staged%s\n",
            R.c_str(), move ? "import --move" : "import",
            static_cast<long long>(kill_after.count()), static_cast<long long>(full.count()),
            code == -1 ? ""
                       : (" (it had finished, exit code " + std::to_string(code) + ")").c_str(),
            at_origin, files.size(), in_store, staged, mid_way ? ": cut mid-way" : "");
        std::fflush(stdout);
        if (!m.ok() || !is_mounted(mnt)) {
            fail("daemon-died", R + ": the mount daemon died");
            break;
        }
    }
    check_verify("import final", false);
    if (m.stop() != 0) fail("unmount", "the mount daemon did not exit cleanly");
    if (failures) std::printf("the daemon's log:\n%s", log_tail(dir / "mnt.log", 20).c_str());
    empty_log(mnt);
    std::printf("crash campaign (import): %d rounds, %d interrupted mid-way, %.1f s, seed %llu\n",
                rounds, interrupted, seconds_since(t_start),
                static_cast<unsigned long long>(seed()));
    report_failures();
    EXPECT_GT(interrupted, 0) << "no kill landed mid-import: the test proved nothing";
}

}  // namespace
