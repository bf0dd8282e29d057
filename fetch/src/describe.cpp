#include "modelfs/fetch/describe.h"

#include <algorithm>
#include <atomic>
#include <thread>

#include "modelfs/fetch/probe.h"
#include "modelfs/fetch/source.h"
#include "modelfs/store/errors.h"

namespace modelfs::fetch {

namespace {

// The file's sources in order; the first that answers counts.
void ask_one(FileToDescribe& f, const FetchConfig& cfg) {
    std::string errors;
    for (const auto& src : f.file->sources) {
        RemoteInfo info;
        try {
            info = probe(src.url, cfg);
        } catch (const StoreError& e) {
            errors += std::string(errors.empty() ? "" : "; ") + e.what();
            continue;
        }
        const std::string url = redact_url(src.url);
        if (info.sha256 && f.file->sha256 && *info.sha256 != *f.file->sha256) {
            f.error = f.label + ": " + url + " says its SHA-256 is " + info.sha256->hex() +
                      ", not the given " + f.file->sha256->hex() + "; check which one is right";
            return;
        }
        if (info.size && f.size_known && *info.size != f.file->size) {
            f.error = f.label + ": " + url + " has " + std::to_string(*info.size) +
                      " bytes, not the given " + std::to_string(f.file->size);
            return;
        }
        if (!f.size_known) {
            if (!info.size) {
                f.error = f.label + ": " + url +
                          " does not say how big the file is; give its size (--size, or "
                          "\"size\" in a manifest)";
                return;
            }
            f.file->size = *info.size;
            f.size_known = true;
        }
        if (!f.file->sha256) f.file->sha256 = info.sha256;
        return;
    }
    f.error = f.label + ": " + errors +
              " (give the size and SHA-256 to register it without asking the server)";
}

}  // namespace

std::vector<FileToDescribe> files_to_ask(const Txn& txn, const std::vector<RemoteModel*>& models,
                                         const std::vector<std::vector<bool>>& size_known,
                                         AskForHash ask_for_hash) {
    std::vector<FileToDescribe> out;
    for (std::size_t i = 0; i < models.size(); ++i) {
        RemoteModel& m = *models[i];
        for (std::size_t k = 0; k < m.files.size(); ++k) {
            RemoteFile& f = m.files[k];
            const bool given = size_known.at(i).at(k);
            if (f.sha256) {
                if (auto rec = txn.get_blob(*f.sha256)) {
                    if (!given) f.size = rec->size;
                    continue;
                }
            }
            if (given && (ask_for_hash == AskForHash::no || f.sha256)) continue;
            out.push_back(
                {&f, given, model_key(m.category, m.name) + (m.tree ? ": " + f.path : ""), {}});
        }
    }
    return out;
}

void ask_servers(std::vector<FileToDescribe>& files, const FetchConfig& cfg, unsigned jobs) {
    // Several at once: a manifest of 80 LoRAs is 80 round trips.
    std::atomic<std::size_t> next{0};
    auto worker = [&] {
        for (std::size_t k; (k = next.fetch_add(1)) < files.size();) ask_one(files[k], cfg);
    };
    std::vector<std::jthread> pool;
    for (unsigned i = 1; i < std::min<std::size_t>(std::max(1u, jobs), files.size()); ++i)
        pool.emplace_back(worker);
    worker();
}

}  // namespace modelfs::fetch
