// import: files and folders into the store.
#include <iostream>

#include "cli.h"
#include "modelfs/adopt/other_stores.h"

namespace modelfs::cli {
namespace {

struct ImportArgs {
    std::vector<std::string> paths;
    std::string category, name, version;
    bool move = false;
    unsigned jobs = 0;
    // Caches of other programs (`--hf-cache [DIR]`, `--ollama [DIR]`): given means set, an empty
    // value means the default folder.
    std::optional<std::string> hf_cache, ollama;
};

const char* outcome_name(ImportItem::Outcome o) {
    switch (o) {
        case ImportItem::Outcome::added:
            return "added";
        case ImportItem::Outcome::new_version:
            return "new-version";
        case ImportItem::Outcome::unchanged:
            return "unchanged";
        case ImportItem::Outcome::failed:
            return "failed";
    }
    return "?";
}

nlohmann::json other_json(const char* kind, const adopt::OtherStoreReport& r) {
    nlohmann::json items = nlohmann::json::array();
    for (const auto& it : r.items) {
        nlohmann::json j = {{"source", it.source},
                            {"model", it.model_key},
                            {"version", it.label},
                            {"outcome", std::string(adopt::to_string(it.outcome))},
                            {"files", it.files}};
        if (!it.detail.empty()) j["detail"] = it.detail;
        if (it.outcome != adopt::OtherStoreItem::Outcome::skipped &&
            it.outcome != adopt::OtherStoreItem::Outcome::failed) {
            j["current"] = it.current;
            j["size"] = it.size;
            j["new_bytes"] = it.new_bytes;
            j["linked"] = it.linked;
            j["copied"] = it.copied;
            j["hashed"] = it.hashed;
            j["unverified"] = it.unverified;
        }
        items.push_back(std::move(j));
    }
    return {{"kind", kind},     {"dir", r.dir.string()},          {"items", items},
            {"notes", r.notes}, {"nothing_new", r.nothing_new()}, {"ok", r.ok()}};
}

void print_other(const Globals& g, const char* what, const adopt::OtherStoreReport& r) {
    using Outcome = adopt::OtherStoreItem::Outcome;
    std::size_t added = 0, unchanged = 0, skipped = 0, failed = 0, unverified = 0;
    std::uint64_t linked_bytes = 0, copied_bytes = 0;
    for (const auto& it : r.items) {
        switch (it.outcome) {
            case Outcome::added:
            case Outcome::new_version:
                ++added;
                break;
            case Outcome::unchanged:
                ++unchanged;
                break;
            case Outcome::skipped:
                ++skipped;
                break;
            case Outcome::failed:
                ++failed;
                break;
        }
        unverified += it.unverified;
        // Bytes by how they arrived; a version mixing both is counted by its majority.
        (it.copied > it.linked ? copied_bytes : linked_bytes) += it.new_bytes;
        if (it.outcome == Outcome::failed) {
            std::cerr << "modelfs: error: " << it.source << ": " << it.detail << "\n";
            continue;
        }
        if (it.outcome == Outcome::skipped) {
            std::cerr << "modelfs: warning: " << it.detail << "\n";
            continue;
        }
        if (g.quiet) continue;
        std::cout << std::string(adopt::to_string(it.outcome)) << "  " << it.model_key << "@"
                  << it.label << (it.current ? " (current)" : "") << "  " << it.files << " files  "
                  << human_bytes(it.size);
        if (it.outcome != Outcome::unchanged) {
            std::string how;
            auto add = [&](std::size_t n, const char* w) {
                if (n) how += (how.empty() ? "" : ", ") + std::to_string(n) + " " + w;
            };
            add(it.linked, "linked");
            add(it.copied, "copied");
            add(it.hashed, "hashed");
            if (it.files > it.linked + it.copied)
                add(it.files - it.linked - it.copied, "already stored");
            std::cout << "  (" << how << ")";
        }
        if (!it.detail.empty()) std::cout << "  " << it.detail;
        std::cout << "\n";
    }
    if (g.quiet) return;
    for (const auto& n : r.notes) std::cout << "note: " << n << "\n";
    std::cout << what << " " << r.dir.string() << ": ";
    if (r.items.empty()) {
        std::cout << "no model found\n";
        return;
    }
    if (r.nothing_new()) {
        std::cout << "nothing new; all " << r.items.size()
                  << " version(s) were already in the store\n";
        return;
    }
    std::cout << added << " version(s) imported (" << human_bytes(linked_bytes)
              << " linked without copying, " << human_bytes(copied_bytes) << " copied), "
              << unchanged << " already there";
    if (skipped) std::cout << ", " << skipped << " skipped (incomplete in the cache)";
    if (failed) std::cout << ", " << failed << " failed";
    std::cout << "\n";
    if (unverified)
        std::cout << unverified
                  << " file(s) were taken on their names' word, not read; `modelfs verify` "
                     "checks them\n";
}

int run_import_caches(const Globals& g, const ImportArgs& a) {
    if (!a.paths.empty())
        throw UsageError(
            "--hf-cache and --ollama import a whole cache; give its folder as their "
            "value, not as a path");
    if (!a.category.empty() || !a.name.empty() || !a.version.empty() || a.move)
        throw UsageError(
            "--category, --name, --version and --move do not apply to --hf-cache "
            "and --ollama (names, versions and categories come from the cache; "
            "its files are linked, never moved)");
    Store s = g.open_store();
    nlohmann::json out = nlohmann::json::array();
    bool ok = true;
    auto one = [&](const char* kind, const char* what, const std::optional<std::string>& dir,
                   auto importer, std::filesystem::path fallback) {
        if (!dir) return;
        const std::filesystem::path where = dir->empty() ? fallback : std::filesystem::path(*dir);
        adopt::OtherStoreReport r;
        {
            ProgressBar bar(g, std::string("import ") + kind);
            r = importer(s, where, bar.get());
        }
        ok = ok && r.ok();
        if (g.json)
            out.push_back(other_json(kind, r));
        else
            print_other(g, what, r);
    };
    one("hf-cache", "Hugging Face hub cache", a.hf_cache, adopt::import_hf_cache,
        adopt::default_hf_cache());
    one("ollama", "Ollama models", a.ollama, adopt::import_ollama, adopt::default_ollama_models());
    if (g.json) print_json({{"caches", out}, {"ok", ok}});
    return ok ? kOk : kFailed;
}

int run_import(const Globals& g, const ImportArgs& a) {
    if (a.hf_cache || a.ollama) return run_import_caches(g, a);
    if (a.paths.empty()) throw UsageError("import: give the files or folders to import");
    ImportOptions opts;
    if (!a.category.empty()) opts.category = parse_category_arg(a.category);
    if (!a.name.empty()) opts.name = a.name;
    if (!a.version.empty()) opts.version = a.version;
    opts.move = a.move;
    opts.jobs = a.jobs;
    std::vector<std::filesystem::path> paths(a.paths.begin(), a.paths.end());
    // A file named on purpose is imported whatever it is (a folder walk skips such files), but a
    // notes.txt stored as a model is rarely what was meant; -c says it was.
    if (a.category.empty())
        for (const auto& p : paths) {
            std::error_code ec;
            if (!std::filesystem::is_regular_file(p, ec) ||
                is_model_file_name(p.filename().string()))
                continue;
            std::cerr << "modelfs: warning: " << terminal_safe(p.string())
                      << " is not a model format (model files end in .safetensors, .gguf, .ckpt, "
                         ".pt, .pth, .bin, ...); importing it as category 'other' anyway (-c "
                         "CATEGORY says what it is)\n";
        }

    Store s = g.open_store();
    ImportReport r;
    {
        ProgressBar bar(g, "import");
        r = s.import(paths, opts, bar.get());
    }

    std::uint64_t new_bytes = 0, dedup_bytes = 0;
    std::size_t failed = 0;
    for (const auto& it : r.items) {
        if (it.outcome == ImportItem::Outcome::failed) {
            ++failed;
        } else if (it.split && it.split->composed) {  // shares tensors with stored files
            new_bytes += it.split->new_bytes;
            dedup_bytes += it.split->shared_bytes;
        } else if (it.new_blob) {
            new_bytes += it.size;
        } else {
            dedup_bytes += it.size;
        }
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
                if (it.split && it.split->composed)
                    j["tensors"] = {{"extents", it.split->extents},
                                    {"shared_bytes", it.split->shared_bytes},
                                    {"new_bytes", it.split->new_bytes}};
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
            std::cout << outcome_name(it.outcome) << "  " << it.model_key << "@" << it.label << "  "
                      << human_bytes(it.size);
            if (it.files > 1)
                std::cout << "  " << it.files << " files";
            else if (it.sha256 != Sha256{})
                std::cout << "  " << it.sha256.autov2();
            if (!it.new_blob && it.outcome != ImportItem::Outcome::unchanged)
                std::cout << "  (already stored)";
            if (it.split && it.split->composed)
                std::cout << "  (shares " << human_bytes(it.split->shared_bytes)
                          << " of tensors with stored files; " << human_bytes(it.split->new_bytes)
                          << " new)";
            std::cout << "\n";
        }
        if (!g.quiet)
            std::cout << r.items.size() - failed << " model(s) imported: " << human_bytes(new_bytes)
                      << " stored, " << human_bytes(dedup_bytes) << " deduplicated"
                      << (failed ? ", " + std::to_string(failed) + " failed" : "")
                      << (r.skipped_files ? ", " + std::to_string(r.skipped_files) +
                                                " non-model file(s) skipped"
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
    sub->add_option("paths", a->paths, "Model files, model folders or whole tool installs");
    sub->add_option("--hf-cache", a->hf_cache,
                    "Import a Hugging Face hub cache (default $HF_HUB_CACHE, else $HF_HOME/hub, "
                    "else ~/.cache/huggingface/hub): each repo a model, each snapshot a version; "
                    "files are hard-linked, not copied, and checked later by `verify`")
        ->expected(0, 1);
    sub->add_option("--ollama", a->ollama,
                    "Import an Ollama models folder (default $OLLAMA_MODELS, else "
                    "~/.ollama/models, else /usr/share/ollama/.ollama/models): each model a "
                    "model, each tag a version; files are hard-linked, not copied")
        ->expected(0, 1);
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
