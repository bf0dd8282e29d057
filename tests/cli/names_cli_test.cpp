// Issue 15, names and secrets: hostile names and paths are refused at every entry point before
// anything changes, one bad name already in a catalog never breaks --json or `lock` for the whole
// store, text files and servers chose reaches the terminal escaped, lock files and --json carry
// no credentials unless asked, and the catalog is not readable by others.
#include <gtest/gtest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "modelfs/store/catalog.h"
#include "modelfs/store/store.h"
#include "support/safetensors_writer.h"
#include "support/test_env.h"

namespace stdfs = std::filesystem;
using namespace modelfs::testing;
using nlohmann::json;

namespace {

const std::string kSha(64, 'a');

mode_t mode_of(const stdfs::path& p) {
    struct stat st {};
    EXPECT_EQ(::stat(p.c_str(), &st), 0) << p;
    return st.st_mode & 07777;
}

class NamesCli : public ::testing::Test {
  protected:
    TempDir dir{"modelfs-names"};
    stdfs::path store = dir / "store";

    CliResult mfs(std::vector<std::string> args, const stdfs::path& which = {}) {
        args.insert(args.begin(), {"--store", (which.empty() ? store : which).string()});
        return run_modelfs(args);
    }
    void SetUp() override { ASSERT_EQ(mfs({"init"}).exit_code, 0); }

    // A model whose bytes are elsewhere, registered straight through the store.
    void add_remote(const std::string& name, const std::string& url) {
        modelfs::Store s = modelfs::Store::open(store);
        modelfs::RemoteModel m;
        m.category = modelfs::Category::lora;
        m.name = name;
        m.ext = ".safetensors";
        modelfs::RemoteFile f;
        f.sha256 = modelfs::Sha256::from_hex(std::string(64, name[0] == 'p' ? 'b' : 'c'));
        f.size = 100;
        f.sources = {{url, false}};
        m.files.push_back(f);
        s.add_remote(m);
    }

    // Renames a catalogued model to `name` as an older modelfs could have stored it.
    void rename_in_catalog(const std::string& key, const std::string& name) {
        auto cat = modelfs::Catalog::open(store / "catalog", false);
        auto txn = cat.write();
        auto m = txn.get_model(key);
        ASSERT_TRUE(m) << key;
        txn.del_model(key);
        m->name = name;
        txn.put_model(*m);
        txn.commit();
    }

    json ls() {
        CliResult r = mfs({"--json", "ls"});
        EXPECT_EQ(r.exit_code, 0) << r.err;
        return json::parse(r.out);
    }
};

// A lock file with one multi-file model whose file is `path`, its content id right.
std::string tree_lock(const std::string& key, const std::string& path) {
    modelfs::ModelVersion v;
    v.tree.push_back({path, *modelfs::Sha256::from_hex(kSha), 10});
    json lock = {{"modelfs_lock", 1},
                 {"view", ""},
                 {"models",
                  {{{"model", key},
                    {"label", "v1"},
                    {"sha256", v.content_id().hex()},
                    {"size", 10},
                    {"files",
                     {{{"path", path},
                       {"sha256", kSha},
                       {"size", 10},
                       {"sources", {"https://127.0.0.1:9/x"}}}}}}}}};
    return lock.dump(2);
}

std::string single_lock(const std::string& key) {
    json lock = {{"modelfs_lock", 1},
                 {"view", ""},
                 {"models",
                  {{{"model", key},
                    {"label", "v1"},
                    {"ext", ".safetensors"},
                    {"sha256", kSha},
                    {"size", 10},
                    {"sources", {"https://127.0.0.1:9/x.safetensors"}}}}}};
    return lock.dump(2);
}

TEST_F(NamesCli, ApplyRefusesHostileLockFilesBeforeAnythingChanges) {
    const std::string cron = "../../../../etc/cron.d/modelfs-names-test";
    struct Case {
        std::string text, says;
    };
    const Case cases[] = {
        {tree_lock("diffusers/sd", cron), "'..'"},
        {tree_lock("diffusers/sd", "/etc/modelfs-names-test"), "absolute"},
        {tree_lock("diffusers/sd", "unet/a\nb"), "control character 0x0a"},
        {single_lock("lora/evil\nname"), "control character 0x0a"},
        {single_lock("lora//etc/modelfs-names-test"), "absolute"},
        {single_lock("lora/a\x1b[2Jb"), "control character 0x1b"},
    };
    for (const auto& c : cases) {
        write_text_file(dir / "hostile.lock", c.text);
        CliResult r = mfs({"apply", (dir / "hostile.lock").string()});
        EXPECT_NE(r.exit_code, 0) << c.says;
        EXPECT_NE(r.err.find(c.says), std::string::npos) << r.err;
        EXPECT_EQ(r.err.find('\x1b'), std::string::npos) << "escaped: " << r.err;
        EXPECT_EQ(ls().size(), 0u) << c.says;
        CliResult locks = mfs({"--json", "locks"});
        EXPECT_EQ(json::parse(locks.out).size(), 0u) << "no lock registered: " << c.says;
    }
    EXPECT_FALSE(stdfs::exists("/etc/cron.d/modelfs-names-test"));
    EXPECT_FALSE(stdfs::exists("/etc/modelfs-names-test"));
}

TEST_F(NamesCli, ImportNameWithControlCharactersIsRefused) {
    write_random_file(dir / "x.pt", 1000, 1);
    for (const std::string name : {"evil\x1b[31mred", "new\nline", "bad\xff", "../up"}) {
        CliResult r =
            mfs({"import", "--category", "lora", "--name", name, (dir / "x.pt").string()});
        EXPECT_NE(r.exit_code, 0) << r.out;
        EXPECT_NE(r.err.find("invalid model name"), std::string::npos) << r.err;
        EXPECT_EQ(r.err.find('\x1b'), std::string::npos) << r.err;
    }
    EXPECT_EQ(ls().size(), 0u);
}

TEST_F(NamesCli, ManifestAsAndPathsAreCheckedByTheSameRule) {
    for (const std::string as : {"lora/../x", "lora/evil\u001b[2J", "lora/a\u0085b"}) {
        json manifest = {{"models",
                          {{{"as", as},
                            {"url", "https://127.0.0.1:9/x.safetensors"},
                            {"sha256", kSha},
                            {"size", 10}}}}};
        write_text_file(dir / "m.json", manifest.dump());
        CliResult r = mfs({"add", "--manifest", (dir / "m.json").string()});
        EXPECT_NE(r.exit_code, 0) << as;
        EXPECT_NE(r.err.find("invalid model name"), std::string::npos) << r.err;
        EXPECT_EQ(r.err.find('\x1b'), std::string::npos) << r.err;
    }
    json manifest = {{"models",
                      {{{"as", "diffusers/sd"},
                        {"files",
                         {{{"path", "unet/\u001b[2Jx.safetensors"},
                           {"url", "https://127.0.0.1:9/x.safetensors"},
                           {"sha256", kSha},
                           {"size", 10}}}}}}}};
    write_text_file(dir / "m.json", manifest.dump());
    CliResult r = mfs({"add", "--manifest", (dir / "m.json").string()});
    EXPECT_NE(r.exit_code, 0);
    EXPECT_NE(r.err.find("control character 0x1b"), std::string::npos) << r.err;
    EXPECT_EQ(ls().size(), 0u);
}

TEST_F(NamesCli, OneBadNameInTheCatalogNeverBreaksJsonOrLock) {
    write_random_file(dir / "a.pt", 1000, 2);
    write_random_file(dir / "b.pt", 1000, 3);
    write_random_file(dir / "c.pt", 1000, 4);
    for (const char* n : {"a", "b", "c"})
        ASSERT_EQ(mfs({"import", "--category", "lora", "--name", n,
                       (dir / (std::string(n) + ".pt")).string()})
                      .exit_code,
                  0);
    rename_in_catalog("lora/b.pt", "bad\xff");
    rename_in_catalog("lora/c.pt", "esc\x1b[2J");

    CliResult r = mfs({"--json", "ls"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    // The bytes that are not UTF-8 as PEP 383 escapes, the rest as JSON writes it.
    EXPECT_NE(r.out.find(R"("lora/bad\udcff")"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find(R"("lora/esc\u001b[2J")"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find(R"("lora/a.pt")"), std::string::npos) << r.out;

    for (std::vector<std::string> args :
         {std::vector<std::string>{"--json", "status"}, {"--json", "show", "lora/bad\xff"}}) {
        CliResult s = mfs(args);
        EXPECT_EQ(s.exit_code, 0) << args[1] << ": " << s.err;
    }

    CliResult plain = mfs({"ls"});
    EXPECT_EQ(plain.exit_code, 0);
    EXPECT_EQ(plain.out.find('\x1b'), std::string::npos) << plain.out;
    EXPECT_NE(plain.out.find("esc\\x1b[2J"), std::string::npos) << plain.out;
    EXPECT_NE(plain.out.find("bad\\xff"), std::string::npos) << plain.out;

    CliResult lock = mfs({"lock"});
    EXPECT_EQ(lock.exit_code, 0) << lock.err;
    json l = json::parse(lock.out);
    ASSERT_EQ(l["models"].size(), 1u) << lock.out;
    EXPECT_EQ(l["models"][0]["model"], "lora/a.pt");
    EXPECT_NE(lock.err.find("left out of the lock"), std::string::npos) << lock.err;
    EXPECT_NE(lock.err.find("bad\\xff"), std::string::npos) << lock.err;
    EXPECT_EQ(lock.err.find('\x1b'), std::string::npos) << lock.err;
}

// Issue 16 finding 2: foo.safetensors and foo.pt are two models; the CLI takes an exact name
// first, then a stem when one model has it, and says which models a stem of several names.
TEST_F(NamesCli, AStemOfSeveralModelsIsAnErrorNamingThemAndAUniqueStemResolves) {
    write_safetensors(dir / "foo.safetensors", kohya_lora(1));
    write_random_file(dir / "foo.pt", 1000, 2);
    write_random_file(dir / "bar.pt", 1000, 3);
    CliResult r = mfs({"import", "--category", "lora", (dir / "foo.safetensors").string(),
                       (dir / "foo.pt").string(), (dir / "bar.pt").string()});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    for (std::vector<std::string> args : {std::vector<std::string>{"show", "foo"},
                                          {"show", "lora/foo"},
                                          {"use", "foo@v1"},
                                          {"versions", "foo"}}) {
        r = mfs(args);
        EXPECT_NE(r.exit_code, 0) << args[0] << " " << args[1] << " resolved: " << r.out;
        const std::string stem = args[1].substr(0, args[1].find('@'));
        for (const std::string& want :
             {"'" + stem + "' is ", std::string("lora/foo.safetensors"), std::string("lora/foo.pt"),
              std::string("; give the extension")})
            EXPECT_NE(r.err.find(want), std::string::npos) << want << " not in: " << r.err;
    }
    for (const char* exact : {"foo.pt", "lora/foo.safetensors"}) {
        r = mfs({"--json", "show", exact});
        ASSERT_EQ(r.exit_code, 0) << exact << ": " << r.err;
        EXPECT_EQ(json::parse(r.out)["model"],
                  std::string(exact).starts_with("lora/") ? exact : std::string("lora/") + exact);
    }
    // One model of that stem: the stem names it, printed once with its extension.
    r = mfs({"--json", "show", "bar"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(json::parse(r.out)["model"], "lora/bar.pt");
    r = mfs({"show", "bar"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.out.find("lora/bar.pt"), std::string::npos) << r.out;
    EXPECT_EQ(r.out.find("bar.pt.pt"), std::string::npos) << r.out;
}

TEST_F(NamesCli, ShowEscapesSafetensorsMetadata) {
    auto spec = kohya_lora(5);
    spec.metadata["evil"] =
        "\x1b[2J\x1b]0;pwned\x07 and \xc2\x9b"
        "31m";
    write_safetensors(dir / "m.safetensors", spec);
    ASSERT_EQ(mfs({"import", "--category", "lora", "--name", "m", (dir / "m.safetensors").string()})
                  .exit_code,
              0);
    CliResult r = mfs({"show", "lora/m"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.out.find('\x1b'), std::string::npos) << r.out;
    EXPECT_EQ(r.out.find("\xc2\x9b"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("\\x1b[2J\\x1b]0;pwned\\x07 and \\xc2\\x9b31m"), std::string::npos)
        << r.out;
    CliResult file = mfs({"show", (dir / "m.safetensors").string()});
    EXPECT_EQ(file.out.find('\x1b'), std::string::npos) << file.out;
}

TEST_F(NamesCli, LockOutputCarriesNoSecretsUnlessAsked) {
    add_remote("secret",
               "http://alice:PASSWORD@127.0.0.1:9/x.safetensors?X-Amz-Algorithm=AWS4-HMAC-SHA256&"
               "X-Amz-Credential=AKIA%2F1&X-Amz-Signature=abc123&token=tok456&download=1");
    add_remote("public", "http://127.0.0.1:9/pub.safetensors?download=1");

    CliResult r = mfs({"lock", "-o", (dir / "plain.lock").string()});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const std::string text = read_file(dir / "plain.lock");
    for (const char* secret : {"alice", "PASSWORD", "abc123", "tok456", "AKIA", "X-Amz"})
        EXPECT_EQ(text.find(secret), std::string::npos) << secret << " in " << text;
    json l = json::parse(text);
    ASSERT_EQ(l["models"].size(), 2u);
    EXPECT_EQ(l["models"][0]["model"], "lora/public.safetensors");
    EXPECT_EQ(l["models"][0]["sources"][0], "http://127.0.0.1:9/pub.safetensors?download=1");
    EXPECT_FALSE(l["models"][0].contains("secrets_removed"));
    EXPECT_EQ(l["models"][1]["sources"][0], "http://127.0.0.1:9/x.safetensors?download=1");
    EXPECT_EQ(l["models"][1]["secrets_removed"], true);
    EXPECT_EQ(mode_of(dir / "plain.lock") & 0777, 0644u);
    CliResult show = mfs({"--json", "show", "lora/secret"});
    EXPECT_EQ(show.out.find("PASSWORD"), std::string::npos) << show.out;
    EXPECT_EQ(show.out.find("abc123"), std::string::npos) << show.out;

    CliResult with = mfs({"lock", "--with-secrets", "-o", (dir / "secret.lock").string()});
    ASSERT_EQ(with.exit_code, 0) << with.err;
    const std::string stext = read_file(dir / "secret.lock");
    EXPECT_NE(stext.find("alice:PASSWORD@"), std::string::npos) << stext;
    EXPECT_NE(stext.find("X-Amz-Signature=abc123"), std::string::npos) << stext;
    EXPECT_EQ(stext.find("secrets_removed"), std::string::npos) << stext;
    EXPECT_EQ(mode_of(dir / "secret.lock") & 0777, 0600u);

    // On another machine: the public URL applies; the one that lost its credentials says what
    // to do, and nothing of it is registered.
    const stdfs::path other = dir / "other";
    ASSERT_EQ(mfs({"init"}, other).exit_code, 0);
    CliResult a = mfs({"apply", (dir / "plain.lock").string()}, other);
    EXPECT_NE(a.exit_code, 0);
    EXPECT_NE(a.err.find("--with-secrets"), std::string::npos) << a.err;
    EXPECT_NE(a.err.find("lora/secret"), std::string::npos) << a.err;
    CliResult ols = mfs({"--json", "ls"}, other);
    json models = json::parse(ols.out);
    ASSERT_EQ(models.size(), 1u) << ols.out;
    EXPECT_EQ(models[0]["model"], "lora/public.safetensors");
    const stdfs::path third = dir / "third";
    ASSERT_EQ(mfs({"init"}, third).exit_code, 0);
    CliResult b = mfs({"apply", (dir / "secret.lock").string()}, third);
    EXPECT_EQ(b.exit_code, 0) << b.err;
}

TEST_F(NamesCli, HfPathsThatLeaveResolveAreRefusedBeforeAnyRequest) {
    // Port 9 (discard) on loopback: nothing listens, so a request would fail differently.
    for (const char* url : {"hf://a/b/../../../api/whoami-v2.safetensors",
                            "hf://a/b/%2e%2e/%2e%2e/%2e%2e/api/whoami-v2.safetensors"}) {
        CliResult r =
            run_modelfs({"--store", store.string(), "add", url, "--as", "lora/x", "--sha256", kSha},
                        {{"HF_ENDPOINT", "http://127.0.0.1:9"}, {"HF_TOKEN", "hf_secret_token"}});
        EXPECT_NE(r.exit_code, 0) << url;
        EXPECT_NE(r.err.find("'..'"), std::string::npos) << url << ": " << r.err;
        EXPECT_EQ(r.err.find("hf_secret_token"), std::string::npos) << r.err;
    }
    EXPECT_EQ(ls().size(), 0u);
}

TEST_F(NamesCli, AConfigWithATokenThatOthersCanReadIsWarnedAbout) {
    const stdfs::path cfg = dir / "config.toml";
    write_text_file(cfg, "[fetch]\nhf_token = \"hf_abc\"\n");
    ::chmod(cfg.c_str(), 0644);
    CliResult r = mfs({"--config", cfg.string(), "ls"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    const auto at = r.err.find("every user can read it");
    EXPECT_NE(at, std::string::npos) << r.err;
    EXPECT_EQ(r.err.find("every user can read it", at + 1), std::string::npos) << "once: " << r.err;
    EXPECT_EQ(r.err.find("hf_abc"), std::string::npos) << r.err;
    ::chmod(cfg.c_str(), 0600);
    r = mfs({"--config", cfg.string(), "ls"});
    EXPECT_EQ(r.err.find("every user can read it"), std::string::npos) << r.err;
}

TEST_F(NamesCli, CatalogIsNotReadableByOthers) {
    const stdfs::path priv = dir / "private", shared = dir / "shared";
    stdfs::create_directories(priv);
    stdfs::create_directories(shared);
    ::chmod(priv.c_str(), 0700);
    ::chmod(shared.c_str(), 0750);  // a multi-user store: its group reads the catalog
    ASSERT_EQ(mfs({"init"}, priv).exit_code, 0);
    ASSERT_EQ(mfs({"init"}, shared).exit_code, 0);
    EXPECT_EQ(mode_of(priv / "catalog" / "data.mdb") & 0777, 0600u);
    EXPECT_EQ(mode_of(priv / "catalog" / "lock.mdb") & 0777, 0600u);
    EXPECT_EQ(mode_of(shared / "catalog" / "data.mdb") & 0777, 0640u);

    // An older store's 0644 catalog is tightened by the next command that opens it.
    ::chmod((priv / "catalog" / "data.mdb").c_str(), 0644);
    ::chmod((priv / "catalog" / "lock.mdb").c_str(), 0644);
    ASSERT_EQ(mfs({"ls"}, priv).exit_code, 0);
    EXPECT_EQ(mode_of(priv / "catalog" / "data.mdb") & 0777, 0600u);
    EXPECT_EQ(mode_of(priv / "catalog" / "lock.mdb") & 0777, 0600u);
}

}  // namespace
