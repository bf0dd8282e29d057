// The one rule deciding whether a file may become a model, a model version or a sidecar: used by
// `modelfs import` (Store::import) and by the mount's saves (Store::commit_file), so both accept
// and refuse the same files. See "Complete model files" in store/FORMAT.md.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace modelfs {

// The formats whose completeness can be checked, decided by the file name's extension alone
// (any case), never by sniffing content: a file that claims a format must be complete, and a
// `.bin` or `.ckpt` that happens to start like GGUF is not refused for it.
enum class ModelFormat {
    unchecked,    // any other extension (.ckpt and .pt are zip files, .bin, .onnx, sidecars ...)
    safetensors,  // .safetensors, .sft
    gguf,         // .gguf
};
ModelFormat model_format_of(std::string_view filename);

// Why the open file `fd` of `size` bytes, named `filename` (a file name, or just its extension:
// ".safetensors", a sidecar's ".preview.png"), may not become a model, version or sidecar yet;
// std::nullopt when it may (complete, or a format that cannot be checked). The reason is one
// line saying what is wrong, without the path (the caller adds it):
//   - a 0-byte file, whatever its name (a create-then-close must not replace a model's content);
//   - safetensors: the checks of read_safetensors_header (header length, JSON header, every
//     tensor's data_offsets inside the data section, which the tensors fill exactly up to the
//     end of the file);
//   - GGUF: the checks of read_gguf_header (every tensor's bytes inside the file); a version
//     other than 2 and 3 cannot be checked and is accepted.
// Reads only the header. Throws std::system_error when the file cannot be read.
std::optional<std::string> incomplete_model_reason(int fd, std::uint64_t size,
                                                   std::string_view filename);

}  // namespace modelfs
