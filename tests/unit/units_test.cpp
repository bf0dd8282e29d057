// human_bytes: the one byte format of every command and report (the forms README examples show).
#include "modelfs/store/units.h"

#include <gtest/gtest.h>

namespace modelfs {
namespace {

TEST(HumanBytes, WholeBytesBelowOneKiB) {
    EXPECT_EQ(human_bytes(0), "0 B");
    EXPECT_EQ(human_bytes(1), "1 B");
    EXPECT_EQ(human_bytes(1023), "1023 B");
}

TEST(HumanBytes, PowersOf1024WithOneDecimal) {
    EXPECT_EQ(human_bytes(1024), "1.0 KiB");
    EXPECT_EQ(human_bytes(1536), "1.5 KiB");
    EXPECT_EQ(human_bytes(1ull << 20), "1.0 MiB");
    EXPECT_EQ(human_bytes(6979321856ull), "6.5 GiB");
    EXPECT_EQ(human_bytes(1ull << 40), "1.0 TiB");
    EXPECT_EQ(human_bytes(3ull << 50), "3.0 PiB");
}

TEST(HumanBytes, PiBIsTheLargestUnit) {
    EXPECT_EQ(human_bytes(2048ull << 50), "2048.0 PiB");
}

}  // namespace
}  // namespace modelfs
