// The AI tools modelfs knows, one row each (tools.cpp): the view a mount shows the tool
// (ViewLayout::builtin and builtin_names read the rows), how `modelfs adopt` recognises an install
// of it and where it looks for one (adopt/src/detect.cpp reads the rows). The one thing a row
// cannot hold is the reader of the tool's own configuration file: it reads files, which this
// library never does, so adopt keeps the readers in a table by tool name
// (adopt/src/config_readers.cpp) and a unit test checks that every detected tool has one. The
// README's "Layout of the sources" says how to add a tool.
//
// Pure data: no file system access.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "modelfs/layouts/view_layout.h"

namespace modelfs::layouts {

// What a tool's repository keeps at its root, so an install of it can be told apart. A name
// ending in '/' is a folder, any other a regular file. An install has every entry of `all` and,
// when `any` is not empty, at least one entry of `any`.
struct InstallMarkers {
    std::vector<std::string_view> all{};
    std::vector<std::string_view> any{};

    bool empty() const { return all.empty() && any.empty(); }
};

struct Tool {
    std::string_view name;                    // the view's name, lower-case: "a1111"
    std::string_view display;                 // as users write it in messages: "A1111", "SD.Next"
    std::vector<std::string_view> aliases{};  // other names builtin() accepts, lower-case
    std::vector<ViewFolder> (*folders)();     // the view's folders, from the tool's own code

    // Install detection. Empty for a tool adopt does not look for (InvokeAI keeps its own
    // database of models and registers them by path, so there is no models folder to replace).
    InstallMarkers markers{};
    // Detection tries tools in ascending order and takes the first whose markers are there. A
    // tool whose install also carries another's markers comes first: Forge has all of A1111's,
    // Fooocus has webui.py, launch.py and modules/ too.
    int detect_order = 0;
    // Folders under the home folder where the tool's installer or README puts it, in order;
    // default_install_locations() tries every tool's, in table order.
    std::vector<std::string_view> home_folders{};
};

// Every tool, in the stable order builtin_names() and the mount's root folders use.
const std::vector<Tool>& tools();

// The tool called `name` or one of its aliases, case-insensitively; nullptr when none is.
const Tool* find_tool(std::string_view name);

// The tools that have install markers, in detection order.
std::vector<const Tool*> detected_tools();

// "webui.py + launch.py + modules/", "fooocus_version.py + (entry_with_update.py or launch.py)".
std::string describe(const InstallMarkers& m);

}  // namespace modelfs::layouts
