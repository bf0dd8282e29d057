// The test servers themselves (tests/support/http_servers.h): the fetch tests trust what these
// servers do and what their logs say, so each promise is checked here against a real request.
#include <signal.h>

#include <cerrno>
#include <chrono>
#include <stdexcept>
#include <string>

#include <gtest/gtest.h>

#include "support/http_servers.h"
#include "support/test_env.h"

namespace modelfs::test {
namespace {

using modelfs::testing::read_file;
using modelfs::testing::TempDir;
using modelfs::testing::write_random_file;

constexpr std::uint64_t kSize = 300 * 1024;

class ServersTest : public ::testing::Test {
  protected:
    void SetUp() override {
        write_random_file(dir_ / "root/model.bin", kSize, 7);
        write_random_file(dir_ / "root/sub/other.bin", 1000, 8);
        data_ = read_file(dir_ / "root/model.bin");
    }
    std::filesystem::path root() const { return dir_ / "root"; }

    TempDir dir_{"modelfs-servers-test"};
    std::string data_;
};

bool process_exists(pid_t pid) {
    return ::kill(pid, 0) == 0 || errno != ESRCH;
}

// --- nginx ------------------------------------------------------------------------------------

TEST_F(ServersTest, NginxServesRangesWithETagAndLogsThem) {
    NginxServer nginx(root());
    EXPECT_EQ(nginx.url("model.bin"),
              "http://127.0.0.1:" + std::to_string(nginx.port()) + "/model.bin");
    EXPECT_EQ(nginx.url("/model.bin"), nginx.url("model.bin"));

    HttpResponse part = http_get(nginx.url("model.bin"), "1000-1999");
    EXPECT_EQ(part.status, 206);
    EXPECT_EQ(part.body, data_.substr(1000, 1000));
    EXPECT_EQ(part.header("Content-Range"), "bytes 1000-1999/" + std::to_string(kSize));
    EXPECT_FALSE(part.header("ETag").empty());

    HttpResponse suffix = http_get(nginx.url("model.bin"), "-10");
    EXPECT_EQ(suffix.status, 206);
    EXPECT_EQ(suffix.body, data_.substr(kSize - 10));

    EXPECT_EQ(http_get(nginx.url("model.bin"), std::to_string(kSize) + "-").status, 416);
    HttpResponse whole = http_get(nginx.url("model.bin"));
    EXPECT_EQ(whole.status, 200);
    EXPECT_EQ(whole.body, data_);
    EXPECT_EQ(whole.header("ETag"), part.header("ETag"));
    EXPECT_EQ(http_get(nginx.url("missing.bin")).status, 404);

    EXPECT_EQ(nginx.requests_for("model.bin"), 4u);
    EXPECT_EQ(nginx.requests_for("/model.bin"), 4u);
    EXPECT_EQ(nginx.requests_for("missing.bin"), 1u);
    EXPECT_EQ(nginx.requests_for("sub/other.bin"), 0u);
    auto reqs = nginx.requests();
    ASSERT_EQ(reqs.size(), 5u);
    EXPECT_EQ(reqs[0].method, "GET");
    EXPECT_EQ(reqs[0].path, "/model.bin");
    EXPECT_EQ(reqs[0].range, "bytes=1000-1999");
    EXPECT_EQ(reqs[0].status, 206);
    EXPECT_EQ(reqs[0].bytes, 1000u);
    EXPECT_EQ(reqs[3].range, "");
    EXPECT_EQ(reqs[3].bytes, kSize);
    EXPECT_EQ(reqs[4].status, 404);
    ASSERT_EQ(nginx.access_log().size(), 5u);
    EXPECT_EQ(nginx.access_log()[0], "GET /model.bin bytes=1000-1999 206 1000");
}

TEST_F(ServersTest, NginxCountsEveryRequestTheClientHasSeen) {
    NginxServer nginx(root());
    // Counted straight after each response: the log must never lag behind the client.
    for (std::size_t i = 1; i <= 20; ++i) {
        ASSERT_EQ(http_get(nginx.url("sub/other.bin"), "0-0").status, 206);
        ASSERT_EQ(nginx.requests_for("sub/other.bin"), i);
    }
}

TEST_F(ServersTest, TwoNginxServersGetTheirOwnPortsAndDieWithTheirObjects) {
    pid_t first_pid = 0;
    {
        NginxServer a(root()), b(root());
        EXPECT_NE(a.port(), b.port());
        EXPECT_EQ(http_get(a.url("sub/other.bin")).status, 200);
        EXPECT_EQ(a.requests_for("sub/other.bin"), 1u);
        EXPECT_EQ(b.requests_for("sub/other.bin"), 0u);
        first_pid = a.pid();
        ASSERT_GT(first_pid, 0);
        EXPECT_TRUE(process_exists(first_pid));
    }
    EXPECT_FALSE(process_exists(first_pid));
}

// --- fault server -----------------------------------------------------------------------------

TEST_F(ServersTest, FaultServerWithoutFaultsServesLikeAStaticServer) {
    FaultServer srv(root());
    HttpResponse part = http_get(srv.url("model.bin"), "100-299");
    EXPECT_EQ(part.status, 206);
    EXPECT_EQ(part.body, data_.substr(100, 200));
    EXPECT_EQ(part.header("Content-Range"), "bytes 100-299/" + std::to_string(kSize));
    EXPECT_EQ(part.header("Accept-Ranges"), "bytes");
    EXPECT_FALSE(part.header("ETag").empty());

    EXPECT_EQ(http_get(srv.url("model.bin"), "-5").body, data_.substr(kSize - 5));
    EXPECT_EQ(http_get(srv.url("model.bin"), "299000-").body, data_.substr(299000));
    HttpResponse past = http_get(srv.url("model.bin"), std::to_string(kSize) + "-");
    EXPECT_EQ(past.status, 416);
    EXPECT_EQ(past.header("Content-Range"), "bytes */" + std::to_string(kSize));
    HttpResponse whole = http_get(srv.url("/model.bin"));
    EXPECT_EQ(whole.status, 200);
    EXPECT_EQ(whole.body, data_);
    EXPECT_EQ(whole.header("Content-Length"), std::to_string(kSize));
    EXPECT_EQ(http_get(srv.url("sub/other.bin")).body, read_file(root() / "sub/other.bin"));
    EXPECT_EQ(http_get(srv.url("nothing-here")).status, 404);
    EXPECT_EQ(http_get(srv.url("../" + root().filename().string() + "/model.bin")).status, 404);

    EXPECT_EQ(srv.requests_for("model.bin"), 5u);
    auto log = srv.request_log();
    ASSERT_GE(log.size(), 2u);
    EXPECT_EQ(log[0], "GET /model.bin bytes=100-299");
    EXPECT_EQ(log[4], "GET /model.bin");
}

TEST_F(ServersTest, FaultServerAnswersHeadAndHonoursIfRange) {
    FaultServer srv(root());
    HttpResponse head = http_request("HEAD", srv.url("model.bin"));
    EXPECT_EQ(head.status, 200);
    EXPECT_EQ(head.body, "");
    EXPECT_EQ(head.header("Content-Length"), std::to_string(kSize));
    const std::string etag = head.header("ETag");
    ASSERT_FALSE(etag.empty());

    HttpResponse same =
        http_request("GET", srv.url("model.bin"), {"Range: bytes=10-19", "If-Range: " + etag});
    EXPECT_EQ(same.status, 206);
    EXPECT_EQ(same.body, data_.substr(10, 10));
    HttpResponse stale =
        http_request("GET", srv.url("model.bin"), {"Range: bytes=10-19", "If-Range: \"0-0\""});
    EXPECT_EQ(stale.status, 200);
    EXPECT_EQ(stale.body, data_);
}

TEST_F(ServersTest, FaultsAreTakenInOrderOnePerRequestThenServingIsNormal) {
    FaultServer srv(root());
    srv.set_faults("model.bin",
                   {Fault::http(503, 7), Fault::http(404), Fault::corrupt(), Fault::drop(1000)});

    HttpResponse r1 = http_get(srv.url("model.bin"));
    EXPECT_EQ(r1.status, 503);
    EXPECT_EQ(r1.header("Retry-After"), "7");
    HttpResponse r2 = http_get(srv.url("model.bin"));
    EXPECT_EQ(r2.status, 404);
    EXPECT_EQ(r2.header("Retry-After"), "");

    HttpResponse r3 = http_get(srv.url("model.bin"), "0-99");
    EXPECT_EQ(r3.status, 206);
    ASSERT_EQ(r3.body.size(), 100u);
    for (std::size_t i = 0; i < 100; ++i)
        ASSERT_EQ(static_cast<unsigned char>(r3.body[i]),
                  static_cast<unsigned char>(~static_cast<unsigned char>(data_[i])))
            << "byte " << i;

    // The connection goes down after 1000 bytes of the promised length: a transport error.
    EXPECT_THROW(http_get(srv.url("model.bin")), std::runtime_error);

    // Other paths were never affected, and the queue is now empty.
    EXPECT_EQ(http_get(srv.url("sub/other.bin")).status, 200);
    HttpResponse r5 = http_get(srv.url("model.bin"));
    EXPECT_EQ(r5.status, 200);
    EXPECT_EQ(r5.body, data_);

    EXPECT_EQ(srv.requests_for("model.bin"), 5u);
    EXPECT_EQ(srv.requests_for("sub/other.bin"), 1u);
    auto reqs = srv.requests();
    ASSERT_EQ(reqs.size(), 6u);
    EXPECT_EQ(reqs[0].status, 503);
    EXPECT_EQ(reqs[2].range, "bytes=0-99");
    EXPECT_EQ(reqs[3].status, 200);
    EXPECT_EQ(reqs[3].bytes, 1000u);
    EXPECT_EQ(reqs[5].bytes, kSize);
}

TEST_F(ServersTest, AFaultForOneMethodLetsTheOtherPass) {
    FaultServer srv(root());
    srv.set_faults("model.bin", {Fault::http(500).only("GET"), Fault::http(403)});
    // The HEAD passes the GET-only fault by; the GET takes it; the next request (any method)
    // takes the 403.
    EXPECT_EQ(http_request("HEAD", srv.url("model.bin")).status, 200);
    EXPECT_EQ(http_get(srv.url("model.bin"), "0-9").status, 500);
    EXPECT_EQ(http_request("HEAD", srv.url("model.bin")).status, 403);
    EXPECT_EQ(http_get(srv.url("model.bin"), "0-9").status, 206);
    auto log = srv.request_log();
    ASSERT_EQ(log.size(), 4u);
    EXPECT_EQ(log[0], "HEAD /model.bin");
    EXPECT_EQ(log[1], "GET /model.bin bytes=0-9");
}

TEST_F(ServersTest, StallSendsSomeBytesThenNothingThenHangsUp) {
    FaultServer srv(root());
    srv.set_faults("model.bin", {Fault::hang(0.3, 500)});
    auto t0 = std::chrono::steady_clock::now();
    EXPECT_THROW(http_get(srv.url("model.bin")), std::runtime_error);
    // The server holds the connection open, silent, for the whole stall.
    EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(300));
    auto reqs = srv.requests();
    ASSERT_EQ(reqs.size(), 1u);
    EXPECT_EQ(reqs[0].bytes, 500u);
}

TEST_F(ServersTest, SlowServesTheRightBytesNoFasterThanTheRate) {
    FaultServer srv(root());
    srv.set_faults("model.bin", {Fault::throttle(200 * 1024)});
    auto t0 = std::chrono::steady_clock::now();
    HttpResponse r = http_get(srv.url("model.bin"), "0-102399");  // 100 KiB at 200 KiB/s
    auto took = std::chrono::steady_clock::now() - t0;
    EXPECT_EQ(r.status, 206);
    EXPECT_EQ(r.body, data_.substr(0, 102400));
    // A lower bound only: the server sleeps to keep to the rate, so this cannot be flaky.
    EXPECT_GE(took, std::chrono::milliseconds(400));
}

TEST_F(ServersTest, IgnoreRangeAnswersWithTheWholeFile) {
    FaultServer srv(root());
    srv.set_faults("model.bin", {Fault::no_range()});
    HttpResponse r = http_get(srv.url("model.bin"), "10-19");
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.body, data_);
    EXPECT_EQ(http_get(srv.url("model.bin"), "10-19").status, 206);
}

TEST_F(ServersTest, ExtraHeadersResetAndTheProcessDiesWithItsObject) {
    pid_t pid = 0;
    {
        FaultServer srv(root());
        pid = srv.pid();
        srv.set_headers("model.bin", {"X-Linked-Etag: \"abc\"", "X-Linked-Size: 42"});
        HttpResponse r = http_get(srv.url("model.bin"), "0-0");
        EXPECT_EQ(r.header("X-Linked-Etag"), "\"abc\"");
        EXPECT_EQ(r.header("x-linked-size"), "42");
        EXPECT_EQ(http_get(srv.url("sub/other.bin"), "0-0").header("X-Linked-Etag"), "");

        srv.set_faults("model.bin", {Fault::http(401)});
        srv.reset();
        EXPECT_EQ(srv.requests_for("model.bin"), 0u);
        HttpResponse after = http_get(srv.url("model.bin"), "0-0");
        EXPECT_EQ(after.status, 206);
        EXPECT_EQ(after.header("X-Linked-Etag"), "");
        EXPECT_TRUE(process_exists(pid));
    }
    EXPECT_FALSE(process_exists(pid));
}

}  // namespace
}  // namespace modelfs::test
