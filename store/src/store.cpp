#include "modelfs/store/store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <set>

#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include "modelfs/store/model_name.h"
#include "modelfs/store/store_folders.h"
#include "store_impl.h"

namespace stdfs = std::filesystem;

namespace modelfs {

std::int64_t unix_now() {
    return std::chrono::duration_cast<std::chrono::seconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

StoreLock::StoreLock(const stdfs::path& root, Mode mode) {
    stdfs::path p = root / "lock";
    fd_ = UniqueFd(::open(p.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
    if (!fd_) fd_ = UniqueFd(::open(p.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd_) throw_errno("opening " + p.string(), errno);
    if (::flock(fd_.get(), mode | LOCK_NB) == 0) return;
    if (errno != EWOULDBLOCK) throw_errno("locking " + p.string(), errno);
    spdlog::info("waiting for {} to finish in {}",
                 mode == exclusive ? "imports" : "garbage collection", root.string());
    while (::flock(fd_.get(), mode) != 0)
        if (errno != EINTR) throw_errno("locking " + p.string(), errno);
}

stdfs::path Store::default_path() {
    if (const char* s = std::getenv("MODELFS_STORE"); s && *s) return s;
    if (const char* x = std::getenv("XDG_DATA_HOME"); x && *x) return stdfs::path(x) / "modelfs";
    if (const char* h = std::getenv("HOME"); h && *h)
        return stdfs::path(h) / ".local" / "share" / "modelfs";
    throw StoreError(ErrorKind::no_store,
                     "no store given and neither MODELFS_STORE, XDG_DATA_HOME nor HOME is set; "
                     "pass --store DIR");
}

Store::Store(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Store::~Store() = default;
Store::Store(Store&&) noexcept = default;
Store& Store::operator=(Store&&) noexcept = default;

Store Store::init(const stdfs::path& root) {
    std::error_code ec;
    if (stdfs::exists(root / "catalog" / "data.mdb", ec)) return open(root);
    if (stdfs::exists(root, ec)) {
        if (!stdfs::is_directory(root, ec))
            throw StoreError(ErrorKind::no_store, root.string() + " exists and is not a folder");
        if (!stdfs::is_empty(root, ec))
            throw StoreError(ErrorKind::no_store,
                             root.string() +
                                 " is a non-empty folder that is not a modelfs store; choose an "
                                 "empty or new folder");
    }
    BlobStore::create_layout(root);
    {
        std::ofstream readme(root / "README.txt");
        readme << "This folder is a modelfs store. Do not edit it by hand: use the `modelfs` "
                  "command.\nIts format is described in store/FORMAT.md of the modelfs sources.\n";
    }
    auto cat = Catalog::open(root / "catalog", /*create=*/true);
    make_store_folders_private(root);  // catalog/ included, which Catalog::open made
    return Store(std::make_unique<Impl>(stdfs::absolute(root).lexically_normal(), std::move(cat)));
}

Store Store::open(const stdfs::path& root) {
    std::error_code ec;
    if (!stdfs::exists(root, ec))
        throw StoreError(ErrorKind::no_store,
                         "no store at " + root.string() + " (create one with `modelfs init`)");
    if (!stdfs::exists(root / "catalog" / "data.mdb", ec))
        throw StoreError(ErrorKind::no_store, root.string() +
                                                  " is not a modelfs store (no catalog/data.mdb); "
                                                  "create one with `modelfs init`");
    auto cat = Catalog::open(root / "catalog", /*create=*/false);
    Store s(std::make_unique<Impl>(stdfs::absolute(root).lexically_normal(), std::move(cat)));
    if (::access((root / "staging").c_str(), W_OK) == 0) {
        recover_moves(*s.impl_);
        std::size_t n = s.impl_->blobs.clean_staging([](const stdfs::path& p) {
            auto ext = p.extension().string();
            return ext == kJournalSuffix || ext == kMovedSuffix;
        });
        if (n)
            spdlog::info("removed {} unfinished import(s) from {}", n, (root / "staging").string());
    }
    return s;
}

const stdfs::path& Store::root() const {
    return impl_->root;
}
BlobStore& Store::blobs() {
    return impl_->blobs;
}
Catalog& Store::catalog() {
    return impl_->catalog;
}

std::vector<std::string> Store::models_using(const Sha256& blob) {
    std::vector<std::string> out;
    auto txn = impl_->catalog.read();
    txn.for_each_model([&](const Model& m) {
        for (std::size_t i = 0; i < m.versions.size(); ++i) {
            auto bl = m.versions[i].blobs();
            if (std::find(bl.begin(), bl.end(), blob) != bl.end()) {
                out.push_back(m.key() + "@" + m.versions[i].label);
            }
        }
    });
    return out;
}

namespace {

// The one model `query` matched; none is std::nullopt, several an error naming them all ("'foo'
// is a, b and c; give the extension").
std::optional<Model> only_match(std::vector<Model> matches, const std::string& query,
                                std::string_view advice) {
    if (matches.size() <= 1)
        return matches.empty() ? std::nullopt : std::optional(std::move(matches.front()));
    std::string list;
    for (std::size_t i = 0; i < matches.size(); ++i)
        list += (i == 0 ? "" : i + 1 == matches.size() ? " and " : ", ") + matches[i].key();
    throw StoreError(ErrorKind::conflict,
                     "'" + query + "' is " + list + "; " + std::string(advice));
}

}  // namespace

Resolved Store::resolve(const std::string& query, Progress* progress) {
    Resolved r;
    std::error_code ec;
    // A path on disk wins: `show ./foo.safetensors` means that file.
    if (query.find('/') != std::string::npos || stdfs::exists(query, ec)) {
        if (stdfs::is_regular_file(query, ec)) {
            UniqueFd fd(::open(query.c_str(), O_RDONLY | O_CLOEXEC));
            if (!fd) throw_errno("opening " + query, errno);
            r.path = stdfs::absolute(query);
            r.blob = digest_fd(fd.get(), progress, query.c_str()).sha256;
            auto txn = impl_->catalog.read();
            auto rec = txn.get_blob(*r.blob);
            r.in_store = rec && rec->state == BlobState::present;
            return r;
        }
    }
    auto txn = impl_->catalog.read();
    if (auto m = txn.get_model(query)) {
        r.model = std::move(m);
        return r;
    }
    std::vector<Model> by_name;
    txn.for_each_model([&](const Model& m) {
        if (m.name == query) by_name.push_back(m);
    });
    if (by_name.size() == 1) {
        r.model = std::move(by_name.front());
        return r;
    }
    if (by_name.size() > 1) {
        std::string list;
        for (const auto& m : by_name) list += "\n  " + m.key();
        throw StoreError(ErrorKind::conflict,
                         "'" + query + "' names several models; say which:" + list);
    }
    // No exact name: a name or key without its extension ("foo", "lora/foo") names the one model
    // it is the stem of.
    std::vector<Model> by_stem;
    txn.for_each_model([&](const Model& m) {
        const std::string_view stem = m.stem();
        if (stem.size() == m.name.size()) return;
        if (query == stem || query == model_key(m.category, stem)) by_stem.push_back(m);
    });
    if ((r.model = only_match(std::move(by_stem), query, "give the extension"))) return r;
    // No name or stem: a bare file name, with or without its extension ("lora_0003",
    // "lora_0003.safetensors"), names the one model in a subfolder whose file it is.
    if (query.find('/') == std::string::npos) {
        std::vector<Model> by_leaf;
        txn.for_each_model([&](const Model& m) {
            if (query == leaf_of(m.name) || query == leaf_of(m.stem())) by_leaf.push_back(m);
        });
        if ((r.model = only_match(std::move(by_leaf), query, "give the folder"))) return r;
    }
    if (is_hex(query) && query.size() >= 4) {
        auto found = txn.blobs_with_prefix(query, 10);
        if (found.size() == 1) {
            r.blob = found.front();
            r.in_store = true;
            return r;
        }
        if (found.size() > 1) {
            std::string list;
            for (const auto& h : found) list += "\n  " + h.hex();
            throw StoreError(
                ErrorKind::conflict,
                "hash prefix '" + query + "' matches several blobs; give more digits:" + list);
        }
    }
    throw StoreError(ErrorKind::not_found,
                     "nothing in the store matches '" + query +
                         "' (not a model name, a stored hash or hash prefix, or a file)");
}

std::optional<SafetensorsInfo> Store::safetensors_info(const Sha256& blob) {
    std::optional<BlobRecord> rec = impl_->catalog.read().get_blob(blob);
    if (!rec || rec->safetensors_header_len == 0 || rec->state != BlobState::present)
        return std::nullopt;
    // A composed blob's header is the start of its own pieces blob (tensor_split.h).
    const bool composed = rec->composed() && !impl_->blobs.exists(blob);
    const Sha256 file = composed ? rec->extents.front().blob : blob;
    if (composed && (rec->extents.front().offset != 0 ||
                     rec->extents.front().length < 8 + rec->safetensors_header_len))
        throw StoreError(ErrorKind::corrupt,
                         "composed blob " + blob.hex() + " does not start with its header's bytes");
    UniqueFd fd = impl_->blobs.open_blob(file);
    if (!fd) throw_errno("opening blob " + impl_->blobs.path_of(file).string(), errno);
    return read_safetensors_header(fd.get(), rec->size);
}

UniqueFd Store::open_blob_file(const Sha256& h) {
    UniqueFd fd = impl_->blobs.open_blob(h);
    if (fd || errno != ENOENT) return fd;
    auto rec = impl_->catalog.read().get_blob(h);
    if (!rec || !rec->composed() || rec->state != BlobState::present) {
        errno = ENOENT;
        return fd;
    }
    materialise(h, /*within_budget=*/false);
    return impl_->blobs.open_blob(h);
}

std::optional<Sha256> Store::autov3(const Sha256& blob, Progress* progress) {
    std::optional<BlobRecord> rec = impl_->catalog.read().get_blob(blob);
    if (!rec || rec->safetensors_header_len == 0) return std::nullopt;
    if (rec->autov3) return rec->autov3;
    if (rec->state != BlobState::present) return std::nullopt;
    if (progress) progress->total_bytes += rec->size - 8 - rec->safetensors_header_len;
    UniqueFd fd = impl_->blobs.open_blob(blob);
    Sha256 v3;
    if (!fd && errno == ENOENT && rec->composed()) {
        v3 = digest_composed(blob, *rec, -1, progress, 8 + rec->safetensors_header_len).sha256;
    } else {
        if (!fd) throw_errno("opening blob " + impl_->blobs.path_of(blob).string(), errno);
        v3 = sha256_fd_from(fd.get(), 8 + rec->safetensors_header_len, progress,
                            impl_->blobs.path_of(blob).c_str());
    }
    // Keep it; a read-only store just recomputes next time.
    try {
        auto txn = impl_->catalog.write();
        if (auto cur = txn.get_blob(blob)) {
            cur->autov3 = v3;
            txn.put_blob(blob, *cur);
            txn.commit();
        }
    } catch (const StoreError& e) {
        spdlog::debug("could not record AutoV3 of {}: {}", blob.hex(), e.what());
    }
    return v3;
}

StoreStats Store::stats(const AdoptedFiles& adopted) {
    StoreStats s;
    auto txn = impl_->catalog.read();
    txn.for_each_model([&](const Model& m) {
        ++s.models;
        s.versions += m.versions.size();
        auto& c = s.per_category[m.category];
        ++c.models;
        const auto a = adopted.find(model_key(m.category, m.name));
        // FORMAT.md "Saving": a content adopted installs had counts once per file of theirs it
        // replaced (none yet while the backup still holds it); any other content once.
        auto uses = [&](const Sha256& sha) -> std::uint64_t {
            if (a == adopted.end()) return 1;
            auto n = a->second.find(sha);
            return n == a->second.end() ? 1 : n->second;
        };
        for (const auto& v : m.versions) {
            std::uint64_t bytes = v.blob ? v.size * uses(*v.blob) : v.size;
            for (const auto& sc : v.sidecars) bytes += sc.size * uses(sc.blob);
            s.logical_bytes += bytes;
            c.bytes += bytes;
            s.files += v.is_tree() ? v.tree.size() : 1;
        }
    });
    // FORMAT.md "Saving": a composed blob takes no room but its materialised copy; what it reads
    // from other blobs is the tensor-level saving (its size, less its own pieces blob's).
    std::uint64_t composed = 0, pieces = 0;
    txn.for_each_blob([&](const Sha256& h, const BlobRecord& r) {
        if (r.state == BlobState::remote || r.state == BlobState::partial) {
            ++s.remote_blobs;
            s.remote_bytes += r.size;
        }
        if (r.state != BlobState::present) return;
        ++s.blobs;
        if (r.composed()) {
            ++s.composed_blobs;
            composed += r.size;
            if (impl_->blobs.exists(h)) {
                s.materialised_bytes += r.size;
                s.physical_bytes += r.size;
            }
            return;
        }
        if (r.pieces) pieces += r.size;
        s.physical_bytes += r.size;
    });
    s.tensor_saved_bytes = composed > pieces ? composed - pieces : 0;
    return s;
}

}  // namespace modelfs
