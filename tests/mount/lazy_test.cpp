// Remote models through real mounts, against real HTTP servers on 127.0.0.1: catalogued before
// any download, fetched on first open (verified, once, however many open it at once), streamed
// when the source allows it, and failures that give EIO without harming the mount or the store.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <barrier>
#include <chrono>
#include <cstring>
#include <thread>

#include "modelfs/store/hash.h"
#include "modelfs/store/store.h"
#include "modelfs/store/unique_fd.h"
#include "support/http_servers.h"
#include "support/mount_fixture.h"
#include "support/safetensors_writer.h"
#include "support/test_env.h"

namespace stdfs = std::filesystem;
using namespace modelfs::testing;
using modelfs::test::Fault;
using modelfs::test::FaultServer;
using modelfs::test::LoggedRequest;
using modelfs::test::NginxServer;
using namespace std::chrono_literals;

namespace {

// SHA-256 hex of everything `fd` reads from offset 0 (pread: the descriptor's offset stays).
std::string sha256_of_fd(int fd) {
    modelfs::Sha256Hasher h;
    std::vector<char> buf(1 << 16);
    off_t off = 0;
    for (;;) {
        ssize_t n = ::pread(fd, buf.data(), buf.size(), off);
        if (n < 0) return std::string("<") + std::strerror(errno) + ">";
        if (n == 0) break;
        h.update(buf.data(), static_cast<std::size_t>(n));
        off += n;
    }
    return h.finish().hex();
}

// What reading a whole file through the mount gives: its SHA-256, or "<error>".
std::string read_through(const stdfs::path& p) {
    modelfs::UniqueFd fd(::open(p.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) return std::string("<open: ") + std::strerror(errno) + ">";
    return sha256_of_fd(fd.get());
}

std::vector<LoggedRequest> gets(const std::vector<LoggedRequest>& all, const std::string& path) {
    std::vector<LoggedRequest> out;
    for (const auto& r : all)
        if (r.method == "GET" && r.path == path) out.push_back(r);
    return out;
}

// The GETs of `path` asked for every byte of a `size`-byte file exactly once: one download,
// however the downloader split it into ranges.
::testing::AssertionResult one_download(const std::vector<LoggedRequest>& all,
                                        const std::string& path, std::uint64_t size) {
    std::vector<std::pair<std::uint64_t, std::uint64_t>> ranges;  // [first, last]
    std::string seen;
    for (const auto& r : gets(all, path)) {
        seen += " [" + r.range + "]";
        if (r.range.empty()) {
            ranges.emplace_back(0, size - 1);
            continue;
        }
        unsigned long long a = 0, b = 0;
        if (std::sscanf(r.range.c_str(), "bytes=%llu-%llu", &a, &b) != 2)
            return ::testing::AssertionFailure() << "unexpected range " << r.range;
        ranges.emplace_back(a, std::min<std::uint64_t>(b, size - 1));
    }
    std::sort(ranges.begin(), ranges.end());
    std::uint64_t next = 0;
    for (auto [a, b] : ranges) {
        if (a != next)
            return ::testing::AssertionFailure()
                   << "GET ranges of " << path << " overlap or leave a gap at " << next << ":"
                   << seen;
        next = b + 1;
    }
    if (next != size)
        return ::testing::AssertionFailure()
               << "GETs of " << path << " end at " << next << " of " << size << ":" << seen;
    return ::testing::AssertionSuccess() << ranges.size() << " request(s)";
}

class LazyMountTest : public StoreMountTest {
  protected:
    LazyMountTest() : StoreMountTest("modelfs-lazy") {}
    stdfs::path served = dir / "served";  // what the servers serve
    stdfs::path local = dir / "local";
    std::string base_sha;

    void SetUp() override {
        StoreMountTest::SetUp();
        if (IsSkipped() || HasFatalFailure()) return;
        stdfs::create_directories(served);
        stdfs::create_directories(local / "checkpoints");
        write_safetensors(local / "checkpoints" / "base.safetensors", sd15_checkpoint(1));
        base_sha = sha256_hex_of_file(local / "checkpoints" / "base.safetensors");
        import_folder(local);
    }

    // A LoRA of about `bytes` bytes in the served folder; returns its SHA-256.
    std::string serve(const std::string& file, std::uint64_t seed, std::uint64_t bytes) {
        SafetensorsSpec spec = kohya_lora(seed);
        grow_to(spec, bytes);
        write_safetensors(served / file, spec);
        return sha256_hex_of_file(served / file);
    }

    // Registers lora/NAME as a remote model whose one file is `file` of the served folder at
    // `url`. `known_hash` false: the hash is not given (a placeholder record).
    modelfs::Sha256 add_remote(const std::string& name, const std::string& file,
                               const std::string& url, bool stream = false,
                               bool known_hash = true) {
        modelfs::Store s = modelfs::Store::open(store);
        modelfs::RemoteModel m;
        m.category = modelfs::Category::lora;
        m.name = name;
        m.ext = ".safetensors";
        modelfs::RemoteFile f;
        f.size = stdfs::file_size(served / file);
        if (known_hash) f.sha256 = modelfs::Sha256::from_hex(sha256_hex_of_file(served / file));
        f.sources.push_back(modelfs::BlobSource{url, stream});
        m.files.push_back(f);
        modelfs::RemoteAddResult r = s.add_remote(m);
        EXPECT_EQ(r.remote, 1u);
        return r.blobs.at(0);
    }

    stdfs::path blob_path(const std::string& sha) const {
        return store / "blobs" / "sha256" / sha.substr(0, 2) / sha;
    }
    std::optional<modelfs::BlobRecord> record(const modelfs::Sha256& key) {
        modelfs::Store s = modelfs::Store::open(store);
        return s.catalog().read().get_blob(key);
    }
    std::size_t files_under(const stdfs::path& p) const {
        std::size_t n = 0;
        if (stdfs::exists(p))
            for (auto& e : stdfs::recursive_directory_iterator(p)) n += e.is_regular_file();
        return n;
    }
    // The mount still answers: listing, a stored model's bytes.
    void expect_healthy() {
        EXPECT_TRUE(stdfs::exists(mnt / "comfyui" / "loras"));
        EXPECT_EQ(read_through(mnt / "comfyui" / "checkpoints" / "base.safetensors"), base_sha);
    }
};

TEST_F(LazyMountTest, RemoteModelShowsInEveryViewBeforeAnyDownload) {
    NginxServer http(served);
    std::string sha = serve("far.safetensors", 10, 1 << 20);
    add_remote("far", "far.safetensors", http.url("far.safetensors"));
    Mount m(store, mnt);
    ASSERT_TRUE(m.ok());
    const auto size = stdfs::file_size(served / "far.safetensors");
    for (const char* p : {"comfyui/loras/far.safetensors", "a1111/Lora/far.safetensors"}) {
        struct stat st;
        ASSERT_EQ(::stat((mnt / p).c_str(), &st), 0) << p;
        EXPECT_TRUE(S_ISREG(st.st_mode)) << p;
        EXPECT_EQ(static_cast<std::uint64_t>(st.st_size), size) << p;
    }
    // Listing and stat download nothing; by-hash/ lists only what is here.
    std::size_t listed = 0;
    for (auto& e : stdfs::directory_iterator(mnt / "comfyui" / "loras"))
        listed += e.path().filename() == "far.safetensors";
    EXPECT_EQ(listed, 1u);
    EXPECT_FALSE(stdfs::exists(mnt / "by-hash" / "sha256" / sha));
    EXPECT_EQ(http.requests_for("far.safetensors"), 0u);
    EXPECT_FALSE(stdfs::exists(blob_path(sha)));
    char buf[128];
    EXPECT_EQ(::getxattr((mnt / "comfyui/loras/far.safetensors").c_str(), "user.modelfs.sha256",
                         buf, sizeof buf),
              64);
}

TEST_F(LazyMountTest, FirstOpenDownloadsLaterOpensAreLocal) {
    NginxServer http(served);
    std::string sha = serve("far.safetensors", 11, 2 << 20);
    modelfs::Sha256 key = add_remote("far", "far.safetensors", http.url("far.safetensors"));
    Mount m(store, mnt);
    ASSERT_TRUE(m.ok());
    stdfs::path comfy = mnt / "comfyui" / "loras" / "far.safetensors";
    struct stat before;
    ASSERT_EQ(::stat(comfy.c_str(), &before), 0);

    EXPECT_EQ(read_through(comfy), sha);
    EXPECT_TRUE(one_download(http.requests(), "/far.safetensors",
                             stdfs::file_size(served / "far.safetensors")));
    EXPECT_TRUE(stdfs::exists(blob_path(sha)));
    auto rec = record(key);
    ASSERT_TRUE(rec);
    EXPECT_EQ(rec->state, modelfs::BlobState::present);
    const std::size_t requests = http.requests_for("far.safetensors");

    // Later opens, in any view, are local: no request reaches the server.
    EXPECT_EQ(read_through(comfy), sha);
    EXPECT_EQ(read_through(mnt / "a1111" / "Lora" / "far.safetensors"), sha);
    ASSERT_TRUE(eventually([&] { return stdfs::exists(mnt / "by-hash" / "sha256" / sha); }));
    EXPECT_EQ(read_through(mnt / "by-hash" / "sha256" / sha), sha);
    EXPECT_EQ(http.requests_for("far.safetensors"), requests);
    // Same content, same inode: the kernel's cached attributes stay right.
    struct stat after;
    ASSERT_EQ(::stat(comfy.c_str(), &after), 0);
    EXPECT_EQ(after.st_ino, before.st_ino);
    EXPECT_EQ(after.st_size, before.st_size);

    // The open is recorded for the cache quota (in the background, batched).
    EXPECT_TRUE(eventually(
        [&] {
            auto r = record(key);
            return r && r->accessed > 0;
        },
        15000ms));
    expect_healthy();
}

TEST_F(LazyMountTest, SixteenReadersShareOneDownload) {
    FaultServer http(served);
    std::string sha = serve("shared.safetensors", 12, 2 << 20);
    const auto size = stdfs::file_size(served / "shared.safetensors");
    // Slow enough that every reader opens while the download runs.
    http.set_faults("shared.safetensors", std::vector<Fault>(4, Fault::throttle(2 << 20)));
    add_remote("shared", "shared.safetensors", http.url("shared.safetensors"));
    Mount m(store, mnt);
    ASSERT_TRUE(m.ok());

    constexpr int kReaders = 16;
    std::vector<std::string> got(kReaders);
    std::barrier start(kReaders);
    std::vector<std::thread> readers;
    for (int i = 0; i < kReaders; ++i)
        readers.emplace_back([&, i] {
            // Half through ComfyUI's name, half through A1111's: one blob either way.
            stdfs::path p = i % 2 ? mnt / "comfyui" / "loras" / "shared.safetensors"
                                  : mnt / "a1111" / "Lora" / "shared.safetensors";
            start.arrive_and_wait();
            got[i] = read_through(p);
        });
    for (auto& t : readers) t.join();
    for (int i = 0; i < kReaders; ++i) EXPECT_EQ(got[i], sha) << "reader " << i;
    EXPECT_TRUE(one_download(http.requests(), "/shared.safetensors", size));
}

TEST_F(LazyMountTest, SlowDownloadDoesNotHoldUpTheMount) {
    FaultServer http(served);
    std::string sha = serve("slow.safetensors", 13, 1 << 20);
    // About four seconds for the whole file.
    http.set_faults("slow.safetensors", std::vector<Fault>(4, Fault::throttle(256 << 10)));
    add_remote("slow", "slow.safetensors", http.url("slow.safetensors"));
    Mount m(store, mnt);
    ASSERT_TRUE(m.ok());

    // More openers than the daemon has request threads: a daemon that held a thread per
    // waiting open would have none left for anything else.
    constexpr int kOpeners = 20;
    std::atomic<int> opened{0};
    std::vector<std::string> got(kOpeners);
    std::vector<std::thread> openers;
    for (int i = 0; i < kOpeners; ++i)
        openers.emplace_back([&, i] {
            stdfs::path p = mnt / "comfyui" / "loras" / "slow.safetensors";
            modelfs::UniqueFd fd(::open(p.c_str(), O_RDONLY | O_CLOEXEC));
            ++opened;
            got[i] = fd ? sha256_of_fd(fd.get()) : std::string("<open failed>");
        });
    ASSERT_TRUE(eventually([&] { return http.requests_for("slow.safetensors") > 0; }));
    std::this_thread::sleep_for(300ms);  // the other openers reach the daemon

    // Meanwhile the mount answers everything else.
    std::size_t entries = 0;
    for (auto& e : stdfs::directory_iterator(mnt / "comfyui" / "loras"))
        entries += !e.path().empty();
    EXPECT_GE(entries, 1u);
    struct stat st;
    EXPECT_EQ(::stat((mnt / "a1111" / "Stable-diffusion" / "base.safetensors").c_str(), &st), 0);
    EXPECT_EQ(::stat((mnt / "comfyui" / "loras" / "slow.safetensors").c_str(), &st), 0);
    EXPECT_EQ(read_through(mnt / "comfyui" / "checkpoints" / "base.safetensors"), base_sha);
    EXPECT_EQ(opened.load(), 0) << "the download ended before the other requests were answered; "
                                   "the test proves nothing";
    EXPECT_FALSE(stdfs::exists(blob_path(sha)));

    for (auto& t : openers) t.join();
    for (int i = 0; i < kOpeners; ++i) EXPECT_EQ(got[i], sha) << "opener " << i;
}

TEST_F(LazyMountTest, MissingSourceGivesEioAndRecordsTheError) {
    NginxServer http(served);
    std::string sha = serve("gone.safetensors", 14, 256 << 10);
    modelfs::Sha256 key = add_remote("gone", "gone.safetensors", http.url("gone.safetensors"));
    stdfs::remove(served / "gone.safetensors");  // the server answers 404
    Mount m(store, mnt);
    ASSERT_TRUE(m.ok());
    stdfs::path p = mnt / "comfyui" / "loras" / "gone.safetensors";
    errno = 0;
    EXPECT_LT(::open(p.c_str(), O_RDONLY | O_CLOEXEC), 0);
    EXPECT_EQ(errno, EIO);
    EXPECT_GE(http.requests_for("gone.safetensors"), 1u);
    EXPECT_FALSE(stdfs::exists(blob_path(sha)));
    EXPECT_EQ(files_under(store / "blobs"), 1u);  // base.safetensors alone
    ASSERT_TRUE(eventually([&] {
        auto r = record(key);
        return r && !r->fetch_error.empty();
    }));
    auto r = record(key);
    EXPECT_NE(r->state, modelfs::BlobState::present);
    EXPECT_NE(r->fetch_error.find("404"), std::string::npos) << r->fetch_error;
    // Still catalogued, still listed, and the mount works on.
    EXPECT_TRUE(stdfs::exists(p));
    expect_healthy();
}

TEST_F(LazyMountTest, ServerErrorsGiveEioAfterTheConfiguredRetries) {
    FaultServer http(served);
    std::string sha = serve("down.safetensors", 23, 256 << 10);
    http.set_faults("down.safetensors", std::vector<Fault>(10, Fault::http(500)));
    modelfs::Sha256 key = add_remote("down", "down.safetensors", http.url("down.safetensors"));
    // The mount takes the downloader's settings from the config file.
    write_text_file(dir / "config.toml", "[fetch]\nretries = 1\n");
    Mount m(store, mnt, {"--config", (dir / "config.toml").string()});
    ASSERT_TRUE(m.ok());
    errno = 0;
    EXPECT_LT(::open((mnt / "comfyui/loras/down.safetensors").c_str(), O_RDONLY | O_CLOEXEC), 0);
    EXPECT_EQ(errno, EIO);
    EXPECT_EQ(http.requests_for("down.safetensors"), 2u);  // the request and its one retry
    EXPECT_FALSE(stdfs::exists(blob_path(sha)));
    ASSERT_TRUE(eventually([&] {
        auto r = record(key);
        return r && !r->fetch_error.empty();
    }));
    EXPECT_NE(record(key)->fetch_error.find("500"), std::string::npos) << record(key)->fetch_error;
    expect_healthy();
}

TEST_F(LazyMountTest, WrongBytesAreNeverServedOrStored) {
    FaultServer http(served);
    std::string sha = serve("bad.safetensors", 15, 512 << 10);
    http.set_faults("bad.safetensors", std::vector<Fault>(16, Fault::corrupt()));
    modelfs::Sha256 key = add_remote("bad", "bad.safetensors", http.url("bad.safetensors"));
    Mount m(store, mnt);
    ASSERT_TRUE(m.ok());
    stdfs::path p = mnt / "comfyui" / "loras" / "bad.safetensors";
    errno = 0;
    EXPECT_LT(::open(p.c_str(), O_RDONLY | O_CLOEXEC), 0);
    EXPECT_EQ(errno, EIO);
    EXPECT_FALSE(stdfs::exists(blob_path(sha)));
    EXPECT_EQ(files_under(store / "blobs"), 1u);
    ASSERT_TRUE(eventually([&] {
        auto r = record(key);
        return r && !r->fetch_error.empty();
    }));
    EXPECT_NE(record(key)->state, modelfs::BlobState::present);
    expect_healthy();
}

TEST_F(LazyMountTest, StreamingSourceServesArrivedBytesFirst) {
    FaultServer http(served);
    std::string sha = serve("stream.safetensors", 16, 2 << 20);
    const std::string want = read_file(served / "stream.safetensors");
    // About four seconds for the whole file.
    http.set_faults("stream.safetensors", std::vector<Fault>(8, Fault::throttle(512 << 10)));
    add_remote("stream", "stream.safetensors", http.url("stream.safetensors"), /*stream=*/true);
    Mount m(store, mnt);
    ASSERT_TRUE(m.ok());
    stdfs::path p = mnt / "comfyui" / "loras" / "stream.safetensors";

    modelfs::UniqueFd fd(::open(p.c_str(), O_RDONLY | O_CLOEXEC));
    ASSERT_TRUE(fd) << std::strerror(errno);
    // The header is there long before the rest: read it while the download still runs.
    std::string head(4096, '\0');
    ASSERT_EQ(::pread(fd.get(), head.data(), head.size(), 0), 4096) << std::strerror(errno);
    EXPECT_EQ(head, want.substr(0, 4096));
    EXPECT_FALSE(stdfs::exists(blob_path(sha))) << "the download ended before the first read "
                                                   "returned; the test proves nothing";
    EXPECT_EQ(sha256_of_fd(fd.get()), sha);
    EXPECT_TRUE(one_download(http.requests(), "/stream.safetensors", want.size()));
    ASSERT_TRUE(eventually([&] { return stdfs::exists(blob_path(sha)); }));
    fd.reset();
    const std::size_t requests = http.requests_for("stream.safetensors");
    EXPECT_EQ(read_through(p), sha);
    EXPECT_EQ(http.requests_for("stream.safetensors"), requests);
}

TEST_F(LazyMountTest, FailedStreamTurnsEveryReadIntoEio) {
    FaultServer http(served);
    std::string sha = serve("cut.safetensors", 17, 1 << 20);
    const std::string want = read_file(served / "cut.safetensors");
    // 256 KiB arrive, then the connection drops and the server never serves the file again.
    std::vector<Fault> faults{Fault::drop(256 << 10)};
    for (int i = 0; i < 30; ++i) faults.push_back(Fault::http(404));
    http.set_faults("cut.safetensors", faults);
    modelfs::Sha256 key =
        add_remote("cut", "cut.safetensors", http.url("cut.safetensors"), /*stream=*/true);
    Mount m(store, mnt);
    ASSERT_TRUE(m.ok());
    stdfs::path p = mnt / "comfyui" / "loras" / "cut.safetensors";

    modelfs::UniqueFd fd(::open(p.c_str(), O_RDONLY | O_CLOEXEC));
    ASSERT_TRUE(fd) << std::strerror(errno);
    std::string head(4096, '\0');
    ASSERT_EQ(::pread(fd.get(), head.data(), head.size(), 0), 4096) << std::strerror(errno);
    EXPECT_EQ(head, want.substr(0, 4096));
    // Past what arrived: EIO once the download gave up.
    std::string tail(4096, '\0');
    errno = 0;
    EXPECT_LT(::pread(fd.get(), tail.data(), tail.size(), 768 << 10), 0);
    EXPECT_EQ(errno, EIO);
    ASSERT_TRUE(eventually([&] {
        auto r = record(key);
        return r && !r->fetch_error.empty();
    }));
    // And the bytes served before are no longer served, even from the kernel's cache.
    EXPECT_TRUE(eventually([&] {
        errno = 0;
        return ::pread(fd.get(), head.data(), head.size(), 0) < 0 && errno == EIO;
    }));
    EXPECT_FALSE(stdfs::exists(blob_path(sha)));
    fd.reset();
    expect_healthy();
}

TEST_F(LazyMountTest, PlaceholderBecomesItsRealHashUnderAnOpenHandle) {
    NginxServer http(served);
    std::string sha = serve("anon.safetensors", 18, 1 << 20);
    modelfs::Sha256 key =
        add_remote("anon", "anon.safetensors", http.url("anon.safetensors"), false, false);
    ASSERT_NE(key.hex(), sha);
    Mount m(store, mnt);
    ASSERT_TRUE(m.ok());
    stdfs::path p = mnt / "comfyui" / "loras" / "anon.safetensors";
    struct stat before;
    ASSERT_EQ(::stat(p.c_str(), &before), 0);
    // No content hash is known yet, so none is shown.
    char buf[128];
    EXPECT_LT(::getxattr(p.c_str(), "user.modelfs.sha256", buf, sizeof buf), 0);

    modelfs::UniqueFd fd(::open(p.c_str(), O_RDONLY | O_CLOEXEC));
    ASSERT_TRUE(fd) << std::strerror(errno);
    EXPECT_EQ(sha256_of_fd(fd.get()), sha);
    // The catalog now knows the content by its hash; the name becomes a new inode...
    EXPECT_FALSE(record(key).has_value());
    EXPECT_TRUE(stdfs::exists(blob_path(sha)));
    ASSERT_TRUE(eventually([&] {
        struct stat now;
        return ::stat(p.c_str(), &now) == 0 && now.st_ino != before.st_ino;
    }));
    EXPECT_EQ(read_through(p), sha);
    ssize_t n = ::getxattr(p.c_str(), "user.modelfs.sha256", buf, sizeof buf);
    EXPECT_EQ(std::string(buf, n > 0 ? n : 0), sha);
    // ...while the handle opened before goes on reading the same bytes.
    EXPECT_EQ(sha256_of_fd(fd.get()), sha);
    struct stat held;
    ASSERT_EQ(::fstat(fd.get(), &held), 0);
    EXPECT_EQ(held.st_size, before.st_size);
    EXPECT_TRUE(one_download(http.requests(), "/anon.safetensors",
                             stdfs::file_size(served / "anon.safetensors")));
}

TEST_F(LazyMountTest, AnOpenerKilledWhileWaitingGoesAtOnce) {
    FaultServer http(served);
    std::string sha = serve("long.safetensors", 19, 1 << 20);
    // About eight seconds for the whole file.
    http.set_faults("long.safetensors", std::vector<Fault>(4, Fault::throttle(128 << 10)));
    add_remote("long", "long.safetensors", http.url("long.safetensors"));
    Mount m(store, mnt);
    ASSERT_TRUE(m.ok());
    stdfs::path p = mnt / "comfyui" / "loras" / "long.safetensors";
    pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
        int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
        ::_exit(fd >= 0 ? 0 : 1);
    }
    ASSERT_TRUE(eventually([&] { return http.requests_for("long.safetensors") > 0; }));
    std::this_thread::sleep_for(100ms);
    ::kill(child, SIGKILL);
    // A request the daemon never answered would keep it in the kernel, unkillable, until the
    // download ended: it must be gone while the download still runs.
    int status = 0;
    EXPECT_TRUE(eventually([&] { return ::waitpid(child, &status, WNOHANG) == child; }, 15000ms));
    EXPECT_TRUE(WIFSIGNALED(status));
    EXPECT_FALSE(stdfs::exists(blob_path(sha))) << "the opener went only when the download ended";
    // The download goes on for the next opener.
    EXPECT_EQ(read_through(p), sha);
    EXPECT_TRUE(one_download(http.requests(), "/long.safetensors",
                             stdfs::file_size(served / "long.safetensors")));
}

TEST_F(LazyMountTest, TricklingDownloadGivesEioAtItsDeadlineAndALaterOpenTriesAgain) {
    FaultServer http(served);
    std::string sha = serve("trickle.safetensors", 29, 256 << 10);
    // 2 B/s: above the low-speed limit (1 B/s), so only the transfer deadline ends it. Then the
    // server behaves.
    http.set_faults("trickle.safetensors", {Fault::throttle(2)});
    add_remote("trickle", "trickle.safetensors", http.url("trickle.safetensors"));
    write_text_file(dir / "config.toml", "[fetch]\nretries = 0\ntransfer_timeout = 1\n");
    Mount m(store, mnt, {"--config", (dir / "config.toml").string()});
    ASSERT_TRUE(m.ok());
    stdfs::path p = mnt / "comfyui" / "loras" / "trickle.safetensors";
    // The opener in a child, so that a download that never ends fails the test instead of
    // hanging it.
    pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
        int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
        ::_exit(fd >= 0 ? 0 : errno);
    }
    int status = 0;
    bool ended = eventually([&] { return ::waitpid(child, &status, WNOHANG) == child; }, 90000ms);
    if (!ended) {
        ::kill(child, SIGKILL);
        ::waitpid(child, &status, 0);
    }
    ASSERT_TRUE(ended) << "the open still waited for a 2 B/s download";
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), EIO);
    EXPECT_FALSE(stdfs::exists(blob_path(sha)));
    // The download was given up, not the file: the next open fetches it.
    EXPECT_EQ(read_through(p), sha);
    expect_healthy();
}

TEST_F(LazyMountTest, OpenBlobsAreLockedAgainstEviction) {
    Mount m(store, mnt);
    ASSERT_TRUE(m.ok());
    stdfs::path p = mnt / "comfyui" / "checkpoints" / "base.safetensors";
    modelfs::UniqueFd reader(::open(p.c_str(), O_RDONLY | O_CLOEXEC));
    ASSERT_TRUE(reader) << std::strerror(errno);
    // What eviction does: take the blob's lock exclusively, without waiting.
    modelfs::UniqueFd blob(::open(blob_path(base_sha).c_str(), O_RDONLY | O_CLOEXEC));
    ASSERT_TRUE(blob);
    errno = 0;
    EXPECT_NE(::flock(blob.get(), LOCK_EX | LOCK_NB), 0);
    EXPECT_EQ(errno, EWOULDBLOCK);
    reader.reset();
    // The kernel sends the release when the file closes; the daemon closes its descriptor then.
    EXPECT_TRUE(eventually([&] { return ::flock(blob.get(), LOCK_EX | LOCK_NB) == 0; }));
}

TEST_F(LazyMountTest, WritingOverARemoteModel) {
    NginxServer http(served);
    serve("far.safetensors", 21, 256 << 10);
    add_remote("far", "far.safetensors", http.url("far.safetensors"));
    Mount m(store, mnt);
    ASSERT_TRUE(m.ok());
    stdfs::path p = mnt / "comfyui" / "loras" / "far.safetensors";
    // Changing it in place needs its bytes: refused, with a message in the log, not half done.
    errno = 0;
    EXPECT_LT(::open(p.c_str(), O_RDWR | O_CLOEXEC), 0);
    EXPECT_EQ(errno, EIO);
    // Replacing it whole needs nothing from the server.
    write_safetensors(dir / "mine.safetensors", kohya_lora(22));
    std::string mine = read_file(dir / "mine.safetensors");
    {
        modelfs::UniqueFd w(::open(p.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC));
        ASSERT_TRUE(w) << std::strerror(errno);
        ASSERT_EQ(::write(w.get(), mine.data(), mine.size()), static_cast<ssize_t>(mine.size()));
    }
    // Once stored, the other views show the new version (the writer's own name may name the
    // old version a moment longer: the kernel forgets it asynchronously).
    const std::string mine_sha = sha256_hex_of_file(dir / "mine.safetensors");
    ASSERT_TRUE(eventually([&] {
        modelfs::Store s = modelfs::Store::open(store);
        auto model = s.catalog().read().get_model("lora/far.safetensors");
        return model && model->current_version().blob &&
               model->current_version().blob->hex() == mine_sha;
    }));
    EXPECT_EQ(read_through(mnt / "a1111" / "Lora" / "far.safetensors"), mine_sha);
    EXPECT_EQ(http.requests_for("far.safetensors"), 0u);
}

TEST_F(LazyMountTest, EvictionSkipsOpenBlobsAndTheNextOpenFetchesAgain) {
    NginxServer http(served);
    std::string sha = serve("cached.safetensors", 20, 512 << 10);
    add_remote("cached", "cached.safetensors", http.url("cached.safetensors"));
    Mount m(store, mnt);
    ASSERT_TRUE(m.ok());
    stdfs::path p = mnt / "comfyui" / "loras" / "cached.safetensors";
    struct stat before;
    ASSERT_EQ(::stat(p.c_str(), &before), 0);

    modelfs::UniqueFd held(::open(p.c_str(), O_RDONLY | O_CLOEXEC));
    ASSERT_TRUE(held) << std::strerror(errno);
    {
        modelfs::Store s = modelfs::Store::open(store);
        modelfs::EvictReport r = s.evict(0, /*dry_run=*/false);
        EXPECT_EQ(r.skipped_open, 1u);
        EXPECT_TRUE(r.evicted.empty());
    }
    EXPECT_TRUE(stdfs::exists(blob_path(sha)));
    EXPECT_EQ(sha256_of_fd(held.get()), sha);
    held.reset();

    // Closed: now it goes (the release reaches the daemon a moment after close).
    ASSERT_TRUE(eventually([&] {
        modelfs::Store s = modelfs::Store::open(store);
        return !s.evict(0, false).evicted.empty();
    }));
    EXPECT_FALSE(stdfs::exists(blob_path(sha)));
    // Still listed, same inode; reading it downloads it again.
    struct stat after;
    ASSERT_EQ(::stat(p.c_str(), &after), 0);
    EXPECT_EQ(after.st_ino, before.st_ino);
    EXPECT_EQ(read_through(p), sha);
    EXPECT_EQ(gets(http.requests(), "/cached.safetensors").size(), 2u);
    EXPECT_TRUE(stdfs::exists(blob_path(sha)));
}

}  // namespace
