// verify and gc: checking stored bytes against their hashes, and removing what nothing uses.
#include <fcntl.h>
#include <sys/stat.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <set>
#include <thread>

#include <spdlog/spdlog.h>

#include "modelfs/store/tensor_map.h"
#include "store_impl.h"

namespace stdfs = std::filesystem;

namespace modelfs {

VerifyReport Store::verify(bool fast, unsigned jobs, Progress* progress) {
    VerifyReport rep;
    std::vector<std::pair<Sha256, BlobRecord>> records;
    std::set<Sha256> known, evicted;
    {
        auto txn = impl_->catalog.read();
        // Only present blobs have bytes here to check; remote and partial ones are downloaded
        // (and verified) when used, so their missing files are not problems.
        txn.for_each_blob([&](const Sha256& h, const BlobRecord& r) {
            known.insert(h);
            if (r.state == BlobState::present) records.emplace_back(h, r);
            if (r.state == BlobState::remote) evicted.insert(h);
        });
        txn.for_each_model([&](const Model& m) {
            for (const auto& v : m.versions)
                for (const auto& b : v.blobs())
                    if (!known.count(b))
                        rep.problems.push_back({"dangling",
                                                m.key() + "@" + v.label + " refers to blob " +
                                                    b.hex() + ", which the catalog does not know",
                                                b});
        });
    }
    // Biggest first so the pool finishes together.
    std::sort(records.begin(), records.end(),
              [](const auto& a, const auto& b) { return a.second.size > b.second.size; });
    if (progress) {
        for (const auto& [h, r] : records) progress->total_bytes += r.size;
        progress->total_items += records.size();
    }

    std::mutex mu;
    std::vector<std::pair<Sha256, std::string>> corrupt;
    std::vector<std::pair<Sha256, Xxh128>> verified;   // unverified blobs that matched
    std::vector<std::pair<Sha256, BlobStat>> restamp;  // hashed, matched, stat not recorded
    std::atomic<std::size_t> next{0};
    auto check_one = [&](const Sha256& h, const BlobRecord& r) {
        stdfs::path p = impl_->blobs.path_of(h);
        if (r.composed()) {
            // Its bytes are its extents' (each source blob is checked as a blob of its own):
            // they must rebuild the file's SHA-256. A materialised copy is checked below too.
            const FileDigests d = digest_composed(h, r, -1, progress);
            std::string why;
            if (d.sha256 != h)
                why = "its extents rebuild to SHA-256 " + d.sha256.hex();
            else if (r.xxh128 && d.xxh128 != *r.xxh128)
                why = "its extents rebuild to another XXH3-128";
            std::lock_guard lk(mu);
            if (!why.empty())
                rep.problems.push_back({"corrupt", "composed blob " + h.hex() + ": " + why, h});
            if (!impl_->blobs.exists(h)) {
                rep.blobs_checked++;
                rep.bytes_checked += r.size;
                return;
            }
        }
        UniqueFd fd = impl_->blobs.open_blob(h);
        if (!fd) {
            std::lock_guard lk(mu);
            rep.problems.push_back({"missing", p.string() + " is gone", h});
            return;
        }
        struct stat st;
        if (::fstat(fd.get(), &st) != 0 || static_cast<std::uint64_t>(st.st_size) != r.size) {
            std::lock_guard lk(mu);
            corrupt.emplace_back(h, "has " + std::to_string(st.st_size) + " bytes, expected " +
                                        std::to_string(r.size));
            return;
        }
        std::string bad;
        const BlobStat before = BlobStore::stat_stamp(st);
        const bool stat_ok = r.seen && *r.seen == before;
        bool hashed = false;
        // A blob taken on its name's word has no XXH3 to compare with: --fast reads it in full.
        // So does one whose stat moved since it was stored: XXH3 catches bit rot, but is no
        // proof against whoever touched the file.
        if (fast && r.xxh128 && !r.unverified && stat_ok) {
            if (xxh128_fd(fd.get(), progress, p.c_str()) != *r.xxh128)
                bad = "XXH3-128 does not match";
        } else {
            hashed = true;
            FileDigests d = digest_fd(fd.get(), progress, p.c_str());
            if (d.sha256 != h)
                bad = "SHA-256 is " + d.sha256.hex() +
                      (r.unverified ? " (it was stored under the name its source gave)" : "");
            else if (r.xxh128 && d.xxh128 != *r.xxh128)
                bad = "XXH3-128 does not match";
            else if (r.unverified) {
                std::lock_guard lk(mu);
                verified.emplace_back(h, d.xxh128);
            }
        }
        struct stat after;
        if (bad.empty() && hashed && !stat_ok && ::fstat(fd.get(), &after) == 0 &&
            BlobStore::stat_stamp(after) == before) {
            std::lock_guard lk(mu);
            restamp.emplace_back(h, before);
        }
        std::lock_guard lk(mu);
        rep.blobs_checked++;
        rep.bytes_checked += r.size;
        if (!bad.empty()) corrupt.emplace_back(h, bad);
    };
    auto worker = [&] {
        for (std::size_t k; (k = next.fetch_add(1)) < records.size();) {
            try {
                check_one(records[k].first, records[k].second);
            } catch (const std::exception& e) {
                std::lock_guard lk(mu);
                rep.problems.push_back({"unreadable", e.what(), records[k].first});
            }
            if (progress) progress->done_items += 1;
        }
    };
    {
        unsigned n = jobs ? jobs : std::max(1u, std::thread::hardware_concurrency());
        std::vector<std::jthread> pool;
        for (unsigned i = 1; i < std::min<std::size_t>(n, records.size()); ++i)
            pool.emplace_back(worker);
        worker();
    }

    // Matched: the flag goes and the record gains the XXH3 that --fast compares from now on;
    // blobs hashed in full get the stat they matched with.
    if (!verified.empty() || !restamp.empty()) {
        auto txn = impl_->catalog.write();
        for (const auto& [h, x] : verified) {
            auto r = txn.get_blob(h);
            if (!r || !r->unverified) continue;
            r->unverified = false;
            r->xxh128 = x;
            txn.put_blob(h, *r);
            ++rep.newly_verified;
        }
        for (const auto& [h, seen] : restamp) {
            auto r = txn.get_blob(h);
            if (!r || r->state != BlobState::present || r->seen == seen) continue;
            r->seen = seen;
            txn.put_blob(h, *r);
        }
        txn.commit();
    }

    // Corrupt bytes are never served again and never silently deleted: they move to quarantine/
    // and the record says so, until the user re-imports the model (or a source re-fetches it).
    for (const auto& [h, why] : corrupt) {
        std::string detail = impl_->blobs.path_of(h).string() + ": " + why;
        try {
            stdfs::path q = quarantine_blob(*impl_, h);
            detail += "; moved to " + q.string();
            spdlog::error("blob {} is corrupt ({}); moved to {}", h.hex(), why, q.string());
        } catch (const std::exception& e) {
            detail += std::string("; could not quarantine it: ") + e.what();
        }
        rep.problems.push_back({"corrupt", detail, h});
    }

    impl_->blobs.for_each_file([&](const std::optional<Sha256>& h, const stdfs::path& p,
                                   std::uint64_t) {
        if (!h || !known.count(*h))
            rep.notes.push_back("orphan file " + p.string() + " (not catalogued; gc removes it)");
        else if (evicted.count(*h))
            rep.notes.push_back("file " + p.string() +
                                " of a blob catalogued as remote (an interrupted eviction; "
                                "gc removes it)");
    });
    return rep;
}

stdfs::path quarantine_blob(Store::Impl& s, const Sha256& h) {
    stdfs::path q = s.blobs.quarantine(h);
    auto txn = s.catalog.write();
    if (auto r = txn.get_blob(h)) {
        r->state = BlobState::quarantined;
        r->unverified = false;  // read, and found wrong
        r->seen.reset();
        txn.put_blob(h, *r);
    }
    txn.commit();
    return q;
}

void settle_unverified(Store::Impl& s, const Sha256& h) {
    auto rec = s.catalog.read().get_blob(h);
    if (!rec || rec->state != BlobState::present || !rec->unverified) return;
    const stdfs::path p = s.blobs.path_of(h);
    UniqueFd fd = s.blobs.open_blob(h);
    if (!fd) return;  // gone: publishing puts the caller's bytes there
    struct stat st;
    if (::fstat(fd.get(), &st) != 0) throw_errno("reading " + p.string(), errno);
    const FileDigests d = digest_fd(fd.get(), nullptr, p.c_str());
    const bool ok = d.sha256 == h && d.size == rec->size;
    if (!ok) {
        stdfs::path q = quarantine_blob(s, h);
        spdlog::error(
            "blob {} was stored under a name its content does not match (SHA-256 {}); "
            "moved to {} and replaced by content that matches",
            h.hex(), d.sha256.hex(), q.string());
        return;
    }
    auto txn = s.catalog.write();
    auto r = txn.get_blob(h);
    if (!r) return;
    r->unverified = false;
    r->xxh128 = d.xxh128;
    r->seen = BlobStore::stat_stamp(st);
    txn.put_blob(h, *r);
    txn.commit();
}

namespace {
std::atomic<std::uint64_t> g_blob_rehashes{0};
std::mutex g_hashing_mu;
std::condition_variable g_hashing_cv;
std::set<Sha256> g_hashing;  // blobs check_blob is hashing now, in this process
}  // namespace

std::uint64_t Store::blob_rehashes() {
    return g_blob_rehashes.load();
}

Store::BlobCheck Store::check_blob(const Sha256& h, int fd) {
    struct stat st;
    if (::fstat(fd, &st) != 0) throw_errno("reading blob " + h.hex(), errno);
    const BlobStat before = BlobStore::stat_stamp(st);
    auto rec = impl_->catalog.read().get_blob(h);
    // Opened before another check moved it to quarantine/: still not to be served.
    if (rec && rec->state == BlobState::quarantined) return BlobCheck::quarantined;
    if (!rec || rec->state != BlobState::present) return BlobCheck::ok;
    if (rec->seen && *rec->seen == before && before.size == rec->size) return BlobCheck::ok;

    // One hash per blob at a time: a tool opening a big model from several threads waits for
    // the first check and then takes its answer from the record.
    {
        std::unique_lock lk(g_hashing_mu);
        if (g_hashing.count(h)) {
            g_hashing_cv.wait(lk, [&] { return !g_hashing.count(h); });
            lk.unlock();
            return check_blob(h, fd);
        }
        g_hashing.insert(h);
    }
    struct Done {
        const Sha256& h;
        ~Done() {
            std::lock_guard lk(g_hashing_mu);
            g_hashing.erase(h);
            g_hashing_cv.notify_all();
        }
    } done{h};

    ++g_blob_rehashes;
    const stdfs::path p = impl_->blobs.path_of(h);
    spdlog::info(
        "blob {} is not as it was stored (or was stored before modelfs recorded that); "
        "hashing it before serving it",
        h.hex());
    std::string bad;
    FileDigests d;
    if (before.size != rec->size) {
        bad =
            "has " + std::to_string(before.size) + " bytes, expected " + std::to_string(rec->size);
    } else {
        d = digest_fd(fd, nullptr, p.c_str());
        if (d.sha256 != h) bad = "SHA-256 is " + d.sha256.hex();
    }
    struct stat after;
    if (bad.empty() &&
        (::fstat(fd, &after) != 0 || after.st_ino != st.st_ino || after.st_size != st.st_size ||
         BlobStore::stat_stamp(after).mtime_ns != before.mtime_ns))
        bad = "changed while it was being hashed";
    if (bad.empty()) {
        auto txn = impl_->catalog.write();
        auto r = txn.get_blob(h);
        if (r && r->state == BlobState::present) {
            r->seen = before;
            if (r->unverified) {
                r->unverified = false;
                r->xxh128 = d.xxh128;
            }
            txn.put_blob(h, *r);
            txn.commit();
        }
        return BlobCheck::rehashed;
    }
    // Quarantine only the file this descriptor reads: the name may already hold good bytes
    // (published again after an earlier quarantine).
    struct stat named;
    if (::stat(p.c_str(), &named) == 0 && named.st_ino == st.st_ino && named.st_dev == st.st_dev) {
        try {
            stdfs::path q = quarantine_blob(*impl_, h);
            // The caller (the mount) says what to do; this says what happened.
            spdlog::warn("blob {} is corrupt ({}); moved to {}", h.hex(), bad, q.string());
        } catch (const std::exception& e) {
            spdlog::error("blob {} is corrupt ({}) and could not be quarantined: {}", h.hex(), bad,
                          e.what());
        }
    }
    return BlobCheck::quarantined;
}

bool Store::record_blob_stat(const Sha256& h) {
    auto now = impl_->blobs.stat_of(h);
    if (!now) return false;
    auto txn = impl_->catalog.write();
    auto r = txn.get_blob(h);
    if (!r || r->state != BlobState::present || !r->seen || *r->seen == *now) return false;
    // Only the ctime may have moved (a link or unlink of another name): anything else means the
    // bytes may have, and only a hash can vouch for them.
    if (r->seen->ino != now->ino || r->seen->size != now->size ||
        r->seen->mtime_ns != now->mtime_ns || now->size != r->size)
        return false;
    r->seen = *now;
    txn.put_blob(h, *r);
    txn.commit();
    return true;
}

GcReport Store::gc(bool dry_run) {
    GcReport rep;
    StoreLock lock(impl_->root, StoreLock::exclusive);
    std::set<Sha256> referenced, known, evicted;
    std::vector<std::pair<Sha256, BlobRecord>> unreferenced;
    {
        auto txn = impl_->catalog.read();
        txn.for_each_model([&](const Model& m) {
            for (const auto& v : m.versions)
                for (const auto& b : v.blobs()) referenced.insert(b);
        });
        // A used composed blob keeps every blob its extents read (sources are never composed,
        // so one level is all there is). References are counted per blob, each extent once.
        txn.for_each_blob([&](const Sha256& h, const BlobRecord& r) {
            if (!r.composed() || !referenced.count(h)) return;
            for (const auto& e : r.extents) referenced.insert(e.blob);
        });
        txn.for_each_blob([&](const Sha256& h, const BlobRecord& r) {
            known.insert(h);
            if (r.state == BlobState::remote) evicted.insert(h);
            // Remote records that models use stay: they are how those models get downloaded.
            // Quarantined records point at evidence the user should look at; gc leaves them.
            if (!referenced.count(h) && r.state != BlobState::quarantined)
                unreferenced.emplace_back(h, r);
        });
    }
    // A blob someone has open (a mount holds a shared flock on every blob it serves) stays, so
    // a version dropped by `retain` while a tool reads it is removed only by a later gc. The
    // locks are held until the records are deleted, so no open can slip in between.
    std::vector<UniqueFd> held;
    std::set<Sha256> busy;
    std::erase_if(unreferenced, [&](const std::pair<Sha256, BlobRecord>& e) {
        if (e.second.state != BlobState::present) return false;
        UniqueFd fd = impl_->blobs.open_blob(e.first);
        if (!fd) return false;  // missing file: nothing open; the record goes
        if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
            if (errno != EWOULDBLOCK)
                throw_errno("locking " + impl_->blobs.path_of(e.first).string(), errno);
            ++rep.skipped_open;
            busy.insert(e.first);
            return true;
        }
        held.push_back(std::move(fd));
        return false;
    });
    for (const auto& [h, r] : unreferenced) {
        rep.blobs.emplace_back(h, r.size);
        if (r.state == BlobState::present) rep.bytes += r.size;
    }
    impl_->blobs.for_each_file(
        [&](const std::optional<Sha256>& h, const stdfs::path& p, std::uint64_t size) {
            // A file a model uses is never an orphan, even if its record went missing (verify
            // reports that as dangling); deleting it could remove the only copy.
            // A file of a `remote` record is left by an eviction interrupted between its
            // catalog commit and the unlink (downloads publish under the shared store lock, so
            // none is half way here).
            if (h && busy.count(*h)) return;
            if (!h || (!known.count(*h) && !referenced.count(*h)) || evicted.count(*h)) {
                rep.orphan_files.push_back(p);
                rep.bytes += size;
            }
        });
    if (dry_run) return rep;

    // Records first: a crash after the commit leaves orphan files, which the next gc removes.
    {
        auto txn = impl_->catalog.write();
        std::set<Sha256> gone;
        for (const auto& [h, r] : unreferenced) {
            txn.del_blob(h);
            txn.del_meta(tensor_map_key(h));
            gone.insert(h);
        }
        // Index entries of removed blobs only mislead later splits.
        std::vector<std::pair<Xxh128, std::uint64_t>> stale;
        txn.for_each_tensor([&](const Xxh128& x, std::uint64_t len, const TensorPlace& t) {
            if (gone.count(t.blob) || !known.count(t.blob)) stale.emplace_back(x, len);
        });
        for (const auto& [x, len] : stale) txn.del_tensor(x, len);
        rep.tensors_unindexed = stale.size();
        txn.commit();
    }
    for (const auto& [h, r] : unreferenced) impl_->blobs.remove(h);
    for (const auto& p : rep.orphan_files) {
        std::error_code ec;
        stdfs::remove(p, ec);
        if (ec) spdlog::warn("could not remove {}: {}", p.string(), ec.message());
    }
    // Downloads of records just deleted can never be committed: their files only take space.
    // The downloader holds flock(LOCK_EX) on a .part while it works; such a file stays.
    const stdfs::path partial = partial_dir();
    for (const auto& [h, r] : unreferenced) {
        if (r.state == BlobState::present) continue;
        const stdfs::path part = partial / (h.hex() + ".part");
        const stdfs::path state = partial / (h.hex() + ".state");
        UniqueFd fd(::open(part.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
        if (fd && ::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) continue;
        struct stat st {};
        const bool had_part = fd && ::fstat(fd.get(), &st) == 0;
        std::error_code ec;
        const bool removed_part = had_part && stdfs::remove(part, ec);
        const bool removed_state = stdfs::remove(state, ec);
        if (removed_part || removed_state) ++rep.partials_removed;
        if (removed_part) rep.bytes += static_cast<std::uint64_t>(st.st_blocks) * 512;
    }
    rep.staging_removed = impl_->blobs.clean_staging([](const stdfs::path& p) {
        auto ext = p.extension().string();
        return ext == kJournalSuffix || ext == kMovedSuffix;
    });
    return rep;
}

}  // namespace modelfs
