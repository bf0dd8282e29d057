#include "modelfs/store/names.h"

#include <cstdio>

#include "modelfs/store/errors.h"
#include "modelfs/store/escape.h"

namespace modelfs {

std::size_t utf8_sequence_length(std::string_view s, std::size_t i) {
    const auto b = [&](std::size_t k) { return static_cast<unsigned char>(s[i + k]); };
    const unsigned char c = b(0);
    if (c < 0x80) return 1;
    std::size_t n = 0;
    unsigned char lo = 0x80, hi = 0xbf;  // the valid range of the second byte
    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        if (c == 0xe0) lo = 0xa0;  // overlong
        if (c == 0xed) hi = 0x9f;  // UTF-16 surrogates
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        if (c == 0xf0) lo = 0x90;  // overlong
        if (c == 0xf4) hi = 0x8f;  // above U+10FFFF
    } else {
        return 0;
    }
    if (i + n > s.size() || b(1) < lo || b(1) > hi) return 0;
    for (std::size_t k = 2; k < n; ++k)
        if ((b(k) & 0xc0) != 0x80) return 0;
    return n;
}

bool is_valid_utf8(std::string_view s) {
    for (std::size_t i = 0; i < s.size();) {
        const std::size_t n = utf8_sequence_length(s, i);
        if (n == 0) return false;
        i += n;
    }
    return true;
}

namespace {

std::string hex_byte(unsigned char c) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "0x%02x", c);
    return buf;
}

// The first byte that is not UTF-8 or is a control character, described; "" when none.
std::string bad_character(std::string_view p) {
    for (std::size_t i = 0; i < p.size();) {
        const auto c = static_cast<unsigned char>(p[i]);
        const std::size_t n = utf8_sequence_length(p, i);
        const std::string at = " at byte " + std::to_string(i);
        if (n == 0) return "byte " + hex_byte(c) + at + " is not UTF-8";
        if (n == 1 && (c < 0x20 || c == 0x7f)) return "control character " + hex_byte(c) + at;
        if (n == 2 && c == 0xc2 && static_cast<unsigned char>(p[i + 1]) < 0xa0) {
            char buf[16];
            std::snprintf(buf, sizeof buf, "U+%04X",
                          static_cast<unsigned>(static_cast<unsigned char>(p[i + 1])));
            return std::string("control character ") + buf + at;
        }
        i += n;
    }
    return "";
}

}  // namespace

std::string relative_path_problem(std::string_view p, std::size_t max_component) {
    if (p.empty()) return "empty";
    if (p.size() > kMaxRelativePath)
        return "longer than " + std::to_string(kMaxRelativePath) + " bytes (" +
               std::to_string(p.size()) + ")";
    if (auto why = bad_character(p); !why.empty()) return why;
    if (p.front() == '/') return "an absolute path (starts with '/'); give it relative";
    std::size_t index = 0;
    for (std::size_t start = 0; start <= p.size(); ++index) {
        auto end = p.find('/', start);
        if (end == std::string_view::npos) end = p.size();
        const std::string_view part = p.substr(start, end - start);
        const std::string which = "component " + std::to_string(index + 1);
        if (part.empty())
            return which +
                   " is empty (a trailing '/' or '//'); an empty path component is not a name";
        if (part == "." || part == "..")
            return which + " is '" + std::string(part) + "'; '.' or '..' component may not appear";
        if (part.size() > max_component)
            return which + " '" + terminal_safe(part.substr(0, 40)) + "...' is longer than " +
                   std::to_string(max_component) + " bytes";
        start = end + 1;
    }
    return "";
}

void check_relative_path(std::string_view p, std::string_view what) {
    if (auto why = relative_path_problem(p); !why.empty())
        throw StoreError(ErrorKind::bad_input,
                         std::string(what) + " '" + terminal_safe(p) + "': " + why);
}

}  // namespace modelfs
