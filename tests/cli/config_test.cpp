// The config file as a user meets it: `modelfs views`, the store it names, and what a bad one does
// to the exit code and the message.
#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "support/test_env.h"

namespace stdfs = std::filesystem;
using namespace modelfs::testing;
using nlohmann::json;

namespace {

const char* kConfig = R"(
[[layout]]
name = "mytool"

[[layout.folder]]
path = "my-loras"
category = "lora"
extensions = [".safetensors"]

[[layout.folder]]
path = "my-checkpoints"
category = "checkpoint"

[[layout]]
name = "fooocus"
[[layout.folder]]
path = "only-vaes"
category = "vae"
)";

#define EXPECT_HAS(haystack, needle) \
    EXPECT_NE((haystack).find(needle), std::string::npos) << (haystack)

class CliConfig : public ::testing::Test {
  protected:
    TempDir dir{"modelfs-cli-config"};
    stdfs::path config = dir / "config.toml";

    void SetUp() override { write_text_file(config, kConfig); }
};

TEST_F(CliConfig, ViewsListsBuiltInAndUserViews) {
    CliResult r = run_modelfs({"--config", config.string(), "views"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_HAS(r.out, "config file: " + config.string());
    EXPECT_HAS(r.out, "\nmytool (config)\n");
    EXPECT_HAS(r.out, "\ncomfyui (built-in)\n");
    EXPECT_HAS(r.out, "\nfooocus (config, replaces the built-in)\n");
    EXPECT_HAS(r.out, "my-loras/");
    EXPECT_HAS(r.out, "my-checkpoints/");
    EXPECT_HAS(r.out, ".safetensors");
    // The replaced built-in's own folders are gone.
    EXPECT_EQ(r.out.find("fooocus.patch"), std::string::npos) << r.out;
}

TEST_F(CliConfig, ViewsAsJson) {
    CliResult r = run_modelfs({"--config", config.string(), "--json", "views"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    json j = json::parse(r.out);
    EXPECT_EQ(j["config"], config.string());
    std::map<std::string, json> by_name;
    for (const auto& v : j["views"]) by_name[v["name"]] = v;
    ASSERT_EQ(by_name.size(), 7u) << r.out;  // six built-ins (one replaced) plus mytool
    EXPECT_EQ(by_name["a1111"]["source"], "built-in");
    EXPECT_EQ(by_name["mytool"]["source"], "config");
    EXPECT_EQ(by_name["mytool"]["replaces_builtin"], false);
    EXPECT_EQ(by_name["fooocus"]["replaces_builtin"], true);
    const json& f = by_name["mytool"]["folders"];
    ASSERT_EQ(f.size(), 2u);
    EXPECT_EQ(f[0]["path"], "my-loras");
    EXPECT_EQ(f[0]["category"], "lora");
    EXPECT_EQ(f[0]["extensions"], json::array({".safetensors"}));
    EXPECT_EQ(f[0]["primary"], true);
    EXPECT_EQ(f[1]["category"], "checkpoint");
}

TEST_F(CliConfig, ViewsOfOneName) {
    CliResult r = run_modelfs({"--config", config.string(), "views", "mytool"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_HAS(r.out, "mytool (config)");
    EXPECT_EQ(r.out.find("a1111"), std::string::npos) << r.out;

    r = run_modelfs({"--config", config.string(), "views", "nosuchtool"});
    EXPECT_NE(r.exit_code, 0);
    EXPECT_HAS(r.err, "unknown view 'nosuchtool'");
    EXPECT_HAS(r.err, "mytool");
}

TEST_F(CliConfig, AnAliasNamesTheReplacement) {
    write_text_file(config,
                    "[[layout]]\nname = \"a1111\"\n[[layout.folder]]\npath = \"mine\"\n"
                    "category = \"lora\"\n");
    CliResult r = run_modelfs({"--config", config.string(), "views", "automatic1111"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_HAS(r.out, "a1111 (config, replaces the built-in)");
    EXPECT_HAS(r.out, "mine/");
    EXPECT_EQ(r.out.find("Stable-diffusion"), std::string::npos) << r.out;
}

TEST_F(CliConfig, NoConfigFileMeansTheBuiltInsOnly) {
    CliResult r = run_modelfs({"--json", "views"});  // MODELFS_CONFIG=/dev/null in tests
    ASSERT_EQ(r.exit_code, 0) << r.err;
    json j = json::parse(r.out);
    EXPECT_EQ(j["views"].size(), 6u);  // the built-ins, invokeai included

    // Nothing at any of the usual places.
    if (stdfs::exists("/etc/modelfs/config.toml"))
        GTEST_SKIP() << "/etc/modelfs/config.toml exists";
    r = run_modelfs({"--json", "views"}, {{"MODELFS_CONFIG", ""},
                                          {"XDG_CONFIG_HOME", (dir / "empty").string()},
                                          {"HOME", (dir / "home").string()}});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_TRUE(json::parse(r.out)["config"].is_null()) << r.out;
}

TEST_F(CliConfig, FoundThroughTheEnvironment) {
    CliResult r = run_modelfs({"views", "mytool"}, {{"MODELFS_CONFIG", config.string()}});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_HAS(r.out, "my-loras/");

    stdfs::create_directories(dir / "xdg" / "modelfs");
    stdfs::copy_file(config, dir / "xdg" / "modelfs" / "config.toml");
    r = run_modelfs({"views", "mytool"},
                    {{"MODELFS_CONFIG", ""}, {"XDG_CONFIG_HOME", (dir / "xdg").string()}});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_HAS(r.out, "config file: " + (dir / "xdg" / "modelfs" / "config.toml").string());

    stdfs::create_directories(dir / "home" / ".config" / "modelfs");
    stdfs::copy_file(config, dir / "home" / ".config" / "modelfs" / "config.toml");
    r = run_modelfs(
        {"views", "mytool"},
        {{"MODELFS_CONFIG", ""}, {"XDG_CONFIG_HOME", ""}, {"HOME", (dir / "home").string()}});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_HAS(r.out, "config file: " + (dir / "home/.config/modelfs/config.toml").string());
}

TEST_F(CliConfig, AMissingNamedFileIsAUsageError) {
    CliResult r = run_modelfs({"--config", (dir / "typo.toml").string(), "views"});
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_HAS(r.err, (dir / "typo.toml").string() + ": no such config file (given with --config)");

    r = run_modelfs({"views"}, {{"MODELFS_CONFIG", (dir / "typo.toml").string()}});
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_HAS(r.err, "no such config file (named by $MODELFS_CONFIG)");
}

TEST_F(CliConfig, ABadFileIsAUsageErrorThatSaysWhereAndWhat) {
    write_text_file(
        config,
        "[[layout]]\nname = \"mytool\"\n[[layout.folder]]\npath = \"a\"\n"
        "category = \"lora\"\n[[layout.folder]]\npath = \"/abs\"\ncategory = \"vae\"\n");
    for (const std::vector<std::string>& cmd :
         std::vector<std::vector<std::string>>{{"views"},
                                               {"--store", (dir / "s").string(), "init"},
                                               {"mount", (dir / "mnt").string()}}) {
        std::vector<std::string> args{"--config", config.string()};
        args.insert(args.end(), cmd.begin(), cmd.end());
        CliResult r = run_modelfs(args);
        EXPECT_EQ(r.exit_code, 2) << cmd[0];
        EXPECT_HAS(r.err, "modelfs: " + config.string() +
                              ":6:1: layout 'mytool': folders[1].path \"/abs\"");
    }
    EXPECT_FALSE(stdfs::exists(dir / "s")) << "init ran despite the bad config";

    write_text_file(config, "stroe = \"/srv/models\"\n");
    CliResult r = run_modelfs({"--config", config.string(), "views"});
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_HAS(r.err, config.string() + ":1:1: unknown key 'stroe'");

    write_text_file(config, "store = \"/srv\n");
    r = run_modelfs({"--config", config.string(), "views"});
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_HAS(r.err, config.string() + ":1:");
}

TEST_F(CliConfig, HelpWorksWithABadFileAndMountHelpListsTheViews) {
    CliResult r = run_modelfs({"--config", config.string(), "mount", "--help"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_HAS(r.out,
               "Views: a1111, forge, sdnext, comfyui, fooocus (config file), invokeai, mytool "
               "(config file).");

    write_text_file(config, "stroe = 1\n");
    r = run_modelfs({"--config", config.string(), "mount", "--help"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_HAS(r.out, "Views: a1111, forge, sdnext, comfyui, fooocus, invokeai.");
    EXPECT_HAS(r.out, "The config file cannot be used: " + config.string() + ":1:1:");
    EXPECT_EQ(run_modelfs({"--config", config.string(), "--help"}).exit_code, 0);
}

// --store > the config's store > $MODELFS_STORE > $XDG_DATA_HOME/modelfs: flag > file >
// environment > default, as for every setting.
TEST_F(CliConfig, StorePrecedence) {
    write_text_file(config, "store = \"from-config\"\n");  // relative to the file
    const std::map<std::string, std::string> no_env{{"MODELFS_STORE", ""},
                                                    {"XDG_DATA_HOME", (dir / "xdg").string()}};
    auto store_of = [&](std::vector<std::string> args, std::map<std::string, std::string> env) {
        args.insert(args.end(), {"--json", "init"});
        CliResult r = run_modelfs(args, env);
        EXPECT_EQ(r.exit_code, 0) << r.err;
        return json::parse(r.out)["store"].get<std::string>();
    };
    EXPECT_EQ(store_of({"--config", config.string()}, no_env), (dir / "from-config").string());

    auto with_env = no_env;
    with_env["MODELFS_STORE"] = (dir / "from-env").string();
    EXPECT_EQ(store_of({"--config", config.string()}, with_env), (dir / "from-config").string());
    EXPECT_EQ(store_of({}, with_env), (dir / "from-env").string());
    EXPECT_EQ(
        store_of({"--config", config.string(), "--store", (dir / "from-flag").string()}, with_env),
        (dir / "from-flag").string());
    // Without a config file, as before: $XDG_DATA_HOME/modelfs.
    EXPECT_EQ(store_of({}, no_env), (dir / "xdg" / "modelfs").string());
}

// The user's file, the store's config.toml and (not tested here: it is /etc) the system file
// are merged key by key, the user's winning; `modelfs config` says where each value came from.
class CliConfigFiles : public CliConfig {
  protected:
    stdfs::path store = dir / "store";
    stdfs::path user_file = dir / "xdg" / "modelfs" / "config.toml";
    stdfs::path store_file = store / "config.toml";
    std::map<std::string, std::string> env{
        {"MODELFS_CONFIG", ""}, {"XDG_CONFIG_HOME", (dir / "xdg").string()}, {"MODELFS_STORE", ""}};

    void SetUp() override {
        CliConfig::SetUp();
        ASSERT_EQ(run_modelfs({"--store", store.string(), "init"}).exit_code, 0);
        stdfs::create_directories(user_file.parent_path());
        write_text_file(user_file, "[fetch]\njobs = 2\n");
        write_text_file(store_file,
                        "[fetch]\njobs = 7\nretries = 9\n[versions]\nkeep = 5\n"
                        "[views.comfyui]\nshow_versions = true\n");
    }
    // `modelfs config --json` as key -> {value, origin}.
    std::map<std::string, json> settings(std::map<std::string, std::string> extra = {},
                                         std::vector<std::string> args = {}) {
        auto e = env;
        for (const auto& [k, v] : extra) e[k] = v;
        if (args.empty()) args = {"--store", store.string()};
        args.insert(args.end(), {"--json", "config"});
        CliResult r = run_modelfs(args, e);
        EXPECT_EQ(r.exit_code, 0) << r.err;
        std::map<std::string, json> out;
        const json j = json::parse(r.out);
        for (const auto& s : j["settings"]) out[s["key"]] = s;
        return out;
    }
};

TEST_F(CliConfigFiles, UserFileBeatsStoreFileBeatsEnvironmentBeatsDefault) {
    auto s = settings({{"MODELFS_KEEP_VERSIONS", "8"}});
    EXPECT_EQ(s["store"]["value"], store.string());
    EXPECT_EQ(s["store"]["origin"], "flag --store");
    EXPECT_EQ(s["fetch.jobs"]["value"], "2");
    EXPECT_EQ(s["fetch.jobs"]["origin"], "file " + user_file.string());
    EXPECT_EQ(s["fetch.retries"]["value"], "9");
    EXPECT_EQ(s["fetch.retries"]["origin"], "file " + store_file.string());
    EXPECT_EQ(s["versions.keep"]["value"], "5");
    EXPECT_EQ(s["versions.keep"]["origin"], "file " + store_file.string());
    EXPECT_EQ(s["views.comfyui.show_versions"]["value"], "true");
    EXPECT_EQ(s["views.comfyui.show_versions"]["origin"], "file " + store_file.string());
    EXPECT_EQ(s["views.a1111.show_versions"]["value"], "false");
    EXPECT_EQ(s["views.a1111.show_versions"]["origin"], "default");
    EXPECT_EQ(s["fetch.max_connections"]["origin"], "default");

    // Without the store's file, the variable decides.
    stdfs::remove(store_file);
    s = settings({{"MODELFS_KEEP_VERSIONS", "8"}});
    EXPECT_EQ(s["versions.keep"]["value"], "8");
    EXPECT_EQ(s["versions.keep"]["origin"], "env MODELFS_KEEP_VERSIONS");
    s = settings();
    EXPECT_EQ(s["versions.keep"]["value"], "3");
    EXPECT_EQ(s["versions.keep"]["origin"], "default");
}

TEST_F(CliConfigFiles, AnExplicitFileIsTheOnlyOne) {
    auto s = settings({}, {"--store", store.string(), "--config", config.string()});
    EXPECT_EQ(s["fetch.jobs"]["origin"], "default") << "neither the user's nor the store's file";
    EXPECT_EQ(s["versions.keep"]["origin"], "default");
    s = settings({{"MODELFS_CONFIG", config.string()}});
    EXPECT_EQ(s["fetch.jobs"]["origin"], "default");
}

TEST_F(CliConfigFiles, TheStoreNamedByTheUserFileHasItsFileRead) {
    write_text_file(user_file, "store = \"" + store.string() + "\"\n");
    auto s = settings({{"MODELFS_STORE", (dir / "elsewhere").string()}}, {"--quiet"});
    EXPECT_EQ(s["store"]["value"], store.string());
    EXPECT_EQ(s["store"]["origin"], "file " + user_file.string());
    EXPECT_EQ(s["fetch.jobs"]["value"], "7");
    EXPECT_EQ(s["fetch.jobs"]["origin"], "file " + store_file.string());
}

TEST_F(CliConfigFiles, SecretsAreMasked) {
    write_text_file(user_file, "[s3]\naccess_key = \"AKIDPLAIN\"\nsecret_key = \"file-secret\"\n");
    const std::map<std::string, std::string> secrets{{"HF_TOKEN", "hf_envsecret"},
                                                     {"AWS_SESSION_TOKEN", "session-secret"}};
    auto s = settings(secrets);
    EXPECT_EQ(s["s3.secret_key"]["value"], "********");
    EXPECT_EQ(s["s3.secret_key"]["origin"], "file " + user_file.string());
    EXPECT_EQ(s["fetch.hf_token"]["value"], "********");
    EXPECT_EQ(s["fetch.hf_token"]["origin"], "env HF_TOKEN");
    EXPECT_EQ(s["s3.session_token"]["value"], "********");
    EXPECT_EQ(s["s3.access_key"]["value"], "AKIDPLAIN");

    auto e = env;
    for (const auto& [k, v] : secrets) e[k] = v;
    CliResult r = run_modelfs({"--store", store.string(), "config"}, e);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    for (const char* secret : {"file-secret", "hf_envsecret", "session-secret"})
        EXPECT_EQ(r.out.find(secret), std::string::npos) << r.out;
    EXPECT_HAS(r.out, "config files:\n  " + user_file.string() + "\n  " + store_file.string());
    EXPECT_HAS(r.out, "(file " + store_file.string() + ")");
    EXPECT_HAS(r.out, "(env HF_TOKEN)");
    EXPECT_HAS(r.out, "(flag --store)");
    EXPECT_HAS(r.out, "(default)");
}

TEST_F(CliConfigFiles, BadStoreFilesAreUsageErrors) {
    write_text_file(store_file, "store = \"/elsewhere\"\n");
    CliResult r = run_modelfs({"--store", store.string(), "config"}, env);
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_HAS(r.err, store_file.string() + ": 'store' has no meaning in a store's own config");

    write_text_file(store_file, "[views.comfy]\nshow_versions = true\n");
    r = run_modelfs({"--store", store.string(), "ls"}, env);
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_HAS(r.err, store_file.string() + ": [views.comfy]: there is no view 'comfy'");
    EXPECT_HAS(r.err, "comfyui");

    write_text_file(store_file, "[versions]\nkeep = 0\n");
    r = run_modelfs({"--store", store.string(), "retain"}, env);
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_HAS(r.err, "'versions.keep' must be a whole number of at least 1");
}

TEST_F(CliConfigFiles, ViewsShowWhichListVersionAliases) {
    CliResult r = run_modelfs({"--store", store.string(), "views"}, env);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_HAS(r.out, "config files: " + user_file.string() + ", " + store_file.string());
    EXPECT_HAS(r.out, "\ncomfyui (built-in; lists NAME@LABEL version aliases)\n");
    EXPECT_HAS(r.out, "\na1111 (built-in)\n");

    r = run_modelfs({"--store", store.string(), "--json", "views"}, env);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const json j = json::parse(r.out);
    EXPECT_EQ(j["config_files"], json::array({user_file.string(), store_file.string()}));
    std::map<std::string, json> by_name;
    for (const auto& v : j["views"]) by_name[v["name"]] = v;
    EXPECT_EQ(by_name["comfyui"]["show_versions"], true);
    EXPECT_EQ(by_name["comfyui"]["source"], "built-in") << "a setting does not replace the view";
    EXPECT_EQ(by_name["a1111"]["show_versions"], false);
}

}  // namespace
