// init, verify, gc, stats: the store as a whole.
#include <iostream>

#include "cli.h"
#include "modelfs/adopt/adopt.h"

namespace modelfs::cli {

void add_init(CLI::App& app, Globals& g, Runner& run) {
    auto* sub = app.add_subcommand("init", "Create a store (or check the one that is there)");
    sub->callback([&g, &run] {
        run = [&g] {
            auto path = g.store_path();
            bool existed = std::filesystem::exists(path / "catalog" / "data.mdb");
            Store s = Store::init(path);
            if (g.json) {
                print_json({{"store", s.root().string()}, {"created", !existed}});
            } else if (!g.quiet) {
                std::cout << (existed ? "store already exists at " : "created store at ")
                          << s.root().string() << "\n";
            }
            return kOk;
        };
    });
}

void add_verify(CLI::App& app, Globals& g, Runner& run) {
    auto* sub = app.add_subcommand(
        "verify",
        "Check every stored blob against its hash; corrupt blobs are moved to quarantine/");
    auto fast = std::make_shared<bool>(false);
    auto jobs = std::make_shared<unsigned>(0);
    sub->add_flag("--fast", *fast,
                  "Read blobs whose file is as the catalog recorded it with XXH3-128 instead of "
                  "SHA-256 (several times faster); any other is hashed with SHA-256");
    sub->add_option("-j,--jobs", *jobs, "Blobs checked at once (default: number of cores)");
    sub->callback([&g, &run, fast, jobs] {
        run = [&g, fast = *fast, jobs = *jobs] {
            Store s = g.open_store();
            VerifyReport r;
            {
                ProgressBar bar(g, fast ? "verify --fast" : "verify");
                r = s.verify(fast, jobs, bar.get());
            }
            if (g.json) {
                nlohmann::json probs = nlohmann::json::array();
                for (const auto& p : r.problems)
                    probs.push_back({{"problem", p.what},
                                     {"detail", p.detail},
                                     {"sha256", p.blob ? p.blob->hex() : ""}});
                print_json({{"blobs_checked", r.blobs_checked},
                            {"bytes_checked", r.bytes_checked},
                            {"mode", fast ? "xxh3" : "sha256"},
                            {"problems", probs},
                            {"notes", r.notes},
                            {"newly_verified", r.newly_verified},
                            {"ok", r.problems.empty()}});
            } else {
                for (const auto& p : r.problems) std::cout << p.what << ": " << p.detail << "\n";
                if (g.verbose)
                    for (const auto& n : r.notes) std::cout << "note: " << n << "\n";
                if (!g.quiet)
                    std::cout << "checked " << r.blobs_checked << " blobs ("
                              << human_bytes(r.bytes_checked) << ") with "
                              << (fast ? "XXH3-128" : "SHA-256") << ": "
                              << (r.problems.empty()
                                      ? "all good"
                                      : std::to_string(r.problems.size()) + " problem(s)")
                              << (r.notes.empty() ? ""
                                                  : ", " + std::to_string(r.notes.size()) +
                                                        " orphan file(s) for gc")
                              << "\n";
                if (!g.quiet && r.newly_verified)
                    std::cout << r.newly_verified
                              << " blob(s) taken on their names' word (import --hf-cache / "
                                 "--ollama) matched and are verified now\n";
            }
            return r.problems.empty() ? kOk : kFailed;
        };
    });
}

void add_gc(CLI::App& app, Globals& g, Runner& run) {
    auto* sub = app.add_subcommand("gc", "Delete blobs that no model version uses");
    auto dry_flag = std::make_shared<bool>(false);
    sub->add_flag("-n,--dry-run", *dry_flag, "Only list what would be deleted");
    sub->callback([&g, &run, dry_flag] {
        run = [&g, dry = *dry_flag] {
            Store s = g.open_store();
            GcReport r = s.gc(dry);
            if (g.json) {
                nlohmann::json blobs = nlohmann::json::array();
                for (const auto& [h, size] : r.blobs)
                    blobs.push_back({{"sha256", h.hex()}, {"size", size}});
                nlohmann::json orphans = nlohmann::json::array();
                for (const auto& p : r.orphan_files) orphans.push_back(p.string());
                print_json({{"dry_run", dry},
                            {"blobs", blobs},
                            {"orphan_files", orphans},
                            {"bytes", r.bytes},
                            {"skipped_open", r.skipped_open},
                            {"partials_removed", r.partials_removed},
                            {"staging_removed", r.staging_removed}});
            } else if (!g.quiet) {
                for (const auto& [h, size] : r.blobs)
                    std::cout << (dry ? "would delete " : "deleted ") << h.hex() << "  "
                              << human_bytes(size) << "\n";
                for (const auto& p : r.orphan_files)
                    std::cout << (dry ? "would delete orphan " : "deleted orphan ") << p.string()
                              << "\n";
                std::cout << (dry ? "would free " : "freed ") << human_bytes(r.bytes) << " ("
                          << r.blobs.size() << " blob(s), " << r.orphan_files.size()
                          << " orphan file(s)"
                          << (r.partials_removed ? ", " + std::to_string(r.partials_removed) +
                                                       " unfinished download(s)"
                                                 : "")
                          << ")"
                          << (r.skipped_open ? "; kept " + std::to_string(r.skipped_open) +
                                                   " unused blob(s) that are open (a mount is "
                                                   "reading them): run gc again later"
                                             : "")
                          << "\n";
            }
            return kOk;
        };
    });
}

void add_stats(CLI::App& app, Globals& g, Runner& run) {
    auto* sub = app.add_subcommand("stats", "Space used and saved by deduplication");
    sub->callback([&g, &run] {
        run = [&g] {
            Store s = g.open_store();
            StoreStats st = s.stats(adopt::adopted_files(s.root()));
            // Remote blobs count as stored content too: each is one distinct file, wherever.
            // Materialised copies are a cache of composed blobs, not content.
            const std::uint64_t distinct =
                st.physical_bytes - st.materialised_bytes + st.remote_bytes;
            const std::uint64_t saved = st.saved() + st.tensor_saved_bytes;
            double ratio =
                distinct ? static_cast<double>(st.logical_bytes) / static_cast<double>(distinct)
                         : 1.0;
            if (g.json) {
                nlohmann::json cats = nlohmann::json::object();
                for (const auto& [c, cs] : st.per_category)
                    cats[std::string(to_string(c))] = {{"models", cs.models}, {"bytes", cs.bytes}};
                print_json({{"store", s.root().string()},
                            {"models", st.models},
                            {"versions", st.versions},
                            {"files", st.files},
                            {"blobs", st.blobs},
                            {"logical_bytes", st.logical_bytes},
                            {"physical_bytes", st.physical_bytes},
                            {"remote_blobs", st.remote_blobs},
                            {"remote_bytes", st.remote_bytes},
                            {"saved_bytes", saved},
                            {"file_saved_bytes", st.saved()},
                            {"tensor_saved_bytes", st.tensor_saved_bytes},
                            {"composed_files", st.composed_blobs},
                            {"materialised_bytes", st.materialised_bytes},
                            {"dedup_ratio", ratio},
                            {"categories", cats}});
                return kOk;
            }
            std::printf("store          %s\n", s.root().c_str());
            std::printf("models         %zu (%zu versions, %zu files)\n", st.models, st.versions,
                        st.files);
            std::printf("blobs          %zu\n", st.blobs);
            std::printf("logical        %s\n", human_bytes(st.logical_bytes).c_str());
            std::printf("physical       %s\n", human_bytes(st.physical_bytes).c_str());
            if (st.remote_blobs)
                std::printf("remote         %s in %zu blob(s), fetched when first used\n",
                            human_bytes(st.remote_bytes).c_str(), st.remote_blobs);
            std::printf("saved          %s (dedup ratio %.2fx)\n", human_bytes(saved).c_str(),
                        ratio);
            std::printf("  by file      %s (identical files stored once)\n",
                        human_bytes(st.saved()).c_str());
            std::printf("  by tensor    %s (%zu file(s) stored as extents of shared tensors)\n",
                        human_bytes(st.tensor_saved_bytes).c_str(), st.composed_blobs);
            if (st.materialised_bytes)
                std::printf(
                    "materialised   %s (whole copies of often-read composed files, "
                    "in physical)\n",
                    human_bytes(st.materialised_bytes).c_str());
            for (const auto& [c, cs] : st.per_category)
                std::printf("  %-16s %5zu models  %s\n", std::string(to_string(c)).c_str(),
                            cs.models, human_bytes(cs.bytes).c_str());
            return kOk;
        };
    });
}

}  // namespace modelfs::cli
