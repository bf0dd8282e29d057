#include "modelfs/store/tensor_map.h"

#include <fcntl.h>
#include <unistd.h>

#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "modelfs/store/errors.h"
#include "modelfs/store/store.h"

namespace modelfs {

using json = nlohmann::json;

std::string encode_tensor_map(const std::vector<PieceSum>& map) {
    json a = json::array();
    for (const auto& p : map)
        a.push_back(
            {json::binary(std::vector<std::uint8_t>(p.xxh3.bytes.begin(), p.xxh3.bytes.end())),
             p.length});
    auto v = json::to_cbor(a);
    return std::string(v.begin(), v.end());
}

std::vector<PieceSum> decode_tensor_map(std::string_view bytes) {
    auto bad = [](const std::string& why) {
        return StoreError(ErrorKind::corrupt, "tensor map: " + why);
    };
    json a;
    try {
        // nlohmann throws for some bytes even when asked not to (an "excessive" array size).
        a = json::from_cbor(bytes.begin(), bytes.end(), true, false);
    } catch (const json::exception& e) {
        throw bad(e.what());
    }
    if (a.is_discarded()) throw bad("not CBOR");
    if (!a.is_array()) throw bad("not an array");
    std::vector<PieceSum> out;
    out.reserve(a.size());
    for (const auto& e : a) {
        if (!e.is_array() || e.size() != 2 || !e[0].is_binary() || e[0].get_binary().size() != 16 ||
            !e[1].is_number_unsigned())
            throw bad("an entry is not [bytes(16), length]");
        PieceSum p;
        std::copy(e[0].get_binary().begin(), e[0].get_binary().end(), p.xxh3.bytes.begin());
        p.length = e[1].get<std::uint64_t>();
        if (p.length == 0) throw bad("a piece of length 0");
        out.push_back(p);
    }
    return out;
}

std::string tensor_map_key(const Sha256& h) {
    return "tensor_map/" + h.hex();
}

std::optional<std::vector<PieceSum>> tensor_map(const Txn& txn, const Sha256& h) {
    auto v = txn.get_meta(tensor_map_key(h));
    if (!v) return std::nullopt;
    try {
        return decode_tensor_map(*v);
    } catch (const std::exception&) {
        return std::nullopt;  // a hint only: a damaged map means a plain download
    }
}

void put_tensor_map(Txn& txn, const Sha256& h, std::uint64_t size,
                    const std::vector<PieceSum>& map) {
    std::uint64_t total = 0;
    for (const auto& p : map) {
        if (p.length == 0 || total + p.length < total)
            throw StoreError(ErrorKind::bad_input, "tensor map of " + h.hex() + ": bad lengths");
        total += p.length;
    }
    if (total != size)
        throw StoreError(ErrorKind::bad_input, "tensor map of " + h.hex() + " covers " +
                                                   std::to_string(total) + " bytes, the file has " +
                                                   std::to_string(size));
    txn.put_meta(tensor_map_key(h), encode_tensor_map(map));
}

std::vector<LocalPiece> local_pieces(Store& store, const Sha256& h) {
    std::vector<LocalPiece> out;
    auto txn = store.catalog().read();
    auto map = tensor_map(txn, h);
    if (!map) return out;
    std::uint64_t at = 0;
    for (const auto& p : *map) {
        if (auto place = txn.get_tensor(p.xxh3, p.length); place && place->blob != h) {
            auto src = txn.get_blob(place->blob);
            if (src && src->state == BlobState::present && !src->composed() &&
                place->offset + p.length <= src->size)
                out.push_back({at, p.length, place->blob, place->offset, p.xxh3});
        }
        at += p.length;
    }
    return out;
}

namespace {

// name|dtype|shape|length of every tensor of a header; empty when it is not one.
std::set<std::string> tensor_keys(std::string_view header, std::uint64_t* bytes = nullptr) {
    std::set<std::string> out;
    const json j = json::parse(header.begin(), header.end(), nullptr, false);
    if (!j.is_object()) return out;
    for (const auto& [name, t] : j.items()) {
        if (name == "__metadata__" || !t.is_object()) continue;
        const auto& o = t.value("data_offsets", json());
        if (!o.is_array() || o.size() != 2 || !o[0].is_number_unsigned() ||
            !o[1].is_number_unsigned())
            continue;
        const auto len = o[1].get<std::uint64_t>() -
                         std::min(o[0].get<std::uint64_t>(), o[1].get<std::uint64_t>());
        out.insert(name + "|" + t.value("dtype", json()).dump() + "|" +
                   t.value("shape", json()).dump() + "|" + std::to_string(len));
        if (bytes) *bytes += len;
    }
    return out;
}

std::uint64_t key_length(const std::string& k) {
    return std::stoull(k.substr(k.rfind('|') + 1));
}

}  // namespace

HeaderMatch match_header(Store& store, std::string_view header_json) {
    HeaderMatch m;
    const std::set<std::string> wanted = tensor_keys(header_json, &m.tensor_bytes);
    if (wanted.empty())
        throw StoreError(ErrorKind::bad_input, "not a safetensors header (no tensors in it)");
    m.tensors = wanted.size();
    std::set<std::string> found;
    auto txn = store.catalog().read();
    txn.for_each_model([&](const Model& model) {
        const ModelVersion& v = model.current_version();
        if (!v.blob) return;
        auto rec = txn.get_blob(*v.blob);
        if (!rec || rec->state != BlobState::present || rec->safetensors_header_len == 0 ||
            rec->safetensors_header_len > 100'000'000)
            return;
        // A composed file's header starts its own pieces blob (tensor_split.h).
        const bool whole = store.blobs().exists(*v.blob);
        if (!whole && (!rec->composed() || rec->extents.front().offset != 0)) return;
        UniqueFd fd = store.blobs().open_blob(whole ? *v.blob : rec->extents.front().blob);
        if (!fd) return;
        std::string header(rec->safetensors_header_len, '\0');
        if (::pread(fd.get(), header.data(), header.size(), 8) !=
            static_cast<ssize_t>(header.size()))
            return;
        bool any = false;
        for (const auto& k : tensor_keys(header))
            if (wanted.count(k)) {
                found.insert(k);
                any = true;
            }
        if (any) m.models.push_back(model.key());
    });
    m.matching = found.size();
    for (const auto& k : found) m.matching_bytes += key_length(k);
    return m;
}

}  // namespace modelfs
