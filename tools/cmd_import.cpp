// import: files and folders into the store.
#include <iostream>

#include "cli.h"

namespace modelfs::cli {
namespace {

struct ImportArgs {
    std::vector<std::string> paths;
    std::string category, name, version;
    bool move = false;
    unsigned jobs = 0;
};

const char* outcome_name(ImportItem::Outcome o) {
    switch (o) {
        case ImportItem::Outcome::added: return "added";
        case ImportItem::Outcome::new_version: return "new-version";
        case ImportItem::Outcome::unchanged: return "unchanged";
        case ImportItem::Outcome::failed: return "failed";
    }
    return "?";
}

int run_import(const Globals& g, const ImportArgs& a) {
    ImportOptions opts;
    if (!a.category.empty()) opts.category = parse_category_arg(a.category);
    if (!a.name.empty()) opts.name = a.name;
    if (!a.version.empty()) opts.version = a.version;
    opts.move = a.move;
    opts.jobs = a.jobs;
    std::vector<std::filesystem::path> paths(a.paths.begin(), a.paths.end());

    Store s = g.open_store();
    ImportReport r;
    {
        ProgressBar bar(g, "import");
        r = s.import(paths, opts, bar.get());
    }

    std::uint64_t new_bytes = 0, dedup_bytes = 0;
    std::size_t failed = 0;
    for (const auto& it : r.items) {
        if (it.outcome == ImportItem::Outcome::failed) ++failed;
        else if (it.new_blob) new_bytes += it.size;
        else dedup_bytes += it.size;
    }
    if (g.json) {
        nlohmann::json items = nlohmann::json::array();
        for (const auto& it : r.items) {
            nlohmann::json j = {{"source", it.source.string()},
                                {"outcome", outcome_name(it.outcome)}};
            if (it.outcome == ImportItem::Outcome::failed) {
                j["error"] = it.error;
            } else {
                j["model"] = it.model_key;
                j["version"] = it.label;
                j["size"] = it.size;
                j["files"] = it.files;
                j["new_blob"] = it.new_blob;
                if (it.files == 1 && it.sha256 != Sha256{}) j["sha256"] = it.sha256.hex();
            }
            items.push_back(std::move(j));
        }
        print_json({{"items", items},
                    {"skipped_files", r.skipped_files},
                    {"stored_bytes", new_bytes},
                    {"deduplicated_bytes", dedup_bytes},
                    {"ok", r.ok()}});
    } else {
        for (const auto& it : r.items) {
            if (it.outcome == ImportItem::Outcome::failed) {
                std::cerr << "modelfs: error: " << it.error << "\n";
                continue;
            }
            if (g.quiet) continue;
            std::cout << outcome_name(it.outcome) << "  " << it.model_key << "@" << it.label
                      << "  " << human_bytes(it.size);
            if (it.files > 1) std::cout << "  " << it.files << " files";
            else if (it.sha256 != Sha256{}) std::cout << "  " << it.sha256.autov2();
            if (!it.new_blob && it.outcome != ImportItem::Outcome::unchanged)
                std::cout << "  (already stored)";
            std::cout << "\n";
        }
        if (!g.quiet)
            std::cout << r.items.size() - failed << " model(s) imported: "
                      << human_bytes(new_bytes) << " stored, " << human_bytes(dedup_bytes)
                      << " deduplicated" << (failed ? ", " + std::to_string(failed) + " failed" : "")
                      << (r.skipped_files
                              ? ", " + std::to_string(r.skipped_files) + " non-model file(s) skipped"
                              : "")
                      << "\n";
    }
    return r.ok() ? kOk : kFailed;
}

}  // namespace

void add_import(CLI::App& app, Globals& g, Runner& run) {
    auto a = std::make_shared<ImportArgs>();
    auto* sub = app.add_subcommand(
        "import",
        "Store model files and folders (copied by default; the originals are left untouched)");
    sub->add_option("paths", a->paths, "Model files, model folders or whole tool installs")
        ->required();
    sub->add_option("-c,--category", a->category,
                    "Category for everything imported (default: from folder names, then from "
                    "the file)");
    sub->add_option("-n,--name", a->name, "Model name (only when importing one model)");
    sub->add_option("-V,--version", a->version, "Version label (default v1, v2, ...)");
    sub->add_flag("--move", a->move,
                  "Move the files in (a rename on the same filesystem; across filesystems copy, "
                  "verify, then delete)");
    sub->add_option("-j,--jobs", a->jobs, "Files hashed at once (default: number of cores)");
    sub->callback([&g, &run, a] { run = [&g, a] { return run_import(g, *a); }; });
}

}  // namespace modelfs::cli
