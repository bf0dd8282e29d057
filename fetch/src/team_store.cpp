// push and pull of a team remote: the order of writes that keeps a reader from ever seeing half a
// push (blobs, then the snapshot, then the pointer), and the reads that check what they get.
#include "modelfs/fetch/team_store.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <map>
#include <set>
#include <thread>

#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include "curl_util.h"
#include "modelfs/fetch/aws_credentials.h"
#include "modelfs/fetch/source.h"
#include "modelfs/store/errors.h"
#include "modelfs/store/escape.h"
#include "modelfs/store/unique_fd.h"

namespace modelfs::fetch {
namespace {

using json = nlohmann::json;
namespace stdfs = std::filesystem;

constexpr std::uint64_t kMaxPointerBytes = 1ull << 20;
constexpr std::uint64_t kMaxSnapshotBytes = 1ull << 30;
constexpr std::size_t kUploadBatch = 256;  // blob files held open (and locked) at once

std::int64_t unix_now() {
    return std::chrono::duration_cast<std::chrono::seconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

std::string host_name() {
    char buf[256] = {};
    if (gethostname(buf, sizeof buf - 1) != 0) return {};
    return buf;
}

S3Bucket bucket_of(const TeamRemote& r, const FetchConfig& cfg) {
    AwsSettings a = aws_settings(r.profile, r.region, r.endpoint, cfg.s3);
    S3Bucket b;
    b.endpoint = a.endpoint;
    b.region = a.region;
    b.bucket = r.bucket();
    b.path_style = cfg.s3.path_style;
    b.credentials = a.credentials;
    return b;
}

// Reads objects of a remote by key (relative to its prefix): S3 with the remote's settings, or
// plain GETs from a mirror.
class RemoteReader {
  public:
    RemoteReader(const TeamRemote& r, const FetchConfig& cfg) : r_(r), cfg_(cfg) {
        if (r.is_s3()) s3_.emplace(bucket_of(r, cfg), cfg);
    }

    std::optional<std::string> get(const std::string& key, std::uint64_t max) {
        if (s3_) return s3_->get(r_.object_key(key), max);
        return http_get(r_.object_url(key), max);
    }

    // The writers that have published: from the listing on S3, from the index on a mirror.
    std::vector<std::string> writers() {
        std::vector<std::string> out;
        if (s3_) {
            const std::string prefix = r_.object_key(kRemoteWritersPrefix);
            for (const auto& o : s3_->list(prefix)) {
                std::string_view k = o.key;
                k.remove_prefix(prefix.size());
                if (k.size() > 5 && k.ends_with(".json") && k.find('/') == std::string_view::npos)
                    out.emplace_back(k.substr(0, k.size() - 5));
            }
            return out;
        }
        auto text = http_get(r_.object_url(kRemoteIndexKey), kMaxPointerBytes * 16);
        if (!text) return out;  // nothing pushed yet
        try {
            json j = json::parse(*text);
            for (const auto& w : j.at("writers")) out.push_back(w.get<std::string>());
        } catch (const json::exception& e) {
            throw StoreError(ErrorKind::corrupt,
                             r_.object_url(kRemoteIndexKey) + ": not a writers index: " + e.what());
        }
        return out;
    }

  private:
    static std::size_t on_body(char* p, std::size_t sz, std::size_t n, void* ud) {
        auto* b = static_cast<Body*>(ud);
        if (b->data.size() + sz * n > b->max) {
            b->too_big = true;
            return 0;
        }
        b->data.append(p, sz * n);
        return sz * n;
    }
    struct Body {
        std::string data;
        std::uint64_t max = 0;
        bool too_big = false;
    };

    std::optional<std::string> http_get(const std::string& url, std::uint64_t max) {
        detail::curl_global();
        HttpTarget t = resolve_source(url, cfg_);
        std::string last;
        for (unsigned attempt = 0; attempt <= std::min(cfg_.retries, 3u); ++attempt) {
            if (attempt) std::this_thread::sleep_for(cfg_.backoff_initial * (1 << (attempt - 1)));
            detail::EasyPtr c(curl_easy_init());
            auto headers = detail::setup_request(c.get(), t, cfg_, {});
            Body body;
            body.max = max;
            curl_easy_setopt(c.get(), CURLOPT_WRITEFUNCTION, on_body);
            curl_easy_setopt(c.get(), CURLOPT_WRITEDATA, &body);
            curl_easy_setopt(c.get(), CURLOPT_LOW_SPEED_LIMIT, 1L);
            curl_easy_setopt(c.get(), CURLOPT_LOW_SPEED_TIME,
                             static_cast<long>(cfg_.stall_timeout.count()));
            CURLcode rc = curl_easy_perform(c.get());
            long status = 0;
            curl_easy_getinfo(c.get(), CURLINFO_RESPONSE_CODE, &status);
            if (body.too_big)
                throw StoreError(ErrorKind::bad_input,
                                 redact_url(url) + ": more than " + std::to_string(max) + " bytes");
            if (rc != CURLE_OK) {
                last = redact_url(url) + ": " + curl_easy_strerror(rc);
                continue;
            }
            if (status == 200) return std::move(body.data);
            if (status == 404 || status == 410) return std::nullopt;
            last = redact_url(url) + ": HTTP " + std::to_string(status);
            if (status == 401 || status == 403)
                throw StoreError(ErrorKind::unauthorized, last + ": the mirror refused access");
            if (status < 500 && status != 429) break;
        }
        throw StoreError(ErrorKind::io, last);
    }

    const TeamRemote& r_;
    const FetchConfig& cfg_;
    std::optional<S3Client> s3_;
};

struct Published {
    WriterPointer pointer;
    Snapshot snapshot;
    std::string bytes;
};

// A writer's pointer and the snapshot it names, checked against its name.
std::optional<Published> read_writer(RemoteReader& rd, const TeamRemote& r,
                                     const std::string& writer) {
    const std::string pkey = remote_writer_key(writer);
    auto text = rd.get(pkey, kMaxPointerBytes);
    if (!text) return std::nullopt;
    Published p;
    p.pointer = WriterPointer::parse(*text, r.object_url(pkey));
    if (p.pointer.writer != writer)
        throw StoreError(ErrorKind::corrupt, r.object_url(pkey) + " names writer '" +
                                                 p.pointer.writer + "', not '" + writer + "'");
    const std::string skey = remote_snapshot_key(p.pointer.snapshot);
    auto bytes = rd.get(skey, kMaxSnapshotBytes);
    if (!bytes)
        throw StoreError(ErrorKind::corrupt, r.object_url(pkey) + " points at " +
                                                 r.object_url(skey) + ", which is missing");
    if (sha256_of(*bytes) != p.pointer.snapshot)
        throw StoreError(ErrorKind::corrupt, r.object_url(skey) +
                                                 " does not match its SHA-256 name (damaged in the "
                                                 "bucket); nothing was registered. Writer '" +
                                                 writer + "' should push again");
    p.snapshot = Snapshot::decode(*bytes, r.object_url(skey));
    if (p.snapshot.writer != writer)
        throw StoreError(ErrorKind::corrupt, r.object_url(skey) + " is writer '" +
                                                 p.snapshot.writer + "''s, not '" + writer + "'");
    p.bytes = std::move(*bytes);
    return p;
}

void check_writer_id(const std::string& w) {
    auto ok = [](unsigned char c) { return std::isalnum(c) || c == '-' || c == '_'; };
    if (w.empty() || w.size() > 64 || !std::all_of(w.begin(), w.end(), ok))
        throw StoreError(ErrorKind::bad_input, "invalid writer id '" + terminal_safe(w) +
                                                   "': 1 to 64 letters, digits, '-', '_'");
}

UniqueFd lock_push(Store& s) {
    const stdfs::path p = s.root() / "push.lock";
    UniqueFd fd(::open(p.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (!fd) throw_errno("opening " + p.string(), errno);
    if (flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
        if (errno == EWOULDBLOCK)
            throw StoreError(ErrorKind::busy,
                             "another `modelfs push` from this store is running; wait for it");
        throw_errno("locking " + p.string(), errno);
    }
    return fd;
}

}  // namespace

S3Config remote_s3_config(const TeamRemote& r, const FetchConfig& cfg) {
    AwsSettings a = aws_settings(r.profile, r.region, r.endpoint, cfg.s3);
    S3Config c;
    c.endpoint = a.endpoint;
    c.region = a.region;
    c.access_key = a.credentials.access_key;
    c.secret_key = a.credentials.secret_key;
    c.session_token = a.credentials.session_token;
    c.path_style = cfg.s3.path_style;
    return c;
}

FetchConfig with_team_remotes(Store& s, FetchConfig cfg) {
    for (const auto& r : team_remotes(s)) {
        if (!r.is_s3()) continue;
        try {
            cfg.s3_remotes.push_back({r.url, remote_s3_config(r, cfg)});
        } catch (const StoreError& e) {
            spdlog::warn("remote {}: {}", r.name, e.what());
        }
    }
    return cfg;
}

PushReport push(Store& s, const TeamRemote& r, const PushOptions& o, const FetchConfig& cfg,
                const std::function<void(std::uint64_t, std::uint64_t)>& progress) {
    if (!r.is_s3())
        throw StoreError(ErrorKind::read_only,
                         "remote '" + r.name + "' (" + redact_url(r.url) +
                             ") is a read-only mirror; push to the s3:// remote it mirrors");
    UniqueFd lock = lock_push(s);
    PushReport rep;
    rep.writer = o.writer.empty() ? writer_id(s) : o.writer;
    check_writer_id(rep.writer);

    S3Client client(bucket_of(r, cfg), cfg);
    RemoteReader reader(r, cfg);
    std::optional<Published> prev = read_writer(reader, r, rep.writer);

    std::map<std::string, std::uint64_t> in_bucket;  // blob hex -> size
    const std::string blob_prefix = r.object_key("blobs/sha256/");
    for (const auto& obj : client.list(blob_prefix)) {
        auto slash = obj.key.rfind('/');
        in_bucket.emplace(obj.key.substr(slash + 1), obj.size);
    }
    auto bucket_has = [&](const Sha256& h, std::uint64_t size) {
        auto it = in_bucket.find(h.hex());
        return it != in_bucket.end() && it->second == size;
    };

    SnapshotPlan plan =
        make_snapshot(s, o.patterns, prev ? &prev->snapshot : nullptr,
                      [&](const Sha256& h, const BlobRecord& rec) {
                          return rec.state == BlobState::present || bucket_has(h, rec.size);
                      });
    rep.left_out = plan.left_out;
    rep.models = plan.snapshot.models.size();
    rep.versions = plan.versions;

    std::vector<S3Upload> uploads;
    std::uint64_t total = 0;
    for (const auto& [h, b] : plan.snapshot.blobs) {
        if (bucket_has(h, b.size)) {
            ++rep.blobs_skipped;
            continue;
        }
        // A file stored as extents goes up whole: rebuilt (and checked) first unless it is.
        if (!o.dry_run && !s.blobs().exists(h)) s.open_blob_file(h);
        uploads.push_back({r.object_key(remote_blob_key(h)), s.blobs().path_of(h), b.size, h});
        total += b.size;
    }
    rep.blobs_uploaded = uploads.size();
    rep.bytes_uploaded = total;
    if (o.dry_run) return rep;

    // Batches of blob files, each held open with a shared flock (gc and evict skip such blobs) and
    // checked against its recorded stat, so what goes up is the catalogued content.
    std::uint64_t done_before = 0;
    for (std::size_t i = 0; i < uploads.size(); i += kUploadBatch) {
        std::vector<S3Upload> batch(uploads.begin() + i,
                                    uploads.begin() + std::min(uploads.size(), i + kUploadBatch));
        std::vector<UniqueFd> held;
        std::uint64_t batch_bytes = 0;
        for (const auto& u : batch) {
            UniqueFd fd(::open(u.path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
            if (!fd)
                throw StoreError(errno == ENOENT ? ErrorKind::not_found : kind_of_errno(errno),
                                 "blob " + u.sha256.hex() + " (" + u.path.string() +
                                     "): " + std::strerror(errno) + "; run `modelfs verify`");
            flock(fd.get(), LOCK_SH);
            if (s.check_blob(u.sha256, fd.get()) == Store::BlobCheck::quarantined)
                throw StoreError(ErrorKind::corrupt,
                                 "blob " + u.sha256.hex() +
                                     " does not match its hash and was quarantined; nothing of "
                                     "it was pushed (`modelfs verify` says more)");
            held.push_back(std::move(fd));
            batch_bytes += u.size;
        }
        S3UploadReport ur =
            client.upload(batch, o.connections, o.part_size, [&](std::uint64_t done) {
                if (progress) progress(done_before + done, total);
            });
        rep.resumed_parts += ur.resumed_parts;
        done_before += batch_bytes;
    }

    Snapshot& snap = plan.snapshot;
    if (prev) {
        // The same catalogue as last time: nothing to publish.
        Snapshot same = snap;
        same.writer = prev->snapshot.writer;
        same.host = prev->snapshot.host;
        same.seq = prev->snapshot.seq;
        same.pushed = prev->snapshot.pushed;
        if (same.encode() == prev->bytes) {
            rep.unchanged = true;
            rep.seq = prev->pointer.seq;
            rep.snapshot = prev->pointer.snapshot;
        }
    }
    if (!rep.unchanged) {
        snap.writer = rep.writer;
        snap.host = host_name();
        snap.seq = prev ? prev->pointer.seq + 1 : 1;
        snap.pushed = unix_now();
        const std::string bytes = snap.encode();
        rep.snapshot = sha256_of(bytes);
        rep.seq = snap.seq;
        client.put(r.object_key(remote_snapshot_key(rep.snapshot)), bytes,
                   {"Content-Type: application/cbor"});
        WriterPointer ptr{rep.writer, snap.seq, rep.snapshot, snap.pushed, snap.host};
        client.put(r.object_key(remote_writer_key(rep.writer)), ptr.to_text(),
                   {"Content-Type: application/json"});
    }
    // The index a mirror reads (it cannot list). Rewritten from the listing by every push, so a
    // writer one push's listing missed is in the next one's.
    {
        json ids = json::array();
        for (const auto& w : reader.writers()) ids.push_back(w);
        json idx = {{"modelfs_remote", kRemoteFormatVersion}, {"writers", ids}};
        client.put(r.object_key(kRemoteIndexKey), idx.dump(2) + "\n",
                   {"Content-Type: application/json"});
    }
    std::vector<Sha256> published;
    for (const auto& [h, b] : snap.blobs) published.push_back(h);
    add_remote_sources(s, r, published);
    return rep;
}

PullResult pull(Store& s, const TeamRemote& r, const FetchConfig& cfg, bool only_if_changed) {
    PullResult out;
    RemoteReader reader(r, cfg);
    std::vector<Snapshot> snaps;
    std::map<std::string, std::string> pulled;
    for (const auto& w : reader.writers()) {
        auto p = read_writer(reader, r, w);
        if (!p) continue;  // listed by a mirror's index before its pointer was copied
        pulled.emplace(w, p->pointer.snapshot.hex());
        snaps.push_back(std::move(p->snapshot));
    }
    out.writers = snaps.size();
    if (only_if_changed && pulled == r.pulled) {
        out.unchanged = true;
        return out;
    }
    RemoteCatalog cat = merge_snapshots(snaps);
    out.report = apply_pull(s, r, cat, pulled);
    return out;
}

}  // namespace modelfs::fetch
