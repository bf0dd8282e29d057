#include "modelfs/store/escape.h"

#include <cctype>
#include <cstdio>

#include "modelfs/store/names.h"

namespace modelfs {
namespace {

constexpr const char* kHex = "0123456789abcdef";

// U+FFFF is a noncharacter, reserved for internal uses like this one: in the text nlohmann
// writes, it marks where dump_json puts an escape nlohmann cannot write (a lone surrogate).
constexpr std::string_view kMark = "\xef\xbf\xbf";

bool needs_marks(const std::string& s) {
    return s.find(kMark) != std::string::npos || !is_valid_utf8(s);
}

// Each byte that is not UTF-8 as the mark and its two hex digits, each U+FFFF as the mark and
// "--".
std::string marked(const std::string& s) {
    std::string out;
    for (std::size_t i = 0; i < s.size();) {
        const std::size_t n = utf8_sequence_length(s, i);
        const auto c = static_cast<unsigned char>(s[i]);
        if (n == 0) {
            out.append(kMark).append(1, kHex[c >> 4]).append(1, kHex[c & 15]);
            ++i;
        } else if (std::string_view(s).substr(i, n) == kMark) {
            out.append(kMark).append("--");
            i += n;
        } else {
            out.append(s, i, n);
            i += n;
        }
    }
    return out;
}

nlohmann::json with_marks(const nlohmann::json& j, bool& changed) {
    if (j.is_string()) {
        const auto& s = j.get_ref<const std::string&>();
        if (!needs_marks(s)) return j;
        changed = true;
        return marked(s);
    }
    if (j.is_array()) {
        nlohmann::json out = nlohmann::json::array();
        for (const auto& v : j) out.push_back(with_marks(v, changed));
        return out;
    }
    if (j.is_object()) {
        nlohmann::json out = nlohmann::json::object();
        for (auto it = j.begin(); it != j.end(); ++it) {
            std::string key = it.key();
            if (needs_marks(key)) {
                changed = true;
                key = marked(key);
            }
            out[key] = with_marks(it.value(), changed);
        }
        return out;
    }
    return j;
}

}  // namespace

std::string percent_decoded(std::string_view s, bool plus_is_space) {
    std::string out;
    out.reserve(s.size());
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '%' && i + 2 < s.size() &&
            std::isxdigit(static_cast<unsigned char>(s[i + 1])) &&
            std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
            out += static_cast<char>(std::stoi(std::string(s.substr(i + 1, 2)), nullptr, 16));
            i += 2;
        } else {
            out += plus_is_space && s[i] == '+' ? ' ' : s[i];
        }
    }
    return out;
}

std::string terminal_safe(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    auto hex = [&](unsigned char c) {
        out.append("\\x").append(1, kHex[c >> 4]).append(1, kHex[c & 15]);
    };
    for (std::size_t i = 0; i < s.size();) {
        const auto c = static_cast<unsigned char>(s[i]);
        const std::size_t n = utf8_sequence_length(s, i);
        if (n == 0 || (n == 1 && (c < 0x20 || c == 0x7f))) {
            hex(c);
            ++i;
            continue;
        }
        if (n == 2 && c == 0xc2 && static_cast<unsigned char>(s[i + 1]) < 0xa0) {  // C1
            hex(c);
            hex(static_cast<unsigned char>(s[i + 1]));
        } else {
            out.append(s.substr(i, n));
        }
        i += n;
    }
    return out;
}

std::string dump_json(const nlohmann::json& j, int indent) {
    bool changed = false;
    const nlohmann::json safe = with_marks(j, changed);
    std::string text = safe.dump(indent);
    if (!changed) return text;
    std::string out;
    out.reserve(text.size());
    for (std::size_t i = 0; i < text.size();) {
        if (text.compare(i, kMark.size(), kMark) == 0 && i + kMark.size() + 2 <= text.size()) {
            const std::string code = text.substr(i + kMark.size(), 2);
            out.append(code == "--" ? "\\uffff" : "\\udc" + code);
            i += kMark.size() + 2;
        } else {
            out += text[i++];
        }
    }
    return out;
}

}  // namespace modelfs
