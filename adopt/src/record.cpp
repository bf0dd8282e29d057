// Adoption records STORE/adopt/<id>.json (format in store/FORMAT.md).
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <sstream>

#include "modelfs/adopt/adopt.h"
#include "modelfs/store/atomic_file.h"
#include "modelfs/store/errors.h"
#include "modelfs/store/model_name.h"
#include "run_internal.h"
#include "util.h"

namespace stdfs = std::filesystem;
using nlohmann::json;

namespace modelfs::adopt {

namespace {

constexpr std::pair<ScannedFile::Kind, const char*> kKinds[] = {
    {ScannedFile::Kind::model, "model"},           {ScannedFile::Kind::sidecar, "sidecar"},
    {ScannedFile::Kind::plain, "plain"},           {ScannedFile::Kind::broken_link, "broken_link"},
    {ScannedFile::Kind::unreadable, "unreadable"}, {ScannedFile::Kind::special, "special"},
};
constexpr std::pair<Action, const char*> kActions[] = {
    {Action::store, "store"},       {Action::store_in_place, "store_in_place"},
    {Action::overlay, "overlay"},   {Action::left, "left"},
    {Action::changing, "changing"},
};

std::string kind_name(ScannedFile::Kind k) {
    return std::string(detail::name_in(kKinds, k).value_or("plain"));
}
ScannedFile::Kind parse_kind(const std::string& s) {
    return detail::value_in(kKinds, s).value_or(ScannedFile::Kind::plain);
}

}  // namespace

std::string_view action_name(Action a) {
    return detail::name_in(kActions, a).value_or("left");
}
std::optional<Action> parse_action(std::string_view s) {
    return detail::value_in(kActions, s);
}

json record_json(const Record& r) {
    json files = json::array();
    for (const auto& f : r.files)
        files.push_back({{"path", f.path.string()},
                         {"real", f.real.string()},
                         {"kind", kind_name(f.kind)},
                         {"view_rel", f.view_rel},
                         {"replaced", f.replaced},
                         {"sha256", f.sha256},
                         {"size", f.size},
                         {"mode", f.mode},
                         {"mtime_ns", f.mtime_ns},
                         {"link_target", f.link_target},
                         {"action", std::string(action_name(f.action))},
                         {"model", f.model},
                         {"label", f.label},
                         {"pinned", f.pinned},
                         {"shown_at", f.shown_at},
                         {"note", f.note}});
    for (std::size_t i = 0; i < r.files.size(); ++i)
        if (r.files[i].left != Left::none)
            files[i]["left"] = std::string(left_name(r.files[i].left));
    json j = {{"modelfs_adopt", 1},
              {"id", r.id},
              {"tool", r.tool},
              {"view", r.view},
              {"root", r.root.string()},
              {"models_dir", r.models_dir.string()},
              {"backup", r.backup.string()},
              {"mountpoint", r.mountpoint.string()},
              {"state", std::string(state_name(r.state))},
              {"created", r.created},
              {"updated", r.updated},
              {"files", files}};
    if (r.dirs) j["dirs"] = *r.dirs;
    return j;
}

static Record record_from_json(const json& j, const stdfs::path& file) {
    try {
        if (j.at("modelfs_adopt").get<int>() != 1)
            throw StoreError(ErrorKind::schema, file.string() +
                                                    ": written by a newer modelfs; upgrade "
                                                    "modelfs to adopt or unadopt this install");
        Record r;
        r.id = j.at("id");
        r.tool = j.at("tool");
        r.view = j.at("view");
        r.root = j.at("root").get<std::string>();
        r.models_dir = j.at("models_dir").get<std::string>();
        r.backup = j.at("backup").get<std::string>();
        r.mountpoint = j.at("mountpoint").get<std::string>();
        const std::string state = j.at("state");
        if (auto st = parse_state(state))
            r.state = *st;
        else
            throw StoreError(ErrorKind::schema, file.string() + ": unknown state '" + state +
                                                    "'; upgrade modelfs to adopt or unadopt this "
                                                    "install");
        r.created = j.value("created", 0);
        r.updated = j.value("updated", 0);
        for (const auto& f : j.at("files")) {
            RecordFile x;
            x.path = f.at("path").get<std::string>();
            x.real = f.value("real", x.path.string());
            x.kind = parse_kind(f.at("kind"));
            x.view_rel = f.value("view_rel", "");
            x.replaced = f.value("replaced", false);
            x.sha256 = f.value("sha256", "");
            x.size = f.value("size", std::uint64_t{0});
            x.mode = f.value("mode", 0u);
            x.mtime_ns = f.value("mtime_ns", std::int64_t{0});
            x.link_target = f.value("link_target", "");
            x.action = parse_action(f.value("action", "left")).value_or(Action::left);
            x.model = f.value("model", "");
            x.label = f.value("label", "");
            x.pinned = f.value("pinned", false);
            x.shown_at = f.value("shown_at", "");
            x.note = f.value("note", "");
            if (f.contains("left"))
                x.left = parse_left(f.at("left").get<std::string>()).value_or(Left::none);
            else if (x.action == Action::left)
                x.left = detail::left_of_legacy_note(x.note);
            r.files.push_back(std::move(x));
        }
        if (j.contains("dirs")) r.dirs = j.at("dirs").get<std::vector<std::string>>();
        // Records written before model names had their extension (store/FORMAT.md "models")
        // name "lora/foo" for Lora/foo.safetensors: the store's upgrade renamed it to the name
        // plus the file's extension, and so is the record read (its sidecars follow their model).
        std::map<std::string, std::string> renamed;
        for (auto& x : r.files) {
            if (x.kind != ScannedFile::Kind::model || x.model.empty() ||
                x.model.starts_with("file/"))
                continue;
            const std::string ext =
                split_extension(x.shown_at.empty() ? x.view_rel : x.shown_at).second;
            if (ext.empty() || x.model.ends_with(ext)) continue;
            renamed.emplace(x.model, x.model + ext);
            x.model += ext;
        }
        for (auto& x : r.files)
            if (x.kind == ScannedFile::Kind::sidecar)
                if (auto it = renamed.find(x.model); it != renamed.end()) x.model = it->second;
        return r;
    } catch (const json::exception& e) {
        throw StoreError(ErrorKind::bad_input, file.string() + ": not a valid adoption record (" +
                                                   e.what() + "); fix or move it away");
    }
}

std::optional<Record> load_record(const stdfs::path& store_root, const std::string& id) {
    stdfs::path p = adopt_dir(store_root) / (id + ".json");
    std::ifstream in(p);
    if (!in) return std::nullopt;
    std::stringstream ss;
    ss << in.rdbuf();
    json j = json::parse(ss.str(), nullptr, false);
    if (j.is_discarded())
        throw StoreError(ErrorKind::bad_input,
                         p.string() + ": not valid JSON; fix or move it away");
    return record_from_json(j, p);
}

std::vector<Record> load_records(const stdfs::path& store_root) {
    std::vector<Record> out;
    std::error_code ec;
    for (const auto& e : stdfs::directory_iterator(adopt_dir(store_root), ec)) {
        const auto& p = e.path();
        if (p.extension() != ".json") continue;
        if (auto r = load_record(store_root, p.stem().string())) out.push_back(std::move(*r));
    }
    std::sort(out.begin(), out.end(), [](const Record& a, const Record& b) { return a.id < b.id; });
    return out;
}

AdoptedFiles adopted_files(const stdfs::path& store_root) {
    AdoptedFiles out;
    for (const auto& r : load_records(store_root)) {
        // Not yet switched (recorded) or given back: the install's files are all on disk.
        if (!switched(r.state)) continue;
        for (const auto& f : r.files) {
            auto sha = Sha256::from_hex(f.sha256);
            if (f.action != Action::store || f.model.empty() || !sha) continue;
            // Adopted but still on disk (a duplicate the backup holds until confirm, a file
            // confirm kept) is not saved yet: counted 0 times, the blob counts it.
            auto& n = out[f.model][*sha];
            struct stat st;
            if (::lstat(detail::original_path(r, f).c_str(), &st) != 0 && errno == ENOENT) ++n;
        }
    }
    return out;
}

void save_record(const stdfs::path& store_root, Record& r) {
    stdfs::create_directories(adopt_dir(store_root));
    r.updated = detail::unix_now();
    if (!r.created) r.created = r.updated;
    write_file_atomically(adopt_dir(store_root) / (r.id + ".json"), record_json(r).dump(1) + "\n");
}

}  // namespace modelfs::adopt
