// Versions as path aliases: choosing the current version, per-view pins, retention, and lock
// files that hold versions on this machine or reproduce them on another.
#include <algorithm>
#include <set>

#include <spdlog/spdlog.h>

#include "modelfs/store/escape.h"
#include "modelfs/store/team_remote.h"
#include "modelfs/store/version_source.h"
#include "store_impl.h"

namespace modelfs {

namespace {

// The model of `key`, or StoreError not_found saying how to list models.
Model need_model(const Txn& txn, std::string_view key) {
    auto m = txn.get_model(key);
    if (!m)
        throw StoreError(ErrorKind::not_found,
                         "no model " + std::string(key) + " (`modelfs ls` lists the models)");
    return *m;
}

std::size_t need_version(const Model& m, std::string_view label) {
    std::string error;
    auto i = find_version(m, label, &error);
    if (!i) {
        // An ambiguous prefix is a conflict; anything else was not found.
        const bool ambiguous = error.find("matches") != std::string::npos;
        throw StoreError(ambiguous ? ErrorKind::conflict : ErrorKind::not_found, error);
    }
    return *i;
}

std::set<std::pair<std::string, Sha256>> held_versions(const Txn& txn) {
    std::set<std::pair<std::string, Sha256>> held;
    for (const auto& l : txn.locks())
        for (const auto& v : l.versions) held.insert(v);
    return held;
}

}  // namespace

bool ApplyReport::ok() const {
    return std::none_of(items.begin(), items.end(),
                        [](const ApplyItem& i) { return i.outcome == ApplyItem::Outcome::failed; });
}

VersionRef Store::resolve_version(std::string_view ref) {
    const auto at = ref.rfind('@');
    const std::string name(ref.substr(0, at));
    Resolved r = resolve(name);
    // resolve() also accepts hashes and files; a version needs a model.
    if (!r.model)
        throw StoreError(ErrorKind::not_found,
                         "'" + name + "' is not a model name (`modelfs ls` lists the models)");
    VersionRef out{std::move(*r.model), 0};
    out.index = at == std::string_view::npos ? out.model.current
                                             : need_version(out.model, ref.substr(at + 1));
    return out;
}

VersionChange Store::use_version(std::string_view key, std::string_view label) {
    auto txn = impl_->catalog.write();
    Model m = need_model(txn, key);
    const std::size_t i = need_version(m, label);
    VersionChange out{m.key(), m.current_version().label, m.versions[i].label, i != m.current};
    if (!out.changed) return out;
    m.make_current(i);
    txn.put_model(m);
    txn.commit();
    spdlog::info("{}: current version {} (was {})", out.model_key, out.to_label, out.from_label);
    return out;
}

VersionChange Store::rollback(std::string_view key) {
    auto txn = impl_->catalog.write();
    Model m = need_model(txn, key);
    std::optional<std::size_t> prev;
    if (!m.previous.empty()) prev = find_version(m, m.previous);
    if (!prev || *prev == m.current)
        throw StoreError(ErrorKind::bad_input,
                         m.key() + " has no previous version to roll back to (current is " +
                             m.current_version().label + "); `modelfs use " + m.key() +
                             "@LABEL` picks any version");
    VersionChange out{m.key(), m.current_version().label, m.versions[*prev].label, true};
    m.make_current(*prev);
    txn.put_model(m);
    txn.commit();
    spdlog::info("{}: rolled back to {} (was {})", out.model_key, out.to_label, out.from_label);
    return out;
}

VersionChange Store::pin(std::string_view key, std::string_view label, const std::string& view) {
    if (view.empty()) throw StoreError(ErrorKind::bad_input, "pin: no view named");
    auto txn = impl_->catalog.write();
    Model m = need_model(txn, key);
    const std::size_t i = need_version(m, label);
    auto it = m.pins.find(view);
    VersionChange out{m.key(), it == m.pins.end() ? std::string() : it->second, m.versions[i].label,
                      false};
    out.changed = out.from_label != out.to_label;
    if (!out.changed) return out;
    m.pins[view] = m.versions[i].label;
    m.mark_switched();
    txn.put_model(m);
    txn.commit();
    return out;
}

bool Store::unpin(std::string_view key, const std::string& view) {
    auto txn = impl_->catalog.write();
    Model m = need_model(txn, key);
    if (m.pins.erase(view) == 0) return false;
    m.mark_switched();
    txn.put_model(m);
    txn.commit();
    return true;
}

RetainReport Store::retain(std::size_t keep, bool dry_run, std::optional<std::string> only) {
    if (keep == 0)
        throw StoreError(ErrorKind::bad_input,
                         "retain: --keep must be at least 1 (the current version always stays)");
    RetainReport rep;
    auto txn = impl_->catalog.write();
    const auto held = held_versions(txn);
    std::vector<Model> models;
    if (only) {
        models.push_back(need_model(txn, *only));
    } else {
        txn.for_each_model([&](const Model& m) {
            if (m.versions.size() > keep) models.push_back(m);
        });
    }
    for (Model& m : models) {
        if (m.versions.size() <= keep) continue;
        std::set<std::string> pinned;
        for (const auto& [view, label] : m.pins) pinned.insert(label);
        std::vector<ModelVersion> kept;
        const std::string current_label = m.current_version().label;
        const std::size_t oldest_kept = m.versions.size() - keep;
        bool dropped_any = false;
        for (std::size_t i = 0; i < m.versions.size(); ++i) {
            const ModelVersion& v = m.versions[i];
            bool stays = i >= oldest_kept;
            if (!stays && i == m.current) ++rep.kept_current, stays = true;
            if (!stays && pinned.count(v.label)) ++rep.kept_pinned, stays = true;
            if (!stays && held.count({m.key(), v.content_id()})) ++rep.kept_locked, stays = true;
            if (stays) {
                kept.push_back(v);
                continue;
            }
            rep.dropped.push_back({m.key(), v.label, v.size, v.added});
            rep.bytes += v.size;
            dropped_any = true;
        }
        if (!dropped_any) continue;
        m.versions = std::move(kept);
        for (std::size_t i = 0; i < m.versions.size(); ++i)
            if (m.versions[i].label == current_label) m.current = i;
        if (!m.previous.empty() && !find_version(m, m.previous)) m.previous.clear();
        txn.put_model(m);
    }
    if (!dry_run && !rep.dropped.empty()) {
        txn.commit();
        spdlog::info("retain: dropped {} version(s) of {} bytes", rep.dropped.size(), rep.bytes);
    }
    return rep;
}

std::string Store::register_lock(const LockFile& lock, const std::string& name) {
    LockHold hold{lock.id(), name, unix_now(), lock.versions()};
    auto txn = impl_->catalog.write();
    if (auto old = txn.get_lock(hold.id)) hold.registered = old->registered;
    txn.put_lock(hold);
    txn.commit();
    return hold.id;
}

bool Store::release_lock(std::string_view id_or_name) {
    if (id_or_name.empty()) return false;
    auto txn = impl_->catalog.write();
    std::vector<std::string> ids;
    for (const auto& l : txn.locks())
        if (l.name == id_or_name || l.id.compare(0, id_or_name.size(), id_or_name) == 0)
            ids.push_back(l.id);
    if (ids.empty()) return false;
    if (ids.size() > 1) {
        std::string list;
        for (const auto& id : ids) list += "\n  " + id;
        throw StoreError(ErrorKind::conflict, "'" + std::string(id_or_name) +
                                                  "' matches several locks; give the id:" + list);
    }
    txn.del_lock(ids.front());
    txn.commit();
    return true;
}

std::vector<LockHold> Store::locks() {
    return impl_->catalog.read().locks();
}

namespace {

// Adds the version a lock entry describes to `m` (a new model when `m` has no versions),
// registering blobs this store lacks as remote when the lock gives sources. Returns the number
// of files left to download; throws StoreError for an entry this store cannot satisfy.
std::size_t add_locked_version(Txn& txn, Model& m, const LockedModel& lm) {
    std::size_t remote = 0;
    // Every file is checked before any record is written, so a model that fails leaves nothing.
    std::vector<std::pair<Sha256, BlobRecord>> records;
    for (const auto& f : lm.files) {
        const std::string what = lm.key() + (lm.tree ? " file '" + f.path + "'" : "");
        std::optional<BlobRecord> rec = txn.get_blob(f.sha256);
        if (rec && rec->size != f.size)
            throw StoreError(ErrorKind::conflict,
                             what + ": this store knows blob " + f.sha256.hex() + " with " +
                                 std::to_string(rec->size) + " bytes, the lock says " +
                                 std::to_string(f.size));
        BlobRecord r = rec.value_or(BlobRecord{});
        if (!rec) {
            r.size = f.size;
            r.state = BlobState::remote;
        }
        // A blob of a team remote's store is at a known name there (FORMAT.md "Team remotes"):
        // the store's remotes are sources of every locked blob it lacks.
        if (r.state != BlobState::present)
            for (const auto& url : team_remote_blob_urls(txn, f.sha256))
                if (std::none_of(r.sources.begin(), r.sources.end(),
                                 [&](const BlobSource& s) { return s.url == url; }))
                    r.sources.push_back({url, false});
        if (f.secrets_removed && r.state != BlobState::present && r.sources.empty())
            throw StoreError(ErrorKind::bad_input,
                             what +
                                 ": the lock was written without the credentials its download "
                                 "URL needs (" +
                                 terminal_safe(f.sources.empty() ? "" : f.sources.front()) +
                                 "); give the URL again (`modelfs add URL --as " + lm.key() +
                                 " --sha256 " + f.sha256.hex() +
                                 "`) or write the lock with `modelfs lock --with-secrets`");
        // Without its credentials a URL would only fail: the store's own sources are used.
        for (const auto& url : f.secrets_removed ? std::vector<std::string>{} : f.sources)
            if (std::none_of(r.sources.begin(), r.sources.end(),
                             [&](const BlobSource& s) { return s.url == url; }))
                r.sources.push_back({url, false});
        if (r.state == BlobState::quarantined && !r.sources.empty()) r.state = BlobState::remote;
        if (r.state != BlobState::present) {
            if (r.sources.empty())
                throw StoreError(ErrorKind::not_found,
                                 what + ": blob " + f.sha256.hex() +
                                     (rec ? " is " + std::string(to_string(r.state)) + " here"
                                          : std::string(" is not in this store")) +
                                     " and the lock names no source to download it from; "
                                     "import the file here first");
            ++remote;
        }
        records.emplace_back(f.sha256, std::move(r));
    }
    for (const auto& [h, r] : records) txn.put_blob(h, r);
    ModelVersion v;
    v.added = unix_now();
    v.source = to_source({SourceKind::lock, {}, {}});
    v.size = lm.size;
    if (lm.tree) {
        for (const auto& f : lm.files) v.tree.push_back({f.path, f.sha256, f.size});
    } else {
        v.blob = lm.content_id;
        v.ext = lm.ext;
    }
    // The lock's label when free; else the same label marked as coming from the lock.
    std::string label = lm.label;
    for (int n = 1; m.has_label(label); ++n)
        label = lm.label + "-lock" + (n > 1 ? std::to_string(n) : std::string());
    m.add_version(std::move(v), label);
    return remote;
}

}  // namespace

ApplyReport Store::apply_lock(const LockFile& lock, const std::string& name) {
    ApplyReport rep;
    {
        // Shared, as for an import: gc must not remove a present blob between our finding it
        // and cataloguing the version that uses it.
        StoreLock store_lock(impl_->root, StoreLock::shared);
        auto txn = impl_->catalog.write();
        for (const auto& lm : lock.models) {
            ApplyItem item;
            item.model_key = lm.key();
            item.label = lm.label;
            try {
                Model m;
                if (auto existing = txn.get_model(lm.key())) {
                    m = std::move(*existing);
                } else {
                    m.category = lm.category;
                    m.name = lm.name;
                }
                auto same = std::find_if(
                    m.versions.begin(), m.versions.end(),
                    [&](const ModelVersion& v) { return v.content_id() == lm.content_id; });
                if (same != m.versions.end()) {
                    const auto i = static_cast<std::size_t>(same - m.versions.begin());
                    item.label = same->label;
                    item.outcome = i == m.current ? ApplyItem::Outcome::unchanged
                                                  : ApplyItem::Outcome::made_current;
                    for (const auto& b : same->blobs())
                        if (auto r = txn.get_blob(b); r && r->state != BlobState::present)
                            ++item.remote_files;
                    if (i != m.current) {
                        m.make_current(i);
                        txn.put_model(m);
                    }
                } else {
                    item.remote_files = add_locked_version(txn, m, lm);
                    item.label = m.current_version().label;
                    item.outcome = ApplyItem::Outcome::added;
                    txn.put_model(m);
                }
            } catch (const StoreError& e) {
                item.outcome = ApplyItem::Outcome::failed;
                item.error = e.what();
                spdlog::debug("apply: {}", item.error);
            }
            rep.items.push_back(std::move(item));
        }
        txn.commit();
    }
    // Registered even when some models failed: what did apply is now held by the lock.
    rep.lock_id = register_lock(lock, name);
    return rep;
}

}  // namespace modelfs
