// What a source URL means as a request (no network), and probe() against real servers.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>

#include "fetch_env.h"
#include "modelfs/fetch/probe.h"
#include "modelfs/fetch/source.h"
#include "modelfs/store/errors.h"
#include "support/http_servers.h"

namespace modelfs::test {
namespace {

using fetch::FetchConfig;
using fetch::resolve_source;

bool has(const std::vector<std::string>& v, const std::string& s) {
    return std::find(v.begin(), v.end(), s) != v.end();
}

ErrorKind kind_of(const std::function<void()>& fn) {
    try {
        fn();
    } catch (const StoreError& e) {
        return e.kind();
    }
    ADD_FAILURE() << "no StoreError";
    return ErrorKind::io;
}

TEST(SourceTest, RecognisesRemoteUrls) {
    EXPECT_TRUE(fetch::is_remote_url("https://example.com/a"));
    EXPECT_TRUE(fetch::is_remote_url("HTTP://example.com/a"));
    EXPECT_TRUE(fetch::is_remote_url("hf://org/repo/file"));
    EXPECT_TRUE(fetch::is_remote_url("s3://bucket/key"));
    EXPECT_FALSE(fetch::is_remote_url("/home/me/model.safetensors"));
    EXPECT_FALSE(fetch::is_remote_url("ftp://example.com/a"));
    EXPECT_FALSE(fetch::is_remote_url("lora/foo"));
}

TEST(SourceTest, HttpUrlsAreUsedAsTheyAre) {
    FetchConfig c;
    auto t = resolve_source("https://Example.com:8443/x/y.bin?download=1", c);
    EXPECT_EQ(t.url, "https://Example.com:8443/x/y.bin?download=1");
    EXPECT_EQ(t.host, "example.com:8443");
    EXPECT_TRUE(t.headers.empty());
    EXPECT_TRUE(t.aws_sigv4.empty());
}

TEST(SourceTest, HuggingFaceUrlsResolveAgainstTheEndpoint) {
    FetchConfig c;
    auto t = resolve_source("hf://stabilityai/sdxl/unet/model.safetensors", c);
    EXPECT_EQ(t.url, "https://huggingface.co/stabilityai/sdxl/resolve/main/unet/model.safetensors");
    EXPECT_EQ(t.host, "huggingface.co");
    EXPECT_TRUE(t.headers.empty());  // no token: no Authorization

    c.hf_endpoint = "http://127.0.0.1:9999/";
    c.hf_token = "hf_secret";
    t = resolve_source("hf://org/repo@v1.0/a b.bin", c);
    EXPECT_EQ(t.url, "http://127.0.0.1:9999/org/repo/resolve/v1.0/a%20b.bin");
    EXPECT_TRUE(has(t.headers, "Authorization: Bearer hf_secret"));
    EXPECT_EQ(t.host, "127.0.0.1:9999");

    t = resolve_source("hf://datasets/org/data@refs%2Fpr%2F1/x.parquet", c);
    EXPECT_EQ(t.url, "http://127.0.0.1:9999/datasets/org/data/resolve/refs%2Fpr%2F1/x.parquet");
}

TEST(SourceTest, S3UrlsAreSignedForTheConfiguredEndpoint) {
    FetchConfig c;
    c.s3.region = "eu-west-1";
    auto anon = resolve_source("s3://bucket/dir/m.safetensors", c);
    EXPECT_EQ(anon.url, "https://s3.eu-west-1.amazonaws.com/bucket/dir/m.safetensors");
    EXPECT_TRUE(anon.aws_sigv4.empty());  // no credentials: an anonymous request

    c.s3.endpoint = "http://127.0.0.1:7480";
    c.s3.access_key = "AK";
    c.s3.secret_key = "SK";
    c.s3.session_token = "TOK";
    auto t = resolve_source("s3://bucket/dir/m+1.bin", c);
    EXPECT_EQ(t.url, "http://127.0.0.1:7480/bucket/dir/m%2B1.bin");
    EXPECT_EQ(t.aws_sigv4, "aws:amz:eu-west-1:s3");
    EXPECT_EQ(t.userpwd, "AK:SK");
    EXPECT_TRUE(has(t.headers, "x-amz-content-sha256: UNSIGNED-PAYLOAD"));
    EXPECT_TRUE(has(t.headers, "x-amz-security-token: TOK"));
    EXPECT_EQ(t.host, "127.0.0.1:7480");

    c.s3.path_style = false;
    c.s3.endpoint = "https://s3.example.net";
    t = resolve_source("s3://bucket/k", c);
    EXPECT_EQ(t.url, "https://bucket.s3.example.net/k");
    EXPECT_EQ(t.host, "bucket.s3.example.net");
}

TEST(SourceTest, MalformedUrlsAreRefusedWithTheExpectedForm) {
    FetchConfig c;
    for (const char* bad : {"hf://org", "hf://org/repo", "hf://org/repo/", "hf://org/repo@/f",
                            "s3://bucket", "s3://bucket/", "s3://bad bucket/k", "https://",
                            "http:///path", "ftp://x/y", "https://host/a b"}) {
        EXPECT_EQ(kind_of([&] { fetch::check_source_url(bad); }), ErrorKind::bad_input) << bad;
    }
    try {
        resolve_source("hf://org", c);
    } catch (const StoreError& e) {
        EXPECT_NE(std::string(e.what()).find("hf://OWNER/REPO"), std::string::npos) << e.what();
    }
}

TEST(SourceTest, RedactionDropsCredentialsAndQueries) {
    EXPECT_EQ(fetch::redact_url("https://user:pass@host/p?X-Amz-Signature=abc"), "https://host/p");
    EXPECT_EQ(fetch::redact_url("hf://org/repo/file"), "hf://org/repo/file");
    EXPECT_EQ(fetch::redact_url("http://host/a#frag"), "http://host/a");
    EXPECT_EQ(fetch::redact_url("https://host/a@b"), "https://host/a@b");
}

TEST(SourceSchemes, EveryRowRoundTripsItsExample) {
    FetchConfig c;
    c.s3.endpoint = "http://127.0.0.1:7480";
    ASSERT_FALSE(fetch::source_schemes().empty());
    for (const fetch::SchemeInfo& s : fetch::source_schemes()) {
        const std::string url(s.example);
        EXPECT_TRUE(url.starts_with(std::string(s.name) + "://")) << url;
        EXPECT_TRUE(fetch::is_remote_url(url)) << url;
        EXPECT_NO_THROW(fetch::check_source_url(url)) << url;
        const auto t = resolve_source(url, c);
        EXPECT_TRUE(t.url.starts_with("http://") || t.url.starts_with("https://")) << t.url;
        EXPECT_FALSE(t.host.empty()) << url;
        // The scheme is matched ignoring case, as URLs' schemes are (an http(s) URL is then sent
        // as written).
        std::string upper = url;
        for (std::size_t i = 0; i < s.name.size(); ++i)
            upper[i] = static_cast<char>(std::toupper(static_cast<unsigned char>(upper[i])));
        EXPECT_EQ(resolve_source(upper, c).host, t.host) << upper;
        EXPECT_NE(fetch::source_forms().find(s.form), std::string::npos) << s.form;
        EXPECT_FALSE(s.credentials.empty()) << s.name;
        EXPECT_EQ(fetch::refused_hint(url), s.refused_hint);
    }
    EXPECT_NE(fetch::refused_hint("hf://o/r/f").find("HF_TOKEN"), std::string::npos);
    EXPECT_NE(fetch::refused_hint("s3://b/k").find("AWS_ACCESS_KEY_ID"), std::string::npos);
}

TEST(SourceSchemes, AnUnknownSchemeListsTheKnownOnes) {
    for (const char* bad : {"ftp://example.com/a", "lora/foo.safetensors"}) {
        try {
            fetch::check_source_url(bad);
            ADD_FAILURE() << bad;
        } catch (const StoreError& e) {
            EXPECT_EQ(e.kind(), ErrorKind::bad_input);
            const std::string what = e.what();
            EXPECT_NE(what.find("the known ones are"), std::string::npos) << what;
            for (const fetch::SchemeInfo& s : fetch::source_schemes()) {
                EXPECT_NE(what.find(std::string(s.name)), std::string::npos) << what;
                EXPECT_NE(what.find(std::string(s.form)), std::string::npos) << what;
            }
        }
    }
    try {
        fetch::check_source_url("ftp://example.com/a");
    } catch (const StoreError& e) {
        EXPECT_NE(std::string(e.what()).find("unknown scheme 'ftp'"), std::string::npos);
    }
}

class ProbeTest : public FetchEnv {};

TEST_F(ProbeTest, NginxGivesSizeEtagAndRanges) {
    make_file("p.bin", 123'456, 51);
    NginxServer nginx(www());
    auto info = fetch::probe(nginx.url("p.bin"), FetchConfig{});
    EXPECT_EQ(info.size, 123'456u);
    EXPECT_FALSE(info.etag.empty());
    EXPECT_TRUE(info.accepts_ranges);
    EXPECT_FALSE(info.sha256);  // nginx's ETag is not a hash
    EXPECT_EQ(info.final_url, nginx.url("p.bin"));
    EXPECT_EQ(kind_of([&] { fetch::probe(nginx.url("none.bin"), FetchConfig{}); }),
              ErrorKind::not_found);
}

TEST_F(ProbeTest, HuggingFaceLinkedEtagIsTheSha256) {
    Sha256 h = make_file("org/model/resolve/main/w.safetensors", 5000, 52);
    FaultServer srv(www());
    srv.set_headers("/org/model/resolve/main/w.safetensors",
                    {"X-Linked-Etag: \"" + h.hex() + "\"", "X-Linked-Size: 5000"});
    FetchConfig c;
    c.hf_endpoint = srv.url("");
    auto info = fetch::probe("hf://org/model/w.safetensors", c);
    ASSERT_TRUE(info.sha256);
    EXPECT_EQ(*info.sha256, h);
    EXPECT_EQ(info.size, 5000u);
}

TEST_F(ProbeTest, S3ChecksumHeadersGiveTheSha256) {
    Sha256 h = make_file("obj.bin", 100, 53);
    // base64 of the raw digest, as S3 sends x-amz-checksum-sha256.
    static const char* b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string enc;
    const auto& b = h.bytes;
    for (std::size_t i = 0; i < b.size(); i += 3) {
        unsigned v =
            b[i] << 16 | (i + 1 < b.size() ? b[i + 1] << 8 : 0) | (i + 2 < b.size() ? b[i + 2] : 0);
        enc += b64[v >> 18 & 63];
        enc += b64[v >> 12 & 63];
        enc += i + 1 < b.size() ? b64[v >> 6 & 63] : '=';
        enc += i + 2 < b.size() ? b64[v & 63] : '=';
    }
    FaultServer srv(www());
    srv.set_headers("/obj.bin", {"x-amz-checksum-sha256: " + enc});
    auto info = fetch::probe(srv.url("obj.bin"), FetchConfig{});
    ASSERT_TRUE(info.sha256);
    EXPECT_EQ(*info.sha256, h);

    srv.set_headers("/obj.bin", {"x-amz-meta-sha256: " + h.hex()});
    info = fetch::probe(srv.url("obj.bin"), FetchConfig{});
    ASSERT_TRUE(info.sha256);
    EXPECT_EQ(*info.sha256, h);
}

TEST_F(ProbeTest, RefusedAccessNamesTheToken) {
    make_file("org/gated/resolve/main/g.bin", 100, 54);
    FaultServer srv(www());
    srv.set_faults("/org/gated/resolve/main/g.bin", {Fault::http(401)});
    FetchConfig c;
    c.hf_endpoint = srv.url("");
    try {
        fetch::probe("hf://org/gated/g.bin", c);
        FAIL();
    } catch (const StoreError& e) {
        EXPECT_EQ(e.kind(), ErrorKind::unauthorized);
        EXPECT_NE(std::string(e.what()).find("HF_TOKEN"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("401"), std::string::npos) << e.what();
    }
    srv.set_faults("/org/gated/resolve/main/g.bin", {Fault::http(500)});
    EXPECT_EQ(kind_of([&] { fetch::probe("hf://org/gated/g.bin", c); }), ErrorKind::io);
}

TEST_F(ProbeTest, HeadRefusedFallsBackToGet) {
    make_file("nohead.bin", 777, 55);
    FaultServer srv(www());
    srv.set_faults("/nohead.bin", {Fault::http(405).only("HEAD")});
    auto info = fetch::probe(srv.url("nohead.bin"), FetchConfig{});
    EXPECT_EQ(info.size, 777u);
    EXPECT_TRUE(info.accepts_ranges);
}

}  // namespace
}  // namespace modelfs::test
