// `modelfs pull`: the input is what a bucket (anyone who can write it) hands over as a writer's
// snapshot or pointer. Whatever decodes must encode to bytes that decode to the same bytes again,
// so a catalogue never changes meaning on its way through a store; anything else is a StoreError.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "fuzz_input.h"
#include "modelfs/store/errors.h"
#include "modelfs/store/team_remote.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view in = modelfs::fuzz::as_text(data, size);
    try {
        const std::string bytes = modelfs::Snapshot::decode(in, "fuzz.cbor").encode();
        if (modelfs::Snapshot::decode(bytes, "fuzz.cbor (written back)").encode() != bytes)
            std::abort();  // the round trip changed the snapshot
    } catch (const modelfs::StoreError&) {
    }
    try {
        const std::string text = modelfs::WriterPointer::parse(in, "fuzz.json").to_text();
        if (modelfs::WriterPointer::parse(text, "fuzz.json (written back)").to_text() != text)
            std::abort();
    } catch (const modelfs::StoreError&) {
    }
    return 0;
}
