#include "modelfs/fetch/config.h"

#include <cerrno>
#include <cstdlib>

#include "modelfs/fetch/fetcher.h"
#include "modelfs/store/errors.h"

namespace modelfs::fetch {
namespace {

std::string env(const char* name) {
    const char* v = std::getenv(name);
    return v ? v : "";
}

}  // namespace

FetchConfig FetchConfig::from_environment() {
    FetchConfig c;
    if (auto v = env("HF_ENDPOINT"); !v.empty()) {
        while (!v.empty() && v.back() == '/') v.pop_back();
        c.hf_endpoint = v;
    }
    c.hf_token = env("HF_TOKEN");
    c.s3.access_key = env("AWS_ACCESS_KEY_ID");
    c.s3.secret_key = env("AWS_SECRET_ACCESS_KEY");
    c.s3.session_token = env("AWS_SESSION_TOKEN");
    if (auto v = env("AWS_REGION"); !v.empty())
        c.s3.region = v;
    else if (auto d = env("AWS_DEFAULT_REGION"); !d.empty())
        c.s3.region = d;
    if (auto v = env("AWS_ENDPOINT_URL_S3"); !v.empty())
        c.s3.endpoint = v;
    else if (auto e = env("AWS_ENDPOINT_URL"); !e.empty())
        c.s3.endpoint = e;
    if (auto v = env("MODELFS_TRANSFER_TIMEOUT"); !v.empty()) {
        char* end = nullptr;
        errno = 0;
        long long secs = std::strtoll(v.c_str(), &end, 10);
        if (errno != 0 || !end || *end != '\0' || secs <= 0 || secs > 10'000'000)
            throw StoreError(ErrorKind::bad_input,
                             "$MODELFS_TRANSFER_TIMEOUT='" + v +
                                 "' must be a whole number of seconds, at least 1 (it is how long "
                                 "one request may take per 32 MiB)");
        c.transfer_timeout = std::chrono::seconds(secs);
    }
    return c;
}

std::string_view to_string(FetchState s) {
    switch (s) {
        case FetchState::queued:
            return "queued";
        case FetchState::running:
            return "running";
        case FetchState::done:
            return "done";
        case FetchState::failed:
            return "failed";
    }
    return "?";
}

}  // namespace modelfs::fetch
