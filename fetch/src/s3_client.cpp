// The S3 calls of push and pull over libcurl easy handles (one per thread), signed by libcurl's
// SigV4. Two things about libcurl 7.88's SigV4 shape every request here:
//  - it does not send x-amz-content-sha256 (S3 requires it) but signs with the value we send, so
//    every signed request carries "x-amz-content-sha256: UNSIGNED-PAYLOAD"; each body's integrity
//    is then Content-MD5's job;
//  - it signs the query string as written, while the server canonicalises what it received: so
//    every query string is written canonical already (query()).
#include "modelfs/fetch/s3_client.h"
#include "modelfs/fetch/source.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <exception>
#include <map>
#include <mutex>
#include <random>
#include <thread>
#include <utility>

#include "curl_util.h"
#include "modelfs/store/errors.h"
#include "modelfs/store/escape.h"
#include "modelfs/store/text.h"
#include "modelfs/store/unique_fd.h"
#include "s3_xml.h"
#include "transfer_limits.h"

namespace modelfs::fetch {
namespace {

using detail::EasyPtr;
using detail::Response;
using detail::SlistPtr;

// An error answer is a short XML document; more is not an error answer.
constexpr std::uint64_t kErrorBodyMax = 1u << 20;
// A ListObjectsV2 page has at most 1000 keys of at most 1 KiB each, plus their fields.
constexpr std::uint64_t kListingMax = 64ull << 20;
// S3's limits on multipart uploads (RGW and MinIO have the same).
constexpr std::uint64_t kMinPartSize = 5ull << 20;
constexpr std::uint64_t kMaxPartSize = 5ull << 30;
constexpr std::uint64_t kMaxParts = 10000;

std::string md5_of(std::string_view data) {
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (EVP_Digest(data.data(), data.size(), out, &len, EVP_md5(), nullptr) != 1 || len != 16)
        throw StoreError(ErrorKind::io, "OpenSSL could not compute an MD5");
    return std::string(reinterpret_cast<const char*>(out), len);
}

std::string base64(std::string_view bin) {
    std::string out(4 * ((bin.size() + 2) / 3) + 1, '\0');
    int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                            reinterpret_cast<const unsigned char*>(bin.data()),
                            static_cast<int>(bin.size()));
    out.resize(static_cast<std::size_t>(n));
    return out;
}

std::string hex_of(std::string_view bin) {
    return to_hex(reinterpret_cast<const std::uint8_t*>(bin.data()), bin.size());
}

// A query string as SigV4 canonicalises it: parameters sorted by (encoded) name, each encoded as
// RFC 3986 says (unreserved characters kept, '/' encoded too, upper-case hex), and
// "name=" for one without a value. libcurl 7.88 signs the query as written, so writing it this way
// is what makes the server's signature and ours agree.
std::string query(std::vector<std::pair<std::string, std::string>> params) {
    std::vector<std::pair<std::string, std::string>> enc;
    for (auto& [k, v] : params)
        enc.emplace_back(percent_encode(k, "-_.~"), percent_encode(v, "-_.~"));
    std::sort(enc.begin(), enc.end());
    std::string out;
    for (const auto& [k, v] : enc) out += (out.empty() ? "" : "&") + k + "=" + v;
    return out;
}

std::string unquote(std::string s) {
    if (s.size() >= 2 && s.front() == '"' && s.back() == '"') s = s.substr(1, s.size() - 2);
    return s;
}

std::string to_mib(std::uint64_t n) {
    return n % (1 << 20) == 0 ? std::to_string(n >> 20) + " MiB" : std::to_string(n) + " bytes";
}

// Thrown in the workers of upload() that stop because another one failed; the failure that
// stopped them is what upload() throws.
struct Cancelled {};

struct Call {
    const char* method = "GET";  // GET HEAD PUT POST DELETE
    std::string key;             // empty: the bucket itself
    std::string query;           // canonical (query()), without '?'
    std::vector<std::string> headers;
    std::string_view body;  // PUT, POST
    std::uint64_t max_body = kErrorBodyMax;
    // CompleteMultipartUpload may answer 200 and an <Error> in the body (the server fails after
    // it started answering): that answer is a failure.
    bool error_in_ok = false;
};

struct Reply {
    CURLcode rc = CURLE_OK;
    std::string curl_error;
    long status = 0;
    std::vector<Response> chain;
    std::string body;
    bool too_big = false;  // the body passed the call's max_body (or kErrorBodyMax for an error)
    std::optional<std::string> code, message;  // S3's <Code> and <Message>
    unsigned attempts = 0;

    const Response* last() const { return chain.empty() ? nullptr : &chain.back(); }
    std::optional<std::string> header(std::string_view name) const {
        return last() ? last()->get(name) : std::nullopt;
    }
    bool ok() const { return rc == CURLE_OK && status >= 200 && status < 300 && !code; }
};

struct Sink {
    CURL* c;
    std::string* body;
    std::uint64_t max_ok;
    bool too_big = false;
};

size_t on_write(char* data, size_t size, size_t n, void* user) {
    auto* s = static_cast<Sink*>(user);
    long status = 0;
    curl_easy_getinfo(s->c, CURLINFO_RESPONSE_CODE, &status);
    const std::uint64_t max = status >= 200 && status < 300 ? s->max_ok : kErrorBodyMax;
    if (s->body->size() + size * n > max) {
        s->too_big = true;
        return 0;  // libcurl stops with CURLE_WRITE_ERROR
    }
    s->body->append(data, size * n);
    return size * n;
}

size_t on_header(char* data, size_t size, size_t n, void* user) {
    detail::add_header_line(*static_cast<std::vector<Response>*>(user),
                            std::string_view(data, size * n));
    return size * n;
}

struct Source {
    std::string_view body;
    std::size_t pos = 0;
};

size_t on_read(char* out, size_t size, size_t n, void* user) {
    auto* s = static_cast<Source*>(user);
    std::size_t k = std::min(size * n, s->body.size() - s->pos);
    std::memcpy(out, s->body.data() + s->pos, k);
    s->pos += k;
    return k;
}

// libcurl rewinds the body when it must send it again on the same request (a redirect, an
// authentication round, a refused Expect: 100-continue).
int on_seek(void* user, curl_off_t offset, int origin) {
    auto* s = static_cast<Source*>(user);
    if (origin != SEEK_SET || offset < 0 || static_cast<std::uint64_t>(offset) > s->body.size())
        return CURL_SEEKFUNC_FAIL;
    s->pos = static_cast<std::size_t>(offset);
    return CURL_SEEKFUNC_OK;
}

// Stops a request of upload() as soon as another one failed.
int on_progress(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
    const auto* cancel = static_cast<const std::atomic<bool>*>(user);
    return cancel && cancel->load() ? 1 : 0;
}

// What a failed answer makes of a retry: network errors, 5xx, 429 and S3's SlowDown (503, or 400
// from some stores) are worth another try, as is RequestTimeout (S3 gave up waiting for the body:
// a slow link, not a wrong request). Every other 4xx would fail again.
bool retryable(const Reply& r) {
    if (r.rc != CURLE_OK) return !r.too_big;
    if (r.status >= 500 || r.status == 429) return true;
    return r.code == "SlowDown" || r.code == "RequestTimeout" ||
           (r.code == "InternalError" && r.status < 300);
}

}  // namespace

struct S3Client::Impl {
    S3Bucket b;
    FetchConfig cfg;
    std::string endpoint;  // for messages
    std::string base;      // "http://host:port/BUCKET" (path style) or "http://BUCKET.host:port"
    std::atomic<bool> bucket_seen{false};
    // The handle of the calls made one at a time (head, get, list, put, remove): reused, so they
    // share a connection.
    std::mutex one_mu;
    EasyPtr one;

    Impl(S3Bucket bucket, FetchConfig c) : b(std::move(bucket)), cfg(std::move(c)) {
        detail::curl_global();
        endpoint = b.endpoint;
        if (endpoint.empty()) endpoint = "https://s3." + b.region + ".amazonaws.com";
        while (!endpoint.empty() && endpoint.back() == '/') endpoint.pop_back();
        if (b.path_style) {
            base = endpoint + "/" + b.bucket;
        } else {
            auto p = endpoint.find("://");
            std::string scheme = p == std::string::npos ? "https" : endpoint.substr(0, p);
            std::string rest = p == std::string::npos ? endpoint : endpoint.substr(p + 3);
            base = scheme + "://" + b.bucket + "." + rest;
        }
    }

    std::string shown(const std::string& key) const {
        return terminal_safe("s3://" + b.bucket + (key.empty() ? "" : "/" + key));
    }

    std::string url_of(const Call& call) const {
        std::string url = base;
        if (!call.key.empty())
            url += "/" + encode_s3_key(call.key);
        else if (!b.path_style)
            url += "/";
        if (!call.query.empty()) url += "?" + call.query;
        return url;
    }

    Reply once(CURL* c, const Call& call, const std::atomic<bool>* cancel) const {
        curl_easy_reset(c);
        HttpTarget t;
        t.url = url_of(call);
        if (!b.credentials.access_key.empty()) {
            t.aws_sigv4 = "aws:amz:" + b.region + ":s3";
            t.userpwd = b.credentials.access_key + ":" + b.credentials.secret_key;
            t.headers.push_back("x-amz-content-sha256: UNSIGNED-PAYLOAD");
            if (!b.credentials.session_token.empty())
                t.headers.push_back("x-amz-security-token: " + b.credentials.session_token);
        }
        SlistPtr headers = detail::setup_request(c, t, cfg, call.headers);
        Reply r;
        Sink sink{c, &r.body, call.max_body};
        Source src{call.body};
        char err[CURL_ERROR_SIZE] = {};
        curl_easy_setopt(c, CURLOPT_ERRORBUFFER, err);
        // A key is sent as written: "a/../b" is a key of its own in S3, not "b".
        curl_easy_setopt(c, CURLOPT_PATH_AS_IS, 1L);
        curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(c, CURLOPT_HEADERDATA, &r.chain);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_write);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, &sink);
        curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
        curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
        curl_easy_setopt(c, CURLOPT_XFERINFODATA, cancel);
        curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
        curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, static_cast<long>(cfg.stall_timeout.count()));
        curl_easy_setopt(
            c, CURLOPT_TIMEOUT_MS,
            static_cast<long>(detail::request_deadline(cfg, call.body.size()).count()));
        const std::string_view m = call.method;
        if (m == "HEAD") {
            curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
        } else if (m == "PUT" || m == "POST") {
            curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
            curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE,
                             static_cast<curl_off_t>(call.body.size()));
            curl_easy_setopt(c, CURLOPT_READFUNCTION, on_read);
            curl_easy_setopt(c, CURLOPT_READDATA, &src);
            curl_easy_setopt(c, CURLOPT_SEEKFUNCTION, on_seek);
            curl_easy_setopt(c, CURLOPT_SEEKDATA, &src);
            if (m == "POST") curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, "POST");
        } else if (m == "DELETE") {
            curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, "DELETE");
        }
        r.rc = curl_easy_perform(c);
        r.too_big = sink.too_big;
        if (r.rc != CURLE_OK) {
            r.curl_error = err[0] ? err : curl_easy_strerror(r.rc);
            return r;
        }
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
        const bool is_error = r.status < 200 || r.status >= 300 ||
                              (call.error_in_ok && !detail::xml_elements(r.body, "Error").empty());
        if (is_error) {
            r.code = detail::xml_field(r.body, "Code");
            r.message = detail::xml_field(r.body, "Message");
            if (!r.code && r.status >= 200 && r.status < 300) r.code = "InternalError";
        }
        return r;
    }

    // once(), again after a backoff while the failure is one worth retrying (retryable()), up to
    // cfg.retries more times. Network failures that last throw io; other answers are returned
    // for the caller to judge (fail()).
    Reply perform(CURL* c, const Call& call, const std::atomic<bool>* cancel = nullptr) const {
        thread_local std::mt19937 rng(std::random_device{}());
        for (unsigned attempt = 0;; ++attempt) {
            if (cancel && cancel->load()) throw Cancelled{};
            Reply r = once(c, call, cancel);
            r.attempts = attempt + 1;
            if (r.rc == CURLE_ABORTED_BY_CALLBACK && cancel && cancel->load()) throw Cancelled{};
            if (!retryable(r) || attempt >= cfg.retries) {
                if (r.rc != CURLE_OK && !r.too_big)
                    throw StoreError(ErrorKind::io,
                                     std::string("S3 ") + call.method + " " + shown(call.key) +
                                         " at " + terminal_safe(redact_url(endpoint)) + ": " +
                                         r.curl_error + " (" + std::to_string(r.attempts) +
                                         (r.attempts == 1 ? " attempt" : " attempts") +
                                         "); check the remote's endpoint and the network");
                return r;
            }
            double d = static_cast<double>(cfg.backoff_initial.count()) *
                       static_cast<double>(1u << std::min(attempt, 20u));
            d = std::min(d, static_cast<double>(cfg.backoff_max.count()));
            // Jitter: the connections that failed together do not all come back together.
            d *= std::uniform_real_distribution<double>(0.5, 1.0)(rng);
            if (auto ra = r.header("retry-after"))
                if (auto s = detail::parse_u64(*ra)) d = std::max(d, *s * 1000.0);
            d = std::min(d, static_cast<double>(cfg.backoff_max.count()));
            const auto until =
                std::chrono::steady_clock::now() + std::chrono::milliseconds(static_cast<long>(d));
            while (std::chrono::steady_clock::now() < until) {
                if (cancel && cancel->load()) throw Cancelled{};
                std::this_thread::sleep_for(std::chrono::milliseconds(20));
            }
        }
    }

    // The StoreError of a failed answer: the object, the HTTP status, S3's code and message, and
    // what to do.
    [[noreturn]] void fail(const Call& call, const Reply& r) const {
        std::string what = std::string("S3 ") + call.method + " " + shown(call.key);
        if (r.too_big)
            throw StoreError(ErrorKind::bad_input, what + ": the answer is larger than " +
                                                       to_mib(call.max_body) + "; refused");
        std::string text = what + ": HTTP " + std::to_string(r.status);
        if (r.code) text += " " + terminal_safe(*r.code);
        if (r.message && !r.message->empty()) text += " (" + terminal_safe(*r.message) + ")";
        if (r.attempts > 1) text += ", after " + std::to_string(r.attempts) + " attempts";
        if (r.status == 401 || r.status == 403) {
            if (b.credentials.access_key.empty())
                text +=
                    "; no AWS credentials were found, so the request went unsigned: set "
                    "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE (or the "
                    "remote's profile) to a profile of ~/.aws/credentials";
            else
                text +=
                    "; check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_PROFILE (the keys "
                    "came from " +
                    (b.credentials.origin.empty() ? std::string("the remote's settings")
                                                  : b.credentials.origin) +
                    "), that they may use this bucket, and the remote's --endpoint (" +
                    terminal_safe(redact_url(endpoint)) + ") and --region (" + b.region + ")";
            throw StoreError(ErrorKind::unauthorized, text);
        }
        if (r.status == 404) {
            if (r.code == "NoSuchBucket" || call.key.empty())
                throw StoreError(ErrorKind::not_found,
                                 "S3 bucket '" + terminal_safe(b.bucket) + "' does not exist at " +
                                     terminal_safe(redact_url(endpoint)) + " (" + text +
                                     "); create it, or check the remote's URL and --endpoint");
            throw StoreError(ErrorKind::not_found, text);
        }
        if (r.status == 301 || r.status == 307 || r.code == "PermanentRedirect" ||
            r.code == "AuthorizationHeaderMalformed")
            throw StoreError(ErrorKind::io,
                             text + "; the bucket is probably in another region than " + b.region +
                                 ": set the remote's --region (or AWS_REGION)");
        if (r.code == "BadDigest" || r.code == "InvalidDigest")
            throw StoreError(ErrorKind::io,
                             text +
                                 "; the body arrived damaged (Content-MD5 did not match); "
                                 "check the network or proxy, and run the command again");
        if (r.status == 400 && r.code == "EntityTooSmall")
            throw StoreError(ErrorKind::bad_input,
                             text + "; the server wants larger parts: raise the part size");
        throw StoreError(ErrorKind::io, r.status >= 500 || r.status == 429
                                            ? text + "; the server is failing, try again later"
                                            : text);
    }

    // Throws not_found when the bucket does not exist; once it was seen, never again. A 403 is
    // taken as "maybe": keys that may read objects need not be allowed to look at the bucket.
    void check_bucket(CURL* c) {
        if (bucket_seen.load()) return;
        Call call;
        call.method = "HEAD";
        Reply r = perform(c, call);
        if (r.status == 404) fail(call, r);
        if (r.ok()) bucket_seen = true;
    }

    CURL* one_handle() {
        if (!one) one.reset(curl_easy_init());
        if (!one) throw StoreError(ErrorKind::io, "libcurl could not create a request");
        return one.get();
    }

    S3UploadReport upload(const std::vector<S3Upload>& files, unsigned connections,
                          std::uint64_t part_size,
                          const std::function<void(std::uint64_t)>& progress);
};

// ---- upload ----
//
// Every file is one or more tasks that any worker may run: a single PUT; or for a multipart file
// "prepare" (resume an earlier upload or start one), which adds one task per part, and the last
// part done adds "complete". So `connections` requests are in flight over all files at once, and
// each worker holds one part in memory.
namespace {

enum class Step { single, prepare, part, complete };

struct Task {
    Step step;
    std::size_t file;
    unsigned part = 0;  // 1-based
};

struct MultipartFile {
    std::uint64_t part_size = 0;
    unsigned parts = 0;
    std::string upload_id;
    std::map<unsigned, std::pair<std::string, std::uint64_t>> existing;  // part -> etag, size
    std::vector<std::string> md5s;  // binary, per part; each written by the worker of its part
    std::atomic<unsigned> left{0};
};

// `part` bytes of a file (the part size) for a file of `size`: S3 takes at most 10000 parts, so a
// file too large for that many is cut in larger parts (whole MiB).
std::uint64_t part_size_for(std::uint64_t size, std::uint64_t part) {
    if (size <= part * kMaxParts) return part;
    std::uint64_t need = (size + kMaxParts - 1) / kMaxParts;
    return (need + (1u << 20) - 1) / (1u << 20) * (1u << 20);
}

}  // namespace

S3UploadReport S3Client::Impl::upload(const std::vector<S3Upload>& files, unsigned connections,
                                      std::uint64_t part_size,
                                      const std::function<void(std::uint64_t)>& progress) {
    if (part_size < kMinPartSize || part_size > kMaxPartSize)
        throw StoreError(ErrorKind::bad_input, "S3 part size " + to_mib(part_size) +
                                                   ": S3 takes parts of 5 MiB to 5 GiB");
    for (const auto& f : files)
        if (f.key.empty())
            throw StoreError(ErrorKind::bad_input,
                             "S3 upload of " + f.path.string() + " into " + shown("") + ": no key");

    std::vector<MultipartFile> multi(files.size());
    std::mutex mu;
    std::condition_variable cv;
    std::deque<Task> queue;
    std::size_t pending = 0;  // queued or running
    std::atomic<bool> cancel{false};
    std::exception_ptr first_error;
    std::mutex progress_mu;
    std::uint64_t done_bytes = 0;
    std::atomic<std::size_t> uploaded{0}, resumed{0};
    std::atomic<std::uint64_t> sent{0};

    std::size_t estimate = 0;
    for (std::size_t i = 0; i < files.size(); ++i) {
        if (files[i].size <= part_size) {
            queue.push_back({Step::single, i});
            ++estimate;
        } else {
            MultipartFile& m = multi[i];
            m.part_size = part_size_for(files[i].size, part_size);
            m.parts = static_cast<unsigned>((files[i].size + m.part_size - 1) / m.part_size);
            m.md5s.resize(m.parts);
            queue.push_back({Step::prepare, i});
            estimate += m.parts;
        }
    }
    pending = queue.size();
    if (queue.empty()) return {};

    auto add_tasks = [&](std::vector<Task> tasks, bool front) {
        std::lock_guard lk(mu);
        pending += tasks.size();
        for (auto& t : tasks) {
            if (front)
                queue.push_front(t);
            else
                queue.push_back(t);
        }
        cv.notify_all();
    };
    auto count_done = [&](std::uint64_t n) {
        if (!progress) return;
        std::lock_guard lk(progress_mu);
        done_bytes += n;
        progress(done_bytes);
    };
    auto read_range = [&](const S3Upload& f, std::uint64_t off, std::uint64_t len,
                          std::string& buf) {
        UniqueFd fd(::open(f.path.c_str(), O_RDONLY | O_CLOEXEC));
        if (!fd) throw_errno("opening " + f.path.string() + " to upload it", errno);
        buf.resize(len);
        std::uint64_t got = 0;
        while (got < len) {
            ssize_t n =
                ::pread(fd.get(), buf.data() + got, len - got, static_cast<off_t>(off + got));
            if (n < 0) {
                if (errno == EINTR) continue;
                throw_errno("reading " + f.path.string() + " to upload it", errno);
            }
            if (n == 0)
                throw StoreError(ErrorKind::io, f.path.string() + " is shorter than the " +
                                                    std::to_string(f.size) +
                                                    " bytes to upload: it changed meanwhile");
            got += static_cast<std::uint64_t>(n);
        }
    };
    auto must = [&](const Call& call, const Reply& r) {
        if (!r.ok()) fail(call, r);
    };

    auto run = [&](CURL* c, const Task& t, std::string& buf) {
        const S3Upload& f = files[t.file];
        MultipartFile& m = multi[t.file];
        switch (t.step) {
            case Step::single: {
                read_range(f, 0, f.size, buf);
                Call call;
                call.method = "PUT";
                call.key = f.key;
                call.body = buf;
                call.headers = {"Content-MD5: " + base64(md5_of(buf)),
                                "Content-Type: application/octet-stream",
                                "x-amz-meta-sha256: " + f.sha256.hex()};
                must(call, perform(c, call, &cancel));
                ++uploaded;
                sent += f.size;
                count_done(f.size);
                break;
            }
            case Step::prepare: {
                // An upload of this key that an earlier run left: the most recent one.
                Call list;
                list.key = "";
                list.query = query({{"uploads", ""}, {"prefix", f.key}});
                list.max_body = kListingMax;
                Reply lr = perform(c, list, &cancel);
                must(list, lr);
                for (std::string_view u : detail::xml_elements(lr.body, "Upload"))
                    if (detail::xml_field(u, "Key") == f.key)
                        if (auto id = detail::xml_field(u, "UploadId"); id && !id->empty())
                            m.upload_id = *id;
                if (!m.upload_id.empty()) {
                    std::string marker;
                    while (true) {
                        Call parts;
                        parts.key = f.key;
                        std::vector<std::pair<std::string, std::string>> q = {
                            {"uploadId", m.upload_id}};
                        if (!marker.empty()) q.emplace_back("part-number-marker", marker);
                        parts.query = query(q);
                        parts.max_body = kListingMax;
                        Reply pr = perform(c, parts, &cancel);
                        if (pr.status == 404 && pr.code != "NoSuchBucket") {
                            // Aborted or completed meanwhile: start afresh.
                            m.upload_id.clear();
                            m.existing.clear();
                            break;
                        }
                        must(parts, pr);
                        for (std::string_view p : detail::xml_elements(pr.body, "Part")) {
                            auto n =
                                detail::parse_u64(detail::xml_field(p, "PartNumber").value_or(""));
                            auto size =
                                detail::parse_u64(detail::xml_field(p, "Size").value_or(""));
                            auto etag = detail::xml_field(p, "ETag");
                            if (n && size && etag && *n >= 1 && *n <= m.parts)
                                m.existing[static_cast<unsigned>(*n)] = {lower(unquote(*etag)),
                                                                         *size};
                        }
                        auto next = detail::xml_field(pr.body, "NextPartNumberMarker");
                        if (detail::xml_field(pr.body, "IsTruncated") != "true" || !next ||
                            next->empty() || *next == marker)
                            break;
                        marker = *next;
                    }
                }
                if (m.upload_id.empty()) {
                    Call init;
                    init.method = "POST";
                    init.key = f.key;
                    init.query = query({{"uploads", ""}});
                    init.headers = {"Content-Type: application/octet-stream",
                                    "x-amz-meta-sha256: " + f.sha256.hex()};
                    Reply ir = perform(c, init, &cancel);
                    must(init, ir);
                    auto id = detail::xml_field(ir.body, "UploadId");
                    if (!id || id->empty())
                        throw StoreError(
                            ErrorKind::bad_input,
                            "S3 POST " + shown(f.key) + "?uploads: the answer has no UploadId");
                    m.upload_id = *id;
                }
                m.left = m.parts;
                std::vector<Task> tasks;
                for (unsigned p = 1; p <= m.parts; ++p) tasks.push_back({Step::part, t.file, p});
                add_tasks(std::move(tasks), false);
                break;
            }
            case Step::part: {
                const std::uint64_t off = (t.part - 1) * m.part_size;
                const std::uint64_t len = std::min(m.part_size, f.size - off);
                read_range(f, off, len, buf);
                std::string md5 = md5_of(buf);
                m.md5s[t.part - 1] = md5;
                auto old = m.existing.find(t.part);
                if (old != m.existing.end() && old->second.second == len &&
                    old->second.first == hex_of(md5)) {
                    ++resumed;
                } else {
                    Call call;
                    call.method = "PUT";
                    call.key = f.key;
                    call.query =
                        query({{"partNumber", std::to_string(t.part)}, {"uploadId", m.upload_id}});
                    call.body = buf;
                    call.headers = {"Content-MD5: " + base64(md5)};
                    Reply r = perform(c, call, &cancel);
                    must(call, r);
                    if (auto etag = r.header("etag"); etag && lower(unquote(*etag)) != hex_of(md5))
                        throw StoreError(ErrorKind::corrupt,
                                         "S3 PUT " + shown(f.key) + " part " +
                                             std::to_string(t.part) + ": the server's ETag " +
                                             terminal_safe(*etag) + " is not the MD5 " +
                                             hex_of(md5) + " of the part sent");
                    sent += len;
                }
                count_done(len);
                if (--m.left == 0) add_tasks({{Step::complete, t.file}}, true);
                break;
            }
            case Step::complete: {
                std::string xml = "<CompleteMultipartUpload>";
                std::string all;
                for (unsigned p = 1; p <= m.parts; ++p) {
                    xml += "<Part><PartNumber>" + std::to_string(p) + "</PartNumber><ETag>\"" +
                           hex_of(m.md5s[p - 1]) + "\"</ETag></Part>";
                    all += m.md5s[p - 1];
                }
                xml += "</CompleteMultipartUpload>";
                const std::string expected = hex_of(md5_of(all)) + "-" + std::to_string(m.parts);
                Call call;
                call.method = "POST";
                call.key = f.key;
                call.query = query({{"uploadId", m.upload_id}});
                call.body = xml;
                call.headers = {"Content-Type: application/xml",
                                "Content-MD5: " + base64(md5_of(xml))};
                call.error_in_ok = true;
                Reply r = perform(c, call, &cancel);
                // NoSuchUpload after a retry: the first attempt completed it and its answer was
                // lost; the object's ETag below says whether it is ours.
                if (!(r.status == 404 && r.code == "NoSuchUpload")) must(call, r);

                Call head;
                head.method = "HEAD";
                head.key = f.key;
                Reply h = perform(c, head, &cancel);
                must(head, h);
                const std::string etag = lower(unquote(h.header("etag").value_or("")));
                const auto size = detail::parse_u64(h.header("content-length").value_or(""));
                const std::string sha = lower(h.header("x-amz-meta-sha256").value_or(""));
                std::string wrong;
                if (etag != expected)
                    wrong = "its ETag is " + terminal_safe(etag) + ", not " + expected +
                            " (the MD5 of the parts sent)";
                else if (size != f.size)
                    wrong = "its size is " + (size ? std::to_string(*size) : "unknown") + ", not " +
                            std::to_string(f.size);
                else if (sha != f.sha256.hex())
                    wrong = "its x-amz-meta-sha256 is '" + terminal_safe(sha) +
                            "' (an earlier upload of the key was started for other content)";
                if (!wrong.empty()) {
                    Call del;
                    del.method = "DELETE";
                    del.key = f.key;
                    Reply dr = perform(c, del, &cancel);
                    (void)dr;  // the object is wrong either way; the error below says so
                    throw StoreError(ErrorKind::corrupt, "S3 upload of " + f.path.string() +
                                                             " to " + shown(f.key) + ": " + wrong +
                                                             "; the object was deleted, run the "
                                                             "command again");
                }
                ++uploaded;
                break;
            }
        }
    };

    auto worker = [&] {
        EasyPtr c(curl_easy_init());
        std::string buf;
        while (true) {
            Task t;
            {
                std::unique_lock lk(mu);
                cv.wait(lk, [&] { return !queue.empty() || pending == 0 || cancel.load(); });
                if (cancel.load() || queue.empty()) return;
                t = queue.front();
                queue.pop_front();
            }
            try {
                if (!c) throw StoreError(ErrorKind::io, "libcurl could not create a request");
                run(c.get(), t, buf);
            } catch (const Cancelled&) {
            } catch (...) {
                std::lock_guard lk(mu);
                if (!first_error) first_error = std::current_exception();
                cancel = true;
                cv.notify_all();
            }
            std::lock_guard lk(mu);
            if (--pending == 0) cv.notify_all();
        }
    };

    {
        const std::size_t n = std::clamp<std::size_t>(connections, 1, estimate);
        std::vector<std::jthread> threads;
        try {
            for (std::size_t i = 0; i < n; ++i) threads.emplace_back(worker);
        } catch (...) {
            // No thread for the rest: stop those started, and fail as any task would.
            std::lock_guard lk(mu);
            if (!first_error) first_error = std::current_exception();
            cancel = true;
            cv.notify_all();
        }
    }  // the jthreads join here
    if (first_error) std::rethrow_exception(first_error);
    S3UploadReport rep;
    rep.uploaded = uploaded;
    rep.resumed_parts = resumed;
    rep.bytes = sent;
    return rep;
}

S3Client::S3Client(S3Bucket bucket, FetchConfig cfg)
    : impl_(std::make_unique<Impl>(std::move(bucket), std::move(cfg))) {}
S3Client::~S3Client() = default;
S3Client::S3Client(S3Client&&) noexcept = default;
S3Client& S3Client::operator=(S3Client&&) noexcept = default;

const S3Bucket& S3Client::bucket() const {
    return impl_->b;
}

std::optional<S3Object> S3Client::head(const std::string& key) {
    std::lock_guard lk(impl_->one_mu);
    CURL* c = impl_->one_handle();
    Call call;
    call.method = "HEAD";
    call.key = key;
    Reply r = impl_->perform(c, call);
    if (r.status == 404) {
        // A HEAD answer has no body to tell a missing object from a missing bucket.
        impl_->check_bucket(c);
        return std::nullopt;
    }
    if (!r.ok()) impl_->fail(call, r);
    S3Object o;
    o.key = key;
    auto size = detail::parse_u64(r.header("content-length").value_or(""));
    if (!size)
        throw StoreError(ErrorKind::bad_input,
                         "S3 HEAD " + impl_->shown(key) + ": the answer has no Content-Length");
    o.size = *size;
    o.etag = unquote(r.header("etag").value_or(""));
    impl_->bucket_seen = true;
    return o;
}

std::optional<std::string> S3Client::get(const std::string& key, std::uint64_t max_bytes) {
    std::lock_guard lk(impl_->one_mu);
    Call call;
    call.key = key;
    call.max_body = max_bytes;
    Reply r = impl_->perform(impl_->one_handle(), call);
    if (r.status == 404 && r.code != "NoSuchBucket") return std::nullopt;
    if (!r.ok()) impl_->fail(call, r);
    impl_->bucket_seen = true;
    return std::move(r.body);
}

std::vector<S3Object> S3Client::list(const std::string& prefix) {
    std::lock_guard lk(impl_->one_mu);
    std::vector<S3Object> out;
    std::string token;
    while (true) {
        Call call;
        std::vector<std::pair<std::string, std::string>> q = {{"list-type", "2"},
                                                              {"prefix", prefix}};
        if (!token.empty()) q.emplace_back("continuation-token", token);
        call.query = query(q);
        call.max_body = kListingMax;
        Reply r = impl_->perform(impl_->one_handle(), call);
        if (!r.ok()) impl_->fail(call, r);
        auto malformed = [&](const std::string& why) {
            return StoreError(ErrorKind::bad_input, "S3 list of " + impl_->shown(prefix) +
                                                        ": a malformed answer (" + why + ")");
        };
        for (std::string_view item : detail::xml_elements(r.body, "Contents")) {
            S3Object o;
            auto key = detail::xml_field(item, "Key");
            auto size = detail::parse_u64(detail::xml_field(item, "Size").value_or(""));
            if (!key || key->empty()) throw malformed("an object without a <Key>");
            if (!size) throw malformed("no <Size> for " + terminal_safe(*key));
            o.key = std::move(*key);
            o.size = *size;
            o.etag = unquote(detail::xml_field(item, "ETag").value_or(""));
            out.push_back(std::move(o));
        }
        if (detail::xml_field(r.body, "IsTruncated") != "true") break;
        auto next = detail::xml_field(r.body, "NextContinuationToken");
        if (!next || next->empty()) throw malformed("truncated without a NextContinuationToken");
        if (*next == token) throw malformed("the same continuation token twice");
        token = std::move(*next);
    }
    impl_->bucket_seen = true;
    std::sort(out.begin(), out.end(),
              [](const S3Object& a, const S3Object& b) { return a.key < b.key; });
    return out;
}

void S3Client::put(const std::string& key, std::string_view body,
                   const std::vector<std::string>& headers) {
    if (key.empty())
        throw StoreError(ErrorKind::bad_input, "S3 PUT into " + impl_->shown("") + ": no key");
    std::lock_guard lk(impl_->one_mu);
    Call call;
    call.method = "PUT";
    call.key = key;
    call.body = body;
    call.headers = headers;
    call.headers.push_back("Content-MD5: " + base64(md5_of(body)));
    Reply r = impl_->perform(impl_->one_handle(), call);
    if (!r.ok()) impl_->fail(call, r);
    impl_->bucket_seen = true;
}

void S3Client::remove(const std::string& key) {
    if (key.empty())
        throw StoreError(ErrorKind::bad_input, "S3 DELETE in " + impl_->shown("") + ": no key");
    std::lock_guard lk(impl_->one_mu);
    Call call;
    call.method = "DELETE";
    call.key = key;
    Reply r = impl_->perform(impl_->one_handle(), call);
    if (r.status == 404 && r.code != "NoSuchBucket") return;
    if (!r.ok()) impl_->fail(call, r);
}

S3UploadReport S3Client::upload(const std::vector<S3Upload>& files, unsigned connections,
                                std::uint64_t part_size,
                                const std::function<void(std::uint64_t)>& progress) {
    return impl_->upload(files, connections, part_size, progress);
}

}  // namespace modelfs::fetch
