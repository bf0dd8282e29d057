// A small test scanner: builds InstallScan values from a folder without detect_install (no
// install markers needed), classifying every file with the view's layout, so tests of planning
// and moving do not depend on detection. It takes every file the layout classifies as a model,
// where scan_install calls files outside the primary folders plain; the plan handles both.
// AdoptTest and the CLI tests use the real detect_install / scan_install.
#pragma once

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <string>

#include "modelfs/adopt/scan.h"
#include "modelfs/fs/view_layout.h"
#include "modelfs/fs/view_tree.h"

namespace modelfs::adopt::fake {

inline std::int64_t ns(const struct timespec& t) {
    return static_cast<std::int64_t>(t.tv_sec) * 1000000000 + t.tv_nsec;
}

inline void fill_stat(ScannedFile& f) {
    struct stat st;
    if (::lstat(f.real.c_str(), &st) != 0) return;
    f.size = static_cast<std::uint64_t>(st.st_size);
    f.dev = st.st_dev;
    f.ino = st.st_ino;
    f.mtime_ns = ns(st.st_mtim);
    f.ctime_ns = ns(st.st_ctim);
    f.mode = st.st_mode;
}

inline void walk(const std::filesystem::path& dir, const std::string& rel_dir, const Install& inst,
                 const fs::ViewLayout& layout, bool replaced, const std::string& origin,
                 std::vector<ScannedFile>& out) {
    namespace sfs = std::filesystem;
    std::vector<sfs::path> entries;
    for (const auto& e : sfs::directory_iterator(dir)) entries.push_back(e.path());
    std::sort(entries.begin(), entries.end());
    std::vector<ScannedFile> here;
    for (const auto& p : entries) {
        const std::string rel =
            rel_dir.empty() ? p.filename().string() : rel_dir + "/" + p.filename().string();
        ScannedFile f;
        f.path = inst.models_dir / rel;
        f.view_rel = rel;
        f.origin = origin;
        f.replaced = replaced;
        struct stat lst, st;
        ::lstat(p.c_str(), &lst);
        if (S_ISLNK(lst.st_mode)) {
            f.link_target = sfs::read_symlink(p).string();
            if (::stat(p.c_str(), &st) != 0) {
                f.kind = ScannedFile::Kind::broken_link;
                f.real = f.path;
                fill_stat(f);
                out.push_back(f);
                continue;
            }
            if (S_ISDIR(st.st_mode)) {
                // A folder link: its files stay where they are (adopt keeps them in place).
                walk(sfs::canonical(p), rel, inst, layout, false,
                     "link " + rel + " -> " + f.link_target, out);
                continue;
            }
        } else if (S_ISDIR(lst.st_mode)) {
            walk(p, rel, inst, layout, replaced, origin, out);
            continue;
        }
        f.real = sfs::canonical(p);
        fill_stat(f);
        if (auto vp = layout.classify(rel); vp && !vp->ext.empty()) {
            f.kind = ScannedFile::Kind::model;
            f.category = vp->category;
            f.name = vp->name;
            f.ext = vp->ext;
        }
        here.push_back(f);
    }
    // Sidecars: "<model stem><suffix>" beside a model.
    for (auto& f : here) {
        if (f.kind != ScannedFile::Kind::plain) continue;
        const std::string leaf = f.path.filename().string();
        for (const auto& m : here) {
            if (m.kind != ScannedFile::Kind::model) continue;
            const std::string stem = m.path.stem().string();
            for (const auto& suffix : fs::sidecar_suffixes())
                if (leaf == stem + suffix) {
                    f.kind = ScannedFile::Kind::sidecar;
                    f.sidecar_of = m.view_rel;
                    f.suffix = suffix;
                }
        }
    }
    out.insert(out.end(), here.begin(), here.end());
}

inline InstallScan fake_scan(const std::string& tool, const std::filesystem::path& root) {
    InstallScan s;
    s.install.tool = tool;
    s.install.root = std::filesystem::canonical(root);
    s.install.models_dir = s.install.root / "models";
    s.install.dirs.push_back({s.install.models_dir, "", true, "layout"});
    auto layout = *fs::ViewLayout::builtin(tool);
    walk(s.install.models_dir, "", s.install, layout, true, "layout", s.files);
    for (const auto& f : s.files)
        if (!f.replaced && f.kind != ScannedFile::Kind::broken_link) {
            auto dir = f.real.parent_path();
            if (std::none_of(s.install.dirs.begin(), s.install.dirs.end(),
                             [&](const ModelDir& d) { return d.path == dir; }))
                s.install.dirs.push_back({dir, "", false, f.origin});
        }
    std::sort(s.files.begin(), s.files.end(),
              [](const ScannedFile& a, const ScannedFile& b) { return a.path < b.path; });
    return s;
}

}  // namespace modelfs::adopt::fake
