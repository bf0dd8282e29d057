// config: every effective setting, its value and where it came from.
#include <algorithm>
#include <cstdio>
#include <iostream>

#include "cli.h"

namespace modelfs::cli {

void add_config(CLI::App& app, Globals& g, Runner& run) {
    auto* sub = app.add_subcommand(
        "config",
        "Print every effective setting, its value and where it came from (flag, config file, "
        "environment variable or default); secrets are masked");
    sub->footer(settings_help());
    sub->callback([&g, &run] {
        run = [&g] {
            const Config& c = g.config();
            const std::vector<EffectiveSetting> settings = effective_settings(c, g.store);
            if (g.json) {
                nlohmann::json files = nlohmann::json::array();
                for (const auto& f : c.files) files.push_back(f.string());
                nlohmann::json out = nlohmann::json::array();
                for (const auto& s : settings)
                    out.push_back({{"key", s.key},
                                   {"value", s.value},
                                   {"origin", s.origin},
                                   {"secret", s.secret}});
                print_json({{"files", files}, {"settings", out}});
                return kOk;
            }
            std::cout << "config files:";
            if (c.files.empty()) std::cout << " none";
            for (const auto& f : c.files) std::cout << "\n  " << f.string();
            std::cout << "\n\n";
            std::size_t kw = 0, vw = 0;
            for (const auto& s : settings) {
                kw = std::max(kw, s.key.size());
                vw = std::max(vw, s.value.size());
            }
            vw = std::min<std::size_t>(vw, 40);
            for (const auto& s : settings)
                std::printf("%-*s = %-*s  (%s)\n", static_cast<int>(kw), s.key.c_str(),
                            static_cast<int>(vw), s.value.empty() ? "\"\"" : s.value.c_str(),
                            s.origin.c_str());
            std::fflush(stdout);
            return kOk;
        };
    });
}

}  // namespace modelfs::cli
