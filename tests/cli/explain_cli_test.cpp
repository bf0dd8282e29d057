// What a new user meets first (issue 17): mount points that cannot work, a bare or misspelt
// command, one meaning per exit code, lock files on stdout, files that are no models, a busy
// umount, the man page.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "support/http_servers.h"
#include "support/mount_fixture.h"
#include "support/safetensors_writer.h"
#include "support/sized_models.h"
#include "support/test_env.h"

namespace stdfs = std::filesystem;
using namespace modelfs::testing;
using nlohmann::json;

#define EXPECT_HAS(text, part) \
    EXPECT_NE((text).find(part), std::string::npos) << "missing '" << (part) << "' in: " << (text)
#define EXPECT_LACKS(text, part)                    \
    EXPECT_EQ((text).find(part), std::string::npos) \
        << "unexpected '" << (part) << "' in: " << (text)

namespace {

class ExplainCli : public ::testing::Test {
  protected:
    TempDir dir{"modelfs-explain"};
    stdfs::path store = dir / "store";

    CliResult mfs(std::vector<std::string> args) {
        args.insert(args.begin(), {"--store", store.string()});
        return run_modelfs(args);
    }
    void SetUp() override { ASSERT_EQ(mfs({"init"}).exit_code, 0); }
    // A mount the code under test should have refused may still have happened: never leave one.
    void TearDown() override {
        for (const auto& p : stdfs::directory_iterator(dir.path()))
            if (is_mounted(p.path())) run_program("/bin/fusermount3", {"-uz", p.path().string()});
    }
    void import_lora(const std::string& name, std::uint64_t seed) {
        const stdfs::path p = dir / "src" / "loras" / (name + ".safetensors");
        stdfs::create_directories(p.parent_path());
        write_safetensors(p, kohya_lora(seed));
        ASSERT_EQ(mfs({"import", "-c", "lora", p.string()}).exit_code, 0);
    }
};

TEST_F(ExplainCli, MountRefusesAFile) {
    write_text_file(dir / "file", "x");
    CliResult r = mfs({"mount", (dir / "file").string()});
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_HAS(r.err, "is not a folder");
    r = run_modelfs({store.string(), (dir / "file").string(), "-o", "view=comfyui"});
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_HAS(r.err, "is not a folder");
    EXPECT_FALSE(is_mounted(dir / "file"));
}

TEST_F(ExplainCli, MountRefusesAFolderWithFilesUnlessAsked) {
    stdfs::create_directories(dir / "full");
    write_text_file(dir / "full" / "mine.txt", "keep me");
    CliResult r = mfs({"mount", (dir / "full").string()});
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_HAS(r.err, "is not empty");
    EXPECT_HAS(r.err, "--nonempty");
    r = run_modelfs({store.string(), (dir / "full").string(), "-o", "view=comfyui"});
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_HAS(r.err, "is not empty");
    EXPECT_FALSE(is_mounted(dir / "full"));

    Mount m(store, dir / "full", {"--nonempty"});
    ASSERT_TRUE(m.ok());
    EXPECT_FALSE(stdfs::exists(dir / "full" / "mine.txt")) << "hidden while mounted";
    EXPECT_EQ(m.stop(), 0);
    EXPECT_EQ(read_file(dir / "full" / "mine.txt"), "keep me");
}

TEST_F(ExplainCli, MountRefusesAnExistingMount) {
    stdfs::create_directories(dir / "mnt");
    Mount m(store, dir / "mnt");
    ASSERT_TRUE(m.ok());
    CliResult r = mfs({"mount", (dir / "mnt").string()});
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_HAS(r.err, "already a mount point (fuse.modelfs)");
    EXPECT_HAS(r.err, "modelfs umount");
    r = run_modelfs({store.string(), (dir / "mnt").string(), "-o", "view=comfyui"});
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_HAS(r.err, "already a mount point");
    EXPECT_EQ(m.stop(), 0);
    EXPECT_FALSE(is_mounted(dir / "mnt")) << "one daemon, not two stacked";
}

TEST_F(ExplainCli, BareModelfsListsTheCommands) {
    CliResult r = run_modelfs({});
    EXPECT_EQ(r.exit_code, 2);
    for (const char* sub : {"import", "mount", "umount", "lock", "adopt"}) EXPECT_HAS(r.out, sub);
    EXPECT_LACKS(r.err, "A subcommand is required");
}

TEST_F(ExplainCli, ATypoSuggestsTheNearestCommand) {
    CliResult r = run_modelfs({"mont"});
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_HAS(r.err, "unknown command 'mont'; did you mean 'mount'?");
    r = mfs({"--json", "imprt", "x"});
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_HAS(r.err, "did you mean 'import'?");
    r = run_modelfs({"frobnicate"});
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_HAS(r.err, "unknown command 'frobnicate'");
    EXPECT_LACKS(r.err, "did you mean");
}

TEST_F(ExplainCli, MessagesNameTheRealArgument) {
    CliResult r = mfs({"show"});
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_LACKS(r.err, "what is required");
    EXPECT_HAS(r.err, "model is required");
}

TEST_F(ExplainCli, UnknownViewIsTwoEverywhere) {
    stdfs::create_directories(dir / "mnt");
    for (const std::vector<std::string>& args :
         {std::vector<std::string>{"views", "nosuchview"},
          {"mount", "--view", "nosuchview", (dir / "mnt").string()},
          {"lock", "--view", "nosuchview"},
          {"pin", "x@v1", "--view", "nosuchview"}}) {
        CliResult r = mfs(args);
        EXPECT_EQ(r.exit_code, 2) << args[0] << ": " << r.err;
        EXPECT_HAS(r.err, "unknown view 'nosuchview'");
    }
    CliResult r = run_modelfs({store.string(), (dir / "mnt").string(), "-o", "view=nosuchview"});
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_FALSE(is_mounted(dir / "mnt"));
}

TEST_F(ExplainCli, NothingMatchedIsThreeEverywhere) {
    import_lora("style", 1);
    EXPECT_EQ(mfs({"ls"}).exit_code, 0);
    EXPECT_EQ(mfs({"ls", "lora/*"}).exit_code, 0);
    CliResult r = mfs({"ls", "nomatch*"});
    EXPECT_EQ(r.exit_code, 3) << r.err;
    EXPECT_HAS(r.err, "no model matches");
    r = mfs({"--json", "ls", "nomatch*"});
    EXPECT_EQ(r.exit_code, 3);
    EXPECT_TRUE(json::parse(r.out).empty());
    EXPECT_EQ(mfs({"ls", "-c", "vae"}).exit_code, 3);
    EXPECT_EQ(mfs({"fetch", "nomatch*"}).exit_code, 3);
    EXPECT_EQ(mfs({"show", "nomatch"}).exit_code, 3);
    // A bare `ls` of an empty store matched no filter: nothing to complain about.
    TempDir other{"modelfs-explain-empty"};
    ASSERT_EQ(run_modelfs({"--store", (other / "s").string(), "init"}).exit_code, 0);
    EXPECT_EQ(run_modelfs({"--store", (other / "s").string(), "ls"}).exit_code, 0);
}

TEST_F(ExplainCli, HelpHasTheExitCodeTable) {
    CliResult r = run_modelfs({"--help"});
    EXPECT_EQ(r.exit_code, 0);
    EXPECT_HAS(r.out, "Exit codes:");
    EXPECT_HAS(r.out, "2 usage error");
    EXPECT_HAS(r.out, "3 not found");
    // Once, in the top-level help; a subcommand's points there.
    r = run_modelfs({"import", "--help"});
    EXPECT_LACKS(r.out, "Exit codes:");
    EXPECT_HAS(r.out, "modelfs --help");
}

TEST_F(ExplainCli, LockToStdoutRegistersOnlyWhenAsked) {
    import_lora("style", 1);
    CliResult r = mfs({"lock"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(json::parse(r.out)["models"].size(), 1u);
    EXPECT_TRUE(json::parse(mfs({"--json", "locks"}).out).empty()) << "nothing registered";
    r = mfs({"lock", "--register"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_HAS(r.err, "modelfs unlock");
    EXPECT_EQ(json::parse(mfs({"--json", "locks"}).out).size(), 1u);
}

TEST_F(ExplainCli, LockCanSkipRemotesWithoutAHash) {
    import_lora("style", 1);
    // Registered, never downloaded: no SHA-256 yet.
    stdfs::create_directories(dir / "www");
    write_random_file(dir / "www" / "remote.safetensors", 20000, 77);
    modelfs::test::NginxServer nginx(dir / "www");
    CliResult r = mfs({"add", nginx.url("remote.safetensors"), "--as", "lora/remote"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    r = mfs({"lock"});
    EXPECT_NE(r.exit_code, 0);
    EXPECT_HAS(r.err, "has not been downloaded yet");
    EXPECT_HAS(r.err, "--skip-unhashed");
    r = mfs({"lock", "--skip-unhashed"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const json lock = json::parse(r.out);
    ASSERT_EQ(lock["models"].size(), 1u);
    EXPECT_EQ(lock["models"][0]["model"], "lora/style.safetensors");
    EXPECT_HAS(r.err, "lora/remote");
    EXPECT_HAS(r.err, "left out of the lock");
}

TEST_F(ExplainCli, ImportSaysWhatIsNoModel) {
    write_text_file(dir / "notes.txt", "remember the milk\n");
    CliResult r = mfs({"import", (dir / "notes.txt").string()});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_HAS(r.err, "is not a model format");
    r = mfs({"import", "-c", "other", "-n", "notes2", (dir / "notes.txt").string()});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_LACKS(r.err, "not a model format");

    write_text_file(dir / "fake.safetensors", "this is not a safetensors file at all");
    r = mfs({"import", (dir / "fake.safetensors").string()});
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_HAS(r.err, "not a safetensors file");
    EXPECT_LACKS(r.err, "header length");
}

TEST_F(ExplainCli, AUniqueBareNameMatches) {
    const stdfs::path loras = dir / "src" / "loras";
    stdfs::create_directories(loras / "set3");
    stdfs::create_directories(loras / "set4");
    write_safetensors(loras / "set3" / "lora_0003.safetensors", kohya_lora(1));
    write_safetensors(loras / "set3" / "twin.safetensors", kohya_lora(2));
    write_safetensors(loras / "set4" / "twin.safetensors", kohya_lora(3));
    CliResult r = mfs({"import", loras.string()});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    for (const char* q : {"lora_0003", "lora_0003.safetensors"}) {
        r = mfs({"--json", "show", q});
        ASSERT_EQ(r.exit_code, 0) << q << ": " << r.err;
        EXPECT_EQ(json::parse(r.out)["model"], "lora/set3/lora_0003.safetensors") << q;
    }
    r = mfs({"versions", "lora_0003"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(mfs({"use", "lora_0003@v1"}).exit_code, 0);
    // Several models of that file name: the ones to choose from, and the exit code of a conflict.
    for (std::vector<std::string> args : {std::vector<std::string>{"show", "twin"},
                                          {"show", "twin.safetensors"},
                                          {"use", "twin@v1"}}) {
        r = mfs(args);
        EXPECT_EQ(r.exit_code, 1) << args[0] << " " << args[1] << ": " << r.out;
        EXPECT_HAS(r.err, "lora/set3/twin.safetensors");
        EXPECT_HAS(r.err, "lora/set4/twin.safetensors");
    }
}

TEST_F(ExplainCli, BusyUmountSaysWhoHoldsIt) {
    stdfs::create_directories(dir / "mnt");
    Mount m(store, dir / "mnt");
    ASSERT_TRUE(m.ok());
    int ready[2];
    ASSERT_EQ(::pipe(ready), 0);
    const pid_t holder = ::fork();
    ASSERT_GE(holder, 0);
    if (holder == 0) {
        ::close(ready[0]);
        if (::chdir((dir / "mnt").c_str()) != 0) ::_exit(1);
        (void)!::write(ready[1], "x", 1);
        ::pause();
        ::_exit(0);
    }
    ::close(ready[1]);
    char c;
    ASSERT_EQ(::read(ready[0], &c, 1), 1);
    ::close(ready[0]);
    CliResult r = run_modelfs({"umount", (dir / "mnt").string()});
    ::kill(holder, SIGKILL);
    ::waitpid(holder, nullptr, 0);
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_HAS(r.err, "is busy");
    EXPECT_HAS(r.err, std::to_string(holder));
    EXPECT_HAS(r.err, "fuser -vm");
    EXPECT_TRUE(is_mounted(dir / "mnt"));
    EXPECT_EQ(run_modelfs({"umount", (dir / "mnt").string()}).exit_code, 0);
    EXPECT_TRUE(eventually([&] { return !is_mounted(dir / "mnt"); }));
}

TEST_F(ExplainCli, ManPageHasExamplesAndTheGlobalTextOnce) {
    const stdfs::path out = dir / "modelfs.1";
    CliResult r =
        run_program("/bin/sh", {MODELFS_GEN_MANPAGE, modelfs_binary().string(), "0", out.string()});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const std::string man = read_file(out);
    EXPECT_HAS(man, ".SH EXAMPLES");
    EXPECT_HAS(man, "modelfs mount --view comfyui");
    std::size_t n = 0;
    for (std::size_t at = man.find("Exit codes:"); at != std::string::npos;
         at = man.find("Exit codes:", at + 1))
        ++n;
    EXPECT_EQ(n, 1u);
    EXPECT_LACKS(man, "Settings, the store");
    EXPECT_HAS(man, ".SS umount");
}

}  // namespace
