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
    Walker(InstallScan& out, const stdfs::path& models_canon)
        : out_(out), models_canon_(models_canon) {}

    // Walks folder `dir` (as the tool reaches it), whose files the view shows under `view_dir`.
    void walk(const stdfs::path& dir, const std::string& view_dir, const std::string& origin,
              const struct stat& dir_st) {
        chain_.emplace_back(dir_st.st_dev, dir_st.st_ino);
        std::unique_ptr<DIR, int (*)(DIR*)> d(::opendir(dir.c_str()), ::closedir);
        if (!d) {
            const int e = errno;
            ScannedFile f = entry(dir, view_dir, origin);
            f.kind = ScannedFile::Kind::unreadable;
            f.real = canonical_or_normal(dir);
            f.replaced = inside(f.real, models_canon_);
            fill_stat(f, dir_st);
            f.problem = "cannot list folder " + dir.string() + ": " + errno_text(e);
            out_.files.push_back(std::move(f));
            chain_.pop_back();
            return;
        }
        std::vector<std::string> names;
        errno = 0;
        while (dirent* de = ::readdir(d.get())) {
            const std::string n = de->d_name;
            if (n != "." && n != "..") names.push_back(n);
        }
        d.reset();
        std::sort(names.begin(), names.end());
        for (const auto& n : names) visit(dir / n, join(view_dir, n), origin);
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

    void visit(const stdfs::path& p, const std::string& view_rel, const std::string& origin) {
        ScannedFile f = entry(p, view_rel, origin);
        struct stat lst {};
        if (::lstat(p.c_str(), &lst) != 0) {
            const int e = errno;
            f.kind = ScannedFile::Kind::unreadable;
            f.problem = "cannot stat " + p.string() + ": " + errno_text(e);
            f.replaced = inside(canonical_or_normal(p), models_canon_);
            out_.files.push_back(std::move(f));
            return;
        }
        struct stat st = lst;
        if (S_ISLNK(lst.st_mode)) {
            std::error_code ec;
            const stdfs::path target = stdfs::read_symlink(p, ec);
            f.link_target = ec ? std::string() : target.string();
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
            walk(p, view_rel, origin, st);
            return;
        }
        f.real = S_ISLNK(lst.st_mode) ? canonical_or_normal(p)
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
        const int fd = ::open(f.real.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
        if (fd < 0) {
            const int e = errno;
            f.kind = ScannedFile::Kind::unreadable;
            f.problem = "cannot open " + p.string() + ": " + errno_text(e);
        } else {
            ::close(fd);
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
        walk(p, view_rel, origin.starts_with("link ") ? origin : link_origin, st);
    }

    InstallScan& out_;
    stdfs::path models_canon_;
    std::vector<std::pair<dev_t, ino_t>> chain_;
};

std::string leaf(const std::string& rel) {
    const auto s = rel.rfind('/');
    return s == rel.npos ? rel : rel.substr(s + 1);
}

// The view folder `view_rel` lies in, if any.
const fs::ViewFolder* folder_of(const fs::ViewLayout& layout, const std::string& view_rel) {
    for (const auto& f : layout.folders())
        if (view_rel.size() > f.path.size() && view_rel.starts_with(f.path) &&
            view_rel[f.path.size()] == '/')
            return &f;
    return nullptr;
}

std::string lower(std::string s) {
    for (char& c : s)
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    return s;
}

void classify(InstallScan& scan, const fs::ViewLayout& layout) {
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
        const fs::ViewFolder* folder = folder_of(layout, f.view_rel);
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
}

}  // namespace

InstallScan scan_install(const Install& inst, const fs::ViewLayout& layout) {
    InstallScan out;
    out.install = inst;
    const stdfs::path models_canon = canonical_or_normal(inst.models_dir);
    Walker w(out, models_canon);
    std::vector<std::pair<dev_t, ino_t>> scanned;
    // dirs grows while walking (targets of folder links); those are walked through their link.
    const std::size_t n = inst.dirs.size();
    for (std::size_t i = 0; i < n; ++i) {
        const ModelDir& d = inst.dirs[i];
        struct stat st {};
        const int rc = ::stat(d.path.c_str(), &st);
        if (rc != 0 || !S_ISDIR(st.st_mode)) {
            const int e = errno;
            out.notes.push_back(d.origin + ": " + d.path.string() + ": " +
                                (rc != 0 ? errno_text(e) : std::string("not a folder")) +
                                ", not scanned");
            continue;
        }
        const auto id = std::make_pair(st.st_dev, st.st_ino);
        if (std::find(scanned.begin(), scanned.end(), id) != scanned.end()) {
            out.notes.push_back(d.origin + ": " + d.path.string() +
                                " is a folder already scanned, not scanned twice");
            continue;
        }
        scanned.push_back(id);
        w.walk(d.path, d.view_folder, d.origin, st);
    }
    std::sort(out.files.begin(), out.files.end(),
              [](const ScannedFile& a, const ScannedFile& b) { return a.path < b.path; });
    classify(out, layout);
    return out;
}

}  // namespace modelfs::adopt
