#include "support/sized_models.h"

#include <random>
#include <stdexcept>

#include "support/gguf_writer.h"
#include "support/safetensors_writer.h"

namespace modelfs::testing {

namespace {

// `n` pseudo-random bytes from `seed`.
std::string random_bytes(std::uint64_t n, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::string out;
    out.reserve(n);
    while (out.size() < n) {
        const std::uint64_t v = rng();
        for (int i = 0; i < 8 && out.size() < n; ++i) out += static_cast<char>(v >> (8 * i));
    }
    return out;
}

}  // namespace

std::string sized_safetensors_bytes(std::uint64_t size, std::uint64_t seed) {
    if (size < kMinSizedSafetensors)
        throw std::invalid_argument("sized_safetensors_bytes: size below " +
                                    std::to_string(kMinSizedSafetensors));
    // A fixed 128-byte header (the JSON padded with spaces, as the reference writer pads it)
    // leaves the rest to the tensor.
    constexpr std::uint64_t kHeader = 128;
    const std::uint64_t data = size - 8 - kHeader;
    std::string header = "{\"data\":{\"dtype\":\"U8\",\"shape\":[" + std::to_string(data) +
                         "],\"data_offsets\":[0," + std::to_string(data) + "]}}";
    header.resize(kHeader, ' ');
    return raw_safetensors(header, random_bytes(data, seed));
}

void write_sized_safetensors(const std::filesystem::path& p, std::uint64_t size,
                             std::uint64_t seed) {
    std::filesystem::create_directories(p.parent_path());
    write_file(p, sized_safetensors_bytes(size, seed));
}

std::string sized_gguf_bytes(std::uint64_t size, std::uint64_t seed) {
    if (size < kMinSizedGguf)
        throw std::invalid_argument("sized_gguf_bytes: size below " +
                                    std::to_string(kMinSizedGguf));
    // 24 bytes of header and 36 of tensor info ("data", 1 dimension), padded to 64.
    const std::uint64_t data = size - kMinSizedGguf;
    GgufWriter w;
    w.raw_tensor("data", 24 /* GGML_TYPE_I8 */, {data}, data);
    std::string out = w.bytes();
    if (out.size() != size) throw std::logic_error("sized_gguf_bytes: layout changed");
    out.replace(kMinSizedGguf, data, random_bytes(data, seed));
    return out;
}

void write_sized_gguf(const std::filesystem::path& p, std::uint64_t size, std::uint64_t seed) {
    std::filesystem::create_directories(p.parent_path());
    write_file(p, sized_gguf_bytes(size, seed));
}

}  // namespace modelfs::testing
