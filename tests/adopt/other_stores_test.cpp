// `modelfs import --hf-cache` / `--ollama` on synthetic caches laid out as huggingface_hub and
// Ollama lay them out: real stores, the real program, real mounts (skipped without /dev/fuse).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <tuple>

#include <nlohmann/json.hpp>

#include "modelfs/adopt/other_stores.h"
#include "modelfs/store/hash.h"
#include "modelfs/store/store.h"
#include "modelfs/store/unique_fd.h"
#include "support/gguf_writer.h"
#include "support/mount_fixture.h"
#include "support/safetensors_writer.h"
#include "support/sized_models.h"
#include "support/test_env.h"

namespace stdfs = std::filesystem;
using namespace modelfs;
using namespace modelfs::testing;
using nlohmann::json;

namespace {

const std::string kC1 = "1111111aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const std::string kC2 = "2222222bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const std::string kC3 = "3333333ccccccccccccccccccccccccccccccccc";

// A file whose content is named by its SHA-256, as an LFS blob (or an Ollama layer) is.
std::string put_sha_named(const stdfs::path& dir, const std::string& prefix, std::uint64_t size,
                          std::uint64_t seed) {
    stdfs::create_directories(dir);
    const stdfs::path tmp = dir / "tmp";
    write_random_file(tmp, size, seed);
    const std::string sha = sha256_hex_of_file(tmp);
    stdfs::rename(tmp, dir / (prefix + sha));
    return sha;
}

// Everything a cache holds, by path: file content hashes (through symlinks) and link targets.
std::map<std::string, std::string> fingerprint(const stdfs::path& root) {
    std::map<std::string, std::string> out;
    for (stdfs::recursive_directory_iterator it(root), end; it != end; ++it) {
        const std::string rel = it->path().lexically_relative(root).string();
        if (it->is_symlink()) {
            std::string t = stdfs::read_symlink(it->path()).string();
            out[rel] = "-> " + t + " " +
                       (stdfs::exists(it->path()) ? sha256_hex_of_file(it->path()) : "(dangling)");
        } else if (it->is_regular_file()) {
            out[rel] = sha256_hex_of_file(it->path());
        } else {
            out[rel] = "dir";
        }
    }
    return out;
}

class HfCache {
  public:
    explicit HfCache(stdfs::path root) : root_(std::move(root)) {
        stdfs::create_directories(root_);
    }
    const stdfs::path& root() const { return root_; }
    stdfs::path repo(const std::string& id) const { return root_ / id; }

    std::string lfs(const std::string& id, std::uint64_t size, std::uint64_t seed) {
        return put_sha_named(repo(id) / "blobs", "", size, seed);
    }
    // A small file under its git blob name (40 hex): not its SHA-256.
    std::string git(const std::string& id, const std::string& text, const std::string& name40) {
        stdfs::create_directories(repo(id) / "blobs");
        write_text_file(repo(id) / "blobs" / name40, text);
        return name40;
    }
    void link(const std::string& id, const std::string& commit, const std::string& rel,
              const std::string& blob) {
        const stdfs::path p = repo(id) / "snapshots" / commit / rel;
        stdfs::create_directories(p.parent_path());
        std::string up = "../../";
        for (auto i = std::count(rel.begin(), rel.end(), '/'); i > 0; --i) up += "../";
        stdfs::create_symlink(up + "blobs/" + blob, p);
    }
    // A file the test wrote, moved into blobs/ under its SHA-256 (an LFS file).
    std::string put(const std::string& id, const stdfs::path& file) {
        stdfs::create_directories(repo(id) / "blobs");
        const std::string sha = sha256_hex_of_file(file);
        stdfs::rename(file, repo(id) / "blobs" / sha);
        return sha;
    }
    void ref(const std::string& id, const std::string& name, const std::string& commit) {
        stdfs::create_directories((repo(id) / "refs" / name).parent_path());
        write_text_file(repo(id) / "refs" / name, commit);
    }

  private:
    stdfs::path root_;
};

class OtherStoresTest : public ::testing::Test {
  protected:
    TempDir dir{"modelfs-other-stores"};
    stdfs::path store_dir = dir / "store";
    HfCache hf{dir / "hf"};
    const std::string sd = "models--org--sd";
    std::string unet1, unet2, vae, index, config;

    void SetUp() override {
        ASSERT_EQ(run_modelfs({"--store", store_dir.string(), "init"}).exit_code, 0);
    }

    // org/sd, a diffusers repo with two commits: the unet changed, the VAE did not.
    void make_sd() {
        unet1 = hf.lfs(sd, 300000, 1);
        unet2 = hf.lfs(sd, 300000, 2);
        vae = hf.lfs(sd, 200000, 3);
        index = hf.git(sd, "{\"_class_name\": \"StableDiffusionPipeline\"}",
                       "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
        for (const auto& [c, unet] : {std::pair{kC1, unet1}, std::pair{kC2, unet2}}) {
            hf.link(sd, c, "model_index.json", index);
            hf.link(sd, c, "unet/diffusion_pytorch_model.safetensors", unet);
            hf.link(sd, c, "vae/diffusion_pytorch_model.safetensors", vae);
        }
        hf.ref(sd, "main", kC1);  // not the newest snapshot: current follows refs/main
        hf.ref(sd, "pr/1", kC2);
    }

    CliResult modelfs(std::vector<std::string> args) {
        args.insert(args.begin(), {"--store", store_dir.string()});
        return run_modelfs(args);
    }
};

TEST_F(OtherStoresTest, HfRevisionsBecomeVersionsAndRefsMainIsCurrent) {
    make_sd();
    Store s = Store::open(store_dir);
    auto rep = adopt::import_hf_cache(s, hf.root());
    ASSERT_TRUE(rep.ok());
    ASSERT_EQ(rep.items.size(), 2u);
    auto m = s.catalog().read().get_model("diffusers/org/sd");
    ASSERT_TRUE(m) << "model_index.json makes it a diffusers model named ORG/NAME";
    ASSERT_EQ(m->versions.size(), 2u);
    EXPECT_EQ(m->current_version().label, kC1.substr(0, 7));
    EXPECT_NE(m->current_version().note.find("main"), std::string::npos);
    std::vector<std::string> labels;
    for (const auto& v : m->versions) labels.push_back(v.label);
    std::sort(labels.begin(), labels.end());
    EXPECT_EQ(labels, (std::vector<std::string>{kC1.substr(0, 7), kC2.substr(0, 7)}));
    const auto& tree = m->current_version().tree;
    ASSERT_EQ(tree.size(), 3u);
    EXPECT_EQ(tree[1].path, "unet/diffusion_pytorch_model.safetensors");
    EXPECT_EQ(tree[1].blob.hex(), unet1);

    // Zero copy: the store's blob is the cache's file, and it was taken on its name's word.
    struct stat a, b;
    ASSERT_EQ(::stat(s.blobs().path_of(tree[1].blob).c_str(), &a), 0);
    ASSERT_EQ(::stat((hf.repo(sd) / "blobs" / unet1).c_str(), &b), 0);
    EXPECT_EQ(a.st_ino, b.st_ino);
    auto rec = s.catalog().read().get_blob(tree[1].blob);
    ASSERT_TRUE(rec);
    EXPECT_TRUE(rec->unverified);
    EXPECT_FALSE(rec->xxh128);
    // The VAE is shared by both revisions: one blob.
    EXPECT_EQ(m->versions[0].tree[2].blob, m->versions[1].tree[2].blob);
}

TEST_F(OtherStoresTest, HfGitSha1FilesAreHashedNotTrusted) {
    make_sd();
    Store s = Store::open(store_dir);
    auto rep = adopt::import_hf_cache(s, hf.root());
    ASSERT_TRUE(rep.ok());
    EXPECT_EQ(rep.items[0].hashed, 1u);
    auto m = s.catalog().read().get_model("diffusers/org/sd");
    ASSERT_TRUE(m);
    const TreeEntry& idx = m->current_version().tree[0];
    ASSERT_EQ(idx.path, "model_index.json");
    // Catalogued under its real SHA-256, verified, with an XXH3 for `verify --fast`.
    EXPECT_EQ(idx.blob.hex(), sha256_hex_of_file(hf.repo(sd) / "blobs" / index));
    auto rec = s.catalog().read().get_blob(idx.blob);
    ASSERT_TRUE(rec);
    EXPECT_FALSE(rec->unverified);
    EXPECT_TRUE(rec->xxh128);
}

TEST_F(OtherStoresTest, HfLeavesOutDatasetsSpacesIncompleteAndNoExist) {
    make_sd();
    stdfs::create_directories(hf.root() / "datasets--org--data" / "blobs");
    stdfs::create_directories(hf.root() / "spaces--org--demo" / "blobs");
    stdfs::create_directories(hf.root() / ".locks" / sd);
    const std::string partial = hf.lfs(sd, 5000, 9);
    stdfs::rename(hf.repo(sd) / "blobs" / partial,
                  hf.repo(sd) / "blobs" / (partial + ".incomplete"));
    stdfs::create_directories(hf.repo(sd) / ".no_exist" / kC1);
    write_text_file(hf.repo(sd) / ".no_exist" / kC1 / "model.safetensors", "");
    Store s = Store::open(store_dir);
    auto rep = adopt::import_hf_cache(s, hf.root());
    ASSERT_TRUE(rep.ok());
    EXPECT_EQ(rep.items.size(), 2u);
    ASSERT_EQ(rep.notes.size(), 2u);
    EXPECT_NE(rep.notes[0].find("datasets--org--data"), std::string::npos) << rep.notes[0];
    EXPECT_NE(rep.notes[1].find("spaces--org--demo"), std::string::npos) << rep.notes[1];
    std::size_t models = 0;
    s.catalog().read().for_each_model([&](const Model& m) {
        ++models;
        for (const auto& v : m.versions)
            for (const auto& t : v.tree) EXPECT_NE(t.path, "model.safetensors");
    });
    EXPECT_EQ(models, 1u);
    EXPECT_FALSE(s.catalog().read().get_blob(*Sha256::from_hex(partial)));
}

TEST_F(OtherStoresTest, HfSnapshotWithAMissingBlobIsSkippedAndReported) {
    make_sd();
    hf.link(sd, kC3, "model_index.json", index);
    hf.link(sd, kC3, "unet/diffusion_pytorch_model.safetensors", std::string(64, 'e'));
    CliResult r = modelfs({"import", "--hf-cache", hf.root().string()});
    EXPECT_EQ(r.exit_code, 0) << r.err;  // the complete versions are in: a warning, not a failure
    EXPECT_NE(r.err.find("warning: snapshot " + kC3), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("missing"), std::string::npos) << r.err;
    Store s = Store::open(store_dir);
    auto m = s.catalog().read().get_model("diffusers/org/sd");
    ASSERT_TRUE(m);
    EXPECT_EQ(m->versions.size(), 2u);
    EXPECT_EQ(m->current_version().label, kC1.substr(0, 7));
}

// Ollama: blobs/sha256-<hex> and manifests/REGISTRY/NAMESPACE/MODEL/TAG.
class OllamaTest : public OtherStoresTest {
  protected:
    stdfs::path ol = dir / "ollama";
    std::string gguf1, gguf2, tmpl, params, license, cfg;

    json layer(const std::string& media, const std::string& sha) {
        return {{"mediaType", media},
                {"digest", "sha256:" + sha},
                {"size", stdfs::file_size(ol / "blobs" / ("sha256-" + sha))}};
    }
    void manifest(const std::string& rel, const std::string& model, bool with_license = true) {
        json layers = json::array({layer("application/vnd.ollama.image.model", model),
                                   layer("application/vnd.ollama.image.template", tmpl),
                                   layer("application/vnd.ollama.image.params", params)});
        if (with_license) layers.push_back(layer("application/vnd.ollama.image.license", license));
        json m = {{"schemaVersion", 2},
                  {"mediaType", "application/vnd.docker.distribution.manifest.v2+json"},
                  {"config", layer("application/vnd.docker.container.image.v1+json", cfg)},
                  {"layers", layers}};
        stdfs::create_directories((ol / "manifests" / rel).parent_path());
        write_text_file(ol / "manifests" / rel, m.dump());
    }
    void make_ollama() {
        gguf1 = put_sha_named(ol / "blobs", "sha256-", 250000, 11);
        gguf2 = put_sha_named(ol / "blobs", "sha256-", 150000, 12);
        tmpl = put_sha_named(ol / "blobs", "sha256-", 300, 13);
        params = put_sha_named(ol / "blobs", "sha256-", 100, 14);
        license = put_sha_named(ol / "blobs", "sha256-", 1000, 15);
        cfg = put_sha_named(ol / "blobs", "sha256-", 400, 16);
        manifest("registry.ollama.ai/library/tiny/latest", gguf1);
        manifest("registry.ollama.ai/library/tiny/q4", gguf2, false);
        manifest("registry.ollama.ai/someone/custom/v1", gguf2);
    }
};

TEST_F(OllamaTest, TagsBecomeVersionsNamedAfterTheModel) {
    make_ollama();
    Store s = Store::open(store_dir);
    auto rep = adopt::import_ollama(s, ol);
    ASSERT_TRUE(rep.ok());
    ASSERT_EQ(rep.items.size(), 3u);
    auto m = s.catalog().read().get_model("other/ollama/tiny");
    ASSERT_TRUE(m);
    ASSERT_EQ(m->versions.size(), 2u);
    EXPECT_EQ(m->current_version().label, "latest");
    std::vector<std::string> files;
    for (const auto& t : m->current_version().tree) files.push_back(t.path);
    EXPECT_EQ(files, (std::vector<std::string>{"config.json", "license", "model.gguf",
                                               "params.json", "template"}));
    const auto& q4 = m->versions[m->current == 0 ? 1 : 0];
    EXPECT_EQ(q4.label, "q4");
    EXPECT_EQ(q4.tree.size(), 4u);
    auto custom = s.catalog().read().get_model("other/ollama/someone/custom");
    ASSERT_TRUE(custom) << "a namespace other than library is part of the name";
    EXPECT_EQ(custom->current_version().label, "v1");
    // The GGUF is the Ollama blob itself, catalogued on its name's word.
    struct stat a, b;
    ASSERT_EQ(::stat(s.blobs().path_of(*Sha256::from_hex(gguf1)).c_str(), &a), 0);
    ASSERT_EQ(::stat((ol / "blobs" / ("sha256-" + gguf1)).c_str(), &b), 0);
    EXPECT_EQ(a.st_ino, b.st_ino);
    EXPECT_TRUE(s.catalog().read().get_blob(*Sha256::from_hex(gguf1))->unverified);
}

TEST_F(OllamaTest, ManifestWithAMissingOrShortBlobIsSkipped) {
    make_ollama();
    // A pull interrupted: the manifest names a layer that is not (fully) there.
    const std::string shorty = put_sha_named(ol / "blobs", "sha256-", 1000, 17);
    manifest("registry.ollama.ai/library/broken/latest", shorty);
    stdfs::resize_file(ol / "blobs" / ("sha256-" + shorty), 10);
    write_text_file(ol / "blobs" / ("sha256-" + std::string(64, 'd')), "x");
    manifest("registry.ollama.ai/library/gone/latest", std::string(64, 'd'));
    stdfs::remove(ol / "blobs" / ("sha256-" + std::string(64, 'd')));
    Store s = Store::open(store_dir);
    auto rep = adopt::import_ollama(s, ol);
    EXPECT_TRUE(rep.ok());
    std::size_t skipped = 0;
    for (const auto& it : rep.items)
        if (it.outcome == adopt::OtherStoreItem::Outcome::skipped) {
            ++skipped;
            EXPECT_TRUE(it.detail.find("bytes, the manifest says") != std::string::npos ||
                        it.detail.find("missing") != std::string::npos)
                << it.detail;
        }
    EXPECT_EQ(skipped, 2u);
    EXPECT_FALSE(s.catalog().read().get_model("other/ollama/broken"));
    EXPECT_FALSE(s.catalog().read().get_model("other/ollama/gone"));
    EXPECT_TRUE(s.catalog().read().get_model("other/ollama/tiny"));
}

TEST_F(OllamaTest, ATagThatMovedKeepsBothContents) {
    make_ollama();
    {
        Store s = Store::open(store_dir);
        ASSERT_TRUE(adopt::import_ollama(s, ol).ok());
    }
    manifest("registry.ollama.ai/library/tiny/latest", gguf2);  // `ollama pull` got a new latest
    Store s = Store::open(store_dir);
    auto rep = adopt::import_ollama(s, ol);
    ASSERT_TRUE(rep.ok());
    auto m = s.catalog().read().get_model("other/ollama/tiny");
    ASSERT_TRUE(m);
    EXPECT_EQ(m->versions.size(), 3u);
    EXPECT_EQ(m->current_version().label.rfind("latest-", 0), 0u) << m->current_version().label;
    EXPECT_TRUE(find_version(*m, "latest"));
}

TEST_F(OllamaTest, SecondImportOfBothCachesIsANoOp) {
    make_ollama();
    make_sd();
    CliResult r = modelfs({"import", "--hf-cache", hf.root().string(), "--ollama", ol.string()});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    std::uint64_t txn;
    {
        Store s = Store::open(store_dir);
        txn = s.catalog().last_txn_id();
    }
    r = modelfs({"import", "--hf-cache", hf.root().string(), "--ollama", ol.string()});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.out.find("Hugging Face hub cache " + hf.root().string() + ": nothing new"),
              std::string::npos)
        << r.out;
    EXPECT_NE(r.out.find("Ollama models " + ol.string() + ": nothing new"), std::string::npos)
        << r.out;
    r = modelfs({"--json", "import", "--hf-cache", hf.root().string(), "--ollama", ol.string()});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    json j = json::parse(r.out);
    ASSERT_EQ(j["caches"].size(), 2u);
    for (const auto& c : j["caches"]) {
        EXPECT_TRUE(c["nothing_new"].get<bool>()) << c.dump();
        for (const auto& it : c["items"]) EXPECT_EQ(it["outcome"], "unchanged") << it.dump();
    }
    Store s = Store::open(store_dir);
    EXPECT_EQ(s.catalog().last_txn_id(), txn) << "a repeated import wrote to the catalog";
}

TEST_F(OllamaTest, SourceCachesAreUntouched) {
    make_ollama();
    make_sd();
    const auto hf_before = fingerprint(hf.root());
    const auto ol_before = fingerprint(ol);
    CliResult r = modelfs({"import", "--hf-cache", hf.root().string(), "--ollama", ol.string()});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    r = modelfs({"verify"});
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    r = modelfs({"gc"});
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    EXPECT_EQ(fingerprint(hf.root()), hf_before);
    EXPECT_EQ(fingerprint(ol), ol_before);
}

TEST_F(OllamaTest, VerifyClearsTheFlagAndCatchesALyingName) {
    make_ollama();
    make_sd();
    // A blob whose name is not its content's hash (a bit flip after download, say).
    const std::string liar = hf.lfs("models--org--liar", 4000, 21);
    {
        const stdfs::path p = hf.repo("models--org--liar") / "blobs" / liar;
        std::string bytes = read_file(p);
        bytes[100] ^= 1;
        write_text_file(p, bytes);
    }
    hf.link("models--org--liar", kC1, "weights.bin", liar);
    hf.ref("models--org--liar", "main", kC1);
    CliResult r = modelfs({"import", "--hf-cache", hf.root().string(), "--ollama", ol.string()});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.out.find("`modelfs verify` checks them"), std::string::npos) << r.out;

    r = modelfs({"--json", "ls"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    for (const auto& m : json::parse(r.out))
        EXPECT_GT(m.value("unverified_files", 0), 0) << m.dump();
    r = modelfs({"--json", "show", "ollama/tiny"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    bool flagged = false;
    const json shown = json::parse(r.out);
    for (const auto& v : shown["versions"])
        for (const auto& f : v.value("files", json::array()))
            flagged = flagged || f.value("unverified", false);
    EXPECT_TRUE(flagged) << r.out;

    r = modelfs({"--json", "verify", "--fast"});
    EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
    json v = json::parse(r.out);
    ASSERT_EQ(v["problems"].size(), 1u) << r.out;
    EXPECT_EQ(v["problems"][0]["problem"], "corrupt");
    EXPECT_EQ(v["problems"][0]["sha256"], liar);
    EXPECT_GT(v["newly_verified"].get<std::size_t>(), 0u);

    Store s = Store::open(store_dir);
    EXPECT_EQ(s.catalog().read().get_blob(*Sha256::from_hex(liar))->state, BlobState::quarantined);
    auto good = s.catalog().read().get_blob(*Sha256::from_hex(gguf1));
    ASSERT_TRUE(good);
    EXPECT_FALSE(good->unverified);
    EXPECT_TRUE(good->xxh128);
    r = modelfs({"--json", "ls", "ollama/*"});
    for (const auto& m : json::parse(r.out)) EXPECT_FALSE(m.contains("unverified_files"));
    // The next verify finds nothing left to verify, and the quick mode works from the new XXH3.
    r = modelfs({"--json", "verify", "--fast"});
    EXPECT_EQ(json::parse(r.out)["newly_verified"], 0) << r.out;
}

// A cache blob named H whose bytes are not H, imported on trust; then the user's real H arrives.
// Deduplicating against the lie would drop the user's only copy: the stored blob is read first.
TEST_F(OtherStoresTest, ALyingNameNeverCostsTheUserTheRealFile) {
    const stdfs::path real = dir / "user" / "real.gguf";
    stdfs::create_directories(real.parent_path());
    write_sized_gguf(real, 6000, 41);
    const std::string h = sha256_hex_of_file(real);
    std::string lie = read_file(real);
    lie[10] ^= 1;
    stdfs::create_directories(hf.repo("models--org--liar") / "blobs");
    write_text_file(hf.repo("models--org--liar") / "blobs" / h, lie);
    hf.link("models--org--liar", kC1, "model.gguf", h);
    Store s = Store::open(store_dir);
    ASSERT_TRUE(adopt::import_hf_cache(s, hf.root()).ok());
    ASSERT_TRUE(s.catalog().read().get_blob(*Sha256::from_hex(h))->unverified);

    // 1. `import --move`: the user's file is renamed into the store, and would be dropped as a
    // duplicate.
    ImportOptions opts;
    opts.move = true;
    opts.category = Category::other;
    opts.name = "user/real";
    auto rep = s.import({real}, opts);
    ASSERT_TRUE(rep.ok()) << rep.items.at(0).error;
    EXPECT_FALSE(stdfs::exists(real));
    EXPECT_EQ(sha256_hex_of_file(s.blobs().path_of(*Sha256::from_hex(h))), h)
        << "the store kept the lying bytes and dropped the user's";
    auto rec = s.catalog().read().get_blob(*Sha256::from_hex(h));
    EXPECT_EQ(rec->state, BlobState::present);
    EXPECT_FALSE(rec->unverified);
    EXPECT_TRUE(stdfs::exists(s.blobs().quarantine_dir()) &&
                !stdfs::is_empty(s.blobs().quarantine_dir()))
        << "the lying bytes are kept for inspection";

    // 2. A mount's file (commit_file) against a fresh lie under another name.
    const stdfs::path saved = store_dir / "views" / "comfyui" / "saved.gguf";
    stdfs::create_directories(saved.parent_path());
    write_sized_gguf(saved, 7000, 42);
    const std::string h2 = sha256_hex_of_file(saved);
    std::string lie2 = read_file(saved);
    lie2[20] ^= 1;
    write_text_file(hf.repo("models--org--liar") / "blobs" / h2, lie2);
    hf.link("models--org--liar", kC2, "model.gguf", h2);
    ASSERT_TRUE(adopt::import_hf_cache(s, hf.root()).ok());
    ASSERT_TRUE(s.catalog().read().get_blob(*Sha256::from_hex(h2))->unverified);
    UniqueFd fd(::open(saved.c_str(), O_RDONLY | O_CLOEXEC));
    ASSERT_TRUE(fd);
    FileCommit fc;
    fc.path = saved;
    fc.fd = fd.get();
    fc.digests = digest_fd(fd.get());
    fc.category = Category::diffusion_model;
    fc.name = "saved";
    fc.ext = ".gguf";
    s.commit_file(fc);
    EXPECT_EQ(sha256_hex_of_file(s.blobs().path_of(*Sha256::from_hex(h2))), h2);
    EXPECT_FALSE(s.catalog().read().get_blob(*Sha256::from_hex(h2))->unverified);
}

TEST_F(OllamaTest, AnotherFilesystemIsCopiedAndChecked) {
    struct stat shm, here;
    if (::stat("/dev/shm", &shm) != 0 || ::stat(dir.path().c_str(), &here) != 0 ||
        shm.st_dev == here.st_dev)
        GTEST_SKIP() << "no second filesystem at /dev/shm";
    char tmpl_dir[] = "/dev/shm/modelfs-hub-XXXXXX";
    ASSERT_TRUE(::mkdtemp(tmpl_dir));
    struct Cleanup {
        stdfs::path p;
        ~Cleanup() { stdfs::remove_all(p); }
    } cleanup{tmpl_dir};
    HfCache far(stdfs::path(tmpl_dir) / "hub");
    const std::string ok = far.lfs("models--org--far", 5000, 31);
    far.link("models--org--far", kC1, "weights.bin", ok);
    const std::string bad = far.lfs("models--org--bad", 5000, 32);
    {
        const stdfs::path p = far.repo("models--org--bad") / "blobs" / bad;
        std::string bytes = read_file(p);
        bytes[7] ^= 1;
        write_text_file(p, bytes);
    }
    far.link("models--org--bad", kC1, "weights.bin", bad);
    Store s = Store::open(store_dir);
    auto rep = adopt::import_hf_cache(s, far.root());
    ASSERT_EQ(rep.items.size(), 2u);
    EXPECT_FALSE(rep.ok()) << "a copy whose content contradicts its name is refused";
    EXPECT_EQ(rep.items[0].outcome, adopt::OtherStoreItem::Outcome::failed);
    EXPECT_NE(rep.items[0].detail.find("its SHA-256 is"), std::string::npos) << rep.items[0].detail;
    EXPECT_FALSE(s.catalog().read().get_model("other/org/bad"));
    EXPECT_EQ(rep.items[1].copied, 1u);
    auto rec = s.catalog().read().get_blob(*Sha256::from_hex(ok));
    ASSERT_TRUE(rec);
    EXPECT_FALSE(rec->unverified) << "a copy reads every byte: it is verified";
    EXPECT_EQ(sha256_hex_of_file(s.blobs().path_of(*Sha256::from_hex(ok))), ok);
}

TEST_F(OllamaTest, MountedModelsReadTheCacheBytes) {
    if (!stdfs::exists("/dev/fuse")) GTEST_SKIP() << "no /dev/fuse";
    make_ollama();
    make_sd();
    CliResult r = modelfs({"import", "--hf-cache", hf.root().string(), "--ollama", ol.string()});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const stdfs::path mnt = dir / "mnt";
    Mount m(store_dir, mnt);
    ASSERT_TRUE(m.ok());
    // A diffusers repo shows as a folder in ComfyUI's diffusers/, at refs/main's revision.
    const stdfs::path snap = hf.repo(sd) / "snapshots" / kC1;
    for (const char* rel : {"model_index.json", "unet/diffusion_pytorch_model.safetensors",
                            "vae/diffusion_pytorch_model.safetensors"})
        EXPECT_EQ(sha256_hex_of_file(mnt / "comfyui" / "diffusers" / "org" / "sd" / rel),
                  sha256_hex_of_file(snap / rel))
            << rel;
    // Ollama's files (category other, in no tool's folders) by their hash.
    for (const auto& sha : {gguf1, gguf2, tmpl, license})
        EXPECT_EQ(sha256_hex_of_file(mnt / "by-hash" / "sha256" / sha),
                  sha256_hex_of_file(ol / "blobs" / ("sha256-" + sha)));
    EXPECT_EQ(m.stop(), 0);
}

TEST(OtherStoresDefaults, FollowTheToolsEnvironment) {
    struct Env {
        std::string name;
        std::optional<std::string> old;
        Env(std::string n, const char* v) : name(std::move(n)) {
            if (const char* o = ::getenv(name.c_str())) old = o;
            if (v)
                ::setenv(name.c_str(), v, 1);
            else
                ::unsetenv(name.c_str());
        }
        ~Env() {
            if (old)
                ::setenv(name.c_str(), old->c_str(), 1);
            else
                ::unsetenv(name.c_str());
        }
    };
    {
        Env a("HF_HUB_CACHE", "/x/hub"), b("HF_HOME", "/y");
        EXPECT_EQ(adopt::default_hf_cache(), stdfs::path("/x/hub"));
    }
    {
        Env a("HF_HUB_CACHE", nullptr), a2("HUGGINGFACE_HUB_CACHE", nullptr), b("HF_HOME", "/y");
        EXPECT_EQ(adopt::default_hf_cache(), stdfs::path("/y/hub"));
    }
    {
        Env a("HF_HUB_CACHE", nullptr), a2("HUGGINGFACE_HUB_CACHE", nullptr), b("HF_HOME", nullptr),
            c("XDG_CACHE_HOME", nullptr), h("HOME", "/home/u");
        EXPECT_EQ(adopt::default_hf_cache(), stdfs::path("/home/u/.cache/huggingface/hub"));
    }
    {
        Env a("OLLAMA_MODELS", "/srv/ollama");
        EXPECT_EQ(adopt::default_ollama_models(), stdfs::path("/srv/ollama"));
    }
}

// Blobs moved elsewhere and linked back: still trusted by their name, and the file itself is
// what the store links (link() on the symlink would store a symlink).
TEST_F(OtherStoresTest, HfBlobThatIsItselfALinkIsTrustedAndLinkedToTheFile) {
    make_sd();
    const stdfs::path away = dir / "elsewhere" / "unet.bin";
    stdfs::create_directories(away.parent_path());
    stdfs::rename(hf.repo(sd) / "blobs" / unet1, away);
    stdfs::create_symlink(away, hf.repo(sd) / "blobs" / unet1);
    Store s = Store::open(store_dir);
    ASSERT_TRUE(adopt::import_hf_cache(s, hf.root()).ok());
    const stdfs::path blob = s.blobs().path_of(*Sha256::from_hex(unet1));
    EXPECT_FALSE(stdfs::is_symlink(blob));
    struct stat a, b;
    ASSERT_EQ(::lstat(blob.c_str(), &a), 0);
    ASSERT_EQ(::stat(away.c_str(), &b), 0);
    EXPECT_EQ(a.st_ino, b.st_ino);
    EXPECT_TRUE(s.catalog().read().get_blob(*Sha256::from_hex(unet1))->unverified);
    EXPECT_TRUE(stdfs::is_symlink(hf.repo(sd) / "blobs" / unet1));
}

// A cache of another user (Ollama's service account, a shared HF cache): not ours to make
// read-only, and fs.protected_hardlinks may refuse the link, so its files are copied (and, being
// read, verified); the cache's files keep their modes.
TEST_F(OtherStoresTest, ACacheWeDoNotOwnIsCopiedNotLinked) {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root to make a cache another user owns";
    make_sd();
    const stdfs::path shared = dir / "shared";
    stdfs::create_directories(shared);
    stdfs::permissions(dir.path(), stdfs::perms::owner_all | stdfs::perms::group_read |
                                       stdfs::perms::group_exec | stdfs::perms::others_read |
                                       stdfs::perms::others_exec);
    stdfs::permissions(shared, stdfs::perms::all);
    const stdfs::path unet_file = hf.repo(sd) / "blobs" / unet1;
    const auto mode_before = stdfs::status(unet_file).permissions();
    const AsNobody r = run_as_nobody([&] {
        std::string msg;
        Store st = Store::init(shared / "store");
        auto rep = adopt::import_hf_cache(st, hf.root());
        std::size_t linked = 0, copied = 0;
        for (const auto& it : rep.items) {
            linked += it.linked;
            copied += it.copied;
            if (it.outcome == adopt::OtherStoreItem::Outcome::failed) msg += it.detail + "; ";
        }
        if (linked != 0) msg += "linked " + std::to_string(linked) + " files; ";
        if (copied != 4) msg += "copied " + std::to_string(copied) + " files, not 4; ";
        auto rec = st.catalog().read().get_blob(*Sha256::from_hex(unet1));
        if (!rec || rec->unverified) msg += "the copied unet is not recorded verified; ";
        return msg;
    });
    if (r.skipped) GTEST_SKIP() << "cannot become nobody (uid 65534)";
    EXPECT_TRUE(r.ok) << r.message;
    EXPECT_EQ(stdfs::status(unet_file).permissions(), mode_before);
}

// Issue 16: a repo that is one LoRA, VAE or GGUF next to its README and config is that file to the
// tools. It used to land in `other` as a folder no view shows; it is now a single-file model of
// the category its header implies (the rule `import` applies), named REPO/FILE (extension
// included). A repo whose one weight file says nothing, or that has two, stays a tree.
class HfSingleFileTest : public OtherStoresTest {
  protected:
    std::string lora_sha, vae_sha, gguf_sha, bert_sha;

    // One snapshot kC1 of `id` with `weight` (written by the test) as `name`, and a README and a
    // config beside it.
    std::string single(const std::string& id, const stdfs::path& weight, const std::string& name) {
        const std::string sha = hf.put(id, weight);
        hf.link(id, kC1, name, sha);
        hf.link(id, kC1, "README.md", hf.git(id, "# " + id, std::string(40, 'b')));
        hf.link(id, kC1, "config.json", hf.git(id, "{}", std::string(40, 'c')));
        hf.ref(id, "main", kC1);
        return sha;
    }
    void make_repos() {
        stdfs::create_directories(dir / "w");
        write_safetensors(dir / "w" / "lora", kohya_lora(1));
        lora_sha =
            single("models--org--detail-lora", dir / "w" / "lora", "detail_tweaker.safetensors");
        write_safetensors(dir / "w" / "vae", modelfs::testing::vae(2));
        vae_sha = single("models--org--sdxl-vae", dir / "w" / "vae", "sdxl_vae.safetensors");
        GgufWriter g;
        g.kv_string("general.architecture", "flux");
        g.tensor("double_blocks.0.img_attn.qkv.weight", GgmlTensorType::f16, {64, 4});
        g.write(dir / "w" / "gguf");
        gguf_sha = single("models--city--flux-gguf", dir / "w" / "gguf", "flux1-dev-Q4_K_S.gguf");
        // Tensors that name no category: a transformers model needs its config beside it.
        SafetensorsSpec bert;
        TensorSpec t;
        t.name = "bert.embeddings.word_embeddings.weight";
        t.shape = {8, 4};
        bert.tensors.push_back(t);
        write_safetensors(dir / "w" / "bert", bert);
        bert_sha = single("models--org--bert", dir / "w" / "bert", "model.safetensors");
        // Two weight files: which one the tools want is not for modelfs to guess.
        const std::string two = "models--org--two";
        write_safetensors(dir / "w" / "l2", kohya_lora(3));
        write_safetensors(dir / "w" / "v2", modelfs::testing::vae(4));
        hf.link(two, kC1, "a.safetensors", hf.put(two, dir / "w" / "l2"));
        hf.link(two, kC1, "b.safetensors", hf.put(two, dir / "w" / "v2"));
        hf.ref(two, "main", kC1);
    }
};

TEST_F(HfSingleFileTest, ARepoOfOneWeightFileIsThatFileInItsCategory) {
    make_repos();
    Store s = Store::open(store_dir);
    auto rep = adopt::import_hf_cache(s, hf.root());
    ASSERT_TRUE(rep.ok());
    auto txn = s.catalog().read();
    for (const auto& [key, sha, ext] :
         {std::tuple{"lora/org/detail-lora/detail_tweaker.safetensors", lora_sha, ".safetensors"},
          std::tuple{"vae/org/sdxl-vae/sdxl_vae.safetensors", vae_sha, ".safetensors"},
          std::tuple{"diffusion_model/city/flux-gguf/flux1-dev-Q4_K_S.gguf", gguf_sha, ".gguf"}}) {
        auto m = txn.get_model(key);
        ASSERT_TRUE(m) << key;
        ASSERT_EQ(m->versions.size(), 1u);
        const ModelVersion& v = m->current_version();
        EXPECT_FALSE(v.is_tree()) << key;
        ASSERT_TRUE(v.blob);
        EXPECT_EQ(v.blob->hex(), sha) << key;
        EXPECT_EQ(v.ext, ext);
        EXPECT_EQ(v.label, kC1.substr(0, 7));
        // Zero copy, as for trees: the store's blob is the cache's file.
        struct stat a, b;
        ASSERT_EQ(::stat(s.blobs().path_of(*v.blob).c_str(), &a), 0);
        const std::string repo = key == std::string("vae/org/sdxl-vae/sdxl_vae.safetensors")
                                     ? "models--org--sdxl-vae"
                                 : ext == std::string(".gguf") ? "models--city--flux-gguf"
                                                               : "models--org--detail-lora";
        ASSERT_EQ(::stat((hf.repo(repo) / "blobs" / sha).c_str(), &b), 0);
        EXPECT_EQ(a.st_ino, b.st_ino) << key;
    }
    // The README and config are left out, and the report says so.
    for (const auto& it : rep.items)
        if (it.model_key == "lora/org/detail-lora/detail_tweaker.safetensors") {
            EXPECT_EQ(it.files, 1u);
            EXPECT_NE(it.detail.find("left out: README.md, config.json"), std::string::npos)
                << it.detail;
        }
    auto bert = txn.get_model("other/org/bert");
    ASSERT_TRUE(bert) << "a weight file that names no category keeps its repo's files";
    EXPECT_EQ(bert->current_version().tree.size(), 3u);
    auto two = txn.get_model("other/org/two");
    ASSERT_TRUE(two);
    EXPECT_EQ(two->current_version().tree.size(), 2u);
}

TEST_F(HfSingleFileTest, TheFilesShowInTheToolsFoldersAndASecondImportIsANoOp) {
    if (!stdfs::exists("/dev/fuse")) GTEST_SKIP() << "no /dev/fuse";
    make_repos();
    CliResult r = modelfs({"import", "--hf-cache", hf.root().string()});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.out.find("left out: README.md, config.json"), std::string::npos) << r.out;
    r = modelfs({"--json", "import", "--hf-cache", hf.root().string()});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const json second = json::parse(r.out);
    ASSERT_EQ(second["caches"].size(), 1u) << second;
    for (const auto& it : second["caches"][0]["items"]) EXPECT_EQ(it["outcome"], "unchanged") << it;
    const stdfs::path mnt = dir / "mnt";
    Mount m(store_dir, mnt);
    ASSERT_TRUE(m.ok());
    EXPECT_EQ(sha256_hex_of_file(mnt / "comfyui" / "loras" / "org" / "detail-lora" /
                                 "detail_tweaker.safetensors"),
              lora_sha);
    EXPECT_EQ(sha256_hex_of_file(mnt / "a1111" / "Lora" / "org" / "detail-lora" /
                                 "detail_tweaker.safetensors"),
              lora_sha);
    EXPECT_EQ(
        sha256_hex_of_file(mnt / "comfyui" / "vae" / "org" / "sdxl-vae" / "sdxl_vae.safetensors"),
        vae_sha);
    EXPECT_EQ(sha256_hex_of_file(mnt / "comfyui" / "diffusion_models" / "city" / "flux-gguf" /
                                 "flux1-dev-Q4_K_S.gguf"),
              gguf_sha);
    EXPECT_EQ(m.stop(), 0);
}

TEST_F(OtherStoresTest, HfWithoutRefsMainTheNewestSnapshotIsCurrent) {
    make_sd();
    const std::string unet3 = hf.lfs(sd, 300000, 4);
    hf.link(sd, kC3, "model_index.json", index);
    hf.link(sd, kC3, "unet/diffusion_pytorch_model.safetensors", unet3);
    stdfs::remove(hf.repo(sd) / "refs" / "main");
    // The newest is neither the first nor the last by name.
    const auto now = stdfs::file_time_type::clock::now();
    stdfs::last_write_time(hf.repo(sd) / "snapshots" / kC1, now - std::chrono::hours(48));
    stdfs::last_write_time(hf.repo(sd) / "snapshots" / kC2, now);
    stdfs::last_write_time(hf.repo(sd) / "snapshots" / kC3, now - std::chrono::hours(24));
    Store s = Store::open(store_dir);
    ASSERT_TRUE(adopt::import_hf_cache(s, hf.root()).ok());
    auto m = s.catalog().read().get_model("diffusers/org/sd");
    ASSERT_TRUE(m);
    EXPECT_EQ(m->versions.size(), 3u);
    EXPECT_EQ(m->current_version().label, kC2.substr(0, 7));
}

TEST_F(OllamaTest, WithoutAValueTheCachesComeFromTheEnvironment) {
    make_sd();
    make_ollama();
    CliResult r =
        run_modelfs({"--store", store_dir.string(), "--json", "import", "--hf-cache", "--ollama"},
                    {{"HF_HUB_CACHE", hf.root().string()}, {"OLLAMA_MODELS", ol.string()}});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    json j = json::parse(r.out);
    ASSERT_EQ(j["caches"].size(), 2u) << r.out;
    EXPECT_EQ(j["caches"][0]["dir"], hf.root().string());
    EXPECT_EQ(j["caches"][0]["items"].size(), 2u);
    EXPECT_EQ(j["caches"][1]["dir"], ol.string());
    EXPECT_EQ(j["caches"][1]["items"].size(), 3u);
}

TEST_F(OtherStoresTest, CliRefusesOptionsThatDoNotApplyAndMissingCaches) {
    CliResult r = modelfs({"import", "--hf-cache", hf.root().string(), "--move"});
    EXPECT_EQ(r.exit_code, 2) << r.err;
    r = modelfs({"import", "--ollama", (dir / "nothing").string()});
    EXPECT_EQ(r.exit_code, 3) << r.err;
    EXPECT_NE(r.err.find("no Ollama models folder"), std::string::npos) << r.err;
    r = modelfs({"import"});
    EXPECT_EQ(r.exit_code, 2) << r.err;
}

}  // namespace
