// modelfs: one copy of every model, every tool its own folder layout.
#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <iostream>

#include "cli.h"
#include "mount_helper.h"

using namespace modelfs;
using namespace modelfs::cli;

namespace {

// A StoreError's exit code comes from its kind's row (modelfs/store/errors.h), whose numbers
// must be the ones documented here.
static_assert(kExitFailed == kFailed && kExitNotFound == kNotFound && kExitNoStore == kNoStore);

// %* is the message with its control characters escaped: messages carry names, URLs and server
// text, which must not drive the terminal.
class TerminalSafeMessage : public spdlog::custom_flag_formatter {
  public:
    void format(const spdlog::details::log_msg& msg, const std::tm&,
                spdlog::memory_buf_t& dest) override {
        const std::string s =
            terminal_safe(std::string_view(msg.payload.data(), msg.payload.size()));
        dest.append(s.data(), s.data() + s.size());
    }
    std::unique_ptr<custom_flag_formatter> clone() const override {
        return std::make_unique<TerminalSafeMessage>();
    }
};

void setup_logging(const Globals& g) {
    auto logger = spdlog::stderr_color_mt("modelfs");
    auto formatter = std::make_unique<spdlog::pattern_formatter>();
    formatter->add_flag<TerminalSafeMessage>('*').set_pattern("modelfs: %^%l%$: %*");
    logger->set_formatter(std::move(formatter));
    logger->set_level(g.quiet          ? spdlog::level::err
                      : g.verbose >= 2 ? spdlog::level::debug
                      : g.verbose == 1 ? spdlog::level::info
                                       : spdlog::level::warn);
    spdlog::set_default_logger(logger);
}

// Edit distance, for "did you mean": a typo is a letter or two off.
std::size_t distance(const std::string& a, const std::string& b) {
    std::vector<std::size_t> row(b.size() + 1);
    for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
    for (std::size_t i = 1; i <= a.size(); ++i) {
        std::size_t diag = row[0];
        row[0] = i;
        for (std::size_t j = 1; j <= b.size(); ++j) {
            const std::size_t up = row[j];
            row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] != b[j - 1])});
            diag = up;
        }
    }
    return row[b.size()];
}

// The command word of argv (the first word that is no option nor a global option's value), when
// it names no command; empty otherwise.
std::string unknown_command(const std::vector<std::string>& args,
                            const std::vector<std::string>& names) {
    for (std::size_t i = 0; i < args.size(); ++i) {
        const std::string& a = args[i];
        if (a == "--store" || a == "--config") {
            ++i;
            continue;
        }
        if (a.empty() || a[0] == '-') continue;
        return std::find(names.begin(), names.end(), a) == names.end() ? a : "";
    }
    return {};
}

std::string exit_codes_text() {
    std::string s = "Exit codes:";
    for (const auto& e : kExitCodes)
        s += "\n  " +
             std::string(3 - std::min<std::size_t>(3, std::to_string(e.code).size()), ' ') +
             std::to_string(e.code) + " " + e.meaning;
    return s;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{
        "modelfs keeps one copy of every AI model file in a content-addressed store and shows "
        "each tool the folder layout it expects.",
        "modelfs"};
    app.set_version_flag("--version", std::string("modelfs ") + MODELFS_VERSION);
    app.require_subcommand(1);
    app.fallthrough();
    // Subcommands copy the footer they find when added: each gets this one line, and the full
    // text below is set once they are all in, so the man page does not repeat it per command.
    app.footer("Settings, the store's location, config files and exit codes: modelfs --help.");

    Globals g;
    // No envname: $MODELFS_STORE ranks below the config file's `store`, as every variable does
    // below the file (resolve_store_path).
    app.add_option("--store", g.store, "Store folder");
    // No envname: find_config reads $MODELFS_CONFIG itself, to say which of the two named a
    // missing file.
    app.add_option("--config", g.config_file, "Config file (TOML): default store, view layouts");
    app.add_flag("--json", g.json, "Machine-readable output on stdout");
    app.add_flag("-v,--verbose", g.verbose, "More log output (repeat for debug)");
    app.add_flag("-q,--quiet", g.quiet, "Only errors; no progress bar");

    Runner run;
    add_init(app, g, run);
    add_import(app, g, run);
    add_ls(app, g, run);
    add_show(app, g, run);
    add_verify(app, g, run);
    add_gc(app, g, run);
    add_stats(app, g, run);
    add_tensor_commands(app, g, run);
    add_mount(app, g, run);
    add_views(app, g, run);
    add_add(app, g, run);
    add_fetch(app, g, run);
    add_status(app, g, run);
    add_evict(app, g, run);
    add_version_commands(app, g, run);
    add_lock_commands(app, g, run);
    add_config(app, g, run);
    add_adopt_commands(app, g, run);
    add_remote_commands(app, g, run);

    app.footer(
        "Every setting: command-line flag, else config file, else environment variable, else "
        "built-in default (`modelfs config` shows each one's value and origin).\nStore: --store, "
        "else 'store' in the config file, else $MODELFS_STORE, else $XDG_DATA_HOME/modelfs, else "
        "~/.local/share/modelfs.\nConfig files: --config or $MODELFS_CONFIG names the only one; "
        "else $XDG_CONFIG_HOME/modelfs/config.toml (~/.config/...), STORE/config.toml and "
        "/etc/modelfs/config.toml are merged, the first that sets a key winning.\n" +
        exit_codes_text() +
        "\nfstab and `mount -t fuse.modelfs` run `modelfs STORE MOUNTPOINT -o OPTIONS` "
        "(view=NAME, config=FILE, lock=FILE, read_backend=auto|splice, allow_other, debug, "
        "foreground, nonempty, ro, "
        "noexec, ...).");

    // mount.fuse3 runs `modelfs STORE MOUNTPOINT -o OPTIONS` for `mount -t fuse.modelfs` and
    // fstab entries: no subcommand, so CLI11 would refuse it.
    std::vector<std::string> args(argv + 1, argv + argc);
    std::vector<std::string> names;
    for (const auto* s : app.get_subcommands([](CLI::App*) { return true; }))
        names.push_back(s->get_name());
    if (is_helper_call(args, names)) {
        run = [&g, &args] { return run_helper_mount(g, args); };
    } else if (args.empty()) {
        // What a newcomer types first: the commands, not "A subcommand is required".
        std::cout << app.help();
        return kUsage;
    } else if (const std::string typo = unknown_command(args, names); !typo.empty()) {
        std::string best;
        std::size_t best_d = 3;  // more letters off than that is not a typo
        for (const auto& n : names)
            if (const std::size_t d = distance(typo, n); d < best_d && d < n.size()) {
                best = n;
                best_d = d;
            }
        std::cerr << "modelfs: unknown command '" << terminal_safe(typo) << "'"
                  << (best.empty() ? "" : "; did you mean '" + best + "'?")
                  << " (`modelfs --help` lists the commands)\n";
        return kUsage;
    } else {
        try {
            app.parse(argc, argv);
        } catch (const CLI::ParseError& e) {
            int rc = app.exit(e);
            return rc == 0 ? kOk : kUsage;
        }
    }
    setup_logging(g);
    try {
        return run();
    } catch (const UsageError& e) {
        std::cerr << "modelfs: " << e.what() << "\n";
        return kUsage;
    } catch (const ConfigError& e) {
        std::cerr << "modelfs: " << e.what() << "\n";
        return kUsage;
    } catch (const StoreError& e) {
        spdlog::error("{}", e.what());
        return exit_code_for(e.kind());
    } catch (const std::exception& e) {
        spdlog::error("{}", e.what());
        return kFailed;
    }
}
