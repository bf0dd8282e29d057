// Writing through real mounts: what a tool saves lands in the store, deduplicated, and shows in
// every view; overwrites are copy-on-write; plain files stay per view; nothing survives only in
// the daemon's memory.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <mutex>
#include <set>
#include <thread>

#include <nlohmann/json.hpp>

#include "modelfs/store/hash.h"
#include "modelfs/store/unique_fd.h"
#include "support/mount_fixture.h"
#include "support/safetensors_writer.h"
#include "support/test_env.h"

namespace stdfs = std::filesystem;
using namespace modelfs::testing;
using nlohmann::json;
using namespace std::chrono_literals;

namespace {

class MountWriteTest : public StoreMountTest {
  protected:
    MountWriteTest() : StoreMountTest("modelfs-write") {}
    stdfs::path src = dir / "src";

    void SetUp() override {
        StoreMountTest::SetUp();
        if (IsSkipped() || HasFatalFailure()) return;
        import_base_checkpoint(src);
    }

    // A new safetensors file outside the mount; returns its sha256.
    std::string make(const stdfs::path& p, SafetensorsSpec spec) {
        stdfs::create_directories(p.parent_path());
        write_safetensors(p, spec);
        return sha256_hex_of_file(p);
    }
    json show(const std::string& what) {
        CliResult r = run_modelfs({"--store", store.string(), "--json", "show", what});
        EXPECT_EQ(r.exit_code, 0) << r.err;
        return r.exit_code == 0 ? json::parse(r.out) : json();
    }
    // Is the model catalogued with this content as its current version?
    bool catalogued(const std::string& key, const std::string& sha) {
        CliResult r = run_modelfs({"--store", store.string(), "--json", "show", key});
        return r.exit_code == 0 && r.out.find(sha) != std::string::npos;
    }
};

TEST_F(MountWriteTest, CopyIntoComfyUiReadFromA1111) {
    Mount m(store, mnt);
    ASSERT_TRUE(m.ok());
    std::string sha = make(dir / "new.safetensors", kohya_lora(5));
    stdfs::copy_file(dir / "new.safetensors", mnt / "comfyui" / "loras" / "new.safetensors");
    // Visible where it was written at once, and in the other tools' views once stored.
    EXPECT_EQ(sha256_hex_of_file(mnt / "comfyui" / "loras" / "new.safetensors"), sha);
    stdfs::path a1111 = mnt / "a1111" / "Lora" / "new.safetensors";
    ASSERT_TRUE(eventually([&] { return stdfs::exists(a1111); }));
    EXPECT_EQ(sha256_hex_of_file(a1111), sha);
    EXPECT_EQ(sha256_hex_of_file(mnt / "by-hash" / "sha256" / sha), sha);
    EXPECT_EQ(xattr(a1111, "user.modelfs.sha256"), sha);
    EXPECT_EQ(xattr(a1111, "user.modelfs.category"), "lora");
    EXPECT_TRUE(catalogued("lora/new", sha));
    // Stored once: the blob, and nothing left behind in the view's overlay folder.
    EXPECT_TRUE(stdfs::exists(store / "blobs" / "sha256" / sha.substr(0, 2) / sha));
    EXPECT_TRUE(eventually(
        [&] { return !stdfs::exists(store / "views" / "comfyui" / "loras" / "new.safetensors"); }));
    CliResult v = run_modelfs({"--store", store.string(), "verify"});
    EXPECT_EQ(v.exit_code, 0) << v.out << v.err;
}

// Issue 16 finding 7: a model saved into a folder the tool reads but that had no category
// (ComfyUI's style_models/) is catalogued and shows in another view with that folder (InvokeAI's
// style_model/); a Forge user's unet-only model shows in ComfyUI's diffusion_models/.
TEST_F(MountWriteTest, ModelsSavedInNewFoldersAreCataloguedAndShared) {
    Mount m(store, mnt);
    ASSERT_TRUE(m.ok());
    std::string sha = make(dir / "redux.safetensors", vae(7));
    stdfs::copy_file(dir / "redux.safetensors",
                     mnt / "comfyui" / "style_models" / "redux.safetensors");
    const stdfs::path invoke = mnt / "invokeai" / "style_model" / "redux.safetensors";
    ASSERT_TRUE(eventually([&] { return stdfs::exists(invoke); }));
    EXPECT_EQ(sha256_hex_of_file(invoke), sha);
    EXPECT_EQ(xattr(invoke, "user.modelfs.category"), "style_model");
    EXPECT_TRUE(catalogued("style_model/redux", sha));
    EXPECT_TRUE(eventually([&] {
        return !stdfs::exists(store / "views" / "comfyui" / "style_models" / "redux.safetensors");
    }));

    std::string unet = make(dir / "flux.safetensors", kohya_lora(8));
    stdfs::copy_file(dir / "flux.safetensors",
                     mnt / "forge" / "Stable-diffusion" / "diffusion_models" / "flux.safetensors");
    const stdfs::path comfy = mnt / "comfyui" / "diffusion_models" / "flux.safetensors";
    ASSERT_TRUE(eventually([&] { return stdfs::exists(comfy); }));
    EXPECT_EQ(sha256_hex_of_file(comfy), unet);
    EXPECT_TRUE(catalogued("diffusion_model/flux", unet));
    // Not a checkpoint: ComfyUI's checkpoint loader would fail on it.
    EXPECT_FALSE(
        stdfs::exists(mnt / "comfyui" / "checkpoints" / "diffusion_models" / "flux.safetensors"));
}

// Issue 16 finding 2: a file's name, extension included, is its identity in a folder. A .pt
// saved beside foo.safetensors used to become v2 of it, and the .safetensors vanished.
TEST_F(MountWriteTest, APtSavedBesideASafetensorsIsAnotherModel) {
    Mount m(store, mnt);
    ASSERT_TRUE(m.ok());
    const stdfs::path loras = mnt / "comfyui" / "loras";
    const std::string st = make(dir / "foo.safetensors", kohya_lora(11));
    stdfs::copy_file(dir / "foo.safetensors", loras / "foo.safetensors");
    ASSERT_TRUE(eventually([&] { return catalogued("lora/foo.safetensors", st); }));
    write_random_file(dir / "foo.pt", 70'000, 5);
    const std::string pt = sha256_hex_of_file(dir / "foo.pt");
    stdfs::copy_file(dir / "foo.pt", loras / "foo.pt");
    ASSERT_TRUE(eventually([&] { return catalogued("lora/foo.pt", pt); }));

    // Both listed, each with its own bytes, in every view that reads the folder.
    for (const stdfs::path& d : {loras, mnt / "a1111" / "Lora"}) {
        EXPECT_EQ(sha256_hex_of_file(d / "foo.safetensors"), st) << d;
        EXPECT_EQ(sha256_hex_of_file(d / "foo.pt"), pt) << d;
    }
    for (const auto& [key, sha] : {std::pair{std::string("lora/foo.safetensors"), st},
                                   std::pair{std::string("lora/foo.pt"), pt}}) {
        CliResult r = run_modelfs({"--store", store.string(), "--json", "versions", key});
        ASSERT_EQ(r.exit_code, 0) << r.err;
        const json j = json::parse(r.out);
        EXPECT_EQ(j["model"], key);
        ASSERT_EQ(j["versions"].size(), 1u) << r.out;
        EXPECT_EQ(j["versions"][0]["sha256"], sha);
    }
    // "foo" alone names two models: the CLI says which.
    CliResult amb = run_modelfs({"--store", store.string(), "show", "lora/foo"});
    EXPECT_NE(amb.exit_code, 0);
    EXPECT_NE(amb.err.find("give the extension"), std::string::npos) << amb.err;
}

TEST_F(MountWriteTest, SameContentInTwoViewsIsStoredOnce) {
    Mount m(store, mnt);
    ASSERT_TRUE(m.ok());
    std::string sha = make(dir / "v.safetensors", vae(6));
    stdfs::copy_file(dir / "v.safetensors", mnt / "comfyui" / "vae" / "one.safetensors");
    stdfs::copy_file(dir / "v.safetensors", mnt / "a1111" / "VAE" / "two.safetensors");
    ASSERT_TRUE(
        eventually([&] { return catalogued("vae/one", sha) && catalogued("vae/two", sha); }));
    int blobs = 0;
    for (auto& e : stdfs::recursive_directory_iterator(store / "blobs"))
        if (e.is_regular_file() && e.path().filename() == sha) ++blobs;
    EXPECT_EQ(blobs, 1);
}

TEST_F(MountWriteTest, OverwriteIsCopyOnWrite) {
    Mount m(store, mnt);
    ASSERT_TRUE(m.ok());
    stdfs::path f = mnt / "comfyui" / "checkpoints" / "base.safetensors";
    std::string old_sha = sha256_hex_of_file(src / "checkpoints" / "base.safetensors");
    std::string new_sha = make(dir / "v2.safetensors", sd15_checkpoint(2));

    // A reader opens the old content before the overwrite...
    int reader = ::open(f.c_str(), O_RDONLY);
    ASSERT_GE(reader, 0);
    std::string head(4096, '\0');
    ASSERT_EQ(::pread(reader, head.data(), head.size(), 0), 4096);
    // ...a tool overwrites the file in place (O_TRUNC, not rename)...
    {
        std::string data = read_file(dir / "v2.safetensors");
        int w = ::open(f.c_str(), O_WRONLY | O_TRUNC);
        ASSERT_GE(w, 0) << std::strerror(errno);
        ASSERT_EQ(::write(w, data.data(), data.size()), static_cast<ssize_t>(data.size()));
        ASSERT_EQ(::close(w), 0);
    }
    // ...and the reader still reads exactly the old bytes, to the end.
    modelfs::Sha256Hasher h;
    std::vector<char> buf(1 << 16);
    off_t off = 0;
    for (ssize_t n; (n = ::pread(reader, buf.data(), buf.size(), off)) > 0; off += n)
        h.update(buf.data(), static_cast<std::size_t>(n));
    ::close(reader);
    EXPECT_EQ(h.finish().hex(), old_sha);
    EXPECT_EQ(static_cast<std::uint64_t>(off),
              stdfs::file_size(src / "checkpoints" / "base.safetensors"));

    // New readers get the new bytes, in every view; the old content stays, as version v1.
    EXPECT_EQ(sha256_hex_of_file(f), new_sha);
    ASSERT_TRUE(eventually([&] { return catalogued("checkpoint/base", new_sha); }));
    EXPECT_EQ(sha256_hex_of_file(mnt / "a1111" / "Stable-diffusion" / "base.safetensors"), new_sha);
    json j = show("checkpoint/base");
    ASSERT_TRUE(j.contains("versions")) << j.dump();
    ASSERT_EQ(j["versions"].size(), 2u) << j.dump();
    EXPECT_EQ(sha256_hex_of_file(mnt / "by-hash" / "sha256" / old_sha), old_sha);
}

TEST_F(MountWriteTest, SaveByRenameReplacesTheModel) {
    Mount m(store, mnt);
    ASSERT_TRUE(m.ok());
    std::string new_sha = make(dir / "v2.safetensors", sd15_checkpoint(3));
    stdfs::path tmp = mnt / "comfyui" / "checkpoints" / "base.safetensors.part";
    stdfs::copy_file(dir / "v2.safetensors", tmp);
    stdfs::rename(tmp, mnt / "comfyui" / "checkpoints" / "base.safetensors");
    EXPECT_FALSE(stdfs::exists(tmp));
    EXPECT_EQ(sha256_hex_of_file(mnt / "comfyui" / "checkpoints" / "base.safetensors"), new_sha);
    ASSERT_TRUE(eventually([&] { return catalogued("checkpoint/base", new_sha); }));
    EXPECT_EQ(show("checkpoint/base")["versions"].size(), 2u);
}

// Linux truncates on open(O_RDONLY | O_TRUNC) when the opener may write, as on the disk beneath.
TEST_F(MountWriteTest, ReadOnlyOpenWithTruncateTruncatesAsOnDisk) {
    Mount m(store, mnt);
    ASSERT_TRUE(m.ok());
    for (const stdfs::path& base : {dir / "native", mnt / "comfyui"}) {
        stdfs::create_directories(base);
        const stdfs::path f = base / "notes.txt";
        write_text_file(f, "some notes\n");
        modelfs::UniqueFd fd(::open(f.c_str(), O_RDONLY | O_TRUNC | O_CLOEXEC));
        ASSERT_GE(fd.get(), 0) << f << ": " << std::strerror(errno);
        char c;
        EXPECT_EQ(::read(fd.get(), &c, 1), 0) << f;
        EXPECT_EQ(::write(fd.get(), "x", 1), -1) << f;  // still a read-only descriptor
        EXPECT_EQ(errno, EBADF);
        EXPECT_EQ(stdfs::file_size(f), 0u) << f;
    }
}

TEST_F(MountWriteTest, RenameDeleteMkdir) {
    Mount m(store, mnt);
    ASSERT_TRUE(m.ok());
    stdfs::path loras = mnt / "comfyui" / "loras";
    std::string sha = make(dir / "l.safetensors", kohya_lora(7));
    stdfs::create_directory(loras / "sdxl");
    EXPECT_TRUE(stdfs::is_directory(loras / "sdxl"));
    stdfs::copy_file(dir / "l.safetensors", loras / "sdxl" / "style.safetensors");
    ASSERT_TRUE(eventually([&] { return catalogued("lora/sdxl/style", sha); }));
    EXPECT_TRUE(stdfs::exists(mnt / "a1111" / "Lora" / "sdxl" / "style.safetensors"));

    // Rename a stored model: a catalog edit, seen in every view.
    stdfs::rename(loras / "sdxl" / "style.safetensors", loras / "renamed.safetensors");
    EXPECT_FALSE(stdfs::exists(loras / "sdxl" / "style.safetensors"));
    EXPECT_EQ(sha256_hex_of_file(loras / "renamed.safetensors"), sha);
    EXPECT_TRUE(catalogued("lora/renamed", sha));
    EXPECT_TRUE(eventually([&] {
        return stdfs::exists(mnt / "a1111" / "Lora" / "renamed.safetensors") &&
               !stdfs::exists(mnt / "a1111" / "Lora" / "sdxl" / "style.safetensors");
    }));
    // Into another category's folder: it becomes that category.
    stdfs::rename(loras / "renamed.safetensors", mnt / "comfyui" / "vae" / "now_vae.safetensors");
    EXPECT_TRUE(catalogued("vae/now_vae", sha));

    // Empty folders go; layout folders and non-empty folders stay.
    EXPECT_TRUE(stdfs::remove(loras / "sdxl"));
    EXPECT_FALSE(stdfs::exists(loras / "sdxl"));
    EXPECT_NE(::rmdir(loras.c_str()), 0);
    EXPECT_TRUE(errno == EBUSY || errno == ENOTEMPTY) << std::strerror(errno);

    // Delete: gone from every view and from the catalog; the blob waits for gc.
    stdfs::remove(mnt / "comfyui" / "vae" / "now_vae.safetensors");
    EXPECT_FALSE(stdfs::exists(mnt / "comfyui" / "vae" / "now_vae.safetensors"));
    EXPECT_FALSE(catalogued("vae/now_vae", sha));
    EXPECT_TRUE(
        eventually([&] { return !stdfs::exists(mnt / "a1111" / "VAE" / "now_vae.safetensors"); }));
    EXPECT_TRUE(stdfs::exists(store / "blobs" / "sha256" / sha.substr(0, 2) / sha));
    // Renaming out of the model folders is a copy (EXDEV): `mv` does it, the model survives.
    EXPECT_EQ(::rename((mnt / "comfyui" / "checkpoints" / "base.safetensors").c_str(),
                       (mnt / "comfyui" / "base.bak").c_str()),
              -1);
    EXPECT_EQ(errno, EXDEV);
    EXPECT_EQ(::rename((mnt / "comfyui" / "checkpoints" / "base.safetensors").c_str(),
                       (mnt / "a1111" / "Stable-diffusion" / "x.safetensors").c_str()),
              -1);
    EXPECT_EQ(errno, EXDEV);
}

TEST_F(MountWriteTest, SidecarsFollowTheirModel) {
    Mount m(store, mnt);
    ASSERT_TRUE(m.ok());
    stdfs::path loras = mnt / "comfyui" / "loras";
    std::string sha = make(dir / "l.safetensors", kohya_lora(8));
    // One sidecar written before its model, one after, one for the imported checkpoint.
    write_text_file(loras / "mine.civitai.info", "{\"id\": 1}");
    stdfs::copy_file(dir / "l.safetensors", loras / "mine.safetensors");
    ASSERT_TRUE(eventually([&] { return catalogued("lora/mine", sha); }));
    write_text_file(loras / "mine.preview.png", "PNG");
    write_text_file(mnt / "comfyui" / "checkpoints" / "base.yaml", "model: {}");
    stdfs::path a1111 = mnt / "a1111";
    EXPECT_TRUE(eventually([&] {
        return stdfs::exists(a1111 / "Lora" / "mine.civitai.info") &&
               stdfs::exists(a1111 / "Lora" / "mine.preview.png") &&
               stdfs::exists(a1111 / "Stable-diffusion" / "base.yaml");
    }));
    EXPECT_EQ(read_file(a1111 / "Lora" / "mine.civitai.info"), "{\"id\": 1}");
    EXPECT_EQ(read_file(a1111 / "Lora" / "mine.preview.png"), "PNG");
    EXPECT_EQ(read_file(mnt / "fooocus" / "checkpoints" / "base.yaml"), "model: {}");
    // Renaming the model takes its sidecars along.
    stdfs::rename(loras / "mine.safetensors", loras / "yours.safetensors");
    EXPECT_TRUE(stdfs::exists(loras / "yours.preview.png"));
    EXPECT_TRUE(eventually([&] { return !stdfs::exists(loras / "mine.preview.png"); }, 1000ms));
    // A file that is nobody's sidecar stays where it was written.
    write_text_file(loras / "orphan.txt", "x");
    std::this_thread::sleep_for(300ms);
    EXPECT_TRUE(stdfs::exists(loras / "orphan.txt"));
    EXPECT_FALSE(stdfs::exists(a1111 / "Lora" / "orphan.txt"));
}

TEST_F(MountWriteTest, PlainFilesStayInTheirViewAndSurviveRemounts) {
    std::string sha = make(dir / "u.safetensors", vae(9));
    {
        Mount m(store, mnt);
        ASSERT_TRUE(m.ok());
        stdfs::create_directories(mnt / "comfyui" / "configs" / "sub");
        write_text_file(mnt / "comfyui" / "configs" / "sub" / "v1.yaml", "a: 1\n");
        write_text_file(mnt / "comfyui" / "loras" / "notes.md", "mine\n");
        stdfs::copy_file(dir / "u.safetensors", mnt / "comfyui" / "vae" / "kept.safetensors");
        EXPECT_FALSE(stdfs::exists(mnt / "a1111" / "notes.md"));
        EXPECT_EQ(m.stop(), 0);
    }
    Mount m(store, mnt, {"--view", "comfyui"});
    ASSERT_TRUE(m.ok());
    EXPECT_EQ(read_file(mnt / "configs" / "sub" / "v1.yaml"), "a: 1\n");
    EXPECT_EQ(read_file(mnt / "loras" / "notes.md"), "mine\n");
    EXPECT_EQ(sha256_hex_of_file(mnt / "vae" / "kept.safetensors"), sha);
    EXPECT_TRUE(eventually([&] { return catalogued("vae/kept", sha); }));
}

TEST_F(MountWriteTest, FilesLeftByADeadDaemonAreStoredAtTheNextMount) {
    // What a killed daemon leaves: a finished model file in the view's overlay folder.
    std::string sha =
        make(store / "views" / "comfyui" / "loras" / "late.safetensors", kohya_lora(10));
    Mount m(store, mnt);
    ASSERT_TRUE(m.ok());
    EXPECT_TRUE(eventually([&] { return catalogued("lora/late", sha); }));
    EXPECT_EQ(sha256_hex_of_file(mnt / "fooocus" / "loras" / "late.safetensors"), sha);
}

TEST_F(MountWriteTest, WriteRacingAReadOfTheSameName) {
    Mount m(store, mnt);
    ASSERT_TRUE(m.ok());
    // Versions a tool keeps saving (write a temp file, rename over), while readers read the name:
    // every read sees one whole version, never a mix or a short file.
    std::vector<std::string> data;
    std::set<std::string> shas;
    for (int i = 0; i < 4; ++i) {
        make(dir / ("r" + std::to_string(i)), kohya_lora(20 + i));
        data.push_back(read_file(dir / ("r" + std::to_string(i))));
        shas.insert(modelfs::sha256_of(data.back()).hex());
    }
    stdfs::path target = mnt / "comfyui" / "loras" / "race.safetensors";
    stdfs::copy_file(dir / "r0", target);
    std::atomic<bool> stop{false};
    std::atomic<int> bad{0}, reads{0};
    std::mutex bad_mu;
    std::string bad_example;
    std::vector<std::thread> readers;
    for (int t = 0; t < 4; ++t)
        readers.emplace_back([&] {
            while (!stop) {
                int fd = ::open(target.c_str(), O_RDONLY);
                if (fd < 0) continue;  // between unlink and rename a name may briefly be missing
                struct stat st {};
                ::fstat(fd, &st);
                std::string got;
                char buf[8192];
                for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) got.append(buf, n);
                ::close(fd);
                if (!shas.count(modelfs::sha256_of(got).hex())) {
                    ++bad;
                    std::lock_guard lk(bad_mu);
                    bad_example = std::to_string(got.size()) + " bytes from inode " +
                                  std::to_string(st.st_ino) + " of size " +
                                  std::to_string(st.st_size);
                }
                ++reads;
            }
        });
    for (int round = 0; round < 12; ++round) {
        stdfs::path tmp = mnt / "comfyui" / "loras" / ".race.tmp";
        write_text_file(tmp, data[static_cast<std::size_t>(round % 4)]);
        stdfs::rename(tmp, target);
        std::this_thread::sleep_for(30ms);
    }
    stop = true;
    for (auto& r : readers) r.join();
    EXPECT_GT(reads.load(), 0);
    EXPECT_EQ(bad.load(), 0) << "reads that matched no saved version, e.g. " << bad_example;
    EXPECT_TRUE(eventually([&] {
        return catalogued("lora/race", *shas.begin()) || show("lora/race").contains("versions");
    }));
}

TEST_F(MountWriteTest, BadNamesAndReadOnlyPlacesAreRefused) {
    Mount m(store, mnt);
    ASSERT_TRUE(m.ok());
    std::string long_name(NAME_MAX + 1, 'a');
    int fd = ::open((mnt / "comfyui" / "loras" / long_name).c_str(), O_CREAT | O_WRONLY, 0644);
    EXPECT_EQ(fd, -1);
    EXPECT_EQ(errno, ENAMETOOLONG);
    std::string max_name(NAME_MAX, 'b');
    stdfs::create_directory(mnt / "comfyui" / "custom");
    fd = ::open((mnt / "comfyui" / "custom" / max_name).c_str(), O_CREAT | O_WRONLY, 0644);
    EXPECT_GE(fd, 0) << std::strerror(errno);
    if (fd >= 0) ::close(fd);
    fd = ::open((mnt / "by-hash" / "sha256" / "x").c_str(), O_CREAT | O_WRONLY, 0644);
    EXPECT_EQ(fd, -1);
    EXPECT_EQ(errno, EROFS);
    EXPECT_NE(::mkdir((mnt / "newtool").c_str(), 0755), 0);
    EXPECT_EQ(errno, EPERM);
    std::string sha = sha256_hex_of_file(src / "checkpoints" / "base.safetensors");
    fd = ::open((mnt / "by-hash" / "sha256" / sha).c_str(), O_WRONLY);
    EXPECT_EQ(fd, -1);
    EXPECT_TRUE(errno == EROFS || errno == EACCES) << std::strerror(errno);
    // A name the catalog refuses ('@' is for version labels) stays a plain file, readable.
    std::string lsha = make(dir / "at.safetensors", kohya_lora(11));
    stdfs::copy_file(dir / "at.safetensors", mnt / "comfyui" / "loras" / "a@b.safetensors");
    std::this_thread::sleep_for(300ms);
    EXPECT_EQ(sha256_hex_of_file(mnt / "comfyui" / "loras" / "a@b.safetensors"), lsha);
    EXPECT_EQ(::kill(m.pid(), 0), 0);
}

// What the catalog refuses reaches the tool as what it is, not as an I/O error: renaming a stored
// model to a name the catalog does not take is EINVAL (issue 17: errno_for).
TEST_F(MountWriteTest, NamesTheCatalogRefusesAreEinvalNotEio) {
    Mount m(store, mnt);
    ASSERT_TRUE(m.ok());
    const stdfs::path base = mnt / "comfyui" / "checkpoints" / "base.safetensors";
    const std::string sha = sha256_hex_of_file(base);
    const std::vector<std::string> refused = {
        "a@b.safetensors",                       // '@' is for version labels
        std::string(220, 'n') + ".safetensors",  // longer than a model name may be
        "tab\there.safetensors",                 // a control character
    };
    for (const std::string& name : refused) {
        SCOPED_TRACE(name);
        errno = 0;
        EXPECT_EQ(::rename(base.c_str(), (base.parent_path() / name).c_str()), -1);
        EXPECT_EQ(errno, EINVAL) << std::strerror(errno);
        EXPECT_FALSE(stdfs::exists(base.parent_path() / name));
    }
    // Refused, and nothing changed: the model is where it was, and the daemon serves on.
    EXPECT_EQ(sha256_hex_of_file(base), sha);
    EXPECT_TRUE(catalogued("checkpoint/base", sha));
    EXPECT_EQ(::kill(m.pid(), 0), 0);
}

TEST_F(MountWriteTest, TouchAndChmodOfStoredModels) {
    Mount m(store, mnt);
    ASSERT_TRUE(m.ok());
    stdfs::path f = mnt / "comfyui" / "checkpoints" / "base.safetensors";
    ASSERT_EQ(::chmod(f.c_str(), 0600), 0) << std::strerror(errno);
    struct timespec ts[2] = {{0, UTIME_OMIT}, {1'500'000'000, 0}};
    ASSERT_EQ(::utimensat(AT_FDCWD, f.c_str(), ts, 0), 0) << std::strerror(errno);
    struct stat st;
    ASSERT_EQ(::stat(f.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0600u);
    EXPECT_EQ(st.st_mtime, 1'500'000'000);
    stdfs::path other = mnt / "a1111" / "Stable-diffusion" / "base.safetensors";
    EXPECT_TRUE(eventually([&] {
        struct stat o;
        return ::stat(other.c_str(), &o) == 0 && o.st_mtime == 1'500'000'000 &&
               (o.st_mode & 07777) == 0600;
    }));
    EXPECT_EQ(sha256_hex_of_file(f), sha256_hex_of_file(src / "checkpoints" / "base.safetensors"));
}

TEST_F(MountWriteTest, TwoMountsSeeEachOthersWrites) {
    Mount a(store, mnt);
    Mount b(store, dir / "mnt2", {"--view", "a1111"});
    ASSERT_TRUE(a.ok());
    ASSERT_TRUE(b.ok());
    stdfs::path there = dir / "mnt2" / "Lora" / "shared.safetensors";
    EXPECT_FALSE(stdfs::exists(there));  // looked up once, so the kernel could cache a miss
    std::string sha = make(dir / "s.safetensors", kohya_lora(12));
    stdfs::copy_file(dir / "s.safetensors", mnt / "comfyui" / "loras" / "shared.safetensors");
    ASSERT_TRUE(eventually([&] { return stdfs::exists(there); }));
    EXPECT_EQ(sha256_hex_of_file(there), sha);
    // Deleting it in one mount removes it from the other within a second.
    stdfs::remove(mnt / "comfyui" / "loras" / "shared.safetensors");
    EXPECT_TRUE(eventually([&] { return !stdfs::exists(there); }, 1500ms));
}

TEST_F(MountWriteTest, FolderMtimeChangesWhenAModelIsDeletedFromTheCli) {
    // ComfyUI rescans a folder only when its mtime changes.
    stdfs::create_directories(dir / "more" / "loras");
    write_safetensors(dir / "more" / "loras" / "a.safetensors", kohya_lora(13));
    write_safetensors(dir / "more" / "loras" / "b.safetensors", kohya_lora(14));
    ASSERT_EQ(run_modelfs({"--store", store.string(), "import", (dir / "more").string()}).exit_code,
              0);
    Mount m(store, mnt);
    ASSERT_TRUE(m.ok());
    stdfs::path loras = mnt / "comfyui" / "loras";
    struct stat before;
    ASSERT_EQ(::stat(loras.c_str(), &before), 0);
    stdfs::remove(mnt / "a1111" / "Lora" / "a.safetensors");  // through another view
    EXPECT_TRUE(eventually(
        [&] {
            struct stat now;
            return ::stat(loras.c_str(), &now) == 0 &&
                   (now.st_mtim.tv_sec != before.st_mtim.tv_sec ||
                    now.st_mtim.tv_nsec != before.st_mtim.tv_nsec);
        },
        1500ms));
    EXPECT_FALSE(stdfs::exists(loras / "a.safetensors"));
}

}  // namespace

namespace {

std::set<std::string> listing(const stdfs::path& dir) {
    std::set<std::string> out;
    for (const auto& e : stdfs::directory_iterator(dir)) out.insert(e.path().filename().string());
    return out;
}

// The kernel keeps folder listings (cache_readdir): changes from elsewhere must still show in a
// listing, not only in a lookup by name.
TEST_F(MountWriteTest, CachedListingsFollowChangesFromElsewhere) {
    Mount m(store, mnt);
    ASSERT_TRUE(m.ok());
    stdfs::path vaes = mnt / "comfyui" / "vae";
    EXPECT_EQ(listing(vaes).count("cli.safetensors"), 0u);
    EXPECT_EQ(listing(vaes).count("cli.safetensors"), 0u);  // now served from the cache
    stdfs::create_directories(dir / "more" / "vae");
    write_safetensors(dir / "more" / "vae" / "cli.safetensors", vae(30));
    ASSERT_EQ(run_modelfs({"--store", store.string(), "import", (dir / "more").string()}).exit_code,
              0);
    EXPECT_TRUE(eventually([&] { return listing(vaes).count("cli.safetensors") == 1; }, 1500ms));
    // Written through another view, deleted through a third.
    std::string sha = make(dir / "x.safetensors", kohya_lora(31));
    stdfs::path loras = mnt / "comfyui" / "loras";
    listing(loras);
    stdfs::copy_file(dir / "x.safetensors", mnt / "a1111" / "Lora" / "x.safetensors");
    EXPECT_TRUE(eventually([&] { return listing(loras).count("x.safetensors") == 1; }, 1500ms));
    stdfs::remove(mnt / "fooocus" / "loras" / "x.safetensors");
    EXPECT_TRUE(eventually([&] { return listing(loras).count("x.safetensors") == 0; }, 1500ms));
}

}  // namespace
