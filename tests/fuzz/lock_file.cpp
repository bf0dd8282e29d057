// `modelfs apply` and `mount --lock`: the input is the lock file's text. What parses must write
// back as text that parses to the same text (LockFile::to_text promises parse(to_text()) ==
// *this), so a lock never changes meaning on its way through modelfs.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "fuzz_input.h"
#include "modelfs/store/errors.h"
#include "modelfs/store/lock_file.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string text;
    try {
        text = modelfs::LockFile::parse(modelfs::fuzz::as_text(data, size), "fuzz.lock").to_text();
    } catch (const modelfs::StoreError&) {
        return 0;
    }
    if (modelfs::LockFile::parse(text, "fuzz.lock (written back)").to_text() != text) {
        std::abort();  // the round trip changed the lock
    }
    return 0;
}
