// Files of a tool's models tree that no view folder lists as models (an .onnx in models/rembg/,
// a dlib .dat, TF.js .bin shards, a .gguf outside unet/, an .onnx in Stable-diffusion/): stored
// by content like models, as catalog entries of category `file` that belong to one view and one
// path in it. Pure text, no store. store/FORMAT.md ("View files") says the same.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace modelfs {

// Below this a file stays a plain file of its view (previews, notes, small configs): storing it
// by content would save little and cost a catalog entry and a copy-up at every edit.
inline constexpr std::uint64_t kViewFileMinSize = 64 * 1024;

// The one line between a file stored by content and a plain file of its view, for every file
// that is neither a model nor a sidecar of one (the mount's ingest and `modelfs adopt` both ask
// it). Stored: at least kViewFileMinSize bytes and not a file tools edit in place or write in
// pieces (text, configs, databases, logs, downloads under way), which would be copied up at
// every write; decided by the leaf's extension, case-insensitively.
bool stored_by_content(std::string_view rel_path, std::uint64_t size);

// The catalog name of the file at `rel_path` of view `view`: "<view>/<rel_path>", extension
// included (the key is "file/<view>/<rel_path>").
std::string view_file_name(std::string_view view, std::string_view rel_path);

// Where a `file` entry named `name` shows in view `view`: its path there, or std::nullopt when it
// belongs to another view.
std::optional<std::string> view_file_path(std::string_view name, std::string_view view);

// The extension of the path's leaf as written (split_extension: ".onnx", ".bin"), "" when it has
// none.
std::string view_file_ext(std::string_view rel_path);

}  // namespace modelfs
