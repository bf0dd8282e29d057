// The GGUF completeness check (store/src/gguf.cpp): valid files built by tests/support's writer
// (v2, v3, big-endian, every metadata type, custom alignment), truncated at every byte, and
// hostile counts and lengths, which must be refused quickly and without big allocations.
#include "modelfs/store/gguf.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "modelfs/store/model_check.h"
#include "modelfs/store/unique_fd.h"
#include "support/gguf_writer.h"
#include "support/safetensors_writer.h"
#include "support/test_env.h"

namespace modelfs {
namespace {

namespace stdfs = std::filesystem;
namespace mt = modelfs::testing;
using mt::GgmlTensorType;
using mt::GgufType;

constexpr std::uint32_t kArrayType = static_cast<std::uint32_t>(GgufType::array);
constexpr std::uint32_t kStringType = static_cast<std::uint32_t>(GgufType::string);

// A small model with every kind of metadata value and the four common tensor types.
mt::GgufWriter sample(std::uint32_t version = 3, bool big_endian = false) {
    mt::GgufWriter w(version, big_endian);
    w.kv_string("general.architecture", "llama")
        .kv_u8("test.u8", 200)
        .kv_i8("test.i8", -5)
        .kv_u16("test.u16", 60000)
        .kv_i16("test.i16", -300)
        .kv_u32("llama.context_length", 4096)
        .kv_i32("test.i32", -70000)
        .kv_f32("llama.rope.freq_base", 10000.0f)
        .kv_bool("test.bool", true)
        .kv_u64("test.u64", 1ull << 40)
        .kv_i64("test.i64", -(1ll << 40))
        .kv_f64("test.f64", 3.25)
        .kv_string_array("tokenizer.ggml.tokens", {"<s>", "</s>", "hello", "", "w\xc3\xb6rld"})
        .kv_u32_array("test.u32_array", {1, 2, 3, 4, 5})
        .kv_nested_i16_array("test.nested", {{1, 2}, {}, {3}});
    w.tensor("token_embd.weight", GgmlTensorType::q4_0, {64, 3}, 1)
        .tensor("blk.0.attn_q.weight", GgmlTensorType::q8_0, {32, 2}, 2)
        .tensor("blk.0.attn_norm.weight", GgmlTensorType::f32, {7}, 3)
        .tensor("output.weight", GgmlTensorType::f16, {5, 3}, 4);
    return w;
}

class GgufTest : public ::testing::Test {
  protected:
    // Writes `bytes` and runs the parser on them.
    std::optional<GgufInfo> parse(const std::string& bytes) {
        const stdfs::path p = tmp_ / "m.gguf";
        mt::write_file(p, bytes);
        UniqueFd fd(::open(p.c_str(), O_RDONLY | O_CLOEXEC));
        EXPECT_TRUE(fd);
        return read_gguf_header(fd.get(), bytes.size());
    }
    // The GgufError message, or "" when the file was accepted.
    std::string error_of(const std::string& bytes) {
        try {
            parse(bytes);
        } catch (const GgufError& e) {
            EXPECT_NE(std::string(e.what()), "");
            return e.what();
        }
        return "";
    }
    // incomplete_model_reason on the bytes, named m.gguf.
    std::optional<std::string> reason_of(const std::string& bytes, const char* name = "m.gguf") {
        const stdfs::path p = tmp_ / name;
        mt::write_file(p, bytes);
        UniqueFd fd(::open(p.c_str(), O_RDONLY | O_CLOEXEC));
        EXPECT_TRUE(fd);
        return incomplete_model_reason(fd.get(), bytes.size(), name);
    }

    mt::TempDir tmp_{"modelfs-gguf"};
};

bool contains(const std::string& s, const std::string& part) {
    return s.find(part) != std::string::npos;
}

std::uint64_t data_bytes_of_sample() {
    // Each tensor starts at a multiple of 32; the last is not padded.
    const std::uint64_t q4 = mt::ggml_tensor_bytes(GgmlTensorType::q4_0, {64, 3});  // 108
    const std::uint64_t q8 = mt::ggml_tensor_bytes(GgmlTensorType::q8_0, {32, 2});  // 68
    const std::uint64_t f32 = mt::ggml_tensor_bytes(GgmlTensorType::f32, {7});      // 28
    const std::uint64_t f16 = mt::ggml_tensor_bytes(GgmlTensorType::f16, {5, 3});   // 30
    EXPECT_EQ(q4, 108u);
    EXPECT_EQ(q8, 68u);
    auto up = [](std::uint64_t v) { return (v + 31) / 32 * 32; };
    return up(up(up(q4) + q8) + f32) + f16;
}

// ---- valid files -------------------------------------------------------------------------------

TEST_F(GgufTest, V3WithEveryMetadataTypeAndCommonTensorTypesIsComplete) {
    const std::string bytes = sample(3).bytes();
    auto info = parse(bytes);
    ASSERT_TRUE(info);
    EXPECT_EQ(info->version, 3u);
    EXPECT_FALSE(info->big_endian);
    EXPECT_EQ(info->metadata_count, 15u);
    EXPECT_EQ(info->tensor_count, 4u);
    EXPECT_EQ(info->alignment, 32u);
    EXPECT_EQ(info->data_offset % 32, 0u);
    EXPECT_EQ(info->data_end, bytes.size());
    EXPECT_EQ(info->data_end - info->data_offset, data_bytes_of_sample());
    EXPECT_EQ(info->unknown_type_tensors, 0u);
    EXPECT_EQ(reason_of(bytes), std::nullopt);
}

TEST_F(GgufTest, V2AndBigEndianV3AreComplete) {
    const std::string v2 = sample(2).bytes();
    auto info = parse(v2);
    ASSERT_TRUE(info);
    EXPECT_EQ(info->version, 2u);
    EXPECT_EQ(info->data_end, v2.size());

    const std::string be = sample(3, true).bytes();
    EXPECT_EQ(be.substr(0, 4), "GGUF");
    EXPECT_EQ(be.substr(4, 4), std::string("\0\0\0\3", 4));
    info = parse(be);
    ASSERT_TRUE(info);
    EXPECT_TRUE(info->big_endian);
    EXPECT_EQ(info->tensor_count, 4u);
    EXPECT_EQ(info->data_end, be.size());
}

TEST_F(GgufTest, ArchitectureIsKeptForCategoryInference) {
    auto info = parse(sample().bytes());
    ASSERT_TRUE(info);
    EXPECT_EQ(info->architecture, "llama");
    mt::GgufWriter flux(3, /*big_endian=*/true);
    flux.kv_string("general.architecture", "flux").tensor("t", GgmlTensorType::f32, {4});
    EXPECT_EQ(parse(flux.bytes())->architecture, "flux");
    // Missing, not a string, or longer than any architecture name: empty, and the file is fine.
    mt::GgufWriter none;
    none.tensor("t", GgmlTensorType::f32, {4});
    EXPECT_EQ(parse(none.bytes())->architecture, "");
    mt::GgufWriter number;
    number.kv_u32("general.architecture", 7).tensor("t", GgmlTensorType::f32, {4});
    EXPECT_EQ(parse(number.bytes())->architecture, "");
    mt::GgufWriter longer;
    longer.kv_string("general.architecture", std::string(1000, 'x'))
        .tensor("t", GgmlTensorType::f32, {4});
    auto l = parse(longer.bytes());
    ASSERT_TRUE(l);
    EXPECT_EQ(l->architecture, "");
    // A truncated architecture string is refused like any truncated string.
    const std::string bytes = flux.bytes();
    EXPECT_TRUE(contains(error_of(bytes.substr(0, bytes.find("flux") + 2)), "truncated"));
}

TEST_F(GgufTest, CustomAlignmentPlacesTheDataSection) {
    for (std::uint32_t a : {1u, 8u, 64u, 4096u}) {
        SCOPED_TRACE(a);
        mt::GgufWriter w = sample();
        w.alignment(a);
        const std::string bytes = w.bytes();
        auto info = parse(bytes);
        ASSERT_TRUE(info);
        EXPECT_EQ(info->alignment, a);
        EXPECT_EQ(info->data_offset % a, 0u);
        EXPECT_EQ(info->data_end, bytes.size());
        // One byte short is incomplete whatever the alignment.
        EXPECT_TRUE(contains(error_of(bytes.substr(0, bytes.size() - 1)), "truncated"));
    }
}

TEST_F(GgufTest, PaddingAndTrailingBytesAfterTheLastTensorAreAllowed) {
    mt::GgufWriter w = sample();
    w.pad_end = true;
    w.raw_tail = "trailing";
    const std::string bytes = w.bytes();
    auto info = parse(bytes);
    ASSERT_TRUE(info);
    EXPECT_LT(info->data_end, bytes.size());
}

TEST_F(GgufTest, KQuantAndZeroTensorFilesAreComplete) {
    mt::GgufWriter w;
    w.tensor("blk.0.ffn_up.weight", GgmlTensorType::q4_k, {256, 2});
    const std::string bytes = w.bytes();
    auto info = parse(bytes);
    ASSERT_TRUE(info);
    EXPECT_EQ(info->data_end - info->data_offset, 2u * 144u);

    // A vocabulary-only file: metadata and no tensors, not even padding.
    mt::GgufWriter vocab;
    vocab.kv_string_array("tokenizer.ggml.tokens", {"a", "b"});
    std::string v = vocab.bytes();
    while (!v.empty() && v.back() == '\0') v.pop_back();  // the writer's padding
    info = parse(v);
    ASSERT_TRUE(info);
    EXPECT_EQ(info->tensor_count, 0u);
}

TEST_F(GgufTest, BlockSizesOfOtherGgmlTypes) {
    // (ggml type id, elements per block, bytes per block), from ggml-common.h's block structs.
    struct Type {
        std::uint32_t id;
        std::uint64_t elements, bytes;
    };
    for (const Type t : {Type{3, 32, 20}, Type{10, 256, 84}, Type{11, 256, 110}, Type{14, 256, 210},
                         Type{16, 256, 66}, Type{19, 256, 50}, Type{23, 256, 136},
                         Type{29, 256, 56}, Type{30, 1, 2}, Type{34, 256, 54}, Type{39, 32, 17}}) {
        SCOPED_TRACE(t.id);
        mt::GgufWriter w;
        w.raw_tensor("t", t.id, {t.elements, 3}, 3 * t.bytes);
        const std::string bytes = w.bytes();
        auto info = parse(bytes);
        ASSERT_TRUE(info);
        EXPECT_EQ(info->unknown_type_tensors, 0u);
        EXPECT_EQ(info->data_end, bytes.size());
        EXPECT_TRUE(contains(error_of(bytes.substr(0, bytes.size() - 1)), "1 bytes missing"));
    }
}

// ---- truncation --------------------------------------------------------------------------------

TEST_F(GgufTest, EveryTruncationIsRefusedWithAReason) {
    for (bool big_endian : {false, true}) {
        mt::GgufWriter w = sample(3, big_endian);
        w.alignment(64);
        const std::string bytes = w.bytes();
        ASSERT_TRUE(parse(bytes));
        // One file cut shorter and shorter (ftruncate), rather than a new file per length.
        const stdfs::path p = tmp_ / "cut.gguf";
        mt::write_file(p, bytes);
        UniqueFd fd(::open(p.c_str(), O_RDWR | O_CLOEXEC));
        ASSERT_TRUE(fd);
        for (std::size_t n = bytes.size(); n-- > 0;) {
            SCOPED_TRACE("big endian " + std::to_string(big_endian) + ", first " +
                         std::to_string(n) + " of " + std::to_string(bytes.size()) + " bytes");
            ASSERT_EQ(::ftruncate(fd.get(), static_cast<off_t>(n)), 0);
            std::string err;
            try {
                read_gguf_header(fd.get(), n);
            } catch (const GgufError& e) {
                err = e.what();
            }
            ASSERT_NE(err, "");
            EXPECT_TRUE(contains(err, "truncated") || contains(err, "too short")) << err;
            EXPECT_EQ(err.find('\n'), std::string::npos) << err;
            const auto why = incomplete_model_reason(fd.get(), n, "cut.gguf");
            ASSERT_TRUE(why);
            EXPECT_TRUE(n == 0 ? contains(*why, "empty file")
                               : contains(*why, "incomplete or malformed GGUF file: " + err))
                << *why;
        }
    }
}

TEST_F(GgufTest, TruncatedDataNamesTheTensorAndTheMissingBytes) {
    const std::string bytes = sample().bytes();
    const std::string err = error_of(bytes.substr(0, bytes.size() - 10));
    EXPECT_TRUE(contains(err, "tensor 'output.weight'")) << err;
    EXPECT_TRUE(contains(err, "F16 [5, 3]")) << err;
    EXPECT_TRUE(contains(err, "10 bytes missing")) << err;
}

// ---- what cannot be checked
// ------------------------------------------------------------------------

TEST_F(GgufTest, OtherVersionsCannotBeCheckedAndAreAccepted) {
    for (std::uint32_t v : {0u, 1u, 4u, 1000u}) {
        SCOPED_TRACE(v);
        std::string bytes = "GGUF" + mt::GgufWriter().u32(v) + "anything at all";
        EXPECT_EQ(parse(bytes), std::nullopt);
        EXPECT_EQ(reason_of(bytes), std::nullopt);
    }
}

TEST_F(GgufTest, UnknownTensorTypesAreCheckedOnlyForTheirStart) {
    mt::GgufWriter w;
    w.tensor("a", GgmlTensorType::f32, {8});
    w.raw_tensor("b", 200, {16}, 10);
    const std::string bytes = w.bytes();
    auto info = parse(bytes);
    ASSERT_TRUE(info);
    EXPECT_EQ(info->unknown_type_tensors, 1u);
    // Its end is unknown: cutting into its bytes is not noticed...
    EXPECT_TRUE(parse(bytes.substr(0, bytes.size() - 5)));
    // ...but a start past the end of the file is (its offset field made 1000).
    mt::GgufWriter alone;
    alone.raw_tensor("b", 200, {16}, 10);
    std::string far = alone.bytes();
    far.replace(24 + 8 + 1 + 4 + 8 + 4, 8, alone.u64(1000));
    const std::string err = error_of(far);
    EXPECT_TRUE(contains(err, "tensor 'b'")) << err;
    EXPECT_TRUE(contains(err, "unknown ggml type 200")) << err;
    EXPECT_TRUE(contains(err, "past the end of the file")) << err;
}

TEST_F(GgufTest, NonGgufExtensionsAreNotChecked) {
    const std::string bytes = sample().bytes();
    EXPECT_EQ(reason_of(bytes.substr(0, 100), "m.bin"), std::nullopt);
    EXPECT_TRUE(reason_of(bytes.substr(0, 100), "M.GGUF"));
    EXPECT_EQ(model_format_of("x.GgUf"), ModelFormat::gguf);
    EXPECT_EQ(model_format_of("x.gguf.part"), ModelFormat::unchecked);
}

// ---- malformed ---------------------------------------------------------------------------------

TEST_F(GgufTest, MalformedHeadersAreRefused) {
    EXPECT_TRUE(contains(error_of("GGML" + std::string(100, '\0')), "not a GGUF file"));

    mt::GgufWriter five_dims;
    five_dims.raw_tensor("x", 0, {1, 1, 1, 1, 1}, 4);
    EXPECT_TRUE(contains(error_of(five_dims.bytes()), "has 5 dimensions"))
        << error_of(five_dims.bytes());

    mt::GgufWriter partial_block;
    partial_block.raw_tensor("q", static_cast<std::uint32_t>(GgmlTensorType::q4_0), {33}, 18);
    EXPECT_TRUE(contains(error_of(partial_block.bytes()), "not a whole number"));

    mt::GgufWriter huge;
    huge.raw_tensor("h", 0, {1ull << 62, 1ull << 62}, 0);
    EXPECT_TRUE(contains(error_of(huge.bytes()), "overflows 64 bits"));

    mt::GgufWriter negative;
    negative.raw_tensor("n", 0, {~0ull}, 0);
    EXPECT_TRUE(contains(error_of(negative.bytes()), "more than 2^63 - 1"));

    mt::GgufWriter bad_align;
    bad_align.alignment(48);
    EXPECT_TRUE(contains(error_of(bad_align.bytes()), "not a power of two"));
    mt::GgufWriter zero_align;
    zero_align.kv_u32("general.alignment", 0);
    EXPECT_TRUE(contains(error_of(zero_align.bytes()), "not a power of two"));
    mt::GgufWriter typed_align;
    typed_align.kv_u64("general.alignment", 32);
    EXPECT_TRUE(contains(error_of(typed_align.bytes()), "general.alignment is uint64"));
    mt::GgufWriter twice;
    twice.kv_u32("general.alignment", 32).kv_u32("general.alignment", 64);
    EXPECT_TRUE(contains(error_of(twice.bytes()), "appears twice"));

    mt::GgufWriter unknown_value;
    unknown_value.kv_raw("k", 13, "xxxxxxxx");
    EXPECT_TRUE(contains(error_of(unknown_value.bytes()), "unknown metadata value type 13"));
    mt::GgufWriter unknown_element;
    unknown_element.kv_raw("k", kArrayType, unknown_element.u32(77) + unknown_element.u64(1));
    EXPECT_TRUE(contains(error_of(unknown_element.bytes()), "unknown metadata value type 77"));
}

TEST_F(GgufTest, HostileNamesStayPrintableInMessages) {
    mt::GgufWriter w;
    w.raw_tensor("evil\x1b[31m" + std::string(500, 'x'), 0, {1, 1, 1, 1, 1}, 4);
    const std::string err = error_of(w.bytes());
    EXPECT_TRUE(contains(err, "evil\\x1b[31m")) << err;
    EXPECT_TRUE(contains(err, "...")) << err;
    EXPECT_LT(err.size(), 300u) << err;
}

// ---- hostile counts and lengths
// ------------------------------------------------------------------

// Runs the parser on `bytes` in a child process whose address space is capped at 256 MiB over
// what it has, with 10 s of CPU: a parser that allocates what a hostile count says, or loops over
// it, dies there. Returns the GgufError message ("" if accepted), or why the child failed.
std::string refused_in_a_small_child(const stdfs::path& dir, const std::string& bytes) {
    const stdfs::path p = dir / "hostile.gguf";
    mt::write_file(p, bytes);
    int pipefd[2];
    if (::pipe(pipefd) != 0) return "pipe failed";
    const pid_t pid = ::fork();
    if (pid == 0) {
        ::close(pipefd[0]);
        std::uint64_t vm_kb = 0;
        std::ifstream status("/proc/self/status");
        for (std::string line; std::getline(status, line);)
            if (line.rfind("VmSize:", 0) == 0) vm_kb = std::stoull(line.substr(7));
        const rlimit as{(vm_kb << 10) + (256ull << 20), (vm_kb << 10) + (256ull << 20)};
        const rlimit cpu{10, 10};
        ::setrlimit(RLIMIT_AS, &as);
        ::setrlimit(RLIMIT_CPU, &cpu);
        std::string msg;
        int code = 0;
        try {
            UniqueFd fd(::open(p.c_str(), O_RDONLY | O_CLOEXEC));
            read_gguf_header(fd.get(), bytes.size());
            code = 2;
        } catch (const GgufError& e) {
            msg = e.what();
        } catch (const std::exception& e) {
            msg = std::string("unexpected exception: ") + e.what();
            code = 3;
        }
        (void)!::write(pipefd[1], msg.data(), msg.size());
        ::_exit(code);
    }
    ::close(pipefd[1]);
    std::string out;
    char buf[512];
    for (ssize_t n; (n = ::read(pipefd[0], buf, sizeof buf)) > 0;) out.append(buf, n);
    ::close(pipefd[0]);
    int status = 0;
    ::waitpid(pid, &status, 0);
    if (!WIFEXITED(status)) return "child killed by signal " + std::to_string(WTERMSIG(status));
    if (WEXITSTATUS(status) == 2) return "accepted";
    if (WEXITSTATUS(status) != 0) return "child failed: " + out;
    return out;
}

TEST_F(GgufTest, HostileCountsAndLengthsAreRefusedQuicklyWithoutBigAllocations) {
    mt::GgufWriter e;  // encoders only
    struct Case {
        std::string name;
        std::string bytes;
        std::string expect;
    };
    std::vector<Case> cases;
    {
        mt::GgufWriter w;
        w.tensor("a", GgmlTensorType::f32, {4});
        w.tensor_count_field = 1ull << 63;
        cases.push_back({"2^63 tensors", w.bytes(), "claims 9223372036854775808 tensor infos"});
    }
    {
        mt::GgufWriter w;
        w.kv_u8("a", 1);
        w.metadata_count_field = ~0ull;
        cases.push_back({"2^64-1 metadata entries", w.bytes(), "metadata entries"});
    }
    {
        mt::GgufWriter w;
        w.kv_raw("k", kStringType, e.u64(1ull << 62) + "short");
        cases.push_back({"string length 2^62", w.bytes(), "a string (4611686018427387904 bytes)"});
    }
    {
        const std::string b = "GGUF" + e.u32(3) + e.u64(0) + e.u64(1) + e.u64(1ull << 62) + "k" +
                              std::string(20, 'x');
        cases.push_back({"key length 2^62", b, "the key (4611686018427387904"});
    }
    {
        mt::GgufWriter w;
        w.raw_tensor("t", 0, {4}, 16);
        std::string b = w.bytes();
        // The tensor name's length field follows the 24-byte header.
        b.replace(24, 8, e.u64(1ull << 62));
        cases.push_back({"tensor name length 2^62", b, "the name (4611686018427387904"});
    }
    {
        mt::GgufWriter w;
        w.kv_raw("k", kArrayType,
                 e.u32(static_cast<std::uint32_t>(GgufType::u64)) + e.u64(1ull << 62));
        cases.push_back({"2^62 u64 values (byte count overflows)", w.bytes(), "truncated"});
    }
    {
        mt::GgufWriter w;
        w.kv_raw("k", kArrayType,
                 e.u32(static_cast<std::uint32_t>(GgufType::f32)) + e.u64(1ull << 40));
        cases.push_back({"2^40 floats", w.bytes(), "an array of 1099511627776 float32s"});
    }
    {
        mt::GgufWriter w;
        w.kv_raw("k", kArrayType, e.u32(kStringType) + e.u64(1ull << 62));
        cases.push_back({"2^62 strings", w.bytes(), "an array of 4611686018427387904 strings"});
    }
    {
        mt::GgufWriter w;
        w.kv_raw("k", kArrayType, e.u32(kArrayType) + e.u64(1ull << 60));
        cases.push_back(
            {"2^60 nested arrays", w.bytes(), "an array of 1152921504606846976 arrays"});
    }
    {
        // Arrays of one array, 10000 deep.
        std::string v;
        for (int i = 0; i < 10000; ++i) v += e.u32(kArrayType) + e.u64(1);
        v += e.u32(static_cast<std::uint32_t>(GgufType::u8)) + e.u64(0);
        mt::GgufWriter w;
        w.kv_raw("deep", kArrayType, v);
        cases.push_back({"arrays nested 10000 deep", w.bytes(), "nested more than 16 deep"});
    }
    {
        // Many legal but empty nested arrays: walked, then refused for the tensor count.
        std::string v = e.u32(kArrayType) + e.u64(100000);
        for (int i = 0; i < 100000; ++i) v += e.u32(kArrayType) + e.u64(0);
        mt::GgufWriter w;
        w.kv_raw("many", kArrayType, v);
        w.tensor_count_field = 1ull << 40;
        cases.push_back(
            {"100000 nested empty arrays, then 2^40 tensors", w.bytes(), "tensor infos"});
    }
    {
        mt::GgufWriter w;
        w.raw_tensor("t", 0, {4}, 16);
        std::string b = w.bytes();
        // The offset: the last 8 bytes of the tensor info, before the padding.
        const std::size_t info_end = 24 + 8 + 1 + 4 + 8 + 4 + 8;
        b.replace(info_end - 8, 8, e.u64(~0ull - 4));
        cases.push_back({"offset near 2^64", b, "overflows 64 bits"});
    }
    for (const Case& c : cases) {
        SCOPED_TRACE(c.name);
        const auto t0 = std::chrono::steady_clock::now();
        const std::string err = refused_in_a_small_child(tmp_.path(), c.bytes);
        const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                            std::chrono::steady_clock::now() - t0)
                            .count();
        EXPECT_TRUE(contains(err, c.expect)) << err;
        EXPECT_LT(ms, 2000) << err;
    }
}

}  // namespace
}  // namespace modelfs
