#include "modelfs/store/text.h"

#include <gtest/gtest.h>

#include <string_view>
#include <utility>

namespace modelfs {
namespace {

TEST(Text, LowerFoldsOnlyAscii) {
    // Bytes of UTF-8 names (and Latin-1 upper case) stay as they are, whatever the locale.
    const std::pair<std::string_view, std::string_view> cases[] = {
        {"Lora/SET3/Foo.SafeTensors", "lora/set3/foo.safetensors"},
        {"", ""},
        {"0-9_@[`{", "0-9_@[`{"},
        {"\xc3\x89T\xc9", "\xc3\x89t\xc9"},
    };
    for (const auto& [in, out] : cases) EXPECT_EQ(lower(in), out) << in;
    EXPECT_EQ(lower('Z'), 'z');
    EXPECT_EQ(lower('['), '[');
}

TEST(Text, CaseInsensitiveComparisons) {
    EXPECT_TRUE(iequals("SHA-256", "sha-256"));
    EXPECT_FALSE(iequals("sha-256", "sha-25"));
    EXPECT_FALSE(iequals("\xc9", "\xe9"));
    EXPECT_TRUE(istarts_with("HTTPS://host", "https://"));
    EXPECT_FALSE(istarts_with("http", "https://"));
    EXPECT_TRUE(iends_with("model.SAFETENSORS", ".safetensors"));
    EXPECT_FALSE(iends_with("st", ".safetensors"));
    EXPECT_TRUE(iends_with("x", ""));
}

}  // namespace
}  // namespace modelfs
