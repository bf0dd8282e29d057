#include "modelfs/store/safetensors.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <limits>
#include <random>
#include <string>
#include <system_error>
#include <vector>

#include "support/safetensors_writer.h"

namespace modelfs {
namespace {

namespace stdfs = std::filesystem;
namespace mt = modelfs::testing;

class Fd {
  public:
    explicit Fd(const stdfs::path& path) : fd_(::open(path.c_str(), O_RDONLY | O_CLOEXEC)) {
        if (fd_ < 0) throw std::system_error(errno, std::generic_category(), path.string());
    }
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    ~Fd() { ::close(fd_); }
    int get() const { return fd_; }
    std::uint64_t size() const {
        struct stat st {};
        if (::fstat(fd_, &st) != 0) throw std::system_error(errno, std::generic_category());
        return static_cast<std::uint64_t>(st.st_size);
    }

  private:
    int fd_;
};

class ScratchDir {
  public:
    ScratchDir() {
        std::string tmpl = (stdfs::temp_directory_path() / "modelfs-safetensors-XXXXXX").string();
        if (::mkdtemp(tmpl.data()) == nullptr) {
            throw std::system_error(errno, std::generic_category(), "mkdtemp");
        }
        path_ = tmpl;
    }
    ScratchDir(const ScratchDir&) = delete;
    ScratchDir& operator=(const ScratchDir&) = delete;
    ~ScratchDir() {
        std::error_code ec;
        stdfs::remove_all(path_, ec);
    }
    const stdfs::path& path() const { return path_; }

  private:
    stdfs::path path_;
};

// An in-memory file (memfd): a real fd for the reader, without a disk write per fuzz iteration.
class MemFile {
  public:
    MemFile() : fd_(::memfd_create("safetensors-fuzz", MFD_CLOEXEC)) {
        if (fd_ < 0) throw std::system_error(errno, std::generic_category(), "memfd_create");
    }
    MemFile(const MemFile&) = delete;
    MemFile& operator=(const MemFile&) = delete;
    ~MemFile() { ::close(fd_); }

    void set(std::string_view bytes) {
        if (::ftruncate(fd_, 0) != 0 ||
            ::pwrite(fd_, bytes.data(), bytes.size(), 0) != static_cast<ssize_t>(bytes.size())) {
            throw std::system_error(errno, std::generic_category(), "memfd write");
        }
        size_ = bytes.size();
    }
    SafetensorsInfo read() const { return read_safetensors_header(fd_, size_); }

  private:
    int fd_;
    std::uint64_t size_ = 0;
};

SafetensorsInfo read_file(const stdfs::path& path) {
    Fd fd(path);
    return read_safetensors_header(fd.get(), fd.size());
}

std::string slurp(const stdfs::path& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

::testing::AssertionResult contains(const std::string& haystack, const std::string& needle) {
    if (haystack.find(needle) != std::string::npos) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure()
           << "\"" << haystack << "\" does not contain \"" << needle << "\"";
}

// Runs `fn`, which must throw SafetensorsError; returns its message ("" and a test failure
// otherwise, including when another exception type escapes).
std::string error_of(const std::function<void()>& fn) {
    try {
        fn();
    } catch (const SafetensorsError& e) {
        return e.what();
    } catch (const std::exception& e) {
        ADD_FAILURE() << "expected SafetensorsError, got another exception: " << e.what();
        return "";
    }
    ADD_FAILURE() << "expected SafetensorsError, nothing was thrown";
    return "";
}

class SafetensorsTest : public ::testing::Test {
  protected:
    stdfs::path file(const std::string& name = "model.safetensors") const {
        return dir_.path() / name;
    }

    // Writes `image` and reads it back; the SafetensorsError message, or a test failure.
    std::string file_error(const std::string& image) {
        mt::write_file(file("hostile.safetensors"), image);
        return error_of([&] { read_file(file("hostile.safetensors")); });
    }

    // Wraps header JSON in an honest file image with `data_bytes` of data and reads it.
    std::string header_error(const std::string& header, std::size_t data_bytes = 0) {
        return file_error(mt::raw_safetensors(header, std::string(data_bytes, '\x5a')));
    }

    SafetensorsInfo read_header(const std::string& header, std::size_t data_bytes = 0) {
        mt::write_file(file("ok.safetensors"),
                       mt::raw_safetensors(header, std::string(data_bytes, '\x5a')));
        return read_file(file("ok.safetensors"));
    }

    ScratchDir dir_;
};

// ---- Round trips of the test writer's builders -----------------------------------------------

struct Builder {
    const char* name;
    std::function<mt::SafetensorsSpec(std::uint64_t)> make;
};

const std::vector<Builder>& all_builders() {
    static const std::vector<Builder> builders = {
        {"sd15_checkpoint", mt::sd15_checkpoint},
        {"sdxl_checkpoint", mt::sdxl_checkpoint},
        {"kohya_lora", mt::kohya_lora},
        {"diffusers_lora", mt::diffusers_lora},
        {"vae", mt::vae},
        {"ti_emb_params",
         [](std::uint64_t s) { return mt::textual_inversion(s, mt::EmbeddingStyle::emb_params); }},
        {"ti_string_to_param",
         [](std::uint64_t s) {
             return mt::textual_inversion(s, mt::EmbeddingStyle::string_to_param);
         }},
        {"ti_sdxl",
         [](std::uint64_t s) { return mt::textual_inversion(s, mt::EmbeddingStyle::sdxl); }},
        {"controlnet_ldm",
         [](std::uint64_t s) { return mt::controlnet(s, mt::ControlNetStyle::ldm); }},
        {"controlnet_diffusers",
         [](std::uint64_t s) { return mt::controlnet(s, mt::ControlNetStyle::diffusers); }},
        {"unet_sd", [](std::uint64_t s) { return mt::unet_only(s, mt::UnetStyle::sd); }},
        {"unet_flux", [](std::uint64_t s) { return mt::unet_only(s, mt::UnetStyle::flux); }},
        {"unet_sd3", [](std::uint64_t s) { return mt::unet_only(s, mt::UnetStyle::sd3); }},
        {"unet_diffusers",
         [](std::uint64_t s) { return mt::unet_only(s, mt::UnetStyle::diffusers); }},
        {"text_encoder_clip_l",
         [](std::uint64_t s) { return mt::text_encoder(s, mt::TextEncoderStyle::clip_l); }},
        {"text_encoder_t5",
         [](std::uint64_t s) { return mt::text_encoder(s, mt::TextEncoderStyle::t5); }},
        {"clip_vision", mt::clip_vision},
        {"ip_adapter", mt::ip_adapter},
    };
    return builders;
}

class SafetensorsBuilderTest : public SafetensorsTest,
                               public ::testing::WithParamInterface<Builder> {};

TEST_P(SafetensorsBuilderTest, RoundTrips) {
    const mt::SafetensorsSpec spec = GetParam().make(7);
    const std::uint64_t size = mt::write_safetensors(file(), spec);
    EXPECT_EQ(size, stdfs::file_size(file()));
    EXPECT_LT(size, 16u * 1024) << "builders should stay tiny";

    const SafetensorsInfo info = read_file(file());
    const std::string header = mt::safetensors_header(spec);
    EXPECT_EQ(info.header_len, header.size());
    EXPECT_EQ(info.data_offset(), 8 + header.size());
    EXPECT_EQ(info.data_offset() + mt::data_size(spec), size);
    EXPECT_EQ(info.tensor_count, spec.tensors.size());
    EXPECT_EQ(info.metadata, spec.metadata);

    std::vector<std::string> names;
    std::uint64_t params = 0;
    std::map<std::string, std::uint64_t> dtypes;
    for (const auto& t : spec.tensors) {
        names.push_back(t.name);
        std::uint64_t n = 1;
        for (auto d : t.shape) n *= d;
        params += n;
        ++dtypes[t.dtype];
    }
    std::sort(names.begin(), names.end());
    EXPECT_EQ(info.tensor_names, names);
    EXPECT_EQ(info.parameter_count, params);
    EXPECT_EQ(info.dtypes, dtypes);

    const bool checkpoint = std::string(GetParam().name).ends_with("_checkpoint");
    EXPECT_EQ(info.has_unet, checkpoint);
    EXPECT_EQ(info.has_vae, checkpoint);
    EXPECT_EQ(info.has_text_encoder, checkpoint);

    // The in-memory image and the streamed file are the same bytes.
    EXPECT_EQ(slurp(file()), mt::safetensors_bytes(spec));
    // And parsing the header alone agrees with reading the file.
    const SafetensorsInfo parsed = parse_safetensors_header(header, size);
    EXPECT_EQ(parsed.tensor_names, info.tensor_names);
    EXPECT_EQ(parsed.parameter_count, info.parameter_count);
}

INSTANTIATE_TEST_SUITE_P(SafetensorsBuilders, SafetensorsBuilderTest,
                         ::testing::ValuesIn(all_builders()),
                         [](const ::testing::TestParamInfo<Builder>& p) { return p.param.name; });

TEST_F(SafetensorsTest, HeaderIsPaddedLikeTheReferenceWriter) {
    for (const auto& b : all_builders()) {
        const std::string header = mt::safetensors_header(b.make(0));
        EXPECT_EQ(header.size() % 8, 0u) << b.name;
        EXPECT_EQ(header.front(), '{') << b.name;
        const auto last = header.find_last_not_of(' ');
        EXPECT_EQ(header[last], '}') << b.name;
        EXPECT_LT(header.size() - last - 1, 8u) << b.name;
    }
    const std::string lora = mt::safetensors_header(mt::kohya_lora());
    EXPECT_EQ(lora.rfind("{\"__metadata__\":", 0), 0u) << "metadata comes first";
}

TEST_F(SafetensorsTest, SeedChangesDataButNotHeader) {
    const std::string a = mt::safetensors_bytes(mt::sd15_checkpoint(1));
    const std::string a_again = mt::safetensors_bytes(mt::sd15_checkpoint(1));
    const std::string b = mt::safetensors_bytes(mt::sd15_checkpoint(2));
    ASSERT_EQ(a.size(), b.size());
    EXPECT_EQ(a, a_again);
    const std::size_t data_start = 8 + mt::safetensors_header(mt::sd15_checkpoint(1)).size();
    EXPECT_EQ(a.substr(0, data_start), b.substr(0, data_start));
    EXPECT_NE(a.substr(data_start), b.substr(data_start));
    // Every tensor differs, not just one.
    const auto spec1 = mt::sd15_checkpoint(1), spec2 = mt::sd15_checkpoint(2);
    for (std::size_t i = 0; i < spec1.tensors.size(); ++i) {
        EXPECT_NE(mt::tensor_bytes(spec1, i), mt::tensor_bytes(spec2, i)) << spec1.tensors[i].name;
    }
}

TEST_F(SafetensorsTest, PerTensorSeedSharesBytesAcrossFiles) {
    auto one = mt::sd15_checkpoint(1), two = mt::sd15_checkpoint(2);
    for (auto* spec : {&one, &two}) {
        for (auto& t : spec->tensors) {
            if (t.name.starts_with("first_stage_model.")) t.seed = 42;
        }
    }
    for (std::size_t i = 0; i < one.tensors.size(); ++i) {
        const bool shared = one.tensors[i].name.starts_with("first_stage_model.");
        EXPECT_EQ(mt::tensor_bytes(one, i) == mt::tensor_bytes(two, i), shared)
            << one.tensors[i].name;
    }
}

TEST_F(SafetensorsTest, ExplicitTensorData) {
    mt::SafetensorsSpec spec;
    spec.tensors.push_back({"x", "U8", {4}, std::nullopt, std::string("abcd")});
    EXPECT_EQ(mt::tensor_bytes(spec, 0), "abcd");
    mt::write_safetensors(file(), spec);
    EXPECT_TRUE(slurp(file()).ends_with("abcd"));
    EXPECT_EQ(read_file(file()).tensor_count, 1u);

    spec.tensors[0].data = std::string("abc");
    EXPECT_THROW(mt::safetensors_header(spec), std::invalid_argument);
}

TEST_F(SafetensorsTest, WriterRefusesSpecsItCannotWrite) {
    mt::SafetensorsSpec dup = mt::vae();
    dup.tensors.push_back(dup.tensors.front());
    EXPECT_THROW(mt::safetensors_header(dup), std::invalid_argument);
    mt::SafetensorsSpec bad_dtype;
    bad_dtype.tensors.push_back({"x", "F128", {1}, std::nullopt, std::nullopt});
    EXPECT_THROW(mt::safetensors_header(bad_dtype), std::invalid_argument);
}

TEST_F(SafetensorsTest, GrowToStreamsLargeFiles) {
    auto spec = mt::vae(3);
    const std::vector<std::string> names_before = [&] {
        std::vector<std::string> n;
        for (const auto& t : spec.tensors) n.push_back(t.name);
        return n;
    }();
    const std::uint64_t want = 3 * 1024 * 1024 + 5;  // crosses the writer's 1 MiB chunks
    mt::grow_to(spec, want);
    EXPECT_GE(mt::data_size(spec), want);
    EXPECT_LT(mt::data_size(spec), want + 64 * 1024);
    for (std::size_t i = 0; i < spec.tensors.size(); ++i) {
        EXPECT_EQ(spec.tensors[i].name, names_before[i]);
    }

    const std::uint64_t size = mt::write_safetensors(file(), spec);
    EXPECT_EQ(size, stdfs::file_size(file()));
    EXPECT_EQ(slurp(file()), mt::safetensors_bytes(spec));
    EXPECT_EQ(read_file(file()).tensor_count, spec.tensors.size());
}

TEST_F(SafetensorsTest, GrowToWithSubByteDtype) {
    mt::SafetensorsSpec spec;
    spec.tensors.push_back({"packed", "F4", {3, 3}, std::nullopt, std::nullopt});
    mt::grow_to(spec, 1001);
    EXPECT_GE(mt::data_size(spec), 1001u);
    mt::write_safetensors(file(), spec);
    EXPECT_EQ(read_file(file()).tensor_count, 1u);
}

// ---- Valid edge cases --------------------------------------------------------------------------

TEST_F(SafetensorsTest, EmptyObjectIsValid) {
    const SafetensorsInfo info = read_header("{}      ");
    EXPECT_EQ(info.tensor_count, 0u);
    EXPECT_EQ(info.parameter_count, 0u);
    EXPECT_TRUE(info.tensor_names.empty());
    EXPECT_EQ(info.header_len, 8u);
    EXPECT_EQ(info.data_offset(), 16u);
}

TEST_F(SafetensorsTest, OnlyMetadataIsValid) {
    const SafetensorsInfo info = read_header(R"({"__metadata__":{"format":"pt","k":""}})");
    EXPECT_EQ(info.tensor_count, 0u);
    EXPECT_EQ(info.metadata, (std::map<std::string, std::string>{{"format", "pt"}, {"k", ""}}));
}

TEST_F(SafetensorsTest, ScalarAndZeroElementTensors) {
    const SafetensorsInfo info =
        read_header(R"({"s":{"dtype":"F32","shape":[],"data_offsets":[0,4]},)"
                    R"("z":{"dtype":"F32","shape":[0,1024],"data_offsets":[4,4]},)"
                    R"("z0":{"dtype":"F16","shape":[0],"data_offsets":[0,0]}})",
                    4);
    EXPECT_EQ(info.tensor_count, 3u);
    EXPECT_EQ(info.parameter_count, 1u);
}

TEST_F(SafetensorsTest, EveryKnownDtypeIsAccepted) {
    const std::vector<std::pair<std::string, std::uint64_t>> dtypes = {
        {"BOOL", 8},    {"U8", 8},   {"I8", 8},   {"F8_E5M2", 8}, {"F8_E4M3", 8},
        {"F8_E8M0", 8}, {"I16", 16}, {"U16", 16}, {"F16", 16},    {"BF16", 16},
        {"I32", 32},    {"U32", 32}, {"F32", 32}, {"F64", 64},    {"I64", 64},
        {"U64", 64},    {"C64", 64}, {"F4", 4},   {"F6_E2M3", 6}, {"F6_E3M2", 6},
    };
    for (const auto& [dtype, bits] : dtypes) {
        // 5 elements: exercises the rounding up of sub-byte dtypes (5*4=20 bits -> 3 bytes).
        const std::uint64_t bytes = (5 * bits + 7) / 8;
        const std::string header = R"({"t":{"dtype":")" + dtype +
                                   R"(","shape":[5],"data_offsets":[0,)" + std::to_string(bytes) +
                                   "]}}";
        const SafetensorsInfo info = parse_safetensors_header(header, 8 + header.size() + bytes);
        EXPECT_EQ(info.dtypes.at(dtype), 1u) << dtype;
        EXPECT_EQ(info.parameter_count, 5u) << dtype;
    }
}

TEST_F(SafetensorsTest, SubByteDtypesRoundUpToWholeBytes) {
    const std::string ok = R"({"t":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}})";
    EXPECT_EQ(parse_safetensors_header(ok, 8 + ok.size() + 2).tensor_count, 1u);
    const std::string six = R"({"t":{"dtype":"F6_E3M2","shape":[3],"data_offsets":[0,3]}})";
    EXPECT_EQ(parse_safetensors_header(six, 8 + six.size() + 3).tensor_count, 1u);
    const std::string bad = R"({"t":{"dtype":"F4","shape":[3],"data_offsets":[0,1]}})";
    EXPECT_TRUE(contains(error_of([&] { parse_safetensors_header(bad, 8 + bad.size() + 1); }),
                         "needs 2 bytes"));
}

TEST_F(SafetensorsTest, TensorsMayBeListedInAnyOrder) {
    const SafetensorsInfo info =
        read_header(R"({"c":{"dtype":"U8","shape":[2],"data_offsets":[6,8]},)"
                    R"("a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
                    R"("__metadata__":{"x":"y"},)"
                    R"("b":{"dtype":"U8","shape":[2],"data_offsets":[4,6]}})",
                    8);
    EXPECT_EQ(info.tensor_names, (std::vector<std::string>{"a", "b", "c"}));
}

TEST_F(SafetensorsTest, UnknownFieldsAreIgnored) {
    const SafetensorsInfo info =
        read_header(R"({"a":{"note":{"deep":[1,{"x":null},true]},"dtype":"U8","extra":-1.5,)"
                    R"("shape":[4],"more":["s"],"data_offsets":[0,4]}})",
                    4);
    EXPECT_EQ(info.tensor_count, 1u);
}

TEST_F(SafetensorsTest, DeeplyNestedUnknownFieldDoesNotRecurse) {
    const std::size_t depth = 1'000'000;
    std::string header = R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"x":)";
    header.append(depth, '[');
    header.append(depth, ']');
    header += "}}";
    EXPECT_EQ(parse_safetensors_header(header, 8 + header.size() + 1).tensor_count, 1u);
}

TEST_F(SafetensorsTest, PrefixFlags) {
    auto info_of = [](std::vector<std::string> names) {
        std::string header = "{";
        for (std::size_t i = 0; i < names.size(); ++i) {
            if (i > 0) header += ",";
            header += "\"" + names[i] + R"(":{"dtype":"U8","shape":[1],"data_offsets":[)" +
                      std::to_string(i) + "," + std::to_string(i + 1) + "]}";
        }
        header += "}";
        return parse_safetensors_header(header, 8 + header.size() + names.size());
    };
    auto i1 = info_of({"model.diffusion_model.x"});
    EXPECT_TRUE(i1.has_unet);
    EXPECT_FALSE(i1.has_vae || i1.has_text_encoder);
    auto i2 = info_of({"first_stage_model.x", "conditioner.y"});
    EXPECT_TRUE(i2.has_vae && i2.has_text_encoder);
    EXPECT_FALSE(i2.has_unet);
    auto i3 = info_of({"cond_stage_model.x"});
    EXPECT_TRUE(i3.has_text_encoder);
    auto i4 = info_of({"xmodel.diffusion_model.a", "diffusion_model.b"});
    EXPECT_FALSE(i4.has_unet) << "prefix, not substring";
}

TEST(SafetensorsExtension, RecognizesSafetensorsAndSft) {
    EXPECT_TRUE(has_safetensors_extension("model.safetensors"));
    EXPECT_TRUE(has_safetensors_extension("Model.SafeTensors"));
    EXPECT_TRUE(has_safetensors_extension("dir/flux1-dev.sft"));
    EXPECT_TRUE(has_safetensors_extension("X.SFT"));
    EXPECT_TRUE(has_safetensors_extension("my.vae.safetensors"));
    EXPECT_FALSE(has_safetensors_extension("model.ckpt"));
    EXPECT_FALSE(has_safetensors_extension("model.safetensors.part"));
    EXPECT_FALSE(has_safetensors_extension("model.safetensor"));
    EXPECT_FALSE(has_safetensors_extension("safetensors"));
    EXPECT_FALSE(has_safetensors_extension("model.gguf"));
    EXPECT_FALSE(has_safetensors_extension(""));
}

// ---- Hostile input: the length field ---------------------------------------------------------

TEST_F(SafetensorsTest, EmptyFile) {
    EXPECT_TRUE(contains(file_error(""), "too short for the 8-byte header length"));
}

TEST_F(SafetensorsTest, FileShorterThanLengthField) {
    EXPECT_TRUE(contains(file_error(std::string("\x02\0\0\0", 4)), "file is only 4 bytes"));
}

TEST_F(SafetensorsTest, HeaderLengthZero) {
    EXPECT_TRUE(contains(file_error(mt::le64(0) + "{}"), "header length is 0"));
}

TEST_F(SafetensorsTest, HeaderLengthOverLimit) {
    EXPECT_EQ(file_error(mt::raw_safetensors_with_length(123456789012ULL, "{}")),
              "header length 123456789012 exceeds the 100000000-byte limit");
    EXPECT_TRUE(contains(file_error(mt::raw_safetensors_with_length(100'000'001, "{}")),
                         "exceeds the 100000000-byte limit"));
}

TEST_F(SafetensorsTest, HeaderLengthAtLimitIsCheckedAgainstFileSize) {
    // Exactly at the limit is allowed by the limit check, so the file-size check reports it.
    EXPECT_EQ(file_error(mt::raw_safetensors_with_length(100'000'000, "{}")),
              "header claims 100000000 bytes but the file has only 2 after the length field");
}

TEST_F(SafetensorsTest, HugeLengthDoesNotAllocate) {
    // Tell the reader the file is enormous, so only the limit stands between the length field
    // and an allocation: a std::bad_alloc or std::length_error here would fail error_of().
    mt::write_file(file(), mt::raw_safetensors_with_length(1ULL << 63, "{}"));
    Fd fd(file());
    const std::uint64_t huge = std::numeric_limits<std::uint64_t>::max();
    EXPECT_TRUE(contains(error_of([&] { read_safetensors_header(fd.get(), huge); }),
                         "header length 9223372036854775808 exceeds"));

    mt::write_file(file(), mt::raw_safetensors_with_length(huge, "{}"));
    Fd fd2(file());
    EXPECT_TRUE(contains(error_of([&] { read_safetensors_header(fd2.get(), huge); }),
                         "header length 18446744073709551615 exceeds"));
}

TEST_F(SafetensorsTest, HeaderLengthPastEndOfFile) {
    EXPECT_EQ(file_error(mt::raw_safetensors_with_length(5000, std::string(120, ' '))),
              "header claims 5000 bytes but the file has only 120 after the length field");
}

TEST_F(SafetensorsTest, TruncatedInsideHeader) {
    const std::string image = mt::safetensors_bytes(mt::kohya_lora());
    EXPECT_TRUE(contains(file_error(image.substr(0, 100)), "header claims"));
}

TEST_F(SafetensorsTest, TruncatedInsideData) {
    const std::string image = mt::safetensors_bytes(mt::sd15_checkpoint());
    EXPECT_TRUE(contains(file_error(image.substr(0, image.size() - 10)), "past the end"));
}

TEST_F(SafetensorsTest, FileShorterThanCallerClaims) {
    // The file shrank between fstat and read: the reader hits EOF inside the header.
    const std::string image = mt::safetensors_bytes(mt::kohya_lora());
    mt::write_file(file(), mt::raw_safetensors_with_length(4096, image.substr(8, 100)));
    Fd fd(file());
    EXPECT_TRUE(contains(error_of([&] { read_safetensors_header(fd.get(), 1 << 20); }),
                         "file ended after 100 of 4096 header bytes"));
}

TEST_F(SafetensorsTest, IoErrorsAreSystemErrors) {
    try {
        read_safetensors_header(-1, 100);
        FAIL() << "no exception";
    } catch (const std::system_error& e) {
        EXPECT_EQ(e.code().value(), EBADF);
    }
    const int dirfd = ::open(dir_.path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    ASSERT_GE(dirfd, 0);
    try {
        read_safetensors_header(dirfd, 100);
        ADD_FAILURE() << "no exception";
    } catch (const std::system_error& e) {
        EXPECT_EQ(e.code().value(), EISDIR);
    }
    ::close(dirfd);
}

// ---- Hostile input: the JSON -------------------------------------------------------------------

TEST_F(SafetensorsTest, InvalidJson) {
    const std::string msg = header_error(R"({"a": })");
    EXPECT_TRUE(contains(msg, "invalid JSON at header offset 6"));
    EXPECT_TRUE(contains(header_error(R"({"a":{"dtype":"U8",)"), "invalid JSON"));
    EXPECT_TRUE(contains(header_error("{} x"), "invalid JSON"));
    EXPECT_TRUE(contains(header_error("{}{}"), "invalid JSON"));
}

TEST_F(SafetensorsTest, InvalidUtf8) {
    EXPECT_TRUE(contains(header_error("{\"\xff\xfe\":{}}"), "invalid JSON"));
}

TEST_F(SafetensorsTest, NulBytes) {
    // nlohmann would stop at the NUL and accept "{}"; the bytes after it must not escape.
    EXPECT_TRUE(contains(header_error(std::string("{}\0garbage", 10)), "NUL byte at offset 2"));
}

TEST_F(SafetensorsTest, NotAnObject) {
    EXPECT_TRUE(contains(header_error("[]"), "not a JSON object"));
    EXPECT_TRUE(contains(header_error("42"), "not a JSON object"));
    EXPECT_TRUE(contains(header_error("\"x\""), "not a JSON object"));
    EXPECT_TRUE(contains(header_error("null"), "not a JSON object"));
    EXPECT_TRUE(contains(header_error("  {}"), "not a JSON object"));
    EXPECT_TRUE(contains(header_error("\xef\xbb\xbf{}"), "not a JSON object"));
}

TEST_F(SafetensorsTest, EntryNotAnObject) {
    EXPECT_TRUE(
        contains(header_error(R"({"a":5})"), "tensor 'a': entry is a number, not an object"));
    EXPECT_TRUE(contains(header_error(R"({"a":[1]})"), "tensor 'a': entry is an array"));
}

TEST_F(SafetensorsTest, MissingDtype) {
    EXPECT_TRUE(contains(header_error(R"({"a":{"shape":[1],"data_offsets":[0,1]}})", 1),
                         "tensor 'a': missing \"dtype\""));
}

TEST_F(SafetensorsTest, MissingShape) {
    EXPECT_TRUE(contains(header_error(R"({"a":{"dtype":"U8","data_offsets":[0,1]}})", 1),
                         "tensor 'a': missing \"shape\""));
}

TEST_F(SafetensorsTest, MissingDataOffsets) {
    EXPECT_TRUE(contains(header_error(R"({"a":{"dtype":"U8","shape":[1]}})", 1),
                         "tensor 'a': missing \"data_offsets\""));
}

TEST_F(SafetensorsTest, FieldsOfTheWrongType) {
    EXPECT_TRUE(contains(header_error(R"({"a":{"dtype":8,"shape":[1],"data_offsets":[0,1]}})", 1),
                         "\"dtype\" is a number, expected a string"));
    EXPECT_TRUE(contains(header_error(R"({"a":{"dtype":"U8","shape":1,"data_offsets":[0,1]}})", 1),
                         "\"shape\" is a number, expected an array"));
    EXPECT_TRUE(contains(header_error(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":{}}})", 1),
                         "\"data_offsets\" is an object, expected an array"));
}

TEST_F(SafetensorsTest, UnknownDtype) {
    EXPECT_TRUE(
        contains(header_error(R"({"a":{"dtype":"F128","shape":[1],"data_offsets":[0,16]}})", 16),
                 "tensor 'a': unknown dtype 'F128'"));
    EXPECT_TRUE(
        contains(header_error(R"({"a":{"dtype":"f32","shape":[1],"data_offsets":[0,4]}})", 4),
                 "unknown dtype 'f32'"));
}

TEST_F(SafetensorsTest, NegativeShape) {
    EXPECT_TRUE(
        contains(header_error(R"({"a":{"dtype":"U8","shape":[-1],"data_offsets":[0,1]}})", 1),
                 "negative dimension -1"));
}

TEST_F(SafetensorsTest, NonIntegerShape) {
    EXPECT_TRUE(
        contains(header_error(R"({"a":{"dtype":"U8","shape":[1.5],"data_offsets":[0,1]}})", 1),
                 "dimension 1.5 that is not a non-negative integer"));
    EXPECT_TRUE(
        contains(header_error(R"({"a":{"dtype":"U8","shape":[1e0],"data_offsets":[0,1]}})", 1),
                 "not a non-negative integer"));
    EXPECT_TRUE(contains(
        header_error(R"({"a":{"dtype":"U8","shape":[18446744073709551616],"data_offsets":[0,1]}})",
                     1),
        "not a non-negative integer"));
    EXPECT_TRUE(
        contains(header_error(R"({"a":{"dtype":"U8","shape":["1"],"data_offsets":[0,1]}})", 1),
                 "\"shape\" contains a string"));
    EXPECT_TRUE(
        contains(header_error(R"({"a":{"dtype":"U8","shape":[[1]],"data_offsets":[0,1]}})", 1),
                 "\"shape\" contains an array"));
}

TEST_F(SafetensorsTest, BadDataOffsetEntries) {
    EXPECT_TRUE(contains(header_error(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[-1,0]}})"),
                         "negative offset -1"));
    EXPECT_TRUE(
        contains(header_error(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1.0]}})", 1),
                 "not a non-negative integer"));
    EXPECT_TRUE(contains(header_error(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0]}})", 1),
                         "\"data_offsets\" has 1 entries, expected 2"));
    EXPECT_TRUE(contains(header_error(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[]}})", 1),
                         "has 0 entries"));
    EXPECT_TRUE(
        contains(header_error(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1,2]}})", 2),
                 "more than 2 entries"));
    EXPECT_TRUE(
        contains(header_error(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[null,1]}})", 1),
                 "\"data_offsets\" contains null"));
}

TEST_F(SafetensorsTest, OffsetsReversed) {
    EXPECT_TRUE(
        contains(header_error(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[8,4]}})", 8),
                 "tensor 'a': data_offsets [8, 4) are reversed"));
}

TEST_F(SafetensorsTest, OffsetsPastEnd) {
    EXPECT_EQ(header_error(R"({"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]}})", 4),
              "tensor 'a': data_offsets [0, 8) extend past the end of the 4-byte data section");
    EXPECT_TRUE(contains(
        header_error(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[18446744073709551614,)"
                     R"(18446744073709551615]}})",
                     4),
        "past the end"));
}

TEST_F(SafetensorsTest, OverlappingTensors) {
    EXPECT_EQ(header_error(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                           R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                           12),
              "tensors 'a' [0, 8) and 'b' [4, 12) overlap");
    // Two tensors sharing the same bytes (aliasing) is an overlap too.
    EXPECT_TRUE(contains(header_error(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                      R"("b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                                      8),
                         "overlap"));
}

TEST_F(SafetensorsTest, HoleBetweenTensors) {
    EXPECT_EQ(header_error(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                           R"("b":{"dtype":"F32","shape":[2],"data_offsets":[12,20]}})",
                           20),
              "hole of 4 bytes in the data section at [8, 12), between 'a' and 'b'");
}

TEST_F(SafetensorsTest, HoleBeforeFirstTensor) {
    EXPECT_TRUE(
        contains(header_error(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12),
                 "hole of 4 bytes in the data section at [0, 4), before the first tensor 'a'"));
}

TEST_F(SafetensorsTest, TrailingBytesAfterLastTensor) {
    EXPECT_TRUE(
        contains(header_error(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 12),
                 "4 trailing bytes after the last tensor 'a'"));
    EXPECT_TRUE(contains(header_error("{}", 3), "no tensors but 3 trailing bytes"));
}

TEST_F(SafetensorsTest, SizeMismatchWithShape) {
    EXPECT_EQ(header_error(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8),
              "tensor 'a': dtype F32 with shape [3] needs 12 bytes but data_offsets [0, 8) hold 8");
}

TEST_F(SafetensorsTest, OverflowingShape) {
    // 2^40 * 2^40 elements wraps to 0 in 64 bits; it must not pass as an empty tensor.
    EXPECT_TRUE(contains(
        header_error(
            R"({"a":{"dtype":"F32","shape":[1099511627776,1099511627776],"data_offsets":[0,0]}})"),
        "shape [1099511627776, 1099511627776] of F32 overflows 64 bits"));
    // Elements fit (2^62) but bits do not.
    EXPECT_TRUE(contains(
        header_error(
            R"({"a":{"dtype":"F64","shape":[2147483648,2147483648],"data_offsets":[0,0]}})"),
        "overflows 64 bits"));
}

TEST_F(SafetensorsTest, MetadataNonStringValue) {
    EXPECT_TRUE(contains(header_error(R"({"__metadata__":{"a":1}})"),
                         "__metadata__ value for key 'a' is a number, not a string"));
    EXPECT_TRUE(contains(header_error(R"({"__metadata__":{"a":{"b":"c"}}})"),
                         "__metadata__ value for key 'a' is an object"));
    EXPECT_TRUE(contains(header_error(R"({"__metadata__":{"a":null}})"), "is null"));
}

TEST_F(SafetensorsTest, MetadataNotAnObject) {
    EXPECT_TRUE(contains(header_error(R"({"__metadata__":"x"})"),
                         "__metadata__ is a string, not an object"));
    EXPECT_TRUE(contains(header_error(R"({"__metadata__":["x"]})"), "__metadata__ is an array"));
}

TEST_F(SafetensorsTest, DuplicateKeysAreRefused) {
    EXPECT_TRUE(contains(header_error(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                                      R"("a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})",
                                      2),
                         "duplicate tensor name 'a'"));
    EXPECT_TRUE(contains(
        header_error(R"({"a":{"dtype":"U8","dtype":"I8","shape":[1],"data_offsets":[0,1]}})", 1),
        "duplicate field 'dtype'"));
    EXPECT_TRUE(contains(header_error(R"({"__metadata__":{"k":"1","k":"2"}})"),
                         "__metadata__ has a duplicate key 'k'"));
    EXPECT_TRUE(contains(header_error(R"({"__metadata__":{},"__metadata__":{}})"),
                         "duplicate \"__metadata__\""));
}

TEST_F(SafetensorsTest, HostileNamesAreEscapedAndTruncatedInMessages) {
    const std::string name = "\\u001b[31m" + std::string(5000, 'x');
    const std::string msg = header_error("{\"" + name + "\":7}");
    EXPECT_TRUE(contains(msg, "entry is a number"));
    EXPECT_EQ(msg.find('\x1b'), std::string::npos);
    EXPECT_TRUE(contains(msg, "\\x1b[31m"));
    EXPECT_LT(msg.size(), 300u);
}

TEST_F(SafetensorsTest, ParseHeaderChecksFileSize) {
    EXPECT_TRUE(contains(error_of([] { parse_safetensors_header("{}", 9); }),
                         "does not fit in a file of 9 bytes"));
    EXPECT_TRUE(contains(error_of([] { parse_safetensors_header("", 100); }), "empty"));
}

// ---- Robustness -----------------------------------------------------------------------------

TEST(SafetensorsFuzz, RandomHeaderCorruptionEitherParsesOrThrows) {
    const mt::SafetensorsSpec spec = mt::sdxl_checkpoint();
    const std::string header = mt::safetensors_header(spec);
    const std::uint64_t file_size = 8 + header.size() + mt::data_size(spec);
    std::mt19937_64 rng(20240601);
    int parsed = 0, rejected = 0;
    for (int i = 0; i < 2000; ++i) {
        std::string h = header;
        const int flips = 1 + static_cast<int>(rng() % 4);
        for (int f = 0; f < flips; ++f) {
            const std::size_t pos = rng() % h.size();
            // Mostly JSON-significant characters, which reach deeper than random bytes.
            static constexpr char kInteresting[] = "{}[]\",:0123456789-.eE \\u\x01\xff\x80";
            h[pos] = rng() % 2 ? static_cast<char>(rng())
                               : kInteresting[rng() % (sizeof(kInteresting) - 1)];
        }
        try {
            const SafetensorsInfo info = parse_safetensors_header(h, file_size);
            EXPECT_LE(info.tensor_count, spec.tensors.size());
            ++parsed;
        } catch (const SafetensorsError&) {
            ++rejected;
        }
    }
    EXPECT_GT(rejected, 0);
    EXPECT_GT(parsed, 0) << "corruptions inside metadata strings should still parse";
}

TEST(SafetensorsFuzz, RandomFileCorruptionIncludingLengthField) {
    MemFile mem;
    const std::string image = mt::safetensors_bytes(mt::kohya_lora(5));
    const std::size_t header_end = 8 + mt::safetensors_header(mt::kohya_lora(5)).size();
    std::mt19937_64 rng(7);
    for (int i = 0; i < 2000; ++i) {
        std::string img = image;
        const int flips = 1 + static_cast<int>(rng() % 3);
        for (int f = 0; f < flips; ++f) {
            // Half the corruptions hit the length field, where the allocation risk lives.
            const std::size_t pos = rng() % 2 ? rng() % 8 : rng() % header_end;
            img[pos] = static_cast<char>(rng());
        }
        mem.set(img);
        try {
            mem.read();
        } catch (const SafetensorsError&) {
        }
    }
}

TEST(SafetensorsFuzz, EveryTruncationIsRejected) {
    MemFile mem;
    const std::string image = mt::safetensors_bytes(mt::kohya_lora());
    for (std::size_t len = 0; len < image.size(); ++len) {
        mem.set(std::string_view(image).substr(0, len));
        EXPECT_THROW(mem.read(), SafetensorsError) << "length " << len;
    }
    mem.set(image);
    EXPECT_EQ(mem.read().tensor_count, 6u);
}

TEST(SafetensorsLarge, SdxlSizedHeader) {
    // A real SDXL checkpoint: ~2500 tensors, ~200 KB of header JSON.
    mt::SafetensorsSpec spec;
    for (int block = 0; block < 125; ++block) {
        for (int layer = 0; layer < 20; ++layer) {
            const std::string prefix = block < 100 ? "model.diffusion_model.output_blocks."
                                                   : "conditioner.embedders.1.model.transformer."
                                                     "resblocks.";
            spec.tensors.push_back({prefix + std::to_string(block) + ".1.transformer_blocks." +
                                        std::to_string(layer) + ".attn1.to_k.weight",
                                    layer % 3 ? "F16" : "F32",
                                    {1, static_cast<std::uint64_t>(1 + layer % 4)},
                                    std::nullopt,
                                    std::nullopt});
        }
    }
    spec.metadata["modelspec.title"] = std::string(20'000, 't');
    const std::string header = mt::safetensors_header(spec);
    EXPECT_GT(header.size(), 200'000u);

    ScratchDir dir;
    const stdfs::path path = dir.path() / "sdxl.safetensors";
    mt::write_safetensors(path, spec);
    const SafetensorsInfo info = read_file(path);
    EXPECT_EQ(info.tensor_count, 2500u);
    EXPECT_EQ(info.tensor_names.size(), 2500u);
    EXPECT_TRUE(std::is_sorted(info.tensor_names.begin(), info.tensor_names.end()));
    EXPECT_TRUE(info.has_unet);
    EXPECT_TRUE(info.has_text_encoder);
    EXPECT_FALSE(info.has_vae);
    EXPECT_EQ(info.dtypes.at("F16") + info.dtypes.at("F32"), 2500u);
}

}  // namespace
}  // namespace modelfs
