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
#include <cstring>
#include <fstream>
#include <map>

#include "modelfs/store/category.h"
#include "modelfs/store/errors.h"
#include "modelfs/store/model_name.h"
#include "modelfs/store/safe_open.h"
#include "modelfs/store/unique_fd.h"
#include "modelfs/store/version_source.h"
#include "other_stores_impl.h"

namespace stdfs = std::filesystem;

namespace modelfs::adopt {

namespace detail {

std::string env(const char* name) {
    const char* v = std::getenv(name);
    return v ? std::string(v) : std::string();
}

stdfs::path home_dir() {
    if (auto h = env("HOME"); !h.empty()) return h;
    if (const passwd* pw = ::getpwuid(::getuid()); pw && pw->pw_dir) return pw->pw_dir;
    return "/";
}

bool is_hex_name(std::string_view s, std::size_t n) {
    return s.size() == n && std::all_of(s.begin(), s.end(), [](char c) {
               return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
           });
}

FileDigests hash_file(const stdfs::path& p) {
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

stdfs::path default_hf_cache() {
    if (auto v = env("HF_HUB_CACHE"); !v.empty()) return v;
    if (auto v = env("HUGGINGFACE_HUB_CACHE"); !v.empty()) return v;  // the older name
    if (auto v = env("HF_HOME"); !v.empty()) return stdfs::path(v) / "hub";
    if (auto v = env("XDG_CACHE_HOME"); !v.empty()) return stdfs::path(v) / "huggingface" / "hub";
    return home_dir() / ".cache" / "huggingface" / "hub";
}

namespace {

std::vector<stdfs::path> sorted_entries(const stdfs::path& dir) {
    std::vector<stdfs::path> out;
    std::error_code ec;
    for (stdfs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
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
std::map<std::string, std::vector<std::string>> read_refs(const stdfs::path& refs) {
    std::map<std::string, std::vector<std::string>> out;
    std::error_code ec;
    if (!stdfs::is_directory(refs, ec)) return out;
    for (stdfs::recursive_directory_iterator it(refs, ec), end; !ec && it != end;
         it.increment(ec)) {
        std::error_code e;  // a broken ref must not end the walk
        // A ref is a small file the cache wrote; a link there is not followed (it could name
        // anything, a fifo among them).
        if (!stdfs::is_regular_file(it->symlink_status(e))) continue;
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
    stdfs::path dir;
    TrustedTree tree;
    std::size_t hashed = 0;
    std::string problem;                // non-empty: skip it
    std::vector<std::string> left_out;  // files not imported (a single-file model's README ...)
    std::vector<UniqueFd> fds;  // the files, opened without links, while root acts for a user
};

// Where the snapshot's files are read from (safe_open.h): the repo folder's fd, and the user
// root acts for (null: nobody, the caller's own permissions apply).
struct RepoAccess {
    stdfs::path repo;
    int repo_fd = -1;
    const ActingUser* as = nullptr;
};

// A link target the fd walk did not take (a link leaving the repo, or through another link),
// resolved by path as the cache's own user would: only when root acts for nobody.
bool add_by_path(const stdfs::path& repo, const stdfs::path& p, const std::string& rel, Snapshot& s,
                 TrustedFile& f) {
    std::error_code e;
    stdfs::path link = stdfs::read_symlink(p, e);
    if (e) {
        s.problem = "cannot read the link " + rel + ": " + e.message();
        return false;
    }
    stdfs::path target = (link.is_absolute() ? link : p.parent_path() / link).lexically_normal();
    const auto st = stdfs::status(target, e);
    if (!stdfs::exists(st)) {
        s.problem = rel + " points at " + target.string() +
                    ", which is missing (an interrupted download, or a cleaned blob)";
        return false;
    }
    if (!stdfs::is_regular_file(st)) {
        s.problem = rel + " is not a regular file";
        return false;
    }
    // The name the cache gave is blobs/<etag>; what gets hard-linked is the file itself, in
    // case that entry is a link too (blobs moved to another disk and linked back).
    const stdfs::path named = target;
    target = stdfs::canonical(target, e);
    if (e) {
        s.problem = "cannot resolve " + rel + ": " + e.message();
        return false;
    }
    f.source = target;
    const std::string name = named.filename().string();
    const bool in_blobs = named.parent_path().filename() == "blobs" &&
                          stdfs::equivalent(named.parent_path(), repo / "blobs", e);
    if (in_blobs && is_hex_name(name, 64)) {
        f.sha256 = *Sha256::from_hex(name);
        return true;
    }
    try {
        f.digests = hash_file(target);
    } catch (const std::exception& ex) {
        s.problem = ex.what();
        return false;
    }
    f.sha256 = f.digests->sha256;
    ++s.hashed;
    return true;
}

// One entry of a snapshot folder. Snapshot links are relative links into ../../blobs/ by design:
// followed only when they lead beneath the repo folder with no further link on the way
// (open_beneath from the repo's fd). While root acts for a user, anything else is a problem, and
// the file must be a regular file that user could read.
bool add_entry(const RepoAccess& ra, int dirfd, const std::string& name, const struct stat& lst,
               const std::string& rel, Snapshot& s, bool& has_model_index) {
    TrustedFile f;
    f.path = rel;
    const stdfs::path p = s.dir / rel;
    UniqueFd fd;
    stdfs::path in_repo;  // the file's path below the repo folder
    if (S_ISLNK(lst.st_mode)) {
        std::string link(4096, '\0');
        const ssize_t n = ::readlinkat(dirfd, name.c_str(), link.data(), link.size());
        if (n < 0) {
            s.problem = "cannot read the link " + rel + ": " + std::strerror(errno);
            return false;
        }
        link.resize(static_cast<std::size_t>(n));
        const stdfs::path below =
            (stdfs::path("snapshots") / s.commit / stdfs::path(rel).parent_path() / link)
                .lexically_normal();
        const bool beneath =
            !stdfs::path(link).is_absolute() && !below.empty() && *below.begin() != "..";
        int err = EXDEV;
        if (beneath) {
            fd = open_beneath(ra.repo_fd, below, O_RDONLY | O_NONBLOCK);
            err = errno;
        }
        if (!fd && err == ENOENT) {
            s.problem = rel + " points at " + (ra.repo / below).string() +
                        ", which is missing (an interrupted download, or a cleaned blob)";
            return false;
        }
        if (!fd && !ra.as && (err == ELOOP || err == EXDEV)) {
            if (!add_by_path(ra.repo, p, rel, s, f)) return false;
            if (rel == "model_index.json") has_model_index = true;
            s.tree.files.push_back(std::move(f));
            return true;
        }
        if (!fd) {
            s.problem = open_failure(rel + " -> " + link, err) +
                        " (a snapshot link must lead into the repo's blobs/ folder)";
            return false;
        }
        in_repo = below;
    } else {
        fd = open_beneath(dirfd, name, O_RDONLY | O_NONBLOCK);
        if (!fd) {
            s.problem = open_failure(rel, errno);
            return false;
        }
        in_repo = stdfs::path("snapshots") / s.commit / rel;
    }
    struct stat st;
    if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) {
        s.problem = rel + " is not a regular file";
        return false;
    }
    if (ra.as)
        if (auto why = ra.as->refusal(st, (ra.repo / in_repo).string())) {
            s.problem = *why;
            return false;
        }
    f.source = ra.repo / in_repo;
    const auto parts = std::distance(in_repo.begin(), in_repo.end());
    const std::string leaf = in_repo.filename().string();
    if (parts == 2 && *in_repo.begin() == "blobs" && is_hex_name(leaf, 64)) {
        f.sha256 = *Sha256::from_hex(leaf);
    } else {
        // A git blob (40 hex), or a plain file where the cache could not symlink: small, read.
        try {
            f.digests = digest_fd(fd.get(), nullptr, f.source.c_str());
        } catch (const std::exception& e) {
            s.problem = e.what();
            return false;
        }
        f.sha256 = f.digests->sha256;
        ++s.hashed;
    }
    if (ra.as) {
        f.opened_fd = fd.get();
        s.fds.push_back(std::move(fd));
    } else {
        // Linked into the store by path when the store may take it, as before.
        std::error_code e;
        f.source = stdfs::canonical(f.source, e);
        if (e) {
            s.problem = "cannot resolve " + rel + ": " + e.message();
            return false;
        }
    }
    if (rel == "model_index.json") has_model_index = true;
    s.tree.files.push_back(std::move(f));
    return true;
}

// The files of one snapshot, walked through fds: each symlink resolved to its blob, trusted by
// a 64-hex name in the repo's blobs/ folder, hashed otherwise.
bool walk_snapshot(const RepoAccess& ra, int dirfd, const std::string& rel_dir, Snapshot& s,
                   bool& has_model_index) {
    int err = 0;
    auto entries = list_dir(dirfd, &err);
    if (!entries) {
        s.problem = "cannot read " + (s.dir / rel_dir).string() + ": " + std::strerror(err);
        return false;
    }
    for (const auto& e : *entries) {
        const std::string rel = rel_dir.empty() ? e.name : rel_dir + "/" + e.name;
        if (!e.stat_ok) {
            s.problem = "cannot read " + rel;
            return false;
        }
        if (S_ISDIR(e.st.st_mode)) {
            UniqueFd sub = open_beneath(dirfd, e.name, O_RDONLY | O_DIRECTORY);
            if (!sub) {
                s.problem = open_failure(rel, errno);
                return false;
            }
            struct stat st;
            if (ra.as && ::fstat(sub.get(), &st) == 0)
                if (auto why = ra.as->refusal(st, (s.dir / rel).string())) {
                    s.problem = *why;
                    return false;
                }
            if (!walk_snapshot(ra, sub.get(), rel, s, has_model_index)) return false;
            continue;
        }
        if (!add_entry(ra, dirfd, e.name, e.st, rel, s, has_model_index)) return false;
    }
    return true;
}

// A repo that is one model file (a LoRA, a VAE, a checkpoint, a GGUF) next to a README, a config
// and the like is that file to the tools, not a folder: with exactly one file of a model
// extension (is_model_file_name's list) whose header names a category (category_from_content: the
// rule `import` applies to a file), the snapshot becomes a single-file model of that category
// named REPO/FILE (the file's name with its extension, file_model_name), and the other files
// are left out. Anything else stays a tree: a repo whose one
// weight file says nothing (a BERT, a pickle) may need its config and tokenizer next to it.
void take_single_file(Snapshot& s) {
    const auto is_weight = [](const TrustedFile& f) {
        return is_model_file_name(stdfs::path(f.path).filename().string());
    };
    if (std::count_if(s.tree.files.begin(), s.tree.files.end(), is_weight) != 1) return;
    auto weight = std::find_if(s.tree.files.begin(), s.tree.files.end(), is_weight);
    // Read through the fd the walk opened, or the path it resolved beneath the repo.
    UniqueFd fd(weight->opened_fd >= 0
                    ? ::open(("/proc/self/fd/" + std::to_string(weight->opened_fd)).c_str(),
                             O_RDONLY | O_CLOEXEC)
                    : ::open(weight->source.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    struct stat st;
    if (!fd || ::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) return;
    std::optional<Category> c;
    try {
        c = category_from_content(fd.get(), static_cast<std::uint64_t>(st.st_size), weight->path);
    } catch (const std::exception&) {
        return;  // unreadable here: the tree import reports it
    }
    if (!c || *c == Category::other) return;
    stdfs::path rel(weight->path);
    s.tree.name +=
        "/" + (rel.parent_path() / file_model_name(rel.filename().string()).name).generic_string();
    s.tree.category = *c;
    s.tree.single_file = true;
    for (const auto& f : s.tree.files)
        if (&f != &*weight) s.left_out.push_back(f.path);
    TrustedFile kept = std::move(*weight);
    s.tree.files.clear();
    s.tree.files.push_back(std::move(kept));
}

void read_snapshot(const RepoAccess& ra, Snapshot& s) {
    bool has_model_index = false;
    UniqueFd dir =
        open_beneath(ra.repo_fd, stdfs::path("snapshots") / s.commit, O_RDONLY | O_DIRECTORY);
    if (!dir) {
        s.problem = open_failure(s.dir.string(), errno);
        return;
    }
    if (!walk_snapshot(ra, dir.get(), "", s, has_model_index)) return;
    if (s.tree.files.empty()) s.problem = "the snapshot has no files";
    s.tree.category = has_model_index ? Category::diffusers : Category::other;
    if (!has_model_index) take_single_file(s);
}

void import_repo(Store& store, const RepoAccess& ra, const std::string& name, OtherStoreReport& rep,
                 Progress* progress) {
    const stdfs::path& repo = ra.repo;
    std::error_code ec;
    auto refs = read_refs(repo / "refs");
    std::string main_commit;
    for (const auto& [c, names] : refs)
        if (std::find(names.begin(), names.end(), "main") != names.end()) main_commit = c;

    std::vector<Snapshot> snaps;
    for (const auto& d : sorted_entries(repo / "snapshots")) {
        if (!stdfs::is_directory(stdfs::symlink_status(d, ec))) continue;
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
        stdfs::file_time_type newest{};
        for (const auto& s : snaps)
            if (auto t = stdfs::last_write_time(s.dir, ec);
                !ec && (current.empty() || t > newest)) {
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
        s.tree.source = to_source({SourceKind::hf_cache, {}, s.dir.string()});
        s.tree.note = "Hugging Face " + name + " commit " + s.commit;
        if (auto r = refs.find(s.commit); r != refs.end()) {
            std::string list;
            for (const auto& x : r->second) list += (list.empty() ? "" : ", ") + x;
            s.tree.note += " (refs: " + list + ")";
            item.detail = "refs: " + list;
        }
        s.tree.make_current = s.commit == current;
        read_snapshot(ra, s);
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
        if (!s.left_out.empty() && item.outcome != OtherStoreItem::Outcome::failed) {
            std::string list;
            for (const auto& f : s.left_out) list += (list.empty() ? "" : ", ") + f;
            item.detail += (item.detail.empty() ? "" : "; ") + std::string("a single ") +
                           std::string(to_string(s.tree.category)) + " file; left out: " + list;
        }
        rep.items.push_back(std::move(item));
    }
}

}  // namespace

OtherStoreReport import_hf_cache(Store& store, const stdfs::path& dir, Progress* progress) {
    std::error_code ec;
    if (!stdfs::is_directory(dir, ec))
        throw StoreError(ErrorKind::not_found,
                         "no Hugging Face hub cache at " + dir.string() +
                             " (give its folder, or set HF_HUB_CACHE or HF_HOME)");
    OtherStoreReport rep;
    rep.dir = stdfs::absolute(dir);
    // Root importing a user's cache judges its files as that user (safe_open.h).
    const auto as = ActingUser::for_tree(rep.dir);
    UniqueFd cache_fd(::open(rep.dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!cache_fd) throw_errno("opening " + rep.dir.string(), errno);
    if (as) {
        struct stat st;
        if (::fstat(cache_fd.get(), &st) != 0) throw_errno("reading " + rep.dir.string(), errno);
        if (auto why = as->refusal(st, rep.dir.string()))
            throw StoreError(ErrorKind::bad_input, *why);
    }
    for (const auto& e : sorted_entries(rep.dir)) {
        const std::string fname = e.filename().string();
        if (!stdfs::is_directory(stdfs::symlink_status(e, ec))) continue;
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
            // The repo folder by its fd from here on: a link swapped in for it is not followed.
            UniqueFd repo_fd = open_beneath(cache_fd.get(), fname, O_PATH | O_DIRECTORY);
            if (!repo_fd) throw StoreError(ErrorKind::io, open_failure(e.string(), errno));
            RepoAccess ra{e, repo_fd.get(), as ? &*as : nullptr};
            import_repo(store, ra, name, rep, progress);
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
