// Store::commit_trusted_tree: multi-file models taken from caches that name files by content
// (the Hugging Face hub cache, Ollama), catalogued without reading what the names vouch for.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <set>

#include "modelfs/store/errors.h"
#include "modelfs/store/model_name.h"
#include "modelfs/store/safetensors.h"
#include "modelfs/store/store.h"
#include "store_impl.h"

namespace stdfs = std::filesystem;

namespace modelfs {
namespace {

void check_tree_path(const std::string& path) {
    auto bad = [&](const std::string& why) {
        throw StoreError(ErrorKind::bad_input, "file '" + path + "' of a model " + why);
    };
    if (path.empty() || path.front() == '/') bad("must be a relative path");
    if (path.find('\0') != std::string::npos) bad("contains NUL");
    std::size_t start = 0;
    while (start <= path.size()) {
        std::size_t end = path.find('/', start);
        if (end == std::string::npos) end = path.size();
        std::string_view part(path.data() + start, end - start);
        if (part.empty() || part == "." || part == "..") bad("has an empty, '.' or '..' component");
        start = end + 1;
    }
}

struct Placed {
    UniqueFd fd;
    std::uint64_t size = 0;
    bool same_dev = false;
};

// Can `src` be hard-linked into the store at all? Same filesystem and mount (link() says EXDEV
// across bind mounts of one device), and allowed by fs.protected_hardlinks. Probed with a
// throwaway link in staging/, so a refusal costs nothing. Whether the store may take the inode
// (ours alone once linked) is publish_link's decision, like everywhere else.
bool can_link(BlobStore& blobs, const stdfs::path& src, const Placed& p) {
    if (!p.same_dev) return false;
    // link() does not follow a final symlink: it would link the symlink, not the content.
    struct stat lst;
    if (::lstat(src.c_str(), &lst) != 0 || !S_ISREG(lst.st_mode)) return false;
    StagingFile probe = blobs.make_staging(".link");
    stdfs::path name = probe.path();
    name += "-probe";
    if (::link(src.c_str(), name.c_str()) != 0) return false;
    ::unlink(name.c_str());
    return true;
}

// A single-file model is named with its file's extension, like any file (model_name.h); a tree
// model keeps its name.
SingleFileName name_of(const TrustedTree& t) {
    if (!t.single_file || t.files.empty()) return {t.name, {}};
    return single_file_name(
        t.name, file_model_name(stdfs::path(t.files.front().path).filename().string()).ext);
}

// Everything about the request itself that can refuse it; returns the model's key.
std::string check_tree(const TrustedTree& t) {
    check_model_name(t.name);
    check_version_label(t.label);
    if (t.files.empty())
        throw StoreError(ErrorKind::bad_input, "model " + t.name + "@" + t.label + " has no files");
    if (t.single_file && t.files.size() != 1)
        throw StoreError(ErrorKind::bad_input, "model " + t.name + "@" + t.label +
                                                   " is a single-file model but lists " +
                                                   std::to_string(t.files.size()) + " files");
    const std::string key = model_key(t.category, name_of(t).name);
    if (key.size() > 511)
        throw StoreError(ErrorKind::bad_input, "model name too long for the catalog: " + key);
    return key;
}

// Opens every file (checking paths, types and sizes) and makes the version they form. Everything
// that can refuse the version is checked before any file is linked.
std::vector<Placed> open_files(const TrustedTree& t, dev_t store_dev, ModelVersion& v) {
    std::vector<Placed> placed(t.files.size());
    v.label = t.label;
    v.source = t.source;
    v.note = t.note;
    std::set<std::string> paths;
    for (std::size_t i = 0; i < t.files.size(); ++i) {
        const TrustedFile& f = t.files[i];
        check_tree_path(f.path);
        if (!paths.insert(f.path).second)
            throw StoreError(ErrorKind::bad_input, "model " + t.name + "@" + t.label +
                                                       " lists file '" + f.path + "' twice");
        // A caller's fd is opened afresh through /proc (its own read position), never by path.
        UniqueFd fd(f.opened_fd >= 0
                        ? ::open(("/proc/self/fd/" + std::to_string(f.opened_fd)).c_str(),
                                 O_RDONLY | O_CLOEXEC)
                        : ::open(f.source.c_str(), O_RDONLY | O_CLOEXEC));
        if (!fd) throw_errno("opening " + f.source.string(), errno);
        struct stat st;
        if (::fstat(fd.get(), &st) != 0) throw_errno("reading " + f.source.string(), errno);
        if (!S_ISREG(st.st_mode))
            throw StoreError(ErrorKind::bad_input, f.source.string() + " is not a regular file");
        if (f.digests && f.digests->size != static_cast<std::uint64_t>(st.st_size))
            throw StoreError(ErrorKind::bad_input,
                             f.source.string() + " changed size since it was hashed");
        placed[i].size = static_cast<std::uint64_t>(st.st_size);
        placed[i].same_dev = st.st_dev == store_dev;
        placed[i].fd = std::move(fd);
        v.tree.push_back({f.path, f.sha256, placed[i].size});
        v.size += placed[i].size;
    }
    std::sort(v.tree.begin(), v.tree.end(),
              [](const TreeEntry& a, const TreeEntry& b) { return a.path < b.path; });
    if (t.single_file) {
        v.blob = v.tree.front().blob;
        v.ext = name_of(t).ext;
        v.tree.clear();
    }
    return placed;
}

// The version of `m` with the same content as `v`: nothing to place (a second import of the
// same cache).
std::optional<std::size_t> find_same(const Model& m, const ModelVersion& v) {
    for (std::size_t i = 0; i < m.versions.size(); ++i)
        if (m.versions[i].same_content(v)) return i;
    return std::nullopt;
}

// The result when version `idx` of `m` already has the content: made current if asked.
TrustedTreeResult settle_existing(Catalog& catalog, const TrustedTree& t, const std::string& key,
                                  const ModelVersion& v, const Model& m, std::size_t idx,
                                  TrustedTreeResult out) {
    out.label = m.versions[idx].label;
    out.present = t.files.size();
    if (t.make_current && idx != m.current) {
        auto txn = catalog.write();
        auto fresh = txn.get_model(key);
        if (fresh && idx < fresh->versions.size() && fresh->versions[idx].same_content(v) &&
            fresh->current != idx) {
            fresh->make_current(idx);
            txn.put_model(*fresh);
            txn.commit();
            out.made_current = true;
        }
    }
    return out;
}

// What place_blobs did with each file.
struct PlacedBlobs {
    std::vector<bool> placed_now;                     // a blob placed by this call
    std::vector<std::optional<FileDigests>> digests;  // read in full: verified
};

// Publishes every file's blob that the store lacks: hard-linked where it may be (zero copy),
// else copied, checking its name on the way.
PlacedBlobs place_blobs(BlobStore& blobs, const TrustedTree& t, std::vector<Placed>& placed,
                        const std::string& key, Progress* progress, TrustedTreeResult& out) {
    PlacedBlobs res{std::vector<bool>(t.files.size(), false),
                    std::vector<std::optional<FileDigests>>(t.files.size())};
    for (std::size_t i = 0; i < t.files.size(); ++i) {
        const TrustedFile& f = t.files[i];
        res.digests[i] = f.digests;
        Placed& p = placed[i];
        const stdfs::path dest = blobs.path_of(f.sha256);
        struct stat st;
        if (::stat(dest.c_str(), &st) == 0 && static_cast<std::uint64_t>(st.st_size) == p.size) {
            ++out.present;
            continue;
        }
        if (f.opened_fd < 0 && can_link(blobs, f.source, p)) {
            Published how;
            bool placed_new;
            try {
                placed_new =
                    blobs.publish_link(p.fd.get(), f.source, f.sha256, p.size, &how, progress);
            } catch (const StoreError& e) {
                if (e.kind() != ErrorKind::corrupt) throw;
                throw StoreError(ErrorKind::corrupt, std::string(e.what()) +
                                                         "; the cache's copy is damaged; model " +
                                                         key + "@" + t.label + " was not imported");
            }
            if (how.copied) res.digests[i] = how.digests;  // read in full: verified
            if (placed_new) {
                ++(how.copied ? out.copied : out.linked);
                out.new_bytes += p.size;
                res.placed_now[i] = true;
            } else {
                ++out.present;
            }
            continue;
        }
        // Another filesystem, or a file we may not make read-only: copy, and since the copy reads
        // every byte anyway, check the name on the way.
        Ingested in = blobs.ingest_copy(p.fd.get(), f.source.string(), progress);
        if (in.digests.sha256 != f.sha256)
            throw StoreError(ErrorKind::corrupt, f.source.string() + " is named as content " +
                                                     f.sha256.hex() + " but its SHA-256 is " +
                                                     in.digests.sha256.hex() +
                                                     "; the cache's copy is damaged; model " + key +
                                                     "@" + t.label + " was not imported");
        res.digests[i] = in.digests;
        ++out.copied;
        out.new_bytes += p.size;
        res.placed_now[i] = true;
    }
    return res;
}

// Catalogues each file's blob: present, verified when it was read in full, `unverified` (a
// trusted name) otherwise.
void catalogue_blobs(Txn& txn, BlobStore& blobs, const TrustedTree& t,
                     const std::vector<Placed>& placed, const PlacedBlobs& done, std::int64_t now,
                     TrustedTreeResult& out) {
    for (std::size_t i = 0; i < t.files.size(); ++i) {
        const TrustedFile& f = t.files[i];
        auto rec = txn.get_blob(f.sha256);
        if (rec && rec->state == BlobState::present && !done.placed_now[i]) {
            if (rec->unverified) ++out.unverified;
            continue;
        }
        BlobRecord r = rec.value_or(BlobRecord{});
        r.size = placed[i].size;
        r.state = BlobState::present;
        r.placeholder = false;
        if (done.digests[i]) {
            r.xxh128 = done.digests[i]->xxh128;
            r.unverified = false;
        } else {
            r.xxh128.reset();
            r.unverified = true;
            ++out.unverified;
        }
        r.safetensors_header_len = 0;
        if (has_safetensors_extension(f.path)) {
            // Only the header is read; a damaged file is still stored, just without AutoV3.
            try {
                r.safetensors_header_len =
                    read_safetensors_header(placed[i].fd.get(), placed[i].size).header_len;
            } catch (const std::exception&) {
            }
        }
        r.ingested = r.accessed = now;
        r.seen = blobs.stat_of(f.sha256);
        txn.put_blob(f.sha256, r);
    }
}

}  // namespace

TrustedTreeResult Store::commit_trusted_tree(const TrustedTree& t, Progress* progress) {
    const std::string key = check_tree(t);
    TrustedTreeResult out;
    out.model_key = key;
    out.label = t.label;

    struct stat store_st;
    if (::stat(impl_->blobs.staging_dir().c_str(), &store_st) != 0)
        throw_errno("reading " + impl_->blobs.staging_dir().string(), errno);
    ModelVersion v;
    std::vector<Placed> placed = open_files(t, store_st.st_dev, v);
    out.size = v.size;

    {
        auto txn = impl_->catalog.read();
        if (auto m = txn.get_model(key)) {
            if (auto same = find_same(*m, v))
                return settle_existing(impl_->catalog, t, key, v, *m, *same, out);
            // A taken label is refused before anything is placed (on a copy: the same rule).
            Model probe = *m;
            probe.add_version(v, t.label);
        }
    }

    // Publish before cataloguing (a record never names a blob that is not on disk), under the
    // shared store lock so gc cannot remove a blob between the two.
    StoreLock lock(impl_->root, StoreLock::shared);
    const PlacedBlobs done = place_blobs(impl_->blobs, t, placed, key, progress, out);

    auto txn = impl_->catalog.write();
    const std::int64_t now = unix_now();
    catalogue_blobs(txn, impl_->blobs, t, placed, done, now, out);

    v.added = now;
    Model m;
    if (auto existing = txn.get_model(key)) {
        m = std::move(*existing);
        // Another process may have added it since the first look.
        if (auto same = find_same(m, v)) {
            txn.commit();  // the blob records are still worth keeping
            return settle_existing(impl_->catalog, t, key, v, m, *same, out);
        }
    } else {
        m.category = t.category;
        m.name = name_of(t).name;
    }
    const AddedVersion added = m.add_version(v, t.label, t.make_current);
    out.made_current = m.current == added.index;
    out.new_version = true;
    txn.put_model(m);
    txn.commit();
    return out;
}

}  // namespace modelfs
