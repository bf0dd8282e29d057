#include "support/safetensors_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>
#include <stdexcept>
#include <system_error>
#include <utility>

namespace modelfs::testing {

namespace {

// Deliberately a separate table from the reader's: a test helper that shared the code under test
// would agree with its bugs.
struct DtypeBits {
    std::string_view name;
    std::uint64_t bits;
};
constexpr std::array<DtypeBits, 20> kDtypes{{
    {"BOOL", 8},    {"U8", 8},   {"I8", 8},   {"F8_E5M2", 8}, {"F8_E4M3", 8},
    {"F8_E8M0", 8}, {"I16", 16}, {"U16", 16}, {"F16", 16},    {"BF16", 16},
    {"I32", 32},    {"U32", 32}, {"F32", 32}, {"F64", 64},    {"I64", 64},
    {"U64", 64},    {"C64", 64}, {"F4", 4},   {"F6_E2M3", 6}, {"F6_E3M2", 6},
}};

std::uint64_t splitmix64(std::uint64_t& state) {
    std::uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

std::uint64_t fnv1a(std::string_view s) {
    std::uint64_t h = 0xcbf29ce484222325ULL;
    for (char c : s) {
        h ^= static_cast<unsigned char>(c);
        h *= 0x100000001b3ULL;
    }
    return h;
}

// Pseudo-random bytes of one tensor. The stream depends only on the effective seed and the tensor
// name, so the same tensor has the same bytes wherever it sits in a file.
class TensorByteStream {
  public:
    TensorByteStream(std::uint64_t seed, std::string_view name) {
        state_ = seed ^ fnv1a(name);
        splitmix64(state_);
    }

    // Callers pass multiples of 8 except for the last piece of a tensor, which keeps the stream
    // identical however it is chunked.
    void fill(char* out, std::size_t n) {
        for (std::size_t i = 0; i < n; i += 8) {
            const std::uint64_t v = splitmix64(state_);
            std::array<char, 8> bytes;
            for (std::size_t b = 0; b < 8; ++b) bytes[b] = static_cast<char>(v >> (8 * b));
            std::memcpy(out + i, bytes.data(), std::min<std::size_t>(8, n - i));
        }
    }

  private:
    std::uint64_t state_;
};

std::uint64_t effective_seed(const SafetensorsSpec& spec, const TensorSpec& t) {
    return t.seed.value_or(spec.seed);
}

class UniqueFd {
  public:
    explicit UniqueFd(int fd) : fd_(fd) {}
    UniqueFd(const UniqueFd&) = delete;
    UniqueFd& operator=(const UniqueFd&) = delete;
    ~UniqueFd() {
        if (fd_ >= 0) ::close(fd_);
    }
    int get() const { return fd_; }
    // Surfaces close() errors (delayed write failures) instead of dropping them in the destructor.
    void close(const std::filesystem::path& path) {
        const int fd = std::exchange(fd_, -1);
        if (::close(fd) != 0) {
            throw std::system_error(errno, std::generic_category(), "close " + path.string());
        }
    }

  private:
    int fd_;
};

UniqueFd create_file(const std::filesystem::path& path) {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) throw std::system_error(errno, std::generic_category(), "open " + path.string());
    return UniqueFd(fd);
}

void write_all(int fd, std::string_view bytes, const std::filesystem::path& path) {
    while (!bytes.empty()) {
        const ssize_t n = ::write(fd, bytes.data(), bytes.size());
        if (n < 0) {
            if (errno == EINTR) continue;
            throw std::system_error(errno, std::generic_category(), "write " + path.string());
        }
        bytes.remove_prefix(static_cast<std::size_t>(n));
    }
}

TensorSpec T(std::string name, std::string dtype, std::vector<std::uint64_t> shape) {
    return TensorSpec{std::move(name), std::move(dtype), std::move(shape), std::nullopt,
                      std::nullopt};
}

SafetensorsSpec make_spec(std::uint64_t seed, std::vector<TensorSpec> tensors,
                          std::map<std::string, std::string> metadata = {}) {
    SafetensorsSpec spec;
    spec.tensors = std::move(tensors);
    spec.metadata = std::move(metadata);
    spec.seed = seed;
    return spec;
}

}  // namespace

std::uint64_t dtype_bits(std::string_view dtype) {
    for (const auto& d : kDtypes) {
        if (d.name == dtype) return d.bits;
    }
    throw std::invalid_argument("unknown dtype '" + std::string(dtype) + "'");
}

std::uint64_t tensor_data_size(const TensorSpec& tensor) {
    std::uint64_t bits = dtype_bits(tensor.dtype);
    for (std::uint64_t d : tensor.shape) {
        if (__builtin_mul_overflow(bits, d, &bits)) {
            throw std::invalid_argument("tensor '" + tensor.name + "': shape overflows");
        }
    }
    return bits / 8 + (bits % 8 != 0 ? 1 : 0);
}

std::uint64_t data_size(const SafetensorsSpec& spec) {
    std::uint64_t total = 0;
    for (const auto& t : spec.tensors) total += tensor_data_size(t);
    return total;
}

std::string safetensors_header(const SafetensorsSpec& spec) {
    nlohmann::ordered_json header = nlohmann::ordered_json::object();
    if (!spec.metadata.empty()) {
        nlohmann::ordered_json meta = nlohmann::ordered_json::object();
        for (const auto& [k, v] : spec.metadata) meta[k] = v;
        header["__metadata__"] = std::move(meta);
    }
    std::uint64_t offset = 0;
    std::set<std::string_view> names;  // ordered_json lookups are linear
    for (const auto& t : spec.tensors) {
        if (t.name == "__metadata__") throw std::invalid_argument("tensor named __metadata__");
        if (!names.insert(t.name).second) {
            throw std::invalid_argument("duplicate tensor name '" + t.name + "'");
        }
        const std::uint64_t size = tensor_data_size(t);
        if (t.data && t.data->size() != size) {
            throw std::invalid_argument("tensor '" + t.name + "': data has " +
                                        std::to_string(t.data->size()) + " bytes, shape needs " +
                                        std::to_string(size));
        }
        header[t.name] = {
            {"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {offset, offset + size}}};
        offset += size;
    }
    std::string json = header.dump();
    json.append((8 - json.size() % 8) % 8, ' ');
    return json;
}

std::string tensor_bytes(const SafetensorsSpec& spec, std::size_t index) {
    const TensorSpec& t = spec.tensors.at(index);
    if (t.data) return *t.data;
    std::string out(tensor_data_size(t), '\0');
    TensorByteStream(effective_seed(spec, t), t.name).fill(out.data(), out.size());
    return out;
}

std::string safetensors_bytes(const SafetensorsSpec& spec) {
    const std::string header = safetensors_header(spec);
    std::string out = le64(header.size()) + header;
    for (std::size_t i = 0; i < spec.tensors.size(); ++i) out += tensor_bytes(spec, i);
    return out;
}

std::uint64_t write_safetensors(const std::filesystem::path& path, const SafetensorsSpec& spec) {
    const std::string header = safetensors_header(spec);
    UniqueFd fd = create_file(path);
    write_all(fd.get(), le64(header.size()), path);
    write_all(fd.get(), header, path);
    std::uint64_t total = 8 + header.size();

    constexpr std::size_t kChunk = 1 << 20;  // a multiple of 8, see TensorByteStream::fill
    std::string buf;
    for (const auto& t : spec.tensors) {
        const std::uint64_t size = tensor_data_size(t);
        total += size;
        if (t.data) {
            write_all(fd.get(), *t.data, path);
            continue;
        }
        TensorByteStream stream(effective_seed(spec, t), t.name);
        for (std::uint64_t done = 0; done < size;) {
            const std::size_t n =
                static_cast<std::size_t>(std::min<std::uint64_t>(kChunk, size - done));
            buf.resize(n);
            stream.fill(buf.data(), n);
            write_all(fd.get(), buf, path);
            done += n;
        }
    }
    fd.close(path);
    return total;
}

std::string le64(std::uint64_t value) {
    std::string out(8, '\0');
    for (std::size_t i = 0; i < 8; ++i) out[i] = static_cast<char>(value >> (8 * i));
    return out;
}

std::string raw_safetensors(std::string_view header, std::string_view data) {
    return raw_safetensors_with_length(header.size(), header, data);
}

std::string raw_safetensors_with_length(std::uint64_t declared_length, std::string_view header,
                                        std::string_view data) {
    std::string out = le64(declared_length);
    out.append(header);
    out.append(data);
    return out;
}

void write_file(const std::filesystem::path& path, std::string_view bytes) {
    UniqueFd fd = create_file(path);
    write_all(fd.get(), bytes, path);
    fd.close(path);
}

SafetensorsSpec& grow_to(SafetensorsSpec& spec, std::uint64_t min_data_bytes) {
    TensorSpec* largest = nullptr;
    std::uint64_t largest_size = 0;
    for (auto& t : spec.tensors) {
        if (t.data || t.shape.empty() || t.shape[0] == 0) continue;
        const std::uint64_t size = tensor_data_size(t);
        if (largest == nullptr || size > largest_size) {
            largest = &t;
            largest_size = size;
        }
    }
    if (largest == nullptr) {
        throw std::invalid_argument("grow_to: no tensor with a non-empty first dimension");
    }
    std::uint64_t row_bits = dtype_bits(largest->dtype);
    for (std::size_t i = 1; i < largest->shape.size(); ++i) row_bits *= largest->shape[i];
    if (row_bits == 0) throw std::invalid_argument("grow_to: largest tensor has zero-size rows");

    // Sub-byte dtypes round up per tensor, so one estimate may fall a byte short; iterate.
    for (std::uint64_t have = data_size(spec); have < min_data_bytes; have = data_size(spec)) {
        const std::uint64_t missing_bits = (min_data_bytes - have) * 8;
        largest->shape[0] += (missing_bits + row_bits - 1) / row_bits;
    }
    return spec;
}

SafetensorsSpec sd15_checkpoint(std::uint64_t seed) {
    return make_spec(
        seed, {
                  T("model.diffusion_model.input_blocks.0.0.weight", "F16", {8, 4, 3, 3}),
                  T("model.diffusion_model.input_blocks.0.0.bias", "F16", {8}),
                  T("model.diffusion_model.time_embed.0.weight", "F16", {16, 8}),
                  T("model.diffusion_model.middle_block.1.proj_in.weight", "F16", {8, 8, 1, 1}),
                  T("model.diffusion_model.out.2.weight", "F16", {4, 8, 3, 3}),
                  T("first_stage_model.encoder.conv_in.weight", "F16", {8, 3, 3, 3}),
                  T("first_stage_model.decoder.conv_out.weight", "F16", {3, 8, 3, 3}),
                  T("first_stage_model.quant_conv.weight", "F16", {8, 8, 1, 1}),
                  T("cond_stage_model.transformer.text_model.embeddings.token_embedding.weight",
                    "F16", {32, 16}),
                  T("cond_stage_model.transformer.text_model.encoder.layers.0.mlp.fc1.weight",
                    "F16", {16, 16}),
                  T("cond_stage_model.transformer.text_model.final_layer_norm.weight", "F32", {16}),
              });
}

SafetensorsSpec sdxl_checkpoint(std::uint64_t seed) {
    return make_spec(
        seed,
        {
            T("model.diffusion_model.input_blocks.0.0.weight", "F16", {8, 4, 3, 3}),
            T("model.diffusion_model.label_emb.0.0.weight", "F16", {16, 32}),
            T("model.diffusion_model.output_blocks.0.0.in_layers.0.weight", "F16", {16}),
            T("model.diffusion_model.out.2.weight", "F16", {4, 8, 3, 3}),
            T("first_stage_model.encoder.conv_in.weight", "F16", {8, 3, 3, 3}),
            T("first_stage_model.decoder.conv_out.weight", "F16", {3, 8, 3, 3}),
            T("first_stage_model.post_quant_conv.weight", "F16", {4, 4, 1, 1}),
            T("conditioner.embedders.0.transformer.text_model.encoder.layers.0.self_attn.q_proj."
              "weight",
              "F16", {16, 16}),
            T("conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight", "F16",
              {48, 16}),
            T("conditioner.embedders.1.model.text_projection", "F16", {16, 16}),
        },
        {{"modelspec.architecture", "stable-diffusion-xl-v1-base"},
         {"modelspec.sai_model_spec", "1.0.0"},
         {"modelspec.title", "fake sdxl"}});
}

SafetensorsSpec kohya_lora(std::uint64_t seed) {
    const std::string unet = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q";
    const std::string te = "lora_te_text_model_encoder_layers_0_self_attn_q_proj";
    return make_spec(seed,
                     {
                         T(unet + ".lora_down.weight", "F16", {4, 32}),
                         T(unet + ".lora_up.weight", "F16", {32, 4}),
                         T(unet + ".alpha", "F16", {}),
                         T(te + ".lora_down.weight", "F16", {4, 16}),
                         T(te + ".lora_up.weight", "F16", {16, 4}),
                         T(te + ".alpha", "F16", {}),
                     },
                     {{"ss_network_module", "networks.lora"},
                      {"ss_network_dim", "4"},
                      {"ss_network_alpha", "4.0"},
                      {"ss_base_model_version", "sd_v1"},
                      {"ss_output_name", "fake_lora"},
                      {"ss_tag_frequency", "{\"img\": {\"1girl\": 3}}"},
                      {"modelspec.architecture", "stable-diffusion-v1/lora"}});
}

SafetensorsSpec diffusers_lora(std::uint64_t seed) {
    const std::string unet = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q";
    const std::string te = "text_encoder.text_model.encoder.layers.0.self_attn.q_proj";
    return make_spec(seed, {
                               T(unet + ".lora_A.weight", "F32", {4, 32}),
                               T(unet + ".lora_B.weight", "F32", {32, 4}),
                               T(te + ".lora_A.weight", "F32", {4, 16}),
                               T(te + ".lora_B.weight", "F32", {16, 4}),
                           });
}

SafetensorsSpec vae(std::uint64_t seed) {
    return make_spec(seed, {
                               T("encoder.conv_in.weight", "F16", {8, 3, 3, 3}),
                               T("encoder.down.0.block.0.conv1.weight", "F16", {8, 8, 3, 3}),
                               T("encoder.mid.attn_1.q.weight", "F16", {8, 8, 1, 1}),
                               T("decoder.up.0.block.0.conv1.weight", "F16", {8, 8, 3, 3}),
                               T("decoder.conv_out.weight", "F16", {3, 8, 3, 3}),
                               T("quant_conv.weight", "F16", {8, 8, 1, 1}),
                               T("post_quant_conv.weight", "F16", {4, 4, 1, 1}),
                           });
}

SafetensorsSpec textual_inversion(std::uint64_t seed, EmbeddingStyle style) {
    switch (style) {
        case EmbeddingStyle::emb_params:
            return make_spec(seed, {T("emb_params", "F32", {2, 768})});
        case EmbeddingStyle::string_to_param:
            return make_spec(seed, {T("string_to_param.*", "F32", {2, 768})});
        case EmbeddingStyle::sdxl:
            return make_spec(seed, {T("clip_g", "F16", {2, 1280}), T("clip_l", "F16", {2, 768})});
    }
    throw std::invalid_argument("unknown EmbeddingStyle");
}

SafetensorsSpec controlnet(std::uint64_t seed, ControlNetStyle style) {
    switch (style) {
        case ControlNetStyle::ldm:
            return make_spec(seed,
                             {
                                 T("control_model.input_hint_block.0.weight", "F16", {16, 3, 3, 3}),
                                 T("control_model.input_blocks.0.0.weight", "F16", {8, 4, 3, 3}),
                                 T("control_model.zero_convs.0.0.weight", "F16", {8, 8, 1, 1}),
                                 T("control_model.time_embed.0.weight", "F16", {16, 8}),
                                 T("control_model.middle_block_out.0.weight", "F16", {8, 8, 1, 1}),
                             });
        case ControlNetStyle::diffusers:
            return make_spec(
                seed, {
                          T("controlnet_cond_embedding.conv_in.weight", "F16", {16, 3, 3, 3}),
                          T("conv_in.weight", "F16", {8, 4, 3, 3}),
                          T("down_blocks.0.resnets.0.conv1.weight", "F16", {8, 8, 3, 3}),
                          T("time_embedding.linear_1.weight", "F16", {16, 8}),
                          T("controlnet_down_blocks.0.weight", "F16", {8, 8, 1, 1}),
                          T("controlnet_mid_block.weight", "F16", {8, 8, 1, 1}),
                      });
    }
    throw std::invalid_argument("unknown ControlNetStyle");
}

SafetensorsSpec unet_only(std::uint64_t seed, UnetStyle style) {
    switch (style) {
        case UnetStyle::sd:
            return make_spec(seed,
                             {
                                 T("input_blocks.0.0.weight", "F16", {8, 4, 3, 3}),
                                 T("input_blocks.1.0.in_layers.2.weight", "F16", {8, 8, 3, 3}),
                                 T("middle_block.0.in_layers.0.weight", "F16", {8}),
                                 T("output_blocks.0.0.in_layers.0.weight", "F16", {16}),
                                 T("time_embed.0.weight", "F16", {16, 8}),
                                 T("out.2.weight", "F16", {4, 8, 3, 3}),
                             });
        case UnetStyle::flux:
            return make_spec(seed, {
                                       T("double_blocks.0.img_attn.qkv.weight", "BF16", {48, 16}),
                                       T("double_blocks.0.txt_attn.qkv.weight", "BF16", {48, 16}),
                                       T("single_blocks.0.linear1.weight", "BF16", {64, 16}),
                                       T("img_in.weight", "BF16", {16, 64}),
                                       T("time_in.in_layer.weight", "BF16", {16, 32}),
                                       T("final_layer.linear.weight", "BF16", {64, 16}),
                                   });
        case UnetStyle::sd3:
            return make_spec(seed,
                             {
                                 T("joint_blocks.0.x_block.attn.qkv.weight", "F16", {48, 16}),
                                 T("joint_blocks.0.context_block.attn.qkv.weight", "F16", {48, 16}),
                                 T("x_embedder.proj.weight", "F16", {16, 16, 2, 2}),
                                 T("t_embedder.mlp.0.weight", "F16", {16, 32}),
                                 T("final_layer.linear.weight", "F16", {64, 16}),
                             });
        case UnetStyle::diffusers:
            return make_spec(seed,
                             {
                                 T("conv_in.weight", "F16", {8, 4, 3, 3}),
                                 T("time_embedding.linear_1.weight", "F16", {16, 8}),
                                 T("down_blocks.0.resnets.0.conv1.weight", "F16", {8, 8, 3, 3}),
                                 T("mid_block.resnets.0.conv1.weight", "F16", {8, 8, 3, 3}),
                                 T("up_blocks.0.resnets.0.conv1.weight", "F16", {8, 16, 3, 3}),
                                 T("conv_out.weight", "F16", {4, 8, 3, 3}),
                             });
    }
    throw std::invalid_argument("unknown UnetStyle");
}

SafetensorsSpec text_encoder(std::uint64_t seed, TextEncoderStyle style) {
    switch (style) {
        case TextEncoderStyle::clip_l:
            return make_spec(
                seed, {
                          T("text_model.embeddings.token_embedding.weight", "F16", {64, 16}),
                          T("text_model.embeddings.position_embedding.weight", "F16", {77, 16}),
                          T("text_model.encoder.layers.0.self_attn.q_proj.weight", "F16", {16, 16}),
                          T("text_model.encoder.layers.0.mlp.fc1.weight", "F16", {64, 16}),
                          T("text_model.final_layer_norm.weight", "F16", {16}),
                      });
        case TextEncoderStyle::t5:
            return make_spec(
                seed, {
                          T("encoder.block.0.layer.0.SelfAttention.q.weight", "BF16", {16, 16}),
                          T("encoder.block.0.layer.1.DenseReluDense.wi_0.weight", "BF16", {32, 16}),
                          T("encoder.final_layer_norm.weight", "BF16", {16}),
                          T("shared.weight", "BF16", {64, 16}),
                      });
    }
    throw std::invalid_argument("unknown TextEncoderStyle");
}

SafetensorsSpec clip_vision(std::uint64_t seed) {
    return make_spec(
        seed, {
                  T("vision_model.embeddings.class_embedding", "F16", {32}),
                  T("vision_model.embeddings.patch_embedding.weight", "F16", {32, 3, 4, 4}),
                  T("vision_model.encoder.layers.0.self_attn.q_proj.weight", "F16", {32, 32}),
                  T("vision_model.post_layernorm.weight", "F16", {32}),
                  T("visual_projection.weight", "F16", {16, 32}),
              });
}

SafetensorsSpec ip_adapter(std::uint64_t seed) {
    return make_spec(seed, {
                               T("image_proj.proj.weight", "F16", {64, 32}),
                               T("image_proj.norm.weight", "F16", {16}),
                               T("ip_adapter.1.to_k_ip.weight", "F16", {16, 16}),
                               T("ip_adapter.1.to_v_ip.weight", "F16", {16, 16}),
                           });
}

}  // namespace modelfs::testing
