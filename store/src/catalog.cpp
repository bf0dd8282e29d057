#include "modelfs/store/catalog.h"

#include <lmdb.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <chrono>
#include <climits>
#include <cstring>

#include <nlohmann/json.hpp>

#include "modelfs/store/errors.h"
#include "modelfs/store/escape.h"
#include "modelfs/store/model_name.h"
#include "modelfs/store/names.h"
#include "modelfs/store/secrets.h"
#include "modelfs/store/text.h"

namespace modelfs {
namespace {

using json = nlohmann::json;

// Virtual address space only: LMDB grows the file as data arrives. Every process must use the
// same value, or the smaller one sees MDB_MAP_RESIZED.
constexpr std::size_t kMapSize = std::size_t{32} << 30;

[[noreturn]] void throw_mdb(const std::string& what, int rc) {
    ErrorKind kind = rc == MDB_MAP_FULL ? ErrorKind::no_space : ErrorKind::io;
    throw StoreError(kind, "catalog: " + what + ": " + mdb_strerror(rc));
}

void check(int rc, const char* what) {
    if (rc != MDB_SUCCESS) throw_mdb(what, rc);
}

MDB_val as_val(std::string_view s) {
    return MDB_val{s.size(), const_cast<char*>(s.data())};
}
MDB_val as_val(const Sha256& h) {
    return MDB_val{h.bytes.size(), const_cast<std::uint8_t*>(h.bytes.data())};
}
std::string_view as_view(const MDB_val& v) {
    return {static_cast<const char*>(v.mv_data), v.mv_size};
}

json::binary_t bin(const std::uint8_t* p, std::size_t n) {
    return json::binary_t(std::vector<std::uint8_t>(p, p + n));
}
template <typename H>
json::binary_t bin(const H& h) {
    return bin(h.bytes.data(), h.bytes.size());
}
template <typename H>
H hash_from(const json& j, const char* field) {
    const auto& b = j.at(field).get_binary();
    H h;
    if (b.size() != h.bytes.size())
        throw StoreError(ErrorKind::corrupt, std::string("catalog: field ") + field + " has " +
                                                 std::to_string(b.size()) + " bytes");
    std::copy(b.begin(), b.end(), h.bytes.begin());
    return h;
}

std::optional<BlobState> parse_state(std::string_view s) {
    for (auto st :
         {BlobState::present, BlobState::remote, BlobState::partial, BlobState::quarantined})
        if (to_string(st) == s) return st;
    return std::nullopt;
}

std::string encode_blob(const BlobRecord& r) {
    json j = {{"size", r.size},
              {"state", to_string(r.state)},
              {"st_hdr", r.safetensors_header_len},
              {"ingested", r.ingested},
              {"accessed", r.accessed}};
    if (r.xxh128) j["xxh3"] = bin(*r.xxh128);
    if (r.autov3) j["autov3"] = bin(*r.autov3);
    if (!r.extents.empty()) {
        json ex = json::array();
        for (const auto& e : r.extents)
            ex.push_back({{"blob", bin(e.blob)}, {"off", e.offset}, {"len", e.length}});
        j["extents"] = std::move(ex);
    }
    if (!r.sources.empty()) {
        json src = json::array();
        for (const auto& s : r.sources) {
            json js = {{"url", s.url}};
            if (s.stream) js["stream"] = true;
            src.push_back(std::move(js));
        }
        j["sources"] = std::move(src);
    }
    if (r.pieces) j["pieces"] = true;
    if (r.placeholder) j["placeholder"] = true;
    if (r.keep) j["keep"] = true;
    if (r.unverified) j["unverified"] = true;
    if (r.seen)
        j["stat"] = {{"ino", r.seen->ino},
                     {"size", r.seen->size},
                     {"mtime", r.seen->mtime_ns},
                     {"ctime", r.seen->ctime_ns}};
    if (!r.fetch_error.empty()) {
        j["fetch_error"] = r.fetch_error;
        j["fetch_failed_at"] = r.fetch_failed_at;
    }
    auto v = json::to_cbor(j);
    return std::string(v.begin(), v.end());
}

BlobRecord decode_blob(std::string_view data) {
    json j = json::from_cbor(data.begin(), data.end());
    BlobRecord r;
    r.size = j.at("size").get<std::uint64_t>();
    auto st = parse_state(j.at("state").get<std::string>());
    if (!st) throw StoreError(ErrorKind::corrupt, "catalog: unknown blob state");
    r.state = *st;
    r.safetensors_header_len = j.value("st_hdr", std::uint64_t{0});
    r.ingested = j.value("ingested", std::int64_t{0});
    r.accessed = j.value("accessed", std::int64_t{0});
    if (j.contains("xxh3")) r.xxh128 = hash_from<Xxh128>(j, "xxh3");
    if (j.contains("autov3")) r.autov3 = hash_from<Sha256>(j, "autov3");
    if (j.contains("extents"))
        for (const auto& e : j["extents"])
            r.extents.push_back({hash_from<Sha256>(e, "blob"), e.at("off").get<std::uint64_t>(),
                                 e.at("len").get<std::uint64_t>()});
    if (j.contains("sources"))
        for (const auto& s : j["sources"])
            r.sources.push_back({s.at("url").get<std::string>(), s.value("stream", false)});
    r.pieces = j.value("pieces", false);
    r.placeholder = j.value("placeholder", false);
    r.keep = j.value("keep", false);
    r.unverified = j.value("unverified", false);
    if (j.contains("stat") && j["stat"].is_object()) {
        const json& s = j["stat"];
        r.seen = BlobStat{s.value("ino", std::uint64_t{0}), s.value("size", std::uint64_t{0}),
                          s.value("mtime", std::int64_t{0}), s.value("ctime", std::int64_t{0})};
    }
    r.fetch_error = j.value("fetch_error", std::string());
    r.fetch_failed_at = j.value("fetch_failed_at", std::int64_t{0});
    return r;
}

std::string encode_model(const Model& m) {
    json versions = json::array();
    for (const auto& v : m.versions) {
        json jv = {{"label", v.label}, {"added", v.added}, {"size", v.size}};
        if (!v.source.empty()) jv["source"] = v.source;
        if (!v.note.empty()) jv["note"] = v.note;
        if (v.blob) {
            jv["blob"] = bin(*v.blob);
            jv["ext"] = v.ext;
        } else {
            json tree = json::array();
            for (const auto& t : v.tree)
                tree.push_back({{"path", t.path}, {"blob", bin(t.blob)}, {"size", t.size}});
            jv["tree"] = std::move(tree);
        }
        if (!v.sidecars.empty()) {
            json sc = json::array();
            for (const auto& c : v.sidecars)
                sc.push_back({{"suffix", c.suffix}, {"blob", bin(c.blob)}, {"size", c.size}});
            jv["sidecars"] = std::move(sc);
        }
        if (v.mtime) jv["mtime"] = v.mtime;
        if (v.mode) jv["mode"] = v.mode;
        if (v.mtime_exact) jv["mtime_exact"] = true;
        versions.push_back(std::move(jv));
    }
    json j = {{"category", to_string(m.category)},
              {"name", m.name},
              {"current", m.current},
              {"versions", std::move(versions)}};
    if (!m.previous.empty()) j["previous"] = m.previous;
    if (!m.pins.empty()) j["pins"] = m.pins;
    if (m.switched_ns) j["switched"] = m.switched_ns;
    auto v = json::to_cbor(j);
    return std::string(v.begin(), v.end());
}

Model decode_model(std::string_view data) {
    json j = json::from_cbor(data.begin(), data.end());
    Model m;
    auto cat = parse_category(j.at("category").get<std::string>());
    if (!cat) throw StoreError(ErrorKind::corrupt, "catalog: unknown category in model record");
    m.category = *cat;
    m.name = j.at("name").get<std::string>();
    m.current = j.at("current").get<std::size_t>();
    for (const auto& jv : j.at("versions")) {
        ModelVersion v;
        v.label = jv.at("label").get<std::string>();
        v.added = jv.value("added", std::int64_t{0});
        v.size = jv.value("size", std::uint64_t{0});
        v.source = jv.value("source", std::string());
        v.note = jv.value("note", std::string());
        if (jv.contains("blob")) {
            v.blob = hash_from<Sha256>(jv, "blob");
            v.ext = jv.value("ext", std::string());
        } else {
            for (const auto& t : jv.at("tree"))
                v.tree.push_back({t.at("path").get<std::string>(), hash_from<Sha256>(t, "blob"),
                                  t.at("size").get<std::uint64_t>()});
        }
        if (jv.contains("sidecars"))
            for (const auto& c : jv["sidecars"])
                v.sidecars.push_back({c.at("suffix").get<std::string>(),
                                      hash_from<Sha256>(c, "blob"),
                                      c.at("size").get<std::uint64_t>()});
        v.mtime = jv.value("mtime", std::int64_t{0});
        v.mode = jv.value("mode", std::uint32_t{0});
        v.mtime_exact = jv.value("mtime_exact", false);
        m.versions.push_back(std::move(v));
    }
    if (m.versions.empty() || m.current >= m.versions.size())
        throw StoreError(ErrorKind::corrupt,
                         "catalog: model " + m.name + " has no current version");
    m.previous = j.value("previous", std::string());
    if (j.contains("pins"))
        for (const auto& [view, label] : j["pins"].items())
            m.pins.emplace(view, label.get<std::string>());
    m.switched_ns = j.value("switched", std::int64_t{0});
    return m;
}

}  // namespace

std::string encode_model_record(const Model& m) {
    return encode_model(m);
}

Model decode_model_record(std::string_view data) {
    try {
        return decode_model(data);
    } catch (const json::exception& e) {
        throw StoreError(ErrorKind::corrupt, std::string("not a model record: ") + e.what());
    }
}

std::string_view to_string(BlobState s) {
    switch (s) {
        case BlobState::present:
            return "present";
        case BlobState::remote:
            return "remote";
        case BlobState::partial:
            return "partial";
        case BlobState::quarantined:
            return "quarantined";
    }
    return "?";
}

std::vector<Sha256> ModelVersion::blobs() const {
    std::vector<Sha256> out;
    if (blob) out.push_back(*blob);
    for (const auto& t : tree) out.push_back(t.blob);
    for (const auto& c : sidecars) out.push_back(c.blob);
    return out;
}

const Sidecar* ModelVersion::sidecar(std::string_view suffix) const {
    for (const auto& c : sidecars)
        if (c.suffix == suffix) return &c;
    return nullptr;
}

bool ModelVersion::same_content(const ModelVersion& o) const {
    if (blob || o.blob) return blob == o.blob;
    if (tree.size() != o.tree.size()) return false;
    for (std::size_t i = 0; i < tree.size(); ++i)
        if (tree[i].path != o.tree[i].path || tree[i].blob != o.tree[i].blob) return false;
    return true;
}

Sha256 ModelVersion::content_id() const {
    if (blob) return *blob;
    std::string text;
    for (const auto& t : tree) {
        text += t.path;
        text.push_back('\0');
        text += t.blob.hex();
        text.push_back('\n');
    }
    return sha256_of(text);
}

void Model::make_current(std::size_t i) {
    if (i == current) return;
    previous = versions.at(current).label;
    current = i;
    mark_switched();
}

bool Model::has_label(std::string_view label) const {
    return std::any_of(versions.begin(), versions.end(),
                       [&](const ModelVersion& v) { return v.label == label; });
}

std::string Model::next_label() const {
    std::uint64_t n = versions.size() + 1;
    for (const auto& v : versions) {
        std::string_view l = v.label;
        if (l.size() < 2 || l.size() > 19 || l[0] != 'v') continue;
        std::uint64_t k = 0;
        auto [end, ec] = std::from_chars(l.data() + 1, l.data() + l.size(), k);
        if (ec == std::errc() && end == l.data() + l.size() && k >= n) n = k + 1;
    }
    while (has_label("v" + std::to_string(n))) ++n;
    return "v" + std::to_string(n);
}

AddedVersion Model::add_version(ModelVersion v, const std::optional<std::string>& label,
                                bool make_it_current) {
    // A file's extension is part of its name (model_name.h): foo.pt is never a version of
    // foo.safetensors.
    if (v.blob && !v.ext.empty() && !name.ends_with(v.ext))
        throw StoreError(ErrorKind::conflict,
                         key() + " cannot take a '" + terminal_safe(v.ext) +
                             "' file as a version: a file's extension is part of its model's "
                             "name; name it '" +
                             terminal_safe(single_file_name(name, v.ext).name) + "'");
    auto settle = [&](std::size_t i) {
        if (make_it_current) make_current(i);
        return AddedVersion{i, false};
    };
    if (label) {
        for (std::size_t i = 0; i < versions.size(); ++i) {
            if (versions[i].label != *label) continue;
            if (versions[i].same_content(v)) return settle(i);
            throw StoreError(ErrorKind::conflict,
                             key() + " already has a version labelled '" + *label +
                                 "' with other content; choose another version label");
        }
        v.label = *label;
    } else {
        for (std::size_t i = 0; i < versions.size(); ++i)
            if (versions[i].same_content(v)) return settle(i);
        v.label = next_label();
    }
    versions.push_back(std::move(v));
    const std::size_t i = versions.size() - 1;
    if (i == 0)
        current = 0;
    else if (make_it_current)
        make_current(i);
    return AddedVersion{i, true};
}

void Model::mark_switched() {
    std::int64_t shown = switched_ns;
    for (auto& v : versions) {
        shown = std::max(shown, v.shown_mtime() * 1'000'000'000);
        v.mtime_exact = false;  // a switch is newer than any time set before it
    }
    const std::int64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                                 std::chrono::system_clock::now().time_since_epoch())
                                 .count();
    switched_ns = std::max(now, shown + 1);
}

std::int64_t Model::shown_mtime_ns(const ModelVersion& v) const {
    if (v.mtime_exact) return v.shown_mtime() * 1'000'000'000;
    return std::max(v.shown_mtime() * 1'000'000'000, switched_ns);
}

std::size_t Model::shown_in(std::string_view view) const {
    if (auto it = pins.find(std::string(view)); it != pins.end())
        for (std::size_t i = 0; i < versions.size(); ++i)
            if (versions[i].label == it->second) return i;
    return current;
}

std::optional<std::size_t> find_version(const Model& m, std::string_view wanted,
                                        std::string* error) {
    for (std::size_t i = 0; i < m.versions.size(); ++i)
        if (m.versions[i].label == wanted) return i;
    const std::string lower = modelfs::lower(wanted);
    if (lower.size() >= 6 && lower.size() <= 64 && is_hex(lower)) {
        std::vector<std::size_t> hits;
        for (std::size_t i = 0; i < m.versions.size(); ++i)
            if (m.versions[i].content_id().hex().compare(0, lower.size(), lower) == 0)
                hits.push_back(i);
        if (hits.size() == 1) return hits.front();
        if (hits.size() > 1) {
            if (error) {
                *error = "hash prefix '" + std::string(wanted) + "' matches " +
                         std::to_string(hits.size()) + " versions of " + m.key() +
                         "; give more digits";
            }
            return std::nullopt;
        }
    }
    if (error) {
        std::string labels;
        for (const auto& v : m.versions) labels += (labels.empty() ? "" : ", ") + v.label;
        *error = "no version '" + std::string(wanted) + "' of " + m.key() + "; it has " + labels;
    }
    return std::nullopt;
}

void check_version_label(std::string_view label) {
    auto bad = [&](const std::string& why) {
        throw StoreError(ErrorKind::bad_input,
                         "version label '" + terminal_safe(label) + "' " + why +
                             " (labels are free text like v1.2, fp16 or 2026-12-03)");
    };
    if (label.empty()) bad("is empty");
    if (label.size() > 100) bad("is longer than 100 bytes");
    if (label.find('/') != std::string_view::npos) bad("contains '/'");
    if (label.find('@') != std::string_view::npos) bad("contains '@'");
    // A label becomes part of a name in the views ("name@label"): the same rule as names.
    if (auto why = relative_path_problem(label); !why.empty()) bad("is not allowed: " + why);
}

std::vector<Model> split_by_extension(const Model& m) {
    if (m.category == Category::file) return {m};
    // Versions grouped by the name they belong to now, in order of first appearance.
    std::vector<std::pair<std::string, std::vector<std::size_t>>> groups;
    for (std::size_t i = 0; i < m.versions.size(); ++i) {
        const ModelVersion& v = m.versions[i];
        // Appended as spelled, without single_file_name's "already ends with it": old views
        // showed exactly name + ext, so the file keeps its path.
        std::string name = v.is_tree() ? m.name : m.name + v.ext;
        auto g = std::find_if(groups.begin(), groups.end(),
                              [&](const auto& e) { return e.first == name; });
        if (g == groups.end()) {
            groups.emplace_back(std::move(name), std::vector<std::size_t>{});
            g = groups.end() - 1;
        }
        g->second.push_back(i);
    }
    std::vector<Model> out;
    for (const auto& [name, idx] : groups) {
        Model n;
        n.category = m.category;
        n.name = name;
        n.switched_ns = m.switched_ns;
        n.current = idx.size() - 1;
        for (std::size_t k = 0; k < idx.size(); ++k) {
            n.versions.push_back(m.versions[idx[k]]);
            if (idx[k] == m.current) n.current = k;
        }
        if (n.has_label(m.previous)) n.previous = m.previous;
        for (const auto& [view, label] : m.pins)
            if (n.has_label(label)) n.pins.emplace(view, label);
        out.push_back(std::move(n));
    }
    return out;
}

std::string model_key(Category c, std::string_view name) {
    return std::string(to_string(c)) + "/" + std::string(name);
}
std::string Model::key() const {
    return model_key(category, name);
}
std::string_view Model::stem() const {
    return name_stem(name, current_version().ext);
}

struct Catalog::Env {
    struct Close {
        void operator()(MDB_env* e) const { mdb_env_close(e); }
    };
    std::unique_ptr<MDB_env, Close> env;
    MDB_dbi meta = 0, blobs = 0, models = 0, tensors = 0;
    std::filesystem::path dir;
    std::uint32_t schema = 0;
};

struct Txn::Impl {
    std::shared_ptr<Catalog::Env> env;
    MDB_txn* txn = nullptr;
    bool write = false;

    ~Impl() {
        if (txn) mdb_txn_abort(txn);
    }
};

Txn::Txn(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Txn::~Txn() = default;
Txn::Txn(Txn&&) noexcept = default;
Txn& Txn::operator=(Txn&&) noexcept = default;

std::optional<BlobRecord> Txn::get_blob(const Sha256& h) const {
    MDB_val k = as_val(h), v;
    int rc = mdb_get(impl_->txn, impl_->env->blobs, &k, &v);
    if (rc == MDB_NOTFOUND) return std::nullopt;
    check(rc, "reading blob record");
    return decode_blob(as_view(v));
}

std::optional<Model> Txn::get_model(std::string_view key) const {
    MDB_val k = as_val(key), v;
    int rc = mdb_get(impl_->txn, impl_->env->models, &k, &v);
    if (rc == MDB_NOTFOUND) return std::nullopt;
    check(rc, "reading model record");
    return decode_model(as_view(v));
}

namespace {
class Cursor {
  public:
    Cursor(MDB_txn* txn, MDB_dbi dbi) { check(mdb_cursor_open(txn, dbi, &c_), "opening cursor"); }
    ~Cursor() { mdb_cursor_close(c_); }
    Cursor(const Cursor&) = delete;
    Cursor& operator=(const Cursor&) = delete;
    // Returns false at the end.
    bool get(MDB_val& k, MDB_val& v, MDB_cursor_op op) {
        int rc = mdb_cursor_get(c_, &k, &v, op);
        if (rc == MDB_NOTFOUND) return false;
        check(rc, "walking the catalog");
        return true;
    }

  private:
    MDB_cursor* c_ = nullptr;
};
}  // namespace

void Txn::for_each_blob(const std::function<void(const Sha256&, const BlobRecord&)>& fn) const {
    Cursor c(impl_->txn, impl_->env->blobs);
    MDB_val k, v;
    for (bool ok = c.get(k, v, MDB_FIRST); ok; ok = c.get(k, v, MDB_NEXT)) {
        if (k.mv_size != 32) continue;
        Sha256 h;
        std::memcpy(h.bytes.data(), k.mv_data, 32);
        fn(h, decode_blob(as_view(v)));
    }
}

void Txn::for_each_model(const std::function<void(const Model&)>& fn) const {
    Cursor c(impl_->txn, impl_->env->models);
    MDB_val k, v;
    for (bool ok = c.get(k, v, MDB_FIRST); ok; ok = c.get(k, v, MDB_NEXT))
        fn(decode_model(as_view(v)));
}

std::vector<Sha256> Txn::blobs_with_prefix(std::string_view hex_prefix, std::size_t limit) const {
    std::vector<Sha256> out;
    if (!is_hex(hex_prefix) || hex_prefix.size() > 64) return out;
    const std::string lower = modelfs::lower(hex_prefix);
    // Seek to the first key >= the prefix padded with zero nibbles.
    std::string padded = lower + std::string(64 - lower.size(), '0');
    Sha256 start = *Sha256::from_hex(padded);
    MDB_val k = as_val(start), v;
    Cursor c(impl_->txn, impl_->env->blobs);
    for (bool ok = c.get(k, v, MDB_SET_RANGE); ok && out.size() < limit;
         ok = c.get(k, v, MDB_NEXT)) {
        if (k.mv_size != 32) continue;
        Sha256 h;
        std::memcpy(h.bytes.data(), k.mv_data, 32);
        if (h.hex().compare(0, lower.size(), lower) != 0) break;
        out.push_back(h);
    }
    return out;
}

void Txn::put_blob(const Sha256& h, const BlobRecord& r) {
    std::string data = encode_blob(r);
    MDB_val k = as_val(h), v = as_val(data);
    check(mdb_put(impl_->txn, impl_->env->blobs, &k, &v, 0), "writing blob record");
}

void Txn::del_blob(const Sha256& h) {
    MDB_val k = as_val(h);
    int rc = mdb_del(impl_->txn, impl_->env->blobs, &k, nullptr);
    if (rc != MDB_NOTFOUND) check(rc, "deleting blob record");
}

namespace {
// A tensors key: the piece's XXH3-128 (canonical bytes) then its length, u64 big-endian, so that
// keys sort by hash. The value: the blob's 32 bytes, then the offset, u64 big-endian.
std::array<std::uint8_t, 24> tensor_key(const Xxh128& x, std::uint64_t length) {
    std::array<std::uint8_t, 24> k{};
    std::copy(x.bytes.begin(), x.bytes.end(), k.begin());
    for (int i = 0; i < 8; ++i) k[16 + i] = static_cast<std::uint8_t>(length >> (56 - 8 * i));
    return k;
}
std::uint64_t be64(const std::uint8_t* p) {
    std::uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v = (v << 8) | p[i];
    return v;
}
}  // namespace

std::optional<TensorPlace> Txn::get_tensor(const Xxh128& x, std::uint64_t length) const {
    auto key = tensor_key(x, length);
    MDB_val k{key.size(), key.data()}, v;
    int rc = mdb_get(impl_->txn, impl_->env->tensors, &k, &v);
    if (rc == MDB_NOTFOUND) return std::nullopt;
    check(rc, "reading the tensors index");
    if (v.mv_size != 40) return std::nullopt;
    const auto* p = static_cast<const std::uint8_t*>(v.mv_data);
    TensorPlace t;
    std::memcpy(t.blob.bytes.data(), p, 32);
    t.offset = be64(p + 32);
    return t;
}

void Txn::put_tensor(const Xxh128& x, std::uint64_t length, const TensorPlace& t) {
    auto key = tensor_key(x, length);
    std::array<std::uint8_t, 40> val{};
    std::copy(t.blob.bytes.begin(), t.blob.bytes.end(), val.begin());
    for (int i = 0; i < 8; ++i) val[32 + i] = static_cast<std::uint8_t>(t.offset >> (56 - 8 * i));
    MDB_val k{key.size(), key.data()}, v{val.size(), val.data()};
    check(mdb_put(impl_->txn, impl_->env->tensors, &k, &v, 0), "writing the tensors index");
}

void Txn::del_tensor(const Xxh128& x, std::uint64_t length) {
    auto key = tensor_key(x, length);
    MDB_val k{key.size(), key.data()};
    int rc = mdb_del(impl_->txn, impl_->env->tensors, &k, nullptr);
    if (rc != MDB_NOTFOUND) check(rc, "deleting from the tensors index");
}

void Txn::for_each_tensor(
    const std::function<void(const Xxh128&, std::uint64_t, const TensorPlace&)>& fn) const {
    Cursor c(impl_->txn, impl_->env->tensors);
    MDB_val k, v;
    for (bool ok = c.get(k, v, MDB_FIRST); ok; ok = c.get(k, v, MDB_NEXT)) {
        if (k.mv_size != 24 || v.mv_size != 40) continue;
        const auto* kp = static_cast<const std::uint8_t*>(k.mv_data);
        const auto* vp = static_cast<const std::uint8_t*>(v.mv_data);
        Xxh128 x;
        std::memcpy(x.bytes.data(), kp, 16);
        TensorPlace t;
        std::memcpy(t.blob.bytes.data(), vp, 32);
        t.offset = be64(vp + 32);
        fn(x, be64(kp + 16), t);
    }
}

void Txn::put_model(const Model& m) {
    std::string key = m.key(), data = encode_model(m);
    MDB_val k = as_val(key), v = as_val(data);
    if (k.mv_size > 511)
        throw StoreError(ErrorKind::bad_input, "model name too long for the catalog: " + key);
    check(mdb_put(impl_->txn, impl_->env->models, &k, &v, 0), "writing model record");
    touch_category(m.category);
}

namespace {
std::string changed_key(Category c) {
    return "changed/" + std::string(to_string(c));
}
}  // namespace

void Txn::touch_category(Category c) {
    auto now = std::chrono::system_clock::now().time_since_epoch();
    std::int64_t ns = std::chrono::duration_cast<std::chrono::nanoseconds>(now).count();
    // Strictly increasing, even when two commits fall in one clock tick.
    ns = std::max(ns, category_changed_ns(c) + 1);
    std::string key = changed_key(c), val = std::to_string(ns);
    MDB_val k = as_val(key), v = as_val(val);
    check(mdb_put(impl_->txn, impl_->env->meta, &k, &v, 0), "writing a change time");
}

std::int64_t Txn::category_changed_ns(Category c) const {
    std::string key = changed_key(c);
    MDB_val k = as_val(key), v;
    int rc = mdb_get(impl_->txn, impl_->env->meta, &k, &v);
    if (rc == MDB_NOTFOUND) return 0;
    check(rc, "reading a change time");
    std::int64_t ns = 0;
    std::string_view text = as_view(v);
    std::from_chars(text.data(), text.data() + text.size(), ns);
    return ns;
}

namespace {
std::string lock_key(std::string_view id) {
    return "lock/" + std::string(id);
}

std::string encode_lock(const LockHold& l) {
    json versions = json::array();
    for (const auto& [model, id] : l.versions)
        versions.push_back({{"model", model}, {"id", bin(id)}});
    json j = {{"name", l.name}, {"registered", l.registered}, {"versions", std::move(versions)}};
    auto v = json::to_cbor(j);
    return std::string(v.begin(), v.end());
}

LockHold decode_lock(std::string_view id, std::string_view data) {
    json j = json::from_cbor(data.begin(), data.end());
    LockHold l;
    l.id = std::string(id);
    l.name = j.value("name", std::string());
    l.registered = j.value("registered", std::int64_t{0});
    for (const auto& v : j.at("versions"))
        l.versions.emplace_back(v.at("model").get<std::string>(), hash_from<Sha256>(v, "id"));
    return l;
}
}  // namespace

std::optional<LockHold> Txn::get_lock(std::string_view id) const {
    std::string key = lock_key(id);
    MDB_val k = as_val(key), v;
    int rc = mdb_get(impl_->txn, impl_->env->meta, &k, &v);
    if (rc == MDB_NOTFOUND) return std::nullopt;
    check(rc, "reading a lock record");
    return decode_lock(id, as_view(v));
}

std::vector<LockHold> Txn::locks() const {
    std::vector<LockHold> out;
    const std::string prefix = "lock/";
    MDB_val k = as_val(prefix), v;
    Cursor c(impl_->txn, impl_->env->meta);
    for (bool ok = c.get(k, v, MDB_SET_RANGE); ok; ok = c.get(k, v, MDB_NEXT)) {
        std::string_view key = as_view(k);
        if (key.substr(0, prefix.size()) != prefix) break;
        out.push_back(decode_lock(key.substr(prefix.size()), as_view(v)));
    }
    return out;
}

void Txn::put_lock(const LockHold& l) {
    std::string key = lock_key(l.id), data = encode_lock(l);
    MDB_val k = as_val(key), v = as_val(data);
    check(mdb_put(impl_->txn, impl_->env->meta, &k, &v, 0), "writing a lock record");
}

void Txn::del_lock(std::string_view id) {
    std::string key = lock_key(id);
    MDB_val k = as_val(key);
    int rc = mdb_del(impl_->txn, impl_->env->meta, &k, nullptr);
    if (rc != MDB_NOTFOUND) check(rc, "deleting a lock record");
}

std::optional<std::string> Txn::get_meta(std::string_view key) const {
    MDB_val k = as_val(key), v;
    int rc = mdb_get(impl_->txn, impl_->env->meta, &k, &v);
    if (rc == MDB_NOTFOUND) return std::nullopt;
    check(rc, "reading a meta record");
    return std::string(as_view(v));
}

std::vector<std::pair<std::string, std::string>> Txn::meta_with_prefix(
    std::string_view prefix) const {
    std::vector<std::pair<std::string, std::string>> out;
    MDB_val k = as_val(prefix), v;
    Cursor c(impl_->txn, impl_->env->meta);
    for (bool ok = c.get(k, v, MDB_SET_RANGE); ok; ok = c.get(k, v, MDB_NEXT)) {
        std::string_view key = as_view(k);
        if (key.substr(0, prefix.size()) != prefix) break;
        out.emplace_back(std::string(key), std::string(as_view(v)));
    }
    return out;
}

void Txn::put_meta(std::string_view key, std::string_view value) {
    if (key.empty() || key.size() > 511)
        throw StoreError(ErrorKind::bad_input,
                         "catalog: meta key of " + std::to_string(key.size()) + " bytes");
    MDB_val k = as_val(key), v = as_val(value);
    check(mdb_put(impl_->txn, impl_->env->meta, &k, &v, 0), "writing a meta record");
}

void Txn::del_meta(std::string_view key) {
    MDB_val k = as_val(key);
    int rc = mdb_del(impl_->txn, impl_->env->meta, &k, nullptr);
    if (rc != MDB_NOTFOUND) check(rc, "deleting a meta record");
}

void Txn::del_model(std::string_view key) {
    MDB_val k = as_val(key);
    int rc = mdb_del(impl_->txn, impl_->env->models, &k, nullptr);
    if (rc != MDB_NOTFOUND) check(rc, "deleting model record");
    auto slash = key.find('/');
    if (auto c = parse_category(key.substr(0, slash == std::string_view::npos ? 0 : slash)))
        touch_category(*c);
}

void Txn::commit() {
    MDB_txn* t = std::exchange(impl_->txn, nullptr);
    check(mdb_txn_commit(t), "committing");
}

Catalog::Catalog(std::shared_ptr<Env> env) : env_(std::move(env)) {}
Catalog::~Catalog() = default;
Catalog::Catalog(Catalog&&) noexcept = default;
Catalog& Catalog::operator=(Catalog&&) noexcept = default;

namespace {
MDB_txn* begin(MDB_env* env, unsigned flags) {
    MDB_txn* txn = nullptr;
    int rc = mdb_txn_begin(env, nullptr, flags, &txn);
    if (rc == MDB_MAP_RESIZED) {
        // Another process grew the map; adopt its size and try again.
        check(mdb_env_set_mapsize(env, 0), "adopting the new map size");
        rc = mdb_txn_begin(env, nullptr, flags, &txn);
    }
    check(rc, "starting a transaction");
    return txn;
}
}  // namespace

void Catalog::upgrade_model_names(Txn& w) {
    std::vector<Model> old;
    w.for_each_model([&](const Model& m) { old.push_back(m); });
    // Old key -> the new models made from it, to re-point registered locks.
    std::map<std::string, std::vector<Model>> renamed;
    for (const Model& m : old) {
        std::vector<Model> parts = split_by_extension(m);
        if (parts.size() == 1 && parts[0].name == m.name) continue;
        w.del_model(m.key());
        renamed.emplace(m.key(), parts);
    }
    for (auto& [from, parts] : renamed)
        for (Model& n : parts) {
            // Two old names shown at one path ("x" + ".fooocus.patch", "x.fooocus" + ".patch")
            // already collided in every view; they become one model.
            if (auto there = w.get_model(n.key())) {
                for (const auto& v : n.versions) there->add_version(v, std::nullopt, false);
                w.put_model(*there);
            } else {
                w.put_model(n);
            }
        }
    for (LockHold l : w.locks()) {
        bool changed = false;
        for (auto& [key, id] : l.versions) {
            auto it = renamed.find(key);
            if (it == renamed.end()) continue;
            const Model* to = &it->second.front();
            for (const Model& n : it->second)
                for (const auto& v : n.versions)
                    if (v.content_id() == id) to = &n;
            key = to->key();
            changed = true;
        }
        if (changed) w.put_lock(l);
    }
}

Catalog Catalog::open(const std::filesystem::path& dir, bool create) {
    std::error_code ec;
    if (!std::filesystem::exists(dir / "data.mdb", ec) && !create)
        throw StoreError(ErrorKind::no_store, "no catalog in " + dir.string());
    if (create) std::filesystem::create_directories(dir, ec);

    auto env = std::make_shared<Env>();
    env->dir = dir;
    MDB_env* raw = nullptr;
    check(mdb_env_create(&raw), "creating the environment");
    env->env.reset(raw);
    check(mdb_env_set_maxdbs(raw, 8), "setting maxdbs");
    check(mdb_env_set_mapsize(raw, kMapSize), "setting the map size");
    check(mdb_env_set_maxreaders(raw, 1024), "setting maxreaders");
    // MDB_NOTLS: read transactions are not tied to a thread (the daemon hands them between
    // workers).
    // The catalog holds download URLs, which can carry credentials (secrets.h).
    const std::filesystem::path root = dir.parent_path();
    int rc = mdb_env_open(raw, dir.c_str(), MDB_NOTLS, secret_file_mode(root));
    if (rc != MDB_SUCCESS) {
        ErrorKind kind = (rc == EACCES || rc == ENOENT) ? ErrorKind::no_store : ErrorKind::io;
        throw StoreError(kind,
                         "cannot open the catalog in " + dir.string() + ": " + mdb_strerror(rc));
    }
    // A catalog an older modelfs made 0644: tightened by whoever owns it, the first time it opens
    // it (another user's process cannot, and needs not).
    for (const char* f : {"data.mdb", "lock.mdb"}) tighten_secret_file(dir / f, root);
    int dead = 0;
    mdb_reader_check(raw, &dead);  // reclaim reader slots of crashed processes

    MDB_txn* txn = begin(raw, create ? 0 : MDB_RDONLY);
    Txn guard([&] {
        auto impl = std::make_unique<Txn::Impl>();
        impl->env = env;
        impl->txn = txn;
        impl->write = create;
        return impl;
    }());
    unsigned dbflags = create ? MDB_CREATE : 0;
    auto open_dbi = [&](const char* name, MDB_dbi* dbi) {
        int r = mdb_dbi_open(txn, name, dbflags, dbi);
        if (r == MDB_NOTFOUND)
            throw StoreError(ErrorKind::no_store,
                             "catalog in " + dir.string() + " has no '" + name + "' database");
        check(r, "opening a database");
    };
    open_dbi("meta", &env->meta);
    open_dbi("blobs", &env->blobs);
    open_dbi("models", &env->models);
    // Since schema 5; an older catalog gets it in the upgrade below.
    bool tensors_missing = false;
    if (int r = mdb_dbi_open(txn, "tensors", dbflags, &env->tensors); r == MDB_NOTFOUND)
        tensors_missing = true;
    else
        check(r, "opening a database");

    MDB_val k = as_val(std::string_view("schema")), v;
    rc = mdb_get(txn, env->meta, &k, &v);
    if (rc == MDB_NOTFOUND) {
        if (!create)
            throw StoreError(ErrorKind::no_store, "catalog in " + dir.string() + " has no schema");
        std::string s = std::to_string(kSchemaVersion);
        MDB_val sv = as_val(s);
        check(mdb_put(txn, env->meta, &k, &sv, 0), "writing the schema version");
        env->schema = kSchemaVersion;
    } else {
        check(rc, "reading the schema version");
        std::string text(as_view(v));
        unsigned long parsed = 0;
        auto [end, err] = std::from_chars(text.data(), text.data() + text.size(), parsed);
        if (err != std::errc() || end != text.data() + text.size() || parsed > UINT32_MAX)
            throw StoreError(ErrorKind::corrupt, "catalog in " + dir.string() +
                                                     " has an unreadable schema version '" +
                                                     text.substr(0, 32) + "'");
        env->schema = static_cast<std::uint32_t>(parsed);
    }
    if (env->schema > kSchemaVersion)
        throw StoreError(ErrorKind::schema,
                         "the store at " + dir.parent_path().string() + " uses catalog schema " +
                             std::to_string(env->schema) +
                             ", newer than this modelfs understands (" +
                             std::to_string(kSchemaVersion) +
                             "); upgrade modelfs to use it (nothing was changed)");
    if (tensors_missing && env->schema >= 5)
        throw StoreError(ErrorKind::corrupt,
                         "catalog in " + dir.string() + " has no 'tensors' database");
    guard.commit();
    if (env->schema < kSchemaVersion) {
        // Older schemas are subsets of this one but for single-file model names, which gain their
        // extension (split_by_extension); the new number makes an older modelfs (which would drop
        // fields it does not know) refuse the store. One write transaction: a crash leaves the
        // old schema and the next open upgrades again.
        Txn w([&] {
            auto impl = std::make_unique<Txn::Impl>();
            impl->env = env;
            impl->txn = begin(raw, 0);
            impl->write = true;
            return impl;
        }());
        if (env->schema < 4) upgrade_model_names(w);
        if (tensors_missing)
            check(mdb_dbi_open(w.impl_->txn, "tensors", MDB_CREATE, &env->tensors),
                  "creating the tensors database");
        std::string s = std::to_string(kSchemaVersion);
        MDB_val sk = as_val(std::string_view("schema")), sv = as_val(s);
        check(mdb_put(w.impl_->txn, env->meta, &sk, &sv, 0), "upgrading the schema version");
        w.commit();
        env->schema = kSchemaVersion;
    }
    return Catalog(std::move(env));
}

Txn Catalog::read() const {
    auto impl = std::make_unique<Txn::Impl>();
    impl->env = env_;
    impl->txn = begin(env_->env.get(), MDB_RDONLY);
    return Txn(std::move(impl));
}

Txn Catalog::write() {
    auto impl = std::make_unique<Txn::Impl>();
    impl->env = env_;
    impl->txn = begin(env_->env.get(), 0);
    impl->write = true;
    return Txn(std::move(impl));
}

std::uint32_t Catalog::schema_version() const {
    return env_->schema;
}

std::uint64_t Txn::id() const {
    return mdb_txn_id(impl_->txn);
}

std::uint64_t Catalog::last_txn_id() const {
    MDB_envinfo info;
    check(mdb_env_info(env_->env.get(), &info), "reading the environment info");
    return info.me_last_txnid;
}
const std::filesystem::path& Catalog::dir() const {
    return env_->dir;
}

}  // namespace modelfs
