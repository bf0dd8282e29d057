// Servers that try to abuse a download (issue 15): credentials stay with the origin they were
// made for when a server redirects, a trickling server meets the transfer deadline, sizes beyond
// the catalogued one (or beyond any model file) are refused at once, and the partial state that
// names a source URL is private. Real servers on 127.0.0.1 and 127.0.0.2 (two hosts to a client,
// both loopback).
#include <sys/stat.h>

#include <chrono>
#include <optional>
#include <thread>

#include "fetch_env.h"
#include "modelfs/fetch/fetcher.h"
#include "modelfs/fetch/probe.h"
#include "modelfs/fetch/redirect.h"
#include "modelfs/store/errors.h"
#include "modelfs/store/secrets.h"
#include "support/http_servers.h"

namespace modelfs::test {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr std::uint64_t kTwoTo62 = std::uint64_t{1} << 62;

// The download's result once it ended, waiting at most `limit`; nullopt when it still runs (the
// Fetcher's destructor then stops it). A bound for tests of downloads that once never ended.
std::optional<fetch::FetchResult> result_within(const std::shared_ptr<fetch::Download>& d,
                                                std::chrono::seconds limit) {
    const auto until = Clock::now() + limit;
    while (Clock::now() < until) {
        auto s = d->status().state;
        if (s == fetch::FetchState::done || s == fetch::FetchState::failed) return d->wait();
        std::this_thread::sleep_for(50ms);
    }
    return std::nullopt;
}

std::vector<LoggedRequest> gets_of(const FaultServer& s, const std::string& path) {
    std::vector<LoggedRequest> out;
    for (const auto& r : s.requests())
        if (r.method == "GET" && r.path == path) out.push_back(r);
    return out;
}

// S3 credentials with a session token, signing for the fault server at `endpoint` (which serves
// BUCKET/KEY as the file www/BUCKET/KEY and ignores the signature).
fetch::FetchConfig s3_config(const std::string& endpoint) {
    auto cfg = fast_config();
    cfg.s3.endpoint = endpoint;
    cfg.s3.access_key = "AKIDEXAMPLE";
    cfg.s3.secret_key = "wJalrXUtnFEMI-secret";
    cfg.s3.session_token = "SESSION-TOKEN-SECRET";
    return cfg;
}

std::string endpoint_of(const FaultServer& s) {
    std::string u = s.url("");
    u.pop_back();  // the trailing '/'
    return u;
}

class HostileServerTest : public FetchEnv {};

// --- redirects ------------------------------------------------------------------------------

TEST_F(HostileServerTest, S3CredentialsStayOffARedirectToAnotherHost) {
    const std::uint64_t size = 600'000;
    Sha256 h = make_file("bkt/model.bin", size, 41);
    FaultServer origin(www());
    FaultServer other(www(), "127.0.0.2");
    // Every GET of the object is sent on to another host, as a presigned URL (the way a hub
    // sends downloads to its CDN).
    origin.set_faults(
        "bkt/model.bin",
        std::vector<Fault>(
            50, Fault::redirect_to(other.url("bkt/model.bin?X-Amz-Signature=abc")).only("GET")));
    add_remote(h, size, {"s3://bkt/model.bin"});

    fetch::Fetcher f(store(), s3_config(endpoint_of(origin)));
    auto r = f.fetch(h)->wait();
    ASSERT_TRUE(r.ok) << r.error;  // the redirect still works, without our headers
    EXPECT_TRUE(blob_file_is(h, content("bkt/model.bin")));

    auto asked = gets_of(origin, "/bkt/model.bin");
    ASSERT_FALSE(asked.empty());
    for (const auto& q : asked) {  // the credentials were there to keep
        EXPECT_EQ(q.header("x-amz-security-token").value_or(""), "SESSION-TOKEN-SECRET");
        EXPECT_TRUE(q.header("authorization").has_value());
    }
    auto sent_on = gets_of(other, "/bkt/model.bin");
    ASSERT_FALSE(sent_on.empty());
    for (const auto& q : sent_on) {
        EXPECT_FALSE(q.header("x-amz-security-token")) << *q.header("x-amz-security-token");
        EXPECT_FALSE(q.header("authorization")) << *q.header("authorization");
        EXPECT_FALSE(q.header("x-amz-content-sha256"));
    }
}

TEST_F(HostileServerTest, HfTokenStaysOffARedirectToAnotherPort) {
    const std::uint64_t size = 300'000;
    Sha256 h = make_file("org/model/resolve/main/w.bin", size, 42);
    FaultServer hub(www());
    FaultServer cdn(www());  // the same host, another port: another origin
    hub.set_faults("org/model/resolve/main/w.bin",
                   std::vector<Fault>(50, Fault::redirect_to(cdn.url("cdn/w.bin")).only("GET")));
    make_file("cdn/w.bin", size, 42);
    add_remote(h, size, {"hf://org/model/w.bin"});

    auto cfg = fast_config();
    cfg.hf_endpoint = endpoint_of(hub);
    cfg.hf_token = "hf_SECRET";
    fetch::Fetcher f(store(), cfg);
    auto r = f.fetch(h)->wait();
    ASSERT_TRUE(r.ok) << r.error;
    for (const auto& q : gets_of(hub, "/org/model/resolve/main/w.bin"))
        EXPECT_EQ(q.header("authorization").value_or(""), "Bearer hf_SECRET");
    auto at_cdn = gets_of(cdn, "/cdn/w.bin");
    ASSERT_FALSE(at_cdn.empty());
    for (const auto& q : at_cdn)
        EXPECT_FALSE(q.header("authorization")) << *q.header("authorization");
}

TEST_F(HostileServerTest, CredentialsFollowARedirectWithinTheirOrigin) {
    const std::uint64_t size = 300'000;
    Sha256 h = make_file("bkt/old.bin", size, 43);
    make_file("bkt/new.bin", size, 43);
    FaultServer origin(www());
    origin.set_faults("bkt/old.bin",
                      std::vector<Fault>(50, Fault::redirect_to(origin.url("bkt/new.bin"), 301)));
    add_remote(h, size, {"s3://bkt/old.bin"});

    fetch::Fetcher f(store(), s3_config(endpoint_of(origin)));
    auto r = f.fetch(h)->wait();
    ASSERT_TRUE(r.ok) << r.error;
    auto moved = gets_of(origin, "/bkt/new.bin");
    ASSERT_FALSE(moved.empty());
    for (const auto& q : moved) {
        EXPECT_EQ(q.header("x-amz-security-token").value_or(""), "SESSION-TOKEN-SECRET");
        EXPECT_TRUE(q.header("authorization").has_value());
    }
}

TEST_F(HostileServerTest, ProbeKeepsCredentialsOffAnotherHost) {
    make_file("bkt/p.bin", 1000, 44);
    FaultServer origin(www());
    FaultServer other(www(), "127.0.0.2");
    origin.set_faults("bkt/p.bin", {Fault::redirect_to(other.url("bkt/p.bin"))});
    auto info = fetch::probe("s3://bkt/p.bin", s3_config(endpoint_of(origin)));
    EXPECT_EQ(info.size.value_or(0), 1000u);
    EXPECT_EQ(info.final_url, other.url("bkt/p.bin"));
    auto reqs = other.requests();
    ASSERT_EQ(reqs.size(), 1u);
    EXPECT_FALSE(reqs[0].header("x-amz-security-token"));
    EXPECT_FALSE(reqs[0].header("authorization"));
}

TEST_F(HostileServerTest, TooManyRedirectsFailTheSource) {
    const std::uint64_t size = 1000;
    Sha256 h = make_file("loop.bin", size, 45);
    FaultServer srv(www());
    srv.set_faults("loop.bin", std::vector<Fault>(100, Fault::redirect_to(srv.url("loop.bin"))));
    add_remote(h, size, {srv.url("loop.bin")});
    fetch::Fetcher f(store(), fast_config());
    auto r = f.fetch(h)->wait();
    ASSERT_FALSE(r.ok);
    EXPECT_NE(r.error.find("redirects"), std::string::npos) << r.error;
    EXPECT_EQ(gets_of(srv, "/loop.bin").size(), 1u + fetch::kMaxRedirects);
}

// The rule itself, for what the fixtures cannot serve (no TLS here): https -> http is another
// origin.
TEST(RedirectRule, CredentialsGoToTheSameOriginOnly) {
    fetch::HttpTarget t;
    t.url = "https://Hub.example:443/org/m/resolve/main/w.bin";
    t.headers = {"Authorization: Bearer hf_x", "x-amz-security-token: tok"};
    t.aws_sigv4 = "aws:amz:us-east-1:s3";
    t.userpwd = "AK:SK";
    t.host = "hub.example:443";

    auto same = fetch::redirect_target(t, "https://hub.example/other/path?x=1");
    ASSERT_TRUE(same);
    EXPECT_EQ(same->headers, t.headers);
    EXPECT_EQ(same->aws_sigv4, t.aws_sigv4);
    EXPECT_EQ(same->url, "https://hub.example/other/path?x=1");

    for (const char* elsewhere :
         {"http://hub.example/org/m/w.bin",               // downgraded to plain http
          "https://hub.example:8443/w.bin",               // another port
          "https://cdn.example/w.bin?X-Amz-Signature=s",  // another host
          "https://hub.example.evil.test/w.bin", "https://evil.test/@hub.example/w.bin"}) {
        auto o = fetch::redirect_target(t, elsewhere);
        ASSERT_TRUE(o) << elsewhere;
        EXPECT_TRUE(o->headers.empty()) << elsewhere;
        EXPECT_TRUE(o->aws_sigv4.empty()) << elsewhere;
        EXPECT_TRUE(o->userpwd.empty()) << elsewhere;
        EXPECT_EQ(o->url, elsewhere);
    }
    EXPECT_EQ(fetch::redirect_target(t, "https://cdn.example:444/x")->host, "cdn.example:444");
    EXPECT_FALSE(fetch::redirect_target(t, "file:///etc/passwd"));
    EXPECT_FALSE(fetch::redirect_target(t, "ftp://hub.example/w.bin"));
}

// --- deadlines ------------------------------------------------------------------------------

// 2 B/s: just above the low-speed limit (1 B/s), so only the deadline ends it.
TEST_F(HostileServerTest, TricklingServerFailsAtTheTransferDeadline) {
    const std::uint64_t size = 64 << 10;
    Sha256 h = make_file("trickle.bin", size, 46);
    FaultServer srv(www());
    srv.set_faults("trickle.bin", std::vector<Fault>(10, Fault::throttle(2)));
    add_remote(h, size, {srv.url("trickle.bin") + "?X-Amz-Signature=SIGNED-SECRET"});

    auto cfg = fast_config();
    cfg.transfer_timeout = 1s;  // per chunk: one request here
    cfg.retries = 1;
    fetch::Fetcher f(store(), cfg);
    auto r = result_within(f.fetch(h), 120s);
    ASSERT_TRUE(r) << "a 2 B/s server kept the download going past every deadline";
    ASSERT_FALSE(r->ok);
    EXPECT_NE(r->error.find("fetch.transfer_timeout"), std::string::npos) << r->error;
    EXPECT_NE(r->error.find(srv.url("trickle.bin")), std::string::npos) << r->error;
    EXPECT_EQ(r->error.find("SIGNED-SECRET"), std::string::npos) << r->error;
    EXPECT_EQ(gets_of(srv, "/trickle.bin").size(), 2u);  // the request and its one retry
    EXPECT_FALSE(blob_file_is(h, content("trickle.bin")));
    EXPECT_NE(record(h)->fetch_error.find("fetch.transfer_timeout"), std::string::npos);
}

TEST_F(HostileServerTest, PastTheDeadlineTheNextMirrorIsTried) {
    const std::uint64_t size = 64 << 10;
    Sha256 h = make_file("slow.bin", size, 47);
    make_file("mirror.bin", size, 47);
    FaultServer srv(www());
    srv.set_faults("slow.bin", std::vector<Fault>(10, Fault::throttle(2)));
    add_remote(h, size, {srv.url("slow.bin"), srv.url("mirror.bin")});

    auto cfg = fast_config();
    cfg.transfer_timeout = 1s;
    cfg.retries = 0;
    fetch::Fetcher f(store(), cfg);
    auto r = result_within(f.fetch(h), 120s);
    ASSERT_TRUE(r) << "a 2 B/s server kept the download going past every deadline";
    ASSERT_TRUE(r->ok) << r->error;
    EXPECT_TRUE(blob_file_is(h, content("mirror.bin")));
    EXPECT_EQ(gets_of(srv, "/slow.bin").size(), 1u);
}

// --- sizes ----------------------------------------------------------------------------------

TEST_F(HostileServerTest, ContentLengthOf2To62IsRefusedAtOnce) {
    const std::uint64_t size = 64 << 10;
    make_file("huge.bin", size, 48);
    FaultServer srv(www());
    srv.set_faults("huge.bin", std::vector<Fault>(10, Fault::announce_length(kTwoTo62)));
    const std::string url = srv.url("huge.bin");
    Sha256 key = sha256_of("modelfs-placeholder:" + url);
    add_remote(key, 0, {url}, false, /*placeholder=*/true);  // no catalogued size

    fetch::Fetcher f(store(), fast_config());
    auto r = result_within(f.fetch(key), 120s);
    ASSERT_TRUE(r);
    ASSERT_FALSE(r->ok);
    EXPECT_NE(r->error.find(std::to_string(kTwoTo62)), std::string::npos) << r->error;
    EXPECT_NE(r->error.find("refused"), std::string::npos) << r->error;
    EXPECT_EQ(gets_of(srv, "/huge.bin").size(), 1u);  // refused, not retried
    // Nothing was reserved for it.
    for (const auto& e : std::filesystem::directory_iterator(store().partial_dir()))
        EXPECT_LE(std::filesystem::file_size(e.path()), size) << e.path();
}

TEST_F(HostileServerTest, ProbeRefusesAnAbsurdSize) {
    make_file("huge.bin", 1000, 49);
    FaultServer srv(www());
    srv.set_faults("huge.bin", {Fault::announce_length(kTwoTo62)});
    try {
        auto info = fetch::probe(srv.url("huge.bin"), fast_config());
        FAIL() << "accepted a size of " << info.size.value_or(0);
    } catch (const StoreError& e) {
        EXPECT_EQ(e.kind(), ErrorKind::bad_input);
        EXPECT_NE(std::string(e.what()).find("1 TiB"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find(srv.url("huge.bin")), std::string::npos) << e.what();
    }
}

TEST_F(HostileServerTest, BodyLongerThanTheFileIsCutAndRefused) {
    const std::uint64_t size = 200'000;
    Sha256 h = make_file("long.bin", size, 50);
    FaultServer srv(www());
    srv.set_faults("long.bin", std::vector<Fault>(10, Fault::longer_body(100'000)));
    add_remote(h, size, {srv.url("long.bin")});

    fetch::Fetcher f(store(), fast_config());
    auto r = result_within(f.fetch(h), 120s);
    ASSERT_TRUE(r);
    ASSERT_FALSE(r->ok);
    EXPECT_NE(r->error.find("more than " + std::to_string(size) + " bytes"), std::string::npos)
        << r->error;
    EXPECT_EQ(gets_of(srv, "/long.bin").size(), 1u);  // refused at once, not retried
    for (const auto& e : std::filesystem::directory_iterator(store().partial_dir()))
        EXPECT_LE(std::filesystem::file_size(e.path()), size) << e.path();
}

TEST_F(HostileServerTest, StreamOfUnknownLengthBelowTheLimitIsAccepted) {
    // A placeholder streamed without Content-Length is bounded by the size limit only (1 TiB, too
    // much to send in a test): one below it is a file like any other.
    const std::uint64_t size = 100'000;
    make_file("nolen.bin", size, 51);
    FaultServer srv(www());
    srv.set_faults("nolen.bin", {Fault::longer_body(0)});
    const std::string url = srv.url("nolen.bin");
    Sha256 key = sha256_of("modelfs-placeholder:" + url);
    add_remote(key, 0, {url}, false, /*placeholder=*/true);
    fetch::Fetcher f(store(), fast_config());
    auto r = result_within(f.fetch(key), 120s);
    ASSERT_TRUE(r);
    EXPECT_TRUE(r->ok) << r->error;
}

// --- partial state --------------------------------------------------------------------------

TEST_F(HostileServerTest, PartialStateIsPrivateFromItsCreation) {
    const std::uint64_t size = 400'000;
    Sha256 h = make_file("st.bin", size, 52);
    FaultServer srv(www());
    srv.set_faults("st.bin", {Fault::throttle(40'000)});
    add_remote(h, size, {srv.url("st.bin") + "?X-Amz-Signature=SIGNED"});
    const auto state = store().partial_dir() / (h.hex() + ".state");

    auto cfg = fast_config();
    cfg.chunk_size = 1 << 20;
    fetch::Fetcher f(store(), cfg);
    auto d = f.fetch(h);
    ASSERT_TRUE(modelfs::testing::eventually([&] { return std::filesystem::exists(state); }, 20s));
    struct stat st {};
    ASSERT_EQ(::stat(state.c_str(), &st), 0);
    // Others never read it; the group only in a store whose folder lets the group in.
    EXPECT_EQ(st.st_mode & 0777, secret_file_mode(store().root()))
        << std::oct << (st.st_mode & 0777);
    EXPECT_EQ(st.st_mode & 0007, 0u);
    EXPECT_TRUE(d->wait().ok);
}

}  // namespace
}  // namespace modelfs::test
