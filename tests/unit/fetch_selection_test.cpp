// fetch::select_blobs (fetch/src/selection.cpp): which blobs `modelfs fetch [PATTERNS]` downloads,
// on a real store: remote blobs of the matching current versions, each once; present ones
// counted; a pattern that matches nothing refused. No server is contacted.
#include "modelfs/fetch/selection.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <optional>
#include <string>

#include "modelfs/store/errors.h"
#include "modelfs/store/store.h"
#include "support/test_env.h"

namespace modelfs {
namespace {

namespace stdfs = std::filesystem;
namespace mt = modelfs::testing;

class FetchSelectionTest : public ::testing::Test {
  protected:
    mt::TempDir dir_{"modelfs-selection"};
    std::optional<Store> store_;

    void SetUp() override { store_.emplace(Store::init(dir_ / "store")); }
    Store& s() { return *store_; }

    // A remote single-file model (nothing downloaded) whose blob is `hex_digit` x 64.
    void add_remote(const std::string& name, char hex_digit, std::uint64_t size) {
        RemoteModel m;
        m.category = Category::lora;
        m.name = name;
        m.ext = ".safetensors";
        RemoteFile f;
        f.sha256 = *Sha256::from_hex(std::string(64, hex_digit));
        f.size = size;
        f.sources.push_back({"http://127.0.0.1:9/" + name + ".safetensors", false});
        m.files.push_back(f);
        s().add_remote(m);
    }
    void import(const std::string& name) {
        const stdfs::path p = dir_ / (name + ".bin");
        mt::write_random_file(p, 1000, 7);
        ImportOptions o;
        o.category = Category::lora;
        o.name = name;
        ASSERT_TRUE(s().import({p}, o).ok());
    }
    fetch::BlobSelection select(const std::vector<std::string>& patterns) {
        return fetch::select_blobs(s().catalog().read(), patterns);
    }
};

TEST_F(FetchSelectionTest, EveryRemoteBlobOnceAndPresentOnesCounted) {
    add_remote("a", 'a', 100);
    add_remote("b", 'a', 100);  // the same content under another name: downloaded once
    add_remote("c", 'c', 300);
    import("here");
    const fetch::BlobSelection sel = select({});
    ASSERT_EQ(sel.wanted.size(), 2u);
    EXPECT_EQ(sel.wanted[0].name, "lora/a.safetensors");
    EXPECT_EQ(sel.wanted[0].size, 100u);
    EXPECT_EQ(sel.wanted[1].name, "lora/c.safetensors");
    EXPECT_EQ(sel.present, 1u);
    EXPECT_EQ(sel.matched.size(), 3u);
    EXPECT_TRUE(sel.skipped.empty());
}

TEST_F(FetchSelectionTest, PatternsMatchTheKeyOrTheBareName) {
    add_remote("sdxl-detail", 'a', 100);
    add_remote("other", 'b', 100);
    EXPECT_EQ(select({"lora/*detail*"}).wanted.size(), 1u);
    const fetch::BlobSelection by_name = select({"sdxl-*"});
    ASSERT_EQ(by_name.wanted.size(), 1u);
    EXPECT_EQ(by_name.wanted[0].name, "lora/sdxl-detail.safetensors");
}

TEST_F(FetchSelectionTest, APatternMatchingNothingIsNotFoundNamingIt) {
    add_remote("a", 'a', 100);
    try {
        select({"lora/*", "nothing-like-it"});
        FAIL() << "expected not_found";
    } catch (const StoreError& e) {
        EXPECT_EQ(e.kind(), ErrorKind::not_found);
        EXPECT_NE(std::string(e.what()).find("'nothing-like-it'"), std::string::npos) << e.what();
    }
}

}  // namespace
}  // namespace modelfs
