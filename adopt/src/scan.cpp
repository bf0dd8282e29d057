// scan_install: every file an install's model folders hold, classified the way the tool's view
// would show it. Two passes: the walk records what is on disk (following folder links, never
// around a loop), then classification decides model / sidecar / plain per file, with the reason
// for every plain file so reports can say why it stays a plain file at its path.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "install_config.h"
#include "modelfs/adopt/scan.h"
#include "modelfs/store/safe_open.h"
#include "modelfs/store/text.h"
#include "modelfs/store/view_files.h"

namespace modelfs::adopt {

namespace stdfs = std::filesystem;
using detail::canonical_or_normal;
using detail::inside;

namespace {

std::string join(const std::string& dir, const std::string& name) {
    return dir.empty() ? name : dir + "/" + name;
}

std::int64_t ns(const timespec& t) {
    return static_cast<std::int64_t>(t.tv_sec) * 1'000'000'000 + t.tv_nsec;
}

void fill_stat(ScannedFile& f, const struct stat& st) {
    f.size = S_ISREG(st.st_mode) ? static_cast<std::uint64_t>(st.st_size) : 0;
    f.dev = st.st_dev;
    f.ino = st.st_ino;
    f.mtime_ns = ns(st.st_mtim);
    f.ctime_ns = ns(st.st_ctim);
    f.mode = st.st_mode;
}

std::string errno_text(int e) {
    return std::strerror(e);
}

class Walker {
  public:
    Walker(InstallScan& out, const stdfs::path& models_canon, const ActingUser* as)
        : out_(out), models_canon_(models_canon), as_(as) {}

    // Walks folder `dir` (as the tool reaches it; open at `dfd`), whose files the view shows
    // under `view_dir`. `real` is where it is, links resolved. Entries are listed and looked at
    // through `dfd` (safe_open.h), so a name swapped for a link meanwhile is seen as that link.
    void walk(const stdfs::path& dir, const stdfs::path& real, const std::string& view_dir,
              const std::string& origin, const struct stat& dir_st, UniqueFd dfd) {
        int e = errno;
        std::optional<std::vector<DirEntry>> entries;
        if (dfd) entries = list_dir(dfd.get(), &e);
        if (!entries) {
            ScannedFile f = entry(dir, view_dir, origin);
            f.kind = ScannedFile::Kind::unreadable;
            f.real = real;
            f.replaced = inside(f.real, models_canon_);
            fill_stat(f, dir_st);
            f.problem = "cannot list folder " + dir.string() + ": " + errno_text(e);
            out_.files.push_back(std::move(f));
            return;
        }
        chain_.emplace_back(dir_st.st_dev, dir_st.st_ino);
        for (const auto& de : *entries)
            visit(dir / de.name, real / de.name, join(view_dir, de.name), origin, dfd.get(), de);
        chain_.pop_back();
    }

  private:
    ScannedFile entry(const stdfs::path& path, const std::string& view_rel,
                      const std::string& origin) {
        ScannedFile f;
        f.path = path;
        f.real = path;
        f.view_rel = view_rel;
        f.origin = origin;
        return f;
    }

    bool in_chain(const struct stat& st) const {
        return std::find(chain_.begin(), chain_.end(), std::make_pair(st.st_dev, st.st_ino)) !=
               chain_.end();
    }

    // Root adopting a user's install: judged as that user, and no link is followed.
    bool refused(ScannedFile& f, const struct stat& st, const stdfs::path& p) {
        if (!as_) return false;
        auto why = as_->refusal(st, p.string(), true);
        if (!why) return false;
        f.kind = ScannedFile::Kind::unreadable;
        f.problem = *why;
        fill_stat(f, st);
        out_.files.push_back(std::move(f));
        return true;
    }

    // `real` is `p` with links resolved as far as the walk knows (exact while acting for a
    // user, who gets no link followed).
    void visit(const stdfs::path& p, const stdfs::path& real, const std::string& view_rel,
               const std::string& origin, int dfd, const DirEntry& de) {
        ScannedFile f = entry(p, view_rel, origin);
        const std::string name = p.filename().string();
        if (!de.stat_ok) {
            f.kind = ScannedFile::Kind::unreadable;
            f.problem = "cannot stat " + p.string();
            f.replaced = inside(real, models_canon_);
            out_.files.push_back(std::move(f));
            return;
        }
        const struct stat& lst = de.st;
        struct stat st = lst;
        if (S_ISLNK(lst.st_mode)) {
            std::string target(4096, '\0');
            const ssize_t n = ::readlinkat(dfd, name.c_str(), target.data(), target.size());
            f.link_target = n < 0 ? std::string() : target.substr(0, static_cast<std::size_t>(n));
            if (as_) {
                f.real = real;
                f.replaced = inside(f.real, models_canon_);
                fill_stat(f, lst);
                f.kind = ScannedFile::Kind::unreadable;
                f.problem = p.string() + " -> " + f.link_target +
                            ": a symbolic link, not followed while root adopts the install of " +
                            as_->name + "; left as it is";
                out_.files.push_back(std::move(f));
                return;
            }
            if (::stat(p.c_str(), &st) != 0) {
                const int e = errno;
                // The link's own place decides whether it goes away with models/.
                f.real = canonical_or_normal(p.parent_path()) / p.filename();
                f.replaced = inside(f.real, models_canon_);
                fill_stat(f, lst);
                if (e == EACCES) {
                    f.kind = ScannedFile::Kind::unreadable;
                    f.problem = "cannot follow link " + p.string() + " -> " + f.link_target + ": " +
                                errno_text(e);
                } else {
                    f.kind = ScannedFile::Kind::broken_link;
                    f.problem = p.string() + " -> " + f.link_target + ": " + errno_text(e);
                    out_.notes.push_back(f.problem + ": broken link");
                }
                out_.files.push_back(std::move(f));
                return;
            }
            if (S_ISDIR(st.st_mode)) {
                follow_folder_link(p, view_rel, origin, f.link_target, st);
                return;
            }
        }
        if (S_ISDIR(st.st_mode)) {
            if (in_chain(st)) {
                out_.notes.push_back(p.string() +
                                     ": a folder already being scanned (a loop), not "
                                     "entered again");
                return;
            }
            f.real = real;
            if (refused(f, st, p)) return;
            walk(p, real, view_rel, origin, st, open_beneath(dfd, name, O_RDONLY | O_DIRECTORY));
            return;
        }
        f.real = as_                    ? real
                 : S_ISLNK(lst.st_mode) ? canonical_or_normal(p)
                                        : canonical_or_normal(p.parent_path()) / p.filename();
        f.replaced = inside(f.real, models_canon_);
        fill_stat(f, st);
        if (!S_ISREG(st.st_mode)) {
            f.kind = ScannedFile::Kind::special;
            f.problem = p.string() + " is a " +
                        (S_ISFIFO(st.st_mode)   ? "fifo"
                         : S_ISSOCK(st.st_mode) ? "socket"
                                                : "device node") +
                        ", not a file";
            out_.files.push_back(std::move(f));
            return;
        }
        // Opened, not access()ed: root passes access() for files it could still not read (a
        // FUSE folder of another user, an NFS root squash), and opening is what hashing will do.
        const int flags = O_RDONLY | O_NONBLOCK | O_NOCTTY;
        UniqueFd fd = S_ISLNK(lst.st_mode) ? UniqueFd(::open(f.real.c_str(), flags | O_CLOEXEC))
                                           : open_beneath(dfd, name, flags);
        struct stat fst;
        if (!fd) {
            const int e = errno;
            f.kind = ScannedFile::Kind::unreadable;
            f.problem = "cannot open " + p.string() + ": " + errno_text(e);
        } else if (::fstat(fd.get(), &fst) == 0 && refused(f, fst, p)) {
            return;
        } else {
            f.kind = ScannedFile::Kind::plain;  // classified later
        }
        out_.files.push_back(std::move(f));
    }

    void follow_folder_link(const stdfs::path& p, const std::string& view_rel,
                            const std::string& origin, const std::string& target,
                            const struct stat& st) {
        if (in_chain(st)) {
            out_.notes.push_back(p.string() + " -> " + target +
                                 ": leads back into a folder already being scanned (a loop), "
                                 "not followed");
            return;
        }
        const stdfs::path real = canonical_or_normal(p);
        std::string shown = p.string();
        const stdfs::path& root = out_.install.root;
        if (!root.empty() && inside(p, root)) shown = p.lexically_relative(root).string();
        std::string link_origin = "link " + shown + " -> " + target;
        if (!inside(real, models_canon_)) {
            // Its files stay where they are; the planner lists the folder as kept in place.
            out_.install.dirs.push_back({real, view_rel, false, link_origin});
            out_.notes.push_back(link_origin + ": a folder link; the files in " + real.string() +
                                 " stay there, shared with the store");
        }
        // A link inside a linked folder: the outermost link is what the user set up.
        walk(p, real, view_rel, origin.starts_with("link ") ? origin : link_origin, st,
             open_no_symlinks(real, O_RDONLY | O_DIRECTORY));
    }

    InstallScan& out_;
    stdfs::path models_canon_;
    const ActingUser* as_;
    std::vector<std::pair<dev_t, ino_t>> chain_;
};

std::string leaf(const std::string& rel) {
    const auto s = rel.rfind('/');
    return s == rel.npos ? rel : rel.substr(s + 1);
}

// The view folder `view_rel` lies in, if any.
const layouts::ViewFolder* folder_of(const layouts::ViewLayout& layout,
                                     const std::string& view_rel) {
    for (const auto& f : layout.folders())
        if (view_rel.size() > f.path.size() && view_rel.starts_with(f.path) &&
            view_rel[f.path.size()] == '/')
            return &f;
    return nullptr;
}

void classify(InstallScan& scan, const layouts::ViewLayout& layout) {
    using Kind = ScannedFile::Kind;
    const std::string view = layout.name();
    // Which ModelDir a file came through decides the order of model-name clashes: models/ first,
    // so the file the view shows at a path is the one that was at that path.
    std::map<std::string, std::size_t> dir_rank;
    for (std::size_t i = 0; i < scan.install.dirs.size(); ++i)
        dir_rank.emplace(scan.install.dirs[i].origin, i);
    const auto rank = [&](const ScannedFile& f) {
        auto it = dir_rank.find(f.origin);
        return it == dir_rank.end() ? scan.install.dirs.size() : it->second;
    };

    const stdfs::path models = scan.install.models_dir.lexically_normal();
    std::vector<ScannedFile*> candidates, others;
    for (auto& f : scan.files) {
        if (f.kind != Kind::plain) continue;  // broken, unreadable, special: final
        const auto vp = layout.classify(f.view_rel);
        const layouts::ViewFolder* folder = folder_of(layout, f.view_rel);
        if (vp && !vp->ext.empty()) {
            if (folder && folder->primary) {
                f.category = vp->category;
                f.name = vp->name;
                f.ext = vp->ext;
                candidates.push_back(&f);
            } else {
                f.problem = "in " + vp->folder + "/, which the " + view + " view shows in " +
                            layout.folder_for(vp->category).value_or("no folder") +
                            "/; kept as a plain file at its path";
            }
        } else if (vp) {
            f.problem = "part of the folder model " + vp->folder + "/" +
                        vp->name.substr(0, vp->name.find('/')) +
                        "; kept as a plain file at its path";
        } else if (!folder) {
            f.problem = "not in a model folder of the " + view + " view; kept as a plain file";
        } else {
            const std::string low = lower(leaf(f.view_rel));
            const auto skip = std::find_if(folder->exclude.begin(), folder->exclude.end(),
                                           [&](const std::string& e) { return low.ends_with(e); });
            if (skip != folder->exclude.end())
                f.problem = "the " + view + " view skips *" + *skip + " in " + folder->path +
                            "/; kept as a plain file at its path";
            else
                others.push_back(&f);
        }
    }

    std::stable_sort(candidates.begin(), candidates.end(),
                     [&](const ScannedFile* a, const ScannedFile* b) {
                         const bool ia = inside(a->path, models), ib = inside(b->path, models);
                         if (ia != ib) return ia;
                         if (rank(*a) != rank(*b)) return rank(*a) < rank(*b);
                         return a->path < b->path;
                     });
    std::map<std::string, const ScannedFile*> by_model;  // "category/name" -> the model
    // Models by folder and stem (file name without the extension), for the sidecar rule.
    std::map<std::pair<stdfs::path, std::string>, const ScannedFile*> stems;
    for (ScannedFile* f : candidates) {
        const std::string key = std::string(to_string(f->category)) + "/" + f->name;
        auto [it, fresh] = by_model.emplace(key, f);
        if (!fresh) {
            f->problem = "same model as " + it->second->path.string() + " (" + key +
                         "), which the view shows; kept as a plain file at its path";
            f->category = Category::other;
            f->name.clear();
            f->ext.clear();
            continue;
        }
        f->kind = Kind::model;
        const std::string leaf_name = f->path.filename().string();
        stems.emplace(std::make_pair(f->path.parent_path(),
                                     leaf_name.substr(0, leaf_name.size() - f->ext.size())),
                      f);
    }

    for (ScannedFile* f : others) {
        const std::string name = f->path.filename().string();
        const ScannedFile* best = nullptr;
        std::size_t best_len = 0;
        // "<stem>.<suffix>": try the longest stem first (foo.v2.png goes to foo.v2, not foo).
        for (std::size_t dot = name.rfind('.'); dot != name.npos && dot > 0;
             dot = name.rfind('.', dot - 1)) {
            if (dot + 1 == name.size()) continue;
            auto it = stems.find({f->path.parent_path(), name.substr(0, dot)});
            if (it != stems.end()) {
                best = it->second;
                best_len = dot;
                break;
            }
        }
        if (!best) {
            f->problem = "not a model of the " + view +
                         " view nor named after one beside it; kept as a plain file";
            continue;
        }
        f->kind = Kind::sidecar;
        f->category = best->category;
        f->name = best->name;
        f->sidecar_of = best->view_rel;
        f->suffix = name.substr(best_len);
    }

    // What is left in the models folder and no model folder of the view lists (an .onnx in
    // rembg/, a .dat, a .gguf outside unet/) is stored by content at its own path, as the mount
    // stores such a file saved there (Namespace::role); view_files.h draws the line.
    for (auto& f : scan.files) {
        if (f.kind != Kind::plain || !inside(f.path, models)) continue;
        const auto vp = layout.classify(f.view_rel);
        if ((vp && !vp->ext.empty()) || !stored_by_content(f.view_rel, f.size)) continue;
        f.kind = Kind::model;
        f.category = Category::file;
        f.name = view_file_name(view, f.view_rel);
        f.ext = view_file_ext(f.view_rel);
        f.problem.clear();
    }
}

}  // namespace

InstallScan scan_install(const Install& inst, const layouts::ViewLayout& layout,
                         const ScanOptions& opts) {
    InstallScan out;
    out.install = inst;
    const stdfs::path models_canon = canonical_or_normal(inst.models_dir);
    const stdfs::path root_canon = canonical_or_normal(inst.root);
    const auto as = ActingUser::for_tree(inst.root);
    if (as) out.acting_for = as->name;
    Walker w(out, models_canon, as ? &*as : nullptr);
    std::vector<std::pair<dev_t, ino_t>> scanned;
    // dirs grows while walking (targets of folder links); those are walked through their link.
    const std::size_t n = inst.dirs.size();
    for (std::size_t i = 0; i < n; ++i) {
        const ModelDir& d = inst.dirs[i];
        const stdfs::path real = canonical_or_normal(d.path);
        // A folder the tool's configuration names anywhere: root takes nothing from outside the
        // user's install unless asked (safe_open.h).
        if (as && !inside(real, root_canon) && !opts.outside_install) {
            const std::string why = d.origin + ": " + d.path.string() +
                                    " is outside the install; not adopted while root acts for " +
                                    as->name + " (--outside-install adopts it, by the same rules)";
            if (d.replaced) out.models_refused = why;
            out.notes.push_back(why);
            out.outside.push_back(d.path);
            continue;
        }
        // The folder itself opened without a link anywhere in its real path, then judged.
        UniqueFd dfd = open_no_symlinks(real, O_RDONLY | O_DIRECTORY);
        struct stat st {};
        const int rc = dfd ? ::fstat(dfd.get(), &st) : -1;
        if (rc != 0 || !S_ISDIR(st.st_mode)) {
            const int e = errno;
            out.notes.push_back(d.origin + ": " + d.path.string() + ": " +
                                (rc != 0 ? errno_text(e) : std::string("not a folder")) +
                                ", not scanned");
            continue;
        }
        if (as)
            if (auto why = as->refusal(st, d.path.string(), d.replaced)) {
                // The models folder is renamed and mounted over: it must be the user's to change.
                if (d.replaced) out.models_refused = d.origin + ": " + *why;
                out.notes.push_back(d.origin + ": " + *why);
                continue;
            }
        const auto id = std::make_pair(st.st_dev, st.st_ino);
        if (std::find(scanned.begin(), scanned.end(), id) != scanned.end()) {
            out.notes.push_back(d.origin + ": " + d.path.string() +
                                " is a folder already scanned, not scanned twice");
            continue;
        }
        scanned.push_back(id);
        w.walk(d.path, real, d.view_folder, d.origin, st, std::move(dfd));
    }
    std::sort(out.files.begin(), out.files.end(),
              [](const ScannedFile& a, const ScannedFile& b) { return a.path < b.path; });
    classify(out, layout);
    return out;
}

}  // namespace modelfs::adopt
