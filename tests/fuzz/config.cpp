// The config file (TOML), then everything the CLI derives from it without touching the system:
// merging, the mount's layouts, the effective settings `modelfs config` prints and the downloader
// settings. The environment is empty, so the input alone decides.
#include <cstdint>
#include <string>

#include "config.h"
#include "fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace modelfs::cli;
    const auto text = modelfs::fuzz::as_text(data, size);
    (void)parse_size(text);
    const EnvFn no_env = [](const char*) { return std::string(); };
    try {
        const Config config = parse_config(text, "/fuzz/config.toml");
        const Config merged = merge_config(Config{}, config);
        (void)mount_layouts(merged);
        (void)effective_settings(merged, "", no_env);
        (void)keep_versions(merged, std::nullopt, no_env);
        (void)fetch_config(merged, modelfs::fetch::FetchConfig{});
    } catch (const ConfigError&) {
    }
    return 0;
}
