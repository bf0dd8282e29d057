// Versions as path aliases on real FUSE mounts: NAME@LABEL.EXT in every view, `.versions/`
// browsing, content-id prefixes, versions written through the mount, rollback and pins seen by
// an open mount, lock files, and aliases refusing writes.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <set>
#include <sstream>
#include <thread>

#include "modelfs/fs/mount.h"
#include "modelfs/fs/view_tree.h"
#include "modelfs/store/errors.h"
#include "modelfs/store/hash.h"
#include "modelfs/store/lock_file.h"
#include "modelfs/store/store.h"
#include "support/catalog_builders.h"
#include "support/mount_fixture.h"
#include "support/safetensors_writer.h"
#include "support/test_env.h"

namespace stdfs = std::filesystem;
using namespace modelfs::testing;
using namespace std::chrono_literals;

namespace {

// SHA-256 hex of a file, or "<error>" when it cannot be read.
std::string sha_or_error(const stdfs::path& p) {
    std::error_code ec;
    if (!stdfs::is_regular_file(p, ec)) return "<" + p.filename().string() + " missing>";
    return sha256_hex_of_file(p);
}

std::set<std::string> names_in(const stdfs::path& dir) {
    std::set<std::string> out;
    for (const auto& e : stdfs::directory_iterator(dir)) out.insert(e.path().filename().string());
    return out;
}

// SHA-256 of everything an open descriptor reads from offset 0.
std::string sha_of_fd(int fd) {
    modelfs::Sha256Hasher h;
    std::vector<char> buf(1 << 16);
    off_t off = 0;
    for (ssize_t n; (n = ::pread(fd, buf.data(), buf.size(), off)) > 0; off += n)
        h.update(buf.data(), static_cast<std::size_t>(n));
    return h.finish().hex();
}

// A mount served by modelfs::fs::serve_mount in a forked child, for options the command line
// does not reach (layouts built in the test, a LockFile). Unmounted and reaped on destruction,
// whatever happened; the daemon's log is printed when the test failed.
class ForkedMount {
  public:
    explicit ForkedMount(modelfs::fs::MountOptions opts) : mnt_(opts.mountpoint) {
        stdfs::create_directories(mnt_);
        log_ = mnt_.parent_path() / (mnt_.filename().string() + ".log");
        opts.foreground = true;
        pid_ = ::fork();
        if (pid_ == 0) {
            int fd = ::open(log_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
            if (fd >= 0) {
                ::dup2(fd, 1);
                ::dup2(fd, 2);
            }
            int rc = 1;
            try {
                rc = modelfs::fs::serve_mount(opts);
            } catch (const std::exception& e) {
                std::fprintf(stderr, "serve_mount: %s\n", e.what());
            }
            std::fflush(nullptr);
            ::_exit(rc);
        }
        for (int i = 0; i < 200 && pid_ > 0 && !is_mounted(mnt_); ++i)
            std::this_thread::sleep_for(25ms);
        ok_ = pid_ > 0 && is_mounted(mnt_);
    }
    ~ForkedMount() {
        if (pid_ > 0) {
            if (is_mounted(mnt_)) run_program("/bin/fusermount3", {"-u", mnt_.string()});
            for (int i = 0; i < 100 && is_mounted(mnt_); ++i) std::this_thread::sleep_for(20ms);
            if (is_mounted(mnt_)) ::umount2(mnt_.c_str(), MNT_DETACH);
            bool reaped = false;
            for (int i = 0; i < 100 && !reaped; ++i) {
                int st = 0;
                reaped = ::waitpid(pid_, &st, WNOHANG) == pid_;
                if (!reaped) std::this_thread::sleep_for(20ms);
            }
            if (!reaped) {
                ::kill(pid_, SIGKILL);
                wait_child(pid_);
            }
        }
        print_log_if_failed(log_);
    }
    ForkedMount(const ForkedMount&) = delete;
    ForkedMount& operator=(const ForkedMount&) = delete;
    bool ok() const { return ok_; }
    const stdfs::path& log() const { return log_; }

  private:
    stdfs::path mnt_, log_;
    pid_t pid_ = -1;
    bool ok_ = false;
};

// A store with two versions of a checkpoint (v1, then "fp16", current) and of a LoRA in a
// sub-folder (v1, then v2, current), imported with the CLI.
class VersionsMount : public StoreMountTest {
  protected:
    VersionsMount() : StoreMountTest("modelfs-versions") {}
    std::string base1, base2, style1, style2;  // SHA-256 of each version

    void SetUp() override {
        StoreMountTest::SetUp();
        if (IsSkipped() || HasFatalFailure()) return;
        base1 = import_one("one", "checkpoints/base.safetensors", sd15_checkpoint(1), "v1");
        style1 = import_one("one", "loras/sdxl/style.safetensors", kohya_lora(1), "v1");
        base2 = import_one("two", "checkpoints/base.safetensors", sd15_checkpoint(2), "fp16");
        style2 = import_one("two", "loras/sdxl/style.safetensors", kohya_lora(2), "v2");
        ASSERT_NE(base1, base2);
    }

    // Writes a model under src-<tag>/ and imports that folder with a version label.
    std::string import_one(const std::string& tag, const std::string& rel, SafetensorsSpec spec,
                           const std::string& label) {
        stdfs::path root = dir / ("src-" + tag + "-" + label);
        stdfs::path p = root / rel;
        stdfs::create_directories(p.parent_path());
        write_safetensors(p, spec);
        CliResult r =
            run_modelfs({"--store", store.string(), "import", root.string(), "--version", label});
        EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
        return sha256_hex_of_file(p);
    }

    modelfs::fs::MountOptions options() const {
        modelfs::fs::MountOptions o;
        o.store = store;
        o.mountpoint = mnt;
        return o;
    }
};

// The folder a built-in view shows checkpoints in.
std::string checkpoints_of(const std::string& view) {
    auto f = layout(view).folder_for(modelfs::Category::checkpoint);
    return f ? *f : "";
}

TEST_F(VersionsMount, AliasesResolveInEveryBuiltInView) {
    Mount m(store, mnt);
    ASSERT_TRUE(m.ok());
    int views = 0;
    for (const auto& view : modelfs::layouts::ViewLayout::builtin_names()) {
        const std::string folder = checkpoints_of(view);
        if (folder.empty()) continue;
        ++views;
        SCOPED_TRACE(view);
        stdfs::path d = mnt / view / folder;
        EXPECT_EQ(sha_or_error(d / "base.safetensors"), base2);  // the current version
        EXPECT_EQ(sha_or_error(d / "base@v1.safetensors"), base1);
        EXPECT_EQ(sha_or_error(d / "base@fp16.safetensors"), base2);
        EXPECT_FALSE(stdfs::exists(d / "base@v9.safetensors"));
        EXPECT_FALSE(stdfs::exists(d / "base@v1.ckpt"));  // no such version with that extension
        if (auto lf = layout(view).folder_for(modelfs::Category::lora)) {
            EXPECT_EQ(sha_or_error(mnt / view / *lf / "sdxl" / "style@v1.safetensors"), style1);
            EXPECT_EQ(sha_or_error(mnt / view / *lf / "sdxl" / "style@v2.safetensors"), style2);
        }
    }
    // Every built-in tool has a checkpoints folder; a view that lost it would skip the checks
    // above.
    EXPECT_EQ(views, static_cast<int>(modelfs::layouts::ViewLayout::builtin_names().size()));
    // An alias is its own file: another inode than the current version's name.
    struct stat a, b;
    ASSERT_EQ(::stat((mnt / "comfyui/checkpoints/base@v1.safetensors").c_str(), &a), 0);
    ASSERT_EQ(::stat((mnt / "comfyui/checkpoints/base.safetensors").c_str(), &b), 0);
    EXPECT_NE(a.st_ino, b.st_ino);
    EXPECT_EQ(static_cast<std::uintmax_t>(a.st_size),
              stdfs::file_size(dir / "src-one-v1/checkpoints/base.safetensors"));
    EXPECT_EQ(a.st_mode & 0222, 0u) << "aliases look read-only";
}

TEST_F(VersionsMount, AliasesInSingleViewMode) {
    Mount m(store, mnt, {"--view", "a1111"});
    ASSERT_TRUE(m.ok());
    EXPECT_EQ(sha_or_error(mnt / "Stable-diffusion" / "base@v1.safetensors"), base1);
    EXPECT_EQ(sha_or_error(mnt / "Lora" / "sdxl" / "style@v1.safetensors"), style1);
    EXPECT_EQ(names_in(mnt / "Lora" / ".versions" / "sdxl" / "style"),
              (std::set<std::string>{"v1.safetensors", "v2.safetensors"}));
}

TEST_F(VersionsMount, AliasesAreHiddenFromListingsByDefault) {
    Mount m(store, mnt);
    ASSERT_TRUE(m.ok());
    EXPECT_EQ(names_in(mnt / "comfyui" / "checkpoints"),
              (std::set<std::string>{"base.safetensors"}));
    EXPECT_EQ(names_in(mnt / "comfyui" / "loras" / "sdxl"),
              (std::set<std::string>{"style.safetensors"}));
    // A recursive walk (what tools do) finds one file per model.
    int files = 0;
    for (const auto& e : stdfs::recursive_directory_iterator(mnt / "a1111"))
        if (e.is_regular_file()) ++files;
    EXPECT_EQ(files, 2);
    // Yet lookups find them.
    EXPECT_TRUE(stdfs::is_regular_file(mnt / "comfyui" / "checkpoints" / "base@v1.safetensors"));
    EXPECT_TRUE(stdfs::is_directory(mnt / "comfyui" / "checkpoints" / ".versions"));
}

TEST_F(VersionsMount, ShowVersionsListsAliasesButNotTheVersionsFolder) {
    auto o = options();
    auto comfy = layout("comfyui");
    comfy.set_show_versions(true);
    o.layouts.push_back(comfy);
    ForkedMount m(o);
    ASSERT_TRUE(m.ok());
    EXPECT_EQ(names_in(mnt / "comfyui" / "checkpoints"),
              (std::set<std::string>{"base.safetensors", "base@v1.safetensors",
                                     "base@fp16.safetensors"}));
    EXPECT_EQ(names_in(mnt / "comfyui" / "loras" / "sdxl"),
              (std::set<std::string>{"style.safetensors", "style@v1.safetensors",
                                     "style@v2.safetensors"}));
    EXPECT_EQ(sha_or_error(mnt / "comfyui" / "checkpoints" / "base@v1.safetensors"), base1);
    // Other views keep their default.
    EXPECT_EQ(names_in(mnt / "a1111" / "Stable-diffusion"),
              (std::set<std::string>{"base.safetensors"}));
}

TEST_F(VersionsMount, VersionsFolderListsEveryVersion) {
    Mount m(store, mnt);
    ASSERT_TRUE(m.ok());
    stdfs::path v = mnt / "comfyui" / "loras" / ".versions";
    EXPECT_EQ(names_in(v), (std::set<std::string>{"sdxl"}));
    EXPECT_EQ(names_in(v / "sdxl"), (std::set<std::string>{"style"}));
    EXPECT_EQ(names_in(v / "sdxl" / "style"),
              (std::set<std::string>{"v1.safetensors", "v2.safetensors"}));
    EXPECT_EQ(sha_or_error(v / "sdxl" / "style" / "v1.safetensors"), style1);
    EXPECT_EQ(sha_or_error(v / "sdxl" / "style" / "v2.safetensors"), style2);
    stdfs::path cv = mnt / "a1111" / "Stable-diffusion" / ".versions" / "base";
    EXPECT_EQ(names_in(cv), (std::set<std::string>{"v1.safetensors", "fp16.safetensors"}));
    EXPECT_EQ(sha_or_error(cv / "fp16.safetensors"), base2);
    EXPECT_FALSE(stdfs::exists(cv / "v3.safetensors"));
    EXPECT_FALSE(stdfs::exists(mnt / "comfyui" / "loras" / ".versions" / "nope"));
}

TEST_F(VersionsMount, UniqueHashPrefixWorksAsALabel) {
    Mount m(store, mnt);
    ASSERT_TRUE(m.ok());
    stdfs::path d = mnt / "comfyui" / "checkpoints";
    EXPECT_EQ(sha_or_error(d / ("base@" + base1.substr(0, 8) + ".safetensors")), base1);
    EXPECT_EQ(sha_or_error(d / ("base@" + base2.substr(0, 12) + ".safetensors")), base2);
    EXPECT_EQ(sha_or_error(d / ".versions" / "base" / (base1.substr(0, 10) + ".safetensors")),
              base1);
    // Too short to be a prefix (find_version wants 6 hex digits), or matching nothing.
    EXPECT_FALSE(stdfs::exists(d / ("base@" + base1.substr(0, 3) + ".safetensors")));
    std::string other = base1.substr(0, 7);
    other[6] = other[6] == '0' ? '1' : '0';
    if (!base2.starts_with(other)) {
        EXPECT_FALSE(stdfs::exists(d / ("base@" + other + ".safetensors")));
    }
}

TEST_F(VersionsMount, VersionWrittenThroughTheMountIsReachableAsAlias) {
    Mount m(store, mnt);
    ASSERT_TRUE(m.ok());
    stdfs::path src = dir / "new.safetensors";
    write_safetensors(src, sd15_checkpoint(3));
    const std::string base3 = sha256_hex_of_file(src);
    stdfs::path f = mnt / "comfyui" / "checkpoints" / "base.safetensors";
    {
        std::string data = read_file(src);
        int w = ::open(f.c_str(), O_WRONLY | O_TRUNC);
        ASSERT_GE(w, 0) << std::strerror(errno);
        ASSERT_EQ(::write(w, data.data(), data.size()), static_cast<ssize_t>(data.size()));
        ASSERT_EQ(::close(w), 0);
    }
    // Once stored, the new bytes have a version folder entry of their own, and the two
    // earlier versions are still there under their labels.
    stdfs::path versions = mnt / "fooocus" / checkpoints_of("fooocus") / ".versions" / "base";
    ASSERT_TRUE(eventually([&] { return names_in(versions).size() == 3; }))
        << "versions: " << names_in(versions).size();
    EXPECT_EQ(sha_or_error(f), base3);
    stdfs::path d = mnt / "a1111" / "Stable-diffusion";
    EXPECT_EQ(sha_or_error(d / "base@v1.safetensors"), base1);
    EXPECT_EQ(sha_or_error(d / "base@fp16.safetensors"), base2);
    EXPECT_EQ(sha_or_error(d / ("base@" + base3.substr(0, 8) + ".safetensors")), base3);
    std::set<std::string> labels = names_in(versions);
    labels.erase("v1.safetensors");
    labels.erase("fp16.safetensors");
    ASSERT_EQ(labels.size(), 1u);
    EXPECT_EQ(sha_or_error(versions / *labels.begin()), base3);
    const std::string label = labels.begin()->substr(0, labels.begin()->find('.'));
    EXPECT_EQ(sha_or_error(d / ("base@" + label + ".safetensors")), base3);
}

TEST_F(VersionsMount, RollbackIsSeenByAnOpenMountWhileOpenFilesKeepTheirBytes) {
    Mount m(store, mnt);
    ASSERT_TRUE(m.ok());
    stdfs::path f = mnt / "comfyui" / "checkpoints" / "base.safetensors";
    ASSERT_EQ(sha_or_error(f), base2);
    int old_fd = ::open(f.c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(old_fd, 0);
    {
        modelfs::Store s = modelfs::Store::open(store);
        auto change = s.use_version("checkpoint/base.safetensors", "v1");
        EXPECT_TRUE(change.changed);
    }
    EXPECT_TRUE(eventually([&] { return sha_or_error(f) == base1; }));
    EXPECT_EQ(sha_or_error(mnt / "a1111" / "Stable-diffusion" / "base.safetensors"), base1);
    // The descriptor opened before keeps reading the version it opened, to the end.
    EXPECT_EQ(sha_of_fd(old_fd), base2);
    ::close(old_fd);
    // The aliases do not move.
    EXPECT_EQ(sha_or_error(mnt / "comfyui" / "checkpoints" / "base@fp16.safetensors"), base2);

    {
        modelfs::Store s = modelfs::Store::open(store);
        auto change = s.rollback("checkpoint/base.safetensors");
        EXPECT_EQ(change.to_label, "fp16");
    }
    EXPECT_TRUE(eventually([&] { return sha_or_error(f) == base2; }));
}

TEST_F(VersionsMount, PinAndUnpinAreSeenPerView) {
    Mount m(store, mnt);
    ASSERT_TRUE(m.ok());
    stdfs::path a1111 = mnt / "a1111" / "Stable-diffusion" / "base.safetensors";
    stdfs::path comfy = mnt / "comfyui" / "checkpoints" / "base.safetensors";
    ASSERT_EQ(sha_or_error(a1111), base2);
    int old_fd = ::open(a1111.c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(old_fd, 0);
    {
        modelfs::Store s = modelfs::Store::open(store);
        s.pin("checkpoint/base.safetensors", "v1", "a1111");
    }
    EXPECT_TRUE(eventually([&] { return sha_or_error(a1111) == base1; }));
    EXPECT_EQ(sha_or_error(comfy), base2) << "a pin holds for its own view only";
    EXPECT_EQ(sha_of_fd(old_fd), base2);
    ::close(old_fd);
    {
        modelfs::Store s = modelfs::Store::open(store);
        EXPECT_TRUE(s.unpin("checkpoint/base.safetensors", "a1111"));
    }
    EXPECT_TRUE(eventually([&] { return sha_or_error(a1111) == base2; }));
}

// The mtime a stat through the mount shows, in nanoseconds; -1 when it cannot be read.
std::int64_t mtime_ns(const stdfs::path& p) {
    struct stat st {};
    if (::stat(p.c_str(), &st) != 0) return -1;
    return st.st_mtim.tv_sec * 1'000'000'000ll + st.st_mtim.tv_nsec;
}

// Issue 16: `use` showed the older version's own mtime, so A1111 and Forge, which re-hash a file
// only when its mtime is newer than the one they cached, kept the old hash. Every switch (use,
// rollback, a pin and an unpin of that view, a new version) shows an mtime newer than every one
// shown before; without a switch the mtime stays, across stats and a remount.
TEST_F(VersionsMount, EverySwitchShowsANewerMtimeAndNothingElseMovesIt) {
    auto m = std::make_unique<Mount>(store, mnt);
    ASSERT_TRUE(m->ok());
    const stdfs::path f = mnt / "comfyui" / "checkpoints" / "base.safetensors";
    std::int64_t newest = mtime_ns(f);
    ASSERT_GT(newest, 0);
    std::string base3;
    const std::vector<std::pair<std::string, std::function<void()>>> switches = {
        {"use base@v1",
         [&] {
             ASSERT_EQ(run_modelfs({"--store", store.string(), "use", "base@v1"}).exit_code, 0);
         }},
        {"rollback",
         [&] {
             ASSERT_EQ(run_modelfs({"--store", store.string(), "rollback", "base"}).exit_code, 0);
         }},
        {"pin base@v1 --view comfyui",
         [&] {
             ASSERT_EQ(
                 run_modelfs({"--store", store.string(), "pin", "base@v1", "--view", "comfyui"})
                     .exit_code,
                 0);
         }},
        {"unpin base --view comfyui",
         [&] {
             ASSERT_EQ(
                 run_modelfs({"--store", store.string(), "unpin", "base", "--view", "comfyui"})
                     .exit_code,
                 0);
         }},
        {"import of a new version",
         [&] {
             base3 = import_one("three", "checkpoints/base.safetensors", sd15_checkpoint(3), "v3");
         }},
    };
    const std::vector<std::string> shows = {base1, base2, base1, base2, ""};
    for (std::size_t i = 0; i < switches.size(); ++i) {
        SCOPED_TRACE(switches[i].first);
        EXPECT_EQ(mtime_ns(f), newest) << "unchanged before the switch";
        switches[i].second();
        const std::string want = shows[i].empty() ? base3 : shows[i];
        EXPECT_TRUE(eventually([&] { return sha_or_error(f) == want; }));
        EXPECT_TRUE(eventually([&] { return mtime_ns(f) > newest; }))
            << mtime_ns(f) << " is not newer than " << newest;
        const std::int64_t now = mtime_ns(f);
        EXPECT_EQ(mtime_ns(f), now) << "a second stat";
        newest = std::max(newest, now);
    }
    // Remounted, the same mtime.
    EXPECT_EQ(m->stop(), 0);
    m = std::make_unique<Mount>(store, mnt);
    ASSERT_TRUE(m->ok());
    EXPECT_EQ(mtime_ns(f), newest);
    EXPECT_EQ(sha_or_error(f), base3);
}

// `touch -d` through the mount shows exactly the time set, older or newer than what was shown;
// a switch after it is newer than that too.
TEST_F(VersionsMount, TouchSetsExactlyThatMtimeAndASwitchStillMovesForward) {
    Mount m(store, mnt);
    ASSERT_TRUE(m.ok());
    const stdfs::path f = mnt / "comfyui" / "checkpoints" / "base.safetensors";
    for (const std::int64_t sec : {1609556645ll /* 2021-01-02 */, 4102444800ll /* 2100-01-01 */}) {
        SCOPED_TRACE(sec);
        const struct timespec ts[2] = {{0, UTIME_OMIT}, {sec, 0}};
        ASSERT_EQ(::utimensat(AT_FDCWD, f.c_str(), ts, 0), 0) << std::strerror(errno);
        EXPECT_TRUE(eventually([&] { return mtime_ns(f) == sec * 1'000'000'000ll; }))
            << mtime_ns(f);
        EXPECT_EQ(sha_or_error(f), base2);
    }
    const std::int64_t set = mtime_ns(f);
    ASSERT_EQ(run_modelfs({"--store", store.string(), "use", "base@v1"}).exit_code, 0);
    EXPECT_TRUE(eventually([&] { return sha_or_error(f) == base1 && mtime_ns(f) > set; }))
        << mtime_ns(f);
}

// A view with a pin shows the pinned version: `touch -d` there sets that file's mtime, and leaves
// what the other views show alone.
TEST_F(VersionsMount, TouchInAPinnedViewSetsThePinnedFilesMtime) {
    ASSERT_EQ(
        run_modelfs({"--store", store.string(), "pin", "base@v1", "--view", "comfyui"}).exit_code,
        0);
    Mount m(store, mnt);
    ASSERT_TRUE(m.ok());
    const stdfs::path pinned = mnt / "comfyui" / "checkpoints" / "base.safetensors";
    const stdfs::path other = mnt / "a1111" / checkpoints_of("a1111") / "base.safetensors";
    ASSERT_EQ(sha_or_error(pinned), base1);
    ASSERT_EQ(sha_or_error(other), base2);
    const std::int64_t other_before = mtime_ns(other);
    const std::int64_t sec = 1609556645;
    const struct timespec ts[2] = {{0, UTIME_OMIT}, {sec, 0}};
    ASSERT_EQ(::utimensat(AT_FDCWD, pinned.c_str(), ts, 0), 0) << std::strerror(errno);
    EXPECT_TRUE(eventually([&] { return mtime_ns(pinned) == sec * 1'000'000'000ll; }))
        << mtime_ns(pinned);
    EXPECT_EQ(sha_or_error(pinned), base1);
    EXPECT_EQ(mtime_ns(other), other_before) << "the current version's file was not touched";
}

TEST_F(VersionsMount, PinAppliesInSingleViewMode) {
    {
        modelfs::Store s = modelfs::Store::open(store);
        s.pin("lora/sdxl/style.safetensors", "v1", "comfyui");
    }
    Mount m(store, mnt, {"--view", "comfyui"});
    ASSERT_TRUE(m.ok());
    EXPECT_EQ(sha_or_error(mnt / "loras" / "sdxl" / "style.safetensors"), style1);
    EXPECT_EQ(sha_or_error(mnt / "checkpoints" / "base.safetensors"), base2);
}

TEST_F(VersionsMount, LockedMountShowsTheLockedVersionsWhateverIsCurrent) {
    modelfs::LockFile lock;
    {
        modelfs::Store s = modelfs::Store::open(store);
        auto txn = s.catalog().read();
        auto base = txn.get_model("checkpoint/base.safetensors");
        ASSERT_TRUE(base);
        auto v1 = modelfs::find_version(*base, "v1");
        ASSERT_TRUE(v1);
        lock.models.push_back(modelfs::lock_entry(txn, *base, *v1));
        // A model this store does not have: left out, logged, the rest still shown.
        modelfs::LockedModel ghost = lock.models.back();
        ghost.name = "ghost";
        ghost.label = "v7";
        lock.models.push_back(ghost);
    }
    auto o = options();
    o.lock = lock;
    ForkedMount m(o);
    ASSERT_TRUE(m.ok());
    for (const auto& view : modelfs::layouts::ViewLayout::builtin_names()) {
        SCOPED_TRACE(view);
        stdfs::path d = mnt / view / checkpoints_of(view);
        EXPECT_EQ(sha_or_error(d / "base.safetensors"), base1);
        EXPECT_FALSE(stdfs::exists(d / "ghost.safetensors"));
    }
    // Models the lock does not list are not shown.
    EXPECT_FALSE(stdfs::exists(mnt / "comfyui" / "loras" / "sdxl" / "style.safetensors"));
    // Changing what is current does not move a locked mount. The category folder's mtime is
    // the category's last change in the catalog: once the mount shows that, it has seen it.
    std::int64_t changed_ns = 0;
    const std::int64_t locked_mtime =
        mtime_ns(mnt / "comfyui" / "checkpoints" / "base.safetensors");
    {
        modelfs::Store s = modelfs::Store::open(store);
        s.use_version("checkpoint/base.safetensors", "v1");
        s.use_version("checkpoint/base.safetensors", "fp16");
        changed_ns = s.catalog().read().category_changed_ns(modelfs::Category::checkpoint);
    }
    stdfs::path folder = mnt / "comfyui" / "checkpoints";
    EXPECT_TRUE(eventually([&] {
        struct stat st {};
        return ::stat(folder.c_str(), &st) == 0 &&
               st.st_mtim.tv_sec * 1'000'000'000ll + st.st_mtim.tv_nsec == changed_ns;
    }));
    EXPECT_EQ(sha_or_error(folder / "base.safetensors"), base1);
    // Nor the mtime of what it shows: the switches were not switches of this mount (issue 16).
    EXPECT_EQ(mtime_ns(folder / "base.safetensors"), locked_mtime);
    EXPECT_EQ(sha_or_error(folder / "base@fp16.safetensors"), base2);
    // The missing model was told about once, however many times the tree was rebuilt.
    const std::string log = read_file(m.log());
    std::size_t told = 0;
    for (auto at = log.find("checkpoint/ghost@v7"); at != std::string::npos;
         at = log.find("checkpoint/ghost@v7", at + 1))
        ++told;
    EXPECT_EQ(told, 1u) << log;
}

TEST_F(VersionsMount, RetainAndGcSpareAVersionAnOpenMountReads) {
    Mount m(store, mnt);
    ASSERT_TRUE(m.ok());
    stdfs::path alias = mnt / "comfyui" / "checkpoints" / "base@v1.safetensors";
    int fd = ::open(alias.c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0) << std::strerror(errno);
    const stdfs::path blob = store / "blobs" / "sha256" / base1.substr(0, 2) / base1;
    {
        modelfs::Store s = modelfs::Store::open(store);
        auto kept = s.retain(1, /*dry_run=*/false);
        bool dropped_v1 = false;
        for (const auto& d : kept.dropped)
            dropped_v1 =
                dropped_v1 || (d.model_key == "checkpoint/base.safetensors" && d.label == "v1");
        EXPECT_TRUE(dropped_v1);
        auto gc = s.gc(/*dry_run=*/false);
        EXPECT_GE(gc.skipped_open, 1u);
    }
    EXPECT_TRUE(stdfs::exists(blob)) << "gc removed a blob the mount has open";
    EXPECT_EQ(sha_of_fd(fd), base1);
    // The alias goes with its version; the current version stays.
    EXPECT_TRUE(eventually([&] { return !stdfs::exists(alias); }));
    EXPECT_EQ(sha_or_error(mnt / "comfyui" / "checkpoints" / "base.safetensors"), base2);
    ::close(fd);
    // Closed (the daemon lets go of it when the kernel's release arrives), the blob is
    // nothing's any more: gc takes it.
    modelfs::Store s = modelfs::Store::open(store);
    EXPECT_TRUE(eventually([&] {
        s.gc(/*dry_run=*/false);
        return !stdfs::exists(blob);
    }));
}

TEST_F(VersionsMount, WritesToAliasesAreRefused) {
    Mount m(store, mnt);
    ASSERT_TRUE(m.ok());
    stdfs::path d = mnt / "comfyui" / "checkpoints";
    stdfs::path alias = d / "base@v1.safetensors";
    ASSERT_TRUE(stdfs::exists(alias));

    EXPECT_EQ(::open(alias.c_str(), O_WRONLY), -1);
    EXPECT_EQ(errno, EROFS);
    EXPECT_EQ(::open(alias.c_str(), O_RDWR | O_TRUNC), -1);
    EXPECT_EQ(errno, EROFS);
    EXPECT_EQ(::truncate(alias.c_str(), 0), -1);
    EXPECT_EQ(errno, EROFS);
    EXPECT_EQ(::unlink(alias.c_str()), -1);
    EXPECT_EQ(errno, EROFS);
    EXPECT_EQ(::rename(alias.c_str(), (d / "taken.safetensors").c_str()), -1);
    EXPECT_EQ(errno, EROFS);
    EXPECT_EQ(::chmod(alias.c_str(), 0666), -1);
    EXPECT_EQ(errno, EROFS);
    // Nothing may be made inside `.versions/`, nor renamed onto an alias.
    stdfs::path vdir = d / ".versions" / "base";
    EXPECT_EQ(::open((vdir / "v9.safetensors").c_str(), O_WRONLY | O_CREAT, 0644), -1);
    EXPECT_EQ(errno, EROFS);
    EXPECT_EQ(::mkdir((vdir / "x").c_str(), 0755), -1);
    EXPECT_EQ(errno, EROFS);
    EXPECT_EQ(::unlink((vdir / "v1.safetensors").c_str()), -1);
    EXPECT_EQ(errno, EROFS);
    stdfs::path other = dir / "other.safetensors";
    write_safetensors(other, sd15_checkpoint(4));
    stdfs::copy_file(other, d / "other.safetensors");
    EXPECT_EQ(::rename((d / "other.safetensors").c_str(), alias.c_str()), -1);
    EXPECT_EQ(errno, EROFS);

    // The daemon says why.
    EXPECT_NE(read_file(dir / "mnt.log").find("read-only"), std::string::npos);
    // Every version is intact.
    EXPECT_EQ(sha_or_error(alias), base1);
    EXPECT_EQ(sha_or_error(vdir / "v1.safetensors"), base1);
    EXPECT_EQ(sha_or_error(d / "base.safetensors"), base2);
}

// ---- The tree the mount serves from, on real LMDB catalogs (no mount) ------------------------

using modelfs::Category;
using modelfs::Model;
using modelfs::ModelVersion;
using modelfs::fs::Node;
using modelfs::fs::ViewTree;
using modelfs::layouts::ViewLayout;

ModelVersion file_version(const std::string& label, char fill, std::int64_t added) {
    ModelVersion v;
    v.label = label;
    v.added = added;
    v.blob = hx(fill);
    v.ext = ".safetensors";
    v.size = 100 + static_cast<std::uint64_t>(fill);
    return v;
}

ModelVersion tree_version(const std::string& label, char fill) {
    ModelVersion v;
    v.label = label;
    v.added = 1'000;
    v.tree = {{"model_index.json", hx(fill), 10},
              {"unet/diffusion_pytorch_model.safetensors", hx(static_cast<char>(fill + 1)), 20}};
    v.size = 30;
    return v;
}

class VersionTree : public ::testing::Test {
  protected:
    TempDir tmp{"modelfs-version-tree"};
    modelfs::Catalog cat = modelfs::Catalog::open(tmp / "catalog", true);
    std::vector<ViewLayout> views = {layout("comfyui"), layout("a1111")};

    void put(const Model& m) {
        modelfs::Txn w = cat.write();
        w.put_model(m);
        w.commit();
    }
    ViewTree build(const modelfs::LockFile* lock = nullptr, bool root_mode = true) {
        modelfs::Txn r = cat.read();
        return ViewTree::build(r, views, root_mode, 1, lock);
    }
    // The node a path resolves to: the tree's own, else a virtual one.
    static std::optional<Node> at(const ViewTree& t, const std::string& path) {
        if (const Node* n = t.find_path(path)) return *n;
        return t.virtual_node(path);
    }
    static std::set<std::string> listed(const ViewTree& t, const std::string& path) {
        std::set<std::string> out;
        if (const Node* n = t.find_path(path))
            for (const auto& [name, ino] : n->children) out.insert(name);
        for (const auto& n : t.virtual_children(path)) out.insert(n.name);
        return out;
    }
    Model two_versions() {
        Model m;
        m.category = Category::checkpoint;
        m.name = "sub/base.safetensors";
        m.versions = {file_version("v1", 'a', 1'000), file_version("v2", 'b', 2'000)};
        m.versions[0].sidecars = {{".preview.png", hx('c'), 5}};
        m.current = 1;
        return m;
    }
};

TEST_F(VersionTree, PinsChooseWhatEachViewShows) {
    Model m = two_versions();
    m.pins["a1111"] = "v1";
    put(m);
    ViewTree t = build();
    EXPECT_EQ(at(t, "comfyui/checkpoints/sub/base.safetensors")->blob, hx('b'));
    EXPECT_EQ(at(t, "a1111/Stable-diffusion/sub/base.safetensors")->blob, hx('a'));
    EXPECT_EQ(at(t, "a1111/Stable-diffusion/sub/base.safetensors")->version, "v1");
    EXPECT_FALSE(at(t, "a1111/Stable-diffusion/sub/base.safetensors")->read_only);
}

TEST_F(VersionTree, AliasNodesAreReadOnlyStableAndCarryTheirVersion) {
    put(two_versions());
    ViewTree t = build();
    auto n = at(t, "comfyui/checkpoints/sub/base@v1.safetensors");
    ASSERT_TRUE(n);
    EXPECT_TRUE(n->read_only);
    EXPECT_EQ(n->blob, hx('a'));
    EXPECT_EQ(n->version, "v1");
    EXPECT_EQ(n->model_key, "checkpoint/sub/base.safetensors");
    EXPECT_EQ(n->mode & 0222, 0u);
    EXPECT_EQ(n->ino, ViewTree::file_ino("comfyui/checkpoints/sub/base@v1.safetensors", hx('a')));
    EXPECT_EQ(n->mtime_ns, 1'000'000'000'000);
    // A sidecar of that version, beside its alias.
    auto sc = at(t, "comfyui/checkpoints/sub/base@v1.preview.png");
    ASSERT_TRUE(sc);
    EXPECT_EQ(sc->blob, hx('c'));
    EXPECT_EQ(sc->sidecar, ".preview.png");
    EXPECT_FALSE(at(t, "comfyui/checkpoints/sub/base@v2.preview.png"));
    // Nothing for unknown labels, other names, or paths below a file.
    EXPECT_FALSE(at(t, "comfyui/checkpoints/sub/base@v3.safetensors"));
    EXPECT_FALSE(at(t, "comfyui/checkpoints/sub/other@v1.safetensors"));
    EXPECT_FALSE(at(t, "comfyui/checkpoints/base@v1.safetensors"));
    EXPECT_FALSE(at(t, "comfyui/checkpoints/sub/base@v1.safetensors/x"));
    EXPECT_FALSE(at(t, "comfyui/loras/sub/base@v1.safetensors"));
    // The tree itself holds no alias: it costs nothing per version.
    EXPECT_EQ(t.find_path("comfyui/checkpoints/sub/base@v1.safetensors"), nullptr);
}

TEST_F(VersionTree, MultiFileVersionsAreFolders) {
    Model m;
    m.category = Category::diffusers;
    m.name = "sd15";
    m.versions = {tree_version("v1", '1'), tree_version("v2", '4')};
    m.current = 1;
    put(m);
    ViewTree t = build();
    auto d = at(t, "comfyui/diffusers/sd15@v1");
    ASSERT_TRUE(d);
    EXPECT_EQ(d->kind, Node::Kind::dir);
    EXPECT_TRUE(d->read_only);
    EXPECT_EQ(listed(t, "comfyui/diffusers/sd15@v1"),
              (std::set<std::string>{"model_index.json", "unet"}));
    auto f = at(t, "comfyui/diffusers/sd15@v1/unet/diffusion_pytorch_model.safetensors");
    ASSERT_TRUE(f);
    EXPECT_EQ(f->blob, hx('2'));
    EXPECT_EQ(at(t, "comfyui/diffusers/sd15/unet/diffusion_pytorch_model.safetensors")->blob,
              hx('5'));
    EXPECT_FALSE(at(t, "comfyui/diffusers/sd15@v1/nope"));
    EXPECT_EQ(listed(t, "comfyui/diffusers/.versions/sd15"), (std::set<std::string>{"v1", "v2"}));
    EXPECT_EQ(at(t, "comfyui/diffusers/.versions/sd15/v2/model_index.json")->blob, hx('4'));
    // A content-id prefix names a multi-file version as well.
    const std::string id = m.versions[0].content_id().hex();
    auto byid = at(t, "comfyui/diffusers/sd15@" + id.substr(0, 8) + "/model_index.json");
    ASSERT_TRUE(byid);
    EXPECT_EQ(byid->blob, hx('1'));
    // A1111 shows no diffusers folder: no aliases there either.
    EXPECT_FALSE(at(t, "a1111/Stable-diffusion/sd15@v1"));
}

TEST_F(VersionTree, VersionsFolderAndShowVersions) {
    put(two_versions());
    ViewTree hidden = build();
    EXPECT_EQ(listed(hidden, "comfyui/checkpoints/sub"),
              (std::set<std::string>{"base.safetensors"}));
    EXPECT_EQ(listed(hidden, "comfyui/checkpoints"), (std::set<std::string>{"sub"}));
    EXPECT_EQ(listed(hidden, "comfyui/checkpoints/.versions"), (std::set<std::string>{"sub"}));
    EXPECT_EQ(listed(hidden, "comfyui/checkpoints/.versions/sub/base"),
              (std::set<std::string>{"v1.safetensors", "v2.safetensors"}));
    EXPECT_FALSE(at(hidden, "comfyui/checkpoints/sub/.versions"));  // primary folders only

    views[0].set_show_versions(true);
    ViewTree shown = build();
    EXPECT_EQ(
        listed(shown, "comfyui/checkpoints/sub"),
        (std::set<std::string>{"base.safetensors", "base@v1.safetensors", "base@v2.safetensors"}));
    EXPECT_EQ(listed(shown, "comfyui/checkpoints"), (std::set<std::string>{"sub"}));
    EXPECT_EQ(listed(shown, "a1111/Stable-diffusion/sub"),
              (std::set<std::string>{"base.safetensors"}));
}

TEST_F(VersionTree, LockShowsLockedVersionsOnlyAndReportsMissingOnes) {
    Model m = two_versions();
    put(m);
    Model other = two_versions();
    other.name = "other.safetensors";
    put(other);
    modelfs::LockFile lock;
    modelfs::LockedModel locked;
    locked.category = Category::checkpoint;
    locked.name = "sub/base.safetensors";
    locked.label = "v1";
    locked.ext = ".safetensors";
    locked.content_id = hx('a');
    lock.models.push_back(locked);
    modelfs::LockedModel gone = locked;
    gone.name = "gone.safetensors";
    lock.models.push_back(gone);
    modelfs::LockedModel unknown_version = locked;
    unknown_version.name = "other.safetensors";
    unknown_version.label = "v9";
    unknown_version.content_id = hx('f');
    lock.models.push_back(unknown_version);

    ViewTree t = build(&lock);
    EXPECT_EQ(at(t, "comfyui/checkpoints/sub/base.safetensors")->blob, hx('a'));
    EXPECT_EQ(at(t, "a1111/Stable-diffusion/sub/base.safetensors")->blob, hx('a'));
    EXPECT_FALSE(at(t, "comfyui/checkpoints/other.safetensors"));
    EXPECT_EQ(std::set<std::string>(t.missing_locked().begin(), t.missing_locked().end()),
              (std::set<std::string>{"checkpoint/gone.safetensors@v1",
                                     "checkpoint/other.safetensors@v9"}));
}

// Version aliases add no nodes, so a catalog with several versions per model costs its tree
// about what a catalog with one version per model does.
TEST_F(VersionTree, ManyVersionsAddNoNodes) {
    auto fill = [&](std::size_t versions) {
        modelfs::Txn w = cat.write();
        for (int i = 0; i < 10'000; ++i) {
            Model m;
            m.category = i % 2 ? Category::lora : Category::checkpoint;
            m.name = "m" + std::to_string(i) + ".safetensors";
            for (std::size_t k = 0; k < versions; ++k)
                m.versions.push_back(file_version("v" + std::to_string(k + 1),
                                                  "0123456789abcdef"[(i + k) % 16], 1'000));
            m.current = versions - 1;
            w.put_model(m);
        }
        w.commit();
    };
    fill(1);
    const std::size_t one = build().size();
    fill(3);
    auto t0 = std::chrono::steady_clock::now();
    ViewTree t = build();
    auto ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0)
            .count();
    RecordProperty("build_ms_10k_models_3_versions", static_cast<int>(ms));
    EXPECT_EQ(t.size(), one);
    EXPECT_TRUE(at(t, "comfyui/loras/m9999@v2.safetensors"));
    EXPECT_TRUE(at(t, "a1111/Stable-diffusion/.versions/m42/v1.safetensors"));
}

TEST(ViewLayoutShowVersions, JsonKey) {
    auto j = layout("comfyui").to_json();
    EXPECT_EQ(j.at("show_versions"), false);
    j["show_versions"] = true;
    ViewLayout l = ViewLayout::from_json(j);
    EXPECT_TRUE(l.show_versions());
    EXPECT_EQ(ViewLayout::from_json(l.to_json()), l);
    j["show_versions"] = "yes";
    try {
        ViewLayout::from_json(j);
        ADD_FAILURE() << "accepted a string";
    } catch (const modelfs::StoreError& e) {
        EXPECT_EQ(e.kind(), modelfs::ErrorKind::bad_input);
        EXPECT_NE(std::string(e.what()).find("show_versions"), std::string::npos) << e.what();
    }
}

}  // namespace
