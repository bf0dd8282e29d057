#include "support/http_servers.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace stdfs = std::filesystem;
using namespace std::chrono_literals;

namespace modelfs::test {

namespace {

// --- small helpers ----------------------------------------------------------------------------

std::string read_text(const stdfs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

std::string tail(const std::string& s, std::size_t n = 4000) {
    return s.size() <= n ? s : "..." + s.substr(s.size() - n);
}

// A program by absolute path, else the first match on $PATH; "" when there is none.
std::string find_program(const std::string& name) {
    if (name.find('/') != std::string::npos) return ::access(name.c_str(), X_OK) == 0 ? name : "";
    const char* path = std::getenv("PATH");
    std::stringstream dirs(path ? path : "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin");
    for (std::string dir; std::getline(dirs, dir, ':');) {
        if (dir.empty()) continue;
        std::string cand = dir + "/" + name;
        if (::access(cand.c_str(), X_OK) == 0) return cand;
    }
    return "";
}

std::string percent_decode(std::string_view s) {
    std::string out;
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '%' && i + 2 < s.size() &&
            std::isxdigit(static_cast<unsigned char>(s[i + 1])) &&
            std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
            out.push_back(
                static_cast<char>(std::stoi(std::string(s.substr(i + 1, 2)), nullptr, 16)));
            i += 2;
        } else {
            out.push_back(s[i]);
        }
    }
    return out;
}

// "a.bin", "/a.bin", "/a.bin?x=1", "a%20b" -> "/a.bin", "/a b": how the logs name paths.
std::string normalize_path(std::string_view p) {
    if (auto q = p.find('?'); q != std::string_view::npos) p = p.substr(0, q);
    std::string out = percent_decode(p);
    if (out.empty() || out[0] != '/') out.insert(out.begin(), '/');
    return out;
}

std::string join_url(std::uint16_t port, std::string_view path,
                     std::string_view host = "127.0.0.1") {
    while (!path.empty() && path.front() == '/') path.remove_prefix(1);
    return "http://" + std::string(host) + ":" + std::to_string(port) + "/" + std::string(path);
}

// A port nobody listens on right now. Another process may take it before the server binds it:
// the servers retry on a bind failure.
std::uint16_t free_port() {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) throw std::runtime_error(std::string("socket: ") + std::strerror(errno));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    socklen_t len = sizeof a;
    if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
        int e = errno;
        ::close(fd);
        throw std::runtime_error(std::string("bind 127.0.0.1:0: ") + std::strerror(e));
    }
    ::close(fd);
    return ntohs(a.sin_port);
}

bool accepts_connections(std::uint16_t port) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(port);
    bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    ::close(fd);
    return ok;
}

// --- libcurl ----------------------------------------------------------------------------------

void curl_init_once() {
    static std::once_flag once;
    std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

struct CurlDeleter {
    void operator()(CURL* c) const { curl_easy_cleanup(c); }
};
struct SlistDeleter {
    void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};
using CurlPtr = std::unique_ptr<CURL, CurlDeleter>;
using SlistPtr = std::unique_ptr<curl_slist, SlistDeleter>;

struct Request {
    std::string method = "GET";
    std::string url;
    std::vector<std::string> headers;
    const std::string* body = nullptr;  // sent as is (PUT/POST)
    std::string sigv4;                  // CURLOPT_AWS_SIGV4
    std::string user, password;
    long timeout_s = 30;
};

std::size_t append_body(char* p, std::size_t size, std::size_t n, void* ud) {
    static_cast<std::string*>(ud)->append(p, size * n);
    return size * n;
}

std::size_t append_header(char* p, std::size_t size, std::size_t n, void* ud) {
    std::string line(p, size * n);
    while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.pop_back();
    auto* v = static_cast<std::vector<std::string>*>(ud);
    // A new status line (after a 100 Continue, or a redirect) starts a new header block.
    if (line.rfind("HTTP/", 0) == 0)
        v->clear();
    else if (!line.empty())
        v->push_back(line);
    return size * n;
}

HttpResponse perform(const Request& r) {
    curl_init_once();
    CurlPtr c(curl_easy_init());
    if (!c) throw std::runtime_error("curl_easy_init failed");
    HttpResponse out;
    SlistPtr headers;
    for (const auto& h : r.headers) {
        curl_slist* n = curl_slist_append(headers.get(), h.c_str());
        if (!n) throw std::runtime_error("curl_slist_append failed");
        (void)headers.release();
        headers.reset(n);
    }
    curl_easy_setopt(c.get(), CURLOPT_URL, r.url.c_str());
    curl_easy_setopt(c.get(), CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c.get(), CURLOPT_NOPROXY, "*");
    curl_easy_setopt(c.get(), CURLOPT_TIMEOUT, r.timeout_s);
    curl_easy_setopt(c.get(), CURLOPT_WRITEFUNCTION, append_body);
    curl_easy_setopt(c.get(), CURLOPT_WRITEDATA, &out.body);
    curl_easy_setopt(c.get(), CURLOPT_HEADERFUNCTION, append_header);
    curl_easy_setopt(c.get(), CURLOPT_HEADERDATA, &out.headers);
    if (r.method == "HEAD") {
        curl_easy_setopt(c.get(), CURLOPT_NOBODY, 1L);
    } else if (r.method != "GET") {
        curl_easy_setopt(c.get(), CURLOPT_CUSTOMREQUEST, r.method.c_str());
    }
    if (r.body) {
        curl_easy_setopt(c.get(), CURLOPT_POSTFIELDS, r.body->data());
        curl_easy_setopt(c.get(), CURLOPT_POSTFIELDSIZE_LARGE,
                         static_cast<curl_off_t>(r.body->size()));
    }
    if (!r.sigv4.empty()) {
        curl_easy_setopt(c.get(), CURLOPT_AWS_SIGV4, r.sigv4.c_str());
        curl_easy_setopt(c.get(), CURLOPT_USERNAME, r.user.c_str());
        curl_easy_setopt(c.get(), CURLOPT_PASSWORD, r.password.c_str());
    }
    if (headers) curl_easy_setopt(c.get(), CURLOPT_HTTPHEADER, headers.get());
    CURLcode rc = curl_easy_perform(c.get());
    if (rc != CURLE_OK)
        throw std::runtime_error(r.method + " " + r.url + ": " + curl_easy_strerror(rc));
    curl_easy_getinfo(c.get(), CURLINFO_RESPONSE_CODE, &out.status);
    return out;
}

}  // namespace

std::string HttpResponse::header(std::string_view name) const {
    for (const auto& h : headers) {
        auto colon = h.find(':');
        if (colon == std::string::npos || colon != name.size()) continue;
        bool same = std::equal(name.begin(), name.end(), h.begin(), [](char a, char b) {
            return std::tolower(static_cast<unsigned char>(a)) ==
                   std::tolower(static_cast<unsigned char>(b));
        });
        if (!same) continue;
        std::string v = h.substr(colon + 1);
        v.erase(0, v.find_first_not_of(" \t"));
        return v;
    }
    return "";
}

HttpResponse http_get(const std::string& url, std::string_view range) {
    Request r;
    r.url = url;
    if (!range.empty()) r.headers.push_back("Range: bytes=" + std::string(range));
    return perform(r);
}

HttpResponse http_request(const std::string& method, const std::string& url,
                          const std::vector<std::string>& headers) {
    Request r;
    r.method = method;
    r.url = url;
    r.headers = headers;
    return perform(r);
}

// --- ChildProcess -----------------------------------------------------------------------------

ChildProcess::ChildProcess(const std::string& program, const std::vector<std::string>& args,
                           const stdfs::path& stderr_file, bool pipe_stdout) {
    std::vector<std::string> argv{program};
    argv.insert(argv.end(), args.begin(), args.end());
    std::vector<char*> cargv;
    for (auto& s : argv) cargv.push_back(s.data());
    cargv.push_back(nullptr);

    // Everything the child needs is opened here: between fork and exec only async-signal-safe
    // calls are allowed (the test process may have threads).
    int null_fd = ::open("/dev/null", O_RDWR | O_CLOEXEC);
    int err_fd = ::open(stderr_file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    int pipefd[2] = {-1, -1};
    if (null_fd < 0 || err_fd < 0 || (pipe_stdout && ::pipe2(pipefd, O_CLOEXEC) != 0)) {
        int e = errno;
        for (int fd : {null_fd, err_fd, pipefd[0], pipefd[1]})
            if (fd >= 0) ::close(fd);
        throw std::runtime_error("cannot start " + program + ": " + std::strerror(e));
    }
    const pid_t parent = ::getpid();
    pid_t pid = ::fork();
    if (pid == 0) {
        // Dies with the test process, so a crashed test leaves no server running.
        ::prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (::getppid() != parent) ::_exit(127);
        ::setpgid(0, 0);
        ::dup2(null_fd, 0);
        ::dup2(pipe_stdout ? pipefd[1] : null_fd, 1);
        ::dup2(err_fd, 2);
        // Inherited descriptors (a FUSE device, another test's pipe) must not stay open in a
        // server that outlives their owner's use of them.
        ::syscall(SYS_close_range, 3u, ~0u, 0u);
        ::execv(cargv[0], cargv.data());
        ::_exit(127);
    }
    int fork_errno = errno;
    ::close(null_fd);
    ::close(err_fd);
    if (pipe_stdout) ::close(pipefd[1]);
    if (pid < 0) {
        if (pipe_stdout) ::close(pipefd[0]);
        throw std::runtime_error("fork: " + std::string(std::strerror(fork_errno)));
    }
    pid_ = pid;
    out_fd_ = pipe_stdout ? pipefd[0] : -1;
}

ChildProcess::~ChildProcess() {
    stop(0);
}

ChildProcess::ChildProcess(ChildProcess&& o) noexcept
    : pid_(o.pid_), out_fd_(o.out_fd_), status_(o.status_), pending_(std::move(o.pending_)) {
    o.pid_ = 0;
    o.out_fd_ = -1;
}

ChildProcess& ChildProcess::operator=(ChildProcess&& o) noexcept {
    if (this != &o) {
        stop(0);
        pid_ = o.pid_;
        out_fd_ = o.out_fd_;
        status_ = o.status_;
        pending_ = std::move(o.pending_);
        o.pid_ = 0;
        o.out_fd_ = -1;
    }
    return *this;
}

bool ChildProcess::running() {
    if (pid_ <= 0) return false;
    int st = 0;
    pid_t r = ::waitpid(pid_, &st, WNOHANG);
    if (r == pid_) {
        status_ = st;
        pid_ = 0;
        return false;
    }
    return true;
}

std::optional<std::string> ChildProcess::read_line(int timeout_ms) {
    if (out_fd_ < 0) return std::nullopt;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    for (;;) {
        if (auto nl = pending_.find('\n'); nl != std::string::npos) {
            std::string line = pending_.substr(0, nl);
            pending_.erase(0, nl + 1);
            return line;
        }
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) return std::nullopt;
        pollfd p{out_fd_, POLLIN, 0};
        int n = ::poll(&p, 1, static_cast<int>(left.count()));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return std::nullopt;
        char buf[512];
        ssize_t got = ::read(out_fd_, buf, sizeof buf);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) return std::nullopt;
        pending_.append(buf, static_cast<std::size_t>(got));
    }
}

void ChildProcess::stop(int grace_ms) {
    if (pid_ > 0) {
        if (grace_ms > 0) {
            ::kill(pid_, SIGTERM);
            auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(grace_ms);
            while (running() && std::chrono::steady_clock::now() < deadline)
                std::this_thread::sleep_for(5ms);
        }
        if (pid_ > 0) {
            ::kill(pid_, SIGKILL);
            int st = 0;
            while (::waitpid(pid_, &st, 0) < 0 && errno == EINTR) {
            }
            status_ = st;
            pid_ = 0;
        }
    }
    if (out_fd_ >= 0) {
        ::close(out_fd_);
        out_fd_ = -1;
    }
}

// --- NginxServer ------------------------------------------------------------------------------

namespace {

std::string nginx_binary() {
    if (const char* e = std::getenv("MODELFS_NGINX"); e && *e) return e;
    std::string p = find_program("/usr/sbin/nginx");
    if (p.empty()) p = find_program("nginx");
    if (p.empty())
        throw std::runtime_error(
            "nginx is not installed: the fetch tests serve files with it (packaging/install-deps "
            "installs nginx-light)");
    return p;
}

std::string nginx_config(const stdfs::path& dir, const stdfs::path& root, std::uint16_t port) {
    const std::string d = dir.string();
    std::ostringstream c;
    // One process (master_process off): no user switch, so a root test process can serve files
    // from its private 0700 temp folders, and one SIGKILL takes the whole server down.
    c << "daemon off;\nmaster_process off;\nworker_processes 1;\n"
      << "pid " << d << "/nginx.pid;\n"
      << "error_log " << d << "/error.log info;\n"
      << "events { worker_connections 1024; }\n"
      << "http {\n"
      << "  client_body_temp_path " << d << "/tmp/body;\n"
      << "  proxy_temp_path " << d << "/tmp/proxy;\n"
      << "  fastcgi_temp_path " << d << "/tmp/fastcgi;\n"
      << "  uwsgi_temp_path " << d << "/tmp/uwsgi;\n"
      << "  scgi_temp_path " << d << "/tmp/scgi;\n"
      << "  log_format modelfs '$request_method $request_uri $http_range $status "
         "$body_bytes_sent';\n"
      << "  access_log " << d << "/access.log modelfs;\n"
      << "  default_type application/octet-stream;\n"
      << "  sendfile on;\n"
      << "  keepalive_requests 100000;\n"
      << "  server {\n"
      << "    listen 127.0.0.1:" << port << ";\n"
      << "    root " << root.string() << ";\n"
      << "    location = /__nginx_status { stub_status; access_log off; }\n"
      << "  }\n"
      << "}\n";
    return c.str();
}

// "GET /a.bin bytes=0-9 206 10": the Range header may hold spaces ("bytes=0-1, 5-6"), so it is
// whatever lies between the URI and the last two fields.
std::optional<LoggedRequest> parse_access_line(const std::string& line) {
    auto sp1 = line.find(' ');
    if (sp1 == std::string::npos) return std::nullopt;
    auto sp2 = line.find(' ', sp1 + 1);
    auto last = line.rfind(' ');
    if (sp2 == std::string::npos || last <= sp2) return std::nullopt;
    auto before_last = line.rfind(' ', last - 1);
    if (before_last == std::string::npos || before_last < sp2) return std::nullopt;
    LoggedRequest r;
    r.method = line.substr(0, sp1);
    r.path = normalize_path(line.substr(sp1 + 1, sp2 - sp1 - 1));
    r.range = before_last > sp2 ? line.substr(sp2 + 1, before_last - sp2 - 1) : "";
    if (r.range == "-") r.range.clear();
    try {
        r.status = std::stoi(line.substr(before_last + 1, last - before_last - 1));
        r.bytes = std::stoull(line.substr(last + 1));
    } catch (const std::exception&) {
        return std::nullopt;
    }
    return r;
}

}  // namespace

NginxServer::NginxServer(stdfs::path root) : root_(stdfs::absolute(std::move(root))) {
    const std::string nginx = nginx_binary();
    stdfs::create_directories(dir_.path() / "tmp");
    const stdfs::path conf = dir_.path() / "nginx.conf";
    const stdfs::path err = dir_.path() / "error.log";
    const stdfs::path pidfile = dir_.path() / "nginx.pid";
    std::string last_error;
    for (int attempt = 0; attempt < 20; ++attempt) {
        std::uint16_t port = free_port();
        modelfs::testing::write_text_file(conf, nginx_config(dir_.path(), root_, port));
        stdfs::remove(pidfile);
        // -e: nginx opens its error log before it reads the config; the default one may not be
        // writable.
        ChildProcess proc(nginx,
                          {"-p", dir_.path().string(), "-e", err.string(), "-c", conf.string()},
                          dir_.path() / "stderr.log", false);
        auto deadline = std::chrono::steady_clock::now() + 20s;
        bool up = false;
        while (std::chrono::steady_clock::now() < deadline) {
            if (!proc.running()) break;
            // nginx writes its pid file after binding its port: from then on, the port is ours.
            if (read_text(pidfile).find(std::to_string(proc.pid())) == 0 &&
                accepts_connections(port)) {
                up = true;
                break;
            }
            std::this_thread::sleep_for(10ms);
        }
        if (up) {
            port_ = port;
            proc_ = std::move(proc);
            return;
        }
        proc.stop(0);
        last_error = read_text(err) + read_text(dir_.path() / "stderr.log");
        if (last_error.find("Address already in use") == std::string::npos) break;
        stdfs::remove(err);  // the next attempt's log alone
    }
    throw std::runtime_error("nginx did not start (serving " + root_.string() + "); its log:\n" +
                             tail(last_error));
}

void NginxServer::settle() const {
    // nginx logs a request before it stops counting it as "Writing"; when only this status
    // request is being written, every earlier request is in the log. Gives up after a moment:
    // a transfer still running (a stalled client) will not log until it ends.
    auto deadline = std::chrono::steady_clock::now() + 500ms;
    do {
        try {
            HttpResponse r = http_get(url("__nginx_status"));
            auto w = r.body.find("Writing: ");
            if (r.status == 200 && w != std::string::npos && std::stoi(r.body.substr(w + 9)) <= 1)
                return;
        } catch (const std::exception&) {
            return;  // not answering: nothing more will be logged
        }
        std::this_thread::sleep_for(5ms);
    } while (std::chrono::steady_clock::now() < deadline);
}

NginxServer::~NginxServer() {
    proc_.stop(2000);
}

std::string NginxServer::url(std::string_view path) const {
    return join_url(port_, path);
}

std::vector<std::string> NginxServer::access_log() const {
    settle();
    std::ifstream in(dir_.path() / "access.log");
    std::vector<std::string> out;
    for (std::string line; std::getline(in, line);)
        if (!line.empty()) out.push_back(line);
    return out;
}

std::vector<LoggedRequest> NginxServer::requests() const {
    std::vector<LoggedRequest> out;
    for (const auto& line : access_log())
        if (auto r = parse_access_line(line)) out.push_back(std::move(*r));
    return out;
}

std::size_t NginxServer::requests_for(std::string_view path) const {
    const std::string want = normalize_path(path);
    auto reqs = requests();
    return static_cast<std::size_t>(
        std::count_if(reqs.begin(), reqs.end(), [&](const auto& r) { return r.path == want; }));
}

std::string NginxServer::error_log() const {
    return read_text(dir_.path() / "error.log");
}

// --- FaultServer ------------------------------------------------------------------------------

namespace {

std::string python_binary() {
    if (::access("/usr/bin/python3", X_OK) == 0) return "/usr/bin/python3";
    std::string p = find_program("python3");
    if (p.empty()) throw std::runtime_error("python3 is not installed (packaging/install-deps)");
    return p;
}

stdfs::path fault_server_script() {
    if (const char* e = std::getenv("MODELFS_FAULT_SERVER"); e && *e) return e;
    return MODELFS_FAULT_SERVER_PY;
}

const char* kind_name(Fault::Kind k) {
    switch (k) {
        case Fault::Kind::drop_after:
            return "drop_after";
        case Fault::Kind::status:
            return "status";
        case Fault::Kind::wrong_bytes:
            return "wrong_bytes";
        case Fault::Kind::stall:
            return "stall";
        case Fault::Kind::slow:
            return "slow";
        case Fault::Kind::ignore_range:
            return "ignore_range";
        case Fault::Kind::redirect:
            return "redirect";
        case Fault::Kind::lie_length:
            return "content_length";
        case Fault::Kind::overlong:
            return "overlong";
    }
    return "?";
}

std::string url_encode(std::string_view s) {
    static const char* hex = "0123456789ABCDEF";
    std::string out;
    for (unsigned char c : s) {
        if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' || c == '/') {
            out.push_back(static_cast<char>(c));
        } else {
            out.push_back('%');
            out.push_back(hex[c >> 4]);
            out.push_back(hex[c & 15]);
        }
    }
    return out;
}

}  // namespace

FaultServer::FaultServer(stdfs::path root, std::string host)
    : root_(stdfs::absolute(std::move(root))), host_(std::move(host)) {
    const stdfs::path script = fault_server_script();
    if (!stdfs::exists(script))
        throw std::runtime_error("no fault server script at " + script.string());
    const stdfs::path err = dir_.path() / "stderr.log";
    // Port 0: the kernel picks a free one and the server prints it, so there is no race to lose.
    ChildProcess proc(python_binary(),
                      {script.string(), "--root", root_.string(), "--port", "0", "--bind", host_,
                       "--parent-pid", std::to_string(::getpid())},
                      err, true);
    auto line = proc.read_line(60'000);
    int port = 0;
    try {
        if (line) port = std::stoi(*line);
    } catch (const std::exception&) {
        port = 0;
    }
    if (port <= 0 || port > 65535) {
        proc.stop(0);
        throw std::runtime_error("the fault server did not start (" + script.string() +
                                 "); it said: " + line.value_or("nothing") + "\n" +
                                 tail(read_text(err)));
    }
    port_ = static_cast<std::uint16_t>(port);
    proc_ = std::move(proc);
}

FaultServer::~FaultServer() {
    proc_.stop(0);
}

std::string FaultServer::url(std::string_view path) const {
    return join_url(port_, path, host_);
}

std::string FaultServer::control(std::string_view method, const std::string& what,
                                 const std::string& body) const {
    Request r;
    r.method = std::string(method);
    r.url = join_url(port_, "__control/" + what, host_);
    r.body = body.empty() && method == "GET" ? nullptr : &body;
    if (r.body) r.headers.push_back("Content-Type: application/json");
    HttpResponse resp = perform(r);
    if (resp.status / 100 != 2)
        throw std::runtime_error("fault server control " + std::string(method) + " " + what +
                                 ": HTTP " + std::to_string(resp.status) + ": " + resp.body);
    return resp.body;
}

void FaultServer::set_faults(std::string_view path, std::vector<Fault> faults) {
    auto list = nlohmann::json::array();
    for (const auto& f : faults) {
        nlohmann::json j{{"kind", kind_name(f.kind)},    {"status", f.status},
                         {"after_bytes", f.after_bytes}, {"retry_after", f.retry_after},
                         {"seconds", f.seconds},         {"bytes_per_second", f.bytes_per_second}};
        if (!f.method.empty()) j["method"] = f.method;
        if (!f.location.empty()) j["location"] = f.location;
        if (f.content_length) j["content_length"] = f.content_length;
        list.push_back(std::move(j));
    }
    control("PUT", "faults?path=" + url_encode(normalize_path(path)), list.dump());
}

void FaultServer::set_headers(std::string_view path, std::vector<std::string> headers) {
    control("PUT", "headers?path=" + url_encode(normalize_path(path)),
            nlohmann::json(headers).dump());
}

void FaultServer::reset() {
    control("POST", "reset", "{}");
}

std::vector<LoggedRequest> FaultServer::requests() const {
    auto log = nlohmann::json::parse(control("GET", "log", ""));
    std::vector<LoggedRequest> out;
    for (const auto& e : log) {
        LoggedRequest r;
        r.method = e.at("method").get<std::string>();
        r.path = e.at("path").get<std::string>();
        r.range = e.at("range").get<std::string>();
        r.status = e.at("status").get<int>();
        r.bytes = e.at("bytes").get<std::uint64_t>();
        if (e.contains("headers")) r.headers = e.at("headers").get<std::vector<std::string>>();
        out.push_back(std::move(r));
    }
    return out;
}

std::vector<std::string> FaultServer::request_log() const {
    std::vector<std::string> out;
    for (const auto& r : requests())
        out.push_back(r.method + " " + r.path + (r.range.empty() ? "" : " " + r.range));
    return out;
}

std::size_t FaultServer::peak_in_flight() const {
    return nlohmann::json::parse(control("GET", "stats", ""))
        .at("peak_in_flight")
        .get<std::size_t>();
}

std::size_t FaultServer::requests_for(std::string_view path) const {
    const std::string want = normalize_path(path);
    auto reqs = requests();
    return static_cast<std::size_t>(
        std::count_if(reqs.begin(), reqs.end(), [&](const auto& r) { return r.path == want; }));
}

std::optional<std::string> LoggedRequest::header(std::string_view name) const {
    for (const auto& h : headers) {
        auto colon = h.find(':');
        if (colon != name.size()) continue;
        bool same = std::equal(name.begin(), name.end(), h.begin(), [](char a, char b) {
            return std::tolower(static_cast<unsigned char>(a)) ==
                   std::tolower(static_cast<unsigned char>(b));
        });
        if (!same) continue;
        std::string v = h.substr(colon + 1);
        while (!v.empty() && v.front() == ' ') v.erase(v.begin());
        return v;
    }
    return std::nullopt;
}

// --- S3Fixture --------------------------------------------------------------------------------

namespace {

stdfs::path default_s3_env_file() {
    if (const char* e = std::getenv("MODELFS_S3_ENV"); e && *e) return e;
    return MODELFS_S3_ENV_FILE;
}

}  // namespace

S3Fixture::S3Fixture() : S3Fixture(default_s3_env_file()) {}

S3Fixture::S3Fixture(const stdfs::path& env_file) {
    std::ifstream in(env_file);
    if (!in)
        throw std::runtime_error(
            "no S3 server: " + env_file.string() +
            " is missing. The S3 tests need the radosgw ctest fixture: run them through ctest "
            "(ctest -R S3), or start it by hand with tests/support/radosgw.sh start DIR and set "
            "MODELFS_S3_ENV=DIR/s3.env");
    for (std::string line; std::getline(in, line);) {
        auto eq = line.find('=');
        if (eq == std::string::npos) continue;
        std::string k = line.substr(0, eq), v = line.substr(eq + 1);
        if (k == "endpoint")
            endpoint_ = v;
        else if (k == "access_key")
            access_ = v;
        else if (k == "secret_key")
            secret_ = v;
        else if (k == "region")
            region_ = v;
    }
    if (endpoint_.empty() || access_.empty() || secret_.empty())
        throw std::runtime_error(env_file.string() +
                                 " lacks endpoint=, access_key= or secret_key= lines");
}

std::string S3Fixture::unique_bucket(std::string_view prefix) {
    static std::mt19937_64 rng(std::random_device{}() ^ static_cast<std::uint64_t>(::getpid()));
    static std::mutex m;
    std::lock_guard lock(m);
    std::string s(prefix);
    s += '-';
    static const char* digits = "0123456789abcdefghijklmnopqrstuvwxyz";
    for (int i = 0; i < 12; ++i) s.push_back(digits[rng() % 36]);
    return s;
}

std::string S3Fixture::object_url(std::string_view bucket, std::string_view key) const {
    std::string u = endpoint_ + "/" + std::string(bucket);
    if (!key.empty()) u += "/" + url_encode(key);
    return u;
}

namespace {

Request signed_request(const S3Fixture& s3, std::string method, std::string url,
                       const std::string& secret) {
    Request r;
    r.method = std::move(method);
    r.url = std::move(url);
    r.sigv4 = "aws:amz:" + s3.region() + ":s3";
    r.user = s3.access_key();
    r.password = secret;
    // libcurl 7.88 signs with the payload's hash but does not send it; S3 wants the header.
    r.headers.push_back("x-amz-content-sha256: UNSIGNED-PAYLOAD");
    return r;
}

}  // namespace

void S3Fixture::create_bucket(std::string_view bucket) const {
    std::string empty;
    Request r = signed_request(*this, "PUT", object_url(bucket, ""), secret_);
    r.body = &empty;
    HttpResponse resp = perform(r);
    bool mine_already =
        resp.status == 409 && resp.body.find("BucketAlreadyOwnedByYou") != std::string::npos;
    if (resp.status != 200 && !mine_already)
        throw std::runtime_error("S3 create bucket " + std::string(bucket) + " at " + endpoint_ +
                                 ": HTTP " + std::to_string(resp.status) + ": " + resp.body);
}

void S3Fixture::put_object(std::string_view bucket, std::string_view key, const stdfs::path& file,
                           const std::vector<std::string>& headers) const {
    std::string data = modelfs::testing::read_file(file);
    Request r = signed_request(*this, "PUT", object_url(bucket, key), secret_);
    r.body = &data;
    r.headers.push_back("Content-Type: application/octet-stream");
    r.headers.insert(r.headers.end(), headers.begin(), headers.end());
    r.timeout_s = 300;
    HttpResponse resp = perform(r);
    if (resp.status != 200)
        throw std::runtime_error("S3 put " + object_url(bucket, key) + " from " + file.string() +
                                 ": HTTP " + std::to_string(resp.status) + ": " + resp.body);
}

S3Fixture::Response S3Fixture::get_object(std::string_view bucket, std::string_view key,
                                          std::optional<std::string> secret,
                                          std::string_view range) const {
    Request r = signed_request(*this, "GET", object_url(bucket, key), secret.value_or(secret_));
    if (!range.empty()) r.headers.push_back("Range: bytes=" + std::string(range));
    r.timeout_s = 300;
    HttpResponse resp = perform(r);
    return {resp.status, std::move(resp.body)};
}

S3Fixture::Response S3Fixture::get_anonymous(std::string_view bucket, std::string_view key) const {
    Request r;
    r.url = object_url(bucket, key);
    HttpResponse resp = perform(r);
    return {resp.status, std::move(resp.body)};
}

}  // namespace modelfs::test
