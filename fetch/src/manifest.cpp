// Manifests (see README.md, "Lazy fetch"): JSON describing remote models, checked field by field
// so that a mistake in entry 57 of 80 is reported as exactly that, before anything is written.
#include "modelfs/fetch/manifest.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "modelfs/fetch/source.h"
#include "modelfs/store/errors.h"
#include "modelfs/store/escape.h"
#include "modelfs/store/model_name.h"
#include "modelfs/store/names.h"
#include "modelfs/store/text.h"

namespace modelfs::fetch {
namespace {

using nlohmann::json;

// Extensions a name in `as` may end with; they are split off as the model's file extension.
constexpr std::string_view kModelExtensions[] = {
    ".fooocus.patch", ".safetensors", ".sft", ".ckpt", ".pt",   ".pt2",
    ".pth",           ".bin",         ".pkl", ".gguf", ".onnx",
};

// Raised while checking one field; turned into a StoreError naming file, entry and field.
struct FieldError {
    std::string field;  // "sha256", "files[2].url", or "" for the entry itself
    std::string message;
};

[[noreturn]] void field_error(std::string field, std::string message) {
    throw FieldError{std::move(field), std::move(message)};
}

std::string type_name(const json& j) {
    return j.type_name();
}

std::string get_string(const json& obj, const std::string& key, const std::string& field) {
    const json& v = obj.at(key);
    if (!v.is_string()) field_error(field, "must be a string, not " + type_name(v));
    return v.get<std::string>();
}

bool get_bool(const json& obj, const std::string& key, const std::string& field) {
    const json& v = obj.at(key);
    if (!v.is_boolean()) field_error(field, "must be true or false, not " + type_name(v));
    return v.get<bool>();
}

void check_keys(const json& obj, std::initializer_list<std::string_view> known,
                const std::string& prefix, const char* what) {
    for (const auto& [k, v] : obj.items()) {
        if (std::find(known.begin(), known.end(), k) != known.end()) continue;
        std::string list;
        for (auto n : known) list.append(list.empty() ? "" : ", ").append(n);
        field_error(prefix + k,
                    std::string("unknown key in ") + what + "; the known ones are " + list);
    }
}

std::string check_url(const std::string& url, const std::string& field) {
    if (url.empty()) field_error(field, "is empty");
    try {
        check_source_url(url);
    } catch (const StoreError& e) {
        field_error(field, e.what());
    }
    return url;
}

// "url" and "mirrors" of an entry or a tree file: the sources, in the order they are tried.
std::vector<BlobSource> sources_of(const json& obj, const std::string& prefix, bool stream) {
    std::vector<BlobSource> out;
    if (!obj.contains("url")) field_error(prefix + "url", "is missing: where to download it from");
    out.push_back({check_url(get_string(obj, "url", prefix + "url"), prefix + "url"), stream});
    if (obj.contains("mirrors")) {
        const json& m = obj["mirrors"];
        if (!m.is_array()) field_error(prefix + "mirrors", "must be an array of URLs");
        for (std::size_t i = 0; i < m.size(); ++i) {
            const std::string f = prefix + "mirrors[" + std::to_string(i) + "]";
            if (!m[i].is_string()) field_error(f, "must be a string, not " + type_name(m[i]));
            std::string url = check_url(m[i].get<std::string>(), f);
            bool dup = std::any_of(out.begin(), out.end(),
                                   [&](const BlobSource& s) { return s.url == url; });
            if (dup) field_error(f, "repeats an earlier URL of the same file");
            out.push_back({url, stream});
        }
    }
    return out;
}

std::optional<Sha256> sha256_of_field(const json& obj, const std::string& prefix) {
    if (!obj.contains("sha256")) return std::nullopt;
    const std::string f = prefix + "sha256";
    const std::string hex = lower(get_string(obj, "sha256", f));
    auto h = hex.size() == 64 ? Sha256::from_hex(hex) : std::nullopt;
    if (!h) field_error(f, "must be 64 hex digits (a SHA-256), not \"" + hex + "\"");
    return h;
}

// The size in bytes, when the entry states it.
std::optional<std::uint64_t> size_of_field(const json& obj, const std::string& prefix) {
    if (!obj.contains("size")) return std::nullopt;
    const json& v = obj["size"];
    if (!v.is_number_unsigned() && !(v.is_number_integer() && v.get<std::int64_t>() >= 0))
        field_error(prefix + "size", "must be a whole number of bytes (>= 0), not " +
                                         (v.is_number() ? v.dump() : type_name(v)));
    return v.get<std::uint64_t>();
}

RemoteFile file_of(const json& obj, const std::string& prefix, bool stream, bool& size_given) {
    RemoteFile f;
    f.sources = sources_of(obj, prefix, stream);
    f.sha256 = sha256_of_field(obj, prefix);
    auto size = size_of_field(obj, prefix);
    size_given = size.has_value();
    f.size = size.value_or(0);
    return f;
}

ManifestEntry entry_of(const json& e, std::size_t index) {
    ManifestEntry out;
    out.index = index;
    if (!e.is_object()) field_error("", "must be an object with \"as\" and \"url\" or \"files\"");
    check_keys(e, {"as", "url", "mirrors", "sha256", "size", "stream", "note", "keep", "files"}, "",
               "a model");
    if (!e.contains("as")) field_error("as", "is missing: the model's CATEGORY/NAME[@VERSION]");
    out.as = get_string(e, "as", "as");
    ModelRef ref;
    try {
        ref = parse_model_ref(out.as);
    } catch (const StoreError& err) {
        field_error("as", err.what());
    }
    RemoteModel& m = out.model;
    m.category = ref.category;
    m.name = ref.name;
    m.label = ref.label;
    if (e.contains("note")) m.note = get_string(e, "note", "note");
    if (e.contains("keep")) out.keep = get_bool(e, "keep", "keep");
    const bool stream = e.contains("stream") && get_bool(e, "stream", "stream");

    if (e.contains("files")) {
        for (const char* k : {"url", "mirrors", "sha256", "size"})
            if (e.contains(k))
                field_error(k, "belongs to each of \"files\", not to a model that has \"files\"");
        const json& files = e["files"];
        if (!files.is_array() || files.empty())
            field_error("files", "must be a non-empty array of {path, url, ...} objects");
        m.tree = true;
        std::set<std::string> paths;
        for (std::size_t i = 0; i < files.size(); ++i) {
            const std::string prefix = "files[" + std::to_string(i) + "].";
            const json& fj = files[i];
            if (!fj.is_object())
                field_error("files[" + std::to_string(i) + "]", "must be an object");
            check_keys(fj, {"path", "url", "mirrors", "sha256", "size", "stream"}, prefix,
                       "a file");
            if (!fj.contains("path"))
                field_error(prefix + "path", "is missing: the file's path inside the model");
            const std::string path = get_string(fj, "path", prefix + "path");
            if (auto why = relative_path_problem(path); !why.empty())
                field_error(prefix + "path", "\"" + terminal_safe(path) + "\": " + why +
                                                 " (a relative path, like "
                                                 "\"unet/model.safetensors\")");
            if (!paths.insert(path).second)
                field_error(prefix + "path", "\"" + terminal_safe(path) + "\" is listed twice");
            const bool fstream =
                fj.contains("stream") ? get_bool(fj, "stream", prefix + "stream") : stream;
            bool given = false;
            RemoteFile f = file_of(fj, prefix, fstream, given);
            f.path = path;
            m.files.push_back(std::move(f));
            out.size_given.push_back(given);
        }
        if (!ref.ext.empty())
            field_error("as", "a model with \"files\" is a folder; its name has no extension");
    } else {
        if (!e.contains("url"))
            field_error("url", "is missing: give \"url\" (one file) or \"files\" (a folder)");
        bool given = false;
        m.files.push_back(file_of(e, "", stream, given));
        out.size_given.push_back(given);
        m.ext = !ref.ext.empty() ? ref.ext : extension_of_url(m.files[0].sources[0].url);
        if (m.ext.empty())
            field_error("as",
                        "the URL does not show the file's extension; add it to the name "
                        "(\"" +
                            std::string(to_string(m.category)) + "/" + m.name + ".safetensors\")");
        // The extension is part of a single file's name (store/include/modelfs/store/model_name.h).
        auto named = single_file_name(m.name, m.ext);
        m.name = std::move(named.name);
        m.ext = std::move(named.ext);
    }
    return out;
}

}  // namespace

ModelRef parse_model_ref(std::string_view as) {
    const std::string text(as);
    auto bad = [&](const std::string& why) -> void {
        throw StoreError(ErrorKind::bad_input, "\"" + terminal_safe(text) + "\": " + why);
    };
    auto slash = text.find('/');
    if (slash == std::string::npos || slash == 0)
        bad("expected CATEGORY/NAME[@VERSION], e.g. lora/sdxl/detail-tweaker@v2");
    ModelRef r;
    const std::string cat = text.substr(0, slash);
    auto c = parse_category(cat);
    if (!c) {
        std::string list;
        for (auto k : all_categories()) list.append(" ").append(to_string(k));
        bad("unknown category '" + terminal_safe(cat) + "'; categories are:" + list);
    }
    r.category = *c;
    std::string name = text.substr(slash + 1);
    if (auto at = name.find('@'); at != std::string::npos) {
        r.label = name.substr(at + 1);
        name.resize(at);
        if (r.label->empty()) bad("empty version after '@'");
        if (r.label->find('/') != std::string::npos || r.label->find('@') != std::string::npos)
            bad("a version label has no '/' or '@'");
    }
    for (auto ext : kModelExtensions)
        if (name.size() > ext.size() && iends_with(name, ext) &&
            name[name.size() - ext.size() - 1] != '/') {
            r.ext = name.substr(name.size() - ext.size());
            name.resize(name.size() - ext.size());
            break;
        }
    try {
        check_model_name(name);
    } catch (const StoreError& e) {
        bad(e.what());
    }
    r.name = std::move(name);
    return r;
}

std::string extension_of_url(std::string_view url) {
    url = url.substr(0, url.find_first_of("?#"));
    auto scheme = url.find("://");
    std::string_view path = scheme == std::string_view::npos ? url : url.substr(scheme + 3);
    auto slash = path.rfind('/');
    if (slash == std::string_view::npos) return "";  // only a host
    std::string_view file = path.substr(slash + 1);
    for (auto ext : kModelExtensions)
        if (file.size() > ext.size() && iends_with(file, ext))
            return std::string(file.substr(file.size() - ext.size()));
    auto dot = file.rfind('.');
    if (dot == std::string_view::npos || dot == 0) return "";
    std::string_view ext = file.substr(dot + 1);
    if (ext.empty() || ext.size() > 16 || !std::all_of(ext.begin(), ext.end(), [](char c) {
            return std::isalnum(static_cast<unsigned char>(c));
        }))
        return "";
    return "." + std::string(ext);
}

std::vector<ManifestEntry> parse_manifest(std::string_view json_text,
                                          const std::filesystem::path& source) {
    const std::string file = source.string();
    json root;
    try {
        root = json::parse(json_text, nullptr, true, /*ignore_comments=*/true);
    } catch (const json::exception& e) {  // parse_error, or out_of_range for 1e999 (fuzzing)
        std::string what = e.what();
        // "[json.exception.parse_error.101] parse error at line 3, column 5: ..." -> the rest.
        if (auto p = what.find("] "); p != std::string::npos) what = what.substr(p + 2);
        throw StoreError(ErrorKind::bad_input, file + ": not valid JSON: " + what);
    }
    auto top = [&](const std::string& why) {
        throw StoreError(ErrorKind::bad_input, file + ": " + why);
    };
    if (!root.is_object() || !root.contains("models"))
        top("a manifest is an object with a \"models\" array: {\"models\": [{\"as\": "
            "\"lora/foo\", \"url\": \"https://...\"}]}");
    for (const auto& [k, v] : root.items())
        if (k != "models") top("unknown top-level key '" + k + "'; the only one is \"models\"");
    const json& models = root["models"];
    if (!models.is_array()) top("\"models\" must be an array");

    std::vector<ManifestEntry> out;
    std::map<std::string, std::size_t> seen;  // model key @ label -> index
    for (std::size_t i = 0; i < models.size(); ++i) {
        const json& e = models[i];
        std::string where = file + ": models[" + std::to_string(i) + "]";
        if (e.is_object() && e.contains("as") && e["as"].is_string())
            where += " (" + e["as"].get<std::string>() + ")";
        try {
            ManifestEntry entry = entry_of(e, i);
            const std::string key = model_key(entry.model.category, entry.model.name) + "@" +
                                    entry.model.label.value_or("");
            if (auto [it, fresh] = seen.emplace(key, i); !fresh)
                field_error("as", "the same model (and version) as models[" +
                                      std::to_string(it->second) +
                                      "]; give each a different @VERSION or name");
            out.push_back(std::move(entry));
        } catch (const FieldError& f) {
            throw StoreError(
                ErrorKind::bad_input,
                where + ": " + (f.field.empty() ? "" : "'" + f.field + "': ") + f.message);
        }
    }
    return out;
}

std::vector<ManifestEntry> load_manifest(const std::filesystem::path& file) {
    std::error_code ec;
    if (!std::filesystem::exists(file, ec))
        throw StoreError(ErrorKind::not_found, file.string() + ": no such manifest file");
    if (std::filesystem::is_directory(file, ec))
        throw StoreError(ErrorKind::bad_input,
                         file.string() + ": is a folder; a manifest is a JSON file");
    std::ifstream in(file, std::ios::binary);
    if (!in)
        throw StoreError(ErrorKind::io,
                         file.string() + ": cannot open the manifest: " + std::strerror(errno));
    std::ostringstream text;
    text << in.rdbuf();
    if (in.bad()) throw StoreError(ErrorKind::io, file.string() + ": cannot read the manifest");
    return parse_manifest(text.str(), file);
}

}  // namespace modelfs::fetch
