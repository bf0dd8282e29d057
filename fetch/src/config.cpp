#include "modelfs/fetch/config.h"

#include <array>

#include "modelfs/fetch/fetcher.h"

namespace modelfs::fetch {

std::string_view to_string(FetchState s) {
    // In the enum's order.
    static constexpr std::array<std::string_view, 4> kNames{"queued", "running", "done", "failed"};
    const auto i = static_cast<std::size_t>(s);
    return i < kNames.size() ? kNames[i] : "?";
}

}  // namespace modelfs::fetch
