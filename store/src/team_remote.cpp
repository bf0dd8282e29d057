// Team remotes: the registry in the catalog's meta database, the published snapshots, their
// merge, and pulling a merged catalogue into the store (store/FORMAT.md "Team remotes").
#include "modelfs/store/team_remote.h"

#include <fnmatch.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <random>
#include <set>

#include <nlohmann/json.hpp>

#include "modelfs/store/escape.h"
#include "modelfs/store/model_name.h"
#include "modelfs/store/names.h"
#include "modelfs/store/text.h"
#include "modelfs/store/version_source.h"
#include "store_impl.h"

namespace modelfs {
namespace {

using json = nlohmann::json;

constexpr std::string_view kRemoteMetaPrefix = "remote/";
constexpr std::string_view kWriterMetaKey = "writer";

[[noreturn]] void bad(const std::string& msg) {
    throw StoreError(ErrorKind::bad_input, msg);
}

json::binary_t bin(const std::uint8_t* p, std::size_t n) {
    return json::binary_t(std::vector<std::uint8_t>(p, p + n));
}

template <typename H>
std::optional<H> hash_of(const json& j) {
    if (!j.is_binary()) return std::nullopt;
    const auto& b = j.get_binary();
    H h;
    if (b.size() != h.bytes.size()) return std::nullopt;
    std::copy(b.begin(), b.end(), h.bytes.begin());
    return h;
}

std::string encode_remote(const TeamRemote& r) {
    json j = {{"url", r.url},
              {"endpoint", r.endpoint},
              {"region", r.region},
              {"profile", r.profile},
              {"added", r.added},
              {"pulled", r.pulled},
              {"pulled_at", r.pulled_at}};
    if (r.stream) j["stream"] = true;
    auto v = json::to_cbor(j);
    return std::string(v.begin(), v.end());
}

TeamRemote decode_remote(std::string_view name, std::string_view data) {
    TeamRemote r;
    r.name = std::string(name);
    try {
        json j = json::from_cbor(data.begin(), data.end());
        r.url = j.at("url").get<std::string>();
        r.endpoint = j.value("endpoint", std::string());
        r.region = j.value("region", std::string());
        r.profile = j.value("profile", std::string());
        r.added = j.value("added", std::int64_t{0});
        if (j.contains("pulled"))
            for (const auto& [w, snap] : j["pulled"].items())
                r.pulled.emplace(w, snap.get<std::string>());
        r.pulled_at = j.value("pulled_at", std::int64_t{0});
        r.stream = j.value("stream", false);
    } catch (const json::exception& e) {
        throw StoreError(ErrorKind::corrupt,
                         "catalog: the record of remote '" + r.name + "' is damaged: " + e.what());
    }
    return r;
}

std::string meta_key(std::string_view name) {
    return std::string(kRemoteMetaPrefix) + std::string(name);
}

std::string random_hex(std::size_t digits) {
    std::random_device rd;
    std::string out;
    const char* hex = "0123456789abcdef";
    while (out.size() < digits) out += hex[rd() & 15];
    return out;
}

bool is_s3_url(std::string_view url) {
    return istarts_with(url, "s3://");
}

std::string remote_source(const TeamRemote& r) {
    return to_source({SourceKind::remote, {}, r.name});
}

bool from_remote(const ModelVersion& v) {
    return parse_source(v.source).kind == SourceKind::remote;
}

std::optional<std::size_t> version_with_content(const Model& m, const ModelVersion& v) {
    for (std::size_t i = 0; i < m.versions.size(); ++i)
        if (m.versions[i].same_content(v)) return i;
    return std::nullopt;
}

// A label for `v` in `m` that no version of `m` has: its own, else "<label>-<8 hex of content>",
// longer prefixes when even that is taken.
std::string free_label(const Model& m, const ModelVersion& v) {
    if (!m.has_label(v.label)) return v.label;
    const std::string id = v.content_id().hex();
    for (std::size_t n = 8; n <= id.size(); n += 8) {
        std::string l = v.label.substr(0, 100 - n - 1) + "-" + id.substr(0, n);
        if (!m.has_label(l)) return l;
    }
    return id;
}

// Adds `v` to `m` (not current); relabelled when its label is taken by other content. Returns
// the new index, or the existing one for content `m` has.
std::size_t merge_version(Model& m, ModelVersion v, std::vector<std::string>* relabelled) {
    if (auto i = version_with_content(m, v)) return *i;
    std::string label = free_label(m, v);
    if (label != v.label && relabelled)
        relabelled->push_back(m.key() + " " + v.label + " (" + v.content_id().hex().substr(0, 12) +
                              ") is " + label + " here: the label has other content");
    v.label = label;
    return m.add_version(std::move(v), label, false).index;
}

void check_snapshot_model(const Model& m, const std::map<Sha256, SnapshotBlob>& blobs) {
    const std::string key = m.key();
    if (key.size() > 511) bad("model name too long: " + terminal_safe(key));
    check_model_name(m.name);
    check_relative_path(m.name, "model name");
    std::set<std::string> labels;
    for (const auto& v : m.versions) {
        check_version_label(v.label);
        if (!labels.insert(v.label).second)
            bad(key + ": version label '" + terminal_safe(v.label) + "' twice");
        for (const auto& t : v.tree) check_relative_path(t.path, key + ": file path");
        std::uint64_t total = 0;
        for (const auto& t : v.tree) {
            auto it = blobs.find(t.blob);
            if (it == blobs.end() || it->second.size != t.size)
                bad(key + " " + v.label + ": file " + terminal_safe(t.path) +
                    " names a blob the snapshot does not list with its size");
            total += t.size;
        }
        if (v.blob) {
            auto it = blobs.find(*v.blob);
            if (it == blobs.end()) bad(key + " " + v.label + ": its blob is not listed");
            total = it->second.size;
            if (!iends_with(m.name, v.ext) || v.ext.empty())
                bad(key + " " + v.label + ": extension '" + terminal_safe(v.ext) +
                    "' does not end the name");
        }
        if (total != v.size) bad(key + " " + v.label + ": size does not match its files");
        for (const auto& c : v.sidecars) {
            auto it = blobs.find(c.blob);
            if (it == blobs.end() || it->second.size != c.size)
                bad(key + " " + v.label + ": sidecar '" + terminal_safe(c.suffix) +
                    "' names a blob the snapshot does not list");
            check_relative_path("x" + c.suffix, key + ": sidecar");
        }
    }
}

}  // namespace

// ---- TeamRemote ----

bool TeamRemote::is_s3() const {
    return is_s3_url(url);
}

std::string TeamRemote::bucket() const {
    std::string_view rest = std::string_view(url).substr(5);
    return std::string(rest.substr(0, rest.find('/')));
}

std::string TeamRemote::prefix() const {
    std::string_view rest = std::string_view(url).substr(5);
    auto slash = rest.find('/');
    if (slash == std::string_view::npos) return {};
    std::string p(rest.substr(slash + 1));
    while (!p.empty() && p.back() == '/') p.pop_back();
    return p;
}

std::string TeamRemote::object_key(std::string_view key) const {
    std::string p = prefix();
    return p.empty() ? std::string(key) : p + "/" + std::string(key);
}

std::string TeamRemote::object_url(std::string_view key) const {
    if (is_s3()) return "s3://" + bucket() + "/" + object_key(key);
    std::string base = url;
    while (!base.empty() && base.back() == '/') base.pop_back();
    return base + "/" + std::string(key);
}

void check_remote_name(std::string_view name) {
    auto ok = [](unsigned char c) { return std::isalnum(c) || c == '_' || c == '.' || c == '-'; };
    if (name.empty() || name.size() > 64 || name.front() == '.' || name.front() == '-' ||
        !std::all_of(name.begin(), name.end(), ok))
        bad("invalid remote name '" + terminal_safe(name) +
            "': use 1 to 64 letters, digits, '_', '.', '-', not starting with '.' or '-'");
}

void check_remote_url(std::string_view url) {
    const std::string shown = terminal_safe(url);
    if (is_s3_url(url)) {
        std::string_view rest = url.substr(5);
        auto slash = rest.find('/');
        std::string_view bucket = rest.substr(0, slash);
        auto ok = [](unsigned char c) {
            return std::islower(c) || std::isdigit(c) || c == '.' || c == '-';
        };
        if (bucket.size() < 3 || bucket.size() > 63 ||
            !std::all_of(bucket.begin(), bucket.end(), ok))
            bad("invalid remote URL '" + shown +
                "': the bucket name must be 3 to 63 of a-z 0-9 . - (s3://BUCKET[/PREFIX])");
        if (slash != std::string_view::npos) {
            std::string prefix(rest.substr(slash + 1));
            while (!prefix.empty() && prefix.back() == '/') prefix.pop_back();
            if (!prefix.empty())
                if (auto why = relative_path_problem(prefix); !why.empty())
                    bad("invalid remote URL '" + shown + "': the prefix " + why);
        }
        return;
    }
    if (istarts_with(url, "https://") || istarts_with(url, "http://")) {
        auto p = url.find("://");
        std::string_view rest = url.substr(p + 3);
        if (rest.empty() || rest.front() == '/') bad("invalid remote URL '" + shown + "': no host");
        if (url.find_first_of("?#") != std::string_view::npos)
            bad("invalid remote URL '" + shown + "': a mirror URL has no query or fragment");
        return;
    }
    bad("invalid remote URL '" + shown +
        "': expected s3://BUCKET[/PREFIX] or a read-only mirror https://HOST/PATH");
}

std::string remote_blob_key(const Sha256& h) {
    const std::string hex = h.hex();
    return "blobs/sha256/" + hex.substr(0, 2) + "/" + hex;
}

std::string remote_snapshot_key(const Sha256& id) {
    return "snapshots/" + id.hex() + ".cbor";
}

std::string remote_writer_key(std::string_view writer) {
    return std::string(kRemoteWritersPrefix) + std::string(writer) + ".json";
}

// ---- registry ----

void add_team_remote(Store& s, const TeamRemote& r, bool replace) {
    check_remote_name(r.name);
    check_remote_url(r.url);
    Txn w = s.catalog().write();
    if (!replace && w.get_meta(meta_key(r.name)))
        throw StoreError(ErrorKind::conflict, "there is a remote '" + r.name +
                                                  "' already; `modelfs remote rm " + r.name +
                                                  "` first, or choose another name");
    w.put_meta(meta_key(r.name), encode_remote(r));
    w.commit();
}

std::vector<TeamRemote> team_remotes(Store& s) {
    std::vector<TeamRemote> out;
    Txn t = s.catalog().read();
    for (const auto& [k, v] : t.meta_with_prefix(kRemoteMetaPrefix))
        out.push_back(decode_remote(std::string_view(k).substr(kRemoteMetaPrefix.size()), v));
    return out;
}

std::optional<TeamRemote> find_team_remote(Store& s, std::string_view name) {
    Txn t = s.catalog().read();
    auto v = t.get_meta(meta_key(name));
    if (!v) return std::nullopt;
    return decode_remote(name, *v);
}

TeamRemote get_team_remote(Store& s, std::string_view name) {
    if (auto r = find_team_remote(s, name)) return *r;
    std::string known;
    for (const auto& r : team_remotes(s)) known += (known.empty() ? "" : ", ") + r.name;
    throw StoreError(ErrorKind::not_found,
                     "no remote '" + terminal_safe(name) + "'" +
                         (known.empty() ? "; add one with `modelfs remote add NAME s3://BUCKET`"
                                        : "; the remotes are: " + known));
}

bool remove_team_remote(Store& s, std::string_view name) {
    Txn w = s.catalog().write();
    if (!w.get_meta(meta_key(name))) return false;
    w.del_meta(meta_key(name));
    w.commit();
    return true;
}

std::string writer_id(Store& s) {
    {
        Txn t = s.catalog().read();
        if (auto v = t.get_meta(kWriterMetaKey)) return *v;
    }
    Txn w = s.catalog().write();
    if (auto v = w.get_meta(kWriterMetaKey)) return *v;  // another process made it meanwhile
    std::string id = random_hex(16);
    w.put_meta(kWriterMetaKey, id);
    w.commit();
    return id;
}

bool model_matches(const Model& m, const std::string& pattern) {
    return fnmatch(pattern.c_str(), m.key().c_str(), 0) == 0 ||
           fnmatch(pattern.c_str(), m.name.c_str(), 0) == 0;
}

// ---- snapshots ----

std::string Snapshot::encode() const {
    json models_j = json::array();
    for (const auto& m : models) {
        std::string rec = encode_model_record(m);
        models_j.push_back(json::binary_t(std::vector<std::uint8_t>(rec.begin(), rec.end())));
    }
    json blobs_j = json::array();
    for (const auto& [h, b] : blobs) {
        json jb = {{"sha256", bin(h.bytes.data(), h.bytes.size())}, {"size", b.size}};
        if (b.xxh3) jb["xxh3"] = bin(b.xxh3->bytes.data(), b.xxh3->bytes.size());
        if (b.st_hdr) jb["st_hdr"] = b.st_hdr;
        if (!b.pieces.empty()) {
            json pj = json::array();
            for (const auto& p : b.pieces)
                pj.push_back({bin(p.xxh3.bytes.data(), p.xxh3.bytes.size()), p.length});
            jb["pieces"] = std::move(pj);
        }
        blobs_j.push_back(std::move(jb));
    }
    json j = {{"modelfs_remote", kRemoteFormatVersion},
              {"writer", writer},
              {"host", host},
              {"seq", seq},
              {"pushed", pushed},
              {"models", std::move(models_j)},
              {"blobs", std::move(blobs_j)}};
    auto v = json::to_cbor(j);
    return std::string(v.begin(), v.end());
}

Snapshot Snapshot::decode(std::string_view bytes, const std::string& source) {
    Snapshot s;
    try {
        json j = json::from_cbor(bytes.begin(), bytes.end());
        const int version = j.at("modelfs_remote").get<int>();
        if (version != kRemoteFormatVersion)
            throw StoreError(ErrorKind::schema,
                             source + ": a remote catalogue of format " + std::to_string(version) +
                                 ", which this modelfs does not know; upgrade modelfs");
        s.writer = j.at("writer").get<std::string>();
        s.host = j.value("host", std::string());
        s.seq = j.at("seq").get<std::uint64_t>();
        s.pushed = j.value("pushed", std::int64_t{0});
        for (const auto& jb : j.at("blobs")) {
            auto h = hash_of<Sha256>(jb.at("sha256"));
            if (!h) bad("a blob hash is not 32 bytes");
            SnapshotBlob b;
            b.size = jb.at("size").get<std::uint64_t>();
            if (jb.contains("xxh3")) {
                b.xxh3 = hash_of<Xxh128>(jb["xxh3"]);
                if (!b.xxh3) bad("a blob's xxh3 is not 16 bytes");
            }
            b.st_hdr = jb.value("st_hdr", std::uint64_t{0});
            if (jb.contains("pieces")) {
                std::uint64_t total = 0;
                for (const auto& jp : jb["pieces"]) {
                    PieceSum p;
                    auto x = hash_of<Xxh128>(jp.at(0));
                    if (!x) bad("a piece's xxh3 is not 16 bytes");
                    p.xxh3 = *x;
                    p.length = jp.at(1).get<std::uint64_t>();
                    if (p.length == 0 || total + p.length < total) bad("a piece has a bad length");
                    total += p.length;
                    b.pieces.push_back(p);
                }
                if (total != b.size) bad("a blob's pieces do not add up to its size");
            }
            s.blobs.emplace(*h, b);
        }
        std::set<std::string> keys;
        for (const auto& jm : j.at("models")) {
            const auto& b = jm.get_binary();
            Model m = decode_model_record(
                std::string_view(reinterpret_cast<const char*>(b.data()), b.size()));
            check_snapshot_model(m, s.blobs);
            if (!keys.insert(m.key()).second) bad("model " + m.key() + " is listed twice");
            s.models.push_back(std::move(m));
        }
    } catch (const StoreError& e) {
        if (e.kind() == ErrorKind::schema) throw;
        throw StoreError(ErrorKind::corrupt,
                         source + ": not a valid remote catalogue: " + e.what());
    } catch (const json::exception& e) {
        throw StoreError(ErrorKind::corrupt,
                         source + ": not a valid remote catalogue: " + e.what());
    }
    std::sort(s.models.begin(), s.models.end(),
              [](const Model& a, const Model& b) { return a.key() < b.key(); });
    return s;
}

std::string WriterPointer::to_text() const {
    json j = {{"modelfs_remote", kRemoteFormatVersion},
              {"writer", writer},
              {"seq", seq},
              {"snapshot", snapshot.hex()},
              {"pushed", pushed},
              {"host", host}};
    return j.dump(2) + "\n";
}

WriterPointer WriterPointer::parse(std::string_view text, const std::string& source) {
    WriterPointer p;
    try {
        json j = json::parse(text);
        const int version = j.at("modelfs_remote").get<int>();
        if (version != kRemoteFormatVersion)
            throw StoreError(ErrorKind::schema,
                             source + ": a remote of format " + std::to_string(version) +
                                 ", which this modelfs does not know; upgrade modelfs");
        p.writer = j.at("writer").get<std::string>();
        p.seq = j.at("seq").get<std::uint64_t>();
        auto h = Sha256::from_hex(j.at("snapshot").get<std::string>());
        if (!h) bad("the snapshot is not a SHA-256");
        p.snapshot = *h;
        p.pushed = j.value("pushed", std::int64_t{0});
        p.host = j.value("host", std::string());
    } catch (const StoreError& e) {
        if (e.kind() == ErrorKind::schema) throw;
        throw StoreError(ErrorKind::corrupt, source + ": not a writer pointer: " + e.what());
    } catch (const json::exception& e) {
        throw StoreError(ErrorKind::corrupt, source + ": not a writer pointer: " + e.what());
    }
    return p;
}

SnapshotPlan make_snapshot(Store& s, const std::vector<std::string>& patterns,
                           const Snapshot* previous,
                           const std::function<bool(const Sha256&, const BlobRecord&)>& available) {
    auto named = [&](const Model& m) {
        if (patterns.empty()) return true;
        return std::any_of(patterns.begin(), patterns.end(),
                           [&](const std::string& p) { return model_matches(m, p); });
    };
    SnapshotPlan plan;
    std::map<std::string, Model> out;
    if (previous && !patterns.empty())
        for (const auto& m : previous->models)
            if (!named(m)) out.emplace(m.key(), m);

    Txn t = s.catalog().read();
    t.for_each_model([&](const Model& m) {
        if (!named(m)) return;
        if (!relative_path_problem(m.name).empty()) {
            plan.left_out.push_back(
                terminal_safe(m.key()) +
                ": its name breaks the naming rules (an older modelfs let it in)");
            return;
        }
        Model p = m;
        p.versions.clear();
        const std::string current = m.current_version().label;
        for (const auto& v : m.versions) {
            if (from_remote(v)) continue;
            bool ok = true;
            for (const auto& b : v.blobs()) {
                auto rec = t.get_blob(b);
                if (!rec || !available(b, *rec)) {
                    ok = false;
                    break;
                }
            }
            if (!ok) {
                plan.left_out.push_back(m.key() + " " + v.label +
                                        ": not downloaded here (`modelfs fetch " + m.key() + "@" +
                                        v.label + "` first)");
                continue;
            }
            ModelVersion pv = v;
            pv.source.clear();  // a path on this machine means nothing elsewhere
            p.versions.push_back(std::move(pv));
        }
        if (p.versions.empty()) return;
        p.current = p.versions.size() - 1;
        for (std::size_t i = 0; i < p.versions.size(); ++i)
            if (p.versions[i].label == current) p.current = i;
        if (!p.has_label(p.previous)) p.previous.clear();
        for (auto it = p.pins.begin(); it != p.pins.end();)
            it = p.has_label(it->second) ? std::next(it) : p.pins.erase(it);
        plan.versions += p.versions.size();
        out[p.key()] = std::move(p);
    });
    for (auto& [k, m] : out) {
        for (const auto& v : m.versions)
            for (const auto& b : v.blobs()) {
                if (plan.snapshot.blobs.count(b)) continue;
                SnapshotBlob sb;
                if (auto rec = t.get_blob(b)) {
                    sb.size = rec->size;
                    sb.xxh3 = rec->xxh128;
                    sb.st_hdr = rec->safetensors_header_len;
                    if (auto map = tensor_map(t, b)) sb.pieces = std::move(*map);
                } else if (previous && previous->blobs.count(b)) {
                    sb = previous->blobs.at(b);
                } else {
                    continue;  // cannot happen: a kept model's blobs were checked above
                }
                plan.snapshot.blobs.emplace(b, sb);
            }
        plan.snapshot.models.push_back(std::move(m));
    }
    return plan;
}

RemoteCatalog merge_snapshots(const std::vector<Snapshot>& snapshots) {
    RemoteCatalog cat;
    // Per key, the models of every writer, the one that switched last first.
    struct Entry {
        const Model* model;
        const Snapshot* snap;
    };
    std::map<std::string, std::vector<Entry>> by_key;
    for (const auto& s : snapshots) {
        for (const auto& m : s.models) by_key[m.key()].push_back({&m, &s});
        for (const auto& [h, b] : s.blobs) cat.blobs.emplace(h, b);
    }
    for (auto& [key, entries] : by_key) {
        std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
            if (a.model->switched_ns != b.model->switched_ns)
                return a.model->switched_ns > b.model->switched_ns;
            if (a.snap->pushed != b.snap->pushed) return a.snap->pushed > b.snap->pushed;
            return a.snap->writer < b.snap->writer;
        });
        Model m = *entries.front().model;
        for (std::size_t i = 1; i < entries.size(); ++i)
            for (const auto& v : entries[i].model->versions) merge_version(m, v, &cat.relabelled);
        cat.models.push_back(std::move(m));
    }
    return cat;
}

// ---- pull ----

PullReport apply_pull(Store& s, const TeamRemote& remote, const RemoteCatalog& cat,
                      const std::map<std::string, std::string>& pulled) {
    PullReport rep;
    rep.relabelled = cat.relabelled;
    const std::string src = remote_source(remote);
    const std::int64_t now = unix_now();
    Txn w = s.catalog().write();

    // Blobs: registered lazily; a record this store has gains the remote as a source.
    for (const auto& [h, b] : cat.blobs) {
        const std::string url = remote.object_url(remote_blob_key(h));
        // Its tensor map: a download of it starts from the pieces this store holds.
        if (!b.pieces.empty() && !tensor_map(w, h)) put_tensor_map(w, h, b.size, b.pieces);
        auto rec = w.get_blob(h);
        if (!rec) {
            BlobRecord r;
            r.size = b.size;
            r.state = BlobState::remote;
            r.xxh128 = b.xxh3;
            r.safetensors_header_len = b.st_hdr;
            r.sources.push_back({url, remote.stream});
            w.put_blob(h, r);
            ++rep.blobs_registered;
            rep.bytes_registered += b.size;
            rep.changed = true;
            continue;
        }
        if (rec->placeholder) continue;
        auto it = std::find_if(rec->sources.begin(), rec->sources.end(),
                               [&](const BlobSource& x) { return x.url == url; });
        if (it == rec->sources.end() || it->stream != remote.stream) {
            if (it == rec->sources.end())
                rec->sources.push_back({url, remote.stream});
            else
                it->stream = remote.stream;  // the remote's current setting wins
            w.put_blob(h, *rec);
            rep.changed = true;
        }
    }

    std::set<std::string> remote_keys;
    for (const auto& rm : cat.models) {
        remote_keys.insert(rm.key());
        auto local = w.get_model(rm.key());
        if (!local) {
            Model m = rm;
            for (auto& v : m.versions) v.source = src;
            m.mark_switched();
            w.put_model(m);
            ++rep.models_added;
            rep.versions_added += m.versions.size();
            rep.changed = true;
            continue;
        }
        Model m = *local;
        const std::string before = encode_model_record(m);
        // The current version follows the remote's when this store's current one came from the
        // remote and the remote switched after the last switch here (the last switch wins, as in
        // the merge): a version made current here, by an import or a `use`, stays current until
        // a writer switches again.
        const bool follows = from_remote(m.current_version()) && rm.switched_ns > m.switched_ns;
        for (const auto& v : rm.versions) {
            if (version_with_content(m, v)) continue;
            ModelVersion nv = v;
            nv.source = src;
            merge_version(m, std::move(nv), &rep.relabelled);
            ++rep.versions_added;
        }
        if (follows) {
            auto i = version_with_content(m, rm.current_version());
            if (i && *i != m.current) {
                m.make_current(*i);
                m.mark_switched();
                ++rep.current_moved;
            }
        }
        // The remote's pins for views this store has not pinned itself.
        for (const auto& [view, label] : rm.pins) {
            if (m.pins.count(view)) continue;
            auto ri = find_version(rm, label);
            if (!ri) continue;
            if (auto i = version_with_content(m, rm.versions[*ri])) {
                m.pins[view] = m.versions[*i].label;
                m.mark_switched();
            }
        }
        if (encode_model_record(m) != before) {
            w.put_model(m);
            rep.changed = true;
        }
    }

    // Models the remote no longer has: removed when every version came from this remote and no
    // registered lock holds one; anything made here stays.
    std::set<std::string> locked;
    for (const auto& l : w.locks())
        for (const auto& [model, id] : l.versions) locked.insert(model);
    std::vector<std::string> gone;
    w.for_each_model([&](const Model& m) {
        if (remote_keys.count(m.key())) return;
        bool ours = std::any_of(m.versions.begin(), m.versions.end(),
                                [&](const ModelVersion& v) { return v.source == src; });
        if (!ours) return;
        bool all_remote = std::all_of(m.versions.begin(), m.versions.end(),
                                      [&](const ModelVersion& v) { return v.source == src; });
        if (!all_remote || locked.count(m.key())) {
            rep.kept.push_back(m.key());
            return;
        }
        gone.push_back(m.key());
    });
    for (const auto& k : gone) {
        w.del_model(k);
        ++rep.models_removed;
        rep.changed = true;
    }

    TeamRemote r = remote;
    if (auto cur = w.get_meta(meta_key(remote.name)))
        r = decode_remote(remote.name, *cur);  // keep what `remote add` changed meanwhile
    if (r.pulled != pulled || rep.changed) {
        r.pulled = pulled;
        if (rep.changed) r.pulled_at = now;
        w.put_meta(meta_key(r.name), encode_remote(r));
    }
    w.commit();
    return rep;
}

std::vector<std::string> team_remote_blob_urls(const Txn& t, const Sha256& h) {
    std::vector<std::string> out;
    for (const auto& [k, v] : t.meta_with_prefix(kRemoteMetaPrefix))
        out.push_back(decode_remote(std::string_view(k).substr(kRemoteMetaPrefix.size()), v)
                          .object_url(remote_blob_key(h)));
    return out;
}

void add_remote_sources(Store& s, const TeamRemote& remote, const std::vector<Sha256>& blobs) {
    Txn w = s.catalog().write();
    bool any = false;
    for (const auto& h : blobs) {
        auto rec = w.get_blob(h);
        if (!rec || rec->placeholder) continue;
        const std::string url = remote.object_url(remote_blob_key(h));
        if (std::any_of(rec->sources.begin(), rec->sources.end(),
                        [&](const BlobSource& x) { return x.url == url; }))
            continue;
        rec->sources.push_back({url, false});
        w.put_blob(h, *rec);
        any = true;
    }
    if (any) w.commit();
}

}  // namespace modelfs
