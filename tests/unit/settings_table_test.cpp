// The table of settings (tools/config.cpp): every row read from the file and the environment,
// printed by `modelfs config` (secrets masked), explained in its help, and named in every
// message about a mistake.
#include <gtest/gtest.h>

#include <map>
#include <string>

#include "config.h"

namespace {

using modelfs::cli::Config;
using modelfs::cli::ConfigError;
using modelfs::cli::EffectiveSetting;
using modelfs::cli::SettingInfo;

#define EXPECT_HAS(haystack, needle) \
    EXPECT_NE(std::string(haystack).find(needle), std::string::npos) << (haystack)

const char* kFile = "/cfg/config.toml";

// `key = value` where the file writes it: top level, or in the key's [table].
std::string toml_of(const SettingInfo& s, const std::string& value) {
    const auto dot = s.key.find('.');
    if (dot == std::string::npos) return s.key + " = " + value + "\n";
    return "[" + s.key.substr(0, dot) + "]\n" + s.key.substr(dot + 1) + " = " + value + "\n";
}

// The example as a variable holds it: without the TOML quotes.
std::string unquoted(const std::string& v) {
    return v.size() >= 2 && v.front() == '"' ? v.substr(1, v.size() - 2) : v;
}

modelfs::cli::EnvFn env_of(std::map<std::string, std::string> vars) {
    return [vars = std::move(vars)](const char* name) {
        auto it = vars.find(name);
        return it == vars.end() ? std::string() : it->second;
    };
}

EffectiveSetting printed(const Config& c, const std::string& key, const modelfs::cli::EnvFn& env) {
    for (const auto& s : modelfs::cli::effective_settings(c, "", env))
        if (s.key == key) return s;
    ADD_FAILURE() << "`modelfs config` does not print " << key;
    return {};
}

std::string error_of(const std::string& text) {
    try {
        modelfs::cli::parse_config(text, kFile);
    } catch (const ConfigError& e) {
        return e.what();
    }
    ADD_FAILURE() << "accepted: " << text;
    return "";
}

TEST(SettingsTable, EveryRowIsDescribed) {
    ASSERT_FALSE(modelfs::cli::settings().empty());
    for (const SettingInfo& s : modelfs::cli::settings()) {
        EXPECT_FALSE(s.example.empty()) << s.key;
        EXPECT_FALSE(s.description.empty()) << s.key;
        EXPECT_FALSE(s.expected.empty()) << s.key;
        EXPECT_TRUE(s.in_file || !s.env.empty()) << s.key << " can be set nowhere";
    }
}

TEST(SettingsTable, EveryRowParsesItsOwnExample) {
    for (const SettingInfo& s : modelfs::cli::settings()) {
        if (!s.in_file) continue;
        Config c = modelfs::cli::parse_config(toml_of(s, s.example), kFile);
        const EffectiveSetting p = printed(c, s.key, env_of({}));
        EXPECT_EQ(p.origin, std::string("file ") + kFile) << s.key;
        EXPECT_FALSE(p.value.empty()) << s.key;
        // A stronger file's value survives the merge with a weaker one that lacks it.
        const Config merged = modelfs::cli::merge_config(Config{}, c);
        EXPECT_EQ(printed(merged, s.key, env_of({})).value, p.value) << s.key;
    }
}

TEST(SettingsTable, EveryVariableTakesTheExample) {
    for (const SettingInfo& s : modelfs::cli::settings()) {
        for (const std::string& var : s.env) {
            const auto env = env_of({{var, unquoted(s.example)}});
            EXPECT_EQ(printed(Config{}, s.key, env).origin, "env " + var) << s.key;
            EXPECT_NO_THROW(modelfs::cli::environment_fetch_config(env)) << var;
        }
    }
    // The first variable of a row wins over the next.
    const auto env = env_of({{"AWS_REGION", "us-9"}, {"AWS_DEFAULT_REGION", "eu-1"}});
    EXPECT_EQ(modelfs::cli::environment_fetch_config(env).s3.region, "us-9");
    EXPECT_EQ(
        modelfs::cli::environment_fetch_config(env_of({{"AWS_DEFAULT_REGION", "eu-1"}})).s3.region,
        "eu-1");
}

TEST(SettingsTable, EverySecretIsMaskedWhenPrinted) {
    int secrets = 0;
    for (const SettingInfo& s : modelfs::cli::settings()) {
        if (!s.secret) continue;
        ++secrets;
        const std::string value = "raw-secret-of-" + s.key;
        if (s.in_file) {
            Config c = modelfs::cli::parse_config(toml_of(s, "\"" + value + "\""), kFile);
            const EffectiveSetting p = printed(c, s.key, env_of({}));
            EXPECT_TRUE(p.secret) << s.key;
            EXPECT_EQ(p.value, "********") << s.key;
        }
        for (const std::string& var : s.env) {
            const EffectiveSetting p = printed(Config{}, s.key, env_of({{var, value}}));
            EXPECT_EQ(p.value, "********") << var;
            EXPECT_EQ(p.origin, "env " + var);
        }
    }
    EXPECT_GE(secrets, 3) << "fetch.hf_token, s3.secret_key, s3.session_token";
}

TEST(SettingsTable, AnUnknownKeyNamesTheFileTheKeyAndTheKnownOnes) {
    for (const SettingInfo& s : modelfs::cli::settings()) {
        const auto dot = s.key.find('.');
        if (dot == std::string::npos || !s.in_file) continue;
        const std::string table = s.key.substr(0, dot);
        const std::string e = error_of("[" + table + "]\nnot_a_setting = 1\n");
        EXPECT_TRUE(e.starts_with(std::string(kFile) + ":2:1: unknown key 'not_a_setting' in [" +
                                  table + "]; the known"))
            << e;
        EXPECT_HAS(e, s.key.substr(dot + 1));
        // The table is a known top-level key: its misspelling is named with the others.
        EXPECT_HAS(error_of("[" + table + "x]\na = 1\n"), "[" + table + "]");
    }
    EXPECT_HAS(error_of("stroe = 1\n"), "'store'");
}

TEST(SettingsTable, AValueOfTheWrongTypeNamesTheKeyAndWhatIsExpected) {
    for (const SettingInfo& s : modelfs::cli::settings()) {
        if (!s.in_file) continue;
        const std::string e = error_of(toml_of(s, "true"));
        EXPECT_TRUE(e.starts_with(std::string(kFile) + ":")) << e;
        EXPECT_HAS(e, "'" + s.key + "'");
        EXPECT_HAS(e, s.expected);
    }
}

TEST(SettingsTable, ABadCountInTheEnvironmentNamesTheVariable) {
    try {
        modelfs::cli::environment_fetch_config(env_of({{"MODELFS_TRANSFER_TIMEOUT", "soon"}}));
        ADD_FAILURE() << "accepted";
    } catch (const ConfigError& e) {
        EXPECT_HAS(e.what(), "$MODELFS_TRANSFER_TIMEOUT='soon' must be a whole number");
    }
}

TEST(SettingsTable, TheHelpListsEverySettingAndVariable) {
    const std::string help = modelfs::cli::settings_help();
    for (const SettingInfo& s : modelfs::cli::settings()) {
        EXPECT_HAS(help, s.key);
        EXPECT_HAS(help, s.description);
        for (const std::string& var : s.env) EXPECT_HAS(help, "$" + var);
    }
}

}  // namespace
