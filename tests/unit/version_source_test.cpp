#include "modelfs/store/version_source.h"

#include <gtest/gtest.h>

namespace modelfs {
namespace {

TEST(VersionSource, EveryFormRoundTrips) {
    const VersionSource forms[] = {
        {SourceKind::path_or_url, "", "/home/u/loras/foo.safetensors"},
        {SourceKind::path_or_url, "", "https://h/a.safetensors"},
        {SourceKind::mount, "", "comfyui/loras/foo.safetensors"},
        {SourceKind::adopt, "comfyui", "loras/a:b.safetensors"},
        {SourceKind::hf_cache, "", "/c/models--org--repo/snapshots/abc"},
        {SourceKind::ollama, "", "/o/manifests/registry.ollama.ai/library/x/latest"},
        {SourceKind::lock, "", ""},
        {SourceKind::remote, "", "team"},
    };
    for (const auto& f : forms) {
        const VersionSource back = parse_source(to_source(f));
        EXPECT_EQ(back.kind, f.kind) << to_source(f);
        EXPECT_EQ(back.tool, f.tool) << to_source(f);
        EXPECT_EQ(back.where, f.where) << to_source(f);
    }
}

TEST(VersionSource, TheWrittenTextIsWhatFormatMdSays) {
    EXPECT_EQ(to_source({SourceKind::mount, "", "a1111/Lora/x.safetensors"}),
              "mount:a1111/Lora/x.safetensors");
    EXPECT_EQ(to_source({SourceKind::adopt, "a1111", "Lora/x.safetensors"}),
              "adopt:a1111:Lora/x.safetensors");
    EXPECT_EQ(to_source({SourceKind::hf_cache, "", "/c/s"}), "hf-cache:/c/s");
    EXPECT_EQ(to_source({SourceKind::ollama, "", "/o/m"}), "ollama:/o/m");
    EXPECT_EQ(to_source({SourceKind::lock, "", ""}), "lock");
    // No view path: not adopt's.
    EXPECT_EQ(parse_source("adopt:a1111").kind, SourceKind::path_or_url);
    EXPECT_EQ(parse_source("").kind, SourceKind::path_or_url);
    EXPECT_EQ(parse_source("locks").kind, SourceKind::path_or_url);
}

}  // namespace
}  // namespace modelfs
