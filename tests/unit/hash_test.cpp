// Hashes: known vectors, hex forms, and the chunked file readers (digest_fd, xxh128_fd,
// sha256_fd_from) against plain one-shot hashes of the same bytes.
#include "modelfs/store/hash.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <string_view>

// Header-only XXH3 (every function static, renamed): an implementation independent of the one
// modelfs_store links privately, to compute expectations.
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "modelfs/store/errors.h"
#include "modelfs/store/progress.h"
#include "modelfs/store/unique_fd.h"
#include "support/test_env.h"

namespace modelfs {
namespace {

namespace stdfs = std::filesystem;
namespace mt = modelfs::testing;

constexpr std::uint64_t kChunk = 4ull << 20;  // the reader's chunk size (chunk_pipeline.h)

const char* const kEmptySha = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
const char* const kAbcSha = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

// XXH3-128 of `data` in canonical (big-endian) hex, from the header-only implementation.
std::string ref_xxh128_hex(std::string_view data) {
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, XXH3_128bits(data.data(), data.size()));
    return to_hex(c.digest, sizeof c.digest);
}

UniqueFd open_ro(const stdfs::path& p) {
    UniqueFd fd(::open(p.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) throw std::runtime_error("cannot open " + p.string());
    return fd;
}

// ---- Known vectors -------------------------------------------------------------------------

TEST(HashSha256, KnownVectors) {
    EXPECT_EQ(sha256_of("").hex(), kEmptySha);
    EXPECT_EQ(sha256_of("abc").hex(), kAbcSha);
    EXPECT_EQ(sha256_of("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq").hex(),
              "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

TEST(HashSha256, HasherIncrementalEqualsOneShot) {
    Sha256Hasher h;
    h.update("a", 1);
    h.update("", 0);
    h.update("bc", 2);
    EXPECT_EQ(h.finish().hex(), kAbcSha);

    // One million 'a', fed in 1000-byte pieces (FIPS 180-2 vector).
    std::string block(1000, 'a');
    Sha256Hasher m;
    for (int i = 0; i < 1000; ++i) m.update(block.data(), block.size());
    EXPECT_EQ(m.finish().hex(), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(HashSha256, HasherSurvivesMove) {
    Sha256Hasher a;
    a.update("ab", 2);
    Sha256Hasher b(std::move(a));
    b.update("c", 1);
    Sha256Hasher c;
    c = std::move(b);
    EXPECT_EQ(c.finish().hex(), kAbcSha);
}

TEST(HashSha256, Autov2IsFirstTenHexDigits) {
    EXPECT_EQ(sha256_of("abc").autov2(), "ba7816bf8f");
    EXPECT_EQ(sha256_of("").autov2().size(), 10u);
}

TEST(HashXxh128, KnownVectors) {
    Xxh128Hasher e;
    EXPECT_EQ(e.finish().hex(), "99aa06d3014798d86001c324468d497f");
    Xxh128Hasher a;
    a.update("abc", 3);
    EXPECT_EQ(a.finish().hex(), "06b05ab6733a618578af5f94892f3950");
    // Same again from the independent implementation, so the literals above are not the only
    // witness.
    EXPECT_EQ(ref_xxh128_hex(""), "99aa06d3014798d86001c324468d497f");
    EXPECT_EQ(ref_xxh128_hex("abc"), "06b05ab6733a618578af5f94892f3950");
}

TEST(HashXxh128, HasherMatchesXxh3OnManyLengthsAndSplits) {
    // XXH3 has different code paths for 0-3, 4-8, 9-16, 17-128, 129-240 and longer inputs, and
    // the streaming state buffers 256-byte stripes: cover all, fed in odd pieces.
    std::string data;
    for (int i = 0; i < 5000; ++i) data.push_back(static_cast<char>((i * 131 + 7) % 251));
    for (std::size_t len : {0u, 1u, 3u, 4u, 8u, 9u, 16u, 17u, 128u, 129u, 240u, 241u, 255u, 256u,
                            257u, 1023u, 1024u, 1025u, 4999u}) {
        std::string_view s(data.data(), len);
        Xxh128Hasher one;
        one.update(s.data(), s.size());
        EXPECT_EQ(one.finish().hex(), ref_xxh128_hex(s)) << "one shot, length " << len;

        Xxh128Hasher pieces;
        for (std::size_t off = 0; off < len;) {
            std::size_t n = std::min<std::size_t>(len - off, 1 + off % 97);
            pieces.update(s.data() + off, n);
            off += n;
        }
        EXPECT_EQ(pieces.finish().hex(), ref_xxh128_hex(s)) << "in pieces, length " << len;
    }
}

TEST(HashXxh128, HasherSurvivesMove) {
    Xxh128Hasher a;
    a.update("ab", 2);
    Xxh128Hasher b(std::move(a));
    b.update("c", 1);
    Xxh128Hasher c;
    c = std::move(b);
    EXPECT_EQ(c.finish().hex(), ref_xxh128_hex("abc"));
}

// ---- Hex forms -----------------------------------------------------------------------------

TEST(HashHex, ToHexIsLowercaseTwoDigitsPerByte) {
    const std::uint8_t bytes[] = {0x00, 0x01, 0x0f, 0x10, 0xab, 0xff};
    EXPECT_EQ(to_hex(bytes, sizeof bytes), "00010f10abff");
    EXPECT_EQ(to_hex(bytes, 0), "");
}

TEST(HashHex, IsHex) {
    EXPECT_TRUE(is_hex("0123456789abcdefABCDEF"));
    EXPECT_TRUE(is_hex("a"));
    EXPECT_FALSE(is_hex(""));
    EXPECT_FALSE(is_hex("abg"));
    EXPECT_FALSE(is_hex("0x12"));
    EXPECT_FALSE(is_hex("12 34"));
    EXPECT_FALSE(is_hex("-1"));
}

TEST(HashHex, Sha256RoundTrip) {
    Sha256 h = sha256_of("abc");
    auto back = Sha256::from_hex(h.hex());
    ASSERT_TRUE(back.has_value());
    EXPECT_EQ(*back, h);
    EXPECT_EQ(back->hex(), kAbcSha);

    // Uppercase is accepted; the canonical form stays lowercase.
    std::string upper = kAbcSha;
    for (auto& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    auto from_upper = Sha256::from_hex(upper);
    ASSERT_TRUE(from_upper.has_value());
    EXPECT_EQ(*from_upper, h);
    EXPECT_EQ(from_upper->hex(), kAbcSha);

    // Every byte value survives.
    Sha256 all;
    for (std::size_t i = 0; i < all.bytes.size(); ++i)
        all.bytes[i] = static_cast<std::uint8_t>(i * 8 + 7);
    EXPECT_EQ(Sha256::from_hex(all.hex()), all);
}

TEST(HashHex, Xxh128RoundTrip) {
    Xxh128Hasher x;
    x.update("abc", 3);
    Xxh128 h = x.finish();
    auto back = Xxh128::from_hex(h.hex());
    ASSERT_TRUE(back.has_value());
    EXPECT_EQ(*back, h);
    EXPECT_EQ(back->hex().size(), 32u);
}

TEST(HashHex, FromHexRejectsBadInput) {
    const std::string good = kAbcSha;
    EXPECT_FALSE(Sha256::from_hex(""));
    EXPECT_FALSE(Sha256::from_hex(good.substr(0, 63)));        // one digit short
    EXPECT_FALSE(Sha256::from_hex(good.substr(0, 62)));        // one byte short
    EXPECT_FALSE(Sha256::from_hex(good + "0"));                // one digit long
    EXPECT_FALSE(Sha256::from_hex(good + "00"));               // one byte long
    EXPECT_FALSE(Sha256::from_hex("g" + good.substr(1)));      // non-hex at the start
    EXPECT_FALSE(Sha256::from_hex(good.substr(0, 63) + "z"));  // ... at the end
    EXPECT_FALSE(Sha256::from_hex(good.substr(0, 31) + " " + good.substr(32)));
    EXPECT_FALSE(Sha256::from_hex("0x" + good.substr(2)));
    EXPECT_FALSE(Sha256::from_hex(std::string(64, '\0')));

    EXPECT_FALSE(Xxh128::from_hex(""));
    EXPECT_FALSE(Xxh128::from_hex(std::string(31, 'a')));
    EXPECT_FALSE(Xxh128::from_hex(std::string(33, 'a')));
    EXPECT_FALSE(Xxh128::from_hex(good));  // a SHA-256 is not an XXH128
    EXPECT_FALSE(Xxh128::from_hex(std::string(31, 'a') + "x"));
    EXPECT_TRUE(Xxh128::from_hex(std::string(32, 'a')));
}

TEST(HashHex, OrderingFollowsBytes) {
    auto a = *Sha256::from_hex(std::string(63, '0') + "1");
    auto b = *Sha256::from_hex("1" + std::string(63, '0'));
    EXPECT_LT(a, b);
    EXPECT_NE(a, b);
    EXPECT_EQ(a, *Sha256::from_hex(a.hex()));
}

// ---- File digests --------------------------------------------------------------------------

class HashFileDigest : public ::testing::TestWithParam<std::uint64_t> {
  protected:
    mt::TempDir dir_{"modelfs-hash"};
};

TEST_P(HashFileDigest, DigestFdEqualsOneShotHashes) {
    const std::uint64_t size = GetParam();
    const stdfs::path p = dir_ / "f.bin";
    mt::write_random_file(p, size, size + 11);
    const std::string content = mt::read_file(p);
    ASSERT_EQ(content.size(), size);

    UniqueFd fd = open_ro(p);
    Progress progress;
    FileDigests d = digest_fd(fd.get(), &progress, "f.bin");
    EXPECT_EQ(d.size, size);
    EXPECT_EQ(d.sha256.hex(), mt::sha256_hex_of_file(p));
    EXPECT_EQ(d.xxh128.hex(), ref_xxh128_hex(content));
    EXPECT_EQ(progress.done_bytes.load(), size);

    // xxh128_fd alone agrees, and counts the same bytes again.
    EXPECT_EQ(xxh128_fd(fd.get(), &progress, "f.bin"), d.xxh128);
    EXPECT_EQ(progress.done_bytes.load(), 2 * size);

    // sha256_fd_from(0) is the whole-file SHA-256.
    EXPECT_EQ(sha256_fd_from(fd.get(), 0, nullptr, "f.bin"), d.sha256);
}

INSTANTIATE_TEST_SUITE_P(Sizes, HashFileDigest,
                         ::testing::Values(0, 1, 4095, kChunk - 1, kChunk, kChunk + 1, 2 * kChunk,
                                           5 * kChunk + 12345),  // ~20 MiB, more than the ring
                         [](const auto& info) { return "size_" + std::to_string(info.param); });

TEST(HashFileDigests, IgnoreTheFilePosition) {
    mt::TempDir dir("modelfs-hash");
    const stdfs::path p = dir / "f.bin";
    mt::write_random_file(p, 10000, 3);
    UniqueFd fd = open_ro(p);
    ASSERT_EQ(::lseek(fd.get(), 5000, SEEK_SET), 5000);
    FileDigests d = digest_fd(fd.get());
    EXPECT_EQ(d.size, 10000u);
    EXPECT_EQ(d.sha256.hex(), mt::sha256_hex_of_file(p));
}

TEST(HashFileDigests, Sha256FromOffset) {
    mt::TempDir dir("modelfs-hash");
    const stdfs::path p = dir / "f.bin";
    const std::uint64_t size = kChunk + 5000;
    mt::write_random_file(p, size, 9);
    const std::string content = mt::read_file(p);
    UniqueFd fd = open_ro(p);

    for (std::uint64_t off : {std::uint64_t{1}, std::uint64_t{8}, std::uint64_t{4096}, kChunk - 1,
                              kChunk, kChunk + 1, size - 1}) {
        Progress progress;
        Sha256 got = sha256_fd_from(fd.get(), off, &progress, "f.bin");
        EXPECT_EQ(got, sha256_of(std::string_view(content).substr(off))) << "offset " << off;
        EXPECT_EQ(progress.done_bytes.load(), size - off) << "offset " << off;
    }
    // At or past the end: the hash of nothing, no bytes counted.
    for (std::uint64_t off : {size, size + 1, size + kChunk}) {
        Progress progress;
        EXPECT_EQ(sha256_fd_from(fd.get(), off, &progress, "f.bin").hex(), kEmptySha);
        EXPECT_EQ(progress.done_bytes.load(), 0u);
    }
}

TEST(HashFileDigests, ProgressAccumulatesAcrossCalls) {
    mt::TempDir dir("modelfs-hash");
    mt::write_random_file(dir / "a", 3 * kChunk + 17, 1);
    mt::write_random_file(dir / "b", 1234, 2);
    Progress progress;
    progress.total_bytes = 999;  // readers never touch totals; callers own them
    UniqueFd a = open_ro(dir / "a"), b = open_ro(dir / "b");
    digest_fd(a.get(), &progress, "a");
    digest_fd(b.get(), &progress, "b");
    EXPECT_EQ(progress.done_bytes.load(), 3 * kChunk + 17 + 1234);
    EXPECT_EQ(progress.total_bytes.load(), 999u);
    EXPECT_EQ(progress.done_items.load(), 0u);
}

TEST(HashFileDigests, ReadErrorIsStoreErrorNamingTheFile) {
    mt::TempDir dir("modelfs-hash");
    // A directory opens fine but every read fails (EISDIR).
    UniqueFd fd(::open(dir.path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    ASSERT_TRUE(fd);
    for (int which = 0; which < 3; ++which) {
        try {
            if (which == 0) digest_fd(fd.get(), nullptr, "my-model.safetensors");
            if (which == 1) xxh128_fd(fd.get(), nullptr, "my-model.safetensors");
            if (which == 2) sha256_fd_from(fd.get(), 0, nullptr, "my-model.safetensors");
            ADD_FAILURE() << "no error from reader " << which;
        } catch (const StoreError& e) {
            EXPECT_EQ(e.kind(), ErrorKind::io) << which;
            EXPECT_NE(std::string(e.what()).find("my-model.safetensors"), std::string::npos)
                << e.what();
        }
    }
    // A closed descriptor: EBADF, also an io error.
    EXPECT_THROW(digest_fd(-1, nullptr, "x"), StoreError);
}

}  // namespace
}  // namespace modelfs
