// The tools' own config files that `modelfs adopt` reads in a user's install, often as root:
// ComfyUI's extra_model_paths.yaml (a subset of YAML parsed by hand), Fooocus's config.txt and
// SD.Next's config.json. The first byte picks the reader, the rest is the file. The readers
// promise never to throw for a bad file (a broken config is reported, never stops an adopt): any
// exception is a bug.
#include <cstdint>
#include <filesystem>
#include <string>

#include "fuzz_input.h"
#include "install_config.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    namespace detail = modelfs::adopt::detail;
    static modelfs::fuzz::MemFile file;
    if (size == 0) {
        return 0;
    }
    const int fd = file.hold(modelfs::fuzz::as_text(data + 1, size - 1));
    // The readers take a path: the memfd's own, so nothing touches the disk.
    const std::filesystem::path path = "/proc/self/fd/" + std::to_string(fd);
    const std::filesystem::path root = "/fuzz/install";
    switch (data[0] % 3) {
        case 0:
            (void)detail::comfyui_extra_model_paths(path);
            break;
        case 1:
            (void)detail::fooocus_config(path, root);
            break;
        default:
            (void)detail::sdnext_config(path, root);
            break;
    }
    return 0;
}
