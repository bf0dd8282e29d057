// The store's side of downloads (fetch/ does the network): turning a finished partial file into a
// blob, replacing placeholder keys, and recording failures. See "Downloads" in store/FORMAT.md.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include <spdlog/spdlog.h>

#include "modelfs/store/errors.h"
#include "modelfs/store/quarantine.h"
#include "modelfs/store/safetensors.h"
#include "modelfs/store/store.h"
#include "store_impl.h"

namespace stdfs = std::filesystem;

namespace modelfs {

namespace {

// Rewrites every reference to `from` in model versions (file, tree entries, sidecars) to `to`.
void rekey_models(Txn& txn, const Sha256& from, const Sha256& to, std::uint64_t size) {
    std::vector<Model> changed;
    txn.for_each_model([&](const Model& m) {
        Model copy = m;
        bool touched = false;
        for (auto& v : copy.versions) {
            if (v.blob && *v.blob == from) {
                v.blob = to;
                v.size = size;
                touched = true;
            }
            bool tree_touched = false;
            for (auto& e : v.tree) {
                if (e.blob == from) {
                    e.blob = to;
                    e.size = size;
                    tree_touched = true;
                }
            }
            if (tree_touched) {
                v.size = 0;
                for (const auto& e : v.tree) v.size += e.size;
                touched = true;
            }
            for (auto& s : v.sidecars) {
                if (s.blob == from) {
                    s.blob = to;
                    s.size = size;
                    touched = true;
                }
            }
        }
        if (touched) changed.push_back(std::move(copy));
    });
    for (const auto& m : changed) txn.put_model(m);
}

void merge_sources(std::vector<BlobSource>& into, const std::vector<BlobSource>& from) {
    for (const auto& s : from) {
        bool have = std::any_of(into.begin(), into.end(),
                                [&](const BlobSource& o) { return o.url == s.url; });
        if (!have) into.push_back(s);
    }
}

}  // namespace

stdfs::path Store::partial_dir() const {
    return impl_->root / "partial";
}

stdfs::path quarantine_download(Store& s, const Sha256& key, const stdfs::path& path) {
    // Kept for inspection, out of the way of a new attempt; never a blob.
    stdfs::create_directories(s.blobs().quarantine_dir());
    stdfs::path q =
        s.blobs().quarantine_dir() / (key.hex() + "." + std::to_string(unix_now()) + ".download");
    if (::rename(path.c_str(), q.c_str()) != 0) {
        spdlog::warn("could not move {} to {}: {}", path.string(), q.string(),
                     std::strerror(errno));
        ::unlink(path.c_str());
        return "(deleted)";
    }
    return q;
}

Sha256 Store::commit_download(const Sha256& key, int fd, const stdfs::path& path,
                              const FileDigests& digests) {
    std::optional<BlobRecord> rec = impl_->catalog.read().get_blob(key);
    if (!rec)
        throw StoreError(ErrorKind::not_found,
                         "blob " + key.hex() +
                             " has no catalog record any more (its model was removed?); the "
                             "download " +
                             path.string() + " is not kept");
    if (!rec->placeholder && digests.sha256 != key) {
        const stdfs::path q = quarantine_download(*this, key, path);
        std::string msg = "downloaded content has SHA-256 " + digests.sha256.hex() +
                          ", not the expected " + key.hex() + "; the bytes are in " + q.string();
        record_fetch_error(key, msg);
        throw StoreError(ErrorKind::corrupt, msg);
    }
    const Sha256 real = digests.sha256;

    std::uint64_t st_hdr = 0;
    try {
        st_hdr = read_safetensors_header(fd, digests.size).header_len;
    } catch (const std::exception&) {
        // Not a safetensors file (or a broken one): stored as is, without AutoV3.
    }

    // Publish and catalogue under the shared store lock, so gc cannot take the blob in between.
    StoreLock lock(impl_->root, StoreLock::shared);
    // publish_link fsyncs the file; done before the write transaction, so the catalog's single
    // writer slot is not held while gigabytes are flushed.
    settle_unverified(*impl_, real);
    const bool placed = impl_->blobs.publish_link(fd, path, real, digests.size);

    auto txn = impl_->catalog.write();
    std::optional<BlobRecord> cur = txn.get_blob(key);
    if (!cur) {
        // Removed since the check above; the blob file stays an orphan for gc.
        throw StoreError(ErrorKind::not_found,
                         "blob " + key.hex() + " lost its catalog record during the download");
    }
    std::optional<BlobRecord> existing = real == key ? cur : txn.get_blob(real);
    BlobRecord r = existing.value_or(*cur);
    if (existing && real != key) {
        merge_sources(r.sources, cur->sources);
        r.keep = r.keep || cur->keep;
    }
    // A blob that was here already keeps its stat: nothing read it now.
    if (placed || r.state != BlobState::present) r.seen = impl_->blobs.stat_of(real);
    if (r.state != BlobState::present || !r.xxh128) {
        r.ingested = unix_now();
        r.xxh128 = digests.xxh128;
    }
    r.accessed = unix_now();
    r.size = digests.size;
    r.state = BlobState::present;
    if (r.unverified) {
        // settle_unverified above read the stored file and it matched (else it was replaced).
        r.unverified = false;
        r.xxh128 = digests.xxh128;
    }
    r.safetensors_header_len = st_hdr;
    r.placeholder = false;
    r.fetch_error.clear();
    r.fetch_failed_at = 0;
    txn.put_blob(real, r);
    if (real != key) {
        txn.del_blob(key);
        rekey_models(txn, key, real, digests.size);
    }
    txn.commit();
    if (::unlink(path.c_str()) != 0 && errno != ENOENT)
        spdlog::warn("could not remove {} (now blob {}): {}", path.string(), real.hex(),
                     std::strerror(errno));
    // The unlink moved the blob inode's ctime; the record says what it is now.
    record_blob_stat(real);
    // A file sharing tensors with stored blobs is composed (tensor_split.h); whole is valid too.
    try {
        split_tensors(real);
    } catch (const std::exception& e) {
        spdlog::warn("blob {}: kept whole; splitting it into tensors failed: {}", real.hex(),
                     e.what());
    }
    return real;
}

void Store::record_fetch_error(const Sha256& key, const std::string& message) {
    auto txn = impl_->catalog.write();
    auto rec = txn.get_blob(key);
    if (!rec) return;
    if (rec->fetch_error == message) return;
    rec->fetch_error = message;
    rec->fetch_failed_at = message.empty() ? 0 : unix_now();
    txn.put_blob(key, *rec);
    txn.commit();
}

}  // namespace modelfs
