// The GGUF header check, as `import` and the mount's saves run it: the input is the file.
#include <cstdint>

#include "fuzz_input.h"
#include "modelfs/store/gguf.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    static modelfs::fuzz::MemFile file;
    try {
        (void)modelfs::read_gguf_header(file.hold(modelfs::fuzz::as_text(data, size)), size);
    } catch (const modelfs::GgufError&) {
    }
    return 0;
}
