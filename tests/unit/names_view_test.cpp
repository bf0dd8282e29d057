// A catalog an older modelfs wrote may hold names and file paths that names.h refuses: a mount's
// view never shows them (no second '..', nothing outside its folder); the rest is shown as usual.
#include <gtest/gtest.h>

#include "modelfs/fs/view_tree.h"
#include "modelfs/layouts/view_layout.h"
#include "modelfs/store/catalog.h"
#include "support/catalog_builders.h"
#include "support/test_env.h"

namespace modelfs::fs {
namespace {

namespace mt = modelfs::testing;

TEST(NamesView, RefusedNamesInAnOldCatalogAreNotShown) {
    mt::TempDir tmp{"modelfs-names-view"};
    Catalog cat = Catalog::open(tmp / "catalog", true);
    {
        Txn w = cat.write();
        w.put_model(mt::file_model(Category::lora, "ok", ".safetensors", mt::hx('a'), 10));
        w.put_model(mt::file_model(Category::lora, "../../x", ".safetensors", mt::hx('b'), 10));
        w.put_model(mt::file_model(Category::lora, "esc\x1b[2J", ".safetensors", mt::hx('c'), 10));
        Model tree = mt::file_model(Category::diffusers, "sd", "", mt::hx('d'), 10);
        tree.versions[0].blob.reset();
        tree.versions[0].ext.clear();
        tree.versions[0].tree = {{"../../../escape.json", mt::hx('d'), 10}};
        w.put_model(tree);
        w.commit();
    }
    Txn r = cat.read();
    ViewTree t = ViewTree::build(r, {mt::layout("comfyui")}, true, 777'000'000'000);
    EXPECT_NE(t.find_path("comfyui/loras/ok.safetensors"), nullptr);
    EXPECT_EQ(t.find_path("comfyui/loras/.."), nullptr);
    EXPECT_EQ(t.find_path("comfyui/loras/../../x.safetensors"), nullptr);
    EXPECT_EQ(t.find_path("comfyui/loras/esc\x1b[2J.safetensors"), nullptr);
    EXPECT_EQ(t.find_path("x.safetensors"), nullptr);
    EXPECT_EQ(t.find_path("escape.json"), nullptr);
    EXPECT_EQ(t.find_path("comfyui/diffusers/sd"), nullptr);
}

}  // namespace
}  // namespace modelfs::fs
