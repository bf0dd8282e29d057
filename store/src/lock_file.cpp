#include "modelfs/store/lock_file.h"
#include "modelfs/store/model_name.h"

#include <algorithm>
#include <set>

#include <nlohmann/json.hpp>

#include "modelfs/store/errors.h"
#include "modelfs/store/escape.h"
#include "modelfs/store/names.h"
#include "modelfs/store/secrets.h"
#include "modelfs/store/store.h"

namespace modelfs {

namespace {

using ojson = nlohmann::ordered_json;

ojson file_json(const LockedFile& f, bool with_path) {
    ojson j;
    if (with_path) j["path"] = f.path;
    j["sha256"] = f.sha256.hex();
    j["size"] = f.size;
    j["sources"] = f.sources;
    if (f.secrets_removed) j["secrets_removed"] = true;
    return j;
}

// The content id a tree of locked files has, computed as ModelVersion::content_id does.
Sha256 tree_id(const std::vector<LockedFile>& files) {
    ModelVersion v;
    for (const auto& f : files) v.tree.push_back({f.path, f.sha256, f.size});
    return v.content_id();
}

}  // namespace

std::string LockFile::to_text() const {
    ojson models = ojson::array();
    for (const auto& m : this->models) {
        ojson j;
        j["model"] = m.key();
        j["label"] = m.label;
        if (!m.tree) j["ext"] = m.ext;
        j["sha256"] = m.content_id.hex();
        j["size"] = m.size;
        if (m.tree) {
            ojson files = ojson::array();
            for (const auto& f : m.files) files.push_back(file_json(f, true));
            j["files"] = std::move(files);
        } else if (!m.files.empty()) {
            j["sources"] = m.files.front().sources;
            if (m.files.front().secrets_removed) j["secrets_removed"] = true;
        }
        models.push_back(std::move(j));
    }
    ojson root;
    root["modelfs_lock"] = kLockFormatVersion;
    root["view"] = view;
    root["models"] = std::move(models);
    return dump_json(root) + "\n";
}

LockFile LockFile::parse(std::string_view text, const std::string& source) {
    auto bad = [&](const std::string& why) -> StoreError {
        return StoreError(ErrorKind::bad_input, source + ": " + why);
    };
    nlohmann::json root;
    try {
        root = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {  // parse_error, or out_of_range for 1e999
        throw bad(std::string("not a lock file (not JSON): ") + e.what());
    }
    if (!root.is_object() || !root.contains("modelfs_lock"))
        throw bad("not a modelfs lock file (no \"modelfs_lock\" key)");
    // Read as int64, not int: 2^32 + 1 or -(2^32 - 1) once wrapped to format 1 and were accepted.
    if (!root["modelfs_lock"].is_number_integer() || root["modelfs_lock"].get<std::int64_t>() < 1)
        throw bad("\"modelfs_lock\" must be a format number");
    if (root["modelfs_lock"].get<std::int64_t>() > kLockFormatVersion)
        throw bad("lock format " + root["modelfs_lock"].dump() +
                  " is newer than this modelfs understands (" + std::to_string(kLockFormatVersion) +
                  "); upgrade modelfs");
    LockFile lock;
    try {
        lock.view = root.value("view", std::string());
        if (!root.contains("models") || !root["models"].is_array())
            throw bad("\"models\" must be an array");
        std::set<std::string> seen;
        std::size_t index = 0;
        for (const auto& j : root["models"]) {
            const std::string where = "models[" + std::to_string(index++) + "]";
            auto hash = [&](const nlohmann::json& o, const std::string& what) {
                auto h = Sha256::from_hex(o.at("sha256").get<std::string>());
                if (!h) throw bad(what + ": \"sha256\" is not 64 hex digits");
                return *h;
            };
            // get<uint64_t> alone wraps -1 to 2^64 - 1, truncates 1.5 and converts 1e300 out of
            // range (undefined behaviour; found by fuzzing).
            auto size = [&](const nlohmann::json& o, const std::string& what) {
                const nlohmann::json& v = o.at("size");
                if (!v.is_number_unsigned())
                    throw bad(what + ": \"size\" must be a whole number of bytes, not " + v.dump());
                return v.get<std::uint64_t>();
            };
            auto sources = [&](const nlohmann::json& o) {
                return o.value("sources", std::vector<std::string>{});
            };
            auto secrets_removed = [&](const nlohmann::json& o) {
                return o.value("secrets_removed", false);
            };
            LockedModel m;
            const std::string key = j.at("model").get<std::string>();
            const auto slash = key.find('/');
            auto cat = parse_category(key.substr(0, slash == std::string::npos ? 0 : slash));
            if (!cat || slash == std::string::npos)
                throw bad(where + ": \"" + terminal_safe(key) +
                          "\" is not CATEGORY/NAME with a known category");
            m.category = *cat;
            m.name = key.substr(slash + 1);
            try {
                check_model_name(m.name);
                m.label = j.at("label").get<std::string>();
                check_version_label(m.label);
            } catch (const StoreError& e) {
                throw bad(where + ": " + e.what());
            }
            if (!seen.insert(key).second) throw bad(where + ": model " + key + " is listed twice");
            m.content_id = hash(j, where);
            m.size = size(j, where);
            if (j.contains("files")) {
                m.tree = true;
                std::size_t fi = 0;
                for (const auto& f : j["files"]) {
                    const std::string fwhere = where + ".files[" + std::to_string(fi++) + "]";
                    LockedFile lf;
                    lf.path = f.at("path").get<std::string>();
                    if (auto why = relative_path_problem(lf.path); !why.empty())
                        throw bad(fwhere + " (" + terminal_safe(key) + "): \"path\" '" +
                                  terminal_safe(lf.path) + "': " + why);
                    lf.sha256 = hash(f, fwhere);
                    lf.size = size(f, fwhere);
                    lf.sources = sources(f);
                    lf.secrets_removed = secrets_removed(f);
                    m.files.push_back(std::move(lf));
                }
                if (m.files.empty()) throw bad(where + ": \"files\" is empty");
                std::sort(m.files.begin(), m.files.end(),
                          [](const LockedFile& a, const LockedFile& b) { return a.path < b.path; });
                if (tree_id(m.files) != m.content_id)
                    throw bad(where + " (" + key +
                              "): \"sha256\" does not match its files (edited by hand?)");
            } else {
                // Lock files written before names had extensions say "lora/foo" + ".pt".
                auto named = single_file_name(m.name, j.at("ext").get<std::string>());
                m.name = std::move(named.name);
                m.ext = std::move(named.ext);
                m.files.push_back({"", m.content_id, m.size, sources(j), secrets_removed(j)});
            }
            lock.models.push_back(std::move(m));
        }
    } catch (const nlohmann::json::exception& e) {
        throw bad(std::string("malformed lock file: ") + e.what());
    }
    std::sort(lock.models.begin(), lock.models.end(),
              [](const LockedModel& a, const LockedModel& b) { return a.key() < b.key(); });
    return lock;
}

std::string LockFile::id() const {
    return sha256_of(to_text()).hex().substr(0, 16);
}

std::vector<std::pair<std::string, Sha256>> LockFile::versions() const {
    std::vector<std::pair<std::string, Sha256>> out;
    for (const auto& m : models) out.emplace_back(m.key(), m.content_id);
    return out;
}

LockedModel lock_entry(const Txn& txn, const Model& m, std::size_t index, bool with_secrets) {
    const ModelVersion& v = m.versions.at(index);
    LockedModel out;
    out.category = m.category;
    out.name = m.name;
    out.label = v.label;
    out.ext = v.ext;
    out.tree = v.is_tree();
    out.content_id = v.content_id();
    out.size = v.size;
    bool removed = false;
    auto sources_of = [&](const Sha256& h) {
        std::vector<std::string> urls;
        removed = false;
        auto r = txn.get_blob(h);
        // A placeholder's key is not a hash of anything another machine could check.
        if (r && r->placeholder)
            throw StoreError(ErrorKind::bad_input,
                             m.key() + "@" + v.label +
                                 " has not been downloaded yet, so its SHA-256 is unknown and a "
                                 "lock file cannot name it; run `modelfs fetch " +
                                 m.key() + "` first");
        if (r)
            for (const auto& s : r->sources) {
                if (with_secrets) {
                    urls.push_back(s.url);
                    continue;
                }
                StrippedUrl u = strip_url_secrets(s.url);
                removed = removed || u.removed;
                urls.push_back(std::move(u.url));
            }
        return urls;
    };
    if (v.is_tree()) {
        for (const auto& t : v.tree) {
            auto urls = sources_of(t.blob);
            out.files.push_back({t.path, t.blob, t.size, std::move(urls), removed});
        }
    } else {
        auto urls = sources_of(*v.blob);
        out.files.push_back({"", *v.blob, v.size, std::move(urls), removed});
    }
    return out;
}

namespace {

// A version with a remote file not downloaded yet: its SHA-256 is unknown, so no lock can name it.
bool has_unhashed_file(const Txn& txn, const ModelVersion& v) {
    const auto unhashed = [&](const Sha256& h) {
        const auto r = txn.get_blob(h);
        return r && r->placeholder;
    };
    if (!v.is_tree()) return unhashed(*v.blob);
    return std::any_of(v.tree.begin(), v.tree.end(),
                       [&](const TreeEntry& t) { return unhashed(t.blob); });
}

}  // namespace

MadeLock make_lock(const Txn& txn, const std::string& view, const LockedVersion& version_of,
                   bool with_secrets, bool skip_unhashed) {
    MadeLock out;
    out.lock.view = view;
    txn.for_each_model([&](const Model& m) {
        const std::optional<std::size_t> i = version_of ? version_of(m) : m.current;
        if (!i) return;
        try {
            check_model_name(m.name);
        } catch (const StoreError& e) {
            out.left_out.push_back("model " + m.versions.at(*i).content_id().hex() +
                                   " left out of the lock: " + e.what());
            return;
        }
        if (skip_unhashed && has_unhashed_file(txn, m.versions.at(*i))) {
            out.left_out.push_back(terminal_safe(m.key()) + "@" +
                                   terminal_safe(m.versions.at(*i).label) +
                                   " left out of the lock: not downloaded yet, so its SHA-256 is "
                                   "unknown (`modelfs fetch " +
                                   terminal_safe(m.key()) + "` first to include it)");
            return;
        }
        try {
            out.lock.models.push_back(lock_entry(txn, m, *i, with_secrets));
        } catch (const StoreError& e) {
            if (!has_unhashed_file(txn, m.versions.at(*i))) throw;
            throw StoreError(e.kind(), std::string(e.what()) +
                                           ", or leave such models out with `modelfs lock "
                                           "--skip-unhashed`");
        }
    });
    std::sort(out.lock.models.begin(), out.lock.models.end(),
              [](const LockedModel& a, const LockedModel& b) { return a.key() < b.key(); });
    return out;
}

}  // namespace modelfs
