#include "s3_xml.h"

#include <charconv>
#include <cstdint>

namespace modelfs::fetch::detail {
namespace {

bool is_name_end(char c) {
    return c == '>' || c == '/' || c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

void append_utf8(std::string& out, std::uint32_t cp) {
    if (cp < 0x80) {
        out += static_cast<char>(cp);
    } else if (cp < 0x800) {
        out += static_cast<char>(0xc0 | (cp >> 6));
        out += static_cast<char>(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
        out += static_cast<char>(0xe0 | (cp >> 12));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
        out += static_cast<char>(0x80 | (cp & 0x3f));
    } else {
        out += static_cast<char>(0xf0 | (cp >> 18));
        out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
        out += static_cast<char>(0x80 | (cp & 0x3f));
    }
}

}  // namespace

std::vector<std::string_view> xml_elements(std::string_view xml, std::string_view tag) {
    std::vector<std::string_view> out;
    if (tag.empty()) return out;
    const std::string close = "</" + std::string(tag) + ">";
    std::size_t pos = 0;
    while (true) {
        std::size_t lt = xml.find('<', pos);
        if (lt == std::string_view::npos) break;
        pos = lt + 1;
        std::string_view rest = xml.substr(lt + 1);
        // The whole name must match: "<Key" followed by '>', '/' or attributes, so <KeyMarker>
        // is not taken for <Key>.
        if (rest.size() <= tag.size() || rest.substr(0, tag.size()) != tag ||
            !is_name_end(rest[tag.size()]))
            continue;
        std::size_t gt = xml.find('>', lt);
        if (gt == std::string_view::npos) break;
        if (xml[gt - 1] == '/') {  // <tag/>
            out.emplace_back();
            pos = gt + 1;
            continue;
        }
        std::size_t end = xml.find(close, gt + 1);
        if (end == std::string_view::npos) break;
        out.push_back(xml.substr(gt + 1, end - gt - 1));
        pos = end + close.size();
    }
    return out;
}

std::optional<std::string> xml_text(std::string_view raw) {
    std::string out;
    out.reserve(raw.size());
    for (std::size_t i = 0; i < raw.size(); ++i) {
        if (raw[i] != '&') {
            out += raw[i];
            continue;
        }
        std::size_t semi = raw.find(';', i);
        if (semi == std::string_view::npos || semi - i > 12) return std::nullopt;
        std::string_view ent = raw.substr(i + 1, semi - i - 1);
        i = semi;
        if (ent == "amp") {
            out += '&';
        } else if (ent == "lt") {
            out += '<';
        } else if (ent == "gt") {
            out += '>';
        } else if (ent == "quot") {
            out += '"';
        } else if (ent == "apos") {
            out += '\'';
        } else if (ent.size() >= 2 && ent[0] == '#') {
            std::string_view digits = ent.substr(1);
            int base = 10;
            if (digits[0] == 'x' || digits[0] == 'X') {
                base = 16;
                digits.remove_prefix(1);
            }
            std::uint32_t cp = 0;
            auto [p, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), cp, base);
            if (digits.empty() || ec != std::errc() || p != digits.data() + digits.size())
                return std::nullopt;
            // XML allows no NUL; surrogates and values past U+10FFFF are no characters at all.
            if (cp == 0 || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return std::nullopt;
            append_utf8(out, cp);
        } else {
            return std::nullopt;
        }
    }
    return out;
}

std::optional<std::string> xml_field(std::string_view xml, std::string_view tag) {
    auto els = xml_elements(xml, tag);
    if (els.empty()) return std::nullopt;
    return xml_text(els.front());
}

}  // namespace modelfs::fetch::detail
