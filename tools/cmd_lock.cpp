// lock, apply, locks, unlock: the exact set of model versions a project uses, as a file.
#include <algorithm>
#include <cstdio>
#include <iostream>

#include "cli.h"
#include "modelfs/store/atomic_file.h"
#include "modelfs/store/secrets.h"

namespace modelfs::cli {
namespace {

using nlohmann::json;

// Every model `layout` shows, at the version it shows there; without a layout every model at its
// current version.
MadeLock lock_of_view(Store& s, const std::optional<layouts::ViewLayout>& layout, bool with_secrets,
                      bool skip_unhashed) {
    LockedVersion shown;
    if (layout)
        shown = [&](const Model& m) -> std::optional<std::size_t> {
            const std::size_t i = m.shown_in(layout->name());
            return layout->shown_at(m, m.versions.at(i)) ? std::optional(i) : std::nullopt;
        };
    return make_lock(s.catalog().read(), layout ? layout->name() : "", shown, with_secrets,
                     skip_unhashed);
}

std::filesystem::path absolute_path(const std::string& p) {
    return std::filesystem::absolute(p).lexically_normal();
}

struct LockArgs {
    std::string view, output;
    bool with_secrets = false;
    bool skip_unhashed = false;
    bool register_stdout = false;  // a lock printed to stdout is kept from `retain` only if asked
};

int run_lock(const Globals& g, const LockArgs& a) {
    std::optional<layouts::ViewLayout> layout;
    if (!a.view.empty()) layout = view_arg(g, a.view);
    Store s = g.open_store();
    const MadeLock made = lock_of_view(s, layout, a.with_secrets, a.skip_unhashed);
    for (const auto& w : made.left_out) std::cerr << "modelfs: warning: " << w << "\n";
    const LockFile& lock = made.lock;
    const std::string text = lock.to_text();
    if (a.output.empty() || a.output == "-") {
        std::cout << text;
        std::cout.flush();
        if (!std::cout) throw StoreError(ErrorKind::io, "could not write the lock file to stdout");
        // Output piped to a pager or diff is no lock anyone keeps: holding its versions from
        // `retain` forever (under the name "stdout") surprised users. Registered only once
        // written, so a failed write holds no versions.
        if (a.register_stdout) {
            const std::string id = s.register_lock(lock, "stdout");
            if (!g.quiet)
                std::cerr << "modelfs: registered as lock " << id << " (`modelfs unlock " << id
                          << "` releases it)\n";
        }
        return kOk;
    }
    const std::filesystem::path file = absolute_path(a.output);
    // Only a lock that keeps credentials is a secret (secrets.h); without them it is meant to be
    // shared (committed with a project).
    write_file_atomically(file, text, a.with_secrets ? 0600 : 0644);
    const std::string id = s.register_lock(lock, file.string());
    if (g.json)
        print_json({{"file", file.string()},
                    {"id", id},
                    {"view", lock.view},
                    {"models", lock.models.size()}});
    else if (!g.quiet)
        std::cout << "wrote " << lock.models.size() << " model(s)"
                  << (lock.view.empty() ? "" : " of view " + lock.view) << " to " << file.string()
                  << " (lock " << id << "; `modelfs retain` keeps these versions until "
                  << "`modelfs unlock " << id << "`)\n";
    return kOk;
}

const char* outcome_name(ApplyItem::Outcome o) {
    switch (o) {
        case ApplyItem::Outcome::unchanged:
            return "unchanged";
        case ApplyItem::Outcome::made_current:
            return "made-current";
        case ApplyItem::Outcome::added:
            return "added";
        case ApplyItem::Outcome::failed:
            return "failed";
    }
    return "?";
}

int run_apply(const Globals& g, const std::string& file_arg) {
    const std::filesystem::path file = absolute_path(file_arg);
    const LockFile lock = LockFile::parse(read_text_file(file), file.string());
    Store s = g.open_store();
    const ApplyReport r = s.apply_lock(lock, file.string());
    std::size_t failed = 0, remote = 0;
    for (const auto& it : r.items) {
        if (it.outcome == ApplyItem::Outcome::failed) ++failed;
        remote += it.remote_files;
    }
    if (g.json) {
        json items = json::array();
        for (const auto& it : r.items) {
            json j = {{"model", it.model_key},
                      {"label", it.label},
                      {"outcome", outcome_name(it.outcome)},
                      {"remote_files", it.remote_files}};
            if (!it.error.empty()) j["error"] = it.error;
            items.push_back(std::move(j));
        }
        print_json({{"lock", r.lock_id}, {"items", items}, {"ok", r.ok()}});
        return r.ok() ? kOk : kFailed;
    }
    for (const auto& it : r.items) {
        if (it.outcome == ApplyItem::Outcome::failed) {
            std::cerr << "modelfs: error: " << it.model_key << "@" << it.label << ": " << it.error
                      << "\n";
            continue;
        }
        if (g.quiet) continue;
        std::cout << outcome_name(it.outcome) << "  " << it.model_key << "@" << it.label;
        if (it.remote_files)
            std::cout << "  (" << it.remote_files << " file(s) fetched on first use)";
        std::cout << "\n";
    }
    if (!g.quiet)
        std::cout << r.items.size() - failed << " of " << r.items.size()
                  << " model(s) as locked (lock " << r.lock_id << ")"
                  << (remote ? "; " + std::to_string(remote) +
                                   " file(s) to download (`modelfs fetch`, or on first open)"
                             : "")
                  << (failed ? "; " + std::to_string(failed) + " failed" : "") << "\n";
    return r.ok() ? kOk : kFailed;
}

int run_locks(const Globals& g) {
    Store s = g.open_store();
    const std::vector<LockHold> locks = s.locks();
    if (g.json) {
        json out = json::array();
        for (const auto& l : locks)
            out.push_back({{"id", l.id},
                           {"name", l.name},
                           {"registered", l.registered},
                           {"versions", l.versions.size()}});
        print_json(out);
        return kOk;
    }
    for (const auto& l : locks)
        std::printf("%-16s  %s  %4zu version(s)  %s\n", l.id.c_str(),
                    format_time(l.registered).c_str(), l.versions.size(), l.name.c_str());
    if (locks.empty() && !g.quiet) std::cerr << "modelfs: no lock files are registered\n";
    return kOk;
}

int run_unlock(const Globals& g, const std::string& what) {
    Store s = g.open_store();
    bool released = s.release_lock(what);
    // A file named relative to here was registered under its absolute path.
    if (!released && !what.empty()) {
        const std::string abs = absolute_path(what).string();
        if (abs != what) released = s.release_lock(abs);
    }
    if (!released)
        throw StoreError(ErrorKind::not_found,
                         "no registered lock '" + what + "'; `modelfs locks` lists them");
    if (g.json)
        print_json({{"released", what}});
    else if (!g.quiet)
        std::cout << "released lock " << what << "; its versions are no longer kept by it\n";
    return kOk;
}

}  // namespace

void add_lock_commands(CLI::App& app, Globals& g, Runner& run) {
    auto la = std::make_shared<LockArgs>();
    auto* lock = app.add_subcommand(
        "lock",
        "Write the exact versions a view shows (hash, size, sources) as a lock file, and keep "
        "them from `retain`");
    lock->add_option("--view", la->view, "Only what this view shows, as it shows it (pins)");
    lock->add_option("-o,--output", la->output, "Write to FILE instead of stdout");
    lock->add_flag("--register", la->register_stdout,
                   "Also register a lock written to stdout, so `retain` keeps its versions (a lock "
                   "written with -o is always registered)");
    lock->add_flag("--skip-unhashed", la->skip_unhashed,
                   "Leave out remote models not downloaded yet (their SHA-256 is unknown), each "
                   "named on stderr, instead of failing");
    lock->add_flag("--with-secrets", la->with_secrets,
                   "Keep user:password@ and signed/token query parameters (X-Amz-Signature, "
                   "token, ...) in the sources; the file is then created 0600. Without it they are "
                   "removed and marked \"secrets_removed\"");
    lock->callback([&g, &run, la] { run = [&g, la] { return run_lock(g, *la); }; });

    auto file = std::make_shared<std::string>();
    auto* apply = app.add_subcommand(
        "apply",
        "Make a lock file's versions current, registering what this store lacks to be "
        "downloaded on first use");
    apply->add_option("file", *file, "A lock file from `modelfs lock`")->required();
    apply->callback([&g, &run, file] { run = [&g, file] { return run_apply(g, *file); }; });

    auto* locks = app.add_subcommand("locks", "List the registered lock files");
    locks->callback([&g, &run] { run = [&g] { return run_locks(g); }; });

    auto what = std::make_shared<std::string>();
    auto* unlock = app.add_subcommand(
        "unlock", "Forget a registered lock file, so `retain` may drop its versions");
    unlock->add_option("lock", *what, "The lock's id (or a prefix) or its file")->required();
    unlock->callback([&g, &run, what] { run = [&g, what] { return run_unlock(g, *what); }; });
}

}  // namespace modelfs::cli
