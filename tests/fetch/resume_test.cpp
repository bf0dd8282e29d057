// Resuming: after kill -9 of the downloading process, after the downloader stopped, when another
// process holds the download, and when the file changed on the server in between.
#include <signal.h>

#include <chrono>
#include <fstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "fetch_env.h"
#include "modelfs/fetch/fetcher.h"
#include "support/http_servers.h"

namespace modelfs::test {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

struct Range {
    std::uint64_t begin, end;  // [begin, end)
};

// "bytes=A-B" -> [A, B+1). (Not std::regex: GCC 12 warns inside it under ASan.)
std::optional<Range> parse_range(const std::string& r) {
    const std::string prefix = "bytes=";
    if (r.rfind(prefix, 0) != 0) return std::nullopt;
    auto dash = r.find('-', prefix.size());
    if (dash == std::string::npos || dash == prefix.size() || dash + 1 == r.size())
        return std::nullopt;
    try {
        return Range{std::stoull(r.substr(prefix.size(), dash - prefix.size())),
                     std::stoull(r.substr(dash + 1)) + 1};
    } catch (const std::exception&) {
        return std::nullopt;
    }
}

// The finished ranges a .state file lists.
std::vector<Range> state_ranges(const std::filesystem::path& p) {
    std::vector<Range> out;
    std::ifstream in(p);
    if (!in) return out;
    try {
        auto j = nlohmann::json::parse(in);
        for (const auto& r : j.at("done"))
            out.push_back({r.at(0).get<std::uint64_t>(), r.at(1).get<std::uint64_t>()});
    } catch (const std::exception&) {
        out.clear();
    }
    return out;
}

std::uint64_t total(const std::vector<Range>& rs) {
    std::uint64_t t = 0;
    for (auto r : rs) t += r.end - r.begin;
    return t;
}

bool overlaps(const Range& a, const std::vector<Range>& rs) {
    for (auto r : rs)
        if (a.begin < r.end && r.begin < a.end) return true;
    return false;
}

class ResumeTest : public FetchEnv {
  protected:
    std::filesystem::path state_file(const Sha256& h) {
        return store().partial_dir() / (h.hex() + ".state");
    }
    std::filesystem::path part_file(const Sha256& h) {
        return store().partial_dir() / (h.hex() + ".part");
    }
    // Runs the child downloader: CHUNK bytes per range, LIMIT bytes/s, CONNS per blob.
    ChildProcess child(const Sha256& h, std::uint64_t chunk, std::uint64_t limit, unsigned conns) {
        ChildProcess c(MODELFS_FETCH_CHILD,
                       {(dir_ / "store").string(), h.hex(), std::to_string(chunk),
                        std::to_string(limit), std::to_string(conns)},
                       dir_ / "child.err", /*pipe_stdout=*/true);
        auto line = c.read_line(10'000);
        EXPECT_EQ(line.value_or("(nothing)"), "started");
        return c;
    }
    // Waits until the .state file lists at least `bytes` (the child persists about every second).
    std::vector<Range> wait_for_progress(const Sha256& h, std::uint64_t bytes) {
        auto deadline = Clock::now() + 20s;
        while (Clock::now() < deadline) {
            auto rs = state_ranges(state_file(h));
            if (total(rs) >= bytes) return rs;
            std::this_thread::sleep_for(50ms);
        }
        ADD_FAILURE() << "no progress saved in " << state_file(h);
        return {};
    }
};

TEST_F(ResumeTest, KillNineThenResumeFetchesOnlyTheMissingRanges) {
    const std::uint64_t size = 6 * 1024 * 1024;
    const std::uint64_t chunk = 256 << 10;
    Sha256 h = make_file("k.bin", size, 31);
    NginxServer nginx(www());
    add_remote(h, size, {nginx.url("k.bin")});

    {
        ChildProcess c = child(h, chunk, 1'000'000, 2);
        wait_for_progress(h, 1'000'000);
        ASSERT_EQ(::kill(c.pid(), SIGKILL), 0);
        c.stop(0);
    }
    auto saved = state_ranges(state_file(h));
    ASSERT_GE(total(saved), 1'000'000u);
    ASSERT_LT(total(saved), size);
    ASSERT_TRUE(std::filesystem::exists(part_file(h)));
    // A killed download is an interrupted one, not one in another process.
    auto states = fetch::stored_fetch_states(store());
    ASSERT_EQ(states.size(), 1u);
    EXPECT_FALSE(states[0].other_process);
    EXPECT_EQ(states[0].done_bytes, total(saved));
    EXPECT_EQ(states[0].size, size);

    const std::size_t before = nginx.requests().size();
    fetch::Fetcher f(store(), fast_config());
    auto d = f.fetch(h);
    auto r = d->wait();
    ASSERT_TRUE(r.ok) << r.error;
    EXPECT_TRUE(blob_file_is(h, content("k.bin")));

    auto log = nginx.requests();
    std::uint64_t fetched = 0;
    for (std::size_t i = before; i < log.size(); ++i) {
        if (log[i].path != "/k.bin") continue;
        auto rg = parse_range(log[i].range);
        ASSERT_TRUE(rg) << "a request without a range: " << log[i].range;
        EXPECT_FALSE(overlaps(*rg, saved)) << log[i].range << " was saved already";
        fetched += rg->end - rg->begin;
    }
    EXPECT_EQ(fetched, size - total(saved));
    EXPECT_EQ(files_in("partial"), 0u);
}

TEST_F(ResumeTest, AnotherProcessDownloadsAndThisOneWaits) {
    const std::uint64_t size = 4 * 1024 * 1024;
    const std::uint64_t chunk = 256 << 10;
    Sha256 h = make_file("two.bin", size, 32);
    NginxServer nginx(www());
    add_remote(h, size, {nginx.url("two.bin")});

    ChildProcess c = child(h, chunk, 1'000'000, 2);
    wait_for_progress(h, 1);  // the child holds the partial file now

    auto cfg = fast_config();
    cfg.chunk_size = chunk;
    fetch::Fetcher f(store(), cfg);
    auto d = f.fetch(h);
    bool saw_other = false;
    while (d->status().state != fetch::FetchState::done &&
           d->status().state != fetch::FetchState::failed) {
        if (d->status().other_process) saw_other = true;
        std::this_thread::sleep_for(10ms);
    }
    auto r = d->wait();
    ASSERT_TRUE(r.ok) << r.error;
    EXPECT_TRUE(saw_other);
    EXPECT_EQ(d->status().requests, 0u);
    EXPECT_EQ(c.read_line(10'000).value_or(""), "ok " + h.hex());
    EXPECT_TRUE(blob_file_is(h, content("two.bin")));
    // One download: every range asked for once.
    EXPECT_EQ(nginx.requests_for("two.bin"), size / chunk);
}

TEST_F(ResumeTest, WaitingProcessTakesOverWhenTheOtherDies) {
    const std::uint64_t size = 4 * 1024 * 1024;
    const std::uint64_t chunk = 256 << 10;
    Sha256 h = make_file("take.bin", size, 33);
    NginxServer nginx(www());
    add_remote(h, size, {nginx.url("take.bin")});

    ChildProcess c = child(h, chunk, 1'000'000, 1);
    wait_for_progress(h, 1);
    fetch::Fetcher f(store(), fast_config());
    auto d = f.fetch(h);
    auto deadline = Clock::now() + 10s;
    while (!d->status().other_process && Clock::now() < deadline) std::this_thread::sleep_for(10ms);
    ASSERT_TRUE(d->status().other_process);
    auto saved = wait_for_progress(h, 600'000);
    ASSERT_EQ(::kill(c.pid(), SIGKILL), 0);
    c.stop(0);
    saved = state_ranges(state_file(h));

    auto r = d->wait();
    ASSERT_TRUE(r.ok) << r.error;
    EXPECT_FALSE(d->status().other_process);
    EXPECT_GT(d->status().requests, 0u);
    EXPECT_TRUE(blob_file_is(h, content("take.bin")));
    EXPECT_LE(d->status().requests, (size - total(saved)) / chunk + 1);
}

TEST_F(ResumeTest, StoppedDownloaderKeepsItsProgress) {
    const std::uint64_t size = 3 * 1024 * 1024;
    Sha256 h = make_file("st.bin", size, 34);
    NginxServer nginx(www());
    add_remote(h, size, {nginx.url("st.bin")});

    auto cfg = fast_config();
    cfg.limit_rate = 1'000'000;
    std::shared_ptr<fetch::Download> d;
    {
        fetch::Fetcher f(store(), cfg);
        d = f.fetch(h);
        auto deadline = Clock::now() + 10s;
        while (d->status().done_bytes < 600'000 && Clock::now() < deadline)
            std::this_thread::sleep_for(20ms);
    }
    auto r = d->wait();
    EXPECT_FALSE(r.ok);
    EXPECT_NE(r.error.find("interrupted"), std::string::npos) << r.error;
    auto saved = state_ranges(state_file(h));
    EXPECT_GE(total(saved), 600'000u);
    EXPECT_TRUE(record(h)->fetch_error.empty());  // stopping is not a failure
    auto states = fetch::stored_fetch_states(store());
    ASSERT_EQ(states.size(), 1u);
    EXPECT_EQ(states[0].state, fetch::FetchState::queued);
    EXPECT_EQ(states[0].done_bytes, total(saved));

    const std::size_t before = nginx.requests().size();
    fetch::Fetcher f2(store(), fast_config());
    auto r2 = f2.fetch(h)->wait();
    ASSERT_TRUE(r2.ok) << r2.error;
    EXPECT_TRUE(blob_file_is(h, content("st.bin")));
    auto log = nginx.requests();
    for (std::size_t i = before; i < log.size(); ++i) {
        auto rg = parse_range(log[i].range);
        ASSERT_TRUE(rg);
        EXPECT_FALSE(overlaps(*rg, saved)) << log[i].range;
    }
}

TEST_F(ResumeTest, FileChangedOnTheServerStartsOver) {
    const std::uint64_t size = 3 * 1024 * 1024;
    make_file("ch.bin", size, 35);
    NginxServer nginx(www());
    std::string url = nginx.url("ch.bin");
    // No hash known: only the server's ETag can tell that the bytes changed.
    Sha256 key = sha256_of("modelfs-placeholder:" + url);
    add_remote(key, size, {url}, false, /*placeholder=*/true);

    auto cfg = fast_config();
    cfg.limit_rate = 1'000'000;
    {
        fetch::Fetcher f(store(), cfg);
        auto d = f.fetch(key);
        auto deadline = Clock::now() + 10s;
        while (total(state_ranges(state_file(key))) < 500'000 && Clock::now() < deadline)
            std::this_thread::sleep_for(20ms);
    }
    ASSERT_GE(total(state_ranges(state_file(key))), 500'000u);
    // New content of the same size, a new mtime: a new ETag.
    std::this_thread::sleep_for(1100ms);
    Sha256 now = make_file("ch.bin", size, 36);

    fetch::Fetcher f(store(), fast_config());
    auto r = f.fetch(key)->wait();
    ASSERT_TRUE(r.ok) << r.error;
    EXPECT_EQ(r.blob, now);
    EXPECT_TRUE(blob_file_is(now, content("ch.bin")));
}

TEST_F(ResumeTest, ServerThatCannotResumeIsReadAgainFromTheStart) {
    const std::uint64_t size = 3 * 1024 * 1024;
    Sha256 h = make_file("nr.bin", size, 37);
    FaultServer srv(www());
    add_remote(h, size, {srv.url("nr.bin")});

    auto cfg = fast_config();
    cfg.limit_rate = 1'000'000;
    {
        fetch::Fetcher f(store(), cfg);
        auto d = f.fetch(h);
        auto deadline = Clock::now() + 10s;
        while (total(state_ranges(state_file(h))) < 500'000 && Clock::now() < deadline)
            std::this_thread::sleep_for(20ms);
    }
    ASSERT_GE(total(state_ranges(state_file(h))), 500'000u);
    srv.set_faults("nr.bin", std::vector<Fault>(5, Fault::no_range()));
    const std::size_t before = srv.request_log().size();
    fetch::Fetcher f(store(), fast_config());
    auto r = f.fetch(h)->wait();
    ASSERT_TRUE(r.ok) << r.error;
    EXPECT_TRUE(blob_file_is(h, content("nr.bin")));
    EXPECT_EQ(srv.request_log().size() - before, 1u);  // one whole-file stream
}

}  // namespace
}  // namespace modelfs::test
