// Several processes on one store at once: two importers, and gc racing an importer.
#include <gtest/gtest.h>

#include <set>
#include <thread>

#include <nlohmann/json.hpp>

#include "support/test_env.h"

namespace stdfs = std::filesystem;
using namespace modelfs::testing;
using nlohmann::json;

namespace {

TEST(Concurrency, TwoImportersStoreEachContentOnce) {
    TempDir dir("modelfs-conc");
    stdfs::path store = dir / "store";
    ASSERT_EQ(run_modelfs({"--store", store.string(), "init"}).exit_code, 0);
    // A and B share ten files byte for byte (under other names) and have ten of their own.
    std::set<std::string> distinct;
    for (int i = 0; i < 30; ++i) {
        std::string name = "m" + std::to_string(i) + ".ckpt";
        if (i < 20) write_random_file(dir / "A" / "loras" / name, (i % 5 + 1) << 19, i);
        if (i >= 10) write_random_file(dir / "B" / "checkpoints" / name, (i % 5 + 1) << 19, i);
        distinct.insert(sha256_hex_of_file(i < 20 ? dir / "A" / "loras" / name
                                                  : dir / "B" / "checkpoints" / name));
    }
    CliResult ra, rb;
    std::thread ta([&] {
        ra = run_modelfs({"--store", store.string(), "import", (dir / "A").string()});
    });
    std::thread tb([&] {
        rb = run_modelfs({"--store", store.string(), "import", (dir / "B").string()});
    });
    ta.join();
    tb.join();
    EXPECT_EQ(ra.exit_code, 0) << ra.err;
    EXPECT_EQ(rb.exit_code, 0) << rb.err;

    CliResult ls = run_modelfs({"--store", store.string(), "--json", "ls"});
    EXPECT_EQ(json::parse(ls.out).size(), 40u);
    std::size_t blob_files = 0;
    for (const auto& e : stdfs::recursive_directory_iterator(store / "blobs"))
        if (e.is_regular_file()) ++blob_files;
    EXPECT_EQ(blob_files, distinct.size());
    json v = json::parse(run_modelfs({"--store", store.string(), "--json", "verify"}).out);
    EXPECT_TRUE(v["ok"].get<bool>() && v["notes"].empty()) << v.dump(2);
}

TEST(Concurrency, GcRacingAnImportNeverRemovesWhatGetsCatalogued) {
    TempDir dir("modelfs-conc-gc");
    stdfs::path store = dir / "store";
    ASSERT_EQ(run_modelfs({"--store", store.string(), "init"}).exit_code, 0);
    for (int i = 0; i < 40; ++i)
        write_random_file(dir / "in" / "vae" / ("v" + std::to_string(i) + ".pt"), 1 << 19, 100 + i);
    std::atomic<bool> done{false};
    int gcs = 0;
    std::thread gc([&] {
        while (!done) {
            EXPECT_EQ(run_modelfs({"--store", store.string(), "gc"}).exit_code, 0);
            ++gcs;
        }
    });
    for (int i = 0; i < 40; ++i)
        EXPECT_EQ(run_modelfs({"--store", store.string(), "import",
                               (dir / "in" / "vae" / ("v" + std::to_string(i) + ".pt")).string()})
                      .exit_code,
                  0);
    done = true;
    gc.join();
    EXPECT_GT(gcs, 0);
    json v = json::parse(run_modelfs({"--store", store.string(), "--json", "verify"}).out);
    EXPECT_TRUE(v["problems"].empty()) << v.dump(2);
    EXPECT_EQ(v["blobs_checked"], 40);
}

}  // namespace
