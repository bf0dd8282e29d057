#include "reuse.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <map>
#include <vector>

#include "modelfs/store/errors.h"
#include "modelfs/store/tensor_map.h"
#include "modelfs/store/units.h"

namespace modelfs::fetch::detail {

RangeSet reuse_stored_pieces(Store& store, const Sha256& key, int part_fd) {
    RangeSet done;
    std::vector<LocalPiece> pieces;
    try {
        pieces = local_pieces(store, key);
    } catch (const std::exception& e) {
        spdlog::debug("blob {}: no stored pieces to reuse: {}", key.hex(), e.what());
        return done;
    }
    if (pieces.empty()) return done;
    std::map<Sha256, UniqueFd> sources;
    std::vector<char> buf(4 << 20);
    std::uint64_t bytes = 0;
    for (const auto& p : pieces) {
        auto it = sources.find(p.source);
        if (it == sources.end())
            it = sources.emplace(p.source, store.blobs().open_blob(p.source)).first;
        if (!it->second) continue;
        Xxh128Hasher x;
        bool ok = true;
        for (std::uint64_t at = 0; ok && at < p.length;) {
            const std::size_t n =
                static_cast<std::size_t>(std::min<std::uint64_t>(buf.size(), p.length - at));
            ssize_t r =
                ::pread(it->second.get(), buf.data(), n, static_cast<off_t>(p.source_offset + at));
            if (r != static_cast<ssize_t>(n)) {
                ok = false;
                break;
            }
            x.update(buf.data(), n);
            for (std::size_t w = 0; w < n;) {
                ssize_t k =
                    ::pwrite(part_fd, buf.data() + w, n - w, static_cast<off_t>(p.offset + at + w));
                if (k < 0 && errno == EINTR) continue;
                if (k <= 0) throw_errno("writing a partial download", k < 0 ? errno : EIO);
                w += static_cast<std::size_t>(k);
            }
            at += n;
        }
        if (!ok || x.finish() != p.xxh3) continue;  // downloaded like the rest
        done.add(p.offset, p.offset + p.length);
        bytes += p.length;
    }
    if (bytes && ::fsync(part_fd) != 0) throw_errno("syncing a partial download", errno);
    if (bytes)
        spdlog::info("blob {}: {} of its tensors are stored already; downloading the rest",
                     key.hex().substr(0, 12), human_bytes(bytes));
    return done;
}

}  // namespace modelfs::fetch::detail
