// Valid model files of an exact size, for tests that only need "some model of N bytes": the
// drop-in for write_random_file() wherever the name says .safetensors or .gguf, since the store
// refuses incomplete files of those formats (store/FORMAT.md, "Complete model files").
//
// The content is pseudo-random bytes from `seed` inside a minimal valid header: the same
// (size, seed) always gives the same bytes, another seed other bytes, as write_random_file().
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

namespace modelfs::testing {

// One U8 tensor "data" filling the file; `size` must be at least kMinSizedSafetensors.
inline constexpr std::uint64_t kMinSizedSafetensors = 136;
std::string sized_safetensors_bytes(std::uint64_t size, std::uint64_t seed);
void write_sized_safetensors(const std::filesystem::path& p, std::uint64_t size,
                             std::uint64_t seed);

// GGUF v3, one I8 tensor "data" filling the file; `size` must be at least kMinSizedGguf.
inline constexpr std::uint64_t kMinSizedGguf = 64;
std::string sized_gguf_bytes(std::uint64_t size, std::uint64_t seed);
void write_sized_gguf(const std::filesystem::path& p, std::uint64_t size, std::uint64_t seed);

}  // namespace modelfs::testing
