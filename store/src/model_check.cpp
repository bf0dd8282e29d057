#include "modelfs/store/model_check.h"

#include "modelfs/store/gguf.h"
#include "modelfs/store/safetensors.h"

namespace modelfs {

ModelFormat model_format_of(std::string_view filename) {
    if (has_safetensors_extension(filename)) return ModelFormat::safetensors;
    if (has_gguf_extension(filename)) return ModelFormat::gguf;
    return ModelFormat::unchecked;
}

std::optional<std::string> incomplete_model_reason(int fd, std::uint64_t size,
                                                   std::string_view filename) {
    if (size == 0) return "empty file: a 0-byte file stays a plain file until it has content";
    switch (model_format_of(filename)) {
        case ModelFormat::safetensors:
            try {
                read_safetensors_header(fd, size);
            } catch (const SafetensorsError& e) {
                return std::string("incomplete or malformed safetensors file: ") + e.what();
            }
            break;
        case ModelFormat::gguf:
            try {
                read_gguf_header(fd, size);
            } catch (const GgufError& e) {
                return std::string("incomplete or malformed GGUF file: ") + e.what();
            }
            break;
        case ModelFormat::unchecked:
            break;
    }
    return std::nullopt;
}

}  // namespace modelfs
