// Two installs (A1111 and ComfyUI) whose models trees hold every kind of file tools keep there:
// .safetensors, .pt and .gguf models in their folders, and .onnx (background removal, face
// detection, voice activity), TF.js .bin shards, a dlib .dat, tesseract .traineddata and a
// pocketsphinx .lm.bin in folders no view lists (models/rembg, models/insightface, ...) or in a
// model folder that does not list the extension. Duplicates within and across the installs.
// After adopt + confirm every distinct content is on disk once (store/FORMAT.md, "View files"),
// and every file reads back identical through the mounts at its own path.
//
// The content is generated (seeded random bytes of the right sizes and names): no Debian package
// on the build machines ships these model files.
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <map>
#include <set>

#include <gtest/gtest.h>

#include "modelfs/adopt/adopt.h"
#include "modelfs/store/store.h"
#include "modelfs/store/view_files.h"
#include "support/sized_models.h"
#include "support/test_env.h"

namespace stdfs = std::filesystem;
using namespace modelfs;
using namespace modelfs::adopt;
using modelfs::testing::sha256_hex_of_file;
using modelfs::testing::TempDir;

namespace {

void unmount_hard(const stdfs::path& p) {
    if (!is_mountpoint(p)) return;
    std::system(("/bin/fusermount3 -u '" + p.string() + "' 2>/dev/null").c_str());
    for (int i = 0; i < 100 && is_mountpoint(p); ++i) ::usleep(20000);
    if (is_mountpoint(p)) ::umount2(p.c_str(), MNT_DETACH);
}

enum class Shape { random, safetensors, gguf };

// One content and every place it is written to.
struct Content {
    Shape shape;
    std::uint64_t size;
    std::vector<std::string> paths;  // "a/<rel under models>" or "c/<rel under models>"
};

// Sizes are multiples of 64 KiB plus a little, so block rounding is no part of the comparison.
const std::vector<Content>& corpus() {
    static const std::vector<Content> c{
        {Shape::safetensors,
         3 << 20,
         {"a/Stable-diffusion/base.safetensors", "c/checkpoints/base.safetensors"}},
        {Shape::random, (1 << 20) + 100, {"a/Lora/detail.pt", "c/loras/detail.pt"}},
        // A .gguf the ComfyUI view lists, and the same file where no view lists it.
        {Shape::gguf,
         2 << 20,
         {"c/diffusion_models/flux-q4.gguf", "c/llm/flux-q4.gguf",
          "a/Stable-diffusion/flux-q4.gguf"}},
        {Shape::random, (2 << 20) + 7, {"a/rembg/u2net.onnx", "c/rembg/u2net.onnx"}},
        {Shape::random,
         (1 << 20) + 3,
         {"a/insightface/models/buffalo_l/det_10g.onnx",
          "c/insightface/models/buffalo_l/det_10g.onnx"}},
        // Voice activity detection: an .onnx in a model folder that does not list .onnx.
        {Shape::random,
         (512 << 10) + 9,
         {"a/vad/silero_vad.onnx", "c/checkpoints/silero_vad.onnx"}},
        {Shape::random,
         (1 << 20) + 1,
         {"a/face-api/ssd_mobilenetv1_model-shard1", "c/face-api/ssd_mobilenetv1_model-shard1"}},
        {Shape::random,
         (768 << 10) + 5,
         {"a/face-api/group1-shard1of2.bin", "c/face-api/group1-shard1of2.bin"}},
        {Shape::random, (256 << 10) + 5, {"a/face-api/group1-shard2of2.bin"}},
        {Shape::random,
         (3 << 20) + 11,
         {"a/dlib/shape_predictor_68_face_landmarks.dat",
          "c/dlib/shape_predictor_68_face_landmarks.dat"}},
        {Shape::random,
         (1 << 20) + 13,
         {"a/tesseract/eng.traineddata", "c/tesseract/eng.traineddata", "c/ocr/eng.traineddata"}},
        {Shape::random,
         (640 << 10) + 17,
         {"a/pocketsphinx/en-us.lm.bin", "c/pocketsphinx/en-us.lm.bin"}},
        {Shape::random, (384 << 10) + 19, {"c/rembg/isnet-anime.onnx"}},
        // Small edited files stay plain files of their view.
        {Shape::random, 300, {"a/rembg/README.md", "c/rembg/README.md"}},
    };
    return c;
}

class MixedFormats : public ::testing::Test {
  protected:
    TempDir tmp{"modelfs-mixed"};
    stdfs::path store_root, a1111, comfy;
    std::map<stdfs::path, std::string> before;  // every file -> SHA-256
    std::uint64_t unique_bytes = 0;
    std::size_t duplicate_contents = 0;

    void SetUp() override {
        ::setenv("MODELFS_CONFIG", "/dev/null", 1);
        store_root = tmp / "store";
        a1111 = tmp / "stable-diffusion-webui";
        comfy = tmp / "ComfyUI";
        modelfs::testing::make_a1111_markers(a1111);
        modelfs::testing::make_comfyui_markers(comfy);
        std::uint64_t seed = 100;
        for (const auto& c : corpus()) {
            ++seed;
            unique_bytes += c.size;
            if (c.paths.size() > 1) ++duplicate_contents;
            for (const auto& p : c.paths) {
                const stdfs::path real = (p[0] == 'a' ? a1111 : comfy) / "models" / p.substr(2);
                stdfs::create_directories(real.parent_path());
                if (c.shape == Shape::safetensors)
                    modelfs::testing::write_sized_safetensors(real, c.size, seed);
                else if (c.shape == Shape::gguf)
                    modelfs::testing::write_sized_gguf(real, c.size, seed);
                else
                    modelfs::testing::write_random_file(real, c.size, seed);
                before[real] = sha256_hex_of_file(real);
            }
        }
        Store::init(store_root);
    }
    void TearDown() override {
        for (const auto& r : {a1111, comfy}) unmount_hard(r / "models");
    }

    Plan plan_all() {
        Store store = Store::open(store_root);
        std::vector<InstallScan> scans;
        for (const auto& root : {a1111, comfy}) {
            auto inst = detect_install(root);
            if (!inst) throw std::runtime_error("not detected: " + root.string());
            scans.push_back(
                scan_install(*inst, *modelfs::layouts::ViewLayout::builtin(inst->tool)));
        }
        auto h = hash_scans(store_root, scans, {2, nullptr});
        return make_plan(store, std::move(scans), h);
    }

    // Bytes the files occupy: every distinct inode of a regular file in the store's blobs/ and
    // views/ and in both installs (backups included), counted once; the mounts are not entered.
    // The catalog and adopt's records are not model files and are left out.
    std::uint64_t physical_bytes() {
        std::set<std::pair<dev_t, ino_t>> seen;
        std::uint64_t sum = 0;
        for (const auto& top : {store_root / "blobs", store_root / "views", a1111, comfy}) {
            struct stat top_st;
            if (::lstat(top.c_str(), &top_st) != 0) continue;
            for (auto it = stdfs::recursive_directory_iterator(top); it != decltype(it)(); ++it) {
                struct stat st;
                if (::lstat(it->path().c_str(), &st) != 0) continue;
                if (st.st_dev != top_st.st_dev) {
                    it.disable_recursion_pending();
                    continue;
                }
                if (!S_ISREG(st.st_mode)) continue;
                if (seen.insert({st.st_dev, st.st_ino}).second)
                    sum += static_cast<std::uint64_t>(st.st_blocks) * 512;
            }
        }
        return sum;
    }
};

TEST_F(MixedFormats, DryRunListsEveryDuplicateGroup) {
    Plan plan = plan_all();
    for (const auto& ip : plan.installs) EXPECT_FALSE(ip.skip) << skip_text(ip.skip);
    // Each content written to two or more paths is one group, whatever its extension (before,
    // only the .safetensors and .pt groups were seen).
    EXPECT_EQ(plan.duplicates.size(), duplicate_contents - 1);  // README.md stays plain
    EXPECT_EQ(plan.total.dup_groups, plan.duplicates.size());
    // The groups account for every byte the dry run says confirm frees.
    std::uint64_t freed = 0;
    for (const auto& g : plan.duplicates) {
        EXPECT_GE(g.copies, 2u) << g.sha256.hex();
        freed += g.bytes_freed;
    }
    EXPECT_EQ(freed, plan.total.bytes_freed);
    EXPECT_GT(freed, 0u);
    const std::string text = plan_text(plan);
    for (const auto& g : plan.duplicates) {
        EXPECT_NE(text.find(g.sha256.hex().substr(0, 12)), std::string::npos) << text;
        for (const auto& f : g.files) EXPECT_NE(text.find(f.string()), std::string::npos) << f;
    }
    auto j = plan_json(plan);
    EXPECT_EQ(j["duplicate_groups"].size(), plan.duplicates.size());
    // Every file of the models trees but the small README.md goes to the store.
    for (const auto& ip : plan.installs)
        for (const auto& pf : ip.files) {
            const bool small = pf.file.size < kViewFileMinSize;
            EXPECT_EQ(pf.action == Action::store || pf.action == Action::store_in_place, !small)
                << pf.file.path << ": " << action_name(pf.action) << " " << pf.note;
        }
}

TEST_F(MixedFormats, AdoptBothConfirmEveryContentOnceOnDisk) {
    if (::access("/dev/fuse", R_OK | W_OK) != 0) GTEST_SKIP() << "no /dev/fuse";
    Plan plan = plan_all();
    {
        Store store = Store::open(store_root);
        RunOptions o;
        o.binary = modelfs::testing::modelfs_binary();
        auto rep = run_plan(store, plan, o);
        ASSERT_TRUE(rep.ok()) << rep.installs[0].status << " / " << rep.installs[1].status;
        auto conf = confirm(store, {});
        ASSERT_EQ(conf.size(), 2u);
        for (const auto& c : conf) EXPECT_TRUE(c.ok) << c.status;
    }
    ASSERT_TRUE(is_mountpoint(a1111 / "models"));
    ASSERT_TRUE(is_mountpoint(comfy / "models"));

    // Every file reads back identical through the mount at its path; the stored ones carry the
    // stored files' xattrs.
    for (const auto& [p, sha] : before) {
        ASSERT_TRUE(stdfs::exists(p)) << p;
        EXPECT_EQ(sha256_hex_of_file(p), sha) << p;
        char buf[80] = {};
        const ssize_t n = ::getxattr(p.c_str(), "user.modelfs.sha256", buf, sizeof buf - 1);
        if (stdfs::file_size(p) >= kViewFileMinSize) {
            EXPECT_EQ(std::string(buf, n > 0 ? static_cast<std::size_t>(n) : 0), sha) << p;
        }
    }

    const std::uint64_t physical = physical_bytes();
    EXPECT_LE(static_cast<double>(physical), 1.02 * static_cast<double>(unique_bytes))
        << "physical " << physical << " bytes, unique " << unique_bytes;

    // The files outside every model folder are catalogued per view, at their paths.
    Store store = Store::open(store_root);
    auto txn = store.catalog().read();
    EXPECT_TRUE(txn.get_model("file/a1111/dlib/shape_predictor_68_face_landmarks.dat"));
    EXPECT_TRUE(txn.get_model("file/comfyui/checkpoints/silero_vad.onnx"));
    EXPECT_FALSE(txn.get_model("file/a1111/rembg/README.md"));
}

}  // namespace
