// The registry of tools (modelfs/layouts/tools.h): the rows every other part reads are well formed.
#include "modelfs/layouts/tools.h"

#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

namespace modelfs::layouts {
namespace {

TEST(ToolRegistry, NamesAndAliasesAreUniqueLowerCaseAndFindTheirTool) {
    std::set<std::string_view> seen;
    for (const Tool& t : tools()) {
        SCOPED_TRACE(std::string(t.name));
        std::vector<std::string_view> names{t.name};
        names.insert(names.end(), t.aliases.begin(), t.aliases.end());
        for (std::string_view n : names) {
            EXPECT_TRUE(seen.insert(n).second) << n << " names two tools";
            EXPECT_EQ(n.find_first_of("ABCDEFGHIJKLMNOPQRSTUVWXYZ"), n.npos) << n;
            EXPECT_EQ(find_tool(n), &t) << n;
        }
        EXPECT_FALSE(t.display.empty());
        ASSERT_NE(t.folders, nullptr);
        // builtin() builds the view from the row: the constructor's checks pass.
        const auto view = ViewLayout::builtin(t.name);
        ASSERT_TRUE(view);
        EXPECT_EQ(view->name(), t.name);
        EXPECT_EQ(view->folders().size(), t.folders().size());
    }
    EXPECT_EQ(find_tool("AUTOMATIC1111"), find_tool("a1111"));
    EXPECT_EQ(find_tool("nosuchtool"), nullptr);
    EXPECT_EQ(find_tool(""), nullptr);
}

TEST(ToolRegistry, BuiltinNamesFollowTheTable) {
    std::vector<std::string> names;
    for (const Tool& t : tools()) names.emplace_back(t.name);
    EXPECT_EQ(ViewLayout::builtin_names(), names);
    EXPECT_EQ(names, (std::vector<std::string>{"a1111", "forge", "sdnext", "comfyui", "fooocus",
                                               "invokeai"}));
}

TEST(ToolRegistry, DetectionTriesTheMoreSpecificToolsFirst) {
    std::vector<std::string_view> order;
    std::set<int> ranks;
    for (const Tool* t : detected_tools()) {
        order.push_back(t->name);
        EXPECT_TRUE(ranks.insert(t->detect_order).second)
            << t->name << " shares its detect_order: detection would depend on the table order";
        EXPECT_FALSE(t->home_folders.empty()) << t->name;
    }
    // Forge's and Fooocus's installs also carry A1111's markers (and SD.Next's launch.py and
    // modules/), so they are tried before it.
    EXPECT_EQ(order,
              (std::vector<std::string_view>{"comfyui", "fooocus", "forge", "sdnext", "a1111"}));
    // InvokeAI registers models by path: nothing to detect or adopt.
    EXPECT_TRUE(find_tool("invokeai")->markers.empty());
}

TEST(ToolRegistry, DescribeMarkers) {
    EXPECT_EQ(describe({.all = {"webui.py", "modules/"}}), "webui.py + modules/");
    EXPECT_EQ(describe({.all = {"a.py"}, .any = {"b.py", "c.py"}}), "a.py + (b.py or c.py)");
    EXPECT_EQ(describe({.all = {}, .any = {"b.py"}}), "b.py");
    EXPECT_EQ(describe({}), "");
}

}  // namespace
}  // namespace modelfs::layouts
