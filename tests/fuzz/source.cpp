// Source URLs (http(s)://, hf://, s3://) as manifests, lock files and `modelfs add` give them:
// the syntax check, what would be requested (with an HF token and S3 keys set, so the
// credential paths run) and the redaction used for logs and the catalog.
#include <cstdint>

#include "fuzz_input.h"
#include "modelfs/fetch/source.h"
#include "modelfs/store/errors.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace modelfs::fetch;
    // Both S3 addressing styles, with credentials and a session token.
    static const FetchConfig path_style = [] {
        FetchConfig c;
        c.hf_token = "hf_fuzz";
        c.s3.access_key = "AKIAFUZZ";
        c.s3.secret_key = "fuzzsecret";
        c.s3.session_token = "fuzztoken";
        c.s3.endpoint = "http://127.0.0.1:7480";
        return c;
    }();
    static const FetchConfig virtual_host = [] {
        FetchConfig c = path_style;
        c.s3.path_style = false;
        c.s3.endpoint.clear();
        return c;
    }();
    const auto url = modelfs::fuzz::as_text(data, size);
    (void)is_remote_url(url);
    (void)redact_url(url);
    try {
        modelfs::fetch::check_source_url(url);
        (void)resolve_source(url, path_style);
        (void)resolve_source(url, virtual_host);
    } catch (const modelfs::StoreError&) {
    }
    return 0;
}
