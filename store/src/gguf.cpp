#include "modelfs/store/gguf.h"

#include <array>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "parse_util.h"

namespace modelfs {

namespace {

struct GgmlType {
    std::string_view name;  // empty: no such type
    std::uint64_t block_elements = 0;
    std::uint64_t block_bytes = 0;
};

// ggml's `enum ggml_type`, indexed by its value: elements per block and bytes per block (the
// sizeof of ggml-common.h's block structs). 4 and 5 (Q4_2, Q4_3) were removed before GGUF
// existed. 31-33 and 36-38 (the repacked Q4_0_x_y, IQ4_NL_x_y) are no longer loaded by llama.cpp
// but files holding them exist, and their size is known. Anything else is unknown: see
// GgufInfo::unknown_type_tensors.
constexpr std::array<GgmlType, 42> kGgmlTypes{{
    {"F32", 1, 4},           // 0
    {"F16", 1, 2},           // 1
    {"Q4_0", 32, 18},        // 2
    {"Q4_1", 32, 20},        // 3
    {},                      // 4
    {},                      // 5
    {"Q5_0", 32, 22},        // 6
    {"Q5_1", 32, 24},        // 7
    {"Q8_0", 32, 34},        // 8
    {"Q8_1", 32, 36},        // 9
    {"Q2_K", 256, 84},       // 10
    {"Q3_K", 256, 110},      // 11
    {"Q4_K", 256, 144},      // 12
    {"Q5_K", 256, 176},      // 13
    {"Q6_K", 256, 210},      // 14
    {"Q8_K", 256, 292},      // 15
    {"IQ2_XXS", 256, 66},    // 16
    {"IQ2_XS", 256, 74},     // 17
    {"IQ3_XXS", 256, 98},    // 18
    {"IQ1_S", 256, 50},      // 19
    {"IQ4_NL", 32, 18},      // 20
    {"IQ3_S", 256, 110},     // 21
    {"IQ2_S", 256, 82},      // 22
    {"IQ4_XS", 256, 136},    // 23
    {"I8", 1, 1},            // 24
    {"I16", 1, 2},           // 25
    {"I32", 1, 4},           // 26
    {"I64", 1, 8},           // 27
    {"F64", 1, 8},           // 28
    {"IQ1_M", 256, 56},      // 29
    {"BF16", 1, 2},          // 30
    {"Q4_0_4_4", 32, 18},    // 31
    {"Q4_0_4_8", 32, 18},    // 32
    {"Q4_0_8_8", 32, 18},    // 33
    {"TQ1_0", 256, 54},      // 34
    {"TQ2_0", 256, 66},      // 35
    {"IQ4_NL_4_4", 32, 18},  // 36
    {"IQ4_NL_4_8", 32, 18},  // 37
    {"IQ4_NL_8_8", 32, 18},  // 38
    {"MXFP4", 32, 17},       // 39
    {"NVFP4", 64, 36},       // 40
    {"Q1_0", 128, 18},       // 41
}};

const GgmlType* find_ggml_type(std::uint32_t type) {
    if (type >= kGgmlTypes.size() || kGgmlTypes[type].name.empty()) return nullptr;
    return &kGgmlTypes[type];
}

// Metadata value types (gguf_type), indexed by value: name, and size for fixed-size ones (0 for
// string and array, which carry their own lengths).
struct ValueType {
    std::string_view name;
    std::uint64_t size;
};
constexpr std::uint32_t kString = 8;
constexpr std::uint32_t kArray = 9;
constexpr std::uint32_t kUint32 = 4;
constexpr std::array<ValueType, 13> kValueTypes{{
    {"uint8", 1},
    {"int8", 1},
    {"uint16", 2},
    {"int16", 2},
    {"uint32", 4},
    {"int32", 4},
    {"float32", 4},
    {"bool", 1},
    {"string", 0},
    {"array", 0},
    {"uint64", 8},
    {"int64", 8},
    {"float64", 8},
}};

std::string value_type_name(std::uint32_t type) {
    if (type < kValueTypes.size()) return std::string(kValueTypes[type].name);
    return "unknown type " + std::to_string(type);
}

// The fewest bytes each record can take, to refuse counts the rest of the file cannot hold
// before looping over them: a metadata entry (key length, value type, a 1-byte value), a tensor
// info (name length, n_dims 0, type, offset), an array element that is a string (its length) or
// an array (element type and count).
constexpr std::uint64_t kMinEntryBytes = 8 + 4 + 1;
constexpr std::uint64_t kMinTensorInfoBytes = 8 + 4 + 4 + 8;
constexpr std::uint64_t kMinStringBytes = 8;
constexpr std::uint64_t kMinArrayBytes = 4 + 8;

// Names are kept only for messages: the first bytes are enough.
constexpr std::size_t kNameBytesKept = 80;

// Sequential reads of the header through a 64 KiB window: every read is checked against the
// file size first, so a hostile length is refused before anything is allocated or skipped.
class Reader {
  public:
    Reader(int fd, std::uint64_t size) : fd_(fd), size_(size), buf_(kWindow) {}

    bool swap = false;                   // big-endian file
    std::function<std::string()> where;  // where in the structure we are, for messages

    std::uint64_t pos() const { return pos_; }
    std::uint64_t left() const { return size_ - pos_; }

    void skip(std::uint64_t n, std::string_view what) {
        need(n, what);
        pos_ += n;
    }

    std::uint32_t u32(std::string_view what) { return static_cast<std::uint32_t>(uint(4, what)); }
    std::uint64_t u64(std::string_view what) { return uint(8, what); }

    // A length-prefixed string of `len` bytes (the length already read); returns its first
    // kNameBytesKept bytes and skips the rest.
    std::string text(std::uint64_t len, std::string_view what) {
        need(len, what);
        std::string out(static_cast<std::size_t>(std::min<std::uint64_t>(len, kNameBytesKept)),
                        '\0');
        bytes(out.data(), out.size());
        pos_ += len - out.size();
        return out;
    }

    [[noreturn]] void truncated(std::uint64_t n, std::string_view what) const {
        throw GgufError("truncated: " + std::string(what) + " (" + std::to_string(n) +
                        " bytes) at byte " + std::to_string(pos_) +
                        " runs past the end of the file at byte " + std::to_string(size_) + ", " +
                        where());
    }

  private:
    static constexpr std::size_t kWindow = 64 * 1024;

    void need(std::uint64_t n, std::string_view what) const {
        if (n > left()) truncated(n, what);
    }

    // Copies `n` bytes (at most a window; need() checked them) and moves past them.
    void bytes(char* out, std::size_t n) {
        if (pos_ < win_pos_ || pos_ + n > win_pos_ + win_len_) fill();
        std::memcpy(out, buf_.data() + (pos_ - win_pos_), n);
        pos_ += n;
    }

    std::uint64_t uint(std::size_t n, std::string_view what) {
        need(n, what);
        std::array<unsigned char, 8> b{};
        bytes(reinterpret_cast<char*>(b.data()), n);
        std::uint64_t v = 0;
        for (std::size_t i = 0; i < n; ++i) {
            const std::size_t k = swap ? i : n - 1 - i;  // most significant byte first
            v = v << 8 | b[k];
        }
        return v;
    }

    void fill() {
        const auto want = static_cast<std::size_t>(std::min<std::uint64_t>(kWindow, left()));
        const std::size_t got = pread_full(fd_, buf_.data(), want, pos_, "GGUF header");
        if (got < want) {
            throw GgufError("the file ends at byte " + std::to_string(pos_ + got) +
                            " although its size is " + std::to_string(size_) +
                            " bytes (is it being written?)");
        }
        win_pos_ = pos_;
        win_len_ = got;
    }

    int fd_;
    std::uint64_t size_;
    std::uint64_t pos_ = 0;
    std::vector<char> buf_;
    std::uint64_t win_pos_ = 0;
    std::uint64_t win_len_ = 0;
};

class Parser {
  public:
    Parser(int fd, std::uint64_t size) : r_(fd, size), size_(size) {
        r_.where = [this] { return where(); };
    }
    Parser(const Parser&) = delete;
    Parser& operator=(const Parser&) = delete;

    std::optional<GgufInfo> run() {
        if (size_ < 4) {
            throw GgufError("file is only " + std::to_string(size_) +
                            " bytes, too short for the 4-byte GGUF magic");
        }
        const std::string magic = r_.text(4, "the magic");
        if (magic != "GGUF") {
            throw GgufError("not a GGUF file: it starts with '" + printable(magic) +
                            "', not 'GGUF'");
        }
        std::uint32_t version = r_.u32("the version");
        if (version != 2 && version != 3) {
            // A big-endian file (v3) stores its version byte-swapped.
            const std::uint32_t swapped = __builtin_bswap32(version);
            if (swapped != 2 && swapped != 3) return std::nullopt;
            version = swapped;
            r_.swap = true;
        }
        info_.version = version;
        info_.big_endian = r_.swap;
        info_.tensor_count = r_.u64("the tensor count");
        info_.metadata_count = r_.u64("the metadata count");

        part_ = Part::metadata;
        count_ = info_.metadata_count;
        check_count(count_, kMinEntryBytes, "metadata entries");
        for (index_ = 0; index_ < count_; ++index_) read_entry();

        part_ = Part::tensors;
        count_ = info_.tensor_count;
        check_count(count_, kMinTensorInfoBytes, "tensor infos");
        for (index_ = 0; index_ < count_; ++index_) read_tensor_info();

        part_ = Part::data;
        check_data();
        return info_;
    }

  private:
    enum class Part { header, metadata, tensors, data };

    std::string where() const {
        const std::string name = name_.empty() ? "" : " '" + printable(name_, 64) + "'";
        const std::string of = std::to_string(index_ + 1) + " of " + std::to_string(count_);
        switch (part_) {
            case Part::header:
                return "in the file header";
            case Part::metadata:
                return "in metadata entry " + of + name;
            case Part::tensors:
                return "in tensor info " + of + name;
            case Part::data:
                break;
        }
        return "in the data section";
    }

    std::string tensor() const { return "tensor '" + printable(name_, 64) + "': "; }

    void check_count(std::uint64_t count, std::uint64_t min_bytes, std::string_view what) const {
        if (count > r_.left() / min_bytes) {
            throw GgufError("truncated or corrupt: the header claims " + std::to_string(count) +
                            " " + std::string(what) + " but the " + std::to_string(r_.left()) +
                            " bytes left in the file hold at most " +
                            std::to_string(r_.left() / min_bytes));
        }
    }

    void read_entry() {
        name_.clear();
        const std::uint64_t key_len = r_.u64("the key length");
        name_ = r_.text(key_len, "the key");
        const std::uint32_t type = r_.u32("the value type");
        if (key_len == 17 && name_ == "general.alignment") {
            if (seen_alignment_) throw GgufError("general.alignment appears twice");
            seen_alignment_ = true;
            if (type != kUint32) {
                throw GgufError("general.alignment is " + value_type_name(type) +
                                ", expected uint32");
            }
            const std::uint32_t a = r_.u32("the alignment");
            if (a == 0 || (a & (a - 1)) != 0) {
                throw GgufError("general.alignment " + std::to_string(a) +
                                " is not a power of two");
            }
            info_.alignment = a;
            return;
        }
        // What the file is a model of (llama, flux, t5, ...): category inference reads it. Kept
        // only when short, as every name this reader keeps; a longer one names no known
        // architecture anyway.
        if (key_len == 20 && name_ == "general.architecture" && type == kString) {
            const std::uint64_t len = r_.u64("a string length");
            std::string arch = r_.text(len, "general.architecture");
            if (len <= kNameBytesKept) info_.architecture = std::move(arch);
            return;
        }
        skip_value(type, 0);
    }

    // Skips one value of `type`; `depth` is how many arrays enclose it.
    void skip_value(std::uint32_t type, std::uint32_t depth) {
        if (type == kString) {
            r_.skip(r_.u64("a string length"), "a string");
        } else if (type == kArray) {
            skip_array(depth + 1);
        } else if (type < kValueTypes.size()) {
            r_.skip(kValueTypes[type].size, kValueTypes[type].name);
        } else {
            throw GgufError("unknown metadata value type " + std::to_string(type) + " " + where());
        }
    }

    void skip_array(std::uint32_t depth) {
        if (depth > kGgufMaxArrayDepth) {
            throw GgufError("arrays nested more than " + std::to_string(kGgufMaxArrayDepth) +
                            " deep " + where());
        }
        const std::uint32_t type = r_.u32("an array's element type");
        const std::uint64_t n = r_.u64("an array's length");
        if (type == kString || type == kArray) {
            const std::uint64_t min = type == kString ? kMinStringBytes : kMinArrayBytes;
            if (n > r_.left() / min) {
                throw GgufError("truncated or corrupt: an array of " + std::to_string(n) + " " +
                                value_type_name(type) + "s at byte " + std::to_string(r_.pos()) +
                                " cannot fit in the " + std::to_string(r_.left()) +
                                " bytes left, " + where());
            }
            for (std::uint64_t i = 0; i < n; ++i) skip_value(type, depth);
            return;
        }
        if (type >= kValueTypes.size()) {
            throw GgufError("array of unknown metadata value type " + std::to_string(type) + " " +
                            where());
        }
        std::uint64_t bytes = 0;
        if (__builtin_mul_overflow(n, kValueTypes[type].size, &bytes)) {
            r_.truncated(std::numeric_limits<std::uint64_t>::max(), "an array");
        }
        r_.skip(bytes, "an array of " + std::to_string(n) + " " + value_type_name(type) + "s");
    }

    void read_tensor_info() {
        name_.clear();
        name_ = r_.text(r_.u64("the name length"), "the name");
        const std::uint32_t n_dims = r_.u32("the number of dimensions");
        if (n_dims > kGgufMaxDims) {
            throw GgufError(tensor() + "has " + std::to_string(n_dims) +
                            " dimensions, GGUF allows " + std::to_string(kGgufMaxDims));
        }
        std::array<std::uint64_t, kGgufMaxDims> ne{1, 1, 1, 1};
        for (std::uint32_t d = 0; d < n_dims; ++d) {
            ne[d] = r_.u64("a dimension");
            // ggml holds dimensions as int64_t.
            if (ne[d] > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
                throw GgufError(tensor() + "dimension " + std::to_string(d) + " is " +
                                std::to_string(ne[d]) + ", more than 2^63 - 1");
            }
        }
        const std::uint32_t type = r_.u32("the ggml type");
        const std::uint64_t offset = r_.u64("the offset");
        const GgmlType* t = find_ggml_type(type);
        if (t == nullptr) {
            ++info_.unknown_type_tensors;
            if (!unknown_ || offset > unknown_->start) {
                unknown_ = Furthest{offset, offset, name_,
                                    "data of unknown ggml type " + std::to_string(type)};
            }
            return;
        }
        if (ne[0] % t->block_elements != 0) {
            throw GgufError(tensor() + std::string(t->name) + " rows of " + std::to_string(ne[0]) +
                            " elements are not a whole number of its " +
                            std::to_string(t->block_elements) + "-element blocks");
        }
        std::uint64_t bytes = ne[0] / t->block_elements;
        bool overflow = false;
        for (std::size_t d = 1; d < kGgufMaxDims; ++d)
            overflow = overflow || __builtin_mul_overflow(bytes, ne[d], &bytes);
        overflow = overflow || __builtin_mul_overflow(bytes, t->block_bytes, &bytes);
        std::uint64_t end = 0;
        overflow = overflow || __builtin_add_overflow(offset, bytes, &end);
        if (overflow) {
            throw GgufError(tensor() + std::string(t->name) + " of shape " + shape(ne, n_dims) +
                            " at offset " + std::to_string(offset) + " overflows 64 bits");
        }
        if (ranges_) ranges_->push_back({offset, bytes});
        if (!known_ || end > known_->end) {
            known_ = Furthest{offset, end, name_, std::string(t->name) + " " + shape(ne, n_dims)};
        }
    }

    static std::string shape(const std::array<std::uint64_t, kGgufMaxDims>& ne,
                             std::uint32_t n_dims) {
        std::string s = "[";
        for (std::uint32_t d = 0; d < n_dims; ++d) s += (d ? ", " : "") + std::to_string(ne[d]);
        return s + "]";
    }

    // Only the tensor reaching furthest into the file matters: if it fits, all do. Keeping one
    // keeps memory constant whatever the tensor count.
    struct Furthest {
        std::uint64_t start = 0;  // offsets relative to the data section
        std::uint64_t end = 0;
        std::string name;
        std::string what;  // "Q4_0 [4096, 32]"
    };

    void check_data() {
        const std::uint64_t pad = (info_.alignment - r_.pos() % info_.alignment) % info_.alignment;
        const std::uint64_t data = r_.pos() + pad;
        info_.data_offset = info_.data_end = data;
        // Offsets are relative to the data section; a hostile one may overflow once made absolute.
        const auto absolute = [data](std::uint64_t rel) -> std::optional<std::uint64_t> {
            std::uint64_t abs = 0;
            if (__builtin_add_overflow(data, rel, &abs)) return std::nullopt;
            return abs;
        };
        const auto text = [](std::optional<std::uint64_t> v) {
            return v ? std::to_string(*v) : std::string("beyond 2^64");
        };
        if (known_) {
            const auto end = absolute(known_->end);
            if (!end || *end > size_) {
                name_ = known_->name;
                throw GgufError(
                    "truncated: " + tensor() + known_->what + " needs bytes [" +
                    text(absolute(known_->start)) + ", " + text(end) +
                    ") but the file ends at byte " + std::to_string(size_) +
                    (end ? " (" + std::to_string(*end - size_) + " bytes missing)" : ""));
            }
            info_.data_end = *end;
        }
        if (unknown_) {
            const auto start = absolute(unknown_->start);
            if (!start || *start > size_) {
                name_ = unknown_->name;
                throw GgufError("truncated: " + tensor() + unknown_->what + " starts at byte " +
                                text(start) + ", past the end of the file at byte " +
                                std::to_string(size_));
            }
        }
    }

    Reader r_;
    std::uint64_t size_;
    GgufInfo info_;
    Part part_ = Part::header;
    std::uint64_t index_ = 0;
    std::uint64_t count_ = 0;
    std::string name_;  // the key or tensor name being read (its first bytes)
    bool seen_alignment_ = false;
    std::optional<Furthest> known_;
    std::optional<Furthest> unknown_;

  public:
    // Where tensors of known types are (offsets relative to the data section until run() ends).
    std::vector<std::pair<std::uint64_t, std::uint64_t>>* ranges_ = nullptr;
};

}  // namespace

std::optional<GgufInfo> read_gguf_header(
    int fd, std::uint64_t file_size,
    std::vector<std::pair<std::uint64_t, std::uint64_t>>* tensor_ranges) {
    Parser p(fd, file_size);
    p.ranges_ = tensor_ranges;
    auto info = p.run();
    // check_data() proved every known tensor's absolute range fits in the file.
    if (info && tensor_ranges)
        for (auto& r : *tensor_ranges) r.first += info->data_offset;
    return info;
}

bool has_gguf_extension(std::string_view filename) {
    constexpr std::string_view kExt = ".gguf";
    if (filename.size() < kExt.size()) return false;
    const std::string_view tail = filename.substr(filename.size() - kExt.size());
    for (std::size_t i = 0; i < kExt.size(); ++i) {
        const char c = tail[i];
        if ((c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c) != kExt[i]) return false;
    }
    return true;
}

}  // namespace modelfs
