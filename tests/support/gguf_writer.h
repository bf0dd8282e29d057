// Synthetic GGUF files for tests, written independently of store/src/gguf.cpp (its own type
// table, its own encoding), so the parser is checked against a second reading of the format.
//
// Add metadata and tensors, then bytes() gives the file: "GGUF", version, counts, the metadata
// in insertion order, the tensor infos, padding to the alignment, and the tensors' data back to
// back, each starting at a multiple of the alignment (as llama.cpp's and gguf-py's writers lay
// them out). The data is deterministic pseudo-random bytes. By default the file ends right after
// the last tensor, so cutting off any byte makes it incomplete; pad_end adds the writers' final
// padding.
//
// For hostile input the raw encoders (u32(), u64(), str()) and kv_raw()/raw_tail let a test put
// any bytes anywhere.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace modelfs::testing {

// gguf_type values.
enum class GgufType : std::uint32_t {
    u8 = 0,
    i8 = 1,
    u16 = 2,
    i16 = 3,
    u32 = 4,
    i32 = 5,
    f32 = 6,
    boolean = 7,
    string = 8,
    array = 9,
    u64 = 10,
    i64 = 11,
    f64 = 12,
};

// ggml_type values of the tensor types the writer can size.
enum class GgmlTensorType : std::uint32_t { f32 = 0, f16 = 1, q4_0 = 2, q8_0 = 8, q4_k = 12 };

// Bytes a tensor of `type` and `dims` takes (dims[0] a multiple of the type's block).
std::uint64_t ggml_tensor_bytes(GgmlTensorType type, const std::vector<std::uint64_t>& dims);

class GgufWriter {
  public:
    explicit GgufWriter(std::uint32_t version = 3, bool big_endian = false)
        : version_(version), big_endian_(big_endian) {}

    // Encoders in this file's byte order.
    std::string u32(std::uint32_t v) const;
    std::string u64(std::uint64_t v) const;
    std::string str(std::string_view s) const;  // u64 length + bytes

    GgufWriter& kv_u8(std::string_view key, std::uint8_t v);
    GgufWriter& kv_i8(std::string_view key, std::int8_t v);
    GgufWriter& kv_u16(std::string_view key, std::uint16_t v);
    GgufWriter& kv_i16(std::string_view key, std::int16_t v);
    GgufWriter& kv_u32(std::string_view key, std::uint32_t v);
    GgufWriter& kv_i32(std::string_view key, std::int32_t v);
    GgufWriter& kv_f32(std::string_view key, float v);
    GgufWriter& kv_bool(std::string_view key, bool v);
    GgufWriter& kv_string(std::string_view key, std::string_view v);
    GgufWriter& kv_u64(std::string_view key, std::uint64_t v);
    GgufWriter& kv_i64(std::string_view key, std::int64_t v);
    GgufWriter& kv_f64(std::string_view key, double v);
    GgufWriter& kv_u32_array(std::string_view key, const std::vector<std::uint32_t>& v);
    GgufWriter& kv_string_array(std::string_view key, const std::vector<std::string>& v);
    // An array of arrays of int16: {{1, 2}, {}, {3}} ...
    GgufWriter& kv_nested_i16_array(std::string_view key,
                                    const std::vector<std::vector<std::int16_t>>& v);
    // Any value type with the value's bytes as given (already in this file's byte order).
    GgufWriter& kv_raw(std::string_view key, std::uint32_t type, std::string_view value);
    // Writes general.alignment (u32) and lays the file out with it.
    GgufWriter& alignment(std::uint32_t a);

    GgufWriter& tensor(std::string_view name, GgmlTensorType type, std::vector<std::uint64_t> dims,
                       std::uint64_t seed = 0);
    // A tensor info with any type id and offset, and `data_bytes` of data (for unknown types).
    GgufWriter& raw_tensor(std::string_view name, std::uint32_t type,
                           std::vector<std::uint64_t> dims, std::uint64_t data_bytes);

    bool pad_end = false;  // pad the file after the last tensor to the alignment
    std::string raw_tail;  // bytes appended after everything (trailing garbage)
    // Overrides the counts written in the header (hostile files); else the real counts.
    std::optional<std::uint64_t> tensor_count_field, metadata_count_field;

    std::string bytes() const;
    std::uint64_t write(const std::filesystem::path& path) const;  // returns the size

  private:
    struct Tensor {
        std::string name;
        std::uint32_t type;
        std::vector<std::uint64_t> dims;
        std::uint64_t bytes;
        std::uint64_t seed;
    };
    std::string le_or_be(std::uint64_t v, int n) const;
    GgufWriter& kv(std::string_view key, GgufType type, const std::string& value);

    std::uint32_t version_;
    bool big_endian_;
    std::uint32_t alignment_ = 32;
    std::uint64_t kv_count_ = 0;
    std::string kvs_;
    std::vector<Tensor> tensors_;
};

}  // namespace modelfs::testing
