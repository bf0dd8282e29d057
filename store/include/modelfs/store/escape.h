// Text that a file or a server controls (model names, metadata, URLs, error text) on its way to a
// terminal or into JSON: the one place that decides how it is escaped.
#pragma once

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace modelfs {

// For a terminal: control characters (C0, DEL, C1) and bytes that are not UTF-8 become \xHH
// (a C1 character as its two bytes), so no escape sequence reaches the terminal. Everything
// else, backslashes included, is left as is: for people, not for parsing.
std::string terminal_safe(std::string_view s);

// A URL's percent-encoding undone ("%2e%2e" -> ".."): what a server sees once it decodes a path
// or a query parameter's name. A '%' not followed by two hex digits stays; '+' becomes a space
// only when `plus_is_space` (form-encoded query text, not paths).
std::string percent_decoded(std::string_view s, bool plus_is_space = false);

// j.dump(indent), never failing on a string that is not UTF-8 (a name an older modelfs let in):
// each byte 0xHH that is not part of a valid UTF-8 sequence is written as the lone surrogate
// \udcHH (PEP 383 "surrogateescape"), which gives the original bytes back exactly, e.g. in
// Python: json.loads(text)["name"].encode("utf-8", "surrogateescape"). A U+FFFF in a string is
// written \uffff. Strings that are valid UTF-8 come out exactly as dump() writes them.
std::string dump_json(const nlohmann::json& j, int indent = 2);

}  // namespace modelfs
