// dedupe, materialise: tensor-level deduplication (store/tensor_split.h).
#include <cstdio>
#include <iostream>

#include "cli.h"

namespace modelfs::cli {

namespace {

// The stored file a NAME|HASH|HASH-PREFIX refers to: a model's current file, or a blob.
Sha256 file_of(Store& s, const std::string& query) {
    Resolved r = s.resolve(query);
    if (r.model) {
        const ModelVersion& v = r.model->current_version();
        if (!v.blob)
            throw UsageError(r.model->key() +
                             " is a multi-file model; give the hash of one of its files");
        return *v.blob;
    }
    if (r.blob) return *r.blob;
    throw StoreError(ErrorKind::not_found, "nothing in the store matches '" + query + "'");
}

}  // namespace

void add_tensor_commands(CLI::App& app, Globals& g, Runner& run) {
    auto* dd = app.add_subcommand(
        "dedupe",
        "Store files that share tensors with other stored files as extents (new imports and "
        "saves do this by themselves; this does it for files stored before)");
    auto dry = std::make_shared<bool>(false);
    dd->add_flag("-n,--dry-run", *dry, "Only say what sharing would save");
    dd->callback([&g, &run, dry] {
        run = [&g, dry_run = *dry] {
            Store s = g.open_store();
            // Oldest first: a base checkpoint is indexed before the fine-tunes made from it.
            std::vector<std::pair<std::int64_t, Sha256>> todo;
            s.catalog().read().for_each_blob([&](const Sha256& h, const BlobRecord& r) {
                if (r.state == BlobState::present && !r.composed() && !r.pieces)
                    todo.push_back({r.ingested, h});
            });
            std::sort(todo.begin(), todo.end());
            nlohmann::json out = nlohmann::json::array();
            std::uint64_t shared = 0;
            std::size_t composed = 0;
            for (const auto& [t, h] : todo) {
                SplitReport r = s.split_tensors(h, dry_run);
                if (r.pieces < 2) continue;  // not a model file
                if (r.composed || (dry_run && r.shared_bytes >= kMinSharedBytes)) {
                    ++composed;
                    shared += r.shared_bytes;
                }
                out.push_back({{"sha256", h.hex()},
                               {"size", r.size},
                               {"composed", r.composed},
                               {"shared_bytes", r.shared_bytes},
                               {"new_bytes", r.new_bytes},
                               {"extents", r.extents},
                               {"why_not", r.why_not}});
                if (!g.json && !g.quiet)
                    std::printf(
                        "%s  %s: %s\n", h.hex().substr(0, 12).c_str(), human_bytes(r.size).c_str(),
                        r.composed ? ("stored as " + std::to_string(r.extents) + " extents, " +
                                      human_bytes(r.shared_bytes) + " shared")
                                         .c_str()
                                   : ("whole (" + r.why_not + ")").c_str());
            }
            if (g.json) {
                print_json({{"dry_run", dry_run},
                            {"files", out},
                            {"composed", composed},
                            {"shared_bytes", shared}});
            } else if (!g.quiet) {
                std::printf("%s%zu file(s) %s as extents, sharing %s\n", dry_run ? "dry run: " : "",
                            composed, dry_run ? "could be stored" : "stored",
                            human_bytes(shared).c_str());
            }
            return kOk;
        };
    });

    auto* mat = app.add_subcommand(
        "materialise",
        "Keep a whole copy of a composed file, read like any blob (mounts do this by themselves "
        "for files opened often, within the budget)");
    auto what = std::make_shared<std::string>();
    auto drop = std::make_shared<bool>(false);
    auto budget = std::make_shared<std::string>();
    mat->add_option("NAME", *what, "Model name, hash or hash prefix");
    mat->add_flag("--drop", *drop, "Remove its whole copy instead (the extents stay)");
    mat->add_option("--budget", *budget,
                    "Set how much room whole copies may take (e.g. 8G; 0: none are made by "
                    "mounts); without NAME, print it");
    mat->callback([&g, &run, what, drop, budget] {
        run = [&g, what = *what, drop = *drop, budget = *budget] {
            Store s = g.open_store();
            if (!budget.empty()) {
                auto n = parse_size(budget);
                if (!n) throw UsageError("--budget: '" + budget + "' is not a size (e.g. 8G)");
                s.set_materialise_budget(*n);
            }
            if (what.empty()) {
                if (drop) throw UsageError("--drop needs a NAME");
                if (g.json)
                    print_json({{"budget", s.materialise_budget()}});
                else if (!g.quiet)
                    std::printf("materialise budget %s\n",
                                human_bytes(s.materialise_budget()).c_str());
                return kOk;
            }
            const Sha256 h = file_of(s, what);
            auto rec = s.catalog().read().get_blob(h);
            if (!rec || !rec->composed())
                throw UsageError(what + " is stored whole, not as extents: nothing to " +
                                 (drop ? "drop" : "materialise"));
            if (drop) {
                const bool dropped = s.drop_materialised(h);
                if (g.json)
                    print_json({{"sha256", h.hex()}, {"dropped", dropped}});
                else if (!g.quiet)
                    std::printf("%s\n", dropped
                                            ? "dropped its whole copy"
                                            : "no whole copy to drop (or a process has it open)");
                return kOk;
            }
            MaterialiseResult r = s.materialise(h);
            if (g.json) {
                nlohmann::json d = nlohmann::json::array();
                for (const auto& x : r.dropped) d.push_back(x.hex());
                print_json({{"sha256", h.hex()},
                            {"materialised", r.materialised || r.already},
                            {"dropped", d},
                            {"why_not", r.why_not}});
            } else if (!g.quiet) {
                if (r.materialised || r.already)
                    std::printf("%s: whole copy %s (%s)\n", h.hex().substr(0, 12).c_str(),
                                r.already ? "was there" : "made", human_bytes(r.size).c_str());
                else
                    std::printf("%s: not materialised: %s\n", h.hex().substr(0, 12).c_str(),
                                r.why_not.c_str());
            }
            return r.materialised || r.already ? kOk : kFailed;
        };
    });
}

}  // namespace modelfs::cli
