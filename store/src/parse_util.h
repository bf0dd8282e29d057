// Helpers of the parsers of hostile model files (safetensors.cpp, gguf.cpp).
#pragma once

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <system_error>

namespace modelfs {

// Names and fragments come from the file: keep error messages printable and short, so a hostile
// name cannot flood a log or smuggle terminal escapes into it. Bytes outside printable ASCII (and
// the backslash) become \xNN; past `max_len` bytes the rest is "...".
inline std::string printable(std::string_view s, std::size_t max_len = 120) {
    static constexpr char kHex[] = "0123456789abcdef";
    std::string out;
    out.reserve(std::min(s.size(), max_len) + 8);
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (i == max_len) {
            out += "...";
            break;
        }
        const auto c = static_cast<unsigned char>(s[i]);
        if (c >= 0x20 && c < 0x7f && c != '\\') {
            out += static_cast<char>(c);
        } else {
            out += "\\x";
            out += kHex[c >> 4];
            out += kHex[c & 0xf];
        }
    }
    return out;
}

// pread until `len` bytes or end of file; returns the count read. EINTR is retried; other errors
// throw std::system_error saying "reading <what> at offset N".
inline std::size_t pread_full(int fd, char* buf, std::size_t len, std::uint64_t offset,
                              std::string_view what) {
    std::size_t done = 0;
    while (done < len) {
        const ssize_t n = ::pread(fd, buf + done, len - done, static_cast<off_t>(offset + done));
        if (n < 0) {
            if (errno == EINTR) continue;
            throw std::system_error(
                errno, std::generic_category(),
                "reading " + std::string(what) + " at offset " + std::to_string(offset + done));
        }
        if (n == 0) break;
        done += static_cast<std::size_t>(n);
    }
    return done;
}

}  // namespace modelfs
