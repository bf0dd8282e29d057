#include "config.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "support/test_env.h"

namespace {

namespace stdfs = std::filesystem;
using modelfs::Category;
using modelfs::cli::Config;
using modelfs::cli::ConfigError;
using modelfs::cli::ConfigLookup;
using modelfs::layouts::ViewLayout;
using modelfs::testing::TempDir;
using modelfs::testing::write_text_file;

// Sets (or unsets) environment variables for one test and puts the old values back.
class ScopedEnv {
  public:
    ScopedEnv(const std::string& name, const std::optional<std::string>& value) : name_(name) {
        if (const char* v = std::getenv(name.c_str())) old_ = v;
        if (value)
            ::setenv(name.c_str(), value->c_str(), 1);
        else
            ::unsetenv(name.c_str());
    }
    ~ScopedEnv() {
        if (old_)
            ::setenv(name_.c_str(), old_->c_str(), 1);
        else
            ::unsetenv(name_.c_str());
    }
    ScopedEnv(const ScopedEnv&) = delete;
    ScopedEnv& operator=(const ScopedEnv&) = delete;

  private:
    std::string name_;
    std::optional<std::string> old_;
};

const char* kExample = R"(# the README's example
store = "/srv/models"

[[layout]]
name = "mytool"

[[layout.folder]]
path = "loras"
category = "lora"
extensions = [".safetensors"]
primary = true
exclude = [".vae.safetensors"]

[[layout.folder]]
path = "more-loras"
category = "lycoris"          # an alias

[[layout.folder]]
path = "Stable-diffusion"
category = "checkpoint"
)";

// The message of the ConfigError that parsing `text` (as /cfg/config.toml) throws; "" if none.
std::string error_of(const std::string& text) {
    try {
        modelfs::cli::parse_config(text, "/cfg/config.toml");
    } catch (const ConfigError& e) {
        return e.what();
    }
    return "";
}

// A layout with one good folder, then `extra` (TOML) appended.
std::string layout_with(const std::string& extra) {
    return "[[layout]]\nname = \"mytool\"\n[[layout.folder]]\npath = \"loras\"\n"
           "category = \"lora\"\n" +
           extra;
}

#define EXPECT_HAS(haystack, needle) \
    EXPECT_NE(std::string(haystack).find(needle), std::string::npos) << (haystack)

TEST(ConfigParse, TheExample) {
    Config c = modelfs::cli::parse_config(kExample, "/cfg/config.toml");
    EXPECT_EQ(c.source, stdfs::path("/cfg/config.toml"));
    ASSERT_TRUE(c.store);
    EXPECT_EQ(*c.store, stdfs::path("/srv/models"));
    ASSERT_EQ(c.layouts.size(), 1u);
    const ViewLayout& l = c.layouts[0];
    EXPECT_EQ(l.name(), "mytool");
    ASSERT_EQ(l.folders().size(), 3u);
    EXPECT_EQ(l.folders()[0].path, "loras");
    EXPECT_EQ(l.folders()[0].category, Category::lora);
    EXPECT_EQ(l.folders()[0].extensions, std::vector<std::string>{".safetensors"});
    EXPECT_TRUE(l.folders()[0].primary);
    EXPECT_EQ(l.folders()[0].exclude, std::vector<std::string>{".vae.safetensors"});
    // The second LoRA folder is not primary: the first one claims it explicitly.
    EXPECT_EQ(l.folders()[1].category, Category::lora);
    EXPECT_FALSE(l.folders()[1].primary);
    EXPECT_TRUE(l.folders()[1].extensions.empty());
    EXPECT_TRUE(l.folders()[2].primary);  // the only checkpoint folder
    EXPECT_EQ(l.folder_for(Category::checkpoint), "Stable-diffusion");
}

TEST(ConfigParse, EmptyFileMeansDefaults) {
    Config c = modelfs::cli::parse_config("# nothing yet\n", "/cfg/config.toml");
    EXPECT_FALSE(c.store);
    EXPECT_TRUE(c.layouts.empty());
    EXPECT_EQ(c.source, stdfs::path("/cfg/config.toml"));
}

TEST(ConfigParse, LayoutsKeepFileOrderAndMayReplaceABuiltin) {
    Config c = modelfs::cli::parse_config(
        "[[layout]]\nname = \"zeta\"\n[[layout.folder]]\npath = \"a\"\ncategory = \"vae\"\n"
        "[[layout]]\nname = \"comfyui\"\n[[layout.folder]]\npath = \"ckpt\"\n"
        "category = \"checkpoint\"\n",
        "/cfg/config.toml");
    ASSERT_EQ(c.layouts.size(), 2u);
    EXPECT_EQ(c.layouts[0].name(), "zeta");
    EXPECT_EQ(c.layouts[1].name(), "comfyui");
    EXPECT_EQ(c.layouts[1].folder_for(Category::checkpoint), "ckpt");
}

TEST(ConfigParse, InlineTablesWorkToo) {
    Config c = modelfs::cli::parse_config(
        "layout = [{name = \"t\", folder = [{path = \"v\", category = \"vae\"}]}]\n", "/c.toml");
    ASSERT_EQ(c.layouts.size(), 1u);
    EXPECT_EQ(c.layouts[0].folder_for(Category::vae), "v");
}

TEST(ConfigParse, RelativeStoreIsRelativeToTheFile) {
    Config c = modelfs::cli::parse_config("store = \"../models\"\n", "/etc/modelfs/config.toml");
    EXPECT_EQ(*c.store, stdfs::path("/etc/models"));
}

TEST(ConfigParse, TildeStoreIsInHome) {
    ScopedEnv home("HOME", "/home/me");
    EXPECT_EQ(*modelfs::cli::parse_config("store = \"~/models\"\n", "/c.toml").store,
              stdfs::path("/home/me/models"));
    EXPECT_EQ(*modelfs::cli::parse_config("store = \"~\"\n", "/c.toml").store,
              stdfs::path("/home/me"));
    EXPECT_HAS(error_of("store = \"~other/models\"\n"), "only ~/ is expanded");
}

TEST(ConfigErrors, TomlSyntaxNamesFileLineAndColumn) {
    const std::string e = error_of("store = \"/srv\"\n\nlayout = [\n");
    EXPECT_TRUE(e.starts_with("/cfg/config.toml:3:")) << e;
    EXPECT_HAS(e, "end-of-file");
    EXPECT_TRUE(error_of("store = \"/a\"\nstore = \"/b\"\n").starts_with("/cfg/config.toml:2:"));
}

TEST(ConfigErrors, UnknownTopLevelKeyIsNamed) {
    const std::string e = error_of("\n\nstroe = \"/srv/models\"\nzzz = 1\n");
    EXPECT_TRUE(e.starts_with("/cfg/config.toml:3:1: ")) << e;
    EXPECT_HAS(e, "unknown key 'stroe'");
    // A table counts as a key too: typos of [[layout]] are caught.
    EXPECT_HAS(error_of("[[layouts]]\nname = \"x\"\n"), "unknown key 'layouts'");
    EXPECT_HAS(error_of("[mount]\nview = \"x\"\n"), "unknown key 'mount'");
}

TEST(ConfigErrors, StoreMustBeANonEmptyString) {
    EXPECT_HAS(error_of("store = 3\n"), "/cfg/config.toml:1:9: 'store' must be a string");
    EXPECT_HAS(error_of("store = \"\"\n"), "'store' is empty");
}

TEST(ConfigErrors, LayoutMustBeAnArrayOfTables) {
    EXPECT_HAS(error_of("[layout]\nname = \"x\"\n"), "write each layout as [[layout]]");
    EXPECT_HAS(error_of("layout = \"x\"\n"), "'layout' must be an array of tables");
    // [[layout.folder]] before any [[layout]] makes "layout" a plain table.
    EXPECT_HAS(error_of("[[layout.folder]]\npath = \"a\"\n"), "must be an array of tables");
}

TEST(ConfigErrors, LayoutNeedsAName) {
    const std::string e = error_of("[[layout]]\n[[layout.folder]]\npath = \"a\"\n");
    EXPECT_TRUE(e.starts_with("/cfg/config.toml:1:1: layout #1: 'name' must be a string")) << e;
    EXPECT_HAS(error_of("[[layout]]\nname = 7\n"), "/cfg/config.toml:2:8: layout #1: 'name'");
    EXPECT_HAS(error_of("[[layout]]\nname = \"\"\n"), "must not be empty");
}

TEST(ConfigErrors, LayoutNamesMustWorkAsFolderNames) {
    for (const char* bad : {"a/b", ".", ".."}) {
        EXPECT_HAS(error_of(std::string("[[layout]]\nname = \"") + bad +
                            "\"\n[[layout.folder]]\npath = \"a\"\ncategory = \"vae\"\n"),
                   "must be a plain folder name");
    }
    EXPECT_HAS(error_of("[[layout]]\nname = \"by-hash\"\n"), "'by-hash' is the mount's own folder");
}

TEST(ConfigErrors, ANearMissOfABuiltinNameIsRefused) {
    // --view matches names case-insensitively, so "ComfyUI" could never be picked.
    const std::string e = error_of(
        "[[layout]]\nname = \"ComfyUI\"\n[[layout.folder]]\npath = \"a\"\ncategory = \"vae\"\n");
    EXPECT_HAS(e, "layout 'ComfyUI': the built-in view is called 'comfyui'");
    EXPECT_HAS(error_of("[[layout]]\nname = \"automatic1111\"\n"), "called 'a1111'");
}

TEST(ConfigErrors, UnknownKeyInALayout) {
    const std::string e = error_of(layout_with("[[layout]]\nname = \"b\"\nfolders = []\n"));
    EXPECT_TRUE(e.starts_with("/cfg/config.toml:8:1: layout 'b': unknown key 'folders'")) << e;
}

TEST(ConfigErrors, LayoutWithoutFolders) {
    EXPECT_HAS(error_of("[[layout]]\nname = \"x\"\n"),
               "/cfg/config.toml:1:1: layout 'x' has no folders; add [[layout.folder]]");
    EXPECT_HAS(error_of("[[layout]]\nname = \"x\"\nfolder = []\n"), "layout 'x' has no folders");
    EXPECT_HAS(error_of("[[layout]]\nname = \"x\"\nfolder = { path = \"a\" }\n"),
               "layout 'x': 'folder' must be an array of tables");
}

TEST(ConfigErrors, BadFoldersPointAtTheirTable) {
    // The third [[layout.folder]] starts on line 10.
    const std::string text = layout_with(
        "[[layout.folder]]\npath = \"vae\"\ncategory = \"vae\"\n\n"
        "[[layout.folder]]\npath = \"../up\"\ncategory = \"upscaler\"\n");
    const std::string e = error_of(text);
    EXPECT_TRUE(e.starts_with("/cfg/config.toml:10:1: layout 'mytool': folders[2].path")) << e;
    EXPECT_HAS(e, "..");
}

TEST(ConfigErrors, EachFolderFieldIsChecked) {
    const auto folder = [](const std::string& fields) {
        return error_of(layout_with("[[layout.folder]]\n" + fields));
    };
    EXPECT_HAS(folder("category = \"vae\"\n"), "layout 'mytool': folders[1].path must be a string");
    EXPECT_HAS(folder("path = \"v\"\ncategory = \"vea\"\n"),
               "folders[1].category: unknown category \"vea\"");
    EXPECT_HAS(folder("path = \"v\"\ncategory = \"vae\"\nextensions = \"safetensors\"\n"),
               "folders[1].extensions must be an array of strings");
    EXPECT_HAS(folder("path = \"v\"\ncategory = \"vae\"\nextensions = [\"safetensors\"]\n"),
               "must be a dot and a suffix");
    EXPECT_HAS(folder("path = \"v\"\ncategory = \"vae\"\nprimary = \"yes\"\n"),
               "folders[1].primary must be true or false");
    EXPECT_HAS(folder("path = \"v\"\ncategory = \"vae\"\nexclude = [1]\n"),
               "folders[1].exclude[0] must be a string");
    EXPECT_HAS(folder("path = \"v\"\ncategory = \"vae\"\npirmary = true\n"),
               "folders[1].pirmary: unknown key");
    EXPECT_HAS(folder("path = \"loras\"\ncategory = \"vae\"\n"), "duplicates folders[0].path");
    EXPECT_HAS(folder("path = \"loras/x\"\ncategory = \"vae\"\n"), "are nested");
    EXPECT_HAS(error_of(layout_with("primary = true\n[[layout.folder]]\npath = \"l2\"\n"
                                    "category = \"lora\"\nprimary = true\n")),
               "folders[1].primary: category \"lora\" already has a primary folder");
    // TOML types JSON has not (dates) still give a clear message.
    EXPECT_HAS(folder("path = 1979-05-27\ncategory = \"vae\"\n"),
               "folders[1].path must be a string");
    EXPECT_HAS(folder("path = \"v\"\ncategory = \"vae\"\nextensions = [07:32:00]\n"),
               "folders[1].extensions[0] must be a string");
}

TEST(ConfigErrors, DuplicateLayoutNames) {
    const std::string one = layout_with("");
    EXPECT_HAS(error_of(one + one), "/cfg/config.toml:6:1: layout 'mytool' is defined twice");
    std::string other = one;
    other.replace(other.find("mytool"), 6, "MyTool");
    EXPECT_HAS(error_of(one + other), "layout 'MyTool' and layout 'mytool' (line 1) differ only");
}

TEST(ConfigFile, ReadsAFileAndMakesItsPathAbsolute) {
    TempDir d("modelfs-config");
    write_text_file(d / "config.toml", "store = \"models\"\n");
    Config c = modelfs::cli::load_config_file(d / "config.toml");
    EXPECT_EQ(c.source, d / "config.toml");
    EXPECT_EQ(*c.store, d / "models");
}

TEST(ConfigFile, UnreadableOrAFolder) {
    TempDir d("modelfs-config");
    try {
        modelfs::cli::load_config_file(d / "missing.toml");
        ADD_FAILURE() << "no error";
    } catch (const ConfigError& e) {
        EXPECT_HAS(e.what(), (d / "missing.toml").string() + ": cannot open");
    }
    try {
        modelfs::cli::load_config_file(d.path());
        ADD_FAILURE() << "no error";
    } catch (const ConfigError& e) {
        EXPECT_HAS(e.what(), "is a folder");
    }
}

TEST(ConfigFile, ErrorsNameTheFile) {
    TempDir d("modelfs-config");
    write_text_file(d / "config.toml", "[[layout]]\nname = \"x\"\n");
    try {
        modelfs::cli::load_config_file(d / "config.toml");
        ADD_FAILURE() << "no error";
    } catch (const ConfigError& e) {
        EXPECT_TRUE(std::string(e.what()).starts_with((d / "config.toml").string() + ":1:1: "))
            << e.what();
    }
}

// A lookup where every candidate exists, so each step can be removed in turn.
struct Candidates {
    TempDir d{"modelfs-config"};
    ConfigLookup lookup;
    stdfs::path explicit_file = d / "explicit.toml";
    stdfs::path env_file = d / "env.toml";
    stdfs::path xdg_file = d / "xdg" / "modelfs" / "config.toml";
    stdfs::path home_file = d / "home" / ".config" / "modelfs" / "config.toml";
    stdfs::path system_file = d / "etc" / "modelfs" / "config.toml";

    Candidates() {
        for (const auto& p : {explicit_file, env_file, xdg_file, home_file, system_file}) {
            stdfs::create_directories(p.parent_path());
            write_text_file(p, "store = \"" + p.string() + ".store\"\n");
        }
        lookup.explicit_path = explicit_file;
        lookup.env_config = env_file.string();
        lookup.xdg_config_home = (d / "xdg").string();
        lookup.home = (d / "home").string();
        lookup.system_path = system_file;
    }
};

TEST(ConfigLookupOrder, FirstThatExistsWins) {
    Candidates c;
    using modelfs::cli::find_config;
    EXPECT_EQ(find_config(c.lookup), c.explicit_file);
    c.lookup.explicit_path.reset();
    EXPECT_EQ(find_config(c.lookup), c.env_file);
    c.lookup.env_config.clear();
    EXPECT_EQ(find_config(c.lookup), c.xdg_file);
    stdfs::remove(c.xdg_file);  // XDG_CONFIG_HOME set but no file there: on to /etc
    EXPECT_EQ(find_config(c.lookup), c.system_file);
    c.lookup.xdg_config_home.clear();
    EXPECT_EQ(find_config(c.lookup), c.home_file);
    c.lookup.xdg_config_home = "relative/dir";  // ignored, as the XDG spec says
    EXPECT_EQ(find_config(c.lookup), c.home_file);
    stdfs::remove(c.home_file);
    EXPECT_EQ(find_config(c.lookup), c.system_file);
    stdfs::remove(c.system_file);
    EXPECT_EQ(find_config(c.lookup), std::nullopt);
    c.lookup.home.clear();
    EXPECT_EQ(find_config(c.lookup), std::nullopt);

    Config none = modelfs::cli::load_config(c.lookup);
    EXPECT_TRUE(none.source.empty());
    EXPECT_FALSE(none.store);
    EXPECT_TRUE(none.layouts.empty());
}

TEST(ConfigLookupOrder, ANamedFileMustExist) {
    Candidates c;
    c.lookup.explicit_path = c.d / "typo.toml";
    try {
        modelfs::cli::find_config(c.lookup);
        ADD_FAILURE() << "a missing --config file was skipped";
    } catch (const ConfigError& e) {
        EXPECT_HAS(e.what(), "typo.toml: no such config file (given with --config)");
    }
    c.lookup.explicit_path.reset();
    c.lookup.env_config = (c.d / "typo2.toml").string();
    try {
        modelfs::cli::find_config(c.lookup);
        ADD_FAILURE() << "a missing $MODELFS_CONFIG file was skipped";
    } catch (const ConfigError& e) {
        EXPECT_HAS(e.what(), "typo2.toml: no such config file (named by $MODELFS_CONFIG)");
    }
}

TEST(ConfigLookupOrder, LoadConfigReadsTheWinner) {
    Candidates c;
    c.lookup.explicit_path.reset();
    Config cfg = modelfs::cli::load_config(c.lookup);
    EXPECT_EQ(cfg.source, c.env_file);
    EXPECT_EQ(*cfg.store, stdfs::path(c.env_file.string() + ".store"));
}

TEST(ConfigLookupOrder, FromEnvironment) {
    ScopedEnv a("MODELFS_CONFIG", "/a/config.toml");
    ScopedEnv b("XDG_CONFIG_HOME", "/xdg");
    ScopedEnv h("HOME", "/home/me");
    ConfigLookup l = ConfigLookup::from_environment(stdfs::path("/given.toml"));
    EXPECT_EQ(l.explicit_path, stdfs::path("/given.toml"));
    EXPECT_EQ(l.env_config, "/a/config.toml");
    EXPECT_EQ(l.xdg_config_home, "/xdg");
    EXPECT_EQ(l.home, "/home/me");
    EXPECT_EQ(l.system_path, stdfs::path("/etc/modelfs/config.toml"));
}

TEST(StorePathPrecedence, GivenThenConfigThenDefault) {
    ScopedEnv s("MODELFS_STORE", std::nullopt);
    ScopedEnv x("XDG_DATA_HOME", "/xdg-data");
    using modelfs::cli::resolve_store_path;
    Config with;
    with.store = "/from/config";
    EXPECT_EQ(resolve_store_path("/from/flag", with), stdfs::path("/from/flag"));
    EXPECT_EQ(resolve_store_path("", with), stdfs::path("/from/config"));
    EXPECT_EQ(resolve_store_path("", Config{}), stdfs::path("/xdg-data/modelfs"));
    EXPECT_EQ(resolve_store_path("/from/flag", Config{}), stdfs::path("/from/flag"));
}

// ---- several files, settings and their origins ----------------------------------------------

using modelfs::cli::EffectiveSetting;

// An environment of our own, so the tests never depend on the tester's.
modelfs::cli::EnvFn env_of(std::map<std::string, std::string> vars) {
    return [vars = std::move(vars)](const char* name) {
        auto it = vars.find(name);
        return it == vars.end() ? std::string() : it->second;
    };
}

std::map<std::string, EffectiveSetting> by_key(const std::vector<EffectiveSetting>& v) {
    std::map<std::string, EffectiveSetting> out;
    for (const auto& s : v) out[s.key] = s;
    return out;
}

TEST(ConfigParse, VersionsAndViewSettings) {
    Config c = modelfs::cli::parse_config(
        "[versions]\nkeep = 7\n[views.comfyui]\nshow_versions = true\n"
        "[[layout]]\nname = \"mytool\"\nshow_versions = true\n[[layout.folder]]\npath = \"l\"\n"
        "category = \"lora\"\n",
        "/cfg/config.toml");
    EXPECT_EQ(c.versions_keep, 7u);
    EXPECT_EQ(c.show_versions, (std::map<std::string, bool>{{"comfyui", true}}));
    ASSERT_EQ(c.layouts.size(), 1u);
    EXPECT_TRUE(c.layouts[0].show_versions());
    EXPECT_EQ(c.origins["versions.keep"], stdfs::path("/cfg/config.toml"));
    EXPECT_EQ(c.origins["views.comfyui.show_versions"], stdfs::path("/cfg/config.toml"));
    EXPECT_EQ(c.origins["layout.mytool"], stdfs::path("/cfg/config.toml"));

    EXPECT_HAS(error_of("[versions]\nkeep = 0\n"), "/cfg/config.toml:2:8: 'versions.keep'");
    EXPECT_HAS(error_of("[versions]\nkept = 2\n"), "unknown key 'kept' in [versions]");
    EXPECT_HAS(error_of("[views.comfyui]\nshow_versions = \"yes\"\n"),
               "'views.comfyui.show_versions' must be true or false");
    EXPECT_HAS(error_of("[views.comfyui]\nshow = true\n"), "unknown key 'show' in [views.comfyui]");
    EXPECT_HAS(error_of("[[layout]]\nname = \"mytool\"\nshow_versions = 1\n[[layout.folder]]\n"
                        "path = \"loras\"\ncategory = \"lora\"\n"),
               "layout 'mytool': 'show_versions' must be true or false");
}

TEST(ConfigMerge, TheHigherFileWinsKeyByKey) {
    Config low = modelfs::cli::parse_config(
        "store = \"/low\"\n[fetch]\njobs = 1\nretries = 2\n[versions]\nkeep = 4\n"
        "[[layout]]\nname = \"mytool\"\n[[layout.folder]]\npath = \"low\"\ncategory = \"lora\"\n"
        "[[layout]]\nname = \"other\"\n[[layout.folder]]\npath = \"o\"\ncategory = \"vae\"\n",
        "/low.toml");
    Config high = modelfs::cli::parse_config(
        "[fetch]\njobs = 9\n[[layout]]\nname = \"MyTool\"\n[[layout.folder]]\npath = \"high\"\n"
        "category = \"lora\"\n",
        "/high.toml");
    Config m = modelfs::cli::merge_config(low, high);
    EXPECT_EQ(m.store, stdfs::path("/low"));
    EXPECT_EQ(m.fetch.jobs, 9u);
    EXPECT_EQ(m.fetch.retries, 2u);
    EXPECT_EQ(m.versions_keep, 4u);
    ASSERT_EQ(m.layouts.size(), 2u);
    EXPECT_EQ(m.layouts[0].name(), "MyTool");  // replaced in place, ignoring case
    EXPECT_EQ(m.layouts[0].folders()[0].path, "high");
    EXPECT_EQ(m.layouts[1].name(), "other");
    EXPECT_EQ(m.origins["fetch.jobs"], stdfs::path("/high.toml"));
    EXPECT_EQ(m.origins["fetch.retries"], stdfs::path("/low.toml"));
    EXPECT_EQ(m.origins["layout.MyTool"], stdfs::path("/high.toml"));
    EXPECT_FALSE(m.origins.count("layout.mytool"));
    EXPECT_EQ(m.source, stdfs::path("/high.toml"));
    EXPECT_EQ(m.files, (std::vector<stdfs::path>{"/high.toml", "/low.toml"}));
}

TEST(ConfigLookupOrder, UserThenStoreThenSystemAreMerged) {
    Candidates c;
    c.lookup.explicit_path.reset();
    c.lookup.env_config.clear();
    const stdfs::path store_dir = c.d / "store";
    stdfs::create_directories(store_dir);
    write_text_file(c.xdg_file, "[fetch]\njobs = 1\n");
    write_text_file(store_dir / "config.toml", "[fetch]\njobs = 2\nretries = 2\n");
    write_text_file(c.system_file,
                    "store = \"/sys-store\"\n[fetch]\njobs = 3\nretries = 3\n"
                    "max_per_host = 3\n");
    using modelfs::cli::config_files;
    EXPECT_EQ(config_files(c.lookup), (std::vector<stdfs::path>{c.xdg_file, c.system_file}));
    c.lookup.store_dir = store_dir;
    EXPECT_EQ(config_files(c.lookup),
              (std::vector<stdfs::path>{c.xdg_file, store_dir / "config.toml", c.system_file}));
    Config m = modelfs::cli::load_config(c.lookup);
    EXPECT_EQ(m.fetch.jobs, 1u);
    EXPECT_EQ(m.fetch.retries, 2u);
    EXPECT_EQ(m.fetch.max_per_host, 3u);
    EXPECT_EQ(m.store, stdfs::path("/sys-store"));
    EXPECT_EQ(m.source, c.xdg_file);

    // An explicit file is the only one.
    c.lookup.env_config = c.env_file.string();
    EXPECT_EQ(config_files(c.lookup), std::vector<stdfs::path>{c.env_file});

    // The store's own file cannot move the store.
    c.lookup.env_config.clear();
    write_text_file(store_dir / "config.toml", "store = \"/x\"\n");
    try {
        modelfs::cli::load_config(c.lookup);
        ADD_FAILURE() << "no error";
    } catch (const ConfigError& e) {
        EXPECT_HAS(e.what(), "'store' has no meaning in a store's own config file");
    }
}

TEST(ConfigViews, ShowVersionsReachesTheMountsLayouts) {
    Config c = modelfs::cli::parse_config(
        "[views.comfyui]\nshow_versions = true\n[views.mytool]\nshow_versions = true\n"
        "[[layout]]\nname = \"mytool\"\n[[layout.folder]]\npath = \"l\"\ncategory = \"lora\"\n",
        "/cfg/config.toml");
    const auto layouts = modelfs::cli::mount_layouts(c);
    ASSERT_EQ(layouts.size(), 2u);
    EXPECT_EQ(layouts[0].name(), "mytool");
    EXPECT_TRUE(layouts[0].show_versions());
    EXPECT_EQ(layouts[1].name(), "comfyui");
    EXPECT_TRUE(layouts[1].show_versions());
    // Otherwise the very built-in.
    auto plain = *ViewLayout::builtin("comfyui");
    EXPECT_EQ(layouts[1].folders(), plain.folders());
    EXPECT_TRUE(c.layouts.size() == 1u) << "the config's own layouts stay as written";

    c.show_versions["comfy"] = true;
    c.origins["views.comfy.show_versions"] = "/cfg/config.toml";
    try {
        modelfs::cli::mount_layouts(c);
        ADD_FAILURE() << "no error";
    } catch (const ConfigError& e) {
        EXPECT_HAS(e.what(), "/cfg/config.toml: [views.comfy]: there is no view 'comfy'");
        EXPECT_HAS(e.what(), "comfyui");
        EXPECT_HAS(e.what(), "mytool");
    }
}

TEST(ConfigSettings, KeepVersionsFlagThenFileThenEnvironmentThenDefault) {
    using modelfs::cli::keep_versions;
    Config c;
    EXPECT_EQ(keep_versions(c, std::nullopt, env_of({})).value, 3u);
    EXPECT_EQ(keep_versions(c, std::nullopt, env_of({})).origin, "default");
    auto env = env_of({{"MODELFS_KEEP_VERSIONS", "6"}});
    EXPECT_EQ(keep_versions(c, std::nullopt, env).value, 6u);
    EXPECT_EQ(keep_versions(c, std::nullopt, env).origin, "env MODELFS_KEEP_VERSIONS");
    c.versions_keep = 4;
    c.origins["versions.keep"] = "/f.toml";
    EXPECT_EQ(keep_versions(c, std::nullopt, env).value, 4u);
    EXPECT_EQ(keep_versions(c, std::nullopt, env).origin, "file /f.toml");
    EXPECT_EQ(keep_versions(c, 2u, env).value, 2u);
    EXPECT_EQ(keep_versions(c, 2u, env).origin, "flag --keep");

    for (const char* bad : {"0", "-1", "x", "3x", "99999999999"}) {
        try {
            keep_versions(Config{}, std::nullopt, env_of({{"MODELFS_KEEP_VERSIONS", bad}}));
            ADD_FAILURE() << bad;
        } catch (const ConfigError& e) {
            EXPECT_HAS(e.what(), std::string("$MODELFS_KEEP_VERSIONS='") + bad + "'");
        }
    }
}

TEST(ConfigSettings, EveryOriginAndMaskedSecrets) {
    ScopedEnv x("XDG_DATA_HOME", "/xdg-data");
    ScopedEnv st("MODELFS_STORE", std::nullopt);
    Config c = modelfs::cli::parse_config(
        "[fetch]\njobs = 6\nhf_token = \"hf_fromfile\"\n[s3]\nregion = \"eu-1\"\n",
        "/cfg/config.toml");
    auto s = by_key(modelfs::cli::effective_settings(c, "",
                                                     env_of({{"AWS_SECRET_ACCESS_KEY", "envsecret"},
                                                             {"AWS_REGION", "us-9"},
                                                             {"HF_ENDPOINT", "http://hf.local"}})));
    EXPECT_EQ(s["store"].value, "/xdg-data/modelfs");
    EXPECT_EQ(s["store"].origin, "default");
    EXPECT_EQ(s["fetch.jobs"].value, "6");
    EXPECT_EQ(s["fetch.jobs"].origin, "file /cfg/config.toml");
    EXPECT_EQ(s["fetch.retries"].value, "5");
    EXPECT_EQ(s["fetch.retries"].origin, "default");
    EXPECT_EQ(s["fetch.hf_token"].value, "********");
    EXPECT_TRUE(s["fetch.hf_token"].secret);
    EXPECT_EQ(s["fetch.hf_token"].origin, "file /cfg/config.toml");
    EXPECT_EQ(s["fetch.hf_endpoint"].value, "http://hf.local");
    EXPECT_EQ(s["fetch.hf_endpoint"].origin, "env HF_ENDPOINT");
    EXPECT_EQ(s["s3.region"].value, "eu-1") << "the file beats the environment";
    EXPECT_EQ(s["s3.secret_key"].value, "********");
    EXPECT_EQ(s["s3.secret_key"].origin, "env AWS_SECRET_ACCESS_KEY");
    EXPECT_EQ(s["s3.access_key"].value, "");
    EXPECT_EQ(s["s3.access_key"].origin, "default");
    EXPECT_EQ(s["views.comfyui.show_versions"].value, "false");
    EXPECT_FALSE(s.count("layout.mytool"));
    c.layouts.push_back(ViewLayout::from_json(
        {{"name", "mytool"}, {"folders", {{{"path", "l"}, {"category", "lora"}}}}}));
    c.origins["layout.mytool"] = "/cfg/config.toml";
    s = by_key(modelfs::cli::effective_settings(c, "", env_of({})));
    EXPECT_EQ(s["layout.mytool"].value, "1 folder");
    EXPECT_EQ(s["layout.mytool"].origin, "file /cfg/config.toml");
    EXPECT_EQ(s["views.mytool.show_versions"].value, "false");
    for (const auto& [k, v] : s) EXPECT_EQ(v.value.find("secret"), std::string::npos) << k;

    c.store = "/from/file";
    c.origins["store"] = "/cfg/config.toml";
    s = by_key(modelfs::cli::effective_settings(c, "", env_of({{"MODELFS_STORE", "/env"}})));
    EXPECT_EQ(s["store"].value, "/from/file");
    EXPECT_EQ(s["store"].origin, "file /cfg/config.toml");
    s = by_key(modelfs::cli::effective_settings(c, "/flag", env_of({})));
    EXPECT_EQ(s["store"].value, "/flag");
    EXPECT_EQ(s["store"].origin, "flag --store");
    ScopedEnv st2("MODELFS_STORE", "/env");
    s = by_key(modelfs::cli::effective_settings(Config{}, "", env_of({{"MODELFS_STORE", "/env"}})));
    EXPECT_EQ(s["store"].value, "/env");
    EXPECT_EQ(s["store"].origin, "env MODELFS_STORE");
}

}  // namespace
