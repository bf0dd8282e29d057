// ComfyUI's extra_model_paths.yaml, read without a YAML library (the project ships none) by a
// parser for exactly the subset ComfyUI's own example and the launchers that write this file
// use:
//
//   # comment                        full-line and trailing comments (" #")
//   section:                         top-level keys, each a mapping (or empty / null)
//       base_path: ~/sd              scalars: plain, "double" or 'single' quoted
//       base_paths: |                newer ComfyUI: several bases, one per line
//       is_default: true
//       loras: models/Lora           <folder key>: path
//       upscale_models: |            or a literal block, one path per line
//           models/ESRGAN
//           models/SwinIR
//
// Anything else (tabs, deeper nesting, flow collections [..] {..}, folded blocks '>', anchors)
// becomes a note naming the file and line and is skipped: a hand-edited file must never stop an
// adopt, and a guess could point adopt at the wrong folder.
//
// Resolution follows ComfyUI utils/extra_config.py: base_path gets $VARS and ~ expanded and, when
// relative, is taken against the yaml's folder; a folder path is joined to base_path (an absolute
// one stays as it is) or, without a base, taken against the yaml's folder.
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "install_config.h"

namespace modelfs::adopt::detail {

namespace {

struct Entry {
    std::string key;
    std::string path;
    int line = 0;
};

struct Section {
    std::string name;
    int line = 0;
    std::vector<std::string> bases;  // as written, expanded later
    std::vector<Entry> entries;
};

std::string trim(std::string_view s) {
    std::size_t b = 0, e = s.size();
    while (b < e && (s[b] == ' ' || s[b] == '\t')) ++b;
    while (e > b && (s[e - 1] == ' ' || s[e - 1] == '\t')) --e;
    return std::string(s.substr(b, e - b));
}

// The line without its comment; quotes protect '#'. A comment starts a line or follows a blank.
std::string strip_comment(const std::string& line) {
    char quote = 0;
    for (std::size_t i = 0; i < line.size(); ++i) {
        const char c = line[i];
        if (quote) {
            if (c == '\\' && quote == '"' && i + 1 < line.size())
                ++i;
            else if (c == quote)
                quote = 0;
        } else if (c == '"' || c == '\'') {
            quote = c;
        } else if (c == '#' && (i == 0 || line[i - 1] == ' ' || line[i - 1] == '\t')) {
            return line.substr(0, i);
        }
    }
    return line;
}

// A scalar as written after "key:"; std::nullopt when it is not one this subset reads.
std::optional<std::string> scalar(const std::string& v, std::string& why) {
    if (v.empty()) return v;
    if (v.front() == '"') {
        std::string out;
        for (std::size_t i = 1; i < v.size(); ++i) {
            if (v[i] == '"') {
                if (i + 1 != v.size()) break;
                return out;
            }
            if (v[i] == '\\' && i + 1 < v.size()) {
                const char n = v[++i];
                if (n != '\\' && n != '"' && n != '/') {
                    why = "escape \\" + std::string(1, n) + " is not supported";
                    return std::nullopt;
                }
                out += n;
            } else {
                out += v[i];
            }
        }
        why = "unterminated or malformed \"quoted\" value";
        return std::nullopt;
    }
    if (v.front() == '\'') {
        std::string out;
        for (std::size_t i = 1; i < v.size(); ++i) {
            if (v[i] == '\'') {
                if (i + 1 < v.size() && v[i + 1] == '\'') {
                    out += '\'';
                    ++i;
                    continue;
                }
                if (i + 1 != v.size()) break;
                return out;
            }
            out += v[i];
        }
        why = "unterminated or malformed 'quoted' value";
        return std::nullopt;
    }
    const char c = v.front();
    if (c == '[' || c == '{' || c == '&' || c == '*' || c == '!' || c == '>' || c == '%' ||
        c == '@' || c == '`') {
        why = "\"" + v + "\" uses YAML this reader does not support";
        return std::nullopt;
    }
    return v;
}

// "key: rest" -> key, rest; std::nullopt when there is no "key:" on the line.
std::optional<std::pair<std::string, std::string>> split_key(const std::string& s) {
    std::string key;
    std::size_t i = 0;
    if (!s.empty() && (s[0] == '"' || s[0] == '\'')) {
        const std::size_t close = s.find(s[0], 1);
        if (close == s.npos) return std::nullopt;
        key = s.substr(1, close - 1);
        i = close + 1;
        if (i >= s.size() || s[i] != ':') return std::nullopt;
    } else {
        for (i = 0; i < s.size(); ++i) {
            if (s[i] == ':' && (i + 1 == s.size() || s[i + 1] == ' ')) break;
        }
        if (i == s.size()) return std::nullopt;
        key = trim(s.substr(0, i));
        if (key.empty()) return std::nullopt;
    }
    return std::make_pair(key, trim(s.substr(i + 1)));
}

bool is_null(const std::string& v) {
    return v.empty() || v == "~" || v == "null" || v == "Null";
}

}  // namespace

ConfigDirs comfyui_extra_model_paths(const std::filesystem::path& yaml_file) {
    ConfigDirs out;
    const std::string fname = yaml_file.filename().string();
    std::ifstream in(yaml_file);
    if (!in) {
        out.notes.push_back(yaml_file.string() + ": cannot be read, ignored");
        return out;
    }
    const auto note = [&](int line, const std::string& what) {
        out.notes.push_back(fname + ":" + std::to_string(line) + ": " + what + ", line ignored");
    };

    std::vector<Section> sections;
    std::size_t child_indent = 0;  // of the current section's keys; 0 until the first one
    // An open "key: |" block: the key's indent, the block's own indent once seen, where to put
    // its lines.
    struct Block {
        std::size_t key_indent = 0, indent = 0;
        std::string key;
        int line = 0;
        bool base = false;
    };
    std::optional<Block> block;

    std::string raw;
    int n = 0;
    while (std::getline(in, raw)) {
        ++n;
        if (!raw.empty() && raw.back() == '\r') raw.pop_back();
        if (n == 1 && raw.starts_with("\xEF\xBB\xBF")) raw.erase(0, 3);  // a Windows editor's BOM
        std::size_t indent = 0;
        while (indent < raw.size() && raw[indent] == ' ') ++indent;
        const bool blank = trim(raw).empty();
        if (block) {
            if (blank) continue;
            if (indent > block->key_indent) {
                if (block->indent == 0) block->indent = indent;
                // A block line is literal: '#' is part of the path, not a comment.
                std::string line = trim(raw.substr(std::min(indent, block->indent)));
                Section& s = sections.back();
                if (block->base)
                    s.bases.push_back(line);
                else
                    s.entries.push_back({block->key, line, n});
                continue;
            }
            block.reset();
        }
        if (indent < raw.size() && raw[indent] == '\t') {
            note(n, "tab indentation is not supported");
            continue;
        }
        const std::string line = trim(strip_comment(raw));
        if (line.empty()) continue;
        if (line == "---" || line == "...") continue;  // document markers
        auto kv = split_key(line);
        if (!kv) {
            note(n, "expected \"key: value\"");
            continue;
        }
        auto& [key, rest] = *kv;
        if (indent == 0) {
            if (!is_null(rest)) {
                note(n, "top-level \"" + key + "\" has a value; expected a section of folders");
                continue;
            }
            sections.push_back({key, n, {}, {}});
            child_indent = 0;
            continue;
        }
        if (sections.empty()) {
            note(n, "indented key outside any section");
            continue;
        }
        if (child_indent == 0) child_indent = indent;
        if (indent != child_indent) {
            note(n, "nested deeper than the folders of section \"" + sections.back().name + "\"");
            continue;
        }
        Section& s = sections.back();
        if (!rest.empty() && rest.front() == '|') {
            if (rest != "|" && rest != "|-" && rest != "|+") {
                note(n, "block indicator \"" + rest + "\" is not supported (use \"|\")");
                continue;
            }
            block = Block{indent, 0, key, n, key == "base_paths"};
            if (key == "base_path") block->base = true;
            continue;
        }
        std::string why;
        auto value = scalar(rest, why);
        if (!value) {
            note(n, why);
            continue;
        }
        if (key == "base_path" || key == "base_paths") {
            if (!value->empty()) s.bases.push_back(*value);
        } else if (key == "is_default") {
            // Only decides ComfyUI's search order; adopt scans every folder either way.
            if (*value != "true" && *value != "false" && *value != "True" && *value != "False")
                note(n, "is_default must be true or false");
        } else if (!value->empty()) {
            s.entries.push_back({key, *value, n});
        }
    }

    const std::filesystem::path yaml_dir =
        std::filesystem::absolute(yaml_file).lexically_normal().parent_path();
    for (const Section& s : sections) {
        std::vector<std::filesystem::path> bases;
        for (const auto& b : s.bases) {
            const std::string e = trim(expand_user_and_vars(b));
            if (!e.empty()) bases.push_back(absolute_against(e, yaml_dir));
        }
        for (const Entry& e : s.entries) {
            // ComfyUI's own code folder, not a models folder.
            if (e.key == "custom_nodes") continue;
            const std::string origin = fname + ": " + s.name + "." + e.key;
            if (bases.empty()) {
                out.dirs.push_back(
                    {absolute_against(e.path, yaml_dir), comfyui_view_folder(e.key), origin});
            }
            for (const auto& b : bases)
                out.dirs.push_back(
                    {absolute_against(e.path, b), comfyui_view_folder(e.key), origin});
        }
    }
    return out;
}

}  // namespace modelfs::adopt::detail
