// The completeness check that decides whether a file may become a model: the first byte picks the
// file name (so every format, and the unchecked ones, are reached), the rest is the file. It
// reports what is wrong as a value and throws only when the file cannot be read, which a memfd
// always can: any exception here is a bug.
#include <array>
#include <cstdint>
#include <string_view>

#include "fuzz_input.h"
#include "modelfs/store/model_check.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    static constexpr std::array<std::string_view, 6> kNames = {
        "model.safetensors", "model.SFT", "model.gguf", ".GGUF", "model.ckpt", "x.preview.png"};
    static modelfs::fuzz::MemFile file;
    if (size == 0) {
        return 0;
    }
    const auto name = kNames[data[0] % kNames.size()];
    const auto bytes = modelfs::fuzz::as_text(data + 1, size - 1);
    (void)modelfs::incomplete_model_reason(file.hold(bytes), bytes.size(), name);
    return 0;
}
