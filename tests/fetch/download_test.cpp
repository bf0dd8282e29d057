// The downloader against real servers on 127.0.0.1: nginx (a well-behaved static server) and
// our fault server (drops, errors, wrong bytes, stalls, no ranges).
#include <algorithm>
#include <chrono>
#include <thread>

#include "fetch_env.h"
#include "modelfs/fetch/fetcher.h"
#include "modelfs/store/errors.h"
#include "support/http_servers.h"

namespace modelfs::test {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// GET lines of the fault server's log for `path` (in arrival order), as "bytes=a-b" or "".
std::vector<std::string> get_ranges(const FaultServer& s, const std::string& path) {
    std::vector<std::string> out;
    for (const auto& r : s.requests())
        if (r.method == "GET" && r.path == path) out.push_back(r.range);
    return out;
}

std::vector<std::string> nginx_ranges(const NginxServer& s, const std::string& path) {
    std::vector<std::string> out;
    for (const auto& r : s.requests())
        if (r.method == "GET" && r.path == path) out.push_back(r.range);
    return out;
}

class DownloadTest : public FetchEnv {};

TEST_F(DownloadTest, PlainDownloadIsVerifiedAndBecomesABlob) {
    const std::uint64_t size = 3 * 1024 * 1024 + 17;
    Sha256 h = make_file("model.safetensors", size);
    NginxServer nginx(www());
    add_remote(h, size, {nginx.url("model.safetensors")});
    add_model("plain", h, size);

    fetch::Fetcher f(store(), fast_config());
    auto d = f.fetch(h);
    auto r = d->wait();
    ASSERT_TRUE(r.ok) << r.error;
    EXPECT_EQ(r.blob, h);
    EXPECT_TRUE(blob_file_is(h, content("model.safetensors")));
    auto rec = record(h);
    ASSERT_TRUE(rec);
    EXPECT_EQ(rec->state, BlobState::present);
    EXPECT_EQ(rec->size, size);
    EXPECT_TRUE(rec->xxh128.has_value());
    EXPECT_EQ(rec->sources.size(), 1u);  // the source stays: the blob can be fetched again
    EXPECT_TRUE(rec->fetch_error.empty());
    EXPECT_EQ(files_in("partial"), 0u);  // nothing left behind
    auto st = d->status();
    EXPECT_EQ(st.state, fetch::FetchState::done);
    EXPECT_EQ(st.done_bytes, size);
    EXPECT_FALSE(st.other_process);
    EXPECT_EQ(st.name, "lora/plain");
    EXPECT_EQ(st.source, nginx.url("model.safetensors"));

    // Fetching a present blob downloads nothing.
    auto again = fetch::Fetcher(store(), fast_config()).fetch(h);
    EXPECT_TRUE(again->wait().ok);
    EXPECT_EQ(again->status().requests, 0u);
}

TEST_F(DownloadTest, ParallelRangedRequestsCoverTheFileOnce) {
    const std::uint64_t size = 8 * 1024 * 1024;
    Sha256 h = make_file("big.bin", size, 2);
    NginxServer nginx(www());
    add_remote(h, size, {nginx.url("big.bin")});

    auto cfg = fast_config();
    cfg.chunk_size = 512 << 10;
    cfg.connections_per_blob = 4;
    fetch::Fetcher f(store(), cfg);
    auto r = f.fetch(h)->wait();
    ASSERT_TRUE(r.ok) << r.error;
    EXPECT_TRUE(blob_file_is(h, content("big.bin")));

    // 16 ranges of 512 KiB, each asked for exactly once.
    auto ranges = nginx_ranges(nginx, "/big.bin");
    ASSERT_EQ(ranges.size(), 16u) << ::testing::PrintToString(ranges);
    std::sort(ranges.begin(), ranges.end());
    for (std::uint64_t i = 0; i < 16; ++i) {
        std::string want = "bytes=" + std::to_string(i * (512 << 10)) + "-" +
                           std::to_string((i + 1) * (512 << 10) - 1);
        EXPECT_NE(std::find(ranges.begin(), ranges.end(), want), ranges.end()) << want;
    }
}

TEST_F(DownloadTest, SeveralBlobsAtOnceAndOneFailureStopsNoOther) {
    NginxServer nginx(www());
    std::vector<Sha256> keys;
    for (int i = 0; i < 5; ++i) {
        std::string name = "m" + std::to_string(i) + ".bin";
        Sha256 h = make_file(name, 700'000 + i, 10 + i);
        add_remote(h, 700'000 + i, {nginx.url(name)});
        keys.push_back(h);
    }
    Sha256 missing = sha256_of("not there");
    add_remote(missing, 1000, {nginx.url("missing.bin")});

    auto cfg = fast_config();
    cfg.max_blobs = 3;
    fetch::Fetcher f(store(), cfg);
    auto bad = f.fetch(missing);
    std::vector<std::shared_ptr<fetch::Download>> ds;
    for (auto& k : keys) ds.push_back(f.fetch(k));
    auto br = bad->wait();
    EXPECT_FALSE(br.ok);
    EXPECT_NE(br.error.find("404"), std::string::npos) << br.error;
    for (std::size_t i = 0; i < ds.size(); ++i) {
        auto r = ds[i]->wait();
        EXPECT_TRUE(r.ok) << r.error;
        EXPECT_TRUE(blob_file_is(keys[i], content("m" + std::to_string(i) + ".bin")));
    }
    // A 404 is not retried on the same source.
    EXPECT_EQ(nginx.requests_for("missing.bin"), 1u);
    EXPECT_NE(record(missing)->fetch_error.find("404"), std::string::npos);
    EXPECT_EQ(f.downloads().size(), 6u);
}

TEST_F(DownloadTest, MaxBlobsBoundsTheDownloadsRunningAtOnce) {
    NginxServer nginx(www());
    std::vector<Sha256> keys;
    for (int i = 0; i < 4; ++i) {
        std::string name = "mb" + std::to_string(i) + ".bin";
        Sha256 h = make_file(name, 500'000, 40 + i);
        add_remote(h, 500'000, {nginx.url(name)});
        keys.push_back(h);
    }
    auto cfg = fast_config();
    cfg.max_blobs = 2;
    cfg.limit_rate = 2'000'000;  // a second in all: long enough to watch
    fetch::Fetcher f(store(), cfg);
    std::vector<std::shared_ptr<fetch::Download>> ds;
    for (auto& k : keys) ds.push_back(f.fetch(k));
    std::size_t most = 0;
    for (;;) {
        std::size_t running = 0, finished = 0;
        for (auto& d : ds) {
            auto st = d->status().state;
            running += st == fetch::FetchState::running;
            finished += st == fetch::FetchState::done || st == fetch::FetchState::failed;
        }
        most = std::max(most, running);
        if (finished == ds.size()) break;
        std::this_thread::sleep_for(2ms);
    }
    EXPECT_EQ(most, 2u);
    for (std::size_t i = 0; i < ds.size(); ++i) EXPECT_TRUE(ds[i]->wait().ok);
}

TEST_F(DownloadTest, ConnectionLimitsPerHostAndOverallHold) {
    // Two blobs of 8 ranges each on one host, every request slowed down so they overlap: the
    // downloader would open 4 connections per blob (8 in all) without the limits. A server per
    // case, so no request of one case is still being answered in the next.
    const std::uint64_t size = 2 << 20;
    std::vector<Sha256> keys;
    for (int i = 0; i < 2; ++i)
        keys.push_back(make_file("lim" + std::to_string(i) + ".bin", size, 60 + i));
    auto run = [&](unsigned per_host, unsigned overall) {
        FaultServer server(www());
        Store s = Store::init(dir_ / ("store-" + std::to_string(per_host)));
        for (int i = 0; i < 2; ++i) {
            const std::string name = "lim" + std::to_string(i) + ".bin";
            server.set_faults(name, std::vector<Fault>(16, Fault::throttle(1'000'000)));
            BlobRecord r;
            r.size = size;
            r.state = BlobState::remote;
            r.sources.push_back({server.url(name), false});
            auto txn = s.catalog().write();
            txn.put_blob(keys[static_cast<std::size_t>(i)], r);
            txn.commit();
        }
        auto cfg = fast_config();
        cfg.connections_per_blob = 4;
        cfg.max_per_host = per_host;
        cfg.max_connections = overall;
        fetch::Fetcher f(s, cfg);
        std::vector<std::shared_ptr<fetch::Download>> ds;
        for (const auto& k : keys) ds.push_back(f.fetch(k));
        for (auto& d : ds) {
            auto r = d->wait();
            EXPECT_TRUE(r.ok) << r.error;
        }
        return server.peak_in_flight();
    };
    EXPECT_EQ(run(3, 16), 3u) << "max_per_host";
    EXPECT_EQ(run(8, 2), 2u) << "max_connections";
    EXPECT_EQ(run(8, 16), 8u) << "without limits every blob uses its 4 connections";
}

TEST_F(DownloadTest, MirrorIsUsedWhenTheFirstSourceFails) {
    const std::uint64_t size = 1'000'000;
    Sha256 h = make_file("a.bin", size, 3);
    NginxServer nginx(www());
    FaultServer faults(www());
    add_remote(h, size, {faults.url("gone.bin"), nginx.url("a.bin")});

    fetch::Fetcher f(store(), fast_config());
    auto d = f.fetch(h);
    auto r = d->wait();
    ASSERT_TRUE(r.ok) << r.error;
    EXPECT_TRUE(blob_file_is(h, content("a.bin")));
    EXPECT_EQ(faults.requests_for("gone.bin"), 1u);
    EXPECT_GE(nginx.requests_for("a.bin"), 1u);
    EXPECT_EQ(d->status().source, nginx.url("a.bin"));
}

TEST_F(DownloadTest, DroppedConnectionResumesWithARange) {
    const std::uint64_t size = 600'000;
    Sha256 h = make_file("d.bin", size, 4);
    FaultServer srv(www());
    srv.set_faults("d.bin", {Fault::drop(300'000)});
    add_remote(h, size, {srv.url("d.bin")});

    auto cfg = fast_config();
    cfg.chunk_size = 1 << 20;  // one request for the whole file
    fetch::Fetcher f(store(), cfg);
    auto r = f.fetch(h)->wait();
    ASSERT_TRUE(r.ok) << r.error;
    EXPECT_TRUE(blob_file_is(h, content("d.bin")));
    auto ranges = get_ranges(srv, "/d.bin");
    ASSERT_EQ(ranges.size(), 2u) << ::testing::PrintToString(ranges);
    EXPECT_EQ(ranges[0], "bytes=0-599999");
    EXPECT_EQ(ranges[1], "bytes=300000-599999");  // only what had not arrived
}

TEST_F(DownloadTest, ServerErrorsAreRetried) {
    const std::uint64_t size = 200'000;
    Sha256 h = make_file("e.bin", size, 5);
    FaultServer srv(www());
    srv.set_faults("e.bin", {Fault::http(500), Fault::http(503), Fault::http(500)});
    add_remote(h, size, {srv.url("e.bin")});

    fetch::Fetcher f(store(), fast_config());
    auto d = f.fetch(h);
    auto r = d->wait();
    ASSERT_TRUE(r.ok) << r.error;
    EXPECT_TRUE(blob_file_is(h, content("e.bin")));
    EXPECT_EQ(srv.requests_for("e.bin"), 4u);
    EXPECT_EQ(d->status().requests, 4u);
}

TEST_F(DownloadTest, TooManyErrorsFailTheSourceWithTheReason) {
    const std::uint64_t size = 1000;
    Sha256 h = make_file("f.bin", size, 6);
    FaultServer srv(www());
    srv.set_faults("f.bin", std::vector<Fault>(10, Fault::http(502)));
    add_remote(h, size, {srv.url("f.bin")});

    auto cfg = fast_config();
    cfg.retries = 2;
    fetch::Fetcher f(store(), cfg);
    auto r = f.fetch(h)->wait();
    EXPECT_FALSE(r.ok);
    EXPECT_NE(r.error.find("HTTP 502"), std::string::npos) << r.error;
    EXPECT_EQ(srv.requests_for("f.bin"), 3u);  // the first try and two retries
    EXPECT_FALSE(std::filesystem::exists(store().blobs().path_of(h)));
}

TEST_F(DownloadTest, RetryAfterIsHonoured) {
    const std::uint64_t size = 100'000;
    Sha256 h = make_file("r.bin", size, 7);
    FaultServer srv(www());
    srv.set_faults("r.bin", {Fault::http(429, 2)});
    add_remote(h, size, {srv.url("r.bin")});

    fetch::Fetcher f(store(), fast_config());  // backoff 20 ms: only Retry-After makes it wait
    auto t0 = Clock::now();
    auto r = f.fetch(h)->wait();
    auto elapsed = Clock::now() - t0;
    ASSERT_TRUE(r.ok) << r.error;
    EXPECT_GE(elapsed, 2s);
    EXPECT_EQ(srv.requests_for("r.bin"), 2u);
}

TEST_F(DownloadTest, WrongBytesAreNeverCommitted) {
    const std::uint64_t size = 300'000;
    Sha256 h = make_file("w.bin", size, 8);
    FaultServer srv(www());
    srv.set_faults("w.bin", {Fault::corrupt(), Fault::corrupt(), Fault::corrupt()});
    add_remote(h, size, {srv.url("w.bin")});

    auto cfg = fast_config();
    cfg.chunk_size = 1 << 20;  // one request per attempt
    fetch::Fetcher f(store(), cfg);
    auto r = f.fetch(h)->wait();
    EXPECT_FALSE(r.ok);
    EXPECT_NE(r.error.find("SHA-256"), std::string::npos) << r.error;
    EXPECT_EQ(files_in("blobs"), 0u);
    EXPECT_EQ(files_in("partial"), 0u);
    auto rec = record(h);
    EXPECT_EQ(rec->state, BlobState::remote);
    EXPECT_NE(rec->fetch_error.find("SHA-256"), std::string::npos);
    EXPECT_EQ(srv.requests_for("w.bin"), 2u);  // one download, one more try, then give up
}

TEST_F(DownloadTest, WrongBytesOnceAreFetchedAgain) {
    const std::uint64_t size = 300'000;
    Sha256 h = make_file("w1.bin", size, 9);
    FaultServer srv(www());
    srv.set_faults("w1.bin", {Fault::corrupt()});
    add_remote(h, size, {srv.url("w1.bin")});

    fetch::Fetcher f(store(), fast_config());
    auto r = f.fetch(h)->wait();
    ASSERT_TRUE(r.ok) << r.error;
    EXPECT_TRUE(blob_file_is(h, content("w1.bin")));
    EXPECT_TRUE(record(h)->fetch_error.empty());
}

TEST_F(DownloadTest, WrongBytesFromOneMirrorAreRefetchedFromTheNext) {
    const std::uint64_t size = 300'000;
    Sha256 h = make_file("w2.bin", size, 10);
    FaultServer bad(www());
    NginxServer good(www());
    bad.set_faults("w2.bin", std::vector<Fault>(5, Fault::corrupt()));
    add_remote(h, size, {bad.url("w2.bin"), good.url("w2.bin")});

    fetch::Fetcher f(store(), fast_config());
    auto r = f.fetch(h)->wait();
    ASSERT_TRUE(r.ok) << r.error;
    EXPECT_TRUE(blob_file_is(h, content("w2.bin")));
    EXPECT_EQ(bad.requests_for("w2.bin"), 2u);  // 300 kB: two 256 KiB ranges
}

TEST_F(DownloadTest, StalledTransferIsRetried) {
    const std::uint64_t size = 400'000;
    Sha256 h = make_file("s.bin", size, 11);
    FaultServer srv(www());
    srv.set_faults("s.bin", {Fault::hang(30, 100'000)});
    add_remote(h, size, {srv.url("s.bin")});

    auto cfg = fast_config();
    cfg.chunk_size = 1 << 20;
    cfg.stall_timeout = std::chrono::seconds(1);
    fetch::Fetcher f(store(), cfg);
    auto r = f.fetch(h)->wait();
    ASSERT_TRUE(r.ok) << r.error;
    EXPECT_TRUE(blob_file_is(h, content("s.bin")));
    auto ranges = get_ranges(srv, "/s.bin");
    ASSERT_EQ(ranges.size(), 2u) << ::testing::PrintToString(ranges);
    EXPECT_EQ(ranges[1], "bytes=100000-399999");
}

TEST_F(DownloadTest, ServerWithoutRangesIsReadInOneStream) {
    const std::uint64_t size = 2'000'000;
    Sha256 h = make_file("n.bin", size, 12);
    FaultServer srv(www());
    srv.set_faults("n.bin", std::vector<Fault>(10, Fault::no_range()));
    add_remote(h, size, {srv.url("n.bin")});

    fetch::Fetcher f(store(), fast_config());  // 256 KiB chunks: would be 8 ranges
    auto r = f.fetch(h)->wait();
    ASSERT_TRUE(r.ok) << r.error;
    EXPECT_TRUE(blob_file_is(h, content("n.bin")));
    EXPECT_EQ(get_ranges(srv, "/n.bin").size(), 1u);
}

TEST_F(DownloadTest, ServerWithoutRangesStartsOverAfterADrop) {
    const std::uint64_t size = 2'000'000;
    Sha256 h = make_file("n2.bin", size, 13);
    FaultServer srv(www());
    // The first answer is a 206 cut short; the server then turns out not to do ranges.
    srv.set_faults("n2.bin", {Fault::drop(100'000), Fault::no_range(), Fault::no_range()});
    add_remote(h, size, {srv.url("n2.bin")});

    fetch::Fetcher f(store(), fast_config());
    auto r = f.fetch(h)->wait();
    ASSERT_TRUE(r.ok) << r.error;
    EXPECT_TRUE(blob_file_is(h, content("n2.bin")));
}

TEST_F(DownloadTest, UnknownSizePlaceholderIsStreamed) {
    const std::uint64_t size = 500'000;
    Sha256 real = make_file("u.bin", size, 14);
    NginxServer nginx(www());
    std::string url = nginx.url("u.bin");
    Sha256 key = sha256_of("modelfs-placeholder:" + url);
    add_remote(key, 0, {url}, false, /*placeholder=*/true);
    add_model("u", key, 0);

    fetch::Fetcher f(store(), fast_config());
    auto r = f.fetch(key)->wait();
    ASSERT_TRUE(r.ok) << r.error;
    EXPECT_EQ(r.blob, real);
    EXPECT_TRUE(blob_file_is(real, content("u.bin")));
    EXPECT_FALSE(record(key));
    auto m = store().catalog().read().get_model("lora/u");
    ASSERT_TRUE(m);
    EXPECT_EQ(*m->current_version().blob, real);
    EXPECT_EQ(m->current_version().size, size);
}

TEST_F(DownloadTest, PlaceholderIsReplacedEverywhere) {
    const std::uint64_t size = 700'000;
    Sha256 real = make_file("p.bin", size, 15);
    Sha256 side = make_file("p.json", 1000, 16);
    NginxServer nginx(www());
    std::string url = nginx.url("p.bin");
    Sha256 key = sha256_of("modelfs-placeholder:" + url);
    add_remote(key, size, {url}, false, /*placeholder=*/true);
    add_model("single", key, size);
    {
        // A tree using it, and a model carrying it as a sidecar.
        Model m;
        m.category = Category::diffusers;
        m.name = "tree";
        ModelVersion v;
        v.label = "v1";
        v.tree = {{"a/p.bin", key, size}, {"b.json", side, 1000}};
        v.size = size + 1000;
        m.versions.push_back(v);
        Model s;
        s.category = Category::lora;
        s.name = "withside";
        ModelVersion sv;
        sv.label = "v1";
        sv.blob = side;
        sv.ext = ".safetensors";
        sv.sidecars = {{".p.bin", key, size}};
        s.versions.push_back(sv);
        auto txn = store().catalog().write();
        txn.put_model(m);
        txn.put_model(s);
        txn.commit();
    }

    fetch::Fetcher f(store(), fast_config());
    auto d = f.fetch(key);
    auto r = d->wait();
    ASSERT_TRUE(r.ok) << r.error;
    EXPECT_EQ(r.blob, real);
    EXPECT_EQ(*d->status().blob, real);
    EXPECT_FALSE(record(key));
    auto rec = record(real);
    ASSERT_TRUE(rec);
    EXPECT_FALSE(rec->placeholder);
    EXPECT_EQ(rec->state, BlobState::present);
    ASSERT_EQ(rec->sources.size(), 1u);
    EXPECT_EQ(rec->sources[0].url, url);
    auto txn = store().catalog().read();
    EXPECT_EQ(*txn.get_model("lora/single")->current_version().blob, real);
    EXPECT_EQ(txn.get_model("diffusers/tree")->current_version().tree[0].blob, real);
    EXPECT_EQ(txn.get_model("lora/withside")->current_version().sidecars[0].blob, real);
    EXPECT_TRUE(store().models_using(key).empty());
}

TEST_F(DownloadTest, SixteenThreadsShareOneDownload) {
    const std::uint64_t size = 2'000'000;
    Sha256 h = make_file("x.bin", size, 17);
    NginxServer nginx(www());
    add_remote(h, size, {nginx.url("x.bin")});

    auto cfg = fast_config();
    cfg.chunk_size = 4 << 20;    // one request per download
    cfg.limit_rate = 4'000'000;  // half a second: every thread asks while it runs
    fetch::Fetcher f(store(), cfg);
    std::vector<std::shared_ptr<fetch::Download>> got(16);
    std::vector<std::thread> ts;
    for (int i = 0; i < 16; ++i)
        ts.emplace_back([&, i] {
            got[i] = f.fetch(h);
            EXPECT_TRUE(got[i]->wait().ok);
        });
    for (auto& t : ts) t.join();
    for (auto& d : got) EXPECT_EQ(d.get(), got[0].get());
    EXPECT_EQ(nginx.requests_for("x.bin"), 1u);
    EXPECT_TRUE(blob_file_is(h, content("x.bin")));
}

TEST_F(DownloadTest, LimitRateIsRespected) {
    const std::uint64_t size = 3'000'000;
    Sha256 h = make_file("l.bin", size, 18);
    NginxServer nginx(www());
    add_remote(h, size, {nginx.url("l.bin")});

    auto cfg = fast_config();
    cfg.limit_rate = 1'500'000;
    fetch::Fetcher f(store(), cfg);
    auto t0 = Clock::now();
    auto r = f.fetch(h)->wait();
    ASSERT_TRUE(r.ok) << r.error;
    // Never faster than twice the limit (a loose bound that cannot fail by the machine being
    // slow): 3 MB at 1.5 MB/s is 2 s.
    EXPECT_GE(Clock::now() - t0, 1s);
}

TEST_F(DownloadTest, LimitRateCanBeSetWhileRunning) {
    const std::uint64_t size = 3'000'000;
    Sha256 h = make_file("l2.bin", size, 19);
    FaultServer srv(www());
    srv.set_faults("l2.bin", {Fault::http(503)});
    add_remote(h, size, {srv.url("l2.bin")});

    auto cfg = fast_config();
    cfg.backoff_initial = 400ms;  // no byte flows before the new limit applies
    fetch::Fetcher f(store(), cfg);
    auto t0 = Clock::now();
    auto d = f.fetch(h);
    f.set_limit_rate(1'500'000);
    auto r = d->wait();
    ASSERT_TRUE(r.ok) << r.error;
    EXPECT_GE(Clock::now() - t0, 1s);
}

TEST_F(DownloadTest, CacheQuotaEvictsTheLeastRecentlyUsedButNotTheNewBlob) {
    const std::uint64_t size = 400'000;
    Sha256 a = make_file("qa.bin", size, 23);
    Sha256 b = make_file("qb.bin", size, 24);
    NginxServer nginx(www());
    add_remote(a, size, {nginx.url("qa.bin")});
    add_remote(b, size, {nginx.url("qb.bin")});
    {
        fetch::Fetcher f(store(), fast_config());
        ASSERT_TRUE(f.fetch(a)->wait().ok);
    }
    {
        // Used long ago; the new download is the most recent either way.
        auto txn = store().catalog().write();
        auto r = *txn.get_blob(a);
        r.accessed = 1;
        txn.put_blob(a, r);
        txn.commit();
    }
    auto cfg = fast_config();
    cfg.cache_max_bytes = size + size / 2;  // room for one
    fetch::Fetcher f(store(), cfg);
    ASSERT_TRUE(f.fetch(b)->wait().ok);
    EXPECT_EQ(record(a)->state, BlobState::remote);
    EXPECT_FALSE(std::filesystem::exists(store().blobs().path_of(a)));
    EXPECT_EQ(record(b)->state, BlobState::present);
    EXPECT_TRUE(blob_file_is(b, content("qb.bin")));

    // With the room for one taken by the other, the new one stays anyway: evicting what was
    // just asked for would only make its reader fetch it again.
    ASSERT_TRUE(f.fetch(a)->wait().ok);
    EXPECT_EQ(record(a)->state, BlobState::present);
    EXPECT_EQ(record(b)->state, BlobState::remote);
}

TEST_F(DownloadTest, FailedFetchIsRecordedAndClearedBySuccess) {
    const std::uint64_t size = 50'000;
    Sha256 h = make_file("c.bin", size, 20);
    FaultServer srv(www());
    srv.set_faults("c.bin", {Fault::http(404)});
    add_remote(h, size, {srv.url("c.bin")});

    fetch::Fetcher f(store(), fast_config());
    auto r1 = f.fetch(h)->wait();
    ASSERT_FALSE(r1.ok);
    EXPECT_NE(record(h)->fetch_error.find("404"), std::string::npos);
    auto states = fetch::stored_fetch_states(store());
    ASSERT_EQ(states.size(), 1u);
    EXPECT_EQ(states[0].state, fetch::FetchState::failed);
    EXPECT_NE(states[0].error.find("404"), std::string::npos);

    // Asking again tries again.
    auto r2 = f.fetch(h)->wait();
    ASSERT_TRUE(r2.ok) << r2.error;
    EXPECT_TRUE(record(h)->fetch_error.empty());
    EXPECT_TRUE(fetch::stored_fetch_states(store()).empty());
}

TEST_F(DownloadTest, UnauthorizedNamesTheCredentials) {
    const std::uint64_t size = 5000;
    Sha256 h = make_file("a401.bin", size, 21);
    FaultServer srv(www());
    srv.set_faults("a401.bin", {Fault::http(401)});
    add_remote(h, size, {srv.url("a401.bin")});
    fetch::Fetcher f(store(), fast_config());
    auto r = f.fetch(h)->wait();
    EXPECT_FALSE(r.ok);
    EXPECT_NE(r.error.find("HTTP 401"), std::string::npos) << r.error;
    EXPECT_EQ(srv.requests_for("a401.bin"), 1u);
}

TEST_F(DownloadTest, SizeMismatchFailsTheSource) {
    Sha256 h = make_file("sz.bin", 10'000, 22);
    NginxServer nginx(www());
    add_remote(h, 12'000, {nginx.url("sz.bin")});
    fetch::Fetcher f(store(), fast_config());
    auto r = f.fetch(h)->wait();
    EXPECT_FALSE(r.ok);
    EXPECT_NE(r.error.find("10000 bytes"), std::string::npos) << r.error;
}

TEST_F(DownloadTest, UnknownKeyAndNoSourceAreRefused) {
    fetch::Fetcher f(store(), fast_config());
    try {
        f.fetch(sha256_of("nothing"));
        FAIL();
    } catch (const StoreError& e) {
        EXPECT_EQ(e.kind(), ErrorKind::not_found);
    }
    Sha256 h = sha256_of("local only");
    add_remote(h, 10, {});
    try {
        f.fetch(h);
        FAIL();
    } catch (const StoreError& e) {
        EXPECT_EQ(e.kind(), ErrorKind::bad_input);
    }
}

}  // namespace
}  // namespace modelfs::test
