#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

#include <cstdio>
#include <ctime>
#include <iostream>

#include "cli.h"
#include "modelfs/fs/mount.h"
#include "modelfs/store/unique_fd.h"

namespace modelfs::cli {

std::filesystem::path Globals::store_path() const {
    return resolve_store_path(store, config());
}

const Config& Globals::config() const {
    if (!config_) {
        std::optional<std::filesystem::path> given;
        if (!config_file.empty()) given = config_file;
        ConfigLookup lookup = ConfigLookup::from_environment(given);
        // The store's own config.toml is one of the files, but which store that is depends on
        // the others (and --store): find it from them first.
        const Config without_store_file = load_config(lookup);
        if (!lookup.explicit_path && lookup.env_config.empty()) {
            lookup.store_dir = resolve_store_path(store, without_store_file);
            config_ = load_config(lookup);
        } else {
            config_ = without_store_file;
        }
    }
    return *config_;
}

Store Globals::open_store() const {
    return Store::open(store_path());
}

void print_json(const nlohmann::json& j) {
    std::cout << dump_json(j) << "\n";
}

std::string human_count(std::uint64_t n) {
    char buf[32];
    if (n >= 1'000'000'000)
        std::snprintf(buf, sizeof buf, "%.2f B", n / 1e9);
    else if (n >= 1'000'000)
        std::snprintf(buf, sizeof buf, "%.1f M", n / 1e6);
    else if (n >= 1'000)
        std::snprintf(buf, sizeof buf, "%.1f K", n / 1e3);
    else
        std::snprintf(buf, sizeof buf, "%llu", static_cast<unsigned long long>(n));
    return buf;
}

std::string format_time(std::int64_t t) {
    std::time_t tt = static_cast<std::time_t>(t);
    std::tm tm{};
    localtime_r(&tt, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M", &tm);
    return buf;
}

Category parse_category_arg(const std::string& s) {
    if (auto c = parse_category(s)) return *c;
    std::string list;
    for (auto c : all_categories()) list.append(" ").append(to_string(c));
    throw UsageError("unknown category '" + s + "'; categories are:" + list);
}

std::vector<layouts::ViewLayout> views_or_usage(const fs::MountOptions& o) {
    try {
        return fs::views_to_serve(o);
    } catch (const StoreError& e) {
        throw UsageError(std::string(e.what()) + " (`modelfs views` shows them)");
    }
}

layouts::ViewLayout view_arg(const Globals& g, const std::string& name) {
    fs::MountOptions o;
    o.layouts = g.config().layouts;
    o.view = name;
    // The same lookup a mount does, so a pin names exactly the view a mount shows.
    return views_or_usage(o).at(0);
}

std::string read_text_file(const std::filesystem::path& p) {
    UniqueFd fd(::open(p.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) {
        const int err = errno;
        if (err == ENOENT) throw StoreError(ErrorKind::not_found, p.string() + ": no such file");
        throw_errno("opening " + p.string(), err);
    }
    std::string text;
    char buf[65536];
    for (;;) {
        const ssize_t n = ::read(fd.get(), buf, sizeof buf);
        if (n == 0) break;
        if (n < 0) {
            if (errno == EINTR) continue;
            throw_errno("reading " + p.string(), errno);
        }
        text.append(buf, static_cast<std::size_t>(n));
    }
    return text;
}

ProgressBar::ProgressBar(const Globals& g, std::string label)
    : label_(std::move(label)),
      enabled_(!g.quiet && ::isatty(STDERR_FILENO)),
      start_(std::chrono::steady_clock::now()) {
    if (!enabled_) return;
    thread_ = std::thread([this] {
        while (!stop_.load()) {
            draw(false);
            for (int i = 0; i < 4 && !stop_.load(); ++i)
                std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
    });
}

ProgressBar::~ProgressBar() {
    if (!enabled_) return;
    stop_ = true;
    thread_.join();
    std::fprintf(stderr, "\r\033[K");
    std::fflush(stderr);
}

void ProgressBar::draw(bool) {
    const std::uint64_t done = progress_.done_bytes.load(), total = progress_.total_bytes.load();
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    const double rate = secs > 0.2 ? done / secs : 0;
    const double frac = total ? std::min(1.0, static_cast<double>(done) / total) : 0;
    constexpr int kWidth = 24;
    std::string bar(static_cast<std::size_t>(frac * kWidth), '#');
    bar.resize(kWidth, '.');
    std::string eta = "--:--";
    if (rate > 0 && total > done) {
        auto s = static_cast<long>((total - done) / rate);
        char buf[48];
        std::snprintf(buf, sizeof buf, "%ld:%02ld", s / 60, s % 60);
        eta = buf;
    }
    std::string items;
    if (auto ti = progress_.total_items.load(); ti > 1)
        items.assign("  ")
            .append(std::to_string(progress_.done_items.load()))
            .append("/")
            .append(std::to_string(ti));
    std::fprintf(stderr, "\r\033[K%s [%s] %s / %s  %s/s  ETA %s%s", label_.c_str(), bar.c_str(),
                 human_bytes(done).c_str(), human_bytes(total).c_str(),
                 human_bytes(static_cast<std::uint64_t>(rate)).c_str(), eta.c_str(), items.c_str());
    std::fflush(stderr);
}

}  // namespace modelfs::cli
