// Byte counts as people read them, the one format every command and report uses.
#pragma once

#include <cstdint>
#include <string>

namespace modelfs {

// Powers of 1024 with one decimal: "0 B", "1023 B", "1.0 KiB", "6.5 GiB", up to PiB.
std::string human_bytes(std::uint64_t n);

}  // namespace modelfs
