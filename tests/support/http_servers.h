// Real HTTP servers on 127.0.0.1 for the fetch tests: a private nginx (a well-behaved static
// server: Range, ETag), our fault-injecting server (tests/support/fault_server.py), and the
// client side of the Ceph radosgw S3 fixture that ctest starts once per run (tests/s3/).
//
// Each server is a child process on a free port, owned by its object: the destructor kills and
// reaps it, whatever the test did. A test process that dies first takes its servers with it
// (parent-death signal), so none outlive a crash.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "support/test_env.h"

namespace modelfs::test {

// One request as a server saw it. `range` is the Range header as sent ("" when none).
struct LoggedRequest {
    std::string method;  // "GET", "HEAD"
    std::string path;    // "/dir/file.bin": decoded, without the query string
    std::string range;
    int status = 0;
    std::uint64_t bytes = 0;           // body bytes sent (so far, for the fault server)
    std::vector<std::string> headers;  // request headers "Name: value" (fault server only)
    // The value of request header `name` (case-insensitive); nullopt when it was not sent.
    std::optional<std::string> header(std::string_view name) const;
};

// A child process with stdout to a pipe (when asked) and stderr to a file; SIGKILLed and reaped
// on destruction. Exposed for the servers below; tests normally do not need it.
class ChildProcess {
  public:
    ChildProcess() = default;
    ChildProcess(const std::string& program, const std::vector<std::string>& args,
                 const std::filesystem::path& stderr_file, bool pipe_stdout);
    ~ChildProcess();
    ChildProcess(ChildProcess&& o) noexcept;
    ChildProcess& operator=(ChildProcess&& o) noexcept;
    ChildProcess(const ChildProcess&) = delete;
    ChildProcess& operator=(const ChildProcess&) = delete;

    pid_t pid() const { return pid_; }
    // True while it runs; once it has exited, false (and exit_status() says how).
    bool running();
    int exit_status() const { return status_; }  // waitpid status
    // One line of its stdout, waiting at most `timeout_ms`; nullopt on timeout or end of file.
    std::optional<std::string> read_line(int timeout_ms);
    // SIGTERM, up to `grace_ms` to exit, then SIGKILL; always reaped.
    void stop(int grace_ms = 2000);

  private:
    pid_t pid_ = 0;
    int out_fd_ = -1;
    int status_ = 0;
    std::string pending_;
};

// A private nginx serving `root` (the files themselves; nginx-light, single process).
// Its access log has one line per request: "METHOD URI RANGE STATUS BYTES", RANGE being the
// Range header or "-". nginx writes a line when a request ends (after its last byte is sent, or
// when the client hangs up); the calls below first wait (up to half a second) until no request
// but their own is in progress, so a request whose response a client has received is counted.
class NginxServer {
  public:
    explicit NginxServer(std::filesystem::path root);
    ~NginxServer();
    NginxServer(const NginxServer&) = delete;
    NginxServer& operator=(const NginxServer&) = delete;

    // "http://127.0.0.1:PORT/" + path (a leading '/' in `path` is not doubled).
    std::string url(std::string_view path) const;
    std::uint16_t port() const { return port_; }
    const std::filesystem::path& root() const { return root_; }

    // Access-log lines for `path` ("a.bin" or "/a.bin"; query strings ignored), any method.
    std::size_t requests_for(std::string_view path) const;
    std::vector<std::string> access_log() const;
    std::vector<LoggedRequest> requests() const;
    // nginx's own error log, for failure messages.
    std::string error_log() const;
    pid_t pid() const { return proc_.pid(); }

  private:
    // Waits (briefly) until every request nginx has finished is in the access log.
    void settle() const;

    std::filesystem::path root_;
    modelfs::testing::TempDir dir_{"modelfs-nginx"};
    std::uint16_t port_ = 0;
    ChildProcess proc_;
};

// A misbehaviour of the fault server, for one request. Kinds:
//   drop_after    headers, then `after_bytes` body bytes, then the connection is shut down
//   status        answers `status` (404, 401, 403, 429, 500, 503, ...) with a short text body,
//                 and Retry-After: `retry_after` when it is >= 0
//   wrong_bytes   the right status and length, every body byte inverted
//   stall         headers and `after_bytes` body bytes, then nothing for `seconds`, then the
//                 connection is shut down
//   slow          the right bytes at `bytes_per_second`
//   ignore_range  200 and the whole file whatever the Range header says (a server that cannot
//                 resume)
//   redirect      answers `status` (302 when 0) with Location: `location`
//   lie_length    200 announcing Content-Length `content_length`, then the file; then the
//                 connection is shut down
//   overlong      200 without Content-Length, the file and `after_bytes` more bytes; then the
//                 connection is shut down
// Every request for the path (HEAD included) takes the next fault, unless `method` is set: then
// only requests with that method take it and others pass it by, leaving it queued.
struct Fault {
    enum class Kind {
        drop_after,
        status,
        wrong_bytes,
        stall,
        slow,
        ignore_range,
        redirect,
        lie_length,
        overlong
    } kind;
    int status = 0;
    std::uint64_t after_bytes = 0;
    std::string location = {};
    std::uint64_t content_length = 0;
    int retry_after = -1;
    double seconds = 0;
    std::uint64_t bytes_per_second = 0;
    std::string method = {};  // "GET" or "HEAD"; empty: any request

    static Fault drop(std::uint64_t after_bytes) {
        Fault f{Kind::drop_after};
        f.after_bytes = after_bytes;
        return f;
    }
    static Fault http(int status, int retry_after = -1) {
        Fault f{Kind::status};
        f.status = status;
        f.retry_after = retry_after;
        return f;
    }
    static Fault corrupt() { return Fault{Kind::wrong_bytes}; }
    static Fault hang(double seconds, std::uint64_t after_bytes = 0) {
        Fault f{Kind::stall};
        f.seconds = seconds;
        f.after_bytes = after_bytes;
        return f;
    }
    static Fault throttle(std::uint64_t bytes_per_second) {
        Fault f{Kind::slow};
        f.bytes_per_second = bytes_per_second;
        return f;
    }
    static Fault no_range() { return Fault{Kind::ignore_range}; }
    static Fault redirect_to(std::string url, int status = 302) {
        Fault f{Kind::redirect};
        f.location = std::move(url);
        f.status = status;
        return f;
    }
    static Fault announce_length(std::uint64_t content_length) {
        Fault f{Kind::lie_length};
        f.content_length = content_length;
        return f;
    }
    static Fault longer_body(std::uint64_t extra_bytes) {
        Fault f{Kind::overlong};
        f.after_bytes = extra_bytes;
        return f;
    }
    // The same fault, taken only by requests with this method.
    Fault only(std::string m) const {
        Fault f = *this;
        f.method = std::move(m);
        return f;
    }
};

// Our Python file server (tests/support/fault_server.py) serving `root`: GET and HEAD, one byte
// range per request (206, 416 past the end, Content-Range), a strong ETag "mtime-size" as nginx
// makes it, Accept-Ranges, If-Range; plus faults queued per path.
class FaultServer {
  public:
    // `host`: the loopback address it listens on and its URLs name (127.0.0.2 is another host
    // than 127.0.0.1 to a client, on the same machine).
    explicit FaultServer(std::filesystem::path root, std::string host = "127.0.0.1");
    ~FaultServer();
    FaultServer(const FaultServer&) = delete;
    FaultServer& operator=(const FaultServer&) = delete;

    std::string url(std::string_view path) const;
    std::uint16_t port() const { return port_; }
    const std::filesystem::path& root() const { return root_; }

    // Requests for `path` so far, any method, counted on arrival (also those a fault cut short).
    std::size_t requests_for(std::string_view path) const;
    // Replaces the queue of faults of `path`; request N for it after this takes faults[N].
    void set_faults(std::string_view path, std::vector<Fault> faults);
    // Extra response headers ("Name: value") on every answer for `path` (e.g. X-Linked-Etag).
    void set_headers(std::string_view path, std::vector<std::string> headers);
    // Forgets every fault, header and logged request.
    void reset();
    // "GET /path bytes=a-b" (or "GET /path" without a Range), in arrival order.
    std::vector<std::string> request_log() const;
    std::vector<LoggedRequest> requests() const;
    // The most file requests (GET, HEAD) it was answering at one moment since it started or
    // was reset: how many connections a client really had open at once.
    std::size_t peak_in_flight() const;
    pid_t pid() const { return proc_.pid(); }

  private:
    std::string control(std::string_view method, const std::string& what,
                        const std::string& body) const;

    std::filesystem::path root_;
    std::string host_;
    modelfs::testing::TempDir dir_{"modelfs-faultsrv"};
    std::uint16_t port_ = 0;
    ChildProcess proc_;
};

// The Ceph radosgw that ctest starts once for the S3 tests (fixture "radosgw", see
// tests/CMakeLists.txt and tests/support/radosgw.sh). Reads the endpoint and the credentials the
// start script wrote; throws std::runtime_error saying how to start it when they are missing.
// Requests are signed with SigV4 by libcurl (path-style URLs).
class S3Fixture {
  public:
    // The file from $MODELFS_S3_ENV, else the build tree's (MODELFS_S3_ENV_FILE).
    S3Fixture();
    explicit S3Fixture(const std::filesystem::path& env_file);

    const std::string& endpoint() const { return endpoint_; }  // "http://127.0.0.1:PORT"
    const std::string& access_key() const { return access_; }
    const std::string& secret_key() const { return secret_; }
    const std::string& region() const { return region_; }

    // A bucket name no other test (or parallel test programme) uses: "PREFIX-<random>".
    static std::string unique_bucket(std::string_view prefix);
    // Creates `bucket` (already there and ours: fine). Throws with the server's answer otherwise.
    void create_bucket(std::string_view bucket) const;
    // `headers` adds request headers ("x-amz-meta-sha256: HEX" stores user metadata).
    void put_object(std::string_view bucket, std::string_view key,
                    const std::filesystem::path& file,
                    const std::vector<std::string>& headers = {}) const;
    // "ENDPOINT/BUCKET/KEY"
    std::string object_url(std::string_view bucket, std::string_view key) const;

    struct Response {
        long status = 0;
        std::string body;
    };
    // A GET signed with `secret` (default: the right one); `range` adds a Range header.
    Response get_object(std::string_view bucket, std::string_view key,
                        std::optional<std::string> secret = std::nullopt,
                        std::string_view range = {}) const;
    // An unsigned GET.
    Response get_anonymous(std::string_view bucket, std::string_view key) const;

  private:
    std::string endpoint_, access_, secret_, region_ = "us-east-1";
};

// HTTP GET of `url` with libcurl: status and body (throws on transport errors). For tests of
// the fixtures and quick checks; `range` adds "Range: bytes=RANGE" when not empty.
struct HttpResponse {
    long status = 0;
    std::string body;
    std::vector<std::string> headers;                 // "Name: value", as received
    std::string header(std::string_view name) const;  // case-insensitive; "" when absent
};
HttpResponse http_get(const std::string& url, std::string_view range = {});
// Any method ("HEAD" asks for no body) with extra "Name: value" headers.
HttpResponse http_request(const std::string& method, const std::string& url,
                          const std::vector<std::string>& headers = {});

}  // namespace modelfs::test
