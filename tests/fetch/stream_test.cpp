// Streaming: ranges of a blob become readable from the partial file while the rest downloads,
// for sources that allow it; a range a reader asks for jumps the queue.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <future>
#include <thread>

#include "fetch_env.h"
#include "modelfs/fetch/fetcher.h"
#include "support/http_servers.h"

namespace modelfs::test {
namespace {

using namespace std::chrono_literals;

class StreamTest : public FetchEnv {};

std::string pread_str(int fd, std::uint64_t off, std::size_t len) {
    std::string s(len, '\0');
    ssize_t n = ::pread(fd, s.data(), len, static_cast<off_t>(off));
    s.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
    return s;
}

TEST_F(StreamTest, RequestedRangeArrivesFirstAndIsReadableBeforeTheEnd) {
    const std::uint64_t size = 4 * 1024 * 1024;
    Sha256 h = make_file("st.safetensors", size, 41);
    const std::string data = content("st.safetensors");
    FaultServer srv(www());
    add_remote(h, size, {srv.url("st.safetensors")}, /*stream=*/true);

    auto cfg = fast_config();
    cfg.connections_per_blob = 1;  // in order from the start, one range at a time
    cfg.limit_rate = 1'000'000;    // about four seconds in all
    fetch::Fetcher f(store(), cfg);
    auto d = f.fetch(h);
    EXPECT_TRUE(d->streamable());

    // The header first: the start of the file arrives at once.
    std::promise<bool> head;
    d->on_range(0, 8, [&](bool ok) { head.set_value(ok); });
    ASSERT_EQ(head.get_future().wait_for(10s), std::future_status::ready);

    const std::uint64_t off = 3 * 1024 * 1024 + 512 * 1024;
    std::promise<bool> tail;
    std::atomic<bool> done_before{false};
    d->on_range(off, 1000, [&](bool ok) {
        done_before = d->status().state == fetch::FetchState::done;
        tail.set_value(ok);
    });
    auto fut = tail.get_future();
    ASSERT_EQ(fut.wait_for(10s), std::future_status::ready);
    EXPECT_TRUE(fut.get());
    EXPECT_FALSE(done_before);  // served from the partial file, not after the whole blob
    int fd = d->partial_fd();
    ASSERT_GE(fd, 0);
    EXPECT_EQ(pread_str(fd, off, 1000), data.substr(off, 1000));
    EXPECT_EQ(pread_str(fd, 0, 8), data.substr(0, 8));

    // The wanted range was asked for among the first, not in its place in file order (15th).
    auto log = srv.request_log();
    auto at = std::find(log.begin(), log.end(), "GET /st.safetensors bytes=3670016-3932159");
    ASSERT_NE(at, log.end()) << ::testing::PrintToString(log);
    EXPECT_LE(at - log.begin(), 2) << ::testing::PrintToString(log);

    auto r = d->wait();
    ASSERT_TRUE(r.ok) << r.error;
    EXPECT_TRUE(blob_file_is(h, data));
    // The descriptor stays good after the file became the blob.
    EXPECT_EQ(pread_str(fd, size - 100, 100), data.substr(size - 100));
    EXPECT_EQ(srv.requests_for("st.safetensors"), size / cfg.chunk_size);
}

TEST_F(StreamTest, OnlySourcesThatAllowItStream) {
    const std::uint64_t size = 100'000;
    Sha256 h = make_file("ns.bin", size, 42);
    NginxServer nginx(www());
    add_remote(h, size, {nginx.url("ns.bin")}, /*stream=*/false);
    auto cfg = fast_config();
    cfg.limit_rate = 200'000;
    fetch::Fetcher f(store(), cfg);
    auto d = f.fetch(h);
    EXPECT_FALSE(d->streamable());
    EXPECT_TRUE(d->wait().ok);
}

TEST_F(StreamTest, RangeCallbacksOfAFailedDownloadSayFalse) {
    const std::uint64_t size = 600'000;
    Sha256 h = make_file("sf.bin", size, 43);
    FaultServer srv(www());
    srv.set_faults("sf.bin", {Fault::hang(30, 300'000), Fault::http(404)});
    add_remote(h, size, {srv.url("sf.bin")}, /*stream=*/true);
    auto cfg = fast_config();
    cfg.chunk_size = 1 << 20;
    cfg.stall_timeout = std::chrono::seconds(1);
    fetch::Fetcher f(store(), cfg);
    auto d = f.fetch(h);
    std::promise<bool> early, late;
    std::atomic<int> done_calls{0};
    d->on_range(0, 100'000, [&](bool ok) { early.set_value(ok); });
    d->on_range(500'000, 1000, [&](bool ok) { late.set_value(ok); });
    d->on_done([&](const fetch::FetchResult& r) {
        EXPECT_FALSE(r.ok);
        ++done_calls;
    });
    auto e = early.get_future();
    auto l = late.get_future();
    ASSERT_EQ(e.wait_for(10s), std::future_status::ready);
    EXPECT_TRUE(e.get());
    ASSERT_EQ(l.wait_for(10s), std::future_status::ready);
    EXPECT_FALSE(l.get());
    EXPECT_FALSE(d->wait().ok);
    EXPECT_EQ(done_calls, 1);
    // Registered after the end: runs at once, on this thread.
    bool now = false;
    d->on_done([&](const fetch::FetchResult&) { now = true; });
    EXPECT_TRUE(now);
}

}  // namespace
}  // namespace modelfs::test
