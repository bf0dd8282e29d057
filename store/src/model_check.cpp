#include "modelfs/store/model_check.h"

#include "modelfs/store/gguf.h"
#include "modelfs/store/safetensors.h"

namespace modelfs {

ModelFormat model_format_of(std::string_view filename) {
    if (has_safetensors_extension(filename)) return ModelFormat::safetensors;
    if (has_gguf_extension(filename)) return ModelFormat::gguf;
    return ModelFormat::unchecked;
}

namespace {

// Why a file of `format` is no model yet: its header reader (`read`) throws `Error`, whose text
// follows the one wording both formats share.
template <class Error, class Read>
std::optional<std::string> header_problem(const char* format, Read read) {
    try {
        read();
    } catch (const Error& e) {
        return std::string("incomplete or malformed ") + format + " file: " + e.what();
    }
    return std::nullopt;
}

}  // namespace

std::optional<std::string> incomplete_model_reason(int fd, std::uint64_t size,
                                                   std::string_view filename) {
    if (size == 0) return "empty file: a 0-byte file stays a plain file until it has content";
    switch (model_format_of(filename)) {
        case ModelFormat::safetensors:
            return header_problem<SafetensorsError>("safetensors",
                                                    [&] { read_safetensors_header(fd, size); });
        case ModelFormat::gguf:
            return header_problem<GgufError>("GGUF", [&] { read_gguf_header(fd, size); });
        case ModelFormat::unchecked:
            break;
    }
    return std::nullopt;
}

}  // namespace modelfs
