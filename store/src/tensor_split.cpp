// Tensor-level deduplication: cutting model files into pieces, composing blobs from pieces the
// store already holds, materialising composed blobs (FORMAT.md "Composed blobs").
#include "modelfs/store/tensor_split.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "chunk_pipeline.h"
#include "modelfs/store/errors.h"
#include "modelfs/store/gguf.h"
#include "modelfs/store/safetensors.h"
#include "modelfs/store/tensor_map.h"
#include "modelfs/store/units.h"
#include "store_impl.h"

namespace modelfs {
namespace stdfs = std::filesystem;

namespace {

constexpr std::size_t kIoChunk = 4 << 20;

bool pread_all(int fd, char* buf, std::size_t n, std::uint64_t off) {
    while (n > 0) {
        ssize_t r = ::pread(fd, buf, n, static_cast<off_t>(off));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return false;
        buf += r;
        n -= static_cast<std::size_t>(r);
        off += static_cast<std::uint64_t>(r);
    }
    return true;
}

void write_all(int fd, const char* buf, std::size_t n, const stdfs::path& path) {
    while (n > 0) {
        ssize_t w = ::write(fd, buf, n);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) throw_errno("writing " + path.string(), errno);
        buf += w;
        n -= static_cast<std::size_t>(w);
    }
}

// Tensor byte ranges (absolute offset, length) and where the header ends, for safetensors.
bool safetensors_ranges(int fd, std::uint64_t size, std::uint64_t* header_end,
                        std::vector<std::pair<std::uint64_t, std::uint64_t>>* ranges) {
    SafetensorsInfo info;
    try {
        info = read_safetensors_header(fd, size);  // checks every offset against the size
    } catch (const SafetensorsError&) {
        return false;
    }
    std::string header(info.header_len, '\0');
    if (!pread_all(fd, header.data(), header.size(), 8)) return false;
    const auto j = nlohmann::json::parse(header, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object()) return false;
    *header_end = info.data_offset();
    for (const auto& [name, t] : j.items()) {
        if (name == "__metadata__" || !t.is_object() || !t.contains("data_offsets")) continue;
        const auto& o = t["data_offsets"];
        if (!o.is_array() || o.size() != 2 || !o[0].is_number_unsigned() ||
            !o[1].is_number_unsigned())
            return false;
        const auto b = o[0].get<std::uint64_t>(), e = o[1].get<std::uint64_t>();
        if (e < b || e > size - *header_end) return false;
        ranges->push_back({*header_end + b, e - b});
    }
    return true;
}

// Cuts [header_end, size) at the tensors' boundaries (see kMinTensorPiece, kSmallRunBytes).
std::vector<Piece> cut(std::uint64_t header_end, std::uint64_t size,
                       std::vector<std::pair<std::uint64_t, std::uint64_t>> ranges) {
    std::vector<Piece> out;
    // A GGUF without tensors may align its data section past its end: nothing to cut then.
    if (header_end == 0 || header_end > size) return out;
    out.push_back({0, header_end, false});
    std::sort(ranges.begin(), ranges.end());
    std::uint64_t pos = header_end;
    std::optional<std::uint64_t> run;  // start of the pending run of small pieces, ending at pos
    auto flush = [&] {
        if (run && pos > *run) out.push_back({*run, pos - *run, false});
        run.reset();
    };
    auto extend = [&](std::uint64_t end) {
        if (!run) run = pos;
        pos = end;
        if (pos - *run >= kSmallRunBytes) flush();
    };
    for (const auto& [b, len] : ranges) {
        if (len == 0) continue;
        const std::uint64_t end = b + len;
        if (end <= pos) continue;  // inside what is cut already (aliased tensors)
        if (b < pos) {             // overlaps: never cut inside a tensor
            extend(end);
            continue;
        }
        if (b > pos) extend(b);  // a gap: padding, or bytes no tensor names
        if (len >= kMinTensorPiece) {
            flush();
            out.push_back({b, len, true});
            pos = end;
        } else {
            extend(end);
        }
    }
    if (pos < size) extend(size);
    flush();
    return out;
}

std::string env_value(const char* name) {
    const char* v = std::getenv(name);
    return v ? v : "";
}

bool composing_enabled() {
    const std::string v = env_value("MODELFS_TENSOR_DEDUP");
    return v != "0" && v != "off" && v != "no" && v != "false";
}

constexpr const char* kBudgetKey = "tensors/materialise_budget";
constexpr std::uint64_t kDefaultBudget = 8ull << 30;

// Blobs some composed record's extents read, with how many records use each.
std::map<Sha256, std::size_t> extent_sources(const Txn& txn) {
    std::map<Sha256, std::size_t> used;
    txn.for_each_blob([&](const Sha256&, const BlobRecord& r) {
        std::set<Sha256> mine;
        for (const auto& e : r.extents) mine.insert(e.blob);
        for (const auto& b : mine) ++used[b];
    });
    return used;
}

}  // namespace

std::vector<Piece> model_file_pieces(int fd, std::uint64_t size) {
    std::uint64_t header_end = 0;
    std::vector<std::pair<std::uint64_t, std::uint64_t>> ranges;
    if (safetensors_ranges(fd, size, &header_end, &ranges)) return cut(header_end, size, ranges);
    ranges.clear();
    try {
        if (auto g = read_gguf_header(fd, size, &ranges))
            return cut(g->data_offset, size, std::move(ranges));
    } catch (const GgufError&) {
    }
    return {};
}

std::size_t read_extents(const std::vector<Extent>& extents, const std::vector<int>& fds,
                         std::uint64_t offset, char* buf, std::size_t length) {
    std::size_t done = 0;
    std::uint64_t start = 0;
    for (std::size_t i = 0; i < extents.size() && done < length; ++i) {
        const Extent& e = extents[i];
        const std::uint64_t end = start + e.length;
        if (offset + done < end) {
            const std::uint64_t in = offset + done - start;
            const std::size_t n =
                static_cast<std::size_t>(std::min<std::uint64_t>(e.length - in, length - done));
            if (!pread_all(fds.at(i), buf + done, n, e.offset + in))
                throw StoreError(ErrorKind::io, "reading " + std::to_string(n) + " bytes of blob " +
                                                    e.blob.hex() + " at " +
                                                    std::to_string(e.offset + in) +
                                                    " failed or ended early");
            done += n;
        }
        start = end;
    }
    return done;
}

// Opens the source blobs of a composed record, one descriptor per extent (shared where extents
// share a blob). Throws StoreError naming a missing source.
struct ExtentFiles {
    std::map<Sha256, UniqueFd> open;
    std::vector<int> fds;
};
static ExtentFiles open_extents(Store::Impl& s, const Sha256& h, const BlobRecord& rec) {
    ExtentFiles f;
    for (const auto& e : rec.extents) {
        auto it = f.open.find(e.blob);
        if (it == f.open.end()) {
            UniqueFd fd = s.blobs.open_blob(e.blob);
            if (!fd)
                throw StoreError(ErrorKind::corrupt,
                                 "composed blob " + h.hex() + " needs blob " + e.blob.hex() +
                                     ", whose file cannot be opened (" + std::strerror(errno) +
                                     "); run `modelfs verify`");
            it = f.open.emplace(e.blob, std::move(fd)).first;
        }
        f.fds.push_back(it->second.get());
    }
    return f;
}

FileDigests Store::digest_composed(const Sha256& h, const BlobRecord& rec, int out_fd,
                                   Progress* progress, std::uint64_t from) {
    ExtentFiles files = open_extents(*impl_, h, rec);
    Sha256Hasher sha;
    Xxh128Hasher xxh;
    std::vector<char> buf(kIoChunk);
    std::uint64_t off = from;
    while (off < rec.size) {
        const std::size_t want =
            static_cast<std::size_t>(std::min<std::uint64_t>(buf.size(), rec.size - off));
        const std::size_t got = read_extents(rec.extents, files.fds, off, buf.data(), want);
        if (got != want)
            throw StoreError(ErrorKind::corrupt,
                             "composed blob " + h.hex() + ": its extents end before its size");
        sha.update(buf.data(), got);
        xxh.update(buf.data(), got);
        if (out_fd >= 0) write_all(out_fd, buf.data(), got, "a staging file");
        add_progress(progress, got);
        off += got;
    }
    return FileDigests{sha.finish(), xxh.finish(), rec.size - std::min(from, rec.size)};
}

namespace {

// How one file (open as `fd`, of `size` bytes, whose SHA-256 is `h`) shares pieces with stored
// blobs: its pieces, their XXH3-128, and for each the stored place that holds the same bytes.
struct SharePlan {
    std::vector<Piece> pieces;
    std::vector<Xxh128> sums;
    std::vector<std::optional<TensorPlace>> found;
    std::uint64_t shared = 0;
    bool used_by_composed = false;  // composed blobs read from `h`: it is never composed itself
};

// Each piece's XXH3-128, in one sequential read.
std::vector<Xxh128> piece_sums(int fd, const std::vector<Piece>& pieces, const Sha256& h) {
    std::vector<Xxh128> sums(pieces.size());
    std::vector<char> buf(kIoChunk);
    for (std::size_t i = 0; i < pieces.size(); ++i) {
        Xxh128Hasher x;
        for (std::uint64_t done = 0; done < pieces[i].length;) {
            const std::size_t n = static_cast<std::size_t>(
                std::min<std::uint64_t>(buf.size(), pieces[i].length - done));
            if (!pread_all(fd, buf.data(), n, pieces[i].offset + done))
                throw_errno("reading the file of " + h.hex(), errno ? errno : EIO);
            x.update(buf.data(), n);
            done += n;
        }
        sums[i] = x.finish();
    }
    return sums;
}

// Candidates from the index, then byte-compared: the index is a hint (XXH3 is no proof, and a
// place may be stale).
void find_shared(Store::Impl& s, int fd, const Sha256& h, SharePlan& plan) {
    plan.found.assign(plan.pieces.size(), std::nullopt);
    plan.shared = 0;
    {
        auto txn = s.catalog.read();
        plan.used_by_composed = extent_sources(txn).count(h) > 0;
        for (std::size_t i = 1; i < plan.pieces.size(); ++i) {
            auto place = txn.get_tensor(plan.sums[i], plan.pieces[i].length);
            if (!place || place->blob == h) continue;
            auto src = txn.get_blob(place->blob);
            if (!src || src->state != BlobState::present || src->composed() ||
                place->offset + plan.pieces[i].length > src->size)
                continue;
            plan.found[i] = place;
        }
    }
    std::map<Sha256, UniqueFd> sources;
    std::vector<char> a(kIoChunk), b(kIoChunk);
    for (std::size_t i = 1; i < plan.pieces.size(); ++i) {
        if (!plan.found[i]) continue;
        auto it = sources.find(plan.found[i]->blob);
        if (it == sources.end())
            it = sources.emplace(plan.found[i]->blob, s.blobs.open_blob(plan.found[i]->blob)).first;
        bool same = static_cast<bool>(it->second);
        for (std::uint64_t done = 0; same && done < plan.pieces[i].length;) {
            const std::size_t n = static_cast<std::size_t>(
                std::min<std::uint64_t>(a.size(), plan.pieces[i].length - done));
            same = pread_all(fd, a.data(), n, plan.pieces[i].offset + done) &&
                   pread_all(it->second.get(), b.data(), n, plan.found[i]->offset + done) &&
                   std::memcmp(a.data(), b.data(), n) == 0;
            done += n;
        }
        if (same)
            plan.shared += plan.pieces[i].length;
        else
            plan.found[i].reset();
    }
}

// Indexes the pieces nothing matched at offsets `at` of blob `in`, and keeps the file's tensor
// map (push carries it; a download of it elsewhere starts from stored pieces).
void index_pieces(Txn& txn, const Sha256& h, std::uint64_t size, const SharePlan& plan,
                  const Sha256& in, const std::vector<std::uint64_t>& at) {
    std::vector<PieceSum> map;
    for (std::size_t i = 0; i < plan.pieces.size(); ++i)
        map.push_back({plan.sums[i], plan.pieces[i].length});
    put_tensor_map(txn, h, size, map);
    for (std::size_t i = 1; i < plan.pieces.size(); ++i) {
        if (plan.found[i] || plan.pieces[i].length < kMinTensorPiece) continue;
        auto old = txn.get_tensor(plan.sums[i], plan.pieces[i].length);
        if (old && old->blob != h) {
            auto r = txn.get_blob(old->blob);
            if (r && r->state == BlobState::present && !r->composed()) continue;
        }
        txn.put_tensor(plan.sums[i], plan.pieces[i].length, TensorPlace{in, at[i]});
    }
}

std::vector<std::uint64_t> own_offsets(const SharePlan& plan) {
    std::vector<std::uint64_t> at(plan.pieces.size());
    for (std::size_t i = 0; i < plan.pieces.size(); ++i) at[i] = plan.pieces[i].offset;
    return at;
}

// Why a file is not composed ("" when it is to be).
std::string why_not_compose(const SharePlan& plan) {
    if (plan.used_by_composed) return "composed blobs use its bytes";
    if (plan.shared < kMinSharedBytes)
        return "shares " + human_bytes(plan.shared) + " with stored blobs, below " +
               human_bytes(kMinSharedBytes);
    if (!composing_enabled()) return "MODELFS_TENSOR_DEDUP is off";
    return "";
}

}  // namespace

// Writes the pieces of `fd` nothing matched to a new `pieces` blob, then in one transaction the
// composed record of `h` (`rec`, whose extents this sets) and the index. `replacing`: `h` is a
// stored whole blob (a split), which must still be one; otherwise `h` must not be present yet (an
// ingest). False (nothing catalogued; the pieces file is an orphan for gc) when that no longer
// holds or a source went away meanwhile.
static bool write_composed(Store::Impl& s, int fd, const Sha256& h, BlobRecord rec,
                           const SharePlan& plan, bool replacing, SplitReport& rep) {
    StagingFile staged = s.blobs.make_staging(".pieces");
    std::vector<std::uint64_t> at(plan.pieces.size());  // new pieces' offsets in the pieces blob
    Sha256Hasher sha;
    Xxh128Hasher xxh;
    {
        std::vector<char> buf(kIoChunk);
        std::uint64_t out = 0;
        for (std::size_t i = 0; i < plan.pieces.size(); ++i) {
            if (plan.found[i]) continue;
            at[i] = out;
            for (std::uint64_t done = 0; done < plan.pieces[i].length;) {
                const std::size_t n = static_cast<std::size_t>(
                    std::min<std::uint64_t>(buf.size(), plan.pieces[i].length - done));
                if (!pread_all(fd, buf.data(), n, plan.pieces[i].offset + done))
                    throw_errno("reading the file of " + h.hex(), errno ? errno : EIO);
                write_all(staged.fd(), buf.data(), n, staged.path());
                sha.update(buf.data(), n);
                xxh.update(buf.data(), n);
                done += n;
            }
            out += plan.pieces[i].length;
        }
        rep.new_bytes = out;
    }
    const Sha256 pieces_sha = sha.finish();
    const Xxh128 pieces_xxh = xxh.finish();
    if (::fchmod(staged.fd(), 0444) != 0 || ::fsync(staged.fd()) != 0)
        throw_errno("syncing " + staged.path().string(), errno);

    std::vector<Extent> extents;
    for (std::size_t i = 0; i < plan.pieces.size(); ++i) {
        Extent e = plan.found[i]
                       ? Extent{plan.found[i]->blob, plan.found[i]->offset, plan.pieces[i].length}
                       : Extent{pieces_sha, at[i], plan.pieces[i].length};
        if (!extents.empty() && extents.back().blob == e.blob &&
            extents.back().offset + extents.back().length == e.offset)
            extents.back().length += e.length;
        else
            extents.push_back(e);
    }
    s.blobs.publish(staged, pieces_sha, rep.new_bytes);

    auto txn = s.catalog.write();
    auto cur = txn.get_blob(h);
    if (replacing ? (!cur || cur->state != BlobState::present || cur->composed())
                  : (cur && cur->state == BlobState::present))
        return false;
    for (const auto& e : extents) {
        if (e.blob == pieces_sha) continue;
        auto src = txn.get_blob(e.blob);
        if (!src || src->state != BlobState::present || src->composed()) return false;
    }
    auto prec = txn.get_blob(pieces_sha);
    if (!prec || prec->state != BlobState::present) {
        BlobRecord p;
        p.size = rep.new_bytes;
        p.state = BlobState::present;
        p.xxh128 = pieces_xxh;
        p.pieces = true;
        p.ingested = p.accessed = unix_now();
        p.seen = s.blobs.stat_of(pieces_sha);
        txn.put_blob(pieces_sha, p);
    }
    if (replacing) rec = *cur;
    if (cur && !replacing) {  // a remote or partial record of the same content: keep what it knows
        BlobRecord keep = *cur;
        keep.state = BlobState::present;
        keep.size = rec.size;
        keep.xxh128 = rec.xxh128;
        keep.safetensors_header_len = rec.safetensors_header_len;
        keep.ingested = rec.ingested;
        keep.accessed = rec.accessed;
        keep.unverified = false;
        rec = keep;
    }
    rec.extents = extents;
    rec.seen.reset();
    txn.put_blob(h, rec);
    index_pieces(txn, h, rec.size, plan, pieces_sha, at);
    txn.commit();
    rep.composed = true;
    rep.extents = extents.size();
    return true;
}

SplitReport Store::split_tensors(const Sha256& h, bool dry_run) {
    SplitReport rep;
    rep.blob = h;
    // Shared: gc (exclusive) cannot remove the blobs this split is about to use, nor the pieces
    // blob between its publication and the commit.
    StoreLock lock(impl_->root, StoreLock::shared);
    std::optional<BlobRecord> rec = impl_->catalog.read().get_blob(h);
    auto not_composed = [&](std::string why) {
        rep.why_not = std::move(why);
        return rep;
    };
    if (!rec || rec->state != BlobState::present) return not_composed("not present");
    rep.size = rec->size;
    if (rec->composed()) {
        rep.composed = true;
        return not_composed("composed already");
    }
    if (rec->pieces) return not_composed("a pieces blob");
    if (rec->placeholder) return not_composed("a placeholder");
    UniqueFd fd = impl_->blobs.open_blob(h);
    if (!fd) return not_composed("its file cannot be opened");
    SharePlan plan;
    plan.pieces = model_file_pieces(fd.get(), rec->size);
    rep.pieces = plan.pieces.size();
    if (plan.pieces.size() < 2) return not_composed("not a safetensors or GGUF file");
    plan.sums = piece_sums(fd.get(), plan.pieces, h);
    find_shared(*impl_, fd.get(), h, plan);
    rep.shared_bytes = plan.shared;
    rep.new_bytes = rec->size - plan.shared;

    const std::string why = why_not_compose(plan);
    if (!why.empty() || dry_run) {
        if (!dry_run) {
            auto txn = impl_->catalog.write();
            index_pieces(txn, h, rec->size, plan, h, own_offsets(plan));
            txn.commit();
        }
        return not_composed(why.empty() ? "dry run" : why);
    }
    if (!write_composed(*impl_, fd.get(), h, *rec, plan, /*replacing=*/true, rep)) {
        rep.composed = false;
        return not_composed("changed while it was being split");
    }
    // The whole file is not needed any more (an open descriptor keeps reading it). A crash before
    // this unlink leaves it as a materialised copy, which is just as valid.
    impl_->blobs.remove(h);
    spdlog::info("blob {} stored as {} extents: {} shared with stored blobs, {} new",
                 h.hex().substr(0, 12), rep.extents, human_bytes(rep.shared_bytes),
                 human_bytes(rep.new_bytes));
    return rep;
}

std::optional<ComposedIngest> ingest_composed(Store::Impl& s, int src, const std::string& name,
                                              Progress* progress) {
    if (!composing_enabled()) return std::nullopt;
    struct stat before;
    if (::fstat(src, &before) != 0) throw_errno("reading " + name, errno);
    const auto size = static_cast<std::uint64_t>(before.st_size);
    if (!S_ISREG(before.st_mode) || size < 2 * kMinSharedBytes) return std::nullopt;
    SharePlan plan;
    plan.pieces = model_file_pieces(src, size);
    if (plan.pieces.size() < 2) return std::nullopt;
    // A cheap look first: a few of its bigger tensors, spread over the file. None of them stored:
    // the file is copied whole as usual (it is indexed after that, for later files).
    {
        std::vector<std::size_t> big;
        for (std::size_t i = 1; i < plan.pieces.size(); ++i)
            if (plan.pieces[i].tensor) big.push_back(i);
        const std::size_t step = std::max<std::size_t>(1, big.size() / 8);
        std::vector<Piece> sample;
        for (std::size_t k = 0; k < big.size(); k += step) sample.push_back(plan.pieces[big[k]]);
        const std::vector<Xxh128> sums = piece_sums(src, sample, Sha256{});
        auto txn = s.catalog.read();
        bool hit = false;
        for (std::size_t k = 0; k < sample.size() && !hit; ++k)
            hit = txn.get_tensor(sums[k], sample[k].length).has_value();
        if (!hit) return std::nullopt;
    }
    // One pass: the whole file's SHA-256 on a worker, its XXH3-128 and each piece's here.
    Sha256Hasher sha;
    Xxh128Hasher whole;
    plan.sums.resize(plan.pieces.size());
    std::size_t pi = 0;
    std::uint64_t pos = 0;
    std::optional<Xxh128Hasher> cur;
    const std::uint64_t read = read_chunks(
        src, 0,
        [&](std::span<const std::byte> c) {
            whole.update(c.data(), c.size());
            std::size_t off = 0;
            while (off < c.size() && pi < plan.pieces.size()) {
                if (!cur) cur.emplace();
                const std::uint64_t end = plan.pieces[pi].offset + plan.pieces[pi].length;
                const std::size_t n =
                    static_cast<std::size_t>(std::min<std::uint64_t>(c.size() - off, end - pos));
                cur->update(c.data() + off, n);
                off += n;
                pos += n;
                if (pos == end) {
                    plan.sums[pi++] = cur->finish();
                    cur.reset();
                }
            }
        },
        [&](std::span<const std::byte> c) { sha.update(c.data(), c.size()); }, progress,
        name.c_str());
    struct stat after;
    if (::fstat(src, &after) != 0) throw_errno("reading " + name, errno);
    if (read != size || pi != plan.pieces.size() ||
        static_cast<std::uint64_t>(after.st_size) != size ||
        after.st_mtim.tv_sec != before.st_mtim.tv_sec ||
        after.st_mtim.tv_nsec != before.st_mtim.tv_nsec)
        throw StoreError(ErrorKind::bad_input,
                         name + " changed while it was being imported; import it again");
    ComposedIngest out;
    out.ingested.digests = {sha.finish(), whole.finish(), size};
    const Sha256& h = out.ingested.digests.sha256;
    out.split.blob = h;
    out.split.size = size;
    out.split.pieces = plan.pieces.size();
    if (auto r = s.catalog.read().get_blob(h); r && r->state == BlobState::present) {
        out.ingested.stored_new = false;  // stored already, whole or composed
        return out;
    }
    find_shared(s, src, h, plan);
    out.split.shared_bytes = plan.shared;
    if (!why_not_compose(plan).empty()) return std::nullopt;
    BlobRecord rec;
    rec.size = size;
    rec.state = BlobState::present;
    rec.xxh128 = out.ingested.digests.xxh128;
    try {
        rec.safetensors_header_len = read_safetensors_header(src, size).header_len;
    } catch (const SafetensorsError&) {
        rec.safetensors_header_len = 0;  // GGUF
    }
    rec.ingested = rec.accessed = unix_now();
    if (!write_composed(s, src, h, rec, plan, /*replacing=*/false, out.split)) {
        // Stored meanwhile by someone else (whole or composed): the same content is there.
        if (auto r = s.catalog.read().get_blob(h); r && r->state == BlobState::present) {
            out.ingested.stored_new = false;
            out.split = SplitReport{};
            return out;
        }
        return std::nullopt;
    }
    out.ingested.stored_new = true;
    spdlog::info("{}: stored as {} extents: {} shared with stored blobs, {} new", name,
                 out.split.extents, human_bytes(out.split.shared_bytes),
                 human_bytes(out.split.new_bytes));
    return out;
}

std::uint64_t Store::materialise_budget() {
    auto v = impl_->catalog.read().get_meta(kBudgetKey);
    if (!v) return kDefaultBudget;
    try {
        return std::stoull(*v);
    } catch (const std::exception&) {
        return kDefaultBudget;
    }
}

void Store::set_materialise_budget(std::uint64_t bytes) {
    auto txn = impl_->catalog.write();
    txn.put_meta(kBudgetKey, std::to_string(bytes));
    txn.commit();
}

bool Store::drop_materialised(const Sha256& h) {
    StoreLock lock(impl_->root, StoreLock::shared);
    auto rec = impl_->catalog.read().get_blob(h);
    if (!rec || !rec->composed()) return false;
    UniqueFd fd = impl_->blobs.open_blob(h);
    if (!fd) return false;
    // Like eviction: never a copy some reader (a mount holds LOCK_SH) has open.
    if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) return false;
    {
        auto txn = impl_->catalog.write();
        if (auto cur = txn.get_blob(h); cur && cur->composed()) {
            cur->seen.reset();
            txn.put_blob(h, *cur);
        }
        txn.commit();
    }
    impl_->blobs.remove(h);
    return true;
}

MaterialiseResult Store::materialise(const Sha256& h, bool within_budget) {
    MaterialiseResult res;
    StoreLock lock(impl_->root, StoreLock::shared);
    auto rec = impl_->catalog.read().get_blob(h);
    if (!rec || !rec->composed() || rec->state != BlobState::present) {
        res.why_not = "not a composed blob";
        return res;
    }
    res.size = rec->size;
    if (impl_->blobs.exists(h)) {
        res.already = true;
        return res;
    }
    if (within_budget) {
        const std::uint64_t budget = materialise_budget();
        if (rec->size > budget) {
            res.why_not = "it is larger than the materialise budget (" + human_bytes(budget) + ")";
            return res;
        }
        // Least recently used copies go first, until this one fits.
        std::vector<std::pair<std::int64_t, std::pair<Sha256, std::uint64_t>>> copies;
        std::uint64_t used = 0;
        impl_->catalog.read().for_each_blob([&](const Sha256& b, const BlobRecord& r) {
            if (!r.composed() || !impl_->blobs.exists(b)) return;
            copies.push_back({r.accessed, {b, r.size}});
            used += r.size;
        });
        std::sort(copies.begin(), copies.end());
        for (const auto& [acc, c] : copies) {
            if (used + rec->size <= budget) break;
            if (drop_materialised(c.first)) {
                used -= c.second;
                res.dropped.push_back(c.first);
            }
        }
        if (used + rec->size > budget) {
            res.why_not =
                "the materialise budget (" + human_bytes(budget) + ") is taken by copies in use";
            return res;
        }
    }
    StagingFile staged = impl_->blobs.make_staging(".materialise");
    if (rec->size > 0 && ::posix_fallocate(staged.fd(), 0, static_cast<off_t>(rec->size)) != 0)
        throw StoreError(ErrorKind::io, "no room to materialise blob " + h.hex() + " (" +
                                            human_bytes(rec->size) + ")");
    const FileDigests d = digest_composed(h, *rec, staged.fd(), nullptr);
    if (d.sha256 != h)
        throw StoreError(ErrorKind::corrupt, "composed blob " + h.hex() +
                                                 " rebuilds to other bytes (" + d.sha256.hex() +
                                                 "); run `modelfs verify`");
    if (::fchmod(staged.fd(), 0444) != 0 || ::fsync(staged.fd()) != 0)
        throw_errno("syncing " + staged.path().string(), errno);
    impl_->blobs.publish(staged, h, rec->size);
    auto txn = impl_->catalog.write();
    if (auto cur = txn.get_blob(h); cur && cur->composed()) {
        cur->seen = impl_->blobs.stat_of(h);
        cur->accessed = unix_now();
        txn.put_blob(h, *cur);
    }
    txn.commit();
    res.materialised = true;
    return res;
}

StorageInfo Store::storage_info(const Sha256& h) {
    StorageInfo info;
    auto txn = impl_->catalog.read();
    auto rec = txn.get_blob(h);
    if (!rec) return info;
    info.size = rec->size;
    if (!rec->composed()) {
        info.own_bytes = rec->size;
        info.used_by_composed = 0;
        txn.for_each_blob([&](const Sha256&, const BlobRecord& r) {
            for (const auto& e : r.extents)
                if (e.blob == h) {
                    ++info.used_by_composed;
                    break;
                }
        });
        return info;
    }
    info.how = impl_->blobs.exists(h) ? StorageInfo::How::materialised : StorageInfo::How::composed;
    info.extents = rec->extents.size();
    // Its own pieces blob holds its header, which is never shared: the first extent's.
    const Sha256 own = rec->extents.front().blob;
    std::map<Sha256, std::uint64_t> per_blob;
    for (const auto& e : rec->extents) {
        if (e.blob == own)
            info.own_bytes += e.length;
        else
            per_blob[e.blob] += e.length;
    }
    // A blob stands for the models that use it, or whose composed files' pieces it holds.
    std::map<Sha256, std::set<Sha256>> pieces_of;  // pieces blob -> composed blobs it is part of
    txn.for_each_blob([&](const Sha256& b, const BlobRecord& r) {
        if (r.composed() && b != h) pieces_of[r.extents.front().blob].insert(b);
    });
    std::map<std::string, std::uint64_t> per_model;
    txn.for_each_model([&](const Model& m) {
        std::set<Sha256> mine;
        for (const auto& v : m.versions)
            for (const auto& b : v.blobs()) {
                if (per_blob.count(b)) mine.insert(b);
                for (const auto& [p, owners] : pieces_of)
                    if (owners.count(b) && per_blob.count(p)) mine.insert(p);
            }
        std::uint64_t n = 0;
        for (const auto& b : mine) n += per_blob[b];
        if (n) per_model[m.key()] = n;
    });
    for (const auto& [b, n] : per_blob) info.shared_bytes += n;
    info.shared_with.assign(per_model.begin(), per_model.end());
    return info;
}

}  // namespace modelfs
