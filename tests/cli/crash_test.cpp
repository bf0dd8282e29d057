// Crash safety: `modelfs import` killed with SIGKILL at random moments never leaves a half blob,
// a catalog entry without its bytes, or a user's file lost; the next run cleans up and finishes.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>

#include <chrono>
#include <map>
#include <random>
#include <thread>

#include <nlohmann/json.hpp>

#include "support/safetensors_writer.h"
#include "support/test_env.h"

namespace stdfs = std::filesystem;
using namespace modelfs::testing;
using nlohmann::json;

namespace {

// A tool-like tree: loras and checkpoints of a few MB, some duplicated, and a diffusers folder.
std::map<std::string, std::string> make_tree(const stdfs::path& root, std::uint64_t seed) {
    std::map<std::string, std::string> sha_by_rel;
    auto add = [&](const std::string& rel, std::uint64_t size, std::uint64_t s) {
        write_random_file(root / rel, size, s);
        sha_by_rel[rel] = sha256_hex_of_file(root / rel);
    };
    for (int i = 0; i < 10; ++i)
        add("models/loras/l" + std::to_string(i) + ".ckpt", (1 + i % 4) << 20, seed * 100 + i);
    for (int i = 0; i < 3; ++i)
        add("models/checkpoints/c" + std::to_string(i) + ".ckpt", 6 << 20, seed * 100 + 50 + i);
    add("models/loras/dup-of-l1.ckpt", 2 << 20, seed * 100 + 1);
    add("models/diffusers/pipe/model_index.json", 200, seed * 100 + 70);
    add("models/diffusers/pipe/unet/diffusion_pytorch_model.safetensors.bin", 3 << 20,
        seed * 100 + 71);
    add("models/diffusers/pipe/vae/diffusion_pytorch_model.bin", 1 << 20, seed * 100 + 72);
    return sha_by_rel;
}

json run_json(const stdfs::path& store, std::vector<std::string> args, int* exit_code = nullptr) {
    args.insert(args.begin(), {"--store", store.string(), "--json"});
    CliResult r = run_modelfs(args);
    if (exit_code) *exit_code = r.exit_code;
    EXPECT_TRUE(r.exit_code == 0 || exit_code) << r.err;
    return json::parse(r.out.empty() ? "null" : r.out);
}

// Every catalogued file's bytes are present and hash to their name; nothing corrupt, nothing
// dangling. Orphans (placed but not catalogued) are allowed: gc removes them.
void expect_store_consistent(const stdfs::path& store) {
    int rc = -1;
    json v = run_json(store, {"verify"}, &rc);
    EXPECT_EQ(rc, 0) << v.dump(2);
    EXPECT_TRUE(v["problems"].empty()) << v.dump(2);
    // The open by verify cleaned staging: no unlocked leftovers with content.
    for (const auto& e : stdfs::directory_iterator(store / "staging"))
        EXPECT_EQ(stdfs::file_size(e.path()), 0u) << "leftover in staging: " << e.path();
}

// How long an uninterrupted run takes, so that kills can land anywhere inside one.
std::chrono::milliseconds time_full_import(const stdfs::path& tree, bool move) {
    TempDir scratch("modelfs-calibrate");
    stdfs::path store = scratch / "store";
    stdfs::path src = tree;
    if (move) {
        src = scratch / "src";
        stdfs::copy(tree, src, stdfs::copy_options::recursive);
    }
    run_modelfs({"--store", store.string(), "init"});
    std::vector<std::string> args{"--store", store.string(), "import", (src / "models").string()};
    if (move) args.push_back("--move");
    auto t0 = std::chrono::steady_clock::now();
    run_modelfs(args);
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                 t0);
}

// When to kill: at random inside the span still believed to hold the run's work, narrowed by
// what each round saw. A kill before any work or after the end proves nothing, and where that
// work starts (after exec, planning, hashing) differs between machines; bisecting on each
// miss keeps the kills landing mid-run on a fast or a slow machine alike.
class KillClock {
  public:
    enum class Seen { nothing_done, some_done, all_done };

    KillClock(std::chrono::milliseconds full, unsigned seed)
        : hi_(std::max<long>(5000, full.count() * 1200)), rng_(seed) {}

    std::chrono::microseconds next() {
        last_ = std::uniform_int_distribution<long>(lo_, std::max(lo_, hi_))(rng_);
        return std::chrono::microseconds(last_);
    }

    void saw(Seen s) {
        if (s == Seen::nothing_done) lo_ = std::min(last_ + 1, hi_);
        if (s == Seen::all_done) hi_ = std::max(last_ - 1, lo_);
    }

  private:
    long lo_ = 0, hi_, last_ = 0;  // microseconds after spawn
    std::mt19937 rng_;
};

TEST(CrashSafety, KilledCopyImportLeavesAValidStore) {
    TempDir dir("modelfs-crash");
    auto shas = make_tree(dir / "src", 1);
    auto full = time_full_import(dir / "src", false);
    KillClock clock(full, 20261122);

    int interrupted = 0;  // rounds killed with some but not all models catalogued
    for (int round = 0; round < 12; ++round) {
        SCOPED_TRACE("round " + std::to_string(round));
        stdfs::path store = dir / ("store" + std::to_string(round));
        ASSERT_EQ(run_modelfs({"--store", store.string(), "init"}).exit_code, 0);
        pid_t pid = spawn_modelfs({"--store", store.string(), "import", "--jobs", "2",
                                   (dir / "src" / "models").string()});
        std::this_thread::sleep_for(clock.next());
        ::kill(pid, SIGKILL);
        wait_child(pid);

        std::size_t placed = 0;  // blob files on disk when the kill landed
        for (const auto& e : stdfs::recursive_directory_iterator(store / "blobs"))
            placed += e.is_regular_file();
        expect_store_consistent(store);
        json before = run_json(store, {"ls"});
        const bool started = placed > 0 || !before.empty();
        if (started && before.size() < 15) ++interrupted;
        clock.saw(!started               ? KillClock::Seen::nothing_done
                  : before.size() >= 15u ? KillClock::Seen::all_done
                                         : KillClock::Seen::some_done);
        // Whatever was catalogued is complete and correct.
        for (const auto& m : before)
            if (m.contains("sha256")) {
                stdfs::path blob = store / "blobs" / "sha256" /
                                   m["sha256"].get<std::string>().substr(0, 2) / m["sha256"];
                EXPECT_EQ(sha256_hex_of_file(blob), m["sha256"]);
            }
        // The next run finishes the job.
        json imp = run_json(store, {"import", (dir / "src" / "models").string()});
        EXPECT_TRUE(imp["ok"].get<bool>());
        EXPECT_EQ(run_json(store, {"ls"}).size(), 15u);
        run_json(store, {"gc"});
        json v = run_json(store, {"verify"});
        EXPECT_TRUE(v["problems"].empty() && v["notes"].empty()) << v.dump(2);
        stdfs::remove_all(store);
    }
    EXPECT_GT(interrupted, 0) << "no kill landed mid-import: the test proved nothing";
}

TEST(CrashSafety, KilledMoveImportNeverLosesAUserFile) {
    TempDir dir("modelfs-crash-move");
    auto shas = make_tree(dir / "template", 2);
    auto full = time_full_import(dir / "template", true);
    KillClock clock(full, 1122);

    int interrupted = 0;  // rounds where the kill left some files moved and some not
    for (int round = 0; round < 10; ++round) {
        SCOPED_TRACE("round " + std::to_string(round));
        stdfs::path src = dir / ("src" + std::to_string(round));
        stdfs::copy(dir / "template", src, stdfs::copy_options::recursive);
        stdfs::path store = dir / ("store" + std::to_string(round));
        ASSERT_EQ(run_modelfs({"--store", store.string(), "init"}).exit_code, 0);
        pid_t pid = spawn_modelfs({"--store", store.string(), "import", "--move", "--jobs", "2",
                                   (src / "models").string()});
        std::this_thread::sleep_for(clock.next());
        ::kill(pid, SIGKILL);
        wait_child(pid);

        expect_store_consistent(store);  // opening the store also undoes interrupted moves
        // Each of the user's files is either back where it was, byte for byte, or catalogued
        // with its content in the store.
        std::map<std::string, std::string> stored;  // source path -> sha
        for (const auto& m : run_json(store, {"ls"})) {
            json show = run_json(store, {"show", m["model"]});
            for (const auto& v : show["versions"]) {
                if (v.contains("sha256")) stored[v["source"]] = v["sha256"];
                if (v.contains("files"))
                    for (const auto& f : v["files"])
                        stored[(stdfs::path(v["source"].get<std::string>()) /
                                f["path"].get<std::string>())
                                   .string()] = f["sha256"];
            }
        }
        std::size_t at_origin = 0;
        for (const auto& [rel, sha] : shas) {
            stdfs::path origin = src / rel;
            if (stdfs::exists(origin)) {
                ++at_origin;
                EXPECT_EQ(sha256_hex_of_file(origin), sha) << origin;
                continue;
            }
            auto it = stored.find(origin.string());
            ASSERT_NE(it, stored.end()) << origin << " is gone and not in the store";
            EXPECT_EQ(it->second, sha);
            stdfs::path blob = store / "blobs" / "sha256" / sha.substr(0, 2) / sha;
            EXPECT_EQ(sha256_hex_of_file(blob), sha) << origin;
        }
        if (at_origin > 0 && at_origin < shas.size()) ++interrupted;
        clock.saw(at_origin == shas.size() ? KillClock::Seen::nothing_done
                  : at_origin == 0         ? KillClock::Seen::all_done
                                           : KillClock::Seen::some_done);
        stdfs::remove_all(store);
        stdfs::remove_all(src);
    }
    EXPECT_GT(interrupted, 0) << "no kill landed mid-move: the test proved nothing";
}

TEST(CrashSafety, FailedMoveCommitPutsTheFileBack) {
    TempDir dir("modelfs-move-fail");
    stdfs::path store = dir / "store";
    ASSERT_EQ(run_modelfs({"--store", store.string(), "init"}).exit_code, 0);
    write_random_file(dir / "a" / "x.ckpt", 100000, 1);
    write_random_file(dir / "b" / "x.ckpt", 100000, 2);
    std::string sha_b = sha256_hex_of_file(dir / "b" / "x.ckpt");
    ASSERT_EQ(run_modelfs({"--store", store.string(), "import", "--category", "lora", "--version",
                           "v1", (dir / "a" / "x.ckpt").string()})
                  .exit_code,
              0);
    // Same name, same label, other content: the commit is refused after the file was moved in.
    CliResult r = run_modelfs({"--store", store.string(), "import", "--move", "--category", "lora",
                               "--version", "v1", (dir / "b" / "x.ckpt").string()});
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_NE(r.err.find("already has a version labelled 'v1'"), std::string::npos) << r.err;
    ASSERT_TRUE(stdfs::exists(dir / "b" / "x.ckpt"));
    EXPECT_EQ(sha256_hex_of_file(dir / "b" / "x.ckpt"), sha_b);
    expect_store_consistent(store);
}

// Issue 20: files that share tensors with a stored base are stored as extents while they are
// read (only their new pieces are written, then one transaction makes them composed). A kill
// anywhere in that leaves every catalogued file rebuilding exactly (verify rebuilds each composed
// one), nothing but orphans for gc, and the next run finishes.
TEST(CrashSafety, KilledSharedTensorImportLeavesAValidStore) {
    TempDir dir("modelfs-crash-tensors");
    SafetensorsSpec base;
    for (int i = 0; i < 24; ++i) {
        base.tensors.push_back({"model.diffusion_model.b" + std::to_string(i) + ".weight",
                                "F32",
                                {512, 512},
                                100 + i,
                                std::nullopt});
        base.tensors.push_back({"model.diffusion_model.b" + std::to_string(i) + ".bias",
                                "F32",
                                {512},
                                300 + i,
                                std::nullopt});
    }
    stdfs::create_directories(dir / "base" / "checkpoints");
    write_safetensors(dir / "base" / "checkpoints" / "base.safetensors", base);
    std::map<std::string, std::string> sha_of;
    for (int f = 0; f < 4; ++f) {
        SafetensorsSpec ft = base;
        ft.metadata = {{"ft", std::to_string(f)}};
        for (int k = 0; k < 3; ++k) ft.tensors[2 * (f * 5 + k)].seed = 9000 + 10 * f + k;
        const stdfs::path p =
            dir / "src" / "checkpoints" / ("ft" + std::to_string(f) + ".safetensors");
        stdfs::create_directories(p.parent_path());
        write_safetensors(p, ft);
        sha_of["checkpoint/ft" + std::to_string(f) + ".safetensors"] = sha256_hex_of_file(p);
    }
    auto fresh = [&](const stdfs::path& store) {
        ASSERT_EQ(run_modelfs({"--store", store.string(), "init"}).exit_code, 0);
        ASSERT_EQ(
            run_modelfs({"--store", store.string(), "import", (dir / "base").string()}).exit_code,
            0);
    };
    std::chrono::milliseconds full{};
    {
        const stdfs::path store = dir / "calibrate";
        fresh(store);
        auto t0 = std::chrono::steady_clock::now();
        run_modelfs({"--store", store.string(), "import", (dir / "src").string()});
        full = std::chrono::duration_cast<std::chrono::milliseconds>(
            std::chrono::steady_clock::now() - t0);
        json show = run_json(store, {"show", "ft0"});
        ASSERT_EQ(show["file"]["stored_as"], "composed") << show.dump();
        stdfs::remove_all(store);
    }
    KillClock clock(full, 20261206);
    int interrupted = 0;
    for (int round = 0; round < 10; ++round) {
        SCOPED_TRACE("round " + std::to_string(round));
        const stdfs::path store = dir / ("store" + std::to_string(round));
        fresh(store);
        pid_t pid = spawn_modelfs(
            {"--store", store.string(), "import", "--jobs", "2", (dir / "src").string()});
        std::this_thread::sleep_for(clock.next());
        ::kill(pid, SIGKILL);
        wait_child(pid);

        expect_store_consistent(store);  // verify rebuilds every composed blob
        json before = run_json(store, {"ls"});
        std::size_t fts = 0;
        for (const auto& m : before)
            if (sha_of.count(m["model"].get<std::string>())) {
                ++fts;
                EXPECT_EQ(m["sha256"], sha_of[m["model"].get<std::string>()]);
            }
        std::size_t staged = 0;
        for (const auto& e : stdfs::directory_iterator(store / "staging"))
            staged += e.is_regular_file();
        const bool started = fts > 0 || staged > 0;
        if (fts > 0 && fts < 4) ++interrupted;
        clock.saw(!started    ? KillClock::Seen::nothing_done
                  : fts == 4u ? KillClock::Seen::all_done
                              : KillClock::Seen::some_done);
        json imp = run_json(store, {"import", (dir / "src").string()});
        EXPECT_TRUE(imp["ok"].get<bool>());
        EXPECT_EQ(run_json(store, {"ls"}).size(), 5u);
        run_json(store, {"gc"});
        json v = run_json(store, {"verify"});
        EXPECT_TRUE(v["problems"].empty() && v["notes"].empty()) << v.dump(2);
        json st = run_json(store, {"stats"});
        EXPECT_EQ(st["composed_files"], 4) << st.dump();
        stdfs::remove_all(store);
    }
    EXPECT_GT(interrupted, 0) << "no kill landed mid-import: the test proved nothing";
}

}  // namespace
