#include "transfer_limits.h"

#include <sys/statvfs.h>

#include <algorithm>

namespace modelfs::fetch::detail {

std::optional<std::string> size_refusal(std::uint64_t size, const std::filesystem::path& dir) {
    if (size > kMaxRemoteSize)
        return std::to_string(size) + " bytes, more than any model file has (the limit is " +
               std::to_string(kMaxRemoteSize) + " bytes, 1 TiB)";
    struct statvfs sv {};
    if (!dir.empty() && ::statvfs(dir.c_str(), &sv) == 0) {
        const std::uint64_t avail =
            static_cast<std::uint64_t>(sv.f_bavail) * static_cast<std::uint64_t>(sv.f_frsize);
        if (size > avail)
            return std::to_string(size) + " bytes, more than the " + std::to_string(avail) +
                   " bytes free where the store keeps downloads (" + dir.string() +
                   "; free some space)";
    }
    return std::nullopt;
}

std::chrono::milliseconds request_deadline(const FetchConfig& cfg, std::uint64_t bytes) {
    const std::uint64_t chunk = std::max<std::uint64_t>(cfg.chunk_size, 1);
    const std::uint64_t chunks = std::max<std::uint64_t>(1, bytes / chunk + (bytes % chunk != 0));
    const auto one = std::chrono::duration_cast<std::chrono::milliseconds>(cfg.transfer_timeout);
    // A cap far beyond any real download, so the product cannot overflow.
    return one * static_cast<std::int64_t>(std::min<std::uint64_t>(chunks, 1u << 20));
}

std::string deadline_message(const FetchConfig& cfg, std::chrono::milliseconds allowed) {
    const std::uint64_t chunk = cfg.chunk_size;
    const std::string per = chunk % (1 << 20) == 0 ? std::to_string(chunk >> 20) + " MiB"
                            : chunk % 1024 == 0    ? std::to_string(chunk >> 10) + " KiB"
                                                   : std::to_string(chunk) + " bytes";
    return "not finished after " + std::to_string(allowed.count() / 1000) +
           " s (the limit is fetch.transfer_timeout = " +
           std::to_string(cfg.transfer_timeout.count()) + " s per " + per +
           "; raise it in the config file or with $MODELFS_TRANSFER_TIMEOUT for a slow link)";
}

}  // namespace modelfs::fetch::detail
