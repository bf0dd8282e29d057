// The folders of each built-in view (view_layout.cpp), for the registry of tools (tools.cpp).
#pragma once

#include <vector>

#include "modelfs/layouts/view_layout.h"

namespace modelfs::layouts::detail {

std::vector<ViewFolder> a1111_folders(bool forge);
std::vector<ViewFolder> sdnext_folders();
std::vector<ViewFolder> comfyui_folders();
std::vector<ViewFolder> fooocus_folders();
std::vector<ViewFolder> invokeai_folders();

}  // namespace modelfs::layouts::detail
