// ls and show: what is in the store, by name or by content.
#include <fcntl.h>
#include <sys/stat.h>

#include <iostream>

#include "cli.h"
#include "modelfs/fetch/source.h"
#include "modelfs/store/team_remote.h"

namespace modelfs::cli {
namespace {

using nlohmann::json;

json safetensors_json(const SafetensorsInfo& info) {
    json comps = json::array();
    if (info.has_unet) comps.push_back("unet");
    if (info.has_vae) comps.push_back("vae");
    if (info.has_text_encoder) comps.push_back("text_encoder");
    return {{"header_bytes", info.header_len},
            {"tensors", info.tensor_count},
            {"parameters", info.parameter_count},
            {"dtypes", info.dtypes},
            {"components", comps},
            {"metadata", info.metadata}};
}

// Everything known about one blob; the human output is printed from this same object.
json blob_json(Store& s, const Sha256& h, Progress* progress) {
    json j = {{"sha256", h.hex()}, {"autov2", h.autov2()}};
    auto rec = s.catalog().read().get_blob(h);
    if (!rec) return j;
    j["size"] = rec->size;
    j["state"] = std::string(to_string(rec->state));
    if (rec->xxh128) j["xxh3_128"] = rec->xxh128->hex();
    j["ingested"] = rec->ingested;
    if (rec->accessed) j["accessed"] = rec->accessed;
    const StorageInfo how = s.storage_info(h);
    if (rec->state == BlobState::present) {
        if (how.how != StorageInfo::How::composed) j["path"] = s.blobs().path_of(h).string();
        j["stored_as"] = how.how == StorageInfo::How::whole      ? "whole"
                         : how.how == StorageInfo::How::composed ? "composed"
                                                                 : "materialised";
        if (how.how != StorageInfo::How::whole) {
            json with = json::array();
            for (const auto& [model, n] : how.shared_with)
                with.push_back({{"model", model}, {"bytes", n}});
            j["extents"] = how.extents;
            j["own_bytes"] = how.own_bytes;
            j["shared_bytes"] = how.shared_bytes;
            j["shared_with"] = with;
        } else if (how.used_by_composed) {
            j["used_by_composed"] = how.used_by_composed;
        }
    }
    if (!rec->sources.empty()) {
        json src = json::array();
        for (const auto& so : rec->sources)
            src.push_back({{"url", fetch::redact_url(so.url)}, {"stream", so.stream}});
        j["sources"] = src;
    }
    // The key of a placeholder is not the content's hash: say so rather than show it as one.
    if (rec->placeholder) j["placeholder"] = true;
    if (rec->keep) j["keep"] = true;
    // Catalogued under the hash its source's name gave (import --hf-cache / --ollama): present
    // and served, but nothing has read it yet; `verify` does.
    if (rec->unverified) j["unverified"] = true;
    if (!rec->fetch_error.empty()) {
        j["fetch_error"] = rec->fetch_error;
        j["fetch_failed_at"] = rec->fetch_failed_at;
    }
    try {
        if (auto v3 = s.autov3(h, progress)) j["autov3"] = v3->hex();
        if (auto info = s.safetensors_info(h)) j["safetensors"] = safetensors_json(*info);
    } catch (const std::exception& e) {
        j["error"] = e.what();
    }
    return j;
}

json version_json(const ModelVersion& v, bool current) {
    json j = {{"label", v.label}, {"added", v.added}, {"size", v.size}, {"current", current}};
    if (!v.source.empty()) j["source"] = v.source;
    if (!v.note.empty()) j["note"] = v.note;
    if (v.blob) {
        j["sha256"] = v.blob->hex();
        j["ext"] = v.ext;
    } else {
        json files = json::array();
        for (const auto& t : v.tree)
            files.push_back({{"path", t.path}, {"sha256", t.blob.hex()}, {"size", t.size}});
        j["files"] = files;
    }
    return j;
}

void print_blob(const json& b, const std::string& indent) {
    // Metadata, URLs and errors come from files and servers: escaped, so nothing in them drives
    // the terminal.
    auto line = [&](const char* k, const std::string& v) {
        std::printf("%s%-11s %s\n", indent.c_str(), k, terminal_safe(v).c_str());
    };
    if (b.value("placeholder", false)) {
        line("sha256", "not known yet: computed at the first download");
        line("key", b["sha256"].get<std::string>() + " (placeholder)");
    } else {
        line("sha256", b["sha256"]);
        line("autov2", b["autov2"]);
    }
    if (b.contains("autov3")) line("autov3", b["autov3"]);
    if (b.contains("xxh3_128")) line("xxh3-128", b["xxh3_128"]);
    if (b.contains("size"))
        line("size", human_bytes(b["size"]) + " (" +
                         std::to_string(b["size"].get<std::uint64_t>()) + " bytes)");
    if (b.contains("state"))
        line("state", b["state"].get<std::string>() + (b.value("keep", false) ? ", kept" : "") +
                          (b.value("unverified", false)
                               ? ", not verified yet (its name was trusted; run modelfs verify)"
                               : ""));
    if (b.contains("path")) line("blob", b["path"]);
    if (b.contains("stored_as")) {
        const std::string how = b["stored_as"];
        if (how == "whole")
            line("stored", "whole file" +
                               (b.contains("used_by_composed")
                                    ? ", tensors of it shared by " +
                                          std::to_string(b["used_by_composed"].get<std::size_t>()) +
                                          " composed file(s)"
                                    : std::string()));
        else
            line("stored", "as " + std::to_string(b["extents"].get<std::size_t>()) + " extents" +
                               (how == "materialised" ? ", and materialised" : "") + ": " +
                               human_bytes(b["own_bytes"]) + " its own, " +
                               human_bytes(b["shared_bytes"]) + " shared");
        if (b.contains("shared_with"))
            for (const auto& w : b["shared_with"])
                line("shares", human_bytes(w["bytes"]) + " with " + w["model"].get<std::string>());
    }
    if (b.contains("sources"))
        for (const auto& so : b["sources"])
            line("source",
                 so["url"].get<std::string>() + (so["stream"].get<bool>() ? " (stream)" : ""));
    if (b.contains("fetch_error"))
        line("fetch error",
             format_time(b["fetch_failed_at"]) + ": " + b["fetch_error"].get<std::string>());
    if (b.contains("safetensors")) {
        const json& st = b["safetensors"];
        std::string dt;
        for (const auto& [k, v] : st["dtypes"].items())
            dt += (dt.empty() ? "" : ", ") + k + ": " + std::to_string(v.get<std::uint64_t>());
        line("tensors", std::to_string(st["tensors"].get<std::uint64_t>()) + " (" + dt + "), " +
                            human_count(st["parameters"]) + " parameters");
        std::string comps;
        for (const auto& c : st["components"])
            comps += (comps.empty() ? "" : ", ") + c.get<std::string>();
        if (!comps.empty()) line("components", comps);
        for (const auto& [k, v] : st["metadata"].items()) {
            std::string val = v.get<std::string>();
            if (val.size() > 120) val = val.substr(0, 117) + "...";
            line("metadata", k + ": " + val);
        }
    }
    if (b.contains("error")) line("error", b["error"]);
}

// Which files of a version are not on this machine (remote, or partly downloaded).
struct RemoteFiles {
    std::size_t files = 0;       // not present
    bool any_partial = false;    // some download started
    bool placeholder = false;    // a single file whose hash is not known yet
    std::size_t unverified = 0;  // present files catalogued on their names' word
    std::string state(const ModelVersion& v) const {
        const std::size_t n = v.is_tree() ? v.tree.size() : 1;
        if (files == 0) return "present";
        return files == n && !any_partial ? "remote" : "partial";
    }
};

RemoteFiles remote_files(const Txn& txn, const ModelVersion& v) {
    RemoteFiles r;
    std::vector<Sha256> files;
    if (v.blob) files.push_back(*v.blob);
    for (const auto& t : v.tree) files.push_back(t.blob);
    for (const auto& h : files) {
        auto rec = txn.get_blob(h);
        if (rec && rec->state == BlobState::present && rec->unverified) ++r.unverified;
        if (!rec || rec->state == BlobState::present) continue;
        ++r.files;
        r.any_partial = r.any_partial || rec->state == BlobState::partial;
        r.placeholder = r.placeholder || (v.blob && rec->placeholder);
    }
    return r;
}

struct LsArgs {
    std::string pattern, category;
};

int run_ls(const Globals& g, const LsArgs& a) {
    std::optional<Category> cat;
    if (!a.category.empty()) cat = parse_category_arg(a.category);
    Store s = g.open_store();
    std::vector<Model> models;
    std::vector<RemoteFiles> remote;  // per model: its current version's files not here
    auto txn = s.catalog().read();
    txn.for_each_model([&](const Model& m) {
        if (cat && m.category != *cat) return;
        if (!a.pattern.empty() && !model_matches(m, a.pattern)) return;
        models.push_back(m);
        remote.push_back(remote_files(txn, m.current_version()));
    });
    // As `fetch PATTERN` and `show`: a filter that matched nothing is "not found"; a bare `ls`
    // of an empty store is not.
    const bool nothing_matched = models.empty() && (!a.pattern.empty() || cat);
    if (g.json) {
        json out = json::array();
        for (std::size_t i = 0; i < models.size(); ++i) {
            const Model& m = models[i];
            const auto& v = m.current_version();
            json j = {{"model", m.key()},
                      {"category", to_string(m.category)},
                      {"name", m.name},
                      {"version", v.label},
                      {"size", v.size},
                      {"versions", m.versions.size()},
                      {"files", v.is_tree() ? v.tree.size() : 1}};
            if (v.blob) {
                j["sha256"] = v.blob->hex();
                j["ext"] = v.ext;
            }
            j["state"] = remote[i].state(v);
            if (remote[i].files) j["remote_files"] = remote[i].files;
            if (remote[i].unverified) j["unverified_files"] = remote[i].unverified;
            out.push_back(std::move(j));
        }
        print_json(out);
        return nothing_matched ? kNotFound : kOk;
    }
    for (std::size_t i = 0; i < models.size(); ++i) {
        const Model& m = models[i];
        const auto& v = m.current_version();
        std::string what = v.blob ? v.blob->autov2() : std::to_string(v.tree.size()) + " files";
        if (remote[i].placeholder) what = "?";  // no hash known until it is downloaded
        std::string notes;
        if (m.versions.size() > 1)
            notes += "  (" + std::to_string(m.versions.size()) + " versions)";
        const std::string state = remote[i].state(v);
        if (state == "remote")
            notes += "  [remote]";
        else if (state == "partial")
            notes += "  [partly here: " + std::to_string(remote[i].files) + " file(s) to fetch]";
        if (remote[i].unverified)
            notes += "  [" + std::to_string(remote[i].unverified) + " file(s) not verified yet]";
        std::printf("%-16s %-48s %-8s %10s  %s%s\n", std::string(to_string(m.category)).c_str(),
                    terminal_safe(m.name).c_str(), terminal_safe(v.label).c_str(),
                    human_bytes(v.size).c_str(), what.c_str(), notes.c_str());
    }
    if (nothing_matched && !g.quiet) std::cerr << "modelfs: no model matches\n";
    return nothing_matched ? kNotFound : kOk;
}

int run_show(const Globals& g, const std::string& query) {
    Store s = g.open_store();
    std::optional<ProgressBar> bar_holder(std::in_place, g, "hashing");
    Progress* bar = bar_holder->get();
    Resolved r = s.resolve(query, bar);
    json out;
    if (r.model) {
        const Model& m = *r.model;
        json versions = json::array();
        for (std::size_t i = 0; i < m.versions.size(); ++i)
            versions.push_back(version_json(m.versions[i], i == m.current));
        out = {{"model", m.key()},
               {"category", to_string(m.category)},
               {"name", m.name},
               {"current", m.current_version().label},
               {"versions", versions}};
        if (const auto& v = m.current_version(); v.blob) {
            out["file"] = blob_json(s, *v.blob, bar);
        } else {
            // Where each file of the current folder is: present, remote, partial.
            auto txn = s.catalog().read();
            json& files = out["versions"][m.current]["files"];
            for (std::size_t i = 0; i < v.tree.size(); ++i)
                if (auto rec = txn.get_blob(v.tree[i].blob)) {
                    files[i]["state"] = std::string(to_string(rec->state));
                    if (rec->unverified) files[i]["unverified"] = true;
                }
        }
    } else if (r.path) {
        out = {{"path", r.path->string()}, {"in_store", r.in_store}};
        if (r.in_store) {
            out["file"] = blob_json(s, *r.blob, bar);
            out["models"] = s.models_using(*r.blob);
        } else {
            out["file"] = {{"sha256", r.blob->hex()}, {"autov2", r.blob->autov2()}};
            if (int fd = ::open(r.path->c_str(), O_RDONLY | O_CLOEXEC); fd >= 0) {
                UniqueFd f(fd);
                struct stat st;
                if (::fstat(fd, &st) == 0) {
                    out["file"]["size"] = static_cast<std::uint64_t>(st.st_size);
                    try {
                        auto info = read_safetensors_header(fd, st.st_size);
                        out["file"]["safetensors"] = safetensors_json(info);
                        out["file"]["autov3"] = sha256_fd_from(fd, info.data_offset(), bar).hex();
                    } catch (const SafetensorsError& e) {
                        if (has_safetensors_extension(r.path->filename().string()))
                            out["file"]["error"] =
                                std::string("malformed safetensors header: ") + e.what();
                    }
                }
            }
        }
    } else {
        out = {{"file", blob_json(s, *r.blob, bar)}, {"models", s.models_using(*r.blob)}};
    }
    bar_holder.reset();  // clear the progress line before printing

    if (g.json) {
        print_json(out);
        return kOk;
    }
    if (r.model) {
        std::printf("%s\n", terminal_safe(out["model"].get<std::string>()).c_str());
        if (out.contains("file")) print_blob(out["file"], "  ");
        std::printf("  versions:\n");
        for (const auto& v : out["versions"]) {
            std::string what = v.contains("sha256") ? v["sha256"].get<std::string>().substr(0, 10)
                                                    : std::to_string(v["files"].size()) + " files";
            std::printf("  %s %-10s %s  %10s  %s  %s\n", v["current"].get<bool>() ? "*" : " ",
                        terminal_safe(v["label"].get<std::string>()).c_str(), what.c_str(),
                        human_bytes(v["size"]).c_str(), format_time(v["added"]).c_str(),
                        terminal_safe(v.value("source", std::string())).c_str());
            if (v.contains("files") && v["current"].get<bool>())
                for (const auto& f : v["files"])
                    std::printf("      %-56s %10s  %s%s\n",
                                terminal_safe(f["path"].get<std::string>()).c_str(),
                                human_bytes(f["size"]).c_str(),
                                f["sha256"].get<std::string>().substr(0, 10).c_str(),
                                f.value("state", "present") == "present"
                                    ? (f.value("unverified", false) ? "  not verified yet" : "")
                                    : ("  " + f["state"].get<std::string>()).c_str());
        }
    } else {
        if (r.path)
            std::printf("%s: %s\n", terminal_safe(r.path->string()).c_str(),
                        r.in_store ? "in the store" : "not in the store");
        print_blob(out["file"], "  ");
        if (out.contains("models"))
            for (const auto& m : out["models"])
                std::printf("  used by    %s\n", terminal_safe(m.get<std::string>()).c_str());
    }
    return kOk;
}

}  // namespace

void add_ls(CLI::App& app, Globals& g, Runner& run) {
    auto a = std::make_shared<LsArgs>();
    auto* sub = app.add_subcommand("ls", "List models (current versions)");
    sub->add_option("pattern", a->pattern,
                    "Shell pattern matched against CATEGORY/NAME or NAME, e.g. 'lora/*xl*'");
    sub->add_option("-c,--category", a->category, "Only this category");
    sub->callback([&g, &run, a] { run = [&g, a] { return run_ls(g, *a); }; });
}

void add_show(CLI::App& app, Globals& g, Runner& run) {
    auto q = std::make_shared<std::string>();
    auto* sub = app.add_subcommand(
        "show", "Everything about a model, a blob or a file: hashes, tensors, metadata, versions");
    sub->add_option("model", *q,
                    "NAME, CATEGORY/NAME, SHA-256, hash prefix (>= 4 hex, e.g. "
                    "an AutoV2), or a file path")
        ->required();
    sub->callback([&g, &run, q] { run = [&g, q] { return run_show(g, *q); }; });
}

}  // namespace modelfs::cli
