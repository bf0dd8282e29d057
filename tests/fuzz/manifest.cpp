// `modelfs add --manifest FILE.json`: the input is the manifest text.
#include <cstdint>

#include "fuzz_input.h"
#include "modelfs/fetch/manifest.h"
#include "modelfs/store/errors.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    try {
        (void)modelfs::fetch::parse_manifest(modelfs::fuzz::as_text(data, size), "fuzz.json");
    } catch (const modelfs::StoreError&) {
    }
    return 0;
}
