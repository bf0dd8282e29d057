// Writes the valid seeds of the corpus with our own writers (tests/support/*_writer), so the
// fuzzers start from files shaped like the real ones instead of from nothing:
//
//   modelfs_fuzz_make_corpus tests/fuzz/corpus
//
// Hand-made edge cases (lying lengths, broken JSON, odd URLs ...) are files of their own in the
// corpus, named for what they are; this program leaves them alone and rewrites only the files it
// makes (named "gen-*"). Build it with the fuzz targets (-DMODELFS_FUZZ=ON).
#include <cstdio>
#include <filesystem>
#include <string>
#include <string_view>

#include "modelfs/store/catalog.h"
#include "modelfs/store/hash.h"
#include "modelfs/store/lock_file.h"
#include "support/gguf_writer.h"
#include "support/safetensors_writer.h"

namespace stdfs = std::filesystem;
using namespace modelfs;
using namespace modelfs::testing;

namespace {

stdfs::path g_root;

void put(const std::string& target, const std::string& name, std::string_view bytes) {
    stdfs::create_directories(g_root / target);
    write_file(g_root / target / ("gen-" + name), bytes);
}

// The completeness check's fuzzer reads its first byte as the file name's index
// (tests/fuzz/model_check.cpp): 0 .safetensors, 2 .gguf, 4 .ckpt.
void put_checked(char name_index, const std::string& name, std::string_view bytes) {
    put("model_check", name, std::string(1, name_index) + std::string(bytes));
}

SafetensorsSpec odd_dtypes() {
    SafetensorsSpec spec;
    const std::pair<const char*, const char*> dtypes[] = {
        {"scalar", "F32"}, {"empty", "F16"}, {"bits", "BOOL"},  {"four", "F4"},
        {"bf", "BF16"},    {"i64", "I64"},   {"f8", "F8_E4M3"}, {"u8", "U8"}};
    const std::vector<std::uint64_t> shapes[] = {{}, {0, 3}, {3}, {3}, {2, 2}, {1}, {5, 1}, {7}};
    for (std::size_t i = 0; i < std::size(dtypes); ++i) {
        TensorSpec t;
        t.name = dtypes[i].first;
        t.dtype = dtypes[i].second;
        t.shape = shapes[i];
        spec.tensors.push_back(t);
    }
    spec.metadata = {{"format", "pt"}, {"ss_output_name", "\xc3\xa9t\xc3\xa9 \\\"quoted\\\""}};
    return spec;
}

std::string gguf_every_value_type(std::uint32_t version, bool big_endian) {
    GgufWriter w(version, big_endian);
    w.kv_string("general.architecture", "llama")
        .kv_u8("a.u8", 1)
        .kv_i8("a.i8", -1)
        .kv_u16("a.u16", 2)
        .kv_i16("a.i16", -2)
        .kv_u32("a.u32", 3)
        .kv_i32("a.i32", -3)
        .kv_f32("a.f32", 1.5f)
        .kv_bool("a.bool", true)
        .kv_u64("a.u64", 4)
        .kv_i64("a.i64", -4)
        .kv_f64("a.f64", 2.5)
        .kv_u32_array("a.arr", {1, 2, 3})
        .kv_string_array("tokenizer.ggml.tokens", {"<s>", "</s>", "hi"})
        .kv_nested_i16_array("a.nested", {{1, 2}, {}, {3}});
    w.tensor("token_embd.weight", GgmlTensorType::f32, {4, 2})
        .tensor("blk.0.attn_q.weight", GgmlTensorType::f16, {8, 2})
        .tensor("blk.0.ffn_up.weight", GgmlTensorType::q4_0, {32, 1})
        .tensor("blk.0.ffn_down.weight", GgmlTensorType::q8_0, {32, 2})
        .tensor("output.weight", GgmlTensorType::q4_k, {256, 1});
    return w.bytes();
}

std::string gguf_aligned_unknown_type() {
    GgufWriter w;
    w.alignment(64).tensor("a", GgmlTensorType::f32, {3}).raw_tensor("b", 200, {5}, 16);
    w.pad_end = true;
    return w.bytes();
}

LockFile a_lock() {
    LockFile lock;
    lock.view = "comfyui";
    LockedModel single;
    single.category = Category::lora;
    single.name = "sdxl/detail";
    single.label = "v2";
    single.ext = ".safetensors";
    single.content_id = sha256_of("lora");
    single.size = 1234;
    single.files.push_back({"",
                            single.content_id,
                            1234,
                            {"https://example.org/detail.safetensors", "hf://o/r/d.safetensors"}});
    LockedModel tree;
    tree.category = Category::diffusers;
    tree.name = "sd15";
    tree.label = "v1";
    tree.tree = true;
    ModelVersion v;
    v.tree = {{"model_index.json", sha256_of("index"), 5},
              {"unet/diffusion_pytorch_model.safetensors", sha256_of("unet"), 400}};
    tree.content_id = v.content_id();
    tree.size = 405;
    for (const auto& e : v.tree) {
        tree.files.push_back({e.path, e.blob, e.size, {}});
    }
    lock.models = {tree, single};  // sorted by key: diffusers/ before lora/
    return lock;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
        return 2;
    }
    g_root = argv[1];

    const std::string lora = safetensors_bytes(kohya_lora());
    const std::string embedding = safetensors_bytes(textual_inversion(0, EmbeddingStyle::sdxl));
    const std::string odd = safetensors_bytes(odd_dtypes());
    put("safetensors", "kohya-lora.safetensors", lora);
    put("safetensors", "sdxl-embedding.safetensors", embedding);
    put("safetensors", "odd-dtypes.safetensors", odd);
    put_checked(0, "kohya-lora.safetensors", lora);
    put_checked(0, "odd-dtypes.safetensors", odd);
    put_checked(4, "lora-as.ckpt", lora);

    const std::string gguf3 = gguf_every_value_type(3, false);
    const std::string gguf3be = gguf_every_value_type(3, true);
    const std::string gguf2 = gguf_every_value_type(2, false);
    const std::string aligned = gguf_aligned_unknown_type();
    put("gguf", "v3-every-type.gguf", gguf3);
    put("gguf", "v3-big-endian.gguf", gguf3be);
    put("gguf", "v2.gguf", gguf2);
    put("gguf", "align64-unknown-type.gguf", aligned);
    put_checked(2, "v3-every-type.gguf", gguf3);
    put_checked(2, "align64-unknown-type.gguf", aligned);

    put("lock_file", "two-models.lock", a_lock().to_text());
    std::printf("corpus seeds written under %s\n", g_root.c_str());
    return 0;
}
