// Checking that a GGUF file (llama.cpp's model format) is complete: its header parses and every
// tensor's bytes lie inside the file. Everything here treats the file as hostile input.
//
// Layout (v2 and v3; all integers little-endian, or big-endian in a v3 file whose version field
// reads byte-swapped): "GGUF", u32 version, u64 tensor count, u64 metadata count; the metadata
// (key: u64 length + bytes; u32 value type; value); the tensor infos (name; u32 n_dims; n_dims
// u64 dims; u32 ggml type; u64 offset); padding to `general.alignment` (u32, default 32); the
// data section, where each tensor starts at its offset.
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace modelfs {

inline constexpr std::uint32_t kGgufDefaultAlignment = 32;
// GGML_MAX_DIMS: llama.cpp refuses tensors of more dimensions; so do we.
inline constexpr std::uint32_t kGgufMaxDims = 4;
// Arrays may hold arrays (llama.cpp refuses any nesting, gguf-py reads it). Deeper than this is
// refused, so a hostile file cannot make the reader recurse without end.
inline constexpr std::uint32_t kGgufMaxArrayDepth = 16;

// Malformed or incomplete content. The message says what is wrong but not which file: the caller
// adds the path.
class GgufError : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

struct GgufInfo {
    std::uint32_t version = 0;
    bool big_endian = false;
    std::uint64_t tensor_count = 0;
    std::uint64_t metadata_count = 0;
    std::uint32_t alignment = kGgufDefaultAlignment;
    std::uint64_t data_offset = 0;  // where the data section starts (aligned)
    // End of the last byte of any tensor whose ggml type is known (data_offset when none).
    std::uint64_t data_end = 0;
    // Tensors of a ggml type this build does not know: their size cannot be computed, so only
    // their start is checked against the file size.
    std::uint64_t unknown_type_tensors = 0;
    // The string value of `general.architecture` ("llama", "flux", "t5encoder", ...) as written;
    // empty when the key is missing, not a string, or longer than the names this reader keeps.
    std::string architecture;
};

// Reads and checks the header of an open GGUF file of `file_size` bytes: magic, version, every
// metadata value of every type (arrays, nested arrays, strings), `general.alignment` (a u32,
// a power of two), every tensor info (at most kGgufMaxDims dimensions, rows a whole number of
// blocks of its type, sizes that fit in 64 bits) and that each tensor's
// [data_offset + offset, + byte size) lies inside the file. Bytes after the last tensor are
// allowed (llama.cpp allows them).
//
// Returns std::nullopt for a version other than 2 and 3 (1 is obsolete, later ones unknown): such
// a file cannot be checked. Throws GgufError (bad or truncated content) or std::system_error
// (I/O). Every count and length is checked against the bytes left in the file before it is used,
// memory stays constant whatever the file claims, and no byte is read twice: a hostile file costs
// at most one read of its header region.
// `tensor_ranges` (optional): gets (absolute offset, byte size) of every tensor of a known type,
// in header order (tensor-level dedup cuts files there).
std::optional<GgufInfo> read_gguf_header(
    int fd, std::uint64_t file_size,
    std::vector<std::pair<std::uint64_t, std::uint64_t>>* tensor_ranges = nullptr);

// File name (or bare extension) that claims GGUF content: ".gguf", any case.
bool has_gguf_extension(std::string_view filename);

}  // namespace modelfs
