// The hashes modelfs records: SHA-256 (content identity), XXH3-128 (quick re-checks) and the
// derived short forms the model ecosystem uses (Civitai AutoV2, AutoV3).
#pragma once

#include <array>
#include <compare>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "modelfs/store/progress.h"

namespace modelfs {

struct Sha256 {
    std::array<std::uint8_t, 32> bytes{};

    std::string hex() const;
    // Civitai AutoV2: the first 10 hex digits.
    std::string autov2() const { return hex().substr(0, 10); }
    static std::optional<Sha256> from_hex(std::string_view hex);
    auto operator<=>(const Sha256&) const = default;
};

struct Xxh128 {
    std::array<std::uint8_t, 16> bytes{};  // canonical (big-endian) form, as XXH128_canonical_t

    std::string hex() const;
    static std::optional<Xxh128> from_hex(std::string_view hex);
    auto operator<=>(const Xxh128&) const = default;
};

std::string to_hex(const std::uint8_t* data, std::size_t size);
bool is_hex(std::string_view s);

// Incremental SHA-256 through OpenSSL EVP (uses SHA-NI where the CPU has it).
class Sha256Hasher {
  public:
    Sha256Hasher();
    ~Sha256Hasher();
    Sha256Hasher(Sha256Hasher&&) noexcept;
    Sha256Hasher& operator=(Sha256Hasher&&) noexcept;

    void update(const void* data, std::size_t size);
    Sha256 finish();

  private:
    struct Ctx;
    std::unique_ptr<Ctx> ctx_;
};

class Xxh128Hasher {
  public:
    Xxh128Hasher();
    ~Xxh128Hasher();
    Xxh128Hasher(Xxh128Hasher&&) noexcept;
    Xxh128Hasher& operator=(Xxh128Hasher&&) noexcept;

    void update(const void* data, std::size_t size);
    Xxh128 finish();

  private:
    struct State;
    std::unique_ptr<State> state_;
};

Sha256 sha256_of(std::string_view data);

// Hashes of a whole file or of a range of it, read with large preads, counted into `progress`
// when given. Throw StoreError on I/O errors, naming `name`.
struct FileDigests {
    Sha256 sha256;
    Xxh128 xxh128;
    std::uint64_t size = 0;
};

// SHA-256 and XXH3-128 of the whole file in one read pass; SHA-256 runs on a second thread so
// the pass costs the slower hash, not the sum.
FileDigests digest_fd(int fd, Progress* progress = nullptr, const char* name = "file");
// XXH3-128 only: the quick check.
Xxh128 xxh128_fd(int fd, Progress* progress = nullptr, const char* name = "file");
// SHA-256 of [offset, end of file): AutoV3 when offset is a safetensors data offset.
Sha256 sha256_fd_from(int fd, std::uint64_t offset, Progress* progress = nullptr,
                      const char* name = "file");

// A cheap content fingerprint: XXH3-128 of the size and three 64 KiB samples (start, middle,
// end). Different fingerprints mean different content; equal ones only make a duplicate likely.
Xxh128 sample_fingerprint(int fd, std::uint64_t size);

}  // namespace modelfs
