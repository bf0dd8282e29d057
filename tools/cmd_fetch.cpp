// add, fetch, status, evict: models whose bytes live elsewhere until they are used.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <deque>
#include <iostream>
#include <map>

#include "cli.h"
#include "modelfs/fetch/describe.h"
#include "modelfs/fetch/fetcher.h"
#include "modelfs/fetch/manifest.h"
#include "modelfs/fetch/probe.h"
#include "modelfs/fetch/selection.h"
#include "modelfs/fetch/source.h"
#include "modelfs/fs/mount.h"
#include "modelfs/store/model_name.h"
#include "modelfs/store/tensor_map.h"
#include "modelfs/store/text.h"
#include "mount_helper.h"

namespace modelfs::cli {
namespace {

using nlohmann::json;

std::string duration_text(double seconds) {
    if (!(seconds >= 0) || seconds > 99 * 3600) return "--:--";
    auto s = static_cast<long>(seconds + 0.5);
    char buf[32];
    if (s >= 3600)
        std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
    else
        std::snprintf(buf, sizeof buf, "%ld:%02ld", s / 60, s % 60);
    return buf;
}

std::uint64_t size_arg(const std::string& flag, const std::string& text, const char* what) {
    if (auto v = parse_size(text)) return *v;
    throw UsageError(flag + " '" + text + "': expected " + what +
                     " with an optional K, M, G or T suffix (powers of 1024), e.g. 50M, 1.5G or "
                     "1000000");
}

// The first model name (without version) that uses each blob, for display.
std::map<Sha256, std::string> names_of_blobs(Store& s) {
    std::map<Sha256, std::string> out;
    s.catalog().read().for_each_model([&](const Model& m) {
        for (std::size_t i = 0; i < m.versions.size(); ++i) {
            const ModelVersion& v = m.versions[(m.current + i) % m.versions.size()];
            if (v.blob) out.emplace(*v.blob, m.key());
            for (const auto& t : v.tree) out.emplace(t.blob, m.key() + "/" + t.path);
        }
    });
    return out;
}

// ---- add ------------------------------------------------------------------------------------

struct AddArgs {
    std::vector<std::string> urls, mirrors;
    std::string as, sha256, size, note, manifest;
    bool stream = false, keep = false;
    unsigned probe_jobs = 8;
};

struct AddOutcome {
    RemoteModel model;
    std::optional<RemoteAddResult> result;
    std::string error;
    bool keep = false;
    std::uint64_t bytes_present = 0, bytes_remote = 0;  // after the add
    // A remote safetensors file without a tensor map: what its header says could be shared.
    std::optional<HeaderMatch> header;
    std::string header_error;
};

// Reads the header of the one remote safetensors file of `o` (two ranged GETs: its length, then
// the JSON) and compares its tensors with the stored ones. Skipped when the store has the file or
// a tensor map for it (the download then reuses stored pieces by themselves).
void peek_header(Store& s, const fetch::FetchConfig& cfg, AddOutcome& o) {
    if (!o.result || o.model.tree || o.bytes_remote == 0 || o.result->blobs.size() != 1 ||
        !has_safetensors_extension(o.model.ext))
        return;
    {
        auto txn = s.catalog().read();
        if (tensor_map(txn, o.result->blobs[0])) return;
        // Nothing stored to compare with: not worth a request.
        bool any = false;
        txn.for_each_blob([&](const Sha256&, const BlobRecord& r) {
            any = any || (r.state == BlobState::present && r.safetensors_header_len > 0);
        });
        if (!any) return;
    }
    const std::string& url = o.model.files[0].sources.front().url;
    try {
        const std::string len = fetch::fetch_prefix(url, 8, cfg);
        if (len.size() != 8) throw StoreError(ErrorKind::bad_input, "shorter than 8 bytes");
        std::uint64_t n = 0;
        for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(len[i]);
        if (n == 0 || n > 16 * 1024 * 1024 || n + 8 > o.model.files[0].size)
            throw StoreError(ErrorKind::bad_input,
                             "its header length " + std::to_string(n) + " is not one to read");
        const std::string head = fetch::fetch_prefix(url, 8 + n, cfg);
        if (head.size() != 8 + n) throw StoreError(ErrorKind::io, "the header came short");
        o.header = match_header(s, std::string_view(head).substr(8));
    } catch (const std::exception& e) {
        o.header_error = e.what();
    }
}

json add_outcome_json(const AddOutcome& o) {
    const std::string key = model_key(o.model.category, o.model.name);
    json j = {{"model", key}};
    if (!o.result) {
        j["error"] = o.error;
        return j;
    }
    const RemoteAddResult& r = *o.result;
    std::uint64_t size = 0;
    std::size_t placeholders = 0;
    for (const auto& f : o.model.files) {
        size += f.size;
        if (!f.sha256) ++placeholders;
    }
    j.update({{"version", r.label},
              {"new_version", r.new_version},
              {"files", o.model.files.size()},
              {"size", size},
              {"present", r.present},
              {"remote", r.remote},
              {"placeholders", placeholders},
              {"keep", o.keep}});
    if (!o.model.tree) {
        j["ext"] = o.model.ext;
        j["sha256"] = o.model.files[0].sha256 ? json(o.model.files[0].sha256->hex()) : json();
    }
    if (o.header)
        j["header"] = {{"tensors", o.header->tensors},
                       {"tensor_bytes", o.header->tensor_bytes},
                       {"like_stored", o.header->matching},
                       {"like_stored_bytes", o.header->matching_bytes},
                       {"models", o.header->models}};
    if (!o.header_error.empty()) j["header_error"] = o.header_error;
    return j;
}

int print_add(const Globals& g, const std::vector<AddOutcome>& outs) {
    std::size_t failed = 0, placeholders = 0;
    std::uint64_t to_fetch = 0, present = 0;
    for (const auto& o : outs) {
        if (!o.result) {
            ++failed;
            continue;
        }
        for (const auto& f : o.model.files)
            if (!f.sha256) ++placeholders;
        to_fetch += o.bytes_remote;
        present += o.bytes_present;
    }
    if (g.json) {
        json models = json::array();
        for (const auto& o : outs) models.push_back(add_outcome_json(o));
        print_json({{"models", models},
                    {"bytes_to_fetch", to_fetch},
                    {"bytes_present", present},
                    {"ok", failed == 0}});
        return failed ? kFailed : kOk;
    }
    for (const auto& o : outs) {
        if (!o.result) {
            std::cerr << "modelfs: error: " << o.error << "\n";
            continue;
        }
        if (g.quiet) continue;
        const RemoteAddResult& r = *o.result;
        std::uint64_t size = 0;
        for (const auto& f : o.model.files) size += f.size;
        std::string state;
        if (r.remote == 0)
            state = "already in store";
        else if (r.present == 0)
            state = "remote";
        else
            state = std::to_string(r.present) + " of " + std::to_string(r.present + r.remote) +
                    " files already in store";
        std::cout << (r.new_version ? "added" : "unchanged") << "  " << r.model_key << "@"
                  << r.label << "  " << human_bytes(size) << "  ";
        if (o.model.tree)
            std::cout << o.model.files.size() << " files  ";
        else if (o.model.files[0].sha256)
            std::cout << o.model.files[0].sha256->autov2() << "  ";
        std::cout << state << (o.keep ? "  (kept)" : "") << "\n";
        if (o.header && o.header->matching == 0)
            std::cout << "  its header lists " << o.header->tensors << " tensors ("
                      << human_bytes(o.header->tensor_bytes)
                      << "); none has the name, dtype and shape of a stored tensor: the whole "
                         "file will be downloaded\n";
        else if (o.header)
            std::cout << "  its header lists " << o.header->tensors << " tensors ("
                      << human_bytes(o.header->tensor_bytes) << "); " << o.header->matching << " ("
                      << human_bytes(o.header->matching_bytes)
                      << ") have the name, dtype and shape of tensors of " <<
                [&] {
                    std::string m;
                    for (const auto& k : o.header->models)
                        m += (m.empty() ? "" : ", ") + terminal_safe(k);
                    return m;
                }()
                      << ". The server gives no tensor hashes, so whether their bytes are the "
                         "same shows only once they are downloaded: the whole file will be, "
                         "then stored sharing the tensors that are identical. (A team remote "
                         "publishes tensor maps: a pull from one downloads only what differs.)\n";
        else if (!o.header_error.empty())
            std::cout << "  its header could not be read (" << o.header_error
                      << "); it will be downloaded whole\n";
    }
    if (g.quiet) return failed ? kFailed : kOk;
    if (placeholders)
        std::cout << "note: " << placeholders
                  << " file(s) have no known SHA-256 (neither given nor stated by the server). "
                     "Their size is checked now; their content is hashed at the first download "
                     "and that hash is recorded from then on. Until then modelfs cannot tell "
                     "whether the server's file is the one you meant.\n";
    const std::size_t ok = outs.size() - failed;
    std::cout << ok << " model(s) registered: " << human_bytes(to_fetch) << " to fetch on first use"
              << " (or with `modelfs fetch`), " << human_bytes(present) << " already in store"
              << (failed ? ", " + std::to_string(failed) + " failed" : "") << "\n";
    return failed ? kFailed : kOk;
}

// Registers the models: sizes and hashes first from the store (content it knows needs no
// question), then from the servers for what is still unknown; nothing is written if any file
// cannot be described.
int add_models(const Globals& g, std::vector<AddOutcome>& outs,
               const std::vector<std::vector<bool>>& size_known, fetch::AskForHash ask_for_hash,
               unsigned probe_jobs) {
    Store s = g.open_store();
    const fetch::FetchConfig cfg = fetch_config(g.config());
    std::vector<RemoteModel*> models;
    for (auto& o : outs) models.push_back(&o.model);
    std::vector<fetch::FileToDescribe> ask =
        fetch::files_to_ask(s.catalog().read(), models, size_known, ask_for_hash);
    if (!ask.empty()) {
        std::optional<ProgressBar> bar;
        if (ask.size() > 1) {
            bar.emplace(g, "asking servers");
            bar->get()->total_items += ask.size();
        }
        fetch::ask_servers(ask, cfg, probe_jobs);
    }
    std::vector<std::string> errors;
    for (const auto& f : ask)
        if (!f.error.empty()) errors.push_back(f.error);
    if (!errors.empty()) {
        if (g.json) {
            print_json({{"errors", errors}, {"ok", false}});
        } else {
            for (const auto& e : errors) std::cerr << "modelfs: error: " << e << "\n";
            std::cerr << "modelfs: nothing was registered\n";
        }
        return kFailed;
    }
    for (auto& o : outs) {
        try {
            o.result = s.add_remote(o.model);
            if (o.keep)
                for (const auto& h : o.result->blobs) s.set_keep(h, true);
            auto txn = s.catalog().read();
            for (std::size_t k = 0; k < o.result->blobs.size(); ++k) {
                auto rec = txn.get_blob(o.result->blobs[k]);
                (rec && rec->state == BlobState::present ? o.bytes_present : o.bytes_remote) +=
                    o.model.files[k].size;
            }
        } catch (const StoreError& e) {
            o.error = e.what();
        }
    }
    // One URL (not a manifest of many): its header is worth two small requests.
    if (outs.size() == 1) peek_header(s, cfg, outs[0]);
    return print_add(g, outs);
}

int run_add(const Globals& g, const AddArgs& a) {
    if (!a.manifest.empty()) {
        if (!a.urls.empty() || !a.as.empty() || !a.sha256.empty() || !a.size.empty() ||
            !a.mirrors.empty() || !a.note.empty() || a.stream)
            throw UsageError(
                "--manifest takes no URL, --as, --sha256, --size, --mirror, --note or "
                "--stream: the manifest says those");
        std::vector<fetch::ManifestEntry> entries = fetch::load_manifest(a.manifest);
        std::vector<AddOutcome> outs;
        std::vector<std::vector<bool>> known;
        for (auto& e : entries) {
            AddOutcome o;
            o.model = std::move(e.model);
            o.keep = e.keep || a.keep;
            outs.push_back(std::move(o));
            known.push_back(std::move(e.size_given));
        }
        // Entries that state their size are not asked: 80 LoRAs register without 80 requests.
        return add_models(g, outs, known, fetch::AskForHash::no, a.probe_jobs);
    }
    if (a.urls.empty()) throw UsageError("add: give a URL (or --manifest FILE)");
    if (a.as.empty())
        throw UsageError(
            "add: --as CATEGORY/NAME[@VERSION] is required with a URL, e.g. "
            "--as lora/detail-tweaker");
    fetch::ModelRef ref;
    try {
        ref = fetch::parse_model_ref(a.as);
    } catch (const StoreError& e) {
        throw UsageError(std::string("--as ") + e.what());
    }
    RemoteModel m;
    m.category = ref.category;
    m.name = ref.name;
    m.label = ref.label;
    m.note = a.note;
    RemoteFile f;
    std::vector<std::string> urls = a.urls;
    urls.insert(urls.end(), a.mirrors.begin(), a.mirrors.end());
    for (const auto& u : urls) {
        try {
            fetch::check_source_url(u);
        } catch (const StoreError& e) {
            throw UsageError(e.what());
        }
        if (std::none_of(f.sources.begin(), f.sources.end(),
                         [&](const BlobSource& s) { return s.url == u; }))
            f.sources.push_back({u, a.stream});
    }
    if (!a.sha256.empty()) {
        const std::string hex = lower(a.sha256);
        f.sha256 = hex.size() == 64 ? Sha256::from_hex(hex) : std::nullopt;
        if (!f.sha256) throw UsageError("--sha256 '" + a.sha256 + "': expected 64 hex digits");
    }
    bool size_known = false;
    if (!a.size.empty()) {
        f.size = size_arg("--size", a.size, "a number of bytes");
        size_known = true;
    }
    m.ext = !ref.ext.empty() ? ref.ext : fetch::extension_of_url(urls.front());
    if (m.ext.empty())
        throw UsageError("cannot tell the file's extension from " +
                         fetch::redact_url(urls.front()) + "; put it in the name: --as " +
                         std::string(to_string(m.category)) + "/" + m.name + ".safetensors");
    // The extension is part of a single file's name (store/include/modelfs/store/model_name.h).
    auto named = single_file_name(m.name, m.ext);
    m.name = std::move(named.name);
    m.ext = std::move(named.ext);
    m.files.push_back(std::move(f));
    std::vector<AddOutcome> outs(1);
    outs[0].model = std::move(m);
    outs[0].keep = a.keep;
    // One URL: asking the server for a hash it may know is worth one request.
    return add_models(g, outs, {{size_known}}, fetch::AskForHash::yes, 1);
}

// ---- fetch ----------------------------------------------------------------------------------

struct FetchArgs {
    std::vector<std::string> patterns;
    unsigned jobs = 0;
    std::string limit_rate;
    bool keep = false;
};

std::atomic<int> g_stop_signal{0};
extern "C" void on_stop_signal(int sig) {
    g_stop_signal = sig;
}

// SIGINT/SIGTERM set a flag for the progress loop, which then stops the downloads cleanly (their
// partial files stay, for a resume). A second signal kills as usual.
class StopSignals {
  public:
    StopSignals() {
        struct sigaction sa {};
        sa.sa_handler = on_stop_signal;
        sa.sa_flags = SA_RESETHAND;
        sigemptyset(&sa.sa_mask);
        ::sigaction(SIGINT, &sa, &old_int_);
        ::sigaction(SIGTERM, &sa, &old_term_);
    }
    ~StopSignals() {
        ::sigaction(SIGINT, &old_int_, nullptr);
        ::sigaction(SIGTERM, &old_term_, nullptr);
    }
    StopSignals(const StopSignals&) = delete;
    StopSignals& operator=(const StopSignals&) = delete;

  private:
    struct sigaction old_int_ {
    }, old_term_{};
};

using Wanted = fetch::WantedBlob;

// The live display: one line per running download and one overall line on a terminal; a plain
// line every few seconds otherwise.
class FetchDisplay {
  public:
    FetchDisplay(const Globals& g, std::size_t files, std::uint64_t bytes)
        : tty_(::isatty(STDERR_FILENO) != 0),
          quiet_(g.quiet),
          files_(files),
          total_(bytes),
          start_(std::chrono::steady_clock::now()),
          last_plain_(start_) {}

    // A download finished or failed: a permanent line above the live ones.
    void finished(const Wanted& w, const fetch::FetchStatus& st) {
        if (quiet_) return;
        clear();
        if (st.state == fetch::FetchState::done)
            std::fprintf(stderr, "fetched  %s  %s\n", w.name.c_str(), human_bytes(w.size).c_str());
        else if (tty_)  // elsewhere the summary, right after, lists failures with their reasons
            std::fprintf(stderr, "failed   %s: %s\n", w.name.c_str(), st.error.c_str());
    }

    void update(const std::vector<std::pair<const Wanted*, fetch::FetchStatus>>& running,
                std::uint64_t done_bytes, std::size_t done_files) {
        const auto now = std::chrono::steady_clock::now();
        samples_.emplace_back(now, done_bytes);
        while (samples_.size() > 2 && now - samples_.front().first > std::chrono::seconds(3))
            samples_.pop_front();
        if (quiet_) return;
        const double rate = rate_now();
        const double eta =
            rate > 0 ? static_cast<double>(total_ - std::min(total_, done_bytes)) / rate : -1;
        char overall[256];
        std::snprintf(overall, sizeof overall, "%zu/%zu files  %s / %s  %s/s  ETA %s", done_files,
                      files_, human_bytes(done_bytes).c_str(), human_bytes(total_).c_str(),
                      human_bytes(static_cast<std::uint64_t>(rate)).c_str(),
                      duration_text(eta).c_str());
        if (!tty_) {
            if (now - last_plain_ < std::chrono::seconds(5)) return;
            last_plain_ = now;
            std::fprintf(stderr, "fetch: %s\n", overall);
            return;
        }
        clear();
        constexpr std::size_t kMaxLines = 8;
        std::size_t shown = 0;
        for (const auto& [w, st] : running) {
            if (shown == kMaxLines) break;
            const double frac = st.size ? static_cast<double>(st.done_bytes) / st.size : 1.0;
            std::string bar(static_cast<std::size_t>(std::min(1.0, frac) * 20), '#');
            bar.resize(20, '.');
            const double left =
                st.bytes_per_second
                    ? static_cast<double>(st.size - std::min(st.size, st.done_bytes)) /
                          st.bytes_per_second
                    : -1;
            std::string name =
                w->name.size() > 40 ? "..." + w->name.substr(w->name.size() - 37) : w->name;
            std::fprintf(
                stderr, "  %-40s [%s] %9s / %-9s %9s/s  %s%s\n", name.c_str(), bar.c_str(),
                human_bytes(st.done_bytes).c_str(), human_bytes(st.size).c_str(),
                human_bytes(st.bytes_per_second).c_str(),
                st.state == fetch::FetchState::queued ? "queued" : duration_text(left).c_str(),
                st.other_process ? "  (another process)" : "");
            ++shown;
        }
        if (running.size() > shown)
            std::fprintf(stderr, "  ... and %zu more\n", running.size() - shown), ++shown;
        std::fprintf(stderr, "%s\n", overall);
        lines_ = shown + 1;
        std::fflush(stderr);
    }

    // Removes the live lines (before the summary).
    void clear() {
        if (!tty_ || lines_ == 0) return;
        std::fprintf(stderr, "\033[%zuA\033[J", lines_);
        lines_ = 0;
    }

    double seconds() const {
        return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    }

  private:
    double rate_now() const {
        if (samples_.size() < 2) return 0;
        const auto& [t0, b0] = samples_.front();
        const auto& [t1, b1] = samples_.back();
        const double dt = std::chrono::duration<double>(t1 - t0).count();
        return dt > 0.2 && b1 >= b0 ? static_cast<double>(b1 - b0) / dt : 0;
    }

    bool tty_, quiet_;
    std::size_t files_;
    std::uint64_t total_;
    std::chrono::steady_clock::time_point start_, last_plain_;
    std::deque<std::pair<std::chrono::steady_clock::time_point, std::uint64_t>> samples_;
    std::size_t lines_ = 0;
};

// What the downloads came to.
struct Downloads {
    std::vector<const Wanted*> fetched;
    std::vector<std::pair<const Wanted*, std::string>> failed;
    std::uint64_t fetched_bytes = 0;
    double seconds = 0;
    bool interrupted = false;
    // Of fetched_bytes, copied from tensors the store held (tensor maps) instead of downloaded.
    std::uint64_t reused_bytes = 0;
};

// Downloads `wanted`, several at once, showing their progress until each is done or failed, or
// until SIGINT/SIGTERM.
Downloads download_all(const Globals& g, Store& s, const fetch::FetchConfig& cfg,
                       const std::vector<Wanted>& wanted) {
    std::uint64_t total = 0;
    for (const auto& w : wanted) total += w.size;
    struct Item {
        const Wanted* w;
        std::shared_ptr<fetch::Download> dl;
        fetch::FetchStatus last;
        bool reported = false;
    };
    std::vector<Item> items;
    Downloads out;
    {
        FetchDisplay display(g, wanted.size(), total);
        StopSignals signals;
        g_stop_signal = 0;
        fetch::Fetcher fetcher(s, cfg);
        for (const auto& w : wanted) {
            try {
                items.push_back({&w, fetcher.fetch(w.key), {}, false});
            } catch (const StoreError& e) {
                out.failed.emplace_back(&w, e.what());
            }
        }
        for (;;) {
            std::vector<std::pair<const Wanted*, fetch::FetchStatus>> running;
            std::uint64_t done_bytes = 0;
            std::size_t done_files = 0;
            for (auto& it : items) {
                it.last = it.dl->status();
                const bool over = it.last.state == fetch::FetchState::done ||
                                  it.last.state == fetch::FetchState::failed;
                done_bytes += over && it.last.state == fetch::FetchState::done
                                  ? it.w->size
                                  : std::min(it.last.done_bytes, it.w->size);
                if (over) {
                    ++done_files;
                    if (!it.reported) {
                        it.reported = true;
                        display.finished(*it.w, it.last);
                    }
                } else {
                    running.emplace_back(it.w, it.last);
                }
            }
            if (running.empty()) break;
            if (g_stop_signal) {
                out.interrupted = true;
                break;
            }
            display.update(running, done_bytes, done_files);
            std::this_thread::sleep_for(std::chrono::milliseconds(200));
        }
        display.clear();
        out.seconds = display.seconds();
        // Leaving this scope destroys the Fetcher: transfers still running are interrupted and
        // keep their partial state, so the next `modelfs fetch` resumes them.
    }
    for (const auto& it : items) {
        if (it.last.state == fetch::FetchState::done) {
            out.fetched.push_back(it.w);
            out.fetched_bytes += it.w->size;
            out.reused_bytes += it.last.reused_bytes;
        } else if (it.last.state == fetch::FetchState::failed) {
            out.failed.emplace_back(it.w, it.last.error.empty() ? "failed" : it.last.error);
        }
    }
    return out;
}

int print_fetch(const Globals& g, const fetch::BlobSelection& sel, const Downloads& d) {
    const auto& [wanted, matched, present, skipped] = sel;
    const auto& [fetched, failed, fetched_bytes, seconds, interrupted, reused_bytes] = d;
    const std::size_t left = wanted.size() - fetched.size() - failed.size();
    if (g.json) {
        json jf = json::array(), jx = json::array();
        for (const auto* w : fetched)
            jf.push_back({{"name", w->name}, {"key", w->key.hex()}, {"size", w->size}});
        for (const auto& [w, e] : failed)
            jx.push_back({{"name", w->name}, {"key", w->key.hex()}, {"error", e}});
        print_json({{"fetched", jf},
                    {"failed", jx},
                    {"already_present", present},
                    {"skipped", skipped},
                    {"left", left},
                    {"interrupted", interrupted},
                    {"bytes", fetched_bytes},
                    {"reused_bytes", reused_bytes},
                    {"seconds", seconds},
                    {"ok", failed.empty() && skipped.empty() && !interrupted}});
    } else {
        for (const auto& sk : skipped) std::cerr << "modelfs: skipped " << sk << "\n";
        if (!g.quiet || !failed.empty()) {
            for (const auto& [w, e] : failed)
                std::cout << "failed   " << w->name << ": " << e << "\n";
            if (wanted.empty() && !interrupted)
                std::cout << "nothing to fetch: " << present << " file(s) already present\n";
            else
                std::cout << "fetched " << fetched.size() << " file(s), "
                          << human_bytes(fetched_bytes) << " in " << duration_text(seconds)
                          << (seconds > 0.5 ? " (" +
                                                  human_bytes(static_cast<std::uint64_t>(
                                                      fetched_bytes / seconds)) +
                                                  "/s)"
                                            : std::string())
                          << (reused_bytes ? "; " + human_bytes(reused_bytes) +
                                                 " of it were tensors already stored, not "
                                                 "downloaded"
                                           : std::string())
                          << "; " << present << " already present"
                          << (failed.empty() ? ""
                                             : "; " + std::to_string(failed.size()) + " failed")
                          << "\n";
        }
        if (interrupted)
            std::cerr << "modelfs: interrupted; " << left
                      << " download(s) stopped with their partial data kept: run `modelfs fetch` "
                         "again to resume\n";
    }
    if (interrupted) return kInterrupted;
    return failed.empty() && skipped.empty() ? kOk : kFailed;
}

int run_fetch(const Globals& g, const FetchArgs& a) {
    fetch::FetchConfig cfg = fetch_config(g.config());
    if (a.jobs) cfg.max_blobs = a.jobs;
    if (!a.limit_rate.empty())
        cfg.limit_rate = size_arg("--limit-rate", a.limit_rate, "bytes per second");
    Store s = g.open_store();
    const fetch::BlobSelection sel = fetch::select_blobs(s.catalog().read(), a.patterns);
    if (a.keep)
        for (const auto& h : sel.matched) s.set_keep(h, true);
    const Downloads d = download_all(g, s, cfg, sel.wanted);
    return print_fetch(g, sel, d);
}

// ---- status ---------------------------------------------------------------------------------

int run_status(const Globals& g) {
    Store s = g.open_store();
    std::vector<fetch::FetchStatus> states = fetch::stored_fetch_states(s);
    std::map<Sha256, std::string> names = names_of_blobs(s);
    struct Counts {
        std::size_t n = 0;
        std::uint64_t bytes = 0;
    } present, remote, partial, quarantined;
    std::map<Sha256, std::int64_t> failed_at;
    struct Recent {
        Sha256 blob;
        std::uint64_t size = 0;
        std::int64_t stored = 0;
    };
    constexpr std::size_t kRecent = 10;
    std::vector<Recent> recent;
    s.catalog().read().for_each_blob([&](const Sha256& h, const BlobRecord& r) {
        Counts* c = r.state == BlobState::present   ? &present
                    : r.state == BlobState::remote  ? &remote
                    : r.state == BlobState::partial ? &partial
                                                    : &quarantined;
        ++c->n;
        c->bytes += r.size;
        if (!r.fetch_error.empty()) failed_at[h] = r.fetch_failed_at;
        // Done: the catalog keeps no download history, but a present blob with a source was
        // either downloaded or can be again; the latest stored are what recent fetches brought.
        if (r.state == BlobState::present && !r.sources.empty())
            recent.push_back({h, r.size, r.ingested});
    });
    std::sort(recent.begin(), recent.end(),
              [](const Recent& a, const Recent& b) { return a.stored > b.stored; });
    if (recent.size() > kRecent) recent.resize(kRecent);
    auto name_of = [&](const fetch::FetchStatus& st) {
        if (!st.name.empty()) return st.name;
        auto it = names.find(st.key);
        return it != names.end() ? it->second : st.key.hex().substr(0, 12) + " (no model)";
    };
    // Files saved through a mount at a model's path that did not become models, and why.
    const std::vector<fs::UnstoredFile> unstored = fs::unstored_files(s.root());
    // Where the store is mounted, and whether reads pass through (fs/src/read_backend.h).
    const std::vector<StoreMount> mounts = mounts_of_store(s.root());
    std::vector<const fetch::FetchStatus*> in_flight, interrupted, failed;
    for (const auto& st : states) {
        if (st.state == fetch::FetchState::failed)
            failed.push_back(&st);
        else if (st.other_process || st.state == fetch::FetchState::running)
            in_flight.push_back(&st);
        else if (st.state != fetch::FetchState::done)
            interrupted.push_back(&st);
    }

    if (g.json) {
        auto one = [&](const fetch::FetchStatus& st) {
            json j = {{"name", name_of(st)},
                      {"key", st.key.hex()},
                      {"size", st.size},
                      {"done_bytes", st.done_bytes},
                      {"state", fetch::to_string(st.state)},
                      {"other_process", st.other_process}};
            if (st.blob) j["sha256"] = st.blob->hex();
            if (st.bytes_per_second) j["bytes_per_second"] = st.bytes_per_second;
            if (!st.source.empty()) j["source"] = st.source;
            if (!st.error.empty()) j["error"] = st.error;
            if (auto it = failed_at.find(st.key); it != failed_at.end())
                j["failed_at"] = it->second;
            return j;
        };
        auto list = [&](const std::vector<const fetch::FetchStatus*>& v) {
            json a = json::array();
            for (const auto* st : v) a.push_back(one(*st));
            return a;
        };
        auto counts = [](const Counts& c) { return json{{"blobs", c.n}, {"bytes", c.bytes}}; };
        json done = json::array();
        for (const auto& r : recent) {
            auto it = names.find(r.blob);
            done.push_back({{"name", it != names.end() ? it->second : r.blob.hex()},
                            {"sha256", r.blob.hex()},
                            {"size", r.size},
                            {"stored_at", r.stored}});
        }
        json plain = json::array();
        for (const auto& u : unstored)
            plain.push_back({{"path", u.path}, {"reason", u.reason}, {"writing", u.writing}});
        json mounted = json::array();
        for (const auto& m : mounts)
            mounted.push_back(
                {{"mountpoint", m.mountpoint.string()}, {"read_backend", m.read_backend}});
        print_json({{"mounts", mounted},
                    {"in_flight", list(in_flight)},
                    {"not_stored", plain},
                    {"interrupted", list(interrupted)},
                    {"failed", list(failed)},
                    {"done", done},
                    {"present", counts(present)},
                    {"remote", counts(remote)},
                    {"partial", counts(partial)},
                    {"quarantined", counts(quarantined)}});
        return kOk;
    }
    auto progress = [](const fetch::FetchStatus& st) {
        std::string p = human_bytes(st.done_bytes) + " / " + human_bytes(st.size);
        if (st.size) p += " (" + std::to_string(st.done_bytes * 100 / st.size) + "%)";
        return p;
    };
    for (const auto& m : mounts)
        std::printf("mounted at %s (reads: %s%s)\n", terminal_safe(m.mountpoint.string()).c_str(),
                    m.read_backend.c_str(),
                    m.read_backend == "splice" ? ", served by the daemon; the mount's log says why"
                    : m.read_backend == "passthrough" ? ", at native speed"
                                                      : "");
    if (!in_flight.empty()) {
        std::printf("downloading (%zu):\n", in_flight.size());
        for (const auto* st : in_flight)
            std::printf(
                "  %-40s %s%s%s\n", terminal_safe(name_of(*st)).c_str(), progress(*st).c_str(),
                st->bytes_per_second ? ("  " + human_bytes(st->bytes_per_second) + "/s").c_str()
                                     : "",
                st->other_process ? "  (another process)" : "");
    }
    if (!interrupted.empty()) {
        std::printf("interrupted (%zu), resumed by `modelfs fetch` or the next open:\n",
                    interrupted.size());
        for (const auto* st : interrupted)
            std::printf("  %-40s %s\n", terminal_safe(name_of(*st)).c_str(), progress(*st).c_str());
    }
    if (!failed.empty()) {
        std::printf("failed (%zu):\n", failed.size());
        for (const auto* st : failed) {
            auto it = failed_at.find(st->key);
            std::printf("  %-40s %s  %s\n", terminal_safe(name_of(*st)).c_str(),
                        it != failed_at.end() && it->second ? format_time(it->second).c_str() : "",
                        terminal_safe(st->error).c_str());
        }
    }
    if (in_flight.empty() && interrupted.empty() && failed.empty() && !g.quiet)
        std::printf("no downloads in flight, interrupted or failed\n");
    if (!unstored.empty()) {
        std::printf("written through a mount, not stored as models (%zu):\n", unstored.size());
        for (const auto& u : unstored)
            std::printf("  %s\n      %s\n", terminal_safe(u.path).c_str(),
                        terminal_safe(u.reason).c_str());
    }
    if (!recent.empty() && !g.quiet) {
        std::printf("done (latest stored that have a source):\n");
        for (const auto& r : recent) {
            auto it = names.find(r.blob);
            std::printf(
                "  %-40s %10s  %s\n",
                terminal_safe(it != names.end() ? it->second : r.blob.hex().substr(0, 12)).c_str(),
                human_bytes(r.size).c_str(), format_time(r.stored).c_str());
        }
    }
    std::printf("present        %zu blob(s), %s\n", present.n, human_bytes(present.bytes).c_str());
    std::printf(
        "remote         %zu blob(s), %s%s\n", remote.n + partial.n,
        human_bytes(remote.bytes + partial.bytes).c_str(),
        partial.n ? (" (" + std::to_string(partial.n) + " partly downloaded)").c_str() : "");
    if (quarantined.n)
        std::printf("quarantined    %zu blob(s), %s\n", quarantined.n,
                    human_bytes(quarantined.bytes).c_str());
    return kOk;
}

// ---- evict ----------------------------------------------------------------------------------

int run_evict(const Globals& g, const std::string& max_size, bool dry) {
    std::uint64_t max = 0;
    if (!max_size.empty()) {
        max = size_arg("--max-size", max_size, "a number of bytes");
    } else {
        max = fetch_config(g.config()).cache_max_bytes;
        if (max == 0)
            throw UsageError(
                "evict: no cache quota; pass --max-size SIZE (e.g. 200G) or set "
                "cache_max_size in the [fetch] table of the config file");
    }
    Store s = g.open_store();
    EvictReport r = s.evict(max, dry);
    std::map<Sha256, std::string> names;
    if (!r.evicted.empty()) names = names_of_blobs(s);
    auto name_of = [&](const Sha256& h) {
        auto it = names.find(h);
        return it != names.end() ? it->second : h.hex();
    };
    if (g.json) {
        json ev = json::array();
        for (const auto& e : r.evicted)
            ev.push_back({{"name", name_of(e.blob)},
                          {"sha256", e.blob.hex()},
                          {"size", e.size},
                          {"accessed", e.accessed}});
        print_json({{"dry_run", dry},
                    {"max_bytes", max},
                    {"evicted", ev},
                    {"bytes", r.bytes},
                    {"store_bytes", r.store_bytes},
                    {"skipped_open", r.skipped_open}});
        return kOk;
    }
    if (g.quiet) return kOk;
    for (const auto& e : r.evicted)
        std::printf("%s %-40s %10s  last used %s\n", dry ? "would evict" : "evicted",
                    name_of(e.blob).c_str(), human_bytes(e.size).c_str(),
                    e.accessed ? format_time(e.accessed).c_str() : "never");
    std::printf(
        "%s %s (%zu blob(s)); present blobs %s %s, quota %s%s\n", dry ? "would free" : "freed",
        human_bytes(r.bytes).c_str(), r.evicted.size(), dry ? "would be" : "now",
        human_bytes(r.store_bytes).c_str(), human_bytes(max).c_str(),
        r.skipped_open ? ("; " + std::to_string(r.skipped_open) + " open blob(s) kept").c_str()
                       : "");
    if (r.store_bytes > max)
        std::printf(
            "the rest cannot be evicted: pinned (--keep), open, or with no source to "
            "download it again\n");
    return kOk;
}

}  // namespace

void add_add(CLI::App& app, Globals& g, Runner& run) {
    auto a = std::make_shared<AddArgs>();
    auto* sub = app.add_subcommand(
        "add",
        "Register a remote model without downloading it: it shows in every view with its real "
        "size and is fetched (verified) on first open or by `modelfs fetch`");
    sub->add_option(
        "urls", a->urls,
        fetch::source_forms() + "; several are mirrors of the same file, tried in order");
    sub->add_option("--as", a->as,
                    "CATEGORY/NAME[@VERSION] of the model (lora/sdxl/detail@v2); an extension "
                    "(.safetensors) may end the name when the URL has none");
    sub->add_option("--sha256", a->sha256,
                    "The file's SHA-256 (else the server's, if it states one); a server that "
                    "contradicts it is an error");
    sub->add_option("--size", a->size, "The file's size in bytes (else asked from the server)");
    sub->add_option("--mirror", a->mirrors, "Another URL of the same file (repeatable)");
    sub->add_flag("--stream", a->stream,
                  "Let a mount serve ranges that have arrived before the whole file is verified");
    sub->add_option("--note", a->note, "A note kept with the version");
    sub->add_flag("--keep", a->keep, "Never evict it by the cache quota once downloaded");
    sub->add_option("--manifest", a->manifest,
                    "Register every model of a JSON manifest (see README, \"Lazy fetch\")");
    sub->add_option("-j,--jobs", a->probe_jobs, "Servers asked at once for a manifest (default 8)")
        ->check(CLI::Range(1, 64));
    sub->callback([&g, &run, a] { run = [&g, a] { return run_add(g, *a); }; });
}

void add_fetch(CLI::App& app, Globals& g, Runner& run) {
    auto a = std::make_shared<FetchArgs>();
    auto* sub = app.add_subcommand(
        "fetch",
        "Download remote models now (all, or those matching the patterns), verified, several at "
        "once, resuming what was interrupted");
    sub->add_option("patterns", a->patterns,
                    "Shell patterns matched against CATEGORY/NAME or NAME ('lora/*xl*')");
    sub->add_option("-j,--jobs", a->jobs, "Files downloading at once (config: fetch.jobs)")
        ->check(CLI::Range(1, 256));
    sub->add_option("--limit-rate", a->limit_rate,
                    "Bandwidth limit over all downloads, bytes/s: 50M, 1.5G, 1000000 "
                    "(config: fetch.limit_rate)");
    sub->add_flag("--keep", a->keep, "Pin what it fetches: never evicted by the cache quota");
    sub->callback([&g, &run, a] { run = [&g, a] { return run_fetch(g, *a); }; });
}

void add_status(CLI::App& app, Globals& g, Runner& run) {
    auto* sub = app.add_subcommand(
        "status",
        "Downloads in flight (in any process), interrupted and failed; remote vs present blobs");
    sub->callback([&g, &run] { run = [&g] { return run_status(g); }; });
}

void add_evict(CLI::App& app, Globals& g, Runner& run) {
    auto max = std::make_shared<std::string>();
    auto dry = std::make_shared<bool>(false);
    auto* sub = app.add_subcommand(
        "evict",
        "Remove the least recently used downloaded blobs until the store is within its quota "
        "(they stay catalogued and are fetched again when used)");
    sub->add_option("--max-size", *max,
                    "Quota for present blobs: 200G, 1.5T, bytes (config: fetch.cache_max_size)");
    sub->add_flag("-n,--dry-run", *dry, "Only list what would be evicted");
    sub->callback(
        [&g, &run, max, dry] { run = [&g, max, dry] { return run_evict(g, *max, *dry); }; });
}

}  // namespace modelfs::cli
