// The public Fetcher (see fetcher.h) over the Engine of engine.h, and stored_fetch_states.
#include "modelfs/fetch/fetcher.h"

#include <fcntl.h>
#include <sys/file.h>

#include <map>

#include "engine.h"
#include "modelfs/fetch/source.h"
#include "modelfs/store/blob_store.h"
#include "modelfs/store/errors.h"
#include "modelfs/store/unique_fd.h"
#include "partial_state.h"

namespace stdfs = std::filesystem;

namespace modelfs::fetch {

using namespace detail;

// ---------------------------------------------------------------------------------------------
// Public API

struct Fetcher::Impl {
    Impl(Store& s, FetchConfig c) : engine(s, std::move(c)) {}
    Engine engine;
};

Fetcher::Fetcher(Store& store, FetchConfig cfg)
    : impl_(std::make_unique<Impl>(store, std::move(cfg))) {}

Fetcher::~Fetcher() = default;

const FetchConfig& Fetcher::config() const {
    return impl_->engine.cfg;
}

void Fetcher::set_limit_rate(std::uint64_t bytes_per_second) {
    Engine& e = impl_->engine;
    {
        std::lock_guard lk(e.mu);
        e.limit_rate = bytes_per_second;
    }
    curl_multi_wakeup(e.multi.get());
}

std::shared_ptr<Download> Fetcher::fetch(const Sha256& key) {
    Engine& e = impl_->engine;
    {
        std::lock_guard lk(e.mu);
        if (e.stopping) throw StoreError(ErrorKind::io, "the downloader is stopping");
        if (auto it = e.live.find(key); it != e.live.end()) return it->second;
    }
    std::shared_ptr<DownloadImpl> earlier;
    {
        std::lock_guard lk(e.mu);
        if (auto it = e.finished.find(key); it != e.finished.end()) earlier = it->second.lock();
    }
    if (earlier) {
        // A finished download is shared while its blob is still there; a failed one is tried
        // again. (status() is not called under mu: see the lock order in on_range.)
        auto st = earlier->status();
        if (st.state == FetchState::done && st.blob &&
            (*st.blob != key || e.store.blobs().exists(key)))
            return earlier;
    }
    std::optional<BlobRecord> rec = e.store.catalog().read().get_blob(key);
    if (!rec)
        throw StoreError(
            ErrorKind::not_found,
            "no blob " + key.hex() + " in the catalog (add it with `modelfs add URL`)");
    // The model's name is found by the worker (a scan of every model: not on a mount's open).
    if (rec->state == BlobState::present && !rec->placeholder && e.store.blobs().exists(key)) {
        auto d = std::make_shared<DownloadImpl>(nullptr, e.store, key, *rec, "");
        d->finish({true, key, {}});
        std::lock_guard lk(e.mu);
        e.finished[key] = d;
        return d;
    }
    if (rec->sources.empty())
        throw StoreError(ErrorKind::bad_input,
                         "blob " + key.hex() + " (" + model_name_for(e.store, key) +
                             ") is not in the store and has no source to download it from");
    std::lock_guard lk(e.mu);
    // Another thread may have started it meanwhile.
    if (auto it = e.live.find(key); it != e.live.end()) return it->second;
    auto d = std::make_shared<DownloadImpl>(&e, e.store, key, *rec, "");
    e.live[key] = d;
    e.posted.push_back([&e, d] { e.enqueue(d); });
    curl_multi_wakeup(e.multi.get());
    return d;
}

std::vector<FetchStatus> Fetcher::downloads() const {
    Engine& e = impl_->engine;
    std::vector<std::shared_ptr<DownloadImpl>> live;
    std::vector<FetchStatus> out;
    {
        std::lock_guard lk(e.mu);
        out.assign(e.history.begin(), e.history.end());
        for (auto& [k, d] : e.live) live.push_back(d);
    }
    for (auto& d : live) out.push_back(d->status());
    return out;
}

// ---------------------------------------------------------------------------------------------

std::vector<FetchStatus> stored_fetch_states(Store& store) {
    std::map<Sha256, FetchStatus> found;
    std::error_code ec;
    const stdfs::path dir = store.partial_dir();
    for (stdfs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
        const stdfs::path& p = it->path();
        if (p.extension() != ".part") continue;
        auto key = Sha256::from_hex(p.stem().string());
        if (!key) continue;
        FetchStatus s;
        s.key = *key;
        UniqueFd fd(::open(p.c_str(), O_RDONLY | O_CLOEXEC));
        if (!fd) continue;
        if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
            s.other_process = true;
            s.state = FetchState::running;
        } else {
            s.state = FetchState::queued;  // interrupted: resumes on the next fetch
            ::flock(fd.get(), LOCK_UN);
        }
        if (auto st = read_state(state_path(dir, *key)); st && st->key == *key) {
            s.size = st->size;
            s.done_bytes = st->done.total();
            s.source = redact_url(st->source);
        }
        found[*key] = s;
    }
    std::map<Sha256, std::string> names;
    {
        auto txn = store.catalog().read();
        txn.for_each_blob([&](const Sha256& h, const BlobRecord& r) {
            auto it = found.find(h);
            if (it != found.end()) {
                if (!it->second.size) it->second.size = r.size;
                if (it->second.source.empty() && !r.sources.empty())
                    it->second.source = redact_url(r.sources.front().url);
                if (!r.placeholder) it->second.blob = h;
            }
            if (r.state == BlobState::present || r.fetch_error.empty()) return;
            FetchStatus& s = found[h];
            s.key = h;
            if (!r.placeholder) s.blob = h;
            s.size = r.size;
            if (!s.other_process) s.state = FetchState::failed;
            s.error = r.fetch_error;
            if (s.source.empty() && !r.sources.empty())
                s.source = redact_url(r.sources.front().url);
        });
        txn.for_each_model([&](const Model& m) {
            for (const auto& v : m.versions)
                for (const auto& b : v.blobs())
                    if (found.count(b) && !names.count(b)) names[b] = m.key();
        });
    }
    std::vector<FetchStatus> out;
    for (auto& [k, s] : found) {
        if (auto n = names.find(k); n != names.end()) s.name = n->second;
        out.push_back(std::move(s));
    }
    return out;
}

}  // namespace modelfs::fetch
