// What the fetch tests share: a fresh store, a folder the servers serve, catalog records for
// remote blobs (written straight into the catalog, as `modelfs add` leaves them), and a
// downloader configured for fast tests.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "modelfs/fetch/config.h"
#include "modelfs/store/catalog.h"
#include "modelfs/store/hash.h"
#include "modelfs/store/store.h"
#include "support/test_env.h"

namespace modelfs::test {

inline fetch::FetchConfig fast_config() {
    fetch::FetchConfig c;
    c.chunk_size = 256 << 10;
    c.connections_per_blob = 4;
    c.backoff_initial = std::chrono::milliseconds(20);
    c.backoff_max = std::chrono::milliseconds(3000);
    c.retries = 4;
    // Long enough that a loaded machine (ASan, parallel builds) never trips it by accident; the
    // stall tests set their own.
    c.stall_timeout = std::chrono::seconds(10);
    c.connect_timeout = std::chrono::seconds(5);
    return c;
}

class FetchEnv : public ::testing::Test {
  protected:
    void SetUp() override {
        std::filesystem::create_directories(www());
        store_.emplace(Store::init(dir_ / "store"));
    }

    std::filesystem::path www() const { return dir_ / "www"; }
    Store& store() { return *store_; }

    // A random file of `size` bytes under www/; returns its SHA-256.
    Sha256 make_file(const std::string& name, std::uint64_t size, std::uint64_t seed = 1) {
        auto p = www() / name;
        std::filesystem::create_directories(p.parent_path());
        modelfs::testing::write_random_file(p, size, seed);
        return *Sha256::from_hex(modelfs::testing::sha256_hex_of_file(p));
    }
    std::string content(const std::string& name) const {
        return modelfs::testing::read_file(www() / name);
    }

    // A `remote` blob record with these sources, as `modelfs add` writes it.
    void add_remote(const Sha256& key, std::uint64_t size, const std::vector<std::string>& urls,
                    bool stream = false, bool placeholder = false) {
        BlobRecord r;
        r.size = size;
        r.state = BlobState::remote;
        r.placeholder = placeholder;
        for (const auto& u : urls) r.sources.push_back({u, stream});
        auto txn = store().catalog().write();
        txn.put_blob(key, r);
        txn.commit();
    }
    // A single-file model using `blob`.
    void add_model(const std::string& name, const Sha256& blob, std::uint64_t size) {
        Model m;
        m.category = Category::lora;
        m.name = name;
        ModelVersion v;
        v.label = "v1";
        v.added = 1;
        v.blob = blob;
        v.ext = ".safetensors";
        v.size = size;
        m.versions.push_back(v);
        auto txn = store().catalog().write();
        txn.put_model(m);
        txn.commit();
    }

    std::optional<BlobRecord> record(const Sha256& h) {
        return store().catalog().read().get_blob(h);
    }
    bool blob_file_is(const Sha256& h, const std::string& bytes) {
        auto p = store().blobs().path_of(h);
        if (!std::filesystem::exists(p)) return false;
        return modelfs::testing::read_file(p) == bytes;
    }
    std::size_t files_in(const std::string& sub) {
        std::size_t n = 0;
        std::error_code ec;
        for (std::filesystem::recursive_directory_iterator it(dir_ / "store" / sub, ec), end;
             !ec && it != end; it.increment(ec))
            if (it->is_regular_file()) ++n;
        return n;
    }

    modelfs::testing::TempDir dir_{"modelfs-fetch"};
    std::optional<Store> store_;
};

}  // namespace modelfs::test
