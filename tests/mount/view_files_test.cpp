// Files a tool saves in its models tree that no view folder lists as models (an .onnx in rembg/,
// an .onnx in checkpoints/): stored by content as files of that view at that path, deduplicated
// with the same bytes anywhere, with the stored files' xattrs; small and edited files stay plain
// (store/FORMAT.md, "View files").
#include <gtest/gtest.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>

#include <nlohmann/json.hpp>

#include "support/mount_fixture.h"
#include "support/test_env.h"

namespace stdfs = std::filesystem;
using namespace modelfs::testing;
using nlohmann::json;

namespace {

class ViewFilesTest : public StoreMountTest {
  protected:
    ViewFilesTest() : StoreMountTest("modelfs-viewfiles") {}
    std::string make(const stdfs::path& p, std::uint64_t size, std::uint64_t seed) {
        write_random_file(p, size, seed);
        return sha256_hex_of_file(p);
    }
    json show(const std::string& key) {
        CliResult r = run_modelfs({"--store", store.string(), "--json", "show", key});
        return r.exit_code == 0 ? json::parse(r.out) : json();
    }
    bool catalogued(const std::string& key, const std::string& sha) {
        CliResult r = run_modelfs({"--store", store.string(), "--json", "show", key});
        return r.exit_code == 0 && r.out.find(sha) != std::string::npos;
    }
    int blob_count(const std::string& sha) {
        int n = 0;
        for (auto& e : stdfs::recursive_directory_iterator(store / "blobs"))
            if (e.is_regular_file() && e.path().filename() == sha) ++n;
        return n;
    }
};

TEST_F(ViewFilesTest, FilesOutsideModelFoldersAreStoredByContentAtTheirPath) {
    Mount m(store, mnt);
    ASSERT_TRUE(m.ok());
    const std::string sha = make(dir / "u2net.onnx", 200 * 1024 + 3, 1);
    stdfs::create_directories(mnt / "comfyui" / "rembg");
    stdfs::copy_file(dir / "u2net.onnx", mnt / "comfyui" / "rembg" / "u2net.onnx");
    stdfs::create_directories(mnt / "a1111" / "insightface" / "buffalo_l");
    stdfs::copy_file(dir / "u2net.onnx", mnt / "a1111" / "insightface" / "buffalo_l" / "det.onnx");
    // The same bytes in a model folder that does not list .onnx.
    stdfs::copy_file(dir / "u2net.onnx", mnt / "comfyui" / "checkpoints" / "vad.onnx");
    ASSERT_TRUE(eventually([&] {
        return catalogued("file/comfyui/rembg/u2net.onnx", sha) &&
               catalogued("file/a1111/insightface/buffalo_l/det.onnx", sha) &&
               catalogued("file/comfyui/checkpoints/vad.onnx", sha);
    }));
    EXPECT_EQ(blob_count(sha), 1);
    for (const auto& p : {mnt / "comfyui" / "rembg" / "u2net.onnx",
                          mnt / "a1111" / "insightface" / "buffalo_l" / "det.onnx",
                          mnt / "comfyui" / "checkpoints" / "vad.onnx"}) {
        EXPECT_EQ(sha256_hex_of_file(p), sha) << p;
        EXPECT_EQ(xattr(p, "user.modelfs.sha256"), sha) << p;
        EXPECT_EQ(xattr(p, "user.modelfs.category"), "file") << p;
    }
    // Nothing left in the overlay; each file only in its own view.
    EXPECT_TRUE(eventually([&] {
        return !stdfs::exists(store / "views" / "comfyui" / "rembg" / "u2net.onnx") &&
               !stdfs::exists(store / "views" / "comfyui" / "checkpoints" / "vad.onnx");
    }));
    EXPECT_FALSE(stdfs::exists(mnt / "a1111" / "rembg" / "u2net.onnx"));
    EXPECT_FALSE(stdfs::exists(mnt / "forge" / "rembg" / "u2net.onnx"));
    EXPECT_FALSE(stdfs::exists(mnt / "comfyui" / "insightface" / "buffalo_l" / "det.onnx"));
    CliResult v = run_modelfs({"--store", store.string(), "verify"});
    EXPECT_EQ(v.exit_code, 0) << v.out << v.err;
}

TEST_F(ViewFilesTest, OverwriteMakesANewVersionAtTheSamePath) {
    Mount m(store, mnt);
    ASSERT_TRUE(m.ok());
    const stdfs::path f = mnt / "comfyui" / "dlib" / "shape.dat";
    const std::string v1 = make(dir / "v1.dat", 300 * 1024, 2);
    const std::string v2 = make(dir / "v2.dat", 310 * 1024, 3);
    stdfs::create_directories(f.parent_path());
    stdfs::copy_file(dir / "v1.dat", f);
    ASSERT_TRUE(eventually([&] { return catalogued("file/comfyui/dlib/shape.dat", v1); }));
    stdfs::copy_file(dir / "v2.dat", f, stdfs::copy_options::overwrite_existing);
    ASSERT_TRUE(eventually([&] {
        json j = show("file/comfyui/dlib/shape.dat");
        return j.contains("versions") && j["versions"].size() == 2 &&
               xattr(f, "user.modelfs.sha256") == v2;
    })) << show("file/comfyui/dlib/shape.dat").dump();
    EXPECT_EQ(sha256_hex_of_file(f), v2);
}

TEST_F(ViewFilesTest, SmallAndEditedFilesStayPlain) {
    Mount m(store, mnt);
    ASSERT_TRUE(m.ok());
    stdfs::create_directories(mnt / "comfyui" / "rembg");
    const std::string small = make(mnt / "comfyui" / "rembg" / "small.onnx", 1000, 4);
    write_random_file(mnt / "comfyui" / "rembg" / "tokenizer.json", 200 * 1024, 5);
    write_random_file(mnt / "comfyui" / "rembg" / "big.onnx", 100 * 1024, 6);  // the control
    ASSERT_TRUE(eventually([&] { return !stdfs::exists(store / "views/comfyui/rembg/big.onnx"); }));
    EXPECT_TRUE(stdfs::exists(store / "views" / "comfyui" / "rembg" / "small.onnx"));
    EXPECT_TRUE(stdfs::exists(store / "views" / "comfyui" / "rembg" / "tokenizer.json"));
    EXPECT_NE(xattr(mnt / "comfyui" / "rembg" / "small.onnx", "user.modelfs.sha256"), small);
    EXPECT_FALSE(show("file/comfyui/rembg/small.onnx").contains("versions"));
    EXPECT_FALSE(show("file/comfyui/rembg/tokenizer.json").contains("versions"));
}

}  // namespace
