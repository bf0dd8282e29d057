#include "modelfs/store/secrets.h"

#include <sys/stat.h>

#include <algorithm>
#include <array>
#include <cctype>

#include "modelfs/store/escape.h"
#include "modelfs/store/text.h"

namespace modelfs {
namespace {

// scheme://[userinfo@]host... -> the URL without "userinfo@" (the query and fragment already
// cut off by the caller).
std::string without_userinfo(std::string_view u) {
    auto p = u.find("://");
    if (p == std::string_view::npos) return std::string(u);
    auto auth_end = u.find('/', p + 3);
    std::string_view authority = u.substr(
        p + 3, auth_end == std::string_view::npos ? std::string_view::npos : auth_end - p - 3);
    auto at = authority.rfind('@');
    if (at == std::string_view::npos) return std::string(u);
    std::string out(u.substr(0, p + 3));
    out += authority.substr(at + 1);
    if (auth_end != std::string_view::npos) out += u.substr(auth_end);
    return out;
}

}  // namespace

bool is_secret_query_param(std::string_view name) {
    const std::string n = lower(percent_decoded(name, /*plus_is_space=*/true));
    if (n.rfind("x-amz-", 0) == 0 || n.rfind("x-goog-", 0) == 0) return true;
    static constexpr std::array<std::string_view, 11> exact = {
        "sig",    "signature", "token",  "access_token", "key",           "api_key",
        "apikey", "auth",      "policy", "key-pair-id",  "googleaccessid"};
    if (std::find(exact.begin(), exact.end(), n) != exact.end()) return true;
    for (std::string_view part : {"token", "secret", "signature", "password", "credential"})
        if (n.find(part) != std::string::npos) return true;
    return false;
}

std::string redact_url(std::string_view url) {
    return without_userinfo(url.substr(0, url.find_first_of("?#")));
}

StrippedUrl strip_url_secrets(std::string_view url) {
    StrippedUrl out;
    std::string_view u = url.substr(0, url.find('#'));
    const auto q = u.find('?');
    const std::string_view query =
        q == std::string_view::npos ? std::string_view{} : u.substr(q + 1);
    u = u.substr(0, q);
    out.url = without_userinfo(u);
    out.removed = out.url.size() != u.size();
    std::string kept;
    for (std::size_t start = 0; q != std::string_view::npos && start <= query.size();) {
        auto end = query.find('&', start);
        if (end == std::string_view::npos) end = query.size();
        const std::string_view param = query.substr(start, end - start);
        start = end + 1;
        if (param.empty()) continue;
        if (is_secret_query_param(param.substr(0, param.find('=')))) {
            out.removed = true;
            continue;
        }
        kept.append(kept.empty() ? "" : "&").append(param);
    }
    if (!kept.empty()) out.url.append("?").append(kept);
    return out;
}

mode_t secret_file_mode(const std::filesystem::path& folder) {
    struct stat st;
    const bool group = ::stat(folder.c_str(), &st) == 0 && (st.st_mode & S_IRGRP);
    return group ? 0640 : 0600;
}

bool tighten_secret_file(const std::filesystem::path& file, const std::filesystem::path& folder) {
    struct stat st;
    if (::stat(file.c_str(), &st) != 0) return false;
    // Group bits a multi-user store already gave (lock.mdb is written by its readers) stay.
    const mode_t allowed = secret_file_mode(folder) == 0600 ? 0700 : 0770;
    const mode_t now = st.st_mode & 07777;
    if ((now & ~allowed) == 0) return true;
    return ::chmod(file.c_str(), now & allowed) == 0;
}

}  // namespace modelfs
