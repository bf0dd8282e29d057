// Placeholder until install detection lands (adopt-detect helper).
#include "modelfs/adopt/scan.h"

#include <stdexcept>

namespace modelfs::adopt {
std::optional<Install> detect_install(const std::filesystem::path&) {
    throw std::logic_error("detect_install: not implemented yet");
}
std::vector<std::filesystem::path> default_install_locations() { return {}; }
InstallScan scan_install(const Install&, const fs::ViewLayout&) {
    throw std::logic_error("scan_install: not implemented yet");
}
}  // namespace modelfs::adopt
