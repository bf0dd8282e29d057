// The catalog edits a mount makes when tools write, rename and delete files in a view.
#include <sys/stat.h>

#include <algorithm>
#include <system_error>

#include "modelfs/store/errors.h"
#include "modelfs/store/model_check.h"
#include "modelfs/store/model_name.h"
#include "modelfs/store/safetensors.h"
#include "modelfs/store/store.h"
#include "store_impl.h"

namespace modelfs {

namespace {

Model must_get(Txn& txn, std::string_view key) {
    auto m = txn.get_model(key);
    if (!m) throw StoreError(ErrorKind::not_found, "no model " + std::string(key));
    return std::move(*m);
}

void add_blob_record(Txn& txn, const FileCommit& f, std::optional<BlobStat> seen) {
    auto rec = txn.get_blob(f.digests.sha256);
    if (rec && rec->state == BlobState::present) return;
    BlobRecord r = rec.value_or(BlobRecord{});
    r.size = f.digests.size;
    r.state = BlobState::present;
    r.unverified = false;
    r.xxh128 = f.digests.xxh128;
    r.safetensors_header_len = 0;
    if (f.sidecar.empty() && has_safetensors_extension(f.ext)) {
        // commit_file checked the header before publishing; read again here for its length. A
        // failure now (I/O) only costs the record its header length (so no AutoV3).
        try {
            r.safetensors_header_len = read_safetensors_header(f.fd, f.digests.size).header_len;
        } catch (const std::exception&) {
        }
    }
    r.ingested = r.accessed = unix_now();
    r.seen = seen;
    txn.put_blob(f.digests.sha256, r);
}

}  // namespace

FileCommitResult Store::commit_file(const FileCommit& given) {
    // A model file's extension is part of its name (model_name.h); a sidecar names its model.
    check_model_name(given.name);  // as given: "" or "dir/" must not become a name by the ext
    FileCommit f = given;
    if (f.sidecar.empty()) f.name = single_file_name(f.name, f.ext).name;
    check_model_name(f.name);
    const std::string key = model_key(f.category, f.name);
    // Everything that can refuse the file is checked before it is linked into blobs/: a refused
    // file stays the caller's, untouched.
    if (key.size() > 511)
        throw StoreError(ErrorKind::bad_input, "model name too long for the catalog: " + key);
    if (!f.sidecar.empty() &&
        (f.sidecar.front() != '.' || f.sidecar.find('/') != std::string::npos))
        throw StoreError(ErrorKind::bad_input, "invalid sidecar suffix '" + f.sidecar + "'");
    // The completeness rule `modelfs import` applies too: an empty or truncated file (a tool's
    // create-then-close, a save cut short) is no model, version or sidecar; the mount leaves it
    // a plain file of its view.
    std::optional<std::string> incomplete;
    try {
        incomplete =
            incomplete_model_reason(f.fd, f.digests.size, f.sidecar.empty() ? f.ext : f.sidecar);
    } catch (const std::system_error& e) {
        throw_errno("reading " + f.path.string(), e.code().value());
    }
    if (incomplete) throw StoreError(ErrorKind::bad_input, *incomplete);
    settle_unverified(*impl_, f.digests.sha256);
    StoreLock lock(impl_->root, StoreLock::shared);
    FileCommitResult out;
    auto txn = impl_->catalog.write();
    std::optional<Model> existing = txn.get_model(key);
    if (!f.sidecar.empty() && !existing)
        throw StoreError(ErrorKind::not_found,
                         "sidecar " + f.path.string() + ": its model " + key + " is gone");
    // Publish before cataloguing: a record never names a blob that is not on disk.
    out.new_blob = impl_->blobs.publish_link(f.fd, f.path, f.digests.sha256, f.digests.size);
    add_blob_record(txn, f, impl_->blobs.stat_of(f.digests.sha256));

    if (!f.sidecar.empty()) {
        Model m = std::move(*existing);
        ModelVersion& v = m.versions.at(m.current);
        Sidecar sc{f.sidecar, f.digests.sha256, f.digests.size};
        auto it = std::find_if(v.sidecars.begin(), v.sidecars.end(),
                               [&](const Sidecar& s) { return s.suffix == f.sidecar; });
        if (it != v.sidecars.end())
            *it = sc;
        else
            v.sidecars.push_back(sc);
        std::sort(v.sidecars.begin(), v.sidecars.end(),
                  [](const Sidecar& a, const Sidecar& b) { return a.suffix < b.suffix; });
        out.label = v.label;
        txn.put_model(m);
        txn.commit();
        return out;
    }

    ModelVersion v;
    v.added = unix_now();
    v.mtime = f.mtime ? f.mtime : v.added;
    v.mode = f.mode & 07777;
    v.source = f.source;
    v.blob = f.digests.sha256;
    v.ext = f.ext;
    v.size = f.digests.size;
    Model m;
    if (existing) {
        m = std::move(*existing);
        // The overwritten version's sidecars describe the model, not those bytes: a new version
        // keeps them.
        v.sidecars = m.current_version().sidecars;
    } else {
        m.category = f.category;
        m.name = f.name;
    }
    const std::size_t was_current = m.current;
    const AddedVersion added = m.add_version(v, std::nullopt);
    ModelVersion& got = m.versions[added.index];
    if (!added.added) {
        // Saving bytes the model already had: that version is current again, with the sidecars
        // it had; the shown time is the save's.
        got.mtime = v.mtime;
        got.ext = v.ext;
        if (v.mode) got.mode = v.mode;
    }
    out.new_version = added.added || added.index != was_current;
    out.label = got.label;
    txn.put_model(m);
    txn.commit();
    return out;
}

bool Store::remove_model(std::string_view key) {
    auto txn = impl_->catalog.write();
    if (!txn.get_model(key)) return false;
    txn.del_model(key);
    txn.commit();
    return true;
}

bool Store::remove_sidecar(std::string_view key, std::string_view suffix) {
    auto txn = impl_->catalog.write();
    auto m = txn.get_model(key);
    if (!m) return false;
    auto& scs = m->versions.at(m->current).sidecars;
    auto it =
        std::find_if(scs.begin(), scs.end(), [&](const Sidecar& s) { return s.suffix == suffix; });
    if (it == scs.end()) return false;
    scs.erase(it);
    txn.put_model(*m);
    txn.commit();
    return true;
}

void Store::rename_model(std::string_view from, Category category, const std::string& name,
                         const std::string& ext) {
    check_model_name(name);
    auto txn = impl_->catalog.write();
    Model src = must_get(txn, from);
    const std::string to = model_key(category, name);
    if (to == from) {
        txn.put_model(src);
        txn.commit();
        return;
    }
    ModelVersion moved = src.current_version();
    moved.ext = ext;
    Model dst;
    if (auto existing = txn.get_model(to)) {
        dst = std::move(*existing);
        auto same = std::find_if(dst.versions.begin(), dst.versions.end(),
                                 [&](const ModelVersion& o) { return o.same_content(moved); });
        if (same != dst.versions.end()) {
            moved.label = same->label;  // same bytes: one version, the existing label
            *same = moved;
            dst.make_current(static_cast<std::size_t>(same - dst.versions.begin()));
        } else {
            // Its label when the destination has no such label, else the next free one.
            std::optional<std::string> label;
            if (!dst.has_label(moved.label)) label = moved.label;
            dst.add_version(std::move(moved), label);
        }
    } else {
        // The whole model moves: its versions' extension is its name's (model_name.h).
        dst = std::move(src);
        dst.category = category;
        dst.name = name;
        for (auto& v : dst.versions)
            if (!v.is_tree()) v.ext = ext;
    }
    txn.del_model(from);
    txn.put_model(dst);
    txn.commit();
}

void Store::set_shown_attrs(std::string_view key, std::optional<std::int64_t> mtime,
                            std::optional<std::uint32_t> mode, std::string_view label) {
    auto txn = impl_->catalog.write();
    Model m = must_get(txn, key);
    std::size_t i = m.current;
    if (!label.empty())
        if (auto found = find_version(m, label)) i = *found;
    ModelVersion& v = m.versions.at(i);
    if (mtime) {
        // A time the user set (touch -d) is shown as set, even when it is older; what the other
        // views show of the model's other versions does not move (switched_ns stays).
        v.mtime = *mtime;
        v.mtime_exact = true;
    }
    if (mode) v.mode = *mode & 07777;
    txn.put_model(m);
    txn.commit();
}

}  // namespace modelfs
