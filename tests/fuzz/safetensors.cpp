// The safetensors header, as `import` and the mount's saves read it: the whole input is a file
// (8-byte length, JSON header, data) read through read_safetensors_header. The same bytes are
// also given to parse_safetensors_header with the length field taken as the file size, so the
// offset checks meet sizes far larger than any input could be.
#include <cstdint>
#include <cstring>

#include "fuzz_input.h"
#include "modelfs/store/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    static modelfs::fuzz::MemFile file;
    const auto bytes = modelfs::fuzz::as_text(data, size);
    try {
        (void)modelfs::read_safetensors_header(file.hold(bytes), size);
    } catch (const modelfs::SafetensorsError&) {
    }
    if (size >= 8) {
        std::uint64_t claimed = 0;
        std::memcpy(&claimed, data, 8);  // little-endian machines only, as the format
        try {
            (void)modelfs::parse_safetensors_header(bytes.substr(8), claimed);
        } catch (const modelfs::SafetensorsError&) {
        }
    }
    return 0;
}
