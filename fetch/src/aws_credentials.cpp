#include "modelfs/fetch/aws_credentials.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <string_view>

#include "modelfs/store/errors.h"
#include "modelfs/store/text.h"
#include "modelfs/store/unique_fd.h"

namespace modelfs::fetch {
namespace {

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r'))
        s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r'))
        s.remove_suffix(1);
    return s;
}

// "profile   team" -> "profile team": the AWS CLI splits a section name on whitespace.
std::string section_name(std::string_view raw) {
    std::string out;
    bool space = false;
    for (char c : trim(raw)) {
        if (c == ' ' || c == '\t') {
            space = true;
            continue;
        }
        if (space && !out.empty()) out += ' ';
        space = false;
        out += c;
    }
    return out;
}

// An unset variable and an empty one are the same to the AWS CLI.
std::optional<std::string> env_value(const AwsEnv& env, const std::string& name) {
    auto v = env(name);
    if (!v || v->empty()) return std::nullopt;
    return v;
}

std::optional<std::string> first_env(const AwsEnv& env, std::initializer_list<const char*> names) {
    for (const char* n : names)
        if (auto v = env_value(env, n)) return v;
    return std::nullopt;
}

// A value of `section`; nullopt when absent or empty.
std::optional<std::string> value_of(const std::map<std::string, std::string>* section,
                                    const std::string& key) {
    if (!section) return std::nullopt;
    auto it = section->find(key);
    if (it == section->end() || it->second.empty()) return std::nullopt;
    return it->second;
}

const std::map<std::string, std::string>* section_of(const IniFile& ini, const std::string& name) {
    auto it = ini.find(name);
    return it == ini.end() ? nullptr : &it->second;
}

// AWS_SHARED_CREDENTIALS_FILE / AWS_CONFIG_FILE, or ~/.aws/NAME; "~/" is $HOME, as the AWS CLI
// expands it. Empty when there is no home to look in (the file is then taken as missing).
std::string aws_file(const AwsEnv& env, const char* variable, const char* name) {
    auto home = env_value(env, "HOME");
    if (auto v = env_value(env, variable)) {
        if (*v == "~" || v->rfind("~/", 0) == 0) return home ? *home + v->substr(1) : std::string();
        return *v;
    }
    return home ? *home + "/.aws/" + name : std::string();
}

}  // namespace

std::optional<std::string> aws_process_env(const std::string& name) {
    const char* v = std::getenv(name.c_str());
    if (!v) return std::nullopt;
    return std::string(v);
}

IniFile parse_aws_ini(const std::string& text) {
    IniFile ini;
    std::map<std::string, std::string>* section = nullptr;
    std::string sub;  // the "key =" whose indented lines follow, empty: none
    std::size_t pos = 0;
    while (pos <= text.size()) {
        std::size_t nl = text.find('\n', pos);
        if (nl == std::string::npos) nl = text.size();
        std::string_view raw(text.data() + pos, nl - pos);
        pos = nl + 1;
        std::string_view line = trim(raw);
        if (line.empty() || line.front() == '#' || line.front() == ';') continue;
        const bool indented = raw.front() == ' ' || raw.front() == '\t';
        if (line.front() == '[') {
            sub.clear();
            auto close = line.find(']');
            if (close == std::string_view::npos) {
                section = nullptr;  // malformed: its lines belong to no profile
                continue;
            }
            section = &ini[section_name(line.substr(1, close - 1))];
            continue;
        }
        if (!section) continue;
        auto eq = line.find('=');
        if (eq == std::string_view::npos) continue;
        std::string key = lower(trim(line.substr(0, eq)));
        std::string value(trim(line.substr(eq + 1)));
        if (key.empty()) continue;
        if (indented && !sub.empty()) {
            (*section)[sub + "." + key] = value;
            continue;
        }
        // A key with an empty value opens a sub-section ("s3 =" then "  endpoint_url = ...").
        sub = value.empty() ? key : std::string();
        (*section)[key] = value;
    }
    return ini;
}

IniFile read_aws_ini(const std::string& path) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) {
        if (errno == ENOENT || errno == ENOTDIR) return {};
        throw_errno("reading the AWS settings file " + path, errno);
    }
    std::string text;
    char buf[16384];
    while (true) {
        ssize_t n = ::read(fd.get(), buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR) continue;
            throw_errno("reading the AWS settings file " + path, errno);
        }
        if (n == 0) break;
        text.append(buf, static_cast<std::size_t>(n));
        // These are a few lines each; a huge one is not an AWS settings file.
        if (text.size() > (16u << 20))
            throw StoreError(ErrorKind::bad_input,
                             "the AWS settings file " + path + " is larger than 16 MiB");
    }
    return parse_aws_ini(text);
}

AwsSettings aws_settings(const std::string& profile, const std::string& region,
                         const std::string& endpoint, const S3Config& fallback, const AwsEnv& env) {
    AwsSettings out;
    bool explicit_profile = true;
    std::string named_by = "the remote";
    if (!profile.empty()) {
        out.profile = profile;
    } else if (auto p = env_value(env, "AWS_PROFILE")) {
        out.profile = *p;
        named_by = "AWS_PROFILE";
    } else {
        out.profile = "default";
        explicit_profile = false;
    }

    const std::string cred_path = aws_file(env, "AWS_SHARED_CREDENTIALS_FILE", "credentials");
    const std::string conf_path = aws_file(env, "AWS_CONFIG_FILE", "config");
    const IniFile creds = cred_path.empty() ? IniFile{} : read_aws_ini(cred_path);
    const IniFile conf = conf_path.empty() ? IniFile{} : read_aws_ini(conf_path);

    // The credentials file names sections by the profile alone; the config file writes
    // "[profile NAME]", except for the default profile, which may be "[default]" too.
    const auto* cred_sec = section_of(creds, out.profile);
    std::string conf_name = "profile " + out.profile;
    const auto* conf_sec = section_of(conf, conf_name);
    if (!conf_sec && out.profile == "default") {
        conf_name = "default";
        conf_sec = section_of(conf, conf_name);
    }
    if (explicit_profile && !cred_sec && !conf_sec)
        throw StoreError(ErrorKind::bad_input,
                         "the AWS profile '" + out.profile + "' (named by " + named_by +
                             ") is in neither " +
                             (cred_path.empty() ? "~/.aws/credentials" : cred_path) + " nor " +
                             (conf_path.empty() ? "~/.aws/config" : conf_path) + "; add a [" +
                             out.profile + "] section to the first or a [profile " + out.profile +
                             "] section to the second (`aws configure --profile " + out.profile +
                             "` writes one), or name another profile");

    // Keys: a pair is taken whole from one place, never an access key from one and the secret
    // from another.
    AwsCredentials& c = out.credentials;
    auto env_id = env_value(env, "AWS_ACCESS_KEY_ID");
    auto env_secret = env_value(env, "AWS_SECRET_ACCESS_KEY");
    auto from_section = [&](const std::map<std::string, std::string>* sec,
                            const std::string& origin) {
        auto id = value_of(sec, "aws_access_key_id");
        auto secret = value_of(sec, "aws_secret_access_key");
        if (!id || !secret) return false;
        c.access_key = *id;
        c.secret_key = *secret;
        c.session_token = value_of(sec, "aws_session_token").value_or("");
        c.origin = origin;
        return true;
    };
    if (env_id && env_secret) {
        c.access_key = *env_id;
        c.secret_key = *env_secret;
        c.session_token = env_value(env, "AWS_SESSION_TOKEN").value_or("");
        c.origin = "the environment";
    } else if (!from_section(cred_sec, cred_path + " [" + out.profile + "]") &&
               !from_section(conf_sec, conf_path + " [" + conf_name + "]") &&
               !fallback.access_key.empty()) {
        c.access_key = fallback.access_key;
        c.secret_key = fallback.secret_key;
        c.session_token = fallback.session_token;
        c.origin = "modelfs config [s3]";
    }

    if (!region.empty())
        out.region = region;
    else if (auto r = first_env(env, {"AWS_REGION", "AWS_DEFAULT_REGION"}))
        out.region = *r;
    else if (auto cr = value_of(conf_sec, "region"))
        out.region = *cr;
    else
        out.region = fallback.region;
    if (out.region.empty()) out.region = "us-east-1";

    // The endpoint: S3's own before the general one, as the AWS CLI has it; in the profile, a
    // "services = NAME" section's s3 endpoint, then the profile's "s3 =" sub-section's, then its
    // endpoint_url.
    if (!endpoint.empty()) {
        out.endpoint = endpoint;
    } else if (auto e = first_env(env, {"AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"})) {
        out.endpoint = *e;
    } else {
        std::optional<std::string> pe;
        if (auto services = value_of(conf_sec, "services"))
            pe = value_of(section_of(conf, "services " + *services), "s3.endpoint_url");
        if (!pe) pe = value_of(conf_sec, "s3.endpoint_url");
        if (!pe) pe = value_of(conf_sec, "endpoint_url");
        out.endpoint = pe ? *pe : fallback.endpoint;
    }
    return out;
}

}  // namespace modelfs::fetch
