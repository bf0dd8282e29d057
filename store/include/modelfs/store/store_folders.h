// Who may enter the store's folders. One rule, used when a store is created, when a mount starts
// and when a folder is made later (partial/ at the first download). store/FORMAT.md, "File
// modes".
#pragma once

#include <filesystem>

namespace modelfs {

// Narrows the modes of the store's folders (views, blobs, staging, quarantine, partial, catalog,
// adopt) to their owner, and their group where the store's own folder lets the group in (the
// .deb's /var/lib/modelfs is 0750, group modelfs); views/ (what users wrote through mounts, as
// they wrote it: a set-id file there ran as its owner by its store path) to the owner alone, and
// makes it. Everything in them is reached through a mount, where the kernel checks permissions
// against what the mount shows, or by the store's own commands. Only ever narrows, never widens,
// and never through a link (a store another user owns, opened by root, could point a name
// anywhere); what it cannot change is a warning, not an error.
void make_store_folders_private(const std::filesystem::path& store);

}  // namespace modelfs
