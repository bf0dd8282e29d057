// mount, umount and views: the store as a folder tree for each tool.
#include <algorithm>
#include <cstdio>
#include <iostream>

#include <unistd.h>

#include <fstream>
#include <sstream>

#include <spdlog/spdlog.h>

#include "cli.h"
#include "modelfs/fs/mount.h"
#include "mount_helper.h"

namespace modelfs::cli {

namespace {

bool is_builtin_name(const std::string& name) {
    const auto names = layouts::ViewLayout::builtin_names();
    return std::find(names.begin(), names.end(), name) != names.end();
}

// The mount's help lists the views it can show, the config file's included. The help is printed
// after the options are parsed, so --config is known by then.
std::string views_footer(const Globals& g) {
    fs::MountOptions o;
    std::string trouble;
    try {
        o.layouts = g.config().layouts;
    } catch (const ConfigError& e) {
        trouble = std::string("\nThe config file cannot be used: ") + e.what();
    }
    std::string s;
    for (const auto& v : fs::views_to_serve(o)) {
        const bool user =
            std::any_of(o.layouts.begin(), o.layouts.end(),
                        [&](const layouts::ViewLayout& l) { return l.name() == v.name(); });
        s += (s.empty() ? "Views: " : ", ") + v.name() + (user ? " (config file)" : "");
    }
    return s + ".\n`modelfs views` shows each view's folders." + trouble;
}

// views_to_serve resolves an alias ("automatic1111") to the built-in layout even when the config
// replaces it; with the canonical name it finds the replacement.
std::string canonical_view(const std::string& name) {
    if (auto b = layouts::ViewLayout::builtin(name)) return b->name();
    return name;
}

std::string join(const std::vector<std::string>& v, const char* sep) {
    std::string s;
    for (const auto& e : v) s += (s.empty() ? "" : sep) + e;
    return s;
}

int run_views(const Globals& g, const std::string& only) {
    const Config& c = g.config();
    fs::MountOptions o;
    o.layouts = mount_layouts(c);
    o.view = canonical_view(only);
    // The same merge the mount does, so this shows exactly what a mount would.
    const std::vector<layouts::ViewLayout> views = views_or_usage(o);
    const auto from_config = [&](const layouts::ViewLayout& v) {
        return std::any_of(c.layouts.begin(), c.layouts.end(),
                           [&](const layouts::ViewLayout& l) { return l.name() == v.name(); });
    };

    if (g.json) {
        nlohmann::json out = nlohmann::json::array();
        for (const auto& v : views) {
            nlohmann::json j = v.to_json();
            j["source"] = from_config(v) ? "config" : "built-in";
            j["replaces_builtin"] = from_config(v) && is_builtin_name(v.name());
            j["show_versions"] = v.show_versions();
            out.push_back(std::move(j));
        }
        nlohmann::json files = nlohmann::json::array();
        for (const auto& f : c.files) files.push_back(f.string());
        print_json(
            {{"config", c.source.empty() ? nlohmann::json() : nlohmann::json(c.source.string())},
             {"config_files", std::move(files)},
             {"views", std::move(out)}});
        return kOk;
    }
    if (!g.quiet) {
        std::string files;
        for (const auto& f : c.files) files += (files.empty() ? "" : ", ") + f.string();
        std::cout << (c.files.size() > 1 ? "config files: " : "config file: ")
                  << (files.empty() ? "none (see modelfs --help for where it is looked for)"
                                    : files)
                  << "\n";
    }
    for (const auto& v : views) {
        std::string origin = "built-in";
        if (from_config(v))
            origin = is_builtin_name(v.name()) ? "config, replaces the built-in" : "config";
        if (v.show_versions()) origin += "; lists NAME@LABEL version aliases";
        std::cout << "\n" << v.name() << " (" << origin << ")\n";
        std::size_t width = 0;
        for (const auto& f : v.folders()) width = std::max(width, f.path.size() + 1);
        for (const auto& f : v.folders()) {
            std::string exts = f.extensions.empty() ? "any extension" : join(f.extensions, " ");
            if (!f.exclude.empty()) exts += "  (skips *" + join(f.exclude, ", *") + ")";
            std::printf("  %-*s %-16s %-8s %s\n", static_cast<int>(width), (f.path + "/").c_str(),
                        std::string(to_string(f.category)).c_str(), f.primary ? "primary" : "",
                        exts.c_str());
        }
    }
    std::cout.flush();
    return kOk;
}

// SIGHUP (systemctl reload) re-reads the config files and hands the layouts they define to the
// daemon, which serves them from then on. A config with an error changes nothing.
std::function<fs::Reload()> reload_check(const Globals& g) {
    // The daemon runs in "/": relative names must be made absolute now.
    std::string store = g.store.empty() ? "" : std::filesystem::absolute(g.store).string();
    std::string file =
        g.config_file.empty() ? "" : std::filesystem::absolute(g.config_file).string();
    // The daemon compares the layouts with what it serves and says whether anything changed.
    return [store, file] {
        Globals fresh;
        fresh.store = store;
        fresh.config_file = file;
        std::string files;
        try {
            const Config& c = fresh.config();
            for (const auto& f : c.files) files += (files.empty() ? "" : ", ") + f.string();
            if (files.empty()) files = "no config file";
            return fs::Reload{"config re-read (" + files + ")", mount_layouts(c)};
        } catch (const ConfigError& e) {
            return fs::Reload{
                std::string("the config has an error, the mount goes on as it was: ") + e.what(),
                {}};
        }
    };
}

// Checked before mounting: fusermount3 refuses too, but with one terse line.
void check_allow_other(bool allow_other) {
    if (!allow_other) return;
    std::ifstream in("/etc/fuse.conf");
    std::stringstream text;
    if (in) text << in.rdbuf();
    const std::string problem = allow_other_problem(::geteuid() == 0, bool(in), text.str());
    if (!problem.empty()) throw UsageError(problem);
}

int run_mount(const Globals& g, fs::MountOptions o, const std::string& mountpoint,
              const std::string& lock_file, bool nonempty) {
    check_allow_other(o.allow_other);
    if (const std::string problem = mountpoint_problem(mountpoint, nonempty); !problem.empty())
        throw UsageError(problem);
    o.store = g.store_path();
    o.mountpoint = mountpoint;
    o.layouts = mount_layouts(g.config());
    // The same settings `modelfs fetch` uses: flags aside, config file > environment >
    // defaults, so a mount's first opens honour [fetch] and [s3] too.
    o.fetch = fetch_config(g.config());
    o.view = canonical_view(o.view);
    views_or_usage(o);  // an unknown --view is a usage error before anything starts
    if (!lock_file.empty()) {
        const auto file = std::filesystem::absolute(lock_file).lexically_normal();
        o.lock = LockFile::parse(read_text_file(file), file.string());
        // Registered before mounting, so `retain` keeps what the mount shows.
        Store s = Store::open(o.store);
        s.register_lock(*o.lock, file.string());
    }
    o.on_reload = reload_check(g);
    // A daemon in the foreground is a service (systemd, a container): its few info lines
    // (serving, SIGHUP, SIGTERM) belong in the journal. Per-request lines stay at debug.
    if (o.foreground && g.verbose == 0 && !g.quiet && spdlog::get_level() > spdlog::level::info)
        spdlog::set_level(spdlog::level::info);
    return fs::serve_mount(o);
}

// fusermount3's "Device or resource busy" names nobody; this names who holds the mount.
int run_umount(const std::string& mountpoint) {
    std::string err;
    if (fs::unmount(mountpoint, &err) == 0) return kOk;
    if (err.find("busy") == std::string::npos) {
        spdlog::error("cannot unmount {}: {}", mountpoint,
                      err.empty() ? "fusermount3 failed" : err);
        return kFailed;
    }
    const std::vector<std::string> users = processes_using(mountpoint);
    std::string who;
    for (const auto& u : users) who += (who.empty() ? "" : ", ") + u;
    spdlog::error(
        "{} is busy: {}; close them (or leave the folder), then `modelfs umount {}` again. "
        "`fuser -vm {}` lists them too; `fusermount3 -uz {}` detaches it now and frees it when "
        "they are done",
        mountpoint,
        who.empty() ? "no process of yours has a file or folder open there (another user's may)"
                    : "in use by " + who,
        mountpoint, mountpoint, mountpoint);
    return kFailed;
}

}  // namespace

int run_helper_mount(Globals& g, const std::vector<std::string>& args) {
    HelperMount h;
    try {
        h = parse_helper_args(args);
    } catch (const MountArgsError& e) {
        throw UsageError(e.what());
    }
    g.store = h.store;
    if (!h.config_file.empty()) g.config_file = h.config_file;
    fs::MountOptions o;
    o.view = h.view;
    o.allow_other = h.allow_other;
    o.debug = h.debug;
    // Unlike `modelfs mount -d`, debug keeps the daemon in the background: mount(8) waits for
    // the helper to return.
    o.foreground = h.foreground;
    o.kernel_flags = h.kernel_flags;
    o.read_backend = h.read_backend;
    return run_mount(g, std::move(o), h.mountpoint, h.lock_file, h.nonempty);
}

void add_mount(CLI::App& app, Globals& g, Runner& run) {
    auto o = std::make_shared<fs::MountOptions>();
    auto mp = std::make_shared<std::string>();
    auto* sub = app.add_subcommand(
        "mount",
        "Mount the store: every tool's models folder as a view; what tools save is stored");
    sub->add_option("mountpoint", *mp, "An existing empty folder (see --nonempty)")->required();
    sub->add_option("--view", o->view,
                    "Show one view at the mount point itself (mount it at ComfyUI/models, say); "
                    "default: one folder per view plus by-hash/");
    sub->add_flag("-f,--foreground", o->foreground, "Stay in the foreground");
    sub->add_flag("--allow-other", o->allow_other,
                  "Let other users read the mount (needs user_allow_other in /etc/fuse.conf "
                  "when not root)");
    sub->add_flag("-d,--debug", o->debug, "Log every FUSE request (implies --foreground)");
    sub->add_option("--read-backend", o->read_backend,
                    "How reads are served: auto (FUSE passthrough, at native speed with one page "
                    "cache, where the kernel and CAP_SYS_ADMIN allow it; else the daemon) or "
                    "splice (always the daemon); $MODELFS_READ_BACKEND overrides it")
        ->check(CLI::IsMember({"auto", "splice"}));
    auto nonempty = std::make_shared<bool>(false);
    sub->add_flag("--nonempty", *nonempty,
                  "Mount over a folder that has files (they are hidden until the unmount)");
    auto lock_file = std::make_shared<std::string>();
    sub->add_option("--lock", *lock_file,
                    "Show exactly the versions this lock file (`modelfs lock`) lists, whatever "
                    "is current or pinned");
    sub->footer([&g] { return views_footer(g); });
    sub->callback([&g, &run, o, mp, lock_file, nonempty] {
        run = [&g, o, mp, lock_file, nonempty] {
            if (o->debug) o->foreground = true;
            return run_mount(g, *o, *mp, *lock_file, *nonempty);
        };
    });

    auto um = std::make_shared<std::string>();
    auto* usub = app.add_subcommand("umount", "Unmount a modelfs mount point");
    usub->add_option("mountpoint", *um, "Where it is mounted")->required();
    usub->callback([&run, um] { run = [um] { return run_umount(*um); }; });
}

void add_views(CLI::App& app, Globals& g, Runner& run) {
    auto name = std::make_shared<std::string>();
    auto* sub = app.add_subcommand(
        "views",
        "List the views a mount shows (the built-in tools' and the config file's) with their "
        "folders, categories and extensions");
    sub->add_option("name", *name, "Only this view");
    sub->callback([&g, &run, name] { run = [&g, name] { return run_views(g, *name); }; });
}

}  // namespace modelfs::cli
