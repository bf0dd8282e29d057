// Remote models (lazy fetch): registering models whose bytes are elsewhere, and the cache quota
// that turns present blobs back into remote ones. The store never touches the network here.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <set>

#include <spdlog/spdlog.h>

#include "modelfs/store/model_name.h"
#include "modelfs/store/names.h"
#include "modelfs/store/secrets.h"
#include "store_impl.h"

namespace stdfs = std::filesystem;

namespace modelfs {
namespace {

void check_remote_model(const RemoteModel& m, const std::string& key) {
    check_model_name(m.name);
    if (key.size() > 511)
        throw StoreError(ErrorKind::bad_input, "model name too long for the catalog: " + key);
    if (m.label) check_version_label(*m.label);
    if (m.files.empty()) throw StoreError(ErrorKind::bad_input, key + ": no files");
    if (!m.tree && (m.files.size() != 1 || !m.files[0].path.empty()))
        throw StoreError(ErrorKind::bad_input,
                         key + ": a single-file model has exactly one file, without a path");
    std::set<std::string> paths;
    for (const auto& f : m.files) {
        const std::string what = m.tree ? key + " file '" + f.path + "'" : key;
        if (m.tree) {
            check_relative_path(f.path, key + ": invalid file path");
            if (!paths.insert(f.path).second)
                throw StoreError(ErrorKind::bad_input,
                                 key + ": file '" + f.path + "' is listed twice");
        }
        if (f.sources.empty())
            throw StoreError(ErrorKind::bad_input, what + ": no source URL to download it from");
        for (const auto& s : f.sources)
            if (s.url.empty()) throw StoreError(ErrorKind::bad_input, what + ": empty source URL");
    }
}

// The record key of a file added without a hash: stable for its first URL, so adding the same
// URL again finds the same record.
Sha256 placeholder_key(const std::string& first_url) {
    return sha256_of("modelfs-placeholder:" + first_url);
}

// Adds the sources the record does not have yet, after its own (their order is the order they
// are tried in; the first ones were there first).
void merge_sources(BlobRecord& r, const std::vector<BlobSource>& add) {
    for (const auto& s : add) {
        auto it = std::find_if(r.sources.begin(), r.sources.end(),
                               [&](const BlobSource& o) { return o.url == s.url; });
        if (it == r.sources.end())
            r.sources.push_back(s);
        else
            it->stream = s.stream;  // the newest word on streaming wins
    }
}

}  // namespace

RemoteAddResult Store::add_remote(const RemoteModel& given) {
    // A single file's extension is part of its name (model_name.h), whoever built the request.
    RemoteModel m = given;
    if (!m.tree) {
        auto named = single_file_name(m.name, m.ext);
        m.name = std::move(named.name);
        m.ext = std::move(named.ext);
    }
    const std::string key = model_key(m.category, m.name);
    check_remote_model(m, key);
    RemoteAddResult out;
    out.model_key = key;
    // Shared, as for an import: gc (exclusive) must not decide a present blob is unused between
    // our reading it and cataloguing the model that now uses it.
    StoreLock lock(impl_->root, StoreLock::shared);
    auto txn = impl_->catalog.write();
    ModelVersion v;
    v.added = unix_now();
    v.source = redact_url(m.files.front().sources.front().url);
    v.note = m.note;
    for (const auto& f : m.files) {
        const Sha256 h = f.sha256 ? *f.sha256 : placeholder_key(f.sources.front().url);
        const std::string what = (m.tree ? key + " file '" + f.path + "'" : key);
        std::optional<BlobRecord> rec = txn.get_blob(h);
        if (rec && rec->size != f.size)
            throw StoreError(ErrorKind::conflict, what + ": blob " + h.hex() + " is known with " +
                                                      std::to_string(rec->size) + " bytes, but " +
                                                      std::to_string(f.size) + " were given for " +
                                                      redact_url(f.sources.front().url) +
                                                      "; check the size and the SHA-256");
        BlobRecord r = rec.value_or(BlobRecord{});
        if (!rec) {
            r.size = f.size;
            r.state = BlobState::remote;
            r.placeholder = !f.sha256;
        } else if (r.state == BlobState::quarantined) {
            // The stored copy failed verification; a source means it can be downloaded again.
            r.state = BlobState::remote;
        }
        merge_sources(r, f.sources);
        txn.put_blob(h, r);
        if (r.state == BlobState::present)
            ++out.present;
        else
            ++out.remote;
        out.blobs.push_back(h);
        v.size += f.size;
        if (m.tree) v.tree.push_back({f.path, h, f.size});
    }
    if (m.tree) {
        std::sort(v.tree.begin(), v.tree.end(),
                  [](const TreeEntry& a, const TreeEntry& b) { return a.path < b.path; });
    } else {
        v.blob = out.blobs.front();
        v.ext = m.ext;
    }

    Model model;
    if (auto existing = txn.get_model(key)) {
        model = std::move(*existing);
    } else {
        model.category = m.category;
        model.name = m.name;
    }
    // Registering content the model already has makes that version current again.
    const std::size_t was_current = model.current;
    const AddedVersion added = model.add_version(v, m.label);
    out.new_version = added.added || added.index != was_current;
    out.label = model.versions[added.index].label;
    txn.put_model(model);
    txn.commit();
    return out;
}

void Store::touch_accessed(const std::vector<Sha256>& blobs) {
    if (blobs.empty()) return;
    const std::int64_t now = unix_now();
    auto txn = impl_->catalog.write();
    bool changed = false;
    for (const auto& h : blobs) {
        auto r = txn.get_blob(h);
        // Second resolution is all LRU needs; skipping equal times spares the commit when a tool
        // opens the same files over and over.
        if (!r || r->accessed == now) continue;
        r->accessed = now;
        txn.put_blob(h, *r);
        changed = true;
    }
    if (changed) txn.commit();
}

void Store::set_keep(const Sha256& blob, bool keep) {
    auto txn = impl_->catalog.write();
    auto r = txn.get_blob(blob);
    if (!r) throw StoreError(ErrorKind::not_found, "no blob " + blob.hex() + " in the catalog");
    if (r->keep == keep) return;
    r->keep = keep;
    txn.put_blob(blob, *r);
    txn.commit();
}

EvictReport Store::evict(std::uint64_t max_bytes, bool dry_run) {
    EvictReport rep;
    // Exclusive, as gc: an import that found this blob present (and so copied nothing) must not
    // catalogue it as present after we removed the file.
    StoreLock lock(impl_->root, StoreLock::exclusive);
    struct Candidate {
        Sha256 h;
        BlobRecord r;
    };
    std::vector<Candidate> candidates;
    std::uint64_t present = 0;
    {
        auto txn = impl_->catalog.read();
        // Composed blobs read these: evicting one would make them unreadable until it is fetched
        // again, which reads of a composed file do not do.
        std::set<Sha256> sources_of_composed;
        txn.for_each_blob([&](const Sha256&, const BlobRecord& r) {
            for (const auto& e : r.extents) sources_of_composed.insert(e.blob);
        });
        txn.for_each_blob([&](const Sha256& h, const BlobRecord& r) {
            if (r.state != BlobState::present) return;
            // A composed blob takes no room but its materialised copy, which the materialise budget
            // governs (Store::materialise).
            if (r.composed()) return;
            present += r.size;
            // Only what can be downloaded again, and never what the user pinned.
            if (r.sources.empty() || r.keep || r.placeholder || sources_of_composed.count(h))
                return;
            candidates.push_back({h, r});
        });
    }
    std::stable_sort(
        candidates.begin(), candidates.end(),
        [](const Candidate& a, const Candidate& b) { return a.r.accessed < b.r.accessed; });

    // A batch of blob files locked exclusively: no reader (a mount holds LOCK_SH on every blob it
    // has open) can start using them until they are gone. Batches bound the open descriptors.
    constexpr std::size_t kBatch = 64;
    std::vector<std::pair<EvictedBlob, UniqueFd>> batch;
    auto flush = [&] {
        if (batch.empty()) return;
        if (!dry_run) {
            // Catalog first: a crash before the unlinks leaves files of `remote` records, which
            // gc removes; the other order would leave `present` records without files.
            auto txn = impl_->catalog.write();
            for (auto& [e, fd] : batch) {
                auto r = txn.get_blob(e.blob);
                // verify may have quarantined it meanwhile (it takes no store lock): not ours.
                if (!r || r->state != BlobState::present) {
                    fd.reset();
                    present += e.size;
                    rep.bytes -= e.size;
                    continue;
                }
                r->state = BlobState::remote;
                txn.put_blob(e.blob, *r);
            }
            txn.commit();
            for (const auto& [e, fd] : batch)
                if (fd) impl_->blobs.remove(e.blob);
        }
        for (auto& [e, fd] : batch)
            if (fd) rep.evicted.push_back(e);
        batch.clear();  // closes the files, releasing their locks
    };
    for (const auto& c : candidates) {
        if (present <= max_bytes) break;
        UniqueFd fd = impl_->blobs.open_blob(c.h);
        if (!fd) {
            spdlog::warn(
                "blob {} is catalogued as present but its file cannot be opened ({}); "
                "run `modelfs verify`",
                c.h.hex(), std::strerror(errno));
            continue;
        }
        if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
            if (errno != EWOULDBLOCK)
                throw_errno("locking " + impl_->blobs.path_of(c.h).string(), errno);
            ++rep.skipped_open;
            continue;
        }
        present -= c.r.size;
        rep.bytes += c.r.size;
        batch.push_back({EvictedBlob{c.h, c.r.size, c.r.accessed}, std::move(fd)});
        if (batch.size() == kBatch) flush();
    }
    flush();
    rep.store_bytes = present;
    if (!dry_run && !rep.evicted.empty())
        spdlog::info("evicted {} blob(s), {} bytes; {} bytes present", rep.evicted.size(),
                     rep.bytes, rep.store_bytes);
    return rep;
}

}  // namespace modelfs
