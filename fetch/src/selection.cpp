#include "modelfs/fetch/selection.h"

#include <fnmatch.h>

#include <set>
#include <utility>

#include "modelfs/store/errors.h"

namespace modelfs::fetch {

namespace {

// The files a version shows, each with the name it shows under.
std::vector<std::pair<Sha256, std::string>> files_of(const Model& m, const ModelVersion& v) {
    std::vector<std::pair<Sha256, std::string>> files;
    if (v.blob) files.emplace_back(*v.blob, m.key());
    for (const auto& t : v.tree) files.emplace_back(t.blob, m.key() + "/" + t.path);
    for (const auto& sc : v.sidecars) files.emplace_back(sc.blob, m.key() + sc.suffix);
    return files;
}

// Where one blob stands: to download, already here, or skipped with the reason.
void classify(const Txn& txn, const Sha256& h, const std::string& name, BlobSelection& out) {
    auto r = txn.get_blob(h);
    if (!r) {
        out.skipped.push_back(name + ": blob " + h.hex() +
                              " is not in the catalog (run `modelfs verify`)");
        return;
    }
    out.matched.push_back(h);
    if (r->state == BlobState::present)
        ++out.present;
    else if (r->state == BlobState::quarantined)
        out.skipped.push_back(name +
                              ": its stored copy failed verification (quarantined); add a source "
                              "with `modelfs add` or import it again");
    else if (r->sources.empty())
        out.skipped.push_back(name + ": no source to download it from");
    else
        out.wanted.push_back({h, name, r->size});
}

}  // namespace

BlobSelection select_blobs(const Txn& txn, const std::vector<std::string>& patterns) {
    BlobSelection out;
    std::set<Sha256> seen;
    std::vector<bool> matched(patterns.size());
    txn.for_each_model([&](const Model& m) {
        bool match = patterns.empty();
        for (std::size_t i = 0; i < patterns.size(); ++i)
            if (fnmatch(patterns[i].c_str(), m.key().c_str(), 0) == 0 ||
                fnmatch(patterns[i].c_str(), m.name.c_str(), 0) == 0)
                match = matched[i] = true;
        if (!match) return;
        for (const auto& [h, name] : files_of(m, m.current_version()))
            if (seen.insert(h).second) classify(txn, h, name, out);
    });
    for (std::size_t i = 0; i < patterns.size(); ++i)
        if (!matched[i])
            throw StoreError(ErrorKind::not_found,
                             "no model matches '" + patterns[i] + "' (see `modelfs ls`)");
    return out;
}

}  // namespace modelfs::fetch
