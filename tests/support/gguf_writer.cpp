#include "support/gguf_writer.h"

#include <bit>
#include <cstring>
#include <fstream>
#include <random>
#include <stdexcept>
#include <system_error>

namespace modelfs::testing {

namespace {

struct BlockSize {
    std::uint64_t elements, bytes;
};

BlockSize block_size(std::uint32_t type) {
    switch (static_cast<GgmlTensorType>(type)) {
        case GgmlTensorType::f32:
            return {1, 4};
        case GgmlTensorType::f16:
            return {1, 2};
        case GgmlTensorType::q4_0:
            return {32, 2 + 16};  // fp16 scale + 32 4-bit values
        case GgmlTensorType::q8_0:
            return {32, 2 + 32};  // fp16 scale + 32 int8 values
        case GgmlTensorType::q4_k:
            return {256, 2 + 2 + 12 + 128};  // d, dmin, scales, 256 4-bit values
    }
    throw std::invalid_argument("gguf_writer: no size for ggml type " + std::to_string(type));
}

std::uint64_t align_up(std::uint64_t v, std::uint64_t a) {
    return (v + a - 1) / a * a;
}

}  // namespace

std::uint64_t ggml_tensor_bytes(GgmlTensorType type, const std::vector<std::uint64_t>& dims) {
    const BlockSize b = block_size(static_cast<std::uint32_t>(type));
    std::uint64_t elements = 1;
    for (auto d : dims) elements *= d;
    if (!dims.empty() && dims[0] % b.elements != 0)
        throw std::invalid_argument("gguf_writer: rows must be whole blocks");
    return elements / b.elements * b.bytes;
}

std::string GgufWriter::le_or_be(std::uint64_t v, int n) const {
    std::string out(static_cast<std::size_t>(n), '\0');
    for (int i = 0; i < n; ++i) {
        const int at = big_endian_ ? n - 1 - i : i;
        out[static_cast<std::size_t>(at)] = static_cast<char>((v >> (8 * i)) & 0xff);
    }
    return out;
}

std::string GgufWriter::u32(std::uint32_t v) const {
    return le_or_be(v, 4);
}
std::string GgufWriter::u64(std::uint64_t v) const {
    return le_or_be(v, 8);
}
std::string GgufWriter::str(std::string_view s) const {
    return u64(s.size()) + std::string(s);
}

GgufWriter& GgufWriter::kv(std::string_view key, GgufType type, const std::string& value) {
    return kv_raw(key, static_cast<std::uint32_t>(type), value);
}

GgufWriter& GgufWriter::kv_raw(std::string_view key, std::uint32_t type, std::string_view value) {
    kvs_ += str(key) + u32(type) + std::string(value);
    ++kv_count_;
    return *this;
}

GgufWriter& GgufWriter::kv_u8(std::string_view k, std::uint8_t v) {
    return kv(k, GgufType::u8, le_or_be(v, 1));
}
GgufWriter& GgufWriter::kv_i8(std::string_view k, std::int8_t v) {
    return kv(k, GgufType::i8, le_or_be(static_cast<std::uint8_t>(v), 1));
}
GgufWriter& GgufWriter::kv_u16(std::string_view k, std::uint16_t v) {
    return kv(k, GgufType::u16, le_or_be(v, 2));
}
GgufWriter& GgufWriter::kv_i16(std::string_view k, std::int16_t v) {
    return kv(k, GgufType::i16, le_or_be(static_cast<std::uint16_t>(v), 2));
}
GgufWriter& GgufWriter::kv_u32(std::string_view k, std::uint32_t v) {
    return kv(k, GgufType::u32, u32(v));
}
GgufWriter& GgufWriter::kv_i32(std::string_view k, std::int32_t v) {
    return kv(k, GgufType::i32, u32(static_cast<std::uint32_t>(v)));
}
GgufWriter& GgufWriter::kv_f32(std::string_view k, float v) {
    return kv(k, GgufType::f32, u32(std::bit_cast<std::uint32_t>(v)));
}
GgufWriter& GgufWriter::kv_bool(std::string_view k, bool v) {
    return kv(k, GgufType::boolean, std::string(1, v ? '\1' : '\0'));
}
GgufWriter& GgufWriter::kv_string(std::string_view k, std::string_view v) {
    return kv(k, GgufType::string, str(v));
}
GgufWriter& GgufWriter::kv_u64(std::string_view k, std::uint64_t v) {
    return kv(k, GgufType::u64, u64(v));
}
GgufWriter& GgufWriter::kv_i64(std::string_view k, std::int64_t v) {
    return kv(k, GgufType::i64, u64(static_cast<std::uint64_t>(v)));
}
GgufWriter& GgufWriter::kv_f64(std::string_view k, double v) {
    return kv(k, GgufType::f64, u64(std::bit_cast<std::uint64_t>(v)));
}

GgufWriter& GgufWriter::kv_u32_array(std::string_view k, const std::vector<std::uint32_t>& v) {
    std::string value = u32(static_cast<std::uint32_t>(GgufType::u32)) + u64(v.size());
    for (auto x : v) value += u32(x);
    return kv(k, GgufType::array, value);
}

GgufWriter& GgufWriter::kv_string_array(std::string_view k, const std::vector<std::string>& v) {
    std::string value = u32(static_cast<std::uint32_t>(GgufType::string)) + u64(v.size());
    for (const auto& s : v) value += str(s);
    return kv(k, GgufType::array, value);
}

GgufWriter& GgufWriter::kv_nested_i16_array(std::string_view k,
                                            const std::vector<std::vector<std::int16_t>>& v) {
    std::string value = u32(static_cast<std::uint32_t>(GgufType::array)) + u64(v.size());
    for (const auto& inner : v) {
        value += u32(static_cast<std::uint32_t>(GgufType::i16)) + u64(inner.size());
        for (auto x : inner) value += le_or_be(static_cast<std::uint16_t>(x), 2);
    }
    return kv(k, GgufType::array, value);
}

GgufWriter& GgufWriter::alignment(std::uint32_t a) {
    alignment_ = a;
    return kv_u32("general.alignment", a);
}

GgufWriter& GgufWriter::tensor(std::string_view name, GgmlTensorType type,
                               std::vector<std::uint64_t> dims, std::uint64_t seed) {
    const std::uint64_t bytes = ggml_tensor_bytes(type, dims);
    tensors_.push_back(
        {std::string(name), static_cast<std::uint32_t>(type), std::move(dims), bytes, seed});
    return *this;
}

GgufWriter& GgufWriter::raw_tensor(std::string_view name, std::uint32_t type,
                                   std::vector<std::uint64_t> dims, std::uint64_t data_bytes) {
    tensors_.push_back({std::string(name), type, std::move(dims), data_bytes, 0});
    return *this;
}

std::string GgufWriter::bytes() const {
    std::string out = "GGUF" + u32(version_) + u64(tensor_count_field.value_or(tensors_.size())) +
                      u64(metadata_count_field.value_or(kv_count_)) + kvs_;
    std::uint64_t offset = 0;
    std::vector<std::uint64_t> offsets;
    for (const auto& t : tensors_) {
        offsets.push_back(offset);
        out += str(t.name) + u32(static_cast<std::uint32_t>(t.dims.size()));
        for (auto d : t.dims) out += u64(d);
        out += u32(t.type) + u64(offset);
        offset = align_up(offset + t.bytes, alignment_);
    }
    out.resize(align_up(out.size(), alignment_), '\0');
    const std::uint64_t data_start = out.size();
    for (std::size_t i = 0; i < tensors_.size(); ++i) {
        out.resize(data_start + offsets[i], '\0');
        std::mt19937_64 rng(tensors_[i].seed * 1000003 + i);
        for (std::uint64_t b = 0; b < tensors_[i].bytes; ++b)
            out += static_cast<char>(rng() & 0xff);
    }
    if (pad_end) out.resize(align_up(out.size(), alignment_), '\0');
    return out + raw_tail;
}

std::uint64_t GgufWriter::write(const std::filesystem::path& path) const {
    const std::string b = bytes();
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f.write(b.data(), static_cast<std::streamsize>(b.size()));
    f.close();
    if (!f) throw std::system_error(errno, std::generic_category(), "writing " + path.string());
    return b.size();
}

}  // namespace modelfs::testing
