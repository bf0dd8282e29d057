// AWS credentials and settings found the way the AWS CLI finds them, so a team's existing setup
// works unchanged: the environment first, then the shared files with profiles. Nothing here is
// ever written to the store's catalog; a remote records only its profile's name.
//
//   AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN    the environment (both keys)
//   AWS_SHARED_CREDENTIALS_FILE (default ~/.aws/credentials)       [PROFILE] sections
//   AWS_CONFIG_FILE (default ~/.aws/config)                        [default], [profile PROFILE]
//   AWS_PROFILE (else "default")                                   which profile
//   AWS_REGION, AWS_DEFAULT_REGION; AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL
//
// Order, as the AWS CLI: for keys, the environment, then the credentials file's profile, then the
// config file's profile (aws_access_key_id there is allowed too), then `fallback` (modelfs's own
// config file, [s3] access_key/secret_key). For the region: the caller's explicit one, the
// environment, the config file's profile `region`, then `fallback.region`. For the endpoint: the
// caller's explicit one, the environment, the profile's `endpoint_url` (also under an
// `[profile X]`'s `s3 =` sub-section as `endpoint_url`), then `fallback.endpoint`.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>

#include "modelfs/fetch/config.h"

namespace modelfs::fetch {

struct AwsCredentials {
    std::string access_key;  // empty: none found (requests go unsigned)
    std::string secret_key;
    std::string session_token;
    // Where they came from, for messages ("the environment", "/root/.aws/credentials [team]",
    // "modelfs config [s3]"); never the keys themselves.
    std::string origin;
};

// Reads the environment; tests pass their own.
using AwsEnv = std::function<std::optional<std::string>(const std::string& name)>;
std::optional<std::string> aws_process_env(const std::string& name);

// An INI file as the AWS CLI reads it: "[section]" lines, "key = value" lines (keys lower-cased,
// values trimmed), '#' and ';' comment lines, indented "key = value" lines below a "key =" line
// with an empty value are that sub-section's ("s3 =\n  endpoint_url = ..." gives
// "s3.endpoint_url"). A missing file is an empty map; an unreadable one throws StoreError naming
// it.
using IniFile = std::map<std::string, std::map<std::string, std::string>>;
IniFile read_aws_ini(const std::string& path);
IniFile parse_aws_ini(const std::string& text);

// Everything an S3 request needs, resolved for one remote.
struct AwsSettings {
    AwsCredentials credentials;
    std::string region;    // never empty ("us-east-1" when nothing says otherwise)
    std::string endpoint;  // empty: AWS (https://s3.REGION.amazonaws.com)
    std::string profile;   // the profile that was used
};

// `profile`: the remote's own profile (empty: AWS_PROFILE, else "default"). `region`/`endpoint`:
// the remote's own settings, which win when non-empty. A profile named explicitly (by the remote
// or AWS_PROFILE) that neither file has throws StoreError bad_input naming both files.
AwsSettings aws_settings(const std::string& profile, const std::string& region,
                         const std::string& endpoint, const S3Config& fallback,
                         const AwsEnv& env = aws_process_env);

}  // namespace modelfs::fetch
