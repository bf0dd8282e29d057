#include "modelfs/fetch/source.h"

#include "modelfs/fetch/s3_client.h"

#include <algorithm>
#include <cctype>

#include "modelfs/store/errors.h"
#include "modelfs/store/escape.h"
#include "modelfs/store/names.h"
#include "modelfs/store/text.h"

namespace modelfs::fetch {
namespace {

[[noreturn]] void bad_url(std::string_view url, const std::string& why);

// What may not appear raw in a URL path. '%' is kept: a user who wrote "%20" or "refs%2Fpr%2F1"
// meant it.
std::string encode_path(std::string_view s) {
    return percent_encode(s, "-._~/!$&'()*+,;=:@%");
}

// host[:port] of an http(s) URL, lower-cased, without user info.
std::string host_of(std::string_view url) {
    auto p = url.find("://");
    if (p == std::string_view::npos) return {};
    std::string_view rest = url.substr(p + 3);
    rest = rest.substr(0, rest.find_first_of("/?#"));
    if (auto at = rest.rfind('@'); at != std::string_view::npos) rest = rest.substr(at + 1);
    return lower(rest);
}

std::string_view scheme_of(std::string_view url) {
    auto p = url.find("://");
    return p == std::string_view::npos ? std::string_view{} : url.substr(0, p);
}

struct HfParts {
    std::string kind;  // "", "datasets/" or "spaces/"
    std::string repo;  // OWNER/REPO
    std::string revision = "main";
    std::string path;
};

HfParts parse_hf(std::string_view url) {
    std::string_view rest = url.substr(5);  // after "hf://"
    HfParts p;
    for (std::string_view k : {"datasets/", "spaces/"}) {
        if (rest.substr(0, k.size()) == k) {
            p.kind = std::string(k);
            rest.remove_prefix(k.size());
        }
    }
    auto s1 = rest.find('/');
    if (s1 == std::string_view::npos || s1 == 0) bad_url(url, "no OWNER/REPO");
    auto s2 = rest.find('/', s1 + 1);
    if (s2 == std::string_view::npos || s2 == s1 + 1) bad_url(url, "no file path after OWNER/REPO");
    std::string_view repo = rest.substr(0, s2);
    p.path = std::string(rest.substr(s2 + 1));
    if (auto at = repo.find('@'); at != std::string_view::npos) {
        if (at < s1) bad_url(url, "'@' in the owner name");
        p.revision = std::string(repo.substr(at + 1));
        repo = repo.substr(0, at);
        if (p.revision.empty()) bad_url(url, "empty revision after '@'");
    }
    if (repo.size() == s1 + 1) bad_url(url, "no repository name");
    p.repo = std::string(repo);
    if (p.path.empty() || p.path.back() == '/') bad_url(url, "no file path after OWNER/REPO");
    // The request goes to OWNER/REPO/resolve/REVISION/PATH with the token: no part may lead
    // anywhere else, neither as written (libcurl squashes "..") nor once the hub decodes it
    // ("%2e%2e", "%2f").
    const std::pair<const char*, const std::string*> parts[] = {
        {"repository", &p.repo}, {"revision", &p.revision}, {"file path", &p.path}};
    for (const auto& [what, text] : parts)
        if (auto why = relative_path_problem(percent_decoded(*text)); !why.empty())
            bad_url(url, std::string("the ") + what + " " + why);
    return p;
}

void parse_s3(std::string_view url, std::string& bucket, std::string& key) {
    std::string_view rest = url.substr(5);  // after "s3://"
    auto s = rest.find('/');
    if (s == std::string_view::npos || s == 0) bad_url(url, "no BUCKET/KEY");
    bucket = std::string(rest.substr(0, s));
    key = std::string(rest.substr(s + 1));
    if (key.empty()) bad_url(url, "no object key after the bucket");
    auto ok = [](unsigned char c) { return std::isalnum(c) || c == '-' || c == '.' || c == '_'; };
    if (!std::all_of(bucket.begin(), bucket.end(), ok)) bad_url(url, "invalid bucket name");
}

void check_hf(std::string_view url) {
    parse_hf(url);
}

void resolve_hf(std::string_view url, const FetchConfig& cfg, HttpTarget& t) {
    HfParts p = parse_hf(url);
    std::string endpoint = cfg.hf_endpoint;
    while (!endpoint.empty() && endpoint.back() == '/') endpoint.pop_back();
    t.url = endpoint + "/" + p.kind + encode_path(p.repo) + "/resolve/" + encode_path(p.revision) +
            "/" + encode_path(p.path);
    // redirect_target() keeps it off redirects to other hosts (the CDN that Hugging Face sends LFS
    // downloads to), so the token stays with the hub.
    if (!cfg.hf_token.empty()) t.headers.push_back("Authorization: Bearer " + cfg.hf_token);
}

void check_s3(std::string_view url) {
    std::string b, k;
    parse_s3(url, b, k);
}

// The settings for an s3:// URL: those of the team remote whose URL is its longest prefix, else
// the global [s3] ones.
const S3Config& s3_config_for(std::string_view url, const FetchConfig& cfg) {
    const S3Config* best = &cfg.s3;
    std::size_t best_len = 0;
    for (const auto& r : cfg.s3_remotes) {
        std::string_view ru = r.url;
        while (!ru.empty() && ru.back() == '/') ru.remove_suffix(1);
        if (ru.size() > best_len && url.size() > ru.size() && url.substr(0, ru.size()) == ru &&
            url[ru.size()] == '/') {
            best = &r.s3;
            best_len = ru.size();
        }
    }
    return *best;
}

void resolve_s3(std::string_view url, const FetchConfig& cfg, HttpTarget& t) {
    std::string bucket, key;
    parse_s3(url, bucket, key);
    const S3Config& s3 = s3_config_for(url, cfg);
    std::string endpoint = s3.endpoint;
    if (endpoint.empty()) endpoint = "https://s3." + s3.region + ".amazonaws.com";
    while (!endpoint.empty() && endpoint.back() == '/') endpoint.pop_back();
    if (s3.path_style) {
        t.url = endpoint + "/" + bucket + "/" + encode_s3_key(key);
    } else {
        auto p = endpoint.find("://");
        std::string sch = p == std::string::npos ? "https" : endpoint.substr(0, p);
        std::string rest = p == std::string::npos ? endpoint : endpoint.substr(p + 3);
        t.url = sch + "://" + bucket + "." + rest + "/" + encode_s3_key(key);
    }
    if (!s3.access_key.empty()) {
        t.aws_sigv4 = "aws:amz:" + s3.region + ":s3";
        t.userpwd = s3.access_key + ":" + s3.secret_key;
        // libcurl 7.88 signs the request but does not send the payload hash S3 requires.
        t.headers.push_back("x-amz-content-sha256: UNSIGNED-PAYLOAD");
        if (!s3.session_token.empty())
            t.headers.push_back("x-amz-security-token: " + s3.session_token);
    }
}

void check_http(std::string_view url) {
    std::string h = host_of(url);
    if (h.empty() || h.front() == ':') bad_url(url, "no host");
}

void resolve_http(std::string_view url, const FetchConfig&, HttpTarget& t) {
    t.url = std::string(url);
}

// ---- The URL schemes: one row each ----
//
// Every scheme becomes an HTTP request (resolve), so ranged requests, resuming a partial download
// and probing (one HEAD, probe.cpp, reading whichever hash header the server sends) work the same
// for all. `add`, `fetch`, a lock file's apply and the manifest parser find a scheme only here
// (check_source_url, resolve_source).
struct Scheme {
    SchemeInfo info;
    // hf:// and s3:// name files, encoded when the request is made (spaces allowed); an http(s)
    // URL is sent as written, so it must be a valid one.
    bool names_files;
    void (*check)(std::string_view url);  // the syntax; throws bad_url
    void (*resolve)(std::string_view url, const FetchConfig& cfg, HttpTarget& t);
};

constexpr std::string_view kHttpRefused =
    "the server refused access; the URL may need a token or a signed query";

const Scheme kSchemes[] = {
    {{"http", "http://HOST/PATH", "none (a query string, e.g. a signed URL, is kept)", kHttpRefused,
      "http://example.com/models/detail.safetensors"},
     false,
     check_http,
     resolve_http},
    {{"https", "https://HOST/PATH", "none (a query string, e.g. a signed URL, is kept)",
      kHttpRefused, "https://example.com/models/detail.safetensors?download=1"},
     false,
     check_http,
     resolve_http},
    {{"hf", "hf://OWNER/REPO[@REVISION]/PATH",
      "HF_TOKEN (fetch.hf_token) as a Bearer token, to the hub only",
      "set HF_TOKEN to a Hugging Face token that can read this repository (gated models also "
      "need their terms accepted on the website)",
      "hf://stabilityai/sdxl-vae@main/sdxl_vae.safetensors"},
     true,
     check_hf,
     resolve_hf},
    {{"s3", "s3://BUCKET/KEY",
      "AWS SigV4 with AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (AWS_SESSION_TOKEN); none: "
      "unsigned requests",
      "check the S3 credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, "
      "AWS_REGION) and that they may read this object",
      "s3://models/lora/detail.safetensors"},
     true,
     check_s3,
     resolve_s3},
};

// The row of `url`'s scheme (case-insensitive: "HTTP://" is http); nullptr when none.
const Scheme* scheme_of_url(std::string_view url) {
    const std::string_view written = scheme_of(url);
    for (const Scheme& s : kSchemes) {
        if (iequals(written, s.info.name)) return &s;
    }
    return nullptr;
}

[[noreturn]] void bad_url(std::string_view url, const std::string& why) {
    throw StoreError(ErrorKind::bad_input, "source URL '" + terminal_safe(redact_url(url)) +
                                               "': " + why + " (expected " + source_forms() + ")");
}

}  // namespace

std::vector<SchemeInfo> source_schemes() {
    std::vector<SchemeInfo> out;
    for (const Scheme& s : kSchemes) out.push_back(s.info);
    return out;
}

std::string source_forms() {
    std::string out;
    const std::size_t n = std::size(kSchemes);
    for (std::size_t i = 0; i < n; ++i)
        out += (i == 0 ? "" : i + 1 == n ? " or " : ", ") + std::string(kSchemes[i].info.form);
    return out;
}

bool is_remote_url(std::string_view s) {
    return scheme_of_url(s) != nullptr;
}

void check_source_url(std::string_view url) {
    const Scheme* scheme = scheme_of_url(url);
    if (!scheme) {
        std::string known;
        for (const Scheme& s : kSchemes)
            known += (known.empty() ? "" : ", ") + std::string(s.info.name);
        const std::string_view written = scheme_of(url);
        bad_url(url, written.empty() ? "no scheme; the known ones are " + known
                                     : "unknown scheme '" + terminal_safe(written) +
                                           "'; the known ones are " + known);
    }
    if (std::any_of(url.begin(), url.end(), [&](unsigned char c) {
            return c < ' ' || c == 0x7f || (c == ' ' && !scheme->names_files);
        }))
        bad_url(url, "spaces or control characters (percent-encode them)");
    scheme->check(url);
}

HttpTarget resolve_source(std::string_view url, const FetchConfig& cfg) {
    check_source_url(url);
    HttpTarget t;
    scheme_of_url(url)->resolve(url, cfg, t);
    t.host = host_of(t.url);
    return t;
}

std::string_view refused_hint(std::string_view url) {
    const Scheme* s = scheme_of_url(url);
    return s ? s->info.refused_hint : kHttpRefused;
}

// S3 wants every key byte outside the unreserved set encoded, '/' kept; the SigV4 canonical URI is
// the path as sent.
std::string encode_s3_key(std::string_view key) {
    return percent_encode(key, "-._~/");
}

std::string percent_encode(std::string_view s, std::string_view keep) {
    static const char* hex = "0123456789ABCDEF";
    std::string out;
    out.reserve(s.size());
    for (unsigned char c : s) {
        const bool ascii_alnum =
            (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
        if (ascii_alnum || keep.find(static_cast<char>(c)) != std::string_view::npos) {
            out += static_cast<char>(c);
        } else {
            out += '%';
            out += hex[c >> 4];
            out += hex[c & 15];
        }
    }
    return out;
}

}  // namespace modelfs::fetch
