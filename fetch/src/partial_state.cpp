#include "partial_state.h"

#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "modelfs/store/atomic_file.h"
#include "modelfs/store/secrets.h"

namespace stdfs = std::filesystem;

namespace modelfs::fetch::detail {

void RangeSet::add(std::uint64_t begin, std::uint64_t end) {
    if (begin >= end) return;
    // Merge with a range that starts at or before `begin` and reaches it.
    auto it = m_.upper_bound(begin);
    if (it != m_.begin()) {
        auto prev = std::prev(it);
        if (prev->second >= begin) {
            if (prev->second >= end) return;
            begin = prev->first;
            it = prev;
        }
    }
    // Swallow every range starting within [begin, end].
    while (it != m_.end() && it->first <= end) {
        end = std::max(end, it->second);
        it = m_.erase(it);
    }
    m_.emplace(begin, end);
}

bool RangeSet::contains(std::uint64_t begin, std::uint64_t end) const {
    if (begin >= end) return true;
    auto it = m_.upper_bound(begin);
    if (it == m_.begin()) return false;
    --it;
    return it->first <= begin && it->second >= end;
}

std::uint64_t RangeSet::prefix() const {
    if (m_.empty() || m_.begin()->first != 0) return 0;
    return m_.begin()->second;
}

std::uint64_t RangeSet::total() const {
    std::uint64_t t = 0;
    for (const auto& [b, e] : m_) t += e - b;
    return t;
}

std::vector<std::pair<std::uint64_t, std::uint64_t>> RangeSet::gaps(std::uint64_t size) const {
    std::vector<std::pair<std::uint64_t, std::uint64_t>> out;
    std::uint64_t pos = 0;
    for (const auto& [b, e] : m_) {
        if (b >= size) break;
        if (b > pos) out.emplace_back(pos, b);
        pos = std::max(pos, e);
    }
    if (pos < size) out.emplace_back(pos, size);
    return out;
}

std::vector<std::pair<std::uint64_t, std::uint64_t>> RangeSet::ranges() const {
    return {m_.begin(), m_.end()};
}

stdfs::path part_path(const stdfs::path& dir, const Sha256& key) {
    return dir / (key.hex() + ".part");
}
stdfs::path state_path(const stdfs::path& dir, const Sha256& key) {
    return dir / (key.hex() + ".state");
}

std::optional<PartialState> read_state(const stdfs::path& file) {
    std::ifstream in(file);
    if (!in) return std::nullopt;
    try {
        nlohmann::json j = nlohmann::json::parse(in);
        if (j.value("version", 0) != 1) return std::nullopt;
        PartialState s;
        auto key = Sha256::from_hex(j.at("key").get<std::string>());
        if (!key) return std::nullopt;
        s.key = *key;
        s.size = j.at("size").get<std::uint64_t>();
        s.source = j.value("source", "");
        s.validator = j.value("validator", "");
        for (const auto& r : j.at("done")) {
            auto b = r.at(0).get<std::uint64_t>();
            auto e = r.at(1).get<std::uint64_t>();
            if (b > e || e > s.size) return std::nullopt;
            s.done.add(b, e);
        }
        return s;
    } catch (const std::exception&) {
        return std::nullopt;
    }
}

void write_state(const stdfs::path& file, const PartialState& s) {
    nlohmann::json j;
    j["version"] = 1;
    j["key"] = s.key.hex();
    j["size"] = s.size;
    j["source"] = s.source;
    j["validator"] = s.validator;
    nlohmann::json done = nlohmann::json::array();
    for (const auto& [b, e] : s.done.ranges()) done.push_back({b, e});
    j["done"] = std::move(done);
    std::string text = j.dump() + "\n";

    // A secret file (0600, 0640 in a group-shared store, whose group resumes each other's
    // downloads): it names the source URL, which may carry a signed query.
    write_file_atomically(file, text, secret_file_mode(file.parent_path().parent_path()));
}

}  // namespace modelfs::fetch::detail
