// Hashing of the files adopt moves, with the resumable cache STORE/adopt/hashes.jsonl (format in
// store/FORMAT.md). Files are read by `jobs` threads, largest first so the last thread to finish
// is not the one that drew the biggest file at the end.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>
#include <set>
#include <thread>

#include <nlohmann/json.hpp>

#include "modelfs/adopt/adopt.h"
#include "modelfs/layouts/view_layout.h"
#include "modelfs/store/errors.h"
#include "modelfs/store/unique_fd.h"
#include "util.h"

namespace stdfs = std::filesystem;
using nlohmann::json;

namespace modelfs::adopt {

using detail::ns_of;

stdfs::path adopt_dir(const stdfs::path& store_root) {
    return store_root / "adopt";
}

namespace {

struct CacheEntry {
    HashedFile h;
};

std::map<stdfs::path, HashedFile> load_cache(const stdfs::path& file) {
    std::map<stdfs::path, HashedFile> out;
    std::ifstream in(file);
    std::string line;
    while (std::getline(in, line)) {
        // A torn last line (crash mid-write) or anything else malformed is skipped.
        json j = json::parse(line, nullptr, false);
        if (!j.is_object()) continue;
        try {
            HashedFile h;
            auto sha = Sha256::from_hex(j.at("sha256").get<std::string>());
            auto xxh = Xxh128::from_hex(j.at("xxh128").get<std::string>());
            if (!sha || !xxh) continue;
            h.digests.sha256 = *sha;
            h.digests.xxh128 = *xxh;
            h.size = h.digests.size = j.at("size").get<std::uint64_t>();
            h.dev = j.at("dev").get<std::uint64_t>();
            h.ino = j.at("ino").get<std::uint64_t>();
            h.mtime_ns = j.at("mtime_ns").get<std::int64_t>();
            h.ctime_ns = j.at("ctime_ns").get<std::int64_t>();
            out[stdfs::path(j.at("path").get<std::string>())] = h;
        } catch (const json::exception&) {
        }
    }
    return out;
}

bool stat_matches(const HashedFile& h, const struct stat& st) {
    return h.dev == st.st_dev && h.ino == st.st_ino &&
           h.size == static_cast<std::uint64_t>(st.st_size) && h.mtime_ns == ns_of(st.st_mtim) &&
           h.ctime_ns == ns_of(st.st_ctim);
}

class CacheWriter {
  public:
    explicit CacheWriter(const stdfs::path& file) : name_(file.string()) {
        fd_.reset(::open(file.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
        if (!fd_) throw_errno("opening the hash cache " + name_, errno);
        // A crash may have torn the last line: end it, so the next line is whole.
        struct stat st;
        if (::fstat(fd_.get(), &st) == 0 && st.st_size > 0) {
            char last = '\n';
            if (::pread(fd_.get(), &last, 1, st.st_size - 1) == 1 && last != '\n' &&
                ::write(fd_.get(), "\n", 1) != 1)
                throw_errno("appending to " + name_, errno);
        }
        last_sync_ = std::chrono::steady_clock::now();
    }
    ~CacheWriter() {
        if (fd_) ::fdatasync(fd_.get());
    }
    // Returns how many lines this writer has appended.
    std::size_t append(const stdfs::path& real, const HashedFile& h) {
        json j = {{"path", real.string()},
                  {"dev", static_cast<std::uint64_t>(h.dev)},
                  {"ino", static_cast<std::uint64_t>(h.ino)},
                  {"size", h.size},
                  {"mtime_ns", h.mtime_ns},
                  {"ctime_ns", h.ctime_ns},
                  {"sha256", h.digests.sha256.hex()},
                  {"xxh128", h.digests.xxh128.hex()}};
        // A name that is not UTF-8 is stored mangled: it never matches, so it is only hashed again.
        std::string line = j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
        std::lock_guard<std::mutex> lk(mu_);
        // One write per line on O_APPEND: lines never interleave; a crash tears only the last.
        ssize_t w = ::write(fd_.get(), line.data(), line.size());
        if (w != static_cast<ssize_t>(line.size())) throw_errno("appending to " + name_, errno);
        auto now = std::chrono::steady_clock::now();
        if (now - last_sync_ > std::chrono::seconds(2)) {
            ::fdatasync(fd_.get());
            last_sync_ = now;
        }
        return ++lines_;
    }
    void sync() {
        std::lock_guard<std::mutex> lk(mu_);
        ::fdatasync(fd_.get());
    }

  private:
    std::string name_;
    UniqueFd fd_;
    std::mutex mu_;
    std::size_t lines_ = 0;
    std::chrono::steady_clock::time_point last_sync_;
};

// Hashes one file, again when its stat moved while it was read (up to three reads).
std::optional<HashedFile> hash_one(const stdfs::path& real, Progress* progress,
                                   HashReport::Failure& why) {
    for (int attempt = 0; attempt < 3; ++attempt) {
        UniqueFd fd = detail::open_real(real);
        if (!fd) {
            why.why = "cannot open " + real.string() + ": " + std::strerror(errno);
            return std::nullopt;
        }
        struct stat before, after;
        if (::fstat(fd.get(), &before) != 0) {
            why.why = "cannot stat " + real.string() + ": " + std::strerror(errno);
            return std::nullopt;
        }
        HashedFile h;
        try {
            h.digests = digest_fd(fd.get(), progress, real.c_str());
        } catch (const StoreError& e) {
            why.why = e.what();
            return std::nullopt;
        }
        ::fstat(fd.get(), &after);
        if (stat_matches(HashedFile{{},
                                    static_cast<std::uint64_t>(before.st_size),
                                    ns_of(before.st_mtim),
                                    ns_of(before.st_ctim),
                                    before.st_dev,
                                    before.st_ino},
                         after) &&
            h.digests.size == static_cast<std::uint64_t>(after.st_size)) {
            h.size = h.digests.size;
            h.mtime_ns = ns_of(after.st_mtim);
            h.ctime_ns = ns_of(after.st_ctim);
            h.dev = after.st_dev;
            h.ino = after.st_ino;
            return h;
        }
    }
    why = {"changing while adopting (read 3 times, it changed each time), left in place", true};
    return std::nullopt;
}

}  // namespace

unsigned default_readers() {
    // Disks answer faster with more reads in flight than there are cores to hash: cold reads of
    // a 4 GB tree on this project's virtual disk took 3.1 s with 2 readers and 2.1 s with 4, and
    // SHA-256 (SHA-NI, about 1.6 GB/s per core) keeps up with that on 2 cores. Spinning disks
    // are not detected (virtual disks often claim to spin): `--jobs 1` is for them.
    return std::max(4u, 2 * std::max(1u, std::thread::hardware_concurrency()));
}

HashReport hash_scans(const stdfs::path& store_root, const std::vector<InstallScan>& scans,
                      const HashOptions& opts) {
    stdfs::create_directories(adopt_dir(store_root));
    const stdfs::path cache_file = adopt_dir(store_root) / "hashes.jsonl";
    auto cache = load_cache(cache_file);

    HashReport rep;
    struct Job {
        stdfs::path real;
        std::uint64_t size;
    };
    std::vector<Job> jobs;
    std::set<stdfs::path> seen;
    for (const auto& s : scans) {
        const auto layout = layouts::ViewLayout::builtin(s.install.tool);
        for (const auto& f : s.files) {
            // Plain files the mount would take for models are planned as models (plan.cpp).
            const bool model_like = f.kind == ScannedFile::Kind::plain && layout &&
                                    detail::is_under(f.path, s.install.models_dir) && [&] {
                                        auto vp = layout->classify(f.view_rel);
                                        return vp && !vp->ext.empty();
                                    }();
            if (f.kind != ScannedFile::Kind::model && f.kind != ScannedFile::Kind::sidecar &&
                !model_like)
                continue;
            if (!seen.insert(f.real).second) continue;
            struct stat st;
            if (::stat(f.real.c_str(), &st) != 0) {
                rep.failed[f.real] = {"cannot stat " + f.real.string() + ": " +
                                      std::strerror(errno)};
                continue;
            }
            auto it = cache.find(f.real);
            if (it != cache.end() && stat_matches(it->second, st)) {
                rep.files[f.real] = it->second;
                ++rep.cached;
                continue;
            }
            jobs.push_back({f.real, static_cast<std::uint64_t>(st.st_size)});
        }
    }
    std::sort(jobs.begin(), jobs.end(), [](const Job& a, const Job& b) { return a.size > b.size; });
    if (opts.progress) {
        std::uint64_t total = 0;
        for (const auto& j : jobs) total += j.size;
        opts.progress->total_bytes += total;
        opts.progress->total_items += jobs.size();
    }
    if (jobs.empty()) return rep;

    std::size_t kill_after = 0;
    if (const char* k = std::getenv("MODELFS_ADOPT_TEST_KILL_AFTER")) kill_after = std::atoi(k);

    CacheWriter writer(cache_file);
    std::mutex mu;
    std::atomic<std::size_t> next{0};
    std::exception_ptr error;
    unsigned n = opts.jobs ? opts.jobs : default_readers();
    n = std::min<unsigned>(n, static_cast<unsigned>(jobs.size()));
    auto worker = [&] {
        try {
            for (std::size_t i; (i = next++) < jobs.size();) {
                HashReport::Failure why;
                auto h = hash_one(jobs[i].real, opts.progress, why);
                if (opts.progress) ++opts.progress->done_items;
                if (!h) {
                    std::lock_guard<std::mutex> lk(mu);
                    rep.failed[jobs[i].real] = why;
                    continue;
                }
                std::size_t lines = writer.append(jobs[i].real, *h);
                {
                    std::lock_guard<std::mutex> lk(mu);
                    rep.files[jobs[i].real] = *h;
                    ++rep.hashed;
                    rep.hashed_bytes += h->size;
                }
                if (kill_after && lines >= kill_after) {
                    writer.sync();
                    ::raise(SIGKILL);
                }
            }
        } catch (...) {
            std::lock_guard<std::mutex> lk(mu);
            if (!error) error = std::current_exception();
            next = jobs.size();
        }
    };
    std::vector<std::thread> threads;
    for (unsigned t = 1; t < n; ++t) threads.emplace_back(worker);
    worker();
    for (auto& t : threads) t.join();
    writer.sync();
    if (error) std::rethrow_exception(error);
    return rep;
}

}  // namespace modelfs::adopt
