// mount and umount: the store as a folder tree for each tool.
#include <iostream>

#include "cli.h"
#include "modelfs/fs/mount.h"

namespace modelfs::cli {

void add_mount(CLI::App& app, Globals& g, Runner& run) {
    auto o = std::make_shared<fs::MountOptions>();
    auto mp = std::make_shared<std::string>();
    auto* sub = app.add_subcommand(
        "mount",
        "Mount the store: every tool's models folder as a view (read-only for now; views: "
        "a1111, forge, sdnext, comfyui, fooocus)");
    sub->add_option("mountpoint", *mp, "An existing empty folder")->required();
    sub->add_option("--view", o->view,
                    "Show one tool's layout at the mount point itself (mount it at "
                    "ComfyUI/models, say); default: one folder per tool plus by-hash/");
    sub->add_flag("-f,--foreground", o->foreground, "Stay in the foreground");
    sub->add_flag("--allow-other", o->allow_other,
                  "Let other users read the mount (needs user_allow_other in /etc/fuse.conf "
                  "when not root)");
    sub->add_flag("-d,--debug", o->debug, "Log every FUSE request (implies --foreground)");
    sub->callback([&g, &run, o, mp] {
        run = [&g, o, mp] {
            o->store = g.store_path();
            o->mountpoint = *mp;
            if (o->debug) o->foreground = true;
            return fs::serve_mount(*o);
        };
    });

    auto um = std::make_shared<std::string>();
    auto* usub = app.add_subcommand("umount", "Unmount a modelfs mount point");
    usub->add_option("mountpoint", *um, "Where it is mounted")->required();
    usub->callback([&run, um] { run = [um] { return fs::unmount(*um); }; });
}

}  // namespace modelfs::cli
