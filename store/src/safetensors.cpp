#include "modelfs/store/safetensors.h"

#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <nlohmann/json.hpp>
#include <string>
#include <system_error>
#include <tuple>
#include <utility>
#include <vector>

#include "parse_util.h"

namespace modelfs {

namespace {

struct DtypeBits {
    std::string_view name;
    std::uint64_t bits;
};

// The dtypes of the reference implementation. Sub-byte types (F4, F6_*) are packed, so a
// tensor's byte length is ceil(bits * elements / 8).
constexpr std::array<DtypeBits, 20> kDtypes{{
    {"BOOL", 8},    {"U8", 8},   {"I8", 8},   {"F8_E5M2", 8}, {"F8_E4M3", 8},
    {"F8_E8M0", 8}, {"I16", 16}, {"U16", 16}, {"F16", 16},    {"BF16", 16},
    {"I32", 32},    {"U32", 32}, {"F32", 32}, {"F64", 64},    {"I64", 64},
    {"U64", 64},    {"C64", 64}, {"F4", 4},   {"F6_E2M3", 6}, {"F6_E3M2", 6},
}};

constexpr std::size_t kNoDtype = kDtypes.size();

std::size_t find_dtype(std::string_view name) {
    for (std::size_t i = 0; i < kDtypes.size(); ++i) {
        if (kDtypes[i].name == name) return i;
    }
    return kNoDtype;
}

std::string quote_name(std::string_view s) {
    return "'" + printable(s) + "'";
}

std::string range(std::uint64_t begin, std::uint64_t end) {
    return "[" + std::to_string(begin) + ", " + std::to_string(end) + ")";
}

// Shapes are kept only for error messages, so a hostile shape with millions of dimensions costs
// nothing: we remember the first few and the rank.
constexpr std::size_t kShapeDimsShown = 8;

struct TensorRecord {
    std::string name;
    std::size_t dtype = kNoDtype;
    std::uint64_t elements = 1;
    bool elements_overflow = false;
    std::uint64_t rank = 0;
    std::array<std::uint64_t, kShapeDimsShown> dims{};
    std::uint64_t begin = 0;
    std::uint64_t end = 0;

    std::string shape_text() const {
        std::string s = "[";
        for (std::uint64_t i = 0; i < std::min<std::uint64_t>(rank, kShapeDimsShown); ++i) {
            if (i > 0) s += ", ";
            s += std::to_string(dims[i]);
        }
        if (rank > kShapeDimsShown) s += ", ... (" + std::to_string(rank) + " dimensions)";
        return s + "]";
    }
};

// A SAX handler rather than a DOM: a 100 MB hostile header of nested arrays or tiny entries
// would expand to gigabytes as nlohmann::json values, while this keeps memory proportional to
// the tensor names and never recurses.
class HeaderHandler final : public nlohmann::json_sax<nlohmann::json> {
  public:
    std::vector<TensorRecord> tensors;
    std::map<std::string, std::string> metadata;
    std::string error;

    bool null() override { return scalar("null"); }
    bool boolean(bool) override { return scalar("a boolean"); }

    bool number_integer(number_integer_t v) override {
        // nlohmann reports non-negative integers as unsigned; only "-0" lands here unnegative.
        if (v >= 0) return number_unsigned(static_cast<number_unsigned_t>(v));
        if (skip_depth_ > 0) return true;
        switch (where_) {
            case Where::shape:
                return fail(tensor_prefix() + "\"shape\" has a negative dimension " +
                            std::to_string(v));
            case Where::offsets:
                return fail(tensor_prefix() + "\"data_offsets\" has a negative offset " +
                            std::to_string(v));
            default:
                return scalar("a number");
        }
    }

    bool number_unsigned(number_unsigned_t v) override {
        if (skip_depth_ > 0) return true;
        switch (where_) {
            case Where::shape: {
                TensorRecord& t = current_;
                if (t.rank < kShapeDimsShown) t.dims[t.rank] = v;
                ++t.rank;
                if (!t.elements_overflow && __builtin_mul_overflow(t.elements, v, &t.elements)) {
                    t.elements_overflow = true;
                }
                return true;
            }
            case Where::offsets:
                if (offsets_seen_ < 2) offsets_[offsets_seen_] = v;
                ++offsets_seen_;
                if (offsets_seen_ > 2) {
                    return fail(tensor_prefix() +
                                "\"data_offsets\" has more than 2 entries, expected [begin, end]");
                }
                return true;
            default:
                return scalar("a number");
        }
    }

    bool number_float(number_float_t, const string_t& text) override {
        if (skip_depth_ > 0) return true;
        switch (where_) {
            case Where::shape:
                return fail(tensor_prefix() + "\"shape\" has a dimension " + printable(text) +
                            " that is not a non-negative integer");
            case Where::offsets:
                return fail(tensor_prefix() + "\"data_offsets\" has an offset " + printable(text) +
                            " that is not a non-negative integer");
            default:
                return scalar("a number");
        }
    }

    bool string(string_t& s) override {
        if (skip_depth_ > 0) return true;
        switch (where_) {
            case Where::metadata:
                if (!metadata.try_emplace(key_, std::move(s)).second) {
                    return fail("__metadata__ has a duplicate key " + quote_name(key_));
                }
                return true;
            case Where::tensor:
                if (key_ == "dtype") {
                    current_.dtype = find_dtype(s);
                    if (current_.dtype == kNoDtype) {
                        return fail(tensor_prefix() + "unknown dtype " + quote_name(s));
                    }
                    return true;
                }
                return scalar("a string");
            default:
                return scalar("a string");
        }
    }

    bool binary(binary_t&) override { return fail("header holds binary data"); }

    bool start_object(std::size_t) override {
        if (skip_depth_ > 0) {
            ++skip_depth_;
            return true;
        }
        switch (where_) {
            case Where::start:
                where_ = Where::top;
                return true;
            case Where::top:
                if (key_ == "__metadata__") {
                    if (seen_metadata_) return fail("duplicate \"__metadata__\" entry");
                    seen_metadata_ = true;
                    where_ = Where::metadata;
                    return true;
                }
                current_ = TensorRecord{};
                current_.name = std::move(key_);
                seen_dtype_ = seen_shape_ = seen_offsets_ = false;
                where_ = Where::tensor;
                return true;
            case Where::tensor:
                if (is_known_field()) return wrong_field_type("an object");
                skip_depth_ = 1;  // an unknown field: tolerated, like the reference reader
                return true;
            default:
                return scalar("an object");
        }
    }

    bool end_object() override {
        if (skip_depth_ > 0) {
            --skip_depth_;
            return true;
        }
        switch (where_) {
            case Where::top:
                where_ = Where::done;
                return true;
            case Where::metadata:
                where_ = Where::top;
                return true;
            case Where::tensor:
                if (!seen_dtype_) return fail(tensor_prefix() + "missing \"dtype\"");
                if (!seen_shape_) return fail(tensor_prefix() + "missing \"shape\"");
                if (!seen_offsets_) return fail(tensor_prefix() + "missing \"data_offsets\"");
                current_.begin = offsets_[0];
                current_.end = offsets_[1];
                tensors.push_back(std::move(current_));
                where_ = Where::top;
                return true;
            default:
                return fail("unexpected end of object");
        }
    }

    bool start_array(std::size_t) override {
        if (skip_depth_ > 0) {
            ++skip_depth_;
            return true;
        }
        switch (where_) {
            case Where::start:
                return fail("header is not a JSON object (it is an array)");
            case Where::tensor:
                if (key_ == "shape") {
                    where_ = Where::shape;
                    return true;
                }
                if (key_ == "data_offsets") {
                    offsets_seen_ = 0;
                    where_ = Where::offsets;
                    return true;
                }
                if (key_ == "dtype") return wrong_field_type("an array");
                skip_depth_ = 1;
                return true;
            default:
                return scalar("an array");
        }
    }

    bool end_array() override {
        if (skip_depth_ > 0) {
            --skip_depth_;
            return true;
        }
        switch (where_) {
            case Where::shape:
                where_ = Where::tensor;
                return true;
            case Where::offsets:
                if (offsets_seen_ != 2) {
                    return fail(tensor_prefix() + "\"data_offsets\" has " +
                                std::to_string(offsets_seen_) +
                                " entries, expected 2 ([begin, end])");
                }
                where_ = Where::tensor;
                return true;
            default:
                return fail("unexpected end of array");
        }
    }

    bool key(string_t& k) override {
        if (skip_depth_ > 0) return true;
        if (where_ == Where::tensor) {
            bool* seen = k == "dtype"          ? &seen_dtype_
                         : k == "shape"        ? &seen_shape_
                         : k == "data_offsets" ? &seen_offsets_
                                               : nullptr;
            if (seen != nullptr) {
                if (*seen) return fail(tensor_prefix() + "duplicate field " + quote_name(k));
                *seen = true;
            }
        }
        key_ = std::move(k);
        return true;
    }

    bool parse_error(std::size_t position, const std::string&,
                     const nlohmann::detail::exception& ex) override {
        // nlohmann counts characters read, so the offending byte is one before; a 0-based offset
        // is what a hex dump of the header shows.
        const std::size_t offset = position > 0 ? position - 1 : 0;
        return fail("invalid JSON at header offset " + std::to_string(offset) + ": " +
                    printable(ex.what(), 300));
    }

  private:
    enum class Where { start, top, metadata, tensor, shape, offsets, done };

    bool fail(std::string message) {
        error = std::move(message);
        return false;
    }

    std::string tensor_prefix() const { return "tensor " + quote_name(current_.name) + ": "; }

    bool is_known_field() const {
        return key_ == "dtype" || key_ == "shape" || key_ == "data_offsets";
    }

    bool wrong_field_type(std::string_view what) {
        const std::string_view expected = key_ == "dtype" ? "a string" : "an array";
        return fail(tensor_prefix() + "\"" + key_ + "\" is " + std::string(what) + ", expected " +
                    std::string(expected));
    }

    // A value of the given kind ("a number", "an array", ...) that only an unknown field may
    // hold at this place in the structure.
    bool scalar(std::string_view kind) {
        if (skip_depth_ > 0) return true;
        const std::string k(kind);
        switch (where_) {
            case Where::start:
                return fail("header is not a JSON object (it is " + k + ")");
            case Where::top:
                if (key_ == "__metadata__") return fail("__metadata__ is " + k + ", not an object");
                return fail("tensor " + quote_name(key_) + ": entry is " + k + ", not an object");
            case Where::metadata:
                return fail("__metadata__ value for key " + quote_name(key_) + " is " + k +
                            ", not a string");
            case Where::tensor:
                if (is_known_field()) return wrong_field_type(k);
                return true;  // unknown scalar field: ignored
            case Where::shape:
                return fail(tensor_prefix() + "\"shape\" contains " + k +
                            ", expected non-negative integers");
            case Where::offsets:
                return fail(tensor_prefix() + "\"data_offsets\" contains " + k +
                            ", expected non-negative integers");
            case Where::done:
                break;
        }
        return fail("unexpected " + k + " after the header object");
    }

    Where where_ = Where::start;
    std::size_t skip_depth_ = 0;
    std::string key_;
    TensorRecord current_;
    bool seen_metadata_ = false;
    bool seen_dtype_ = false;
    bool seen_shape_ = false;
    bool seen_offsets_ = false;
    std::size_t offsets_seen_ = 0;
    std::array<std::uint64_t, 2> offsets_{};
};

// Checks one tensor on its own: offsets ordered and inside the data, byte length matching dtype
// and shape.
void check_tensor(const TensorRecord& t, std::uint64_t data_size) {
    // Built only on failure: escaping every name up front costs more than the checks.
    const auto who = [&t] { return "tensor " + quote_name(t.name) + ": "; };
    if (t.begin > t.end) {
        throw SafetensorsError(who() + "data_offsets " + range(t.begin, t.end) +
                               " are reversed (begin > end)");
    }
    if (t.end > data_size) {
        throw SafetensorsError(who() + "data_offsets " + range(t.begin, t.end) +
                               " extend past the end of the " + std::to_string(data_size) +
                               "-byte data section");
    }
    const DtypeBits& dt = kDtypes[t.dtype];
    std::uint64_t bits = 0;
    if (t.elements_overflow || __builtin_mul_overflow(t.elements, dt.bits, &bits)) {
        throw SafetensorsError(who() + "shape " + t.shape_text() + " of " + std::string(dt.name) +
                               " overflows 64 bits");
    }
    const std::uint64_t bytes = bits / 8 + (bits % 8 != 0 ? 1 : 0);
    if (bytes != t.end - t.begin) {
        throw SafetensorsError(who() + "dtype " + std::string(dt.name) + " with shape " +
                               t.shape_text() + " needs " + std::to_string(bytes) +
                               " bytes but data_offsets " + range(t.begin, t.end) + " hold " +
                               std::to_string(t.end - t.begin));
    }
}

// The tensors must tile the data section exactly, as the reference reader requires: sorted by
// offset, each begins where the previous ends, and the last ends at the end of the file.
void check_layout(const std::vector<TensorRecord>& tensors, std::uint64_t data_size) {
    std::vector<const TensorRecord*> order;
    order.reserve(tensors.size());
    for (const auto& t : tensors) order.push_back(&t);
    std::sort(order.begin(), order.end(), [](const TensorRecord* a, const TensorRecord* b) {
        return std::tie(a->begin, a->end, a->name) < std::tie(b->begin, b->end, b->name);
    });

    std::uint64_t cursor = 0;
    const TensorRecord* prev = nullptr;
    for (const TensorRecord* t : order) {
        if (t->begin < cursor) {
            throw SafetensorsError("tensors " + quote_name(prev->name) + " " +
                                   range(prev->begin, prev->end) + " and " + quote_name(t->name) +
                                   " " + range(t->begin, t->end) + " overlap");
        }
        if (t->begin > cursor) {
            const std::string where =
                prev == nullptr
                    ? "before the first tensor " + quote_name(t->name)
                    : "between " + quote_name(prev->name) + " and " + quote_name(t->name);
            throw SafetensorsError("hole of " + std::to_string(t->begin - cursor) +
                                   " bytes in the data section at " + range(cursor, t->begin) +
                                   ", " + where);
        }
        cursor = t->end;
        prev = t;
    }
    if (cursor != data_size) {
        if (prev == nullptr) {
            throw SafetensorsError("the header lists no tensors but " + std::to_string(data_size) +
                                   " trailing bytes of data follow it");
        }
        throw SafetensorsError(std::to_string(data_size - cursor) +
                               " trailing bytes after the last tensor " + quote_name(prev->name) +
                               " (tensors end at " + std::to_string(cursor) +
                               ", the data section is " + std::to_string(data_size) + " bytes)");
    }
}

}  // namespace

SafetensorsInfo parse_safetensors_header(std::string_view header_json, std::uint64_t file_size) {
    const std::uint64_t header_len = header_json.size();
    if (header_len == 0) throw SafetensorsError("header is empty");
    if (file_size < 8 || file_size - 8 < header_len) {
        throw SafetensorsError("header of " + std::to_string(header_len) +
                               " bytes does not fit in a file of " + std::to_string(file_size) +
                               " bytes");
    }
    // nlohmann stops at a NUL byte as if the input ended there, which would let bytes after it
    // escape validation; the reference reader rejects them, so do we.
    if (const auto nul = header_json.find('\0'); nul != std::string_view::npos) {
        throw SafetensorsError("header contains a NUL byte at offset " + std::to_string(nul));
    }
    // The reference reader requires the '{' first (no BOM, no leading whitespace).
    if (header_json.front() != '{') {
        throw SafetensorsError("header is not a JSON object: it starts with '" +
                               printable(header_json.substr(0, 1)) + "', not '{'");
    }

    HeaderHandler handler;
    if (!nlohmann::json::sax_parse(header_json.begin(), header_json.end(), &handler)) {
        throw SafetensorsError(handler.error.empty() ? "invalid JSON header" : handler.error);
    }

    const std::uint64_t data_size = file_size - 8 - header_len;
    for (const auto& t : handler.tensors) check_tensor(t, data_size);
    check_layout(handler.tensors, data_size);

    SafetensorsInfo info;
    info.header_len = header_len;
    info.tensor_count = handler.tensors.size();
    info.metadata = std::move(handler.metadata);
    info.tensor_names.reserve(handler.tensors.size());
    std::array<std::uint64_t, kDtypes.size()> dtype_counts{};
    for (auto& t : handler.tensors) {
        // Cannot overflow in practice (elements <= 2 * data bytes), but the file is hostile.
        if (__builtin_add_overflow(info.parameter_count, t.elements, &info.parameter_count)) {
            throw SafetensorsError("parameter count overflows 64 bits");
        }
        ++dtype_counts[t.dtype];
        info.has_unet = info.has_unet || t.name.starts_with("model.diffusion_model.");
        info.has_vae = info.has_vae || t.name.starts_with("first_stage_model.");
        info.has_text_encoder = info.has_text_encoder || t.name.starts_with("cond_stage_model.") ||
                                t.name.starts_with("conditioner.");
        info.tensor_names.push_back(std::move(t.name));
    }
    for (std::size_t i = 0; i < kDtypes.size(); ++i) {
        if (dtype_counts[i] > 0) info.dtypes.emplace(kDtypes[i].name, dtype_counts[i]);
    }
    std::sort(info.tensor_names.begin(), info.tensor_names.end());
    // JSON parsers disagree on duplicate keys (first or last wins); an ambiguous header could
    // show different tensors to different tools, so it is refused.
    if (const auto dup = std::adjacent_find(info.tensor_names.begin(), info.tensor_names.end());
        dup != info.tensor_names.end()) {
        throw SafetensorsError("duplicate tensor name " + quote_name(*dup));
    }
    return info;
}

SafetensorsInfo read_safetensors_header(int fd, std::uint64_t file_size) {
    static constexpr std::string_view kWhat = "safetensors header";
    if (file_size < 8) {
        throw SafetensorsError("file is only " + std::to_string(file_size) +
                               " bytes, too short for the 8-byte header length");
    }
    std::array<unsigned char, 8> len_bytes{};
    if (pread_full(fd, reinterpret_cast<char*>(len_bytes.data()), 8, 0, kWhat) != 8) {
        throw SafetensorsError("file ended before the 8-byte header length");
    }
    std::uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | len_bytes[static_cast<std::size_t>(i)];

    if (n == 0) throw SafetensorsError("header length is 0");
    if (n > kMaxSafetensorsHeaderBytes) {
        // A safetensors header is JSON: '{' follows the length. Text or another format renamed
        // .safetensors reads as an absurd length; that number would only puzzle.
        char first = 0;
        if (file_size == 8 || pread_full(fd, &first, 1, 8, kWhat) != 1 || first != '{')
            throw SafetensorsError(
                "not a safetensors file (no JSON header follows its first 8 bytes; another "
                "format renamed .safetensors?)");
        throw SafetensorsError("header length " + std::to_string(n) + " exceeds the " +
                               std::to_string(kMaxSafetensorsHeaderBytes) + "-byte limit");
    }
    if (n > file_size - 8) {
        throw SafetensorsError("header claims " + std::to_string(n) +
                               " bytes but the file has only " + std::to_string(file_size - 8) +
                               " after the length field");
    }

    // Grow the buffer as bytes actually arrive, so a caller's wrong file_size cannot make us
    // allocate the full claimed length for a file that is in fact tiny.
    constexpr std::size_t kChunk = 1 << 20;
    std::string header;
    header.reserve(static_cast<std::size_t>(std::min<std::uint64_t>(n, kChunk)));
    while (header.size() < n) {
        const std::size_t old = header.size();
        const std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(n - old, kChunk));
        header.resize(old + want);
        const std::size_t got = pread_full(fd, header.data() + old, want, 8 + old, kWhat);
        header.resize(old + got);
        if (got < want) {
            throw SafetensorsError("file ended after " + std::to_string(header.size()) + " of " +
                                   std::to_string(n) + " header bytes");
        }
    }
    return parse_safetensors_header(header, file_size);
}

bool has_safetensors_extension(std::string_view filename) {
    const auto ends_with_ci = [filename](std::string_view suffix) {
        if (filename.size() < suffix.size()) return false;
        const std::string_view tail = filename.substr(filename.size() - suffix.size());
        return std::equal(tail.begin(), tail.end(), suffix.begin(), [](char a, char b) {
            return (a >= 'A' && a <= 'Z' ? static_cast<char>(a - 'A' + 'a') : a) == b;
        });
    };
    return ends_with_ci(".safetensors") || ends_with_ci(".sft");
}

}  // namespace modelfs
