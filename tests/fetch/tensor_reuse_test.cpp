// Diff-only downloads (fetch/src/reuse.h): a remote file whose tensor map is known is fetched by
// copying the tensors the store holds and downloading only the rest from nginx on 127.0.0.1; the
// whole file is verified as always, so a map that lies costs bytes, not correctness.
#include <fcntl.h>
#include <unistd.h>

#include <filesystem>

#include "fetch_env.h"
#include "modelfs/fetch/fetcher.h"
#include "modelfs/store/errors.h"
#include "modelfs/store/tensor_map.h"
#include "modelfs/store/tensor_split.h"
#include "support/http_servers.h"
#include "support/safetensors_writer.h"

namespace modelfs::test {
namespace {

using modelfs::testing::SafetensorsSpec;

SafetensorsSpec base_spec() {
    SafetensorsSpec s;
    s.metadata = {{"title", "base"}};
    for (int i = 0; i < 12; ++i)
        s.tensors.push_back({"model.diffusion_model.b" + std::to_string(i) + ".weight",
                             "F32",
                             {512, 512},
                             100 + i,
                             std::nullopt});
    return s;
}

// The tensor map of a file, as a writer's push publishes it.
std::vector<PieceSum> map_of(const std::filesystem::path& f) {
    UniqueFd fd(::open(f.c_str(), O_RDONLY | O_CLOEXEC));
    const std::uint64_t size = std::filesystem::file_size(f);
    std::vector<PieceSum> out;
    for (const auto& p : model_file_pieces(fd.get(), size)) {
        std::string buf(p.length, '\0');
        EXPECT_EQ(::pread(fd.get(), buf.data(), buf.size(), static_cast<off_t>(p.offset)),
                  static_cast<ssize_t>(buf.size()));
        Xxh128Hasher x;
        x.update(buf.data(), buf.size());
        out.push_back({x.finish(), p.length});
    }
    return out;
}

class TensorReuseTest : public FetchEnv {
  protected:
    void SetUp() override {
        FetchEnv::SetUp();
        const std::filesystem::path b = dir_ / "base.safetensors";
        modelfs::testing::write_safetensors(b, base_spec());
        ImportOptions o;
        o.category = Category::checkpoint;
        o.name = "base";
        ASSERT_TRUE(store().import({b}, o).ok());
    }
    std::uint64_t bytes_sent(const NginxServer& s, const std::string& path) {
        std::uint64_t n = 0;
        for (const auto& r : s.requests())
            if (r.method == "GET" && r.path == path) n += r.bytes;
        return n;
    }
};

TEST_F(TensorReuseTest, OnlyTheChangedTensorsAreDownloaded) {
    SafetensorsSpec ft = base_spec();
    ft.metadata = {{"title", "fine-tune"}};
    ft.tensors[3].seed = 4000;
    ft.tensors[7].seed = 4001;
    const std::uint64_t size = modelfs::testing::write_safetensors(www() / "ft.safetensors", ft);
    const Sha256 h =
        *Sha256::from_hex(modelfs::testing::sha256_hex_of_file(www() / "ft.safetensors"));
    NginxServer nginx(www());
    add_remote(h, size, {nginx.url("ft.safetensors")});
    add_model("ft", h, size);
    {
        auto txn = store().catalog().write();
        put_tensor_map(txn, h, size, map_of(www() / "ft.safetensors"));
        txn.commit();
    }
    fetch::Fetcher f(store(), fast_config());
    auto d = f.fetch(h);
    auto r = d->wait();
    ASSERT_TRUE(r.ok) << r.error;
    const std::uint64_t changed = 2 * (512 * 512 * 4);
    const std::uint64_t header = size - 12 * (512 * 512 * 4);
    EXPECT_EQ(d->status().reused_bytes, size - changed - header);
    // What crossed the network: the changed tensors and the header, no more.
    const std::uint64_t sent = bytes_sent(nginx, "/ft.safetensors");
    EXPECT_GE(sent, changed + header);
    EXPECT_LE(sent, (changed + header) * 11 / 10) << "downloaded more than what changed";
    // Verified, and stored as extents of the base it shares tensors with.
    auto rec = record(h);
    ASSERT_TRUE(rec);
    EXPECT_EQ(rec->state, BlobState::present);
    EXPECT_TRUE(rec->composed());
    FileDigests dg = store().digest_composed(h, *rec);
    EXPECT_EQ(dg.sha256, h);
}

TEST_F(TensorReuseTest, AMapThatLiesCostsBytesNotCorrectness) {
    // The map says the file is the base's tensors, but the server's file differs in one of them.
    SafetensorsSpec ft = base_spec();
    ft.tensors[5].seed = 5000;
    const std::uint64_t size = modelfs::testing::write_safetensors(www() / "ft.safetensors", ft);
    const Sha256 h =
        *Sha256::from_hex(modelfs::testing::sha256_hex_of_file(www() / "ft.safetensors"));
    modelfs::testing::write_safetensors(dir_ / "liar.safetensors", base_spec());
    const std::vector<PieceSum> lie = map_of(dir_ / "liar.safetensors");
    NginxServer nginx(www());
    add_remote(h, size, {nginx.url("ft.safetensors")});
    add_model("ft", h, size);
    {
        auto txn = store().catalog().write();
        put_tensor_map(txn, h, size, lie);
        txn.commit();
    }
    fetch::Fetcher f(store(), fast_config());
    auto r = f.fetch(h)->wait();
    ASSERT_TRUE(r.ok) << r.error;
    auto rec = record(h);
    ASSERT_TRUE(rec);
    EXPECT_EQ(rec->state, BlobState::present);
    EXPECT_EQ(
        rec->composed()
            ? store().digest_composed(h, *rec).sha256
            : *Sha256::from_hex(modelfs::testing::sha256_hex_of_file(store().blobs().path_of(h))),
        h);
}

TEST_F(TensorReuseTest, AMapThatDoesNotAddUpIsRefused) {
    auto txn = store().catalog().write();
    EXPECT_THROW(put_tensor_map(txn, sha256_of("x"), 100, {{Xxh128{}, 99}}), StoreError);
    EXPECT_THROW(decode_tensor_map("not cbor"), StoreError);
    // An array claiming 2^64-1 entries (nlohmann throws for it even when asked not to).
    EXPECT_THROW(decode_tensor_map(std::string("\x9b\xff\xff\xff\xff\xff\xff\xff\xff", 9)),
                 StoreError);
}

}  // namespace
}  // namespace modelfs::test
