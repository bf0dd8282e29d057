// fetch::files_to_ask and fetch::ask_servers (fetch/src/describe.cpp): what `modelfs add` asks
// before registering, against a real nginx on 127.0.0.1 and a real store.
#include "modelfs/fetch/describe.h"

#include "fetch_env.h"
#include "support/http_servers.h"

namespace modelfs::test {
namespace {

class DescribeTest : public FetchEnv {
  protected:
    // A single-file model with one source; `size` and `sha256` as given (or not) by the user.
    RemoteModel model(const std::string& url, std::uint64_t size = 0,
                      std::optional<Sha256> sha256 = std::nullopt) {
        RemoteModel m;
        m.category = Category::lora;
        m.name = "detail";
        m.ext = ".safetensors";
        RemoteFile f;
        f.size = size;
        f.sha256 = sha256;
        f.sources.push_back({url, false});
        m.files.push_back(f);
        return m;
    }
    std::vector<fetch::FileToDescribe> to_ask(RemoteModel& m, bool size_given,
                                              fetch::AskForHash ask) {
        return fetch::files_to_ask(store().catalog().read(), {&m}, {{size_given}}, ask);
    }
};

TEST_F(DescribeTest, AnUnknownSizeIsAskedAndFilledIn) {
    make_file("a.safetensors", 5000);
    NginxServer nginx(www());
    RemoteModel m = model(nginx.url("a.safetensors"));
    auto ask = to_ask(m, false, fetch::AskForHash::no);
    ASSERT_EQ(ask.size(), 1u);
    EXPECT_EQ(ask[0].label, "lora/detail");
    fetch::ask_servers(ask, fast_config(), 4);
    EXPECT_EQ(ask[0].error, "");
    EXPECT_EQ(m.files[0].size, 5000u);
}

TEST_F(DescribeTest, AGivenSizeIsAskedForAHashOnlyWhenAskedTo) {
    RemoteModel m = model("http://127.0.0.1:9/a.safetensors", 5000);
    EXPECT_TRUE(to_ask(m, true, fetch::AskForHash::no).empty());    // a manifest entry
    EXPECT_EQ(to_ask(m, true, fetch::AskForHash::yes).size(), 1u);  // one URL
    m.files[0].sha256 = *Sha256::from_hex(std::string(64, 'b'));
    EXPECT_TRUE(to_ask(m, true, fetch::AskForHash::yes).empty());  // nothing left to learn
}

TEST_F(DescribeTest, ContentTheStoreKnowsIsNeverAskedAndTakesItsSize) {
    const Sha256 h = *Sha256::from_hex(std::string(64, 'c'));
    add_remote(h, 1234, {"http://127.0.0.1:9/c.safetensors"});
    RemoteModel m = model("http://127.0.0.1:9/other.safetensors", 0, h);
    EXPECT_TRUE(to_ask(m, false, fetch::AskForHash::yes).empty());
    EXPECT_EQ(m.files[0].size, 1234u);
}

TEST_F(DescribeTest, AServerContradictingTheGivenSizeIsAnError) {
    make_file("a.safetensors", 5000);
    NginxServer nginx(www());
    RemoteModel m = model(nginx.url("a.safetensors"), 4999);
    auto ask = to_ask(m, true, fetch::AskForHash::yes);
    ASSERT_EQ(ask.size(), 1u);
    fetch::ask_servers(ask, fast_config(), 1);
    EXPECT_NE(ask[0].error.find("has 5000 bytes, not the given 4999"), std::string::npos)
        << ask[0].error;
}

TEST_F(DescribeTest, AMissingFileSaysWhatToGiveInstead) {
    NginxServer nginx(www());
    RemoteModel m = model(nginx.url("missing.safetensors"));
    auto ask = to_ask(m, false, fetch::AskForHash::no);
    ASSERT_EQ(ask.size(), 1u);
    fetch::ask_servers(ask, fast_config(), 1);
    EXPECT_NE(ask[0].error.find("give the size and SHA-256"), std::string::npos) << ask[0].error;
}

}  // namespace
}  // namespace modelfs::test
