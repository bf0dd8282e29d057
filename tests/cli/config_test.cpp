// The config file as a user meets it: `modelfs views`, the store it names, and what a bad one does
// to the exit code and the message.
#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "support/test_env.h"

namespace fs = std::filesystem;
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
    fs::path config = dir / "config.toml";

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
    ASSERT_EQ(by_name.size(), 6u) << r.out;  // five built-ins (one replaced) plus mytool
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
    EXPECT_EQ(j["views"].size(), 5u);

    // Nothing at any of the usual places.
    if (fs::exists("/etc/modelfs/config.toml")) GTEST_SKIP() << "/etc/modelfs/config.toml exists";
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

    fs::create_directories(dir / "xdg" / "modelfs");
    fs::copy_file(config, dir / "xdg" / "modelfs" / "config.toml");
    r = run_modelfs({"views", "mytool"},
                    {{"MODELFS_CONFIG", ""}, {"XDG_CONFIG_HOME", (dir / "xdg").string()}});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_HAS(r.out, "config file: " + (dir / "xdg" / "modelfs" / "config.toml").string());

    fs::create_directories(dir / "home" / ".config" / "modelfs");
    fs::copy_file(config, dir / "home" / ".config" / "modelfs" / "config.toml");
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
    EXPECT_FALSE(fs::exists(dir / "s")) << "init ran despite the bad config";

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
               "Views: a1111, forge, sdnext, comfyui, fooocus (config file), mytool (config "
               "file).");

    write_text_file(config, "stroe = 1\n");
    r = run_modelfs({"--config", config.string(), "mount", "--help"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_HAS(r.out, "Views: a1111, forge, sdnext, comfyui, fooocus.");
    EXPECT_HAS(r.out, "The config file cannot be used: " + config.string() + ":1:1:");
    EXPECT_EQ(run_modelfs({"--config", config.string(), "--help"}).exit_code, 0);
}

// --store > $MODELFS_STORE > the config's store > $XDG_DATA_HOME/modelfs.
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
    EXPECT_EQ(store_of({"--config", config.string()}, with_env), (dir / "from-env").string());
    EXPECT_EQ(
        store_of({"--config", config.string(), "--store", (dir / "from-flag").string()}, with_env),
        (dir / "from-flag").string());
    // Without a config file, as before: $XDG_DATA_HOME/modelfs.
    EXPECT_EQ(store_of({}, no_env), (dir / "xdg" / "modelfs").string());
}

}  // namespace
