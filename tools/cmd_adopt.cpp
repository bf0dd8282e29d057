// adopt, adopt --confirm, unadopt, adopted: moving installed tools' models folders into the store
// and back (library: adopt/).
#include <unistd.h>

#include <cstdio>
#include <iostream>

#include "cli.h"
#include "modelfs/adopt/adopt.h"

namespace modelfs::cli {
namespace {

using nlohmann::json;
namespace stdfs = std::filesystem;

struct AdoptArgs {
    std::vector<std::string> dirs;
    bool dry_run = false, verify = false, yes = false, confirm = false, outside_install = false;
    unsigned jobs = 0;
};

std::vector<adopt::Install> find_installs(const std::vector<std::string>& dirs) {
    std::vector<stdfs::path> where;
    if (dirs.empty()) {
        where = adopt::default_install_locations();
        if (where.empty())
            throw StoreError(ErrorKind::not_found,
                             "no install of a known tool in the usual places (~/stable-diffusion-"
                             "webui, ~/ComfyUI, ...); name the install folder: modelfs adopt DIR");
    } else {
        for (const auto& d : dirs) where.emplace_back(d);
    }
    std::vector<adopt::Install> out;
    for (const auto& p : where) {
        auto inst = adopt::detect_install(stdfs::absolute(p));
        if (!inst) {
            if (dirs.empty()) continue;
            throw StoreError(ErrorKind::not_found,
                             p.string() + ": not an install of a tool modelfs knows (" +
                                 adopt::known_tool_names() +
                                 "); name the folder that holds webui.py / main.py");
        }
        out.push_back(std::move(*inst));
    }
    if (out.empty())
        throw StoreError(ErrorKind::not_found, "no install of a known tool in the usual places");
    return out;
}

void print_outcomes(const adopt::RunReport& rep) {
    for (const auto& o : rep.installs) {
        std::printf("%s  %s: %s\n", o.tool.c_str(), o.models_dir.c_str(), o.status.c_str());
        if (!o.ok) continue;
        for (const auto& n : o.notes) std::printf("  %s\n", n.c_str());
        if (o.result != adopt::InstallOutcome::Result::adopted) continue;
        std::printf(
            "  %zu files in the store, %zu kept at their path, %zu not adopted, %zu "
            "changing\n",
            o.stored, o.overlay, o.left, o.changing);
        std::printf(
            "  the rest of the original tree is in %s (the files moved into the store come "
            "back from it at unadopt) until `modelfs adopt --confirm` deletes it; that frees "
            "%s\n",
            o.backup.c_str(), human_bytes(o.bytes_to_free).c_str());
        std::printf("  to mount the view at boot, add to /etc/fstab:\n    %s\n",
                    o.fstab_line.c_str());
        std::printf("  or as a systemd unit:\n");
        std::string unit = o.systemd_unit;
        std::size_t pos = 0;
        while (pos < unit.size()) {
            auto nl = unit.find('\n', pos);
            std::printf("    %s\n", unit.substr(pos, nl - pos).c_str());
            if (nl == std::string::npos) break;
            pos = nl + 1;
        }
    }
}

int run_adopt(const Globals& g, const AdoptArgs& a) {
    Store store = g.open_store();
    std::vector<stdfs::path> roots(a.dirs.begin(), a.dirs.end());
    if (a.confirm) {
        auto res = adopt::confirm(store, roots);
        bool ok = true;
        json arr = json::array();
        for (const auto& c : res) {
            ok = ok && c.ok;
            if (g.json) {
                arr.push_back({{"id", c.id},
                               {"status", c.status},
                               {"deleted", c.deleted},
                               {"bytes_freed", c.bytes_freed},
                               {"kept", c.kept}});
                continue;
            }
            std::printf("%s: %s; deleted %zu files of the backup, %s freed\n", c.id.c_str(),
                        c.status.c_str(), c.deleted, human_bytes(c.bytes_freed).c_str());
            for (const auto& k : c.kept) std::printf("  kept %s\n", k.c_str());
        }
        if (g.json) print_json({{"confirmed", arr}});
        if (res.empty() && !g.json) std::printf("no adopted install to confirm\n");
        return ok ? kOk : kFailed;
    }

    auto installs = find_installs(a.dirs);
    std::vector<adopt::InstallScan> scans;
    for (auto& inst : installs) {
        // An adopted install's models folder is the view: never scan (and hash) it through the
        // mount; the plan reports it as already adopted (or mounted by hand), or finishes it
        // from its record.
        auto rec = adopt::load_record(store.root(), inst.tool);
        if ((rec && adopt::holds_install(rec->state)) || adopt::is_mountpoint(inst.models_dir)) {
            adopt::InstallScan s;
            s.install = inst;
            scans.push_back(std::move(s));
            continue;
        }
        adopt::ScanOptions so;
        so.outside_install = a.outside_install;
        scans.push_back(adopt::scan_install(inst, view_arg(g, inst.tool), so));
    }
    adopt::HashReport hashes;
    {
        ProgressBar bar(g, "hashing");
        hashes = adopt::hash_scans(store.root(), scans, {a.jobs, bar.get()});
    }
    adopt::Plan plan = adopt::make_plan(store, std::move(scans), hashes);
    if (a.dry_run) {
        if (g.json) {
            json j = adopt::plan_json(plan);
            j["hashed"] = hashes.hashed;
            j["cached"] = hashes.cached;
            print_json(j);
        } else {
            std::fputs(adopt::plan_text(plan).c_str(), stdout);
            std::printf("dry run: nothing changed (hashed %zu files, %zu from the cache)\n",
                        hashes.hashed, hashes.cached);
        }
        return kOk;
    }
    if (!a.yes) {
        if (!::isatty(0))
            throw UsageError(
                "adopt moves your model files into the store: check "
                "`modelfs adopt --dry-run`, then run it again with --yes");
        std::fputs(adopt::plan_text(plan).c_str(), stdout);
        std::printf("Adopt these installs? [y/N] ");
        std::fflush(stdout);
        std::string answer;
        std::getline(std::cin, answer);
        if (answer != "y" && answer != "Y" && answer != "yes") {
            std::printf("nothing changed\n");
            return kOk;
        }
    }
    adopt::RunOptions opts;
    opts.verify = a.verify;
    // The mount reads the same config file (layouts) as this command.
    if (!g.config_file.empty()) opts.global_args = {"--config", g.config_file};
    adopt::RunReport rep;
    {
        ProgressBar bar(g, "copying");
        opts.progress = bar.get();
        rep = adopt::run_plan(store, plan, opts);
    }
    if (g.json) {
        json arr = json::array();
        for (const auto& o : rep.installs)
            arr.push_back({{"id", o.id},
                           {"tool", o.tool},
                           {"models_dir", o.models_dir.string()},
                           {"backup", o.backup.string()},
                           {"status", o.status},
                           {"ok", o.ok},
                           {"stored", o.stored},
                           {"kept_at_path", o.overlay},
                           {"not_adopted", o.left},
                           {"changing", o.changing},
                           {"bytes_freed_at_confirm", o.bytes_to_free},
                           {"fstab", o.fstab_line},
                           {"systemd_unit", o.systemd_unit},
                           {"notes", o.notes}});
        print_json({{"plan", adopt::plan_json(plan)}, {"installs", arr}});
    } else {
        print_outcomes(rep);
    }
    return rep.ok() ? kOk : kFailed;
}

int run_unadopt(const Globals& g, const std::vector<std::string>& dirs) {
    Store store = g.open_store();
    auto res = adopt::unadopt(store, std::vector<stdfs::path>(dirs.begin(), dirs.end()));
    bool ok = true;
    json arr = json::array();
    for (const auto& u : res) {
        ok = ok && u.ok;
        if (g.json) {
            arr.push_back({{"id", u.id},
                           {"status", u.status},
                           {"ok", u.ok},
                           {"restored", u.restored},
                           {"added", u.added},
                           {"notes", u.notes}});
            continue;
        }
        std::printf("%s: %s", u.id.c_str(), u.status.c_str());
        if (u.result == adopt::UnadoptOutcome::Result::unadopted)
            std::printf(" (%zu files plain again, %zu added through the mount)", u.restored,
                        u.added);
        std::printf("\n");
        for (const auto& n : u.notes) std::printf("  %s\n", n.c_str());
    }
    if (g.json) print_json({{"unadopted", arr}});
    if (res.empty()) {
        if (!g.json) std::printf("no adopted install%s\n", dirs.empty() ? "" : " there");
        return dirs.empty() ? kOk : kNotFound;
    }
    return ok ? kOk : kFailed;
}

int run_adopted(const Globals& g) {
    Store store = g.open_store();
    auto recs = adopt::load_records(store.root());
    if (g.json) {
        json arr = json::array();
        for (const auto& r : recs) {
            json j = adopt::record_json(r);
            j.erase("files");
            j["files"] = r.files.size();
            arr.push_back(std::move(j));
        }
        print_json({{"adopted", arr}});
        return kOk;
    }
    for (const auto& r : recs)
        std::printf("%-8s %-10s %s  (view over %s, %zu files, %s)\n", r.id.c_str(),
                    std::string(adopt::state_name(r.state)).c_str(), r.root.c_str(),
                    r.models_dir.c_str(), r.files.size(), format_time(r.updated).c_str());
    if (recs.empty() && !g.quiet) std::printf("no adopted installs\n");
    return kOk;
}

}  // namespace

void add_adopt_commands(CLI::App& app, Globals& g, Runner& run) {
    auto a = std::make_shared<AdoptArgs>();
    auto* sub = app.add_subcommand(
        "adopt",
        "Move the models of installed tools (A1111, Forge, SD.Next, ComfyUI, Fooocus) into the "
        "store and mount each tool's view over its models folder");
    sub->add_option("dir", a->dirs, "Install folders (default: the usual places)");
    sub->add_flag("--dry-run", a->dry_run,
                  "Hash and report per tool and in total (files, duplicate groups, bytes freed); "
                  "change nothing");
    sub->add_option("-j,--jobs", a->jobs,
                    "Files read and hashed at once (default: 1 on a spinning disk, else twice the "
                    "cores, at least 4)");
    sub->add_flag("--verify", a->verify,
                  "After mounting, read every path back through the mount and compare SHA-256");
    sub->add_flag("-y,--yes", a->yes,
                  "Do not ask before adopting (required when stdin is not a terminal)");
    sub->add_flag("--confirm", a->confirm,
                  "Delete the backups (MODELS.modelfs-backup) of adopted installs, keeping "
                  "anything the store lacks: this is when duplicates are freed");
    sub->add_flag("--outside-install", a->outside_install,
                  "When root adopts another user's install (SUDO_UID, else the install's owner): "
                  "also adopt the folders the tool's configuration names outside the install, "
                  "by the same rules (no link followed, only files that user could read and "
                  "change)");
    sub->callback([&g, &run, a] { run = [&g, a] { return run_adopt(g, *a); }; });

    auto dirs = std::make_shared<std::vector<std::string>>();
    auto* un = app.add_subcommand(
        "unadopt", "Give adopted installs their plain models folders back (unmounts the view)");
    un->add_option("dir", *dirs, "Install folders (default: every adopted install)");
    un->callback([&g, &run, dirs] { run = [&g, dirs] { return run_unadopt(g, *dirs); }; });

    auto* ls = app.add_subcommand("adopted", "List adopted installs (STORE/adopt/*.json)");
    ls->callback([&g, &run] { run = [&g] { return run_adopted(g); }; });
}

}  // namespace modelfs::cli
