// The one rule for what a single-file model is called: its file name, extension included, as on
// disk (`lora/foo.safetensors` and `lora/foo.pt` are two models). Every entry point that names a
// model (import, add, manifests, lock files, trusted caches, adopt, a mount's saves and renames)
// and the catalog's upgrade go through these functions. Pure text, no store. See store/FORMAT.md
// "### `models`".
#pragma once

#include <string>
#include <string_view>
#include <utility>

namespace modelfs {

// The last component of a slash-separated path ("sdxl/foo.safetensors" -> "foo.safetensors").
std::string_view leaf_of(std::string_view path);

// Splits the leaf of `path` into (everything before the extension, extension): the extension is
// the leaf's last ".xxx", or a compound extension a tool matches as one (".fooocus.patch",
// Fooocus's inpaint patches). A leaf without a dot, or whose only dot is its first character
// (".hidden"), has none. Case is kept as spelled; callers compare extensions case-insensitively.
// ("sdxl/foo.safetensors") -> ("sdxl/foo", ".safetensors").
std::pair<std::string, std::string> split_extension(std::string_view path);

// The name and version extension of a single-file model named `name` whose file has extension
// `ext`: `name` as given when it already ends with `ext` (any case; `ext` is then taken as the
// name spells it), else `name + ext`. ("foo", ".pt") -> {"foo.pt", ".pt"};
// ("foo.SafeTensors", ".safetensors") -> {"foo.SafeTensors", ".SafeTensors"}.
struct SingleFileName {
    std::string name;
    std::string ext;
};
SingleFileName single_file_name(std::string_view name, std::string_view ext);

// The name and extension of the single-file model a file named `leaf` is, when nobody gives it
// another name: the leaf itself, with split_extension's extension ("foo.safetensors" ->
// {"foo.safetensors", ".safetensors"}). What `import` of a folder and the cache imports
// (import --hf-cache's single-file repos) name a file by.
SingleFileName file_model_name(std::string_view leaf);

// `name` without the extension `ext` at its end (what tools call the stem: sidecars are
// `<stem>.preview.png`, version aliases `<stem>@<label><ext>`); `name` itself when it does not
// end with `ext` (a tree model, whose ext is empty).
std::string_view name_stem(std::string_view name, std::string_view ext);

}  // namespace modelfs
