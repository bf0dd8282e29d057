// The safetensors header, as `import` and the mount's saves read it: the whole input is a file
// (8-byte length, JSON header, data) read through read_safetensors_header. The same bytes are
// also given to parse_safetensors_header with the length field taken as the file size, so the
// offset checks meet sizes far larger than any input could be.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "fuzz_input.h"
#include "modelfs/store/safetensors.h"

namespace {

// What callers rely on in a header that was accepted: the data starts inside the file (AutoV3
// hashes from there) and the tensor list is the sorted list it claims to be.
void check_accepted(const modelfs::SafetensorsInfo& info, std::uint64_t file_size) {
    std::uint64_t counted = 0;
    for (const auto& [dtype, n] : info.dtypes) counted += n;
    if (info.data_offset() > file_size || info.tensor_names.size() != info.tensor_count ||
        counted != info.tensor_count ||
        !std::is_sorted(info.tensor_names.begin(), info.tensor_names.end())) {
        std::abort();
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    static modelfs::fuzz::MemFile file;
    const auto bytes = modelfs::fuzz::as_text(data, size);
    try {
        check_accepted(modelfs::read_safetensors_header(file.hold(bytes), size), size);
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
