// versions, use, rollback, pin, unpin, retain: the versions of a model and which one each view
// shows.
#include <cstdio>
#include <iostream>
#include <set>

#include "cli.h"

namespace modelfs::cli {
namespace {

using nlohmann::json;

// Which registered locks hold each version of `m` (by content id).
std::map<std::size_t, std::vector<std::string>> locked_versions(Store& s, const Model& m) {
    std::map<std::size_t, std::vector<std::string>> out;
    const std::string key = m.key();
    for (const LockHold& l : s.locks()) {
        for (const auto& [model, id] : l.versions) {
            if (model != key) continue;
            for (std::size_t i = 0; i < m.versions.size(); ++i)
                if (m.versions[i].content_id() == id) out[i].push_back(l.id);
        }
    }
    return out;
}

int run_versions(const Globals& g, const std::string& name) {
    Store s = g.open_store();
    const Model m = s.resolve_version(name).model;
    auto locked = locked_versions(s, m);
    std::map<std::size_t, std::vector<std::string>> pinned;  // version -> views
    for (const auto& [view, label] : m.pins)
        if (auto i = find_version(m, label)) pinned[*i].push_back(view);

    if (g.json) {
        json versions = json::array();
        for (std::size_t i = 0; i < m.versions.size(); ++i) {
            const ModelVersion& v = m.versions[i];
            json j = {{"label", v.label},
                      {"current", i == m.current},
                      {"previous", !m.previous.empty() && v.label == m.previous},
                      {"pinned_in", pinned[i]},
                      {"locked_by", locked[i]},
                      {"sha256", v.content_id().hex()},
                      {"size", v.size},
                      {"added", v.added},
                      {"source", v.source},
                      {"note", v.note}};
            if (v.blob)
                j["ext"] = v.ext;
            else
                j["files"] = v.tree.size();
            versions.push_back(std::move(j));
        }
        print_json({{"model", m.key()},
                    {"current", m.current_version().label},
                    {"previous", m.previous},
                    {"pins", m.pins},
                    {"versions", versions}});
        return kOk;
    }
    std::printf("%s\n", m.key().c_str());
    // Oldest first, as they were added; the markers say which one each view shows.
    for (std::size_t i = 0; i < m.versions.size(); ++i) {
        const ModelVersion& v = m.versions[i];
        std::string marks;
        if (!pinned[i].empty()) {
            marks += "pinned:";
            for (std::size_t k = 0; k < pinned[i].size(); ++k)
                marks += (k ? "," : "") + pinned[i][k];
        }
        if (!locked[i].empty()) marks += std::string(marks.empty() ? "" : " ") + "locked";
        std::string src = v.source;
        if (!v.note.empty()) src += (src.empty() ? "" : "  ") + ("\"" + v.note + "\"");
        std::printf("  %s %-12s %-10s %10s  %s  %-24s %s\n", i == m.current ? "*" : " ",
                    v.label.c_str(), v.content_id().autov2().c_str(), human_bytes(v.size).c_str(),
                    format_time(v.added).c_str(), marks.c_str(), src.c_str());
    }
    if (!g.quiet)
        std::printf(
            "(* current%s)\n",
            m.previous.empty() ? "" : ("; `modelfs rollback` goes back to " + m.previous).c_str());
    return kOk;
}

void print_change(const Globals& g, const VersionChange& c, const std::string& what,
                  const std::string& view = "") {
    if (g.json) {
        json j = {{"model", c.model_key},
                  {"from", c.from_label},
                  {"to", c.to_label},
                  {"changed", c.changed}};
        if (!view.empty()) j["view"] = view;
        print_json(j);
        return;
    }
    if (g.quiet) return;
    const std::string where = view.empty() ? "" : " in view " + view;
    if (!c.changed) {
        std::cout << c.model_key << "@" << c.to_label << " already is " << what << where << "\n";
        return;
    }
    std::cout << c.model_key << ": " << what << where << " is now " << c.to_label
              << (c.from_label.empty() ? "" : " (was " + c.from_label + ")") << "\n";
}

// A reference that must name a version explicitly: "NAME@LABEL".
void require_label(const std::string& ref, const char* cmd) {
    if (ref.find('@') == std::string::npos)
        throw UsageError(std::string("`modelfs ") + cmd + " " + ref +
                         "`: say which version, as NAME@LABEL (`modelfs versions " + ref +
                         "` lists the labels)");
}

struct RetainArgs {
    std::optional<unsigned> keep;
    bool dry_run = false;
    std::string model;
};

int run_retain(const Globals& g, const RetainArgs& a) {
    const KeepVersions keep = keep_versions(g.config(), a.keep);
    Store s = g.open_store();
    std::optional<std::string> only;
    if (!a.model.empty()) only = s.resolve_version(a.model).model.key();
    RetainReport r = s.retain(keep.value, a.dry_run, only);
    // What gc would free now: a dropped version's blob may still be used by another version.
    std::uint64_t freeable = r.bytes;
    if (!a.dry_run) freeable = s.gc(/*dry_run=*/true).bytes;
    if (g.json) {
        json dropped = json::array();
        for (const auto& d : r.dropped)
            dropped.push_back(
                {{"model", d.model_key}, {"label", d.label}, {"size", d.size}, {"added", d.added}});
        print_json({{"dry_run", a.dry_run},
                    {"keep", keep.value},
                    {"keep_from", keep.origin},
                    {"dropped", dropped},
                    {"kept_current", r.kept_current},
                    {"kept_pinned", r.kept_pinned},
                    {"kept_locked", r.kept_locked},
                    {"dropped_bytes", r.bytes},
                    {"gc_bytes", freeable}});
        return kOk;
    }
    if (g.quiet) return kOk;
    for (const auto& d : r.dropped)
        std::cout << (a.dry_run ? "would drop " : "dropped ") << d.model_key << "@" << d.label
                  << "  " << human_bytes(d.size) << "  added " << format_time(d.added) << "\n";
    std::cout << (a.dry_run ? "would drop " : "dropped ") << r.dropped.size()
              << " version(s), keeping the newest " << keep.value << " per model (" << keep.origin
              << ")";
    if (r.kept_current + r.kept_pinned + r.kept_locked)
        std::cout << "; kept older ones that are current (" << r.kept_current << "), pinned ("
                  << r.kept_pinned << ") or locked (" << r.kept_locked << ")";
    std::cout << "\n";
    if (a.dry_run)
        std::cout << "up to " << human_bytes(r.bytes) << " for `modelfs gc` to free\n";
    else
        std::cout << "`modelfs gc` can now free " << human_bytes(freeable) << "\n";
    return kOk;
}

}  // namespace

void add_version_commands(CLI::App& app, Globals& g, Runner& run) {
    auto name = std::make_shared<std::string>();
    auto* versions = app.add_subcommand(
        "versions", "List a model's versions: label, which is current, pinned or locked, hash");
    versions->add_option("name", *name, "NAME or CATEGORY/NAME")->required();
    versions->callback([&g, &run, name] { run = [&g, name] { return run_versions(g, *name); }; });

    auto use_ref = std::make_shared<std::string>();
    auto* use = app.add_subcommand(
        "use", "Make a version current: NAME.EXT shows it in every view without a pin");
    use->add_option("version", *use_ref, "NAME@LABEL (a label, or a hash prefix of 6+ digits)")
        ->required();
    use->callback([&g, &run, use_ref] {
        run = [&g, use_ref] {
            require_label(*use_ref, "use");
            Store s = g.open_store();
            const VersionRef v = s.resolve_version(*use_ref);
            print_change(g, s.use_version(v.model.key(), v.version().label), "current");
            return kOk;
        };
    });

    auto rb_name = std::make_shared<std::string>();
    auto* rollback = app.add_subcommand(
        "rollback", "Make the previous current version current again (twice undoes it)");
    rollback->add_option("name", *rb_name, "NAME or CATEGORY/NAME")->required();
    rollback->callback([&g, &run, rb_name] {
        run = [&g, rb_name] {
            Store s = g.open_store();
            const std::string key = s.resolve_version(*rb_name).model.key();
            print_change(g, s.rollback(key), "current");
            return kOk;
        };
    });

    auto pin_ref = std::make_shared<std::string>();
    auto pin_view = std::make_shared<std::string>();
    auto* pin =
        app.add_subcommand("pin", "Make one view show a version as NAME.EXT whatever is current");
    pin->add_option("version", *pin_ref, "NAME@LABEL")->required();
    pin->add_option("--view", *pin_view, "The view (`modelfs views` lists them)")->required();
    pin->callback([&g, &run, pin_ref, pin_view] {
        run = [&g, pin_ref, pin_view] {
            require_label(*pin_ref, "pin");
            const std::string view = view_arg(g, *pin_view).name();
            Store s = g.open_store();
            const VersionRef v = s.resolve_version(*pin_ref);
            print_change(g, s.pin(v.model.key(), v.version().label, view), "pinned", view);
            return kOk;
        };
    });

    auto unpin_name = std::make_shared<std::string>();
    auto unpin_view = std::make_shared<std::string>();
    auto* unpin = app.add_subcommand("unpin", "Let a view show the current version again");
    unpin->add_option("name", *unpin_name, "NAME or CATEGORY/NAME")->required();
    unpin->add_option("--view", *unpin_view, "The view the pin is for")->required();
    unpin->callback([&g, &run, unpin_name, unpin_view] {
        run = [&g, unpin_name, unpin_view] {
            const std::string view = view_arg(g, *unpin_view).name();
            Store s = g.open_store();
            const std::string key = s.resolve_version(*unpin_name).model.key();
            const bool had = s.unpin(key, view);
            if (g.json)
                print_json({{"model", key}, {"view", view}, {"unpinned", had}});
            else if (!g.quiet)
                std::cout << key
                          << (had ? ": view " + view + " shows the current version again"
                                  : " was not pinned in view " + view + "; nothing to do")
                          << "\n";
            return kOk;
        };
    });

    auto ra = std::make_shared<RetainArgs>();
    auto* retain = app.add_subcommand(
        "retain",
        "Drop old versions, keeping the newest N per model; current, pinned and locked versions "
        "always stay. `modelfs gc` then frees their blobs");
    retain->add_option("name", ra->model, "Only this model (NAME or CATEGORY/NAME)");
    retain
        ->add_option("-k,--keep", ra->keep,
                     "Versions kept per model (default: [versions] keep in the config file, else "
                     "$MODELFS_KEEP_VERSIONS, else 3)")
        ->check(CLI::Range(1u, 1000000u));
    retain->add_flag("-n,--dry-run", ra->dry_run, "Only list what would be dropped");
    retain->callback([&g, &run, ra] { run = [&g, ra] { return run_retain(g, *ra); }; });
}

}  // namespace modelfs::cli
