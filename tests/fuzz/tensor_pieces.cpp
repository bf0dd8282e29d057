// Tensor-level dedup: cutting a model file into pieces (import, a mount's save, a download) and
// reading a tensor map (a team remote's snapshot, the catalog). The input is the file, and also
// the map's bytes. Whatever they are, the pieces cover the file exactly once, in order, none
// empty (or there are none: not a model file); a map decodes to one that writes back the same,
// or is refused with a StoreError.
#include <cstdint>
#include <cstdlib>

#include "fuzz_input.h"
#include "modelfs/store/errors.h"
#include "modelfs/store/tensor_map.h"
#include "modelfs/store/tensor_split.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    static modelfs::fuzz::MemFile file;
    const std::string_view in = modelfs::fuzz::as_text(data, size);
    const auto pieces = modelfs::model_file_pieces(file.hold(in), size);
    std::uint64_t at = 0;
    for (const auto& p : pieces) {
        if (p.offset != at || p.length == 0) std::abort();
        at += p.length;
    }
    if (!pieces.empty() && at != size) std::abort();
    try {
        const auto map = modelfs::decode_tensor_map(in);
        if (modelfs::decode_tensor_map(modelfs::encode_tensor_map(map)) != map) std::abort();
    } catch (const modelfs::StoreError&) {
    }
    return 0;
}
