// Path helpers shared by the configuration readers.
#include <pwd.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>
#include <system_error>
#include <vector>

#include "install_config.h"

namespace modelfs::adopt::detail {

namespace {

std::string home_of(const std::string& user) {
    if (user.empty()) {
        if (const char* h = std::getenv("HOME"); h && *h) return h;
    }
    long n = ::sysconf(_SC_GETPW_R_SIZE_MAX);
    std::vector<char> buf(n > 0 ? static_cast<std::size_t>(n) : 16384);
    passwd pw{};
    passwd* found = nullptr;
    const int rc = user.empty() ? ::getpwuid_r(::getuid(), &pw, buf.data(), buf.size(), &found)
                                : ::getpwnam_r(user.c_str(), &pw, buf.data(), buf.size(), &found);
    if (rc != 0 || !found || !pw.pw_dir) return {};
    return pw.pw_dir;
}

bool var_char(char c, bool first) {
    return c == '_' || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
           (!first && c >= '0' && c <= '9');
}

}  // namespace

std::string expand_user_and_vars(std::string_view in) {
    // expandvars first, then expanduser, as ComfyUI does for base_path.
    std::string s;
    for (std::size_t i = 0; i < in.size();) {
        if (in[i] != '$' || i + 1 >= in.size()) {
            s += in[i++];
            continue;
        }
        std::size_t start = i + 1, end = start;
        bool braced = in[start] == '{';
        if (braced) {
            end = in.find('}', start + 1);
            if (end == in.npos) {
                s += in.substr(i);
                break;
            }
            const std::string name(in.substr(start + 1, end - start - 1));
            const char* v = name.empty() ? nullptr : std::getenv(name.c_str());
            s += v ? std::string(v) : std::string(in.substr(i, end + 1 - i));
            i = end + 1;
            continue;
        }
        while (end < in.size() && var_char(in[end], end == start)) ++end;
        if (end == start) {
            s += in[i++];
            continue;
        }
        const std::string name(in.substr(start, end - start));
        const char* v = std::getenv(name.c_str());
        s += v ? std::string(v) : std::string(in.substr(i, end - i));
        i = end;
    }
    if (s.empty() || s.front() != '~') return s;
    const std::size_t slash = s.find('/');
    const std::string user = s.substr(1, slash == s.npos ? s.npos : slash - 1);
    const std::string home = home_of(user);
    if (home.empty()) return s;  // like Python: an unknown user stays "~name"
    return home + (slash == s.npos ? std::string() : s.substr(slash));
}

std::filesystem::path absolute_against(const std::filesystem::path& p,
                                       const std::filesystem::path& base) {
    std::filesystem::path out = (base / p).lexically_normal();
    if (out.has_parent_path() && !out.has_filename()) out = out.parent_path();
    return out;
}

std::string comfyui_view_folder(std::string_view key) {
    // folder_paths.py map_legacy(): the old names still work in extra_model_paths.yaml.
    if (key == "unet") return "diffusion_models";
    if (key == "clip") return "text_encoders";
    return std::string(key);
}

bool inside(const std::filesystem::path& p, const std::filesystem::path& dir) {
    auto [d, q] = std::mismatch(dir.begin(), dir.end(), p.begin(), p.end());
    return d == dir.end();
}

std::filesystem::path canonical_or_normal(const std::filesystem::path& p) {
    std::error_code ec;
    std::filesystem::path c = std::filesystem::weakly_canonical(p, ec);
    return ec ? p.lexically_normal() : c;
}

std::optional<nlohmann::json> read_json_settings(const std::filesystem::path& file,
                                                 std::vector<std::string>& notes) {
    std::ifstream in(file);
    if (!in) {
        notes.push_back(file.string() + ": cannot be read, ignored");
        return std::nullopt;
    }
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object()) {
        notes.push_back(file.filename().string() + ": not a JSON object, its folders are ignored");
        return std::nullopt;
    }
    return j;
}

void add_json_folders(const nlohmann::json& settings, std::span<const FolderKey> keys,
                      const std::string& fname, const std::filesystem::path& root, bool lists,
                      ConfigDirs& out) {
    for (const auto& [key, folder] : keys) {
        const auto it = settings.find(key);
        if (it == settings.end()) continue;
        const std::string origin = fname + ": " + key;
        // folder by init-capture: clang 14 (the fuzz build) cannot capture structured bindings.
        const auto add = [&, folder = folder](const nlohmann::json& v) {
            if (!v.is_string()) {
                out.notes.push_back(origin + ": " + v.dump() + " is not a path, ignored");
                return;
            }
            const std::string p = v.get<std::string>();
            if (!p.empty()) out.dirs.push_back({absolute_against(p, root), folder, origin});
        };
        if (lists && it->is_array()) {
            for (const auto& v : *it) add(v);
        } else {
            add(*it);
        }
    }
}

}  // namespace modelfs::adopt::detail
