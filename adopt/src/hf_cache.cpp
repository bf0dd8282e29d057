// `modelfs import --hf-cache`: the Hugging Face hub cache as tree models, one version per
// snapshot. Layout (huggingface_hub "Manage your cache", file_download.py):
//   CACHE/models--ORG--NAME/blobs/<etag>          the files; etag = SHA-256 for LFS files,
//                                                 git blob SHA-1 (40 hex) for small ones;
//                                                 <etag>.incomplete while downloading
//   CACHE/models--ORG--NAME/refs/<revision>       a commit hash (refs/main, refs/pr/1, ...)
//   CACHE/models--ORG--NAME/snapshots/<commit>/…  relative symlinks ../../blobs/<etag>
//   CACHE/models--ORG--NAME/.no_exist/<commit>/…  empty markers of files the repo lacks
#include <fcntl.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <map>

#include "modelfs/store/errors.h"
#include "modelfs/store/unique_fd.h"
#include "other_stores_impl.h"

namespace fs = std::filesystem;

namespace modelfs::adopt {

namespace detail {

std::string env(const char* name) {
    const char* v = std::getenv(name);
    return v ? std::string(v) : std::string();
}

fs::path home_dir() {
    if (auto h = env("HOME"); !h.empty()) return h;
    if (const passwd* pw = ::getpwuid(::getuid()); pw && pw->pw_dir) return pw->pw_dir;
    return "/";
}

bool is_hex_name(std::string_view s, std::size_t n) {
    return s.size() == n && std::all_of(s.begin(), s.end(), [](char c) {
               return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
           });
}

FileDigests hash_file(const fs::path& p) {
    UniqueFd fd(::open(p.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) throw_errno("opening " + p.string(), errno);
    return digest_fd(fd.get(), nullptr, p.c_str());
}

void commit_version(Store& store, const TrustedTree& t, OtherStoreItem& item, Progress* progress) {
    item.label = t.label;
    item.files = t.files.size();
    try {
        item.model_key = model_key(t.category, t.name);
        TrustedTreeResult r = store.commit_trusted_tree(t, progress);
        item.model_key = r.model_key;
        item.label = r.label;
        item.size = r.size;
        item.new_bytes = r.new_bytes;
        item.linked = r.linked;
        item.copied = r.copied;
        item.unverified = r.unverified;
        if (!r.new_version)
            item.outcome = OtherStoreItem::Outcome::unchanged;
        else
            item.outcome = store.catalog().read().get_model(r.model_key)->versions.size() == 1
                               ? OtherStoreItem::Outcome::added
                               : OtherStoreItem::Outcome::new_version;
        auto m = store.catalog().read().get_model(r.model_key);
        item.current = m && m->current_version().label == r.label;
    } catch (const std::exception& e) {
        item.outcome = OtherStoreItem::Outcome::failed;
        item.detail = e.what();
    }
}

}  // namespace detail

using namespace detail;

bool OtherStoreReport::ok() const {
    return std::none_of(items.begin(), items.end(), [](const OtherStoreItem& i) {
        return i.outcome == OtherStoreItem::Outcome::failed;
    });
}

bool OtherStoreReport::nothing_new() const {
    return std::all_of(items.begin(), items.end(), [](const OtherStoreItem& i) {
        return i.outcome == OtherStoreItem::Outcome::unchanged;
    });
}

std::string_view to_string(OtherStoreItem::Outcome o) {
    switch (o) {
        case OtherStoreItem::Outcome::added:
            return "added";
        case OtherStoreItem::Outcome::new_version:
            return "new-version";
        case OtherStoreItem::Outcome::unchanged:
            return "unchanged";
        case OtherStoreItem::Outcome::skipped:
            return "skipped";
        case OtherStoreItem::Outcome::failed:
            return "failed";
    }
    return "?";
}

fs::path default_hf_cache() {
    if (auto v = env("HF_HUB_CACHE"); !v.empty()) return v;
    if (auto v = env("HUGGINGFACE_HUB_CACHE"); !v.empty()) return v;  // the older name
    if (auto v = env("HF_HOME"); !v.empty()) return fs::path(v) / "hub";
    if (auto v = env("XDG_CACHE_HOME"); !v.empty()) return fs::path(v) / "huggingface" / "hub";
    return home_dir() / ".cache" / "huggingface" / "hub";
}

namespace {

std::vector<fs::path> sorted_entries(const fs::path& dir) {
    std::vector<fs::path> out;
    std::error_code ec;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
        out.push_back(it->path());
    // A folder that is not there has nothing in it (a repo whose first download never got to
    // its snapshot); one that cannot be read is an error, not an empty cache.
    if (ec && ec != std::errc::no_such_file_or_directory)
        throw StoreError(ErrorKind::io, "cannot read " + dir.string() + ": " + ec.message());
    std::sort(out.begin(), out.end());
    return out;
}

std::string trim(std::string s) {
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.erase(0, 1);
    return s;
}

// refs/<name> -> commit, inverted: commit -> the ref names pointing at it.
std::map<std::string, std::vector<std::string>> read_refs(const fs::path& refs) {
    std::map<std::string, std::vector<std::string>> out;
    std::error_code ec;
    if (!fs::is_directory(refs, ec)) return out;
    for (fs::recursive_directory_iterator it(refs, ec), end; !ec && it != end; it.increment(ec)) {
        std::error_code e;  // a broken ref must not end the walk
        if (!it->is_regular_file(e)) continue;
        std::ifstream in(it->path());
        std::string commit;
        std::getline(in, commit);
        commit = trim(commit);
        if (commit.empty()) continue;
        out[commit].push_back(it->path().lexically_relative(refs).generic_string());
    }
    for (auto& [c, names] : out) std::sort(names.begin(), names.end());
    return out;
}

// The shortest prefix length (at least 7, git's default) that tells every commit apart.
std::size_t short_length(const std::vector<std::string>& commits) {
    std::size_t n = 7;
    for (;; ++n) {
        std::vector<std::string> pre;
        for (const auto& c : commits) pre.push_back(c.substr(0, n));
        std::sort(pre.begin(), pre.end());
        if (std::adjacent_find(pre.begin(), pre.end()) == pre.end()) return n;
        if (n >= 64) return n;
    }
}

struct Snapshot {
    std::string commit;
    fs::path dir;
    TrustedTree tree;
    std::size_t hashed = 0;
    std::string problem;  // non-empty: skip it
};

// The files of one snapshot: each symlink resolved to its blob, trusted by a 64-hex name in the
// repo's blobs/ folder, hashed otherwise.
void read_snapshot(const fs::path& repo, Snapshot& s) {
    std::error_code ec;
    bool has_model_index = false;
    for (fs::recursive_directory_iterator it(s.dir, ec), end; !ec && it != end; it.increment(ec)) {
        const fs::path p = it->path();
        const std::string rel = p.lexically_relative(s.dir).generic_string();
        // Its own error code: `ec` is the walk's, and must only say whether the walk failed.
        std::error_code e;
        const auto lst = fs::symlink_status(p, e);
        if (fs::is_directory(lst)) continue;
        fs::path target = p;
        if (fs::is_symlink(lst)) {
            fs::path link = fs::read_symlink(p, e);
            if (e) {
                s.problem = "cannot read the link " + rel + ": " + e.message();
                return;
            }
            target = (link.is_absolute() ? link : p.parent_path() / link).lexically_normal();
        }
        const auto st = fs::status(target, e);
        if (!fs::exists(st)) {
            s.problem = rel + " points at " + target.string() +
                        ", which is missing (an interrupted download, or a cleaned blob)";
            return;
        }
        if (!fs::is_regular_file(st)) {
            s.problem = rel + " is not a regular file";
            return;
        }
        // The name the cache gave is blobs/<etag>; what gets hard-linked is the file itself, in
        // case that entry is a link too (blobs moved to another disk and linked back).
        const fs::path named = target;
        target = fs::canonical(target, e);
        if (e) {
            s.problem = "cannot resolve " + rel + ": " + e.message();
            return;
        }
        TrustedFile f;
        f.path = rel;
        f.source = target;
        const std::string name = named.filename().string();
        const bool in_blobs = named.parent_path().filename() == "blobs" &&
                              fs::equivalent(named.parent_path(), repo / "blobs", e);
        if (in_blobs && is_hex_name(name, 64)) {
            f.sha256 = *Sha256::from_hex(name);
        } else {
            // A git blob (40 hex), or a plain file where the cache could not symlink: small, read.
            try {
                f.digests = hash_file(target);
            } catch (const std::exception& e) {
                s.problem = e.what();
                return;
            }
            f.sha256 = f.digests->sha256;
            ++s.hashed;
        }
        if (rel == "model_index.json") has_model_index = true;
        s.tree.files.push_back(std::move(f));
    }
    if (ec) {
        s.problem = "cannot read " + s.dir.string() + ": " + ec.message();
        return;
    }
    if (s.tree.files.empty()) s.problem = "the snapshot has no files";
    s.tree.category = has_model_index ? Category::diffusers : Category::other;
}

void import_repo(Store& store, const fs::path& repo, const std::string& name, OtherStoreReport& rep,
                 Progress* progress) {
    std::error_code ec;
    auto refs = read_refs(repo / "refs");
    std::string main_commit;
    for (const auto& [c, names] : refs)
        if (std::find(names.begin(), names.end(), "main") != names.end()) main_commit = c;

    std::vector<Snapshot> snaps;
    for (const auto& d : sorted_entries(repo / "snapshots")) {
        if (!fs::is_directory(fs::symlink_status(d, ec))) continue;
        Snapshot s;
        s.commit = d.filename().string();
        s.dir = d;
        snaps.push_back(std::move(s));
    }
    if (snaps.empty()) {
        rep.notes.push_back(repo.filename().string() + ": no snapshots; nothing to import");
        return;
    }
    std::vector<std::string> commits;
    for (const auto& s : snaps) commits.push_back(s.commit);
    const std::size_t n = short_length(commits);
    // The version refs/main names is current; without refs/main, the newest snapshot.
    std::string current = main_commit;
    if (current.empty() || std::none_of(snaps.begin(), snaps.end(),
                                        [&](const Snapshot& s) { return s.commit == current; })) {
        fs::file_time_type newest{};
        for (const auto& s : snaps)
            if (auto t = fs::last_write_time(s.dir, ec); !ec && (current.empty() || t > newest)) {
                newest = t;
                current = s.commit;
            }
    }
    // The current one last, so a failure of another never leaves it behind.
    std::stable_partition(snaps.begin(), snaps.end(),
                          [&](const Snapshot& s) { return s.commit != current; });

    if (progress) progress->total_items += snaps.size();
    for (auto& s : snaps) {
        if (progress) progress->done_items += 1;
        OtherStoreItem item;
        item.source = repo.filename().string() + "/snapshots/" + s.commit;
        s.tree.name = name;
        s.tree.label = s.commit.substr(0, n);
        s.tree.source = "hf-cache:" + s.dir.string();
        s.tree.note = "Hugging Face " + name + " commit " + s.commit;
        if (auto r = refs.find(s.commit); r != refs.end()) {
            std::string list;
            for (const auto& x : r->second) list += (list.empty() ? "" : ", ") + x;
            s.tree.note += " (refs: " + list + ")";
            item.detail = "refs: " + list;
        }
        s.tree.make_current = s.commit == current;
        read_snapshot(repo, s);
        item.hashed = s.hashed;
        if (!s.problem.empty()) {
            item.outcome = OtherStoreItem::Outcome::skipped;
            item.label = s.tree.label;
            item.model_key = model_key(s.tree.category, name);
            item.detail = "snapshot " + s.commit + ": " + s.problem + "; this version was skipped";
            item.files = s.tree.files.size();
            rep.items.push_back(std::move(item));
            continue;
        }
        commit_version(store, s.tree, item, progress);
        rep.items.push_back(std::move(item));
    }
}

}  // namespace

OtherStoreReport import_hf_cache(Store& store, const fs::path& dir, Progress* progress) {
    std::error_code ec;
    if (!fs::is_directory(dir, ec))
        throw StoreError(ErrorKind::not_found,
                         "no Hugging Face hub cache at " + dir.string() +
                             " (give its folder, or set HF_HUB_CACHE or HF_HOME)");
    OtherStoreReport rep;
    rep.dir = fs::absolute(dir);
    for (const auto& e : sorted_entries(rep.dir)) {
        const std::string fname = e.filename().string();
        if (!fs::is_directory(fs::symlink_status(e, ec))) continue;
        if (fname.rfind("datasets--", 0) == 0 || fname.rfind("spaces--", 0) == 0) {
            rep.notes.push_back(fname + ": " + (fname[0] == 'd' ? "a dataset" : "a space") +
                                ", not a model; left out");
            continue;
        }
        if (fname.rfind("models--", 0) != 0) continue;  // .locks, and anything not a repo
        // Hub repo ids never contain "--" (the hub refuses them), so the first one splits
        // the owner from the name; a repo without owner ("bert-base-cased") has none.
        const std::string id = fname.substr(8);
        const auto sep = id.find("--");
        const std::string name =
            sep == std::string::npos ? id : id.substr(0, sep) + "/" + id.substr(sep + 2);
        try {
            check_model_name(name);
        } catch (const std::exception& e) {
            rep.notes.push_back(fname + ": " + e.what() + "; left out");
            continue;
        }
        try {
            import_repo(store, e, name, rep, progress);
        } catch (const std::exception& err) {
            OtherStoreItem item;
            item.source = fname;
            item.model_key = name;
            item.outcome = OtherStoreItem::Outcome::failed;
            item.detail = err.what();
            rep.items.push_back(std::move(item));
        }
    }
    return rep;
}

}  // namespace modelfs::adopt
