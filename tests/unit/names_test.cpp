// names.h (the one rule for names and paths), escape.h (terminal and JSON output of text others
// chose) and secrets.h (what of a URL is a secret).
#include "modelfs/store/names.h"

#include <gtest/gtest.h>

#include <string>

#include "modelfs/fetch/source.h"
#include "modelfs/store/errors.h"
#include "modelfs/store/escape.h"
#include "modelfs/store/secrets.h"
#include "modelfs/store/store.h"

namespace modelfs {
namespace {

TEST(Names, GoodNamesAndPaths) {
    for (const std::string p :
         {"a", "sdxl/detail-tweaker", "unet/diffusion_pytorch_model.safetensors", "café/日本語",
          "a b/c.d", "x..y", ".hidden", "...", "emoji😀"}) {
        EXPECT_EQ(relative_path_problem(p), "") << p;
        EXPECT_NO_THROW(check_model_name(p)) << p;
    }
    EXPECT_EQ(relative_path_problem(std::string(255, 'a')), "");
    EXPECT_EQ(relative_path_problem(std::string(200, 'a') + "/" + std::string(200, 'b')), "");
}

TEST(Names, BadNamesAndPathsAreRefusedNamingWhat) {
    struct Case {
        std::string path, says;
    };
    const Case cases[] = {
        {"", "empty"},
        {"..", "'..'"},
        {"../x", "component 1 is '..'"},
        {"a/../../etc/cron.d/x", "component 2 is '..'"},
        {"a/./b", "'.'"},
        {".", "'.'"},
        {"/etc/x", "absolute"},
        {"a//b", "component 2 is empty"},
        {"a/", "component 2 is empty"},
        {"a\nb", "control character 0x0a at byte 1"},
        {"a\x1b[31mred", "control character 0x1b at byte 1"},
        {"tab\tx", "control character 0x09"},
        {"del\x7f", "control character 0x7f"},
        {"c1\xc2\x9b"
         "31m",
         "control character U+009B"},
        {"nul" + std::string(1, '\0') + "x", "control character 0x00"},
        {"bad\xff", "byte 0xff at byte 3 is not UTF-8"},
        {"over\xc0\xaf", "byte 0xc0"},           // overlong '/'
        {"surrogate\xed\xa0\x80", "byte 0xed"},  // U+D800
        {"cut\xe6\x97", "byte 0xe6"},
        {std::string(256, 'a'), "longer than 255 bytes"},
        {std::string(600, 'a') + "/" + std::string(600, 'b'), "longer than 1024 bytes"},
    };
    for (const auto& c : cases) {
        const std::string why = relative_path_problem(c.path);
        EXPECT_NE(why.find(c.says), std::string::npos)
            << "'" << terminal_safe(c.path) << "' gave: " << why;
        EXPECT_THROW(check_model_name(c.path), StoreError) << terminal_safe(c.path);
    }
    // Model names: shorter components (room for @label and an extension), no '@'.
    EXPECT_THROW(check_model_name(std::string(201, 'a')), StoreError);
    EXPECT_THROW(check_model_name("foo@v2"), StoreError);
}

TEST(Names, TheMessageShowsTheNameEscaped) {
    try {
        check_model_name("evil\x1b]0;title\x07");
        FAIL() << "accepted";
    } catch (const StoreError& e) {
        const std::string what = e.what();
        EXPECT_EQ(what.find('\x1b'), std::string::npos) << what;
        EXPECT_NE(what.find("evil\\x1b]0;title\\x07"), std::string::npos) << what;
        EXPECT_EQ(e.kind(), ErrorKind::bad_input);
    }
}

TEST(Names, Utf8Validation) {
    EXPECT_TRUE(is_valid_utf8("plain ascii"));
    EXPECT_TRUE(is_valid_utf8("\xf4\x8f\xbf\xbf"));   // U+10FFFF
    EXPECT_FALSE(is_valid_utf8("\xf4\x90\x80\x80"));  // above U+10FFFF
    EXPECT_FALSE(is_valid_utf8("\xe0\x80\xaf"));      // overlong
    EXPECT_FALSE(is_valid_utf8("\x80"));
}

TEST(Escape, TerminalSafeEscapesControlSequences) {
    EXPECT_EQ(terminal_safe("\x1b[2J\x1b]0;x\x07"), "\\x1b[2J\\x1b]0;x\\x07");
    EXPECT_EQ(terminal_safe("a\nb\rc\x7f"), "a\\x0ab\\x0dc\\x7f");
    EXPECT_EQ(terminal_safe("csi\xc2\x9b"
                            "2J"),
              "csi\\xc2\\x9b2J");  // C1 CSI
    EXPECT_EQ(terminal_safe("bad\xff"), "bad\\xff");
    EXPECT_EQ(terminal_safe("café 日本"), "café 日本");
}

TEST(Escape, DumpJsonNeverFailsAndIsReversible) {
    nlohmann::json j = {{"name", "ok"},
                        {"bad", std::string("a\xff"
                                            "b")},
                        {"list", {"x\xc3"}}};
    EXPECT_THROW((void)j.dump(), nlohmann::json::type_error);  // what nlohmann alone does
    const std::string text = dump_json(j, -1);
    EXPECT_NE(text.find(R"("bad":"a\udcffb")"), std::string::npos) << text;
    EXPECT_NE(text.find(R"(["x\udcc3"])"), std::string::npos) << text;
    EXPECT_NE(text.find(R"("name":"ok")"), std::string::npos) << text;
    // Valid text is untouched, and a real U+FFFF stays itself.
    nlohmann::json ok = {{"a", "caf\xc3\xa9"}, {"ffff", "x\xef\xbf\xbfy"}, {"bad", "\xfe"}};
    const std::string t2 = dump_json(ok, -1);
    EXPECT_NE(t2.find("\"caf\xc3\xa9\""), std::string::npos) << t2;
    EXPECT_NE(t2.find(R"("x\uffffy")"), std::string::npos) << t2;
    EXPECT_NE(t2.find(R"("\udcfe")"), std::string::npos) << t2;
    EXPECT_EQ(dump_json({{"a", 1}}, 2), nlohmann::json({{"a", 1}}).dump(2));
    // Keys too.
    EXPECT_NE(dump_json({{"k\xff", 1}}, -1).find(R"("k\udcff":1)"), std::string::npos);
}

TEST(Escape, PercentDecodedIsWhatAServerSees) {
    EXPECT_EQ(percent_decoded("%2e%2E/a%2Fb"), "../a/b");
    EXPECT_EQ(percent_decoded("50%"), "50%");  // not followed by two hex digits: kept
    EXPECT_EQ(percent_decoded("%zz%4"), "%zz%4");
    EXPECT_EQ(percent_decoded("a+b"), "a+b");                          // a path keeps '+'
    EXPECT_EQ(percent_decoded("a+b", /*plus_is_space=*/true), "a b");  // query text
    EXPECT_EQ(percent_decoded("%00x"), std::string("\0x", 2));
}

TEST(Secrets, StripKeepsPublicUrlsAndRemovesCredentials) {
    EXPECT_EQ(strip_url_secrets("https://host/a.safetensors?download=true").url,
              "https://host/a.safetensors?download=true");
    EXPECT_FALSE(strip_url_secrets("https://host/a.safetensors?download=true").removed);
    auto s = strip_url_secrets(
        "http://alice:PASSWORD@host:8080/b/k.gguf?X-Amz-Algorithm=AWS4&X-Amz-Credential=AK%2F1&"
        "X-Amz-Signature=abc&X-Amz-Security-Token=t&versionId=3&token=zz#frag");
    EXPECT_EQ(s.url, "http://host:8080/b/k.gguf?versionId=3");
    EXPECT_TRUE(s.removed);
    for (const char* p :
         {"sig", "Signature", "access_token", "key", "api_key", "X-Goog-Signature", "Key-Pair-Id",
          "Policy", "hf_token", "client_secret", "x%2Damz%2Dsignature"})
        EXPECT_TRUE(is_secret_query_param(p)) << p;
    for (const char* p : {"download", "revision", "versionId", "file"})
        EXPECT_FALSE(is_secret_query_param(p)) << p;
    EXPECT_TRUE(strip_url_secrets("https://u@host/x").removed);
    EXPECT_EQ(strip_url_secrets("https://host/a@b").url, "https://host/a@b");
}

TEST(Secrets, RedactUrlIsTheOneFetchUses) {
    EXPECT_EQ(redact_url("https://user:pass@host/p?X-Amz-Signature=abc"), "https://host/p");
    EXPECT_EQ(fetch::redact_url("https://user:pass@host/p?a=b#c"), "https://host/p");
}

TEST(HfUrls, PathsThatLeaveResolveAreRefusedBeforeAnyRequest) {
    fetch::FetchConfig cfg;
    cfg.hf_endpoint = "https://hub.example";
    cfg.hf_token = "hf_secret";
    for (const char* url :
         {"hf://a/b/../../../api/whoami-v2.safetensors", "hf://a/b/x/%2e%2e/%2E%2E/y.safetensors",
          "hf://a/b/%2e%2e%2f%2e%2e%2fapi/whoami-v2.safetensors", "hf://a/b/./x.safetensors",
          "hf://a/b//x.safetensors", "hf://a/..@main/x.safetensors", "hf://a/b@../../x/y.gguf",
          "hf://../b/x.safetensors", "hf://a/b/x%0a.safetensors"}) {
        EXPECT_THROW(fetch::resolve_source(url, cfg), StoreError) << url;
        EXPECT_THROW(fetch::check_source_url(url), StoreError) << url;
    }
    auto t = fetch::resolve_source("hf://a/b@refs%2Fpr%2F1/unet/x.safetensors", cfg);
    EXPECT_EQ(t.url, "https://hub.example/a/b/resolve/refs%2Fpr%2F1/unet/x.safetensors");
}

}  // namespace
}  // namespace modelfs
