// A shared mount (root's daemon, --allow-other, as fstab and boot-time mounts run it) used by
// several users, as on a shared GPU server (issue 15, finding 1): nobody gets a set-id file out
// of it, what a user makes is that user's (and nobody else's to read or delete), chmod and chown
// either take effect or fail, and the store's folders are reachable by the store's owner only.
// Every test acts as ordinary users 1001 and 1002 (group 1003: a team both are in), so needs
// root; each skips without it.
#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "support/mount_fixture.h"
#include "support/safetensors_writer.h"
#include "support/test_env.h"

namespace stdfs = std::filesystem;
using namespace modelfs::testing;

namespace {

constexpr uid_t kAlice = 1001, kBob = 1002;
constexpr gid_t kTeam = 1003, kOtherTeam = 1004;

// Runs `check` in a forked child as user `uid` (its group `uid`, and `groups` besides), so a
// root test sees what the kernel lets an ordinary user do. `check` returns what went wrong,
// empty when all is well.
std::string as_user(uid_t uid, const std::vector<gid_t>& groups,
                    const std::function<std::string()>& check) {
    int pipefd[2];
    if (::pipe(pipefd) != 0) return std::string("pipe: ") + std::strerror(errno);
    const pid_t pid = ::fork();
    if (pid < 0) return std::string("fork: ") + std::strerror(errno);
    if (pid == 0) {
        ::close(pipefd[0]);
        std::string msg;
        if (::setgroups(groups.size(), groups.data()) != 0 || ::setresgid(uid, uid, uid) != 0 ||
            ::setresuid(uid, uid, uid) != 0) {
            msg = std::string("cannot become uid ") + std::to_string(uid) + ": " +
                  std::strerror(errno);
        } else {
            ::umask(022);
            try {
                msg = check();
            } catch (const std::exception& e) {
                msg = std::string("exception: ") + e.what();
            }
        }
        (void)!::write(pipefd[1], msg.data(), msg.size());
        ::_exit(msg.empty() ? 0 : 1);
    }
    ::close(pipefd[1]);
    std::string out;
    char buf[512];
    for (ssize_t n; (n = ::read(pipefd[0], buf, sizeof buf)) > 0;) out.append(buf, n);
    ::close(pipefd[0]);
    int status = 0;
    if (::waitpid(pid, &status, 0) != pid || !WIFEXITED(status))
        out += " (the child did not exit normally)";
    return out;
}

std::string err(const char* what, const stdfs::path& p) {
    return std::string(what) + " " + p.string() + ": " + std::strerror(errno);
}

// Makes `p` with `mode` (the exact syscall: open O_CREAT with that mode, under the caller's
// umask) holding `bytes`.
std::string make_file(const stdfs::path& p, mode_t mode, const std::string& bytes) {
    int fd = ::open(p.c_str(), O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0) return err("create", p);
    const bool ok = ::write(fd, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size());
    ::close(fd);
    return ok ? "" : err("write", p);
}

// Mode, owner and group as `lstat` sees them ("04755 1001:1003"), or the error.
std::string attrs(const stdfs::path& p) {
    struct stat st;
    if (::lstat(p.c_str(), &st) != 0) return std::strerror(errno);
    char buf[64];
    std::snprintf(buf, sizeof buf, "%05o %u:%u", st.st_mode & 07777, st.st_uid, st.st_gid);
    return buf;
}

mode_t mode_of(const stdfs::path& p) {
    struct stat st {};
    ::lstat(p.c_str(), &st);
    return st.st_mode & 07777;
}

class SharedMountTest : public ::testing::Test {
  protected:
    TempDir dir{"modelfs-shared"};
    stdfs::path store = dir / "store";
    stdfs::path mnt = dir / "mnt";
    stdfs::path shared = mnt / "a1111" / "shared";  // a folder root made world-writable
    stdfs::path real_shared = store / "views" / "a1111" / "shared";  // the same in the store
    std::unique_ptr<Mount> mount;

    void SetUp() override {
        if (!stdfs::exists("/dev/fuse")) GTEST_SKIP() << "no /dev/fuse";
        if (::geteuid() != 0) GTEST_SKIP() << "needs root: a root mount used by other users";
        // The way to the mount point and to the store, for everyone: only the store's own
        // folders may keep them out.
        stdfs::permissions(dir.path(), stdfs::perms::owner_all | stdfs::perms::group_read |
                                           stdfs::perms::group_exec | stdfs::perms::others_read |
                                           stdfs::perms::others_exec);
        ASSERT_EQ(run_modelfs({"--store", store.string(), "init"}).exit_code, 0);
        const stdfs::path src = dir / "src";
        stdfs::create_directories(src / "Lora");
        write_safetensors(src / "Lora" / "style.safetensors", kohya_lora(1));
        ASSERT_EQ(run_modelfs({"--store", store.string(), "import", src.string()}).exit_code, 0);
        stdfs::permissions(store, stdfs::perms::owner_all | stdfs::perms::group_read |
                                      stdfs::perms::group_exec | stdfs::perms::others_read |
                                      stdfs::perms::others_exec);
        remount();
        ASSERT_EQ(::mkdir(shared.c_str(), 0755), 0) << std::strerror(errno);
        ASSERT_EQ(::chmod(shared.c_str(), 01777), 0) << std::strerror(errno);
    }

    void remount() {
        mount.reset();
        mount = std::make_unique<Mount>(store, mnt, std::vector<std::string>{"--allow-other"});
        ASSERT_TRUE(mount->ok());
    }
};

// Finding 1 as measured: in a world-writable folder of a view, a user makes a file mode 04755
// and copies /usr/bin/id into it. It must not be set-user-ID anywhere (it would run as root
// from the store path), it is the user's, and the store path is out of the user's reach.
TEST_F(SharedMountTest, UserCannotMakeASetIdProgram) {
    const std::string id = read_file("/usr/bin/id");
    const stdfs::path evil = shared / "evil";
    EXPECT_EQ(as_user(kAlice, {}, [&] { return make_file(evil, 04755, id); }), "");
    EXPECT_EQ(attrs(evil), "00755 1001:1001");
    EXPECT_EQ(attrs(real_shared / "evil"), "00755 1001:1001");
    // The store path is out of reach; through the mount (nosuid) it runs as the user.
    EXPECT_EQ(as_user(kAlice, {},
                      [&]() -> std::string {
                          struct stat st;
                          if (::stat((real_shared / "evil").c_str(), &st) == 0)
                              return "the store path is reachable";
                          return errno == EACCES ? "" : err("stat", real_shared / "evil");
                      }),
              "");
    CliResult r = run_program("/usr/bin/setpriv", {"--reuid=1001", "--regid=1001", "--clear-groups",
                                                   "--", evil.string(), "-u"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.out, "1001\n");
}

// chmod u+s and g+s by a user on its own file and folder take no effect (the bits would hand the
// daemon's rights to whoever reaches the store's copy); root's own request stands.
TEST_F(SharedMountTest, UserChmodDropsSetIdBits) {
    EXPECT_EQ(as_user(kAlice, {kTeam},
                      [&]() -> std::string {
                          if (auto e = make_file(shared / "tool", 0755, "#!/bin/sh\n"); !e.empty())
                              return e;
                          if (::chmod((shared / "tool").c_str(), 04755) != 0)
                              return err("chmod u+s", shared / "tool");
                          if (::chmod((shared / "tool").c_str(), 02755) != 0)
                              return err("chmod g+s", shared / "tool");
                          if (::mkdir((shared / "d").c_str(), 0755) != 0)
                              return err("mkdir", shared / "d");
                          if (::chmod((shared / "d").c_str(), 02775) != 0)
                              return err("chmod g+s", shared / "d");
                          return "";
                      }),
              "");
    EXPECT_EQ(attrs(shared / "tool"), "00755 1001:1001");
    EXPECT_EQ(attrs(real_shared / "tool"), "00755 1001:1001");
    EXPECT_EQ(mode_of(shared / "d"), 0775u);
    EXPECT_EQ(mode_of(real_shared / "d"), 0775u);
    ASSERT_EQ(::chmod((shared / "tool").c_str(), 04755), 0);
    EXPECT_EQ(mode_of(shared / "tool"), 04755u);
}

// A write by another user to a set-id file root made writable clears the bits, as on ext4
// (whatever way the write comes: O_WRONLY writes go straight to the daemon, O_RDWR ones through
// the page cache). Set-group-ID without group-execute is no privilege and stays; root's own
// writes keep them.
TEST_F(SharedMountTest, WriteByAnotherUserClearsSetIdBits) {
    for (const char* name : {"wronly", "rdwr", "rootwrites"}) {
        ASSERT_EQ(make_file(shared / name, 06777, "#!/bin/sh\n"), "");
        ASSERT_EQ(::chmod((shared / name).c_str(), 06777), 0);  // past the umask
    }
    ASSERT_EQ(make_file(shared / "nogx", 02666, "data"), "");
    ASSERT_EQ(::chmod((shared / "nogx").c_str(), 02666), 0);
    ASSERT_EQ(mode_of(shared / "wronly"), 06777u);
    EXPECT_EQ(as_user(kBob, {},
                      [&]() -> std::string {
                          for (auto [name, flags] :
                               {std::pair{"wronly", O_WRONLY}, std::pair{"rdwr", O_RDWR},
                                std::pair{"nogx", O_WRONLY}}) {
                              int fd = ::open((shared / name).c_str(), flags | O_CLOEXEC);
                              if (fd < 0) return err("open", shared / name);
                              const bool ok = ::pwrite(fd, "echo\n", 5, 10) == 5;
                              ::close(fd);
                              if (!ok) return err("write", shared / name);
                          }
                          return "";
                      }),
              "");
    EXPECT_EQ(mode_of(shared / "wronly"), 0777u);
    EXPECT_EQ(mode_of(shared / "rdwr"), 0777u);
    EXPECT_EQ(mode_of(real_shared / "wronly"), 0777u);
    EXPECT_EQ(mode_of(real_shared / "rdwr"), 0777u);
    EXPECT_EQ(mode_of(shared / "nogx"), 02666u);
    int fd = ::open((shared / "rootwrites").c_str(), O_WRONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    EXPECT_EQ(::pwrite(fd, "echo\n", 5, 10), 5);
    ::close(fd);
    EXPECT_EQ(mode_of(shared / "rootwrites"), 06777u);
}

// The same for a truncate: by path, by descriptor, and by opening with O_TRUNC.
TEST_F(SharedMountTest, TruncateByAnotherUserClearsSetIdBits) {
    for (const char* name : {"bypath", "byfd", "otrunc"}) {
        ASSERT_EQ(make_file(shared / name, 04777, "#!/bin/sh\necho\n"), "");
        ASSERT_EQ(::chmod((shared / name).c_str(), 04777), 0);  // past the umask
    }
    EXPECT_EQ(as_user(kBob, {},
                      [&]() -> std::string {
                          if (::truncate((shared / "bypath").c_str(), 3) != 0)
                              return err("truncate", shared / "bypath");
                          int fd = ::open((shared / "byfd").c_str(), O_RDWR | O_CLOEXEC);
                          if (fd < 0) return err("open", shared / "byfd");
                          const bool ok = ::ftruncate(fd, 3) == 0;
                          ::close(fd);
                          if (!ok) return err("ftruncate", shared / "byfd");
                          fd = ::open((shared / "otrunc").c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC);
                          if (fd < 0) return err("open O_TRUNC", shared / "otrunc");
                          ::close(fd);
                          return "";
                      }),
              "");
    for (const char* name : {"bypath", "byfd", "otrunc"}) {
        EXPECT_EQ(mode_of(shared / name), 0777u) << name;
        EXPECT_EQ(mode_of(real_shared / name), 0777u) << name;
    }
}

// A chown clears the bits, even root's (as Linux does for every caller since 2.2.13).
TEST_F(SharedMountTest, ChownClearsSetIdBits) {
    ASSERT_EQ(make_file(shared / "tool", 04755, "#!/bin/sh\n"), "");
    ASSERT_EQ(mode_of(shared / "tool"), 04755u);
    ASSERT_EQ(::chown((shared / "tool").c_str(), kAlice, kAlice), 0) << std::strerror(errno);
    EXPECT_EQ(attrs(shared / "tool"), "00755 1001:1001");
    EXPECT_EQ(attrs(real_shared / "tool"), "00755 1001:1001");
}

// What a user makes is the user's, through the mount and in the store: it reads back and
// deletes its own 0600 file; another user can do neither. In a set-group-ID folder new entries
// take the folder's group (and new folders the bit), as on ext4.
TEST_F(SharedMountTest, EntriesBelongToTheirMaker) {
    EXPECT_EQ(as_user(kAlice, {},
                      [&]() -> std::string {
                          if (auto e = make_file(shared / "secret", 0600, "alice's"); !e.empty())
                              return e;
                          if (read_file(shared / "secret") != "alice's") return "cannot read back";
                          if (auto e = make_file(shared / "scratch", 0600, "x"); !e.empty())
                              return e;
                          if (::unlink((shared / "scratch").c_str()) != 0)
                              return err("unlink", shared / "scratch");
                          if (::mkdir((shared / "dir").c_str(), 0700) != 0)
                              return err("mkdir", shared / "dir");
                          if (::symlink("secret", (shared / "link").c_str()) != 0)
                              return err("symlink", shared / "link");
                          if (::mkfifo((shared / "fifo").c_str(), 0600) != 0)
                              return err("mkfifo", shared / "fifo");
                          return "";
                      }),
              "");
    EXPECT_EQ(attrs(shared / "secret"), "00600 1001:1001");
    EXPECT_EQ(attrs(real_shared / "secret"), "00600 1001:1001");
    EXPECT_EQ(attrs(shared / "dir"), "00700 1001:1001");
    EXPECT_EQ(attrs(real_shared / "dir"), "00700 1001:1001");
    EXPECT_EQ(attrs(shared / "link").substr(6), "1001:1001");
    EXPECT_EQ(attrs(real_shared / "link").substr(6), "1001:1001");
    EXPECT_EQ(attrs(shared / "fifo"), "00600 1001:1001");
    EXPECT_EQ(attrs(real_shared / "fifo"), "00600 1001:1001");
    EXPECT_FALSE(stdfs::exists(shared / "scratch"));
    EXPECT_EQ(as_user(kBob, {},
                      [&]() -> std::string {
                          if (::open((shared / "secret").c_str(), O_RDONLY | O_CLOEXEC) >= 0)
                              return "bob read alice's 0600 file";
                          if (errno != EACCES) return err("open", shared / "secret");
                          if (::unlink((shared / "secret").c_str()) == 0)
                              return "bob deleted alice's file";
                          if (errno != EPERM) return err("unlink", shared / "secret");
                          return "";
                      }),
              "");

    const stdfs::path team = shared / "team";
    ASSERT_EQ(::mkdir(team.c_str(), 0755), 0);
    ASSERT_EQ(::chown(team.c_str(), 0, kTeam), 0);
    ASSERT_EQ(::chmod(team.c_str(), 02777), 0);
    EXPECT_EQ(as_user(kAlice, {},
                      [&]() -> std::string {
                          if (auto e = make_file(team / "f", 0640, "x"); !e.empty()) return e;
                          if (::mkdir((team / "sub").c_str(), 0750) != 0)
                              return err("mkdir", team / "sub");
                          return "";
                      }),
              "");
    EXPECT_EQ(attrs(team / "f"), "00640 1001:1003");
    EXPECT_EQ(attrs(team / "sub"), "02750 1001:1003");
    EXPECT_EQ(attrs(store / "views" / "a1111" / "shared" / "team" / "f"), "00640 1001:1003");
}

// chown through the mount follows the kernel's rules (checked by default_permissions against
// the owners the mount reports): only root gives a file away; its owner may change its group to
// one of its own groups.
TEST_F(SharedMountTest, ChownFollowsTheKernelsRules) {
    const stdfs::path f = shared / "f";
    EXPECT_EQ(as_user(kAlice, {kTeam},
                      [&]() -> std::string {
                          if (auto e = make_file(f, 0644, "x"); !e.empty()) return e;
                          if (::chown(f.c_str(), kBob, -1) == 0) return "gave the file away";
                          if (errno != EPERM) return err("chown", f);
                          if (::chown(f.c_str(), -1, kOtherTeam) == 0)
                              return "changed to a group it is not in";
                          if (errno != EPERM) return err("chgrp", f);
                          if (::chown(f.c_str(), -1, kTeam) != 0) return err("chgrp team", f);
                          return "";
                      }),
              "");
    EXPECT_EQ(attrs(f), "00644 1001:1003");
    EXPECT_EQ(as_user(kBob, {kTeam},
                      [&]() -> std::string {
                          if (::chown(f.c_str(), -1, kBob) == 0 || errno != EPERM)
                              return "changed the group of another user's file";
                          if (::chmod(f.c_str(), 0666) == 0 || errno != EPERM)
                              return "chmod of another user's file";
                          return "";
                      }),
              "");
    ASSERT_EQ(::chown(f.c_str(), kBob, kBob), 0);
    EXPECT_EQ(attrs(f), "00644 1002:1002");
    EXPECT_EQ(attrs(real_shared / "f"), "00644 1002:1002");
}

// A model a user saves through a root mount stays that user's plain file (a stored model would
// be the mount's, with the user's mode: a 0600 one lost to its maker), and says why.
TEST_F(SharedMountTest, AUsersModelStaysTheirs) {
    const stdfs::path lora = mnt / "a1111" / "Lora";
    ASSERT_EQ(::chmod(lora.c_str(), 01777), 0) << std::strerror(errno);
    const stdfs::path mine = lora / "alice.safetensors";
    write_safetensors(dir / "lora.safetensors", kohya_lora(3));
    const std::string bytes = read_file(dir / "lora.safetensors");
    EXPECT_EQ(as_user(kAlice, {}, [&] { return make_file(mine, 0600, bytes); }), "");
    const stdfs::path real = store / "views" / "a1111" / "Lora" / "alice.safetensors";
    std::string why;
    EXPECT_TRUE(eventually([&] {
        char buf[512];
        const ssize_t n = ::getxattr(real.c_str(), "user.modelfs.plain", buf, sizeof buf);
        why = n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : "";
        return why.find("uid 1001") != std::string::npos;
    })) << why;
    EXPECT_NE(run_modelfs({"--store", store.string(), "show", "lora/alice"}).exit_code, 0);
    EXPECT_EQ(attrs(mine), "00600 1001:1001");
    EXPECT_EQ(as_user(kAlice, {},
                      [&]() -> std::string {
                          if (read_file(mine) != bytes) return "cannot read it back";
                          if (::unlink(mine.c_str()) != 0) return err("unlink", mine);
                          return "";
                      }),
              "");
}

// Another mount of the store (or anything with the store's rights) swaps a user's folder in
// views/ for a link while this mount's kernel still knows the folder: whatever the user then asks
// this root daemon to do in it (create, mkdir, list, read, unlink, chmod, rename), it never does
// through the link. (Once the kernel looks the name up again it follows the link itself, as the
// user: also refused here. Either way nothing outside changes.)
TEST_F(SharedMountTest, AFolderSwappedForALinkIsNeverFollowed) {
    const stdfs::path outside = dir / "outside";  // root's, out of the users' reach
    stdfs::create_directories(outside / "y");
    stdfs::permissions(outside, stdfs::perms::owner_all);
    write_text_file(outside / "y" / "victim", "root's");
    ASSERT_EQ(::chmod((outside / "y" / "victim").c_str(), 0644), 0);
    EXPECT_EQ(as_user(kAlice, {},
                      [&]() -> std::string {
                          for (const stdfs::path& d : {shared / "x", shared / "x" / "y"})
                              if (::mkdir(d.c_str(), 0755) != 0) return err("mkdir", d);
                          return make_file(shared / "x" / "y" / "mine", 0644, "alice's");
                      }),
              "");
    struct stat st;
    ASSERT_EQ(::stat((shared / "x" / "y" / "mine").c_str(), &st), 0);  // the kernel knows x/y
    stdfs::rename(real_shared / "x", real_shared / "x2");
    stdfs::create_directory_symlink(outside, real_shared / "x");
    const stdfs::path y = shared / "x" / "y";
    const std::string r = as_user(kAlice, {}, [&]() -> std::string {
        std::string done;
        int fd = ::open((y / "planted").c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
        if (fd >= 0) {
            ::close(fd);
            done += "created; ";
        }
        if (::mkdir((y / "d").c_str(), 0755) == 0) done += "mkdir; ";
        std::error_code ec;
        for (const auto& entry : stdfs::directory_iterator(y, ec))
            if (entry.path().filename() == "victim") done += "listed; ";
        if (int rfd = ::open((y / "victim").c_str(), O_RDONLY | O_CLOEXEC); rfd >= 0) {
            char c;
            if (::read(rfd, &c, 1) == 1) done += "read; ";
            ::close(rfd);
        }
        if (::unlink((y / "victim").c_str()) == 0) done += "unlinked; ";
        if (::chmod((y / "mine").c_str(), 0600) == 0) done += "chmod; ";
        if (::rename((y / "mine").c_str(), (y / "moved").c_str()) == 0) done += "renamed; ";
        return done;
    });
    EXPECT_EQ(r, "");
    EXPECT_FALSE(stdfs::exists(outside / "y" / "planted"));
    EXPECT_FALSE(stdfs::exists(outside / "y" / "d"));
    EXPECT_EQ(read_file(outside / "y" / "victim"), "root's");
    EXPECT_EQ(attrs(outside / "y" / "victim"), "00644 0:0");
}

// chmod and chown of a folder that is there because of the catalog take effect, and last: they
// are what lets root give users a model folder to save in. A folder a model was stored into
// keeps its mode too. A stored model keeps its one owner.
TEST_F(SharedMountTest, ChmodOfACataloguedFolderTakesEffect) {
    const stdfs::path lora = mnt / "a1111" / "Lora";
    ASSERT_EQ(mode_of(lora), 0755u);
    ASSERT_EQ(::chmod(lora.c_str(), 0750), 0) << std::strerror(errno);
    ASSERT_EQ(::chown(lora.c_str(), -1, kTeam), 0) << std::strerror(errno);
    EXPECT_EQ(attrs(lora), "00750 0:1003");
    // A user outside the group is kept out by the mode the mount now shows.
    EXPECT_EQ(as_user(kAlice, {},
                      [&]() -> std::string {
                          std::error_code ec;
                          return stdfs::exists(lora / "style.safetensors", ec)
                                     ? "reached into a folder its mode keeps it out of"
                                     : "";
                      }),
              "");
    // A folder made for users in the model folder keeps its mode once a model is stored there.
    const stdfs::path team = lora / "team";
    ASSERT_EQ(::mkdir(team.c_str(), 0755), 0);
    ASSERT_EQ(::chmod(team.c_str(), 01777), 0);
    write_safetensors(team / "mine.safetensors", kohya_lora(2));
    ASSERT_TRUE(eventually([&] {
        return run_modelfs({"--store", store.string(), "show", "lora/team/mine"}).exit_code == 0;
    }));
    EXPECT_EQ(mode_of(team), 01777u);
    remount();
    EXPECT_EQ(attrs(lora), "00750 0:1003");
    EXPECT_EQ(mode_of(team), 01777u);
    // A stored model: its mode is kept in the catalog; its owner is the mount's.
    const stdfs::path model = lora / "style.safetensors";
    ASSERT_EQ(::chmod(model.c_str(), 0640), 0) << std::strerror(errno);
    EXPECT_EQ(mode_of(model), 0640u);
    EXPECT_NE(::chown(model.c_str(), kAlice, -1), 0);
    EXPECT_EQ(errno, EPERM);
}

// The store's folders are its owner's (and its group's where the store's folder lets the group
// in): no other user reaches blobs, downloads or the catalog by a path outside the mount, and
// nobody but the owner reaches views/.
TEST_F(SharedMountTest, StoreFoldersAreTheOwnersOnly) {
    for (const char* name : {"views", "blobs", "staging", "quarantine", "catalog"})
        EXPECT_EQ(mode_of(store / name) & 0007, 0u) << name;
    EXPECT_EQ(mode_of(store / "views"), 0700u);
    EXPECT_EQ(as_user(kAlice, {kTeam},
                      [&]() -> std::string {
                          for (const char* name : {"views", "blobs", "catalog"}) {
                              struct stat st;
                              const stdfs::path inside = store / name / ".";
                              if (::stat(inside.c_str(), &st) == 0)
                                  return std::string("reached ") + name;
                          }
                          return "";
                      }),
              "");
    // A store its group may read (the .deb's /var/lib/modelfs, whose folders the store's user
    // and group made): the group reaches the blobs, never views/.
    mount.reset();
    for (const stdfs::path& p : {store, store / "blobs", store / "views"})
        ASSERT_EQ(::chown(p.c_str(), 0, kTeam), 0);
    ASSERT_EQ(::chmod(store.c_str(), 0750), 0);
    remount();
    EXPECT_EQ(mode_of(store / "blobs"), 0750u);
    EXPECT_EQ(mode_of(store / "views"), 0700u);
    EXPECT_EQ(as_user(kAlice, {kTeam},
                      [&]() -> std::string {
                          struct stat st;
                          if (::stat((store / "blobs" / ".").c_str(), &st) != 0)
                              return err("stat", store / "blobs");
                          if (::stat((store / "views" / ".").c_str(), &st) == 0)
                              return "reached views/";
                          return "";
                      }),
              "");
}

}  // namespace
