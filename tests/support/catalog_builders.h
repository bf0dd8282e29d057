// Small catalog records for tests of what a mount shows: hashes by fill character, one-version
// models, built-in layouts by name.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

#include "modelfs/layouts/view_layout.h"
#include "modelfs/store/catalog.h"
#include "modelfs/store/model_name.h"

namespace modelfs::testing {

// A SHA-256 of 64 copies of `fill` (a hex digit).
inline Sha256 hx(char fill) {
    auto h = Sha256::from_hex(std::string(64, fill));
    if (!h) throw std::invalid_argument("bad test hash");
    return *h;
}

inline layouts::ViewLayout layout(std::string_view name) {
    auto l = layouts::ViewLayout::builtin(name);
    if (!l) throw std::runtime_error("no builtin layout " + std::string(name));
    return *l;
}

// A model with one single-file version "v1", named `name` with the extension (model_name.h).
inline Model file_model(Category c, std::string name, std::string ext, const Sha256& blob,
                        std::uint64_t size, std::int64_t added = 1'000) {
    Model m;
    m.category = c;
    m.name = single_file_name(name, ext).name;
    ModelVersion v;
    v.label = "v1";
    v.added = added;
    v.blob = blob;
    v.ext = std::move(ext);
    v.size = size;
    m.versions.push_back(v);
    return m;
}

}  // namespace modelfs::testing
