// The plan: what adopt does with each scanned file, and the dry-run report of it. Pure decisions
// over the scans, the hashes, the catalog and the adoption records: nothing is changed here.
#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <set>
#include <sstream>

#include "modelfs/adopt/adopt.h"
#include "modelfs/layouts/view_layout.h"
#include "modelfs/store/model_check.h"
#include "modelfs/store/model_name.h"
#include "modelfs/store/text.h"
#include "modelfs/store/unique_fd.h"
#include "modelfs/store/units.h"
#include "util.h"

namespace stdfs = std::filesystem;
using nlohmann::json;

namespace modelfs::adopt {

namespace {

// Why the store would refuse the file at `real` (incomplete_model_reason), read from its header.
std::optional<std::string> incomplete_reason(const std::filesystem::path& real, std::uint64_t size,
                                             const std::string& name) {
    UniqueFd fd = detail::open_real(real);
    if (!fd) return "cannot be read: " + std::string(std::strerror(errno));
    try {
        return incomplete_model_reason(fd.get(), size, name);
    } catch (const std::exception& e) {
        return std::string(e.what());
    }
}

bool in_models(const ScannedFile& f, const Install& inst) {
    return detail::is_under(f.path, inst.models_dir);
}

// Would the mount take a file at `rel` of its overlay for a model and ingest it?
bool layout_model_path(const layouts::ViewLayout& layout, const std::string& rel) {
    auto vp = layout.classify(rel);
    return vp && !vp->ext.empty();
}

bool utf8_path(const ScannedFile& f) {
    try {
        (void)json({f.path.string(), f.real.string(), f.link_target}).dump();
        return true;
    } catch (const json::exception&) {
        return false;
    }
}

bool is_hashed_kind(const ScannedFile& f) {
    return f.kind == ScannedFile::Kind::model || f.kind == ScannedFile::Kind::sidecar;
}

bool is_stored(Action a) {
    return a == Action::store || a == Action::store_in_place;
}

void leave(PlannedFile& pf, Left how, const std::string& why) {
    pf.action = Action::left;
    pf.left = how;
    pf.note = left_note(how, why);
}

// Problems outside the models folder stay where they are, not in the backup.
void not_adopted(PlannedFile& pf, bool inside, const std::string& why) {
    leave(pf, inside ? Left::not_adopted : Left::outside, why);
}

// Sets ip.skip or ip.resume when the install is not planned file by file now: no view, a second
// install of its tool, a record (record_verdict), or a models folder adopt cannot replace.
void decide_install(InstallPlan& ip, const layouts::ViewLayout* layout,
                    const stdfs::path& store_root, std::set<std::string>& ids_in_plan) {
    const Install& inst = ip.scan.install;
    const bool mounted = is_mountpoint(inst.models_dir);
    if (!layout) {
        ip.skip = {.reason = SkipReason::no_view, .tool = inst.tool};
    } else if (!ids_in_plan.insert(ip.id).second) {
        ip.skip = {.reason = SkipReason::second_install, .tool = inst.tool};
    } else {
        auto rec = load_record(store_root, ip.id);
        auto verdict = record_verdict(rec ? &*rec : nullptr, inst, mounted);
        ip.skip = verdict.skip;
        ip.resume = verdict.resume;
    }
    if (ip.skip || ip.resume) return;
    std::error_code ec;
    if (!ip.scan.models_refused.empty())
        ip.skip = {.reason = SkipReason::models_refused, .detail = ip.scan.models_refused};
    else if (mounted)
        ip.skip = {.reason = SkipReason::models_dir_mounted, .path = inst.models_dir};
    else if (stdfs::is_symlink(inst.models_dir, ec))
        // Renaming it would move the link, not the folder: adopt the folder it points to as the
        // models folder of its own tool, or replace the link by the folder.
        ip.skip = {.reason = SkipReason::models_dir_link,
                   .path = inst.models_dir,
                   .link_target = stdfs::read_symlink(inst.models_dir, ec)};
}

// The install's files as the mount would take them. A plain file the mount would take for a
// model (LyCORIS/x, a second foo.ckpt): in the overlay its ingest would move it or make it a
// model's new version, so it is planned as a model here (stored and shown in the primary folder,
// or left in the backup).
std::vector<ScannedFile> as_the_mount_takes(const InstallScan& scan,
                                            const layouts::ViewLayout& layout) {
    std::vector<ScannedFile> files = scan.files;
    for (auto& f : files)
        if (f.kind == ScannedFile::Kind::plain && in_models(f, scan.install))
            if (auto vp = layout.classify(f.view_rel); vp && !vp->ext.empty()) {
                f.kind = ScannedFile::Kind::model;
                f.category = vp->category;
                f.name = vp->name;
                f.ext = vp->ext;
            }
    return files;
}

// Models (.safetensors ones first), then sidecars, whose fate follows their model's.
int pass_of(const ScannedFile& f) {
    if (f.kind == ScannedFile::Kind::sidecar) return 2;
    const std::string e = lower(f.ext);
    return f.kind == ScannedFile::Kind::model && e == ".safetensors" ? 0 : 1;
}

// Where the view would show a model or sidecar: `showable` with its model key, else not (the
// note says why).
struct Shown {
    bool showable = false;
    std::string key;
};

// Decides every file's action for one install that is planned file by file.
class FilePlanner {
  public:
    FilePlanner(InstallPlan& ip, const layouts::ViewLayout& layout, const HashReport& hashes)
        : ip_(ip), layout_(layout), hashes_(hashes), files_(as_the_mount_takes(ip.scan, layout)) {}

    void plan() {
        ip_.files.resize(ip_.scan.files.size());  // files stay in scan order
        for (std::size_t i = 0; i < files_.size(); ++i)
            if (files_[i].kind == ScannedFile::Kind::model) by_view_rel_[files_[i].view_rel] = i;
        for (int pass = 0; pass < 3; ++pass)
            for (std::size_t index = 0; index < files_.size(); ++index)
                if (pass_of(files_[index]) == pass) plan_file(index);
    }

  private:
    InstallPlan& ip_;
    const layouts::ViewLayout& layout_;
    const HashReport& hashes_;
    std::vector<ScannedFile> files_;
    // Which file gets each model key of this install: the first one the view shows at exactly
    // its path. The others are kept as plain overlay files at their paths.
    std::map<std::string, std::size_t> claimed_;  // model key -> index in ip.files
    std::map<std::string, std::size_t> by_view_rel_;

    void plan_file(std::size_t index) {
        const ScannedFile& f = files_[index];
        PlannedFile& pf = ip_.files[index];
        pf.file = f;
        const bool inside = in_models(f, ip_.scan.install);
        if (is_hashed_kind(f)) {
            auto h = hashes_.files.find(f.real);
            if (h != hashes_.files.end()) pf.hash = h->second;
        }
        if (!utf8_path(f)) {
            // The record and the hash cache are JSON: a name they cannot hold exactly is not
            // adopted rather than recorded wrongly.
            not_adopted(pf, inside, f.path.string() + ": its name is not valid UTF-8");
            return;
        }
        switch (f.kind) {
            case ScannedFile::Kind::broken_link:
                not_adopted(pf, inside, f.path.string() + " -> " + f.link_target + ": broken link");
                break;
            case ScannedFile::Kind::unreadable:
                not_adopted(pf, inside, f.problem.empty() ? f.path.string() : f.problem);
                break;
            case ScannedFile::Kind::special:
                not_adopted(pf, inside, f.path.string() + ": a socket, fifo or device");
                break;
            case ScannedFile::Kind::plain:
                if (inside) {
                    pf.action = Action::overlay;
                    pf.note = "plain file, kept at its path";
                } else {
                    leave(pf, Left::kept_in_place, "plain file outside the models folder");
                }
                break;
            case ScannedFile::Kind::model:
            case ScannedFile::Kind::sidecar:
                plan_hashed(pf, index, inside);
                break;
        }
    }

    // A model or sidecar: stored when hashed, complete and shown by the view; otherwise kept at
    // its path in the overlay, or left.
    void plan_hashed(PlannedFile& pf, std::size_t index, bool inside) {
        const ScannedFile& f = pf.file;
        if (!pf.hash) {
            auto fail = hashes_.failed.find(f.real);
            const HashReport::Failure why =
                fail != hashes_.failed.end() ? fail->second : HashReport::Failure{"not hashed"};
            if (why.changing) {
                pf.action = Action::changing;
                pf.note = f.path.string() + ": " + why.why;
            } else {
                not_adopted(pf, inside, f.path.string() + ": " + why.why);
            }
            return;
        }
        // The store takes only complete files (store/FORMAT.md, "Complete model files"): a
        // cut-off download stays where it is, with the reason.
        if (auto why =
                incomplete_reason(f.real, pf.hash->digests.size, f.path.filename().string())) {
            not_adopted(pf, inside, f.path.string() + ": " + *why);
            return;
        }
        Shown shown;
        if (f.kind == ScannedFile::Kind::model) {
            auto s = show_model(pf, inside);
            if (!s) return;
            shown = *s;
        } else {
            shown = show_sidecar(pf);
        }
        if (shown.showable) {
            pf.action = f.replaced ? Action::store : Action::store_in_place;
            pf.model = shown.key;
            if (f.kind == ScannedFile::Kind::model) claimed_[shown.key] = index;
        } else if (inside && !layout_model_path(layout_, f.view_rel)) {
            pf.action = Action::overlay;
        } else if (inside) {
            not_adopted(pf, inside, f.path.string() + ": " + pf.note);
        } else {
            leave(pf, Left::kept_in_place, pf.note);
        }
    }

    // Where the view shows a model; nullopt when it is left (a second file of one model name).
    std::optional<Shown> show_model(PlannedFile& pf, bool inside) {
        const ScannedFile& f = pf.file;
        const std::string key = model_key(f.category, f.name);
        Model m;
        m.category = f.category;
        m.name = f.name;
        ModelVersion v;
        v.blob = pf.hash->digests.sha256;
        v.ext = f.ext;
        auto at = layout_.shown_at(m, v);
        if (claimed_.count(key)) {
            // A second file of one model name (LyCORIS/foo.safetensors beside
            // Lora/foo.safetensors; foo.ckpt beside foo.safetensors are two names): the view
            // shows one file per name, and in the overlay the mount would ingest it as a new
            // version of that model, hiding the first.
            not_adopted(pf, inside,
                        f.path.string() + ": the view shows one file per model name and " + key +
                            " is " + ip_.files[claimed_[key]].file.path.filename().string() +
                            " (rename it and adopt again)");
            return std::nullopt;
        }
        if (at && *at != f.view_rel) {
            // A non-primary folder (A1111 LyCORIS/, ComfyUI unet/): the tool reads the primary
            // one as well, and a file left in the overlay here would be moved there by the
            // mount's ingest anyway.
            pf.shown_at = *at;
            pf.note = "shown at " + *at + " (the view's folder for " +
                      std::string(to_string(f.category)) + "), not at " + f.view_rel;
        } else if (!at) {
            pf.note = "the view does not show " + key + "; kept as a plain file at its path";
        }
        return Shown{at.has_value(), key};
    }

    // A sidecar is stored when its model is, and shown beside it.
    Shown show_sidecar(PlannedFile& pf) {
        const ScannedFile& f = pf.file;
        Shown shown;
        auto m = by_view_rel_.find(f.sidecar_of);
        if (m != by_view_rel_.end()) {
            const PlannedFile& model = ip_.files[m->second];
            shown = {is_stored(model.action), model.model};
            if (shown.showable && !model.shown_at.empty()) {
                auto slash = model.shown_at.rfind('/');
                std::string dir =
                    slash == std::string::npos ? "" : model.shown_at.substr(0, slash + 1);
                std::string leaf = model.shown_at.substr(dir.size());
                pf.shown_at = dir + split_extension(leaf).first + f.suffix;
                pf.note = "shown at " + pf.shown_at + " beside its model";
            }
        }
        if (!shown.showable) pf.note = "sidecar of a model that is not in the store";
        return shown;
    }
};

// Clashes: one model key, different content in two installs (or in an install and the store).
// Each view gets pinned to the version it had.
void mark_clashes(Store& store, Plan& plan) {
    std::map<std::string, std::set<Sha256>> contents;
    std::map<std::string, std::set<std::string>> tools_of;
    for (auto& ip : plan.installs)
        for (auto& pf : ip.files)
            if (pf.file.kind == ScannedFile::Kind::model && is_stored(pf.action)) {
                contents[pf.model].insert(pf.hash->digests.sha256);
                tools_of[pf.model].insert(ip.scan.install.tool);
            }
    {
        auto txn = store.catalog().read();
        for (auto& [key, set] : contents) {
            if (auto m = txn.get_model(key)) {
                const auto& cur = m->current_version();
                if (cur.blob) set.insert(*cur.blob);
                tools_of[key].insert("the store");
            }
        }
    }
    for (auto& ip : plan.installs)
        for (auto& pf : ip.files)
            if (pf.file.kind == ScannedFile::Kind::model && !pf.model.empty() &&
                contents[pf.model].size() > 1) {
                pf.pin = true;
                ++ip.totals.clashes;
                std::string who;
                for (const auto& t : tools_of[pf.model]) who += (who.empty() ? "" : ", ") + t;
                pf.note = "clash: " + pf.model + " differs between " + who +
                          "; both become versions and the " + ip.scan.install.tool +
                          " view is pinned to this one";
                ip.notes.push_back(pf.note);
            }
}

struct Member {
    InstallPlan* ip;
    PlannedFile* pf;
};

// The keeper: a stored blob (null here), else a file adopt can move into the store (zero copy),
// else one that stays where it is (copied: the user's file is left alone), else the first copy
// (copied too). The commit takes them in that order.
PlannedFile* pick_keeper(const std::vector<Member>& members, bool in_store,
                         const stdfs::path& store_root) {
    if (in_store) return nullptr;
    for (auto& m : members)
        if (m.pf->action == Action::store &&
            detail::movable(m.pf->file.path, m.pf->file.real, m.ip->scan.install.models_dir,
                            store_root))
            return m.pf;
    for (auto want : {Action::store_in_place, Action::store})
        for (auto& m : members)
            if (m.pf->action == want) {
                m.pf->copy = true;
                return m.pf;
            }
    return nullptr;
}

// One content's files: its keeper, what confirm frees, and (more than one copy) its duplicate
// group with its notes.
void plan_group(Plan& plan, const Sha256& sha, const std::vector<Member>& members, bool in_store,
                const stdfs::path& store_root) {
    std::set<std::pair<dev_t, ino_t>> inodes;
    for (auto& m : members) inodes.insert({m.pf->hash->dev, m.pf->hash->ino});
    PlannedFile* keeper = pick_keeper(members, in_store, store_root);
    if (keeper && keeper->copy)
        for (auto& m : members)
            if (m.pf == keeper) {
                m.ip->totals.bytes_copied += keeper->hash->size;
                plan.total.bytes_copied += keeper->hash->size;
            }
    if (keeper) keeper->keeper = true;
    std::set<std::pair<dev_t, ino_t>> done;
    std::uint64_t group_freed = 0;
    // A moved keeper becomes the blob (its backup name goes at adopt); a copied one is a
    // duplicate of the blob like any other, and goes at confirm.
    if (keeper && !keeper->copy) done.insert({keeper->hash->dev, keeper->hash->ino});
    for (auto& m : members) {
        // Overlay files are hard links (or copies) of themselves: not freed.
        if (m.pf->action != Action::store) continue;
        if (!done.insert({m.pf->hash->dev, m.pf->hash->ino}).second) continue;
        m.pf->freed = true;
        group_freed += m.pf->hash->size;
        m.ip->totals.bytes_freed += m.pf->hash->size;
        plan.total.bytes_freed += m.pf->hash->size;
    }
    if (inodes.size() + (in_store ? 1 : 0) <= 1) return;
    std::set<InstallPlan*> tools;
    for (auto& m : members) tools.insert(m.ip);
    for (auto* ip : tools) ++ip->totals.dup_groups;
    ++plan.total.dup_groups;
    DuplicateGroup g;
    g.sha256 = sha;
    g.size = members.front().pf->hash->size;
    g.in_store = in_store;
    g.copies = inodes.size() + (in_store ? 1 : 0);
    g.bytes_freed = group_freed;
    for (auto& m : members) g.files.push_back(m.pf->file.path);
    plan.duplicates.push_back(std::move(g));
    std::set<std::string> names;
    for (auto& m : members)
        if (!m.pf->model.empty()) names.insert(m.pf->model);
    if (names.size() > 1) {
        std::string n;
        for (const auto& x : names) n += (n.empty() ? "" : ", ") + x;
        for (auto* ip : tools)
            ip->notes.push_back("same content under different names: " + n +
                                " (one blob; each view lists every name)");
    }
}

// Content groups over every file whose content goes to the store (or stays as overlay).
void plan_groups(Store& store, Plan& plan) {
    std::map<Sha256, std::vector<Member>> groups;
    for (auto& ip : plan.installs)
        for (auto& pf : ip.files)
            if (pf.hash && (is_stored(pf.action) || pf.action == Action::overlay))
                groups[pf.hash->digests.sha256].push_back({&ip, &pf});
    for (auto& [sha, members] : groups)
        plan_group(plan, sha, members, store.blobs().exists(sha), store.root());
}

// Each install's totals from its files' actions, and their sum.
void count_totals(Plan& plan) {
    for (auto& ip : plan.installs) {
        if (ip.skip || ip.resume) continue;
        auto& t = ip.totals;
        for (const auto& pf : ip.files) {
            if (is_stored(pf.action)) {
                ++t.stored;
                t.bytes += pf.hash->size;
            } else if (pf.action == Action::overlay) {
                if (pf.file.kind == ScannedFile::Kind::plain)
                    ++t.plain;
                else
                    ++t.overlay;
            } else if (pf.action == Action::changing) {
                ++t.changing;
            } else if (pf.left == Left::not_adopted) {
                ++t.not_adopted;
            }
        }
        auto& T = plan.total;
        T.files += t.files;
        T.stored += t.stored;
        T.bytes += t.bytes;
        T.overlay += t.overlay;
        T.plain += t.plain;
        T.clashes += t.clashes;
        T.not_adopted += t.not_adopted;
        T.changing += t.changing;
    }
}

}  // namespace

Plan make_plan(Store& store, std::vector<InstallScan> scans, const HashReport& hashes) {
    Plan plan;
    std::set<std::string> ids_in_plan;
    for (auto& scan : scans) {
        InstallPlan ip;
        ip.id = scan.install.tool;
        ip.scan = std::move(scan);
        const Install& inst = ip.scan.install;
        ip.totals.files = ip.scan.files.size();
        for (const auto& d : inst.dirs)
            if (!d.replaced)
                ip.kept_in_place.push_back(d.path.string() +
                                           (d.origin.empty() ? "" : " (" + d.origin + ")"));
        auto layout = layouts::ViewLayout::builtin(inst.tool);
        decide_install(ip, layout ? &*layout : nullptr, store.root(), ids_in_plan);
        if (!ip.skip && !ip.resume) FilePlanner(ip, *layout, hashes).plan();
        plan.installs.push_back(std::move(ip));
    }
    mark_clashes(store, plan);
    plan_groups(store, plan);
    count_totals(plan);
    return plan;
}

static json totals_json(const ToolTotals& t) {
    return {{"files", t.files},
            {"stored", t.stored},
            {"bytes", t.bytes},
            {"duplicate_groups", t.dup_groups},
            {"bytes_freed", t.bytes_freed},
            {"bytes_copied", t.bytes_copied},
            {"kept_at_path", t.overlay},
            {"plain", t.plain},
            {"clashes", t.clashes},
            {"not_adopted", t.not_adopted},
            {"changing", t.changing}};
}

json plan_json(const Plan& plan) {
    json installs = json::array();
    for (const auto& ip : plan.installs) {
        json files = json::array();
        for (const auto& pf : ip.files) {
            json f = {{"path", pf.file.path.string()},
                      {"action", std::string(action_name(pf.action))},
                      {"size", pf.file.size}};
            if (!pf.file.view_rel.empty()) f["view_rel"] = pf.file.view_rel;
            if (pf.hash) f["sha256"] = pf.hash->digests.sha256.hex();
            if (!pf.model.empty()) f["model"] = pf.model;
            if (pf.keeper) f["keeper"] = true;
            if (pf.copy) f["copied"] = true;
            if (pf.freed) f["freed"] = true;
            if (pf.pin) f["pinned"] = true;
            if (!pf.shown_at.empty()) f["shown_at"] = pf.shown_at;
            if (!pf.note.empty()) f["note"] = pf.note;
            files.push_back(std::move(f));
        }
        json j = {{"id", ip.id},
                  {"tool", ip.scan.install.tool},
                  {"root", ip.scan.install.root.string()},
                  {"models_dir", ip.scan.install.models_dir.string()},
                  {"totals", totals_json(ip.totals)},
                  {"kept_in_place", ip.kept_in_place},
                  {"notes", ip.notes},
                  {"files", files}};
        if (ip.skip) j["skip"] = skip_text(ip.skip);
        if (ip.resume) j["resume"] = true;
        if (!ip.scan.acting_for.empty()) j["acting_for"] = ip.scan.acting_for;
        if (!ip.scan.outside.empty()) {
            json outside = json::array();
            for (const auto& d : ip.scan.outside) outside.push_back(d.string());
            j["outside_install"] = std::move(outside);
        }
        installs.push_back(std::move(j));
    }
    json dups = json::array();
    for (const auto& g : plan.duplicates) {
        json files = json::array();
        for (const auto& f : g.files) files.push_back(f.string());
        dups.push_back({{"sha256", g.sha256.hex()},
                        {"size", g.size},
                        {"copies", g.copies},
                        {"in_store", g.in_store},
                        {"bytes_freed", g.bytes_freed},
                        {"files", std::move(files)}});
    }
    return {{"installs", installs},
            {"total", totals_json(plan.total)},
            {"duplicate_groups", std::move(dups)}};
}

static void totals_text(std::ostringstream& o, const ToolTotals& t, const char* indent) {
    o << indent << t.files << " files: " << t.stored << " to the store (" << human_bytes(t.bytes)
      << ")";
    if (t.overlay) o << ", " << t.overlay << " kept as plain files at their exact path";
    if (t.plain) o << ", " << t.plain << " plain files kept";
    o << "\n"
      << indent << t.dup_groups << " duplicate groups: " << human_bytes(t.bytes_freed)
      << " freed once you run `modelfs adopt --confirm`\n";
    if (t.bytes_copied)
        o << indent << human_bytes(t.bytes_copied)
          << " copied into the store (files that stay where they are, or that the store may not "
             "take: other hard links, another owner, another filesystem)\n";
    if (t.clashes) o << indent << t.clashes << " name clashes (views pinned)\n";
    if (t.not_adopted) o << indent << t.not_adopted << " not adopted (see below)\n";
    if (t.changing) o << indent << t.changing << " changing while adopting, left in place\n";
}

std::string plan_text(const Plan& plan) {
    std::ostringstream o;
    for (const auto& ip : plan.installs) {
        const auto& inst = ip.scan.install;
        o << inst.tool << "  " << inst.root.string() << "  (view over " << inst.models_dir.string()
          << ")\n";
        if (ip.skip) {
            o << "  skipped: " << skip_text(ip.skip) << "\n";
            continue;
        }
        if (ip.resume) {
            o << "  adopted before; the view is mounted again (or an interrupted adopt "
                 "finished) from its record\n";
            continue;
        }
        totals_text(o, ip.totals, "  ");
        for (const auto& k : ip.kept_in_place)
            o << "  kept in place (its models are copied into the store): " << k << "\n";
        if (!ip.scan.acting_for.empty())
            o << "  root acts for " << ip.scan.acting_for
              << ": no link is followed; files that user could not read or change are not "
                 "adopted\n";
        for (const auto& d : ip.scan.outside)
            o << "  outside the install, not adopted (--outside-install adopts it): " << d.string()
              << "\n";
        for (const auto& n : ip.notes) o << "  " << n << "\n";
        const stdfs::path backup = stdfs::path(inst.models_dir.string() + ".modelfs-backup");
        for (const auto& pf : ip.files) {
            if ((pf.action == Action::overlay && pf.file.kind != ScannedFile::Kind::plain) ||
                !pf.shown_at.empty())
                o << "  " << pf.file.path.string() << ": " << pf.note << "\n";
            else if (pf.action == Action::changing)
                o << "  " << pf.note << "\n";
            else if (pf.left == Left::not_adopted)
                o << "  " << pf.note << "; it stays in " << backup.string() << "\n";
        }
    }
    if (plan.installs.size() > 1) {
        o << "total\n";
        totals_text(o, plan.total, "  ");
    }
    // Every group, not only those with several names: what confirm frees is checkable file by
    // file.
    if (!plan.duplicates.empty()) o << "duplicate groups (one copy stays, in the store)\n";
    for (const auto& g : plan.duplicates) {
        o << "  " << g.sha256.hex().substr(0, 12) << "  " << human_bytes(g.size) << ", " << g.copies
          << " copies (frees " << human_bytes(g.bytes_freed)
          << (g.in_store ? "; one copy already in the store" : "") << "):";
        for (const auto& f : g.files) o << " " << f.string();
        o << "\n";
    }
    return o.str();
}

}  // namespace modelfs::adopt
