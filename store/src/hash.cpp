#include "modelfs/store/hash.h"

#include <openssl/evp.h>
#include <xxhash.h>

#include <unistd.h>

#include <cerrno>
#include <stdexcept>
#include <vector>

#include "modelfs/store/errors.h"

#include "chunk_pipeline.h"

namespace modelfs {
namespace {

int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

template <std::size_t N>
std::optional<std::array<std::uint8_t, N>> bytes_from_hex(std::string_view hex) {
    if (hex.size() != 2 * N) return std::nullopt;
    std::array<std::uint8_t, N> out{};
    for (std::size_t i = 0; i < N; ++i) {
        int hi = hex_value(hex[2 * i]), lo = hex_value(hex[2 * i + 1]);
        if (hi < 0 || lo < 0) return std::nullopt;
        out[i] = static_cast<std::uint8_t>(hi << 4 | lo);
    }
    return out;
}

}  // namespace

std::string to_hex(const std::uint8_t* data, std::size_t size) {
    static constexpr char kDigits[] = "0123456789abcdef";
    std::string s(size * 2, '0');
    for (std::size_t i = 0; i < size; ++i) {
        s[2 * i] = kDigits[data[i] >> 4];
        s[2 * i + 1] = kDigits[data[i] & 0xf];
    }
    return s;
}

bool is_hex(std::string_view s) {
    if (s.empty()) return false;
    for (char c : s)
        if (hex_value(c) < 0) return false;
    return true;
}

std::string Sha256::hex() const {
    return to_hex(bytes.data(), bytes.size());
}
std::optional<Sha256> Sha256::from_hex(std::string_view hex) {
    auto b = bytes_from_hex<32>(hex);
    if (!b) return std::nullopt;
    return Sha256{*b};
}
std::string Xxh128::hex() const {
    return to_hex(bytes.data(), bytes.size());
}
std::optional<Xxh128> Xxh128::from_hex(std::string_view hex) {
    auto b = bytes_from_hex<16>(hex);
    if (!b) return std::nullopt;
    return Xxh128{*b};
}

struct Sha256Hasher::Ctx {
    struct Free {
        void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
    };
    std::unique_ptr<EVP_MD_CTX, Free> ctx{EVP_MD_CTX_new()};
};

Sha256Hasher::Sha256Hasher() : ctx_(std::make_unique<Ctx>()) {
    if (!ctx_->ctx || EVP_DigestInit_ex(ctx_->ctx.get(), EVP_sha256(), nullptr) != 1)
        throw std::runtime_error("OpenSSL: cannot initialise SHA-256");
}
Sha256Hasher::~Sha256Hasher() = default;
Sha256Hasher::Sha256Hasher(Sha256Hasher&&) noexcept = default;
Sha256Hasher& Sha256Hasher::operator=(Sha256Hasher&&) noexcept = default;

void Sha256Hasher::update(const void* data, std::size_t size) {
    if (EVP_DigestUpdate(ctx_->ctx.get(), data, size) != 1)
        throw std::runtime_error("OpenSSL: SHA-256 update failed");
}

Sha256 Sha256Hasher::finish() {
    Sha256 out;
    unsigned len = 0;
    if (EVP_DigestFinal_ex(ctx_->ctx.get(), out.bytes.data(), &len) != 1 || len != 32)
        throw std::runtime_error("OpenSSL: SHA-256 final failed");
    return out;
}

struct Xxh128Hasher::State {
    struct Free {
        void operator()(XXH3_state_t* s) const { XXH3_freeState(s); }
    };
    std::unique_ptr<XXH3_state_t, Free> st{XXH3_createState()};
};

Xxh128Hasher::Xxh128Hasher() : state_(std::make_unique<State>()) {
    if (!state_->st || XXH3_128bits_reset(state_->st.get()) != XXH_OK)
        throw std::runtime_error("xxHash: cannot initialise XXH3-128");
}
Xxh128Hasher::~Xxh128Hasher() = default;
Xxh128Hasher::Xxh128Hasher(Xxh128Hasher&&) noexcept = default;
Xxh128Hasher& Xxh128Hasher::operator=(Xxh128Hasher&&) noexcept = default;

void Xxh128Hasher::update(const void* data, std::size_t size) {
    XXH3_128bits_update(state_->st.get(), data, size);
}

Xxh128 Xxh128Hasher::finish() {
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, XXH3_128bits_digest(state_->st.get()));
    Xxh128 out;
    static_assert(sizeof(c.digest) == 16);
    std::copy(std::begin(c.digest), std::end(c.digest), out.bytes.begin());
    return out;
}

Sha256 sha256_of(std::string_view data) {
    Sha256Hasher h;
    h.update(data.data(), data.size());
    return h.finish();
}

FileDigests digest_fd(int fd, Progress* progress, const char* name) {
    Sha256Hasher sha;
    Xxh128Hasher xxh;
    FileDigests d;
    d.size = read_chunks(
        fd, 0, [&](std::span<const std::byte> c) { xxh.update(c.data(), c.size()); },
        [&](std::span<const std::byte> c) { sha.update(c.data(), c.size()); }, progress, name);
    d.sha256 = sha.finish();
    d.xxh128 = xxh.finish();
    return d;
}

Xxh128 xxh128_fd(int fd, Progress* progress, const char* name) {
    Xxh128Hasher xxh;
    read_chunks(
        fd, 0, [&](std::span<const std::byte> c) { xxh.update(c.data(), c.size()); }, {}, progress,
        name);
    return xxh.finish();
}

Sha256 sha256_fd_from(int fd, std::uint64_t offset, Progress* progress, const char* name) {
    Sha256Hasher sha;
    read_chunks(
        fd, offset, [&](std::span<const std::byte> c) { sha.update(c.data(), c.size()); }, {},
        progress, name);
    return sha.finish();
}

Xxh128 sample_fingerprint(int fd, std::uint64_t size) {
    constexpr std::uint64_t kSample = 64 << 10;
    Xxh128Hasher h;
    h.update(&size, sizeof size);
    std::vector<char> buf(kSample);
    const std::uint64_t offsets[] = {0, size / 2, size > kSample ? size - kSample : 0};
    for (std::uint64_t off : offsets) {
        ssize_t n = ::pread(fd, buf.data(), buf.size(), static_cast<off_t>(off));
        if (n < 0) throw_errno("sampling a file", errno);
        h.update(buf.data(), static_cast<std::size_t>(n));
    }
    return h.finish();
}

}  // namespace modelfs
