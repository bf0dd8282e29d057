// `modelfs import --ollama`: Ollama's models folder as tree models, one version per tag.
// Layout (ollama server/images.go, manifest.go):
//   MODELS/blobs/sha256-<hex>                         every layer and config, named by SHA-256
//                                                     (sha256:<hex> in early releases)
//   MODELS/manifests/<registry>/<namespace>/<model>/<tag>
//       {"schemaVersion":2, "mediaType":..., "config":{mediaType,digest,size},
//        "layers":[{"mediaType":"application/vnd.ollama.image.model",
//                   "digest":"sha256:<hex>","size":N}, ...]}
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <system_error>

#include <nlohmann/json.hpp>

#include "modelfs/store/errors.h"
#include "modelfs/store/safe_open.h"
#include "modelfs/store/unique_fd.h"
#include "modelfs/store/version_source.h"
#include "other_stores_impl.h"

namespace stdfs = std::filesystem;

namespace modelfs::adopt {

using namespace detail;

stdfs::path default_ollama_models() {
    if (auto v = env("OLLAMA_MODELS"); !v.empty()) return v;
    std::error_code ec;
    const stdfs::path user = home_dir() / ".ollama" / "models";
    if (stdfs::is_directory(user, ec)) return user;
    const stdfs::path service = "/usr/share/ollama/.ollama/models";  // the Linux install's service
    if (stdfs::is_directory(service, ec)) return service;
    return user;
}

namespace {

// The file a layer becomes inside the model, after its media type (parameters after ';' such
// as "; name=..." do not change what it is).
std::string layer_file(std::string media) {
    if (auto semi = media.find(';'); semi != std::string::npos) media.resize(semi);
    while (!media.empty() && media.back() == ' ') media.pop_back();
    static const std::map<std::string, std::string> known = {
        {"application/vnd.ollama.image.model", "model.gguf"},
        {"application/vnd.ollama.image.projector", "projector.gguf"},
        {"application/vnd.ollama.image.adapter", "adapter.gguf"},
        {"application/vnd.ollama.image.template", "template"},
        {"application/vnd.ollama.image.system", "system"},
        {"application/vnd.ollama.image.params", "params.json"},
        {"application/vnd.ollama.image.messages", "messages.json"},
        {"application/vnd.ollama.image.license", "license"},
        {"application/vnd.ollama.image.prompt", "prompt"},
        {"application/vnd.ollama.image.embed", "embed"},
        {"application/vnd.docker.container.image.v1+json", "config.json"},
    };
    if (auto it = known.find(media); it != known.end()) return it->second;
    // Something newer: its last media-type word, so it still has a stable, readable name.
    std::string base = media.substr(media.find_last_of("./") + 1);
    std::string out;
    for (char c : base)
        out.push_back(
            std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '+' ? c
                                                                                            : '_');
    return out.empty() ? "layer" : out;
}

struct Tag {
    std::string registry, ns, model, tag;
    stdfs::path manifest;
    std::string name;  // the store model's name
    stdfs::file_time_type mtime{};
};

std::string store_name(const Tag& t) {
    if (t.registry == "registry.ollama.ai")
        return t.ns == "library" ? "ollama/" + t.model : "ollama/" + t.ns + "/" + t.model;
    return "ollama/" + t.registry + "/" + t.ns + "/" + t.model;
}

// The blob of a digest, under its current or its early name.
std::optional<stdfs::path> blob_of(const stdfs::path& blobs, const std::string& hex) {
    std::error_code ec;
    for (const char* sep : {"-", ":"}) {
        stdfs::path p = blobs / ("sha256" + std::string(sep) + hex);
        if (stdfs::exists(p, ec)) return p;
    }
    return std::nullopt;
}

// The manifest's files; an empty `problem` when every blob is there with the size it says.
// Root importing another user's models folder (safe_open.h): manifests and blobs are opened
// under the folder's fd with no link on the way and judged as that user; the blobs are read
// from those fds only.
struct Acting {
    const ActingUser* as = nullptr;
    int root_fd = -1;
    std::vector<UniqueFd>* fds = nullptr;  // kept open until the version is committed
};

// The file `rel` under the models folder, opened for `a.as`; empty with `problem` set.
UniqueFd open_for(const Acting& a, const stdfs::path& dir, const stdfs::path& rel,
                  std::string& problem) {
    UniqueFd fd = open_beneath(a.root_fd, rel, O_RDONLY | O_NONBLOCK);
    if (!fd) {
        problem = open_failure((dir / rel).string(), errno);
        return fd;
    }
    struct stat st;
    if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) {
        problem = (dir / rel).string() + " is not a regular file";
        return UniqueFd();
    }
    if (auto why = a.as->refusal(st, (dir / rel).string())) {
        problem = *why;
        return UniqueFd();
    }
    return fd;
}

TrustedTree read_manifest(const stdfs::path& dir, const stdfs::path& blobs, const Tag& t,
                          std::string& problem, const Acting& a) {
    TrustedTree tree;
    nlohmann::json j;
    try {
        std::string text;
        if (a.as) {
            UniqueFd fd = open_for(a, dir, t.manifest.lexically_relative(dir), problem);
            if (!fd) return tree;
            char buf[65536];
            for (ssize_t n; (n = ::read(fd.get(), buf, sizeof buf)) != 0;) {
                if (n < 0) throw std::system_error(errno, std::generic_category(), "read");
                text.append(buf, static_cast<std::size_t>(n));
                if (text.size() > (64u << 20)) throw std::runtime_error("larger than 64 MiB");
            }
        } else {
            std::ifstream in(t.manifest);
            std::stringstream ss;
            ss << in.rdbuf();
            text = ss.str();
        }
        j = nlohmann::json::parse(text);
    } catch (const std::exception& e) {
        problem = "not a readable manifest: " + std::string(e.what());
        return tree;
    }
    std::vector<nlohmann::json> layers;
    if (j.contains("config") && j["config"].is_object()) layers.push_back(j["config"]);
    if (j.contains("layers") && j["layers"].is_array())
        for (const auto& l : j["layers"]) layers.push_back(l);
    std::map<std::string, int> taken;
    for (const auto& l : layers) {
        if (!l.is_object() || !l.contains("digest") || !l["digest"].is_string()) {
            problem = "a layer without a digest";
            return tree;
        }
        const std::string digest = l["digest"].get<std::string>();
        const std::string hex = digest.rfind("sha256:", 0) == 0 ? digest.substr(7) : "";
        if (!is_hex_name(hex, 64)) {
            problem = "layer digest '" + digest + "' is not sha256:<64 hex digits>";
            return tree;
        }
        auto blob = blob_of(blobs, hex);
        if (!blob) {
            problem = "blob sha256-" + hex + " is missing (an interrupted pull, or pruned)";
            return tree;
        }
        std::error_code ec;
        std::uintmax_t size = 0;
        int opened = -1;
        if (a.as) {
            // Only the blob of that name under the models folder, reached without a link.
            UniqueFd fd = open_for(a, dir, stdfs::path("blobs") / blob->filename(), problem);
            if (!fd) return tree;
            struct stat st;
            if (::fstat(fd.get(), &st) != 0) {
                problem = "cannot read " + blob->string() + ": " + std::strerror(errno);
                return tree;
            }
            size = static_cast<std::uintmax_t>(st.st_size);
            opened = fd.get();
            a.fds->push_back(std::move(fd));
        } else {
            size = stdfs::file_size(*blob, ec);
        }
        if (ec) {
            problem = "cannot read " + blob->string() + ": " + ec.message();
            return tree;
        }
        if (l.contains("size") && l["size"].is_number_unsigned() &&
            l["size"].get<std::uint64_t>() != size) {
            problem = "blob sha256-" + hex + " has " + std::to_string(size) +
                      " bytes, the manifest says " +
                      std::to_string(l["size"].get<std::uint64_t>()) + " (a partial download?)";
            return tree;
        }
        std::string file = layer_file(l.contains("mediaType") && l["mediaType"].is_string()
                                          ? l["mediaType"].get<std::string>()
                                          : std::string("layer"));
        // Several layers of one type (licenses, adapters): license, license-2, ...
        if (int n = ++taken[file]; n > 1) {
            auto dot = file.find('.');
            file = dot == std::string::npos
                       ? file + "-" + std::to_string(n)
                       : file.substr(0, dot) + "-" + std::to_string(n) + file.substr(dot);
        }
        TrustedFile f;
        f.path = file;
        f.source = *blob;
        f.sha256 = *Sha256::from_hex(hex);
        f.opened_fd = opened;
        tree.files.push_back(std::move(f));
    }
    if (tree.files.empty()) problem = "the manifest lists no layers";
    return tree;
}

}  // namespace

OtherStoreReport import_ollama(Store& store, const stdfs::path& dir, Progress* progress) {
    std::error_code ec;
    const stdfs::path manifests = dir / "manifests";
    if (!stdfs::is_directory(manifests, ec))
        throw StoreError(ErrorKind::not_found,
                         "no Ollama models folder at " + dir.string() +
                             " (it has no manifests/; give the folder, or set OLLAMA_MODELS)");
    OtherStoreReport rep;
    rep.dir = stdfs::absolute(dir);
    const stdfs::path blobs = rep.dir / "blobs";
    const auto as = ActingUser::for_tree(rep.dir);
    UniqueFd root_fd;
    if (as) {
        root_fd = UniqueFd(::open(rep.dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        struct stat st;
        if (!root_fd || ::fstat(root_fd.get(), &st) != 0)
            throw_errno("opening " + rep.dir.string(), errno);
        if (auto why = as->refusal(st, rep.dir.string()))
            throw StoreError(ErrorKind::bad_input, *why);
    }

    std::vector<Tag> tags;
    for (stdfs::recursive_directory_iterator it(rep.dir / "manifests", ec), end; !ec && it != end;
         it.increment(ec)) {
        std::error_code e;  // `ec` is the walk's: a broken entry must not end it
        // A link among the manifests is not one Ollama wrote; root acting for a user skips it.
        if (as ? !stdfs::is_regular_file(it->symlink_status(e)) : !it->is_regular_file(e)) continue;
        const stdfs::path rel = it->path().lexically_relative(rep.dir / "manifests");
        std::vector<std::string> parts;
        for (const auto& c : rel) parts.push_back(c.string());
        if (parts.back().empty() || parts.back()[0] == '.') continue;
        if (parts.size() != 4) {
            rep.notes.push_back("manifests/" + rel.generic_string() +
                                ": not at REGISTRY/NAMESPACE/MODEL/TAG; left out");
            continue;
        }
        Tag t{parts[0], parts[1], parts[2], parts[3], it->path(), {}, {}};
        t.name = store_name(t);
        t.mtime = stdfs::last_write_time(it->path(), e);
        tags.push_back(std::move(t));
    }
    if (ec)
        throw StoreError(ErrorKind::io, "cannot read " + manifests.string() + ": " + ec.message());

    // Per model: `latest` is current, else the newest manifest; it goes last.
    std::map<std::string, std::string> current;  // name -> tag
    std::map<std::string, stdfs::file_time_type> newest;
    for (const auto& t : tags) {
        auto& c = current[t.name];
        if (c == "latest") continue;
        if (t.tag == "latest" || c.empty() || t.mtime > newest[t.name]) {
            c = t.tag;
            newest[t.name] = t.mtime;
        }
    }
    std::sort(tags.begin(), tags.end(), [&](const Tag& a, const Tag& b) {
        const bool ca = current[a.name] == a.tag, cb = current[b.name] == b.tag;
        return std::tie(a.name, ca, a.tag) < std::tie(b.name, cb, b.tag);
    });

    if (progress) progress->total_items += tags.size();
    for (const auto& t : tags) {
        if (progress) progress->done_items += 1;
        OtherStoreItem item;
        item.source = t.registry + "/" + t.ns + "/" + t.model + ":" + t.tag;
        item.label = t.tag;
        item.model_key = model_key(Category::other, t.name);
        std::string problem;
        std::vector<UniqueFd> fds;
        TrustedTree tree =
            read_manifest(rep.dir, blobs, t, problem, {as ? &*as : nullptr, root_fd.get(), &fds});
        item.files = tree.files.size();
        if (!problem.empty()) {
            item.outcome = OtherStoreItem::Outcome::skipped;
            item.detail =
                "manifest " + t.manifest.string() + ": " + problem + "; this version was skipped";
            rep.items.push_back(std::move(item));
            continue;
        }
        tree.category = Category::other;
        tree.name = t.name;
        tree.label = t.tag;
        tree.source = to_source({SourceKind::ollama, {}, t.manifest.string()});
        tree.note = "Ollama " + item.source;
        tree.make_current = current[t.name] == t.tag;
        // A tag pulled again after it moved: the old content keeps the label, the new one gets
        // the tag and its short content id, so both stay reachable.
        try {
            if (auto m = store.catalog().read().get_model(item.model_key)) {
                ModelVersion probe;
                for (const auto& f : tree.files) probe.tree.push_back({f.path, f.sha256, 0});
                std::sort(probe.tree.begin(), probe.tree.end(),
                          [](const TreeEntry& a, const TreeEntry& b) { return a.path < b.path; });
                const bool have =
                    std::any_of(m->versions.begin(), m->versions.end(),
                                [&](const ModelVersion& o) { return o.same_content(probe); });
                const bool label_taken =
                    std::any_of(m->versions.begin(), m->versions.end(),
                                [&](const ModelVersion& o) { return o.label == t.tag; });
                if (!have && label_taken) {
                    tree.label = t.tag + "-" + probe.content_id().hex().substr(0, 7);
                    item.detail = "tag " + t.tag +
                                  " now names other content than the version "
                                  "labelled " +
                                  t.tag + "; this one is " + tree.label;
                }
            }
        } catch (const std::exception& e) {
            item.outcome = OtherStoreItem::Outcome::failed;
            item.detail = e.what();
            rep.items.push_back(std::move(item));
            continue;
        }
        commit_version(store, tree, item, progress);
        rep.items.push_back(std::move(item));
    }
    return rep;
}

}  // namespace modelfs::adopt
