// The blob files: ingest through staging/, publish under the SHA-256, quarantine, the listing of
// blobs/, and staging cleanup with its flock protocol. Real files in temp dirs.
#include "modelfs/store/blob_store.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "modelfs/store/errors.h"
#include "modelfs/store/hash.h"
#include "modelfs/store/progress.h"
#include "support/test_env.h"

namespace modelfs {
namespace {

namespace stdfs = std::filesystem;
namespace mt = modelfs::testing;

std::vector<stdfs::path> files_in(const stdfs::path& dir) {
    std::vector<stdfs::path> out;
    std::error_code ec;
    for (const auto& e : stdfs::recursive_directory_iterator(dir, ec))
        if (e.is_regular_file()) out.push_back(e.path());
    return out;
}

// True when another open file description can take the exclusive lock, i.e. nobody holds it.
bool lock_is_free(const stdfs::path& p) {
    int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw std::runtime_error("cannot open " + p.string());
    bool free = ::flock(fd, LOCK_EX | LOCK_NB) == 0;
    ::close(fd);
    return free;
}

mode_t mode_of(const stdfs::path& p) {
    struct stat st;
    if (::stat(p.c_str(), &st) != 0) throw std::runtime_error("cannot stat " + p.string());
    return st.st_mode & 07777;
}

void write_fd(int fd, const std::string& bytes) {
    ASSERT_EQ(::pwrite(fd, bytes.data(), bytes.size(), 0), static_cast<ssize_t>(bytes.size()));
}

void age(const stdfs::path& p, std::chrono::minutes by) {
    stdfs::last_write_time(p, stdfs::file_time_type::clock::now() - by);
}

class BlobStoreTest : public ::testing::Test {
  protected:
    void SetUp() override { BlobStore::create_layout(root_); }

    // Ingests `p` by copy; the file is opened read-only as the importer does.
    Ingested ingest(const stdfs::path& p, Progress* progress = nullptr) {
        UniqueFd fd(::open(p.c_str(), O_RDONLY | O_CLOEXEC));
        if (!fd) throw std::runtime_error("cannot open " + p.string());
        return bs_.ingest_copy(fd.get(), p.filename().string(), progress);
    }

    mt::TempDir tmp_{"modelfs-blobs"};
    stdfs::path root_ = tmp_ / "store";
    stdfs::path src_ = tmp_ / "src";
    BlobStore bs_{root_};
};

TEST_F(BlobStoreTest, CreateLayoutMakesTheFolders) {
    EXPECT_TRUE(stdfs::is_directory(root_ / "blobs" / "sha256"));
    EXPECT_TRUE(stdfs::is_directory(root_ / "staging"));
    EXPECT_TRUE(stdfs::is_directory(root_ / "quarantine"));
    EXPECT_EQ(bs_.staging_dir(), root_ / "staging");
    EXPECT_EQ(bs_.quarantine_dir(), root_ / "quarantine");
    EXPECT_EQ(bs_.root(), root_);
    // Idempotent.
    EXPECT_NO_THROW(BlobStore::create_layout(root_));
}

TEST_F(BlobStoreTest, PathOfUsesTwoHexShards) {
    Sha256 h = sha256_of("abc");
    EXPECT_EQ(bs_.path_of(h), root_ / "blobs" / "sha256" / "ba" / h.hex());
}

TEST_F(BlobStoreTest, IngestCopyStoresIdenticalReadOnlyBlobNamedByHash) {
    const stdfs::path p = src_ / "model.safetensors";
    const std::uint64_t size = (4u << 20) * 2 + 333;  // several chunks
    mt::write_random_file(p, size, 42);
    const std::string expect_hex = mt::sha256_hex_of_file(p);

    Progress progress;
    Ingested r = ingest(p, &progress);
    EXPECT_TRUE(r.stored_new);
    EXPECT_EQ(r.digests.size, size);
    EXPECT_EQ(r.digests.sha256.hex(), expect_hex);
    EXPECT_EQ(progress.done_bytes.load(), size);

    // The XXH3 recorded matches the file's.
    UniqueFd src(::open(p.c_str(), O_RDONLY | O_CLOEXEC));
    EXPECT_EQ(r.digests.xxh128, xxh128_fd(src.get()));

    const stdfs::path blob = root_ / "blobs" / "sha256" / expect_hex.substr(0, 2) / expect_hex;
    EXPECT_EQ(bs_.path_of(r.digests.sha256), blob);
    ASSERT_TRUE(stdfs::is_regular_file(blob));
    EXPECT_EQ(stdfs::file_size(blob), size);
    EXPECT_EQ(mt::read_file(blob), mt::read_file(p));
    EXPECT_EQ(mode_of(blob), 0444u);
    EXPECT_TRUE(bs_.exists(r.digests.sha256));
    EXPECT_TRUE(files_in(bs_.staging_dir()).empty());
    // The source is untouched.
    EXPECT_EQ(mt::sha256_hex_of_file(p), expect_hex);

    UniqueFd fd = bs_.open_blob(r.digests.sha256);
    ASSERT_TRUE(fd);
    EXPECT_EQ(digest_fd(fd.get()).sha256, r.digests.sha256);
}

TEST_F(BlobStoreTest, IngestIgnoresTheSourceFilePosition) {
    const stdfs::path p = src_ / "a.bin";
    mt::write_random_file(p, 100000, 1);
    UniqueFd fd(::open(p.c_str(), O_RDONLY | O_CLOEXEC));
    ASSERT_EQ(::lseek(fd.get(), 50000, SEEK_SET), 50000);
    Ingested r = bs_.ingest_copy(fd.get(), "a.bin", nullptr);
    EXPECT_EQ(r.digests.size, 100000u);
    EXPECT_EQ(mt::read_file(bs_.path_of(r.digests.sha256)), mt::read_file(p));
}

TEST_F(BlobStoreTest, SecondIngestOfSameContentStoresNothingNew) {
    mt::write_random_file(src_ / "a.bin", 200000, 7);
    mt::write_random_file(src_ / "copy-of-a.bin", 200000, 7);
    Ingested first = ingest(src_ / "a.bin");
    ASSERT_TRUE(first.stored_new);
    const auto blob = bs_.path_of(first.digests.sha256);
    struct stat before;
    ASSERT_EQ(::stat(blob.c_str(), &before), 0);

    Ingested second = ingest(src_ / "copy-of-a.bin");
    EXPECT_FALSE(second.stored_new);
    EXPECT_EQ(second.digests.sha256, first.digests.sha256);
    EXPECT_EQ(second.digests.xxh128, first.digests.xxh128);
    EXPECT_EQ(second.digests.size, first.digests.size);
    EXPECT_TRUE(files_in(bs_.staging_dir()).empty()) << "the second copy was left in staging/";
    EXPECT_EQ(files_in(root_ / "blobs").size(), 1u);
    // The existing blob was kept, not replaced.
    struct stat after;
    ASSERT_EQ(::stat(blob.c_str(), &after), 0);
    EXPECT_EQ(after.st_ino, before.st_ino);
}

TEST_F(BlobStoreTest, ZeroByteFileIngests) {
    mt::write_text_file(src_ / "empty.bin", "");
    Ingested r = ingest(src_ / "empty.bin");
    EXPECT_TRUE(r.stored_new);
    EXPECT_EQ(r.digests.size, 0u);
    EXPECT_EQ(r.digests.sha256.hex(),
              "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    const auto blob = bs_.path_of(r.digests.sha256);
    ASSERT_TRUE(stdfs::is_regular_file(blob));
    EXPECT_EQ(stdfs::file_size(blob), 0u);
    EXPECT_EQ(mode_of(blob), 0444u);
    EXPECT_TRUE(files_in(bs_.staging_dir()).empty());
    // And again: not new.
    EXPECT_FALSE(ingest(src_ / "empty.bin").stored_new);
}

TEST_F(BlobStoreTest, SourceChangedDuringIngestIsRefused) {
    const stdfs::path p = src_ / "growing.bin";
    mt::write_random_file(p, 3 * (4u << 20), 3);
    UniqueFd fd(::open(p.c_str(), O_RDONLY | O_CLOEXEC));
    UniqueFd writer(::open(p.c_str(), O_WRONLY | O_CLOEXEC));
    ASSERT_TRUE(fd && writer);
    // Another program keeps writing to the file: every round changes a byte and sets a new,
    // explicit modification time (the kernel's own timestamps are too coarse to rely on).
    std::atomic<bool> stop{false};
    std::thread other([&] {
        for (std::int64_t i = 1; !stop; ++i) {
            const char b = static_cast<char>(i);
            (void)::pwrite(writer.get(), &b, 1, 4096);
            const timespec times[2] = {{0, UTIME_OMIT}, {1'000'000'000 + i, 0}};
            ::futimens(writer.get(), times);
        }
    });
    try {
        bs_.ingest_copy(fd.get(), "growing.bin", nullptr);
        ADD_FAILURE() << "a file that changed during the copy was stored";
    } catch (const StoreError& e) {
        EXPECT_EQ(e.kind(), ErrorKind::bad_input);
        EXPECT_NE(std::string(e.what()).find("growing.bin"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("changed"), std::string::npos) << e.what();
    }
    stop = true;
    other.join();
    EXPECT_TRUE(files_in(bs_.staging_dir()).empty());
    EXPECT_TRUE(files_in(root_ / "blobs").empty());
}

TEST_F(BlobStoreTest, IngestOfUnreadableDescriptorFailsCleanly) {
    // A directory: fstat works, reads fail with EISDIR.
    stdfs::create_directories(src_);
    UniqueFd dir(::open(src_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    try {
        bs_.ingest_copy(dir.get(), "the-source", nullptr);
        FAIL() << "ingested a directory";
    } catch (const StoreError& e) {
        EXPECT_NE(std::string(e.what()).find("the-source"), std::string::npos) << e.what();
    }
    EXPECT_TRUE(files_in(bs_.staging_dir()).empty());
    EXPECT_TRUE(files_in(root_ / "blobs").empty());
}

// ---- Staging files and publish -------------------------------------------------------------

TEST_F(BlobStoreTest, StagingFileIsLockedAndRemovedOnDestruction) {
    stdfs::path p;
    {
        StagingFile f = bs_.make_staging(".tmp");
        p = f.path();
        EXPECT_EQ(p.parent_path(), bs_.staging_dir());
        EXPECT_EQ(p.extension(), ".tmp");
        ASSERT_TRUE(stdfs::exists(p));
        EXPECT_GE(f.fd(), 0);
        // flock locks belong to the open file description: a second open() in this very process
        // conflicts, which is what cleanup in another process sees.
        EXPECT_FALSE(lock_is_free(p));

        StagingFile g = bs_.make_staging(".tmp");
        EXPECT_NE(g.path(), p);  // unique names
    }
    EXPECT_FALSE(stdfs::exists(p));
    EXPECT_TRUE(files_in(bs_.staging_dir()).empty());
}

TEST_F(BlobStoreTest, StagingFileMoveAssignmentDropsTheOldFile) {
    StagingFile a = bs_.make_staging(".a");
    StagingFile b = bs_.make_staging(".b");
    const stdfs::path pa = a.path(), pb = b.path();
    a = std::move(b);
    EXPECT_FALSE(stdfs::exists(pa));
    EXPECT_TRUE(stdfs::exists(pb));
    EXPECT_EQ(a.path(), pb);
    EXPECT_TRUE(b.path().empty());
    StagingFile c(std::move(a));
    EXPECT_EQ(c.path(), pb);
    EXPECT_TRUE(a.path().empty());
}

TEST_F(BlobStoreTest, ReleasedStagingFileIsKept) {
    stdfs::path p;
    {
        StagingFile f = bs_.make_staging(".journal");
        p = f.path();
        f.release();
        EXPECT_TRUE(f.path().empty());
    }
    EXPECT_TRUE(stdfs::exists(p));
    EXPECT_TRUE(lock_is_free(p));  // the descriptor, and so the lock, went with the object
}

TEST_F(BlobStoreTest, AdoptStagingLocksAndOwnsTheFile) {
    const stdfs::path p = bs_.staging_dir() / "123-abc.move";
    mt::write_text_file(p, "user data");
    {
        StagingFile f = bs_.adopt_staging(p);
        EXPECT_EQ(f.path(), p);
        EXPECT_FALSE(lock_is_free(p));
        // A file whose lock is held cannot be adopted again.
        EXPECT_THROW(bs_.adopt_staging(p), StoreError);
    }
    EXPECT_FALSE(stdfs::exists(p));
    EXPECT_THROW(bs_.adopt_staging(bs_.staging_dir() / "missing"), StoreError);
}

TEST_F(BlobStoreTest, PublishPlacesStagedFileUnderItsHash) {
    const std::string bytes = "some model bytes";
    const Sha256 h = sha256_of(bytes);
    StagingFile f = bs_.make_staging(".tmp");
    write_fd(f.fd(), bytes);
    const stdfs::path staged = f.path();
    EXPECT_TRUE(bs_.publish(f, h, bytes.size()));
    EXPECT_TRUE(f.path().empty()) << "published file still owned by the StagingFile";
    EXPECT_FALSE(stdfs::exists(staged));
    EXPECT_EQ(mt::read_file(bs_.path_of(h)), bytes);
}

TEST_F(BlobStoreTest, PublishOverSameSizeFileKeepsTheExistingBlob) {
    const std::string bytes = "0123456789";
    const Sha256 h = sha256_of(bytes);
    stdfs::create_directories(bs_.path_of(h).parent_path());
    mt::write_text_file(bs_.path_of(h), bytes);
    stdfs::path staged;
    {
        StagingFile f = bs_.make_staging(".tmp");
        staged = f.path();
        write_fd(f.fd(), bytes);
        EXPECT_FALSE(bs_.publish(f, h, bytes.size()));
    }
    EXPECT_FALSE(stdfs::exists(staged)) << "the dropped copy stayed in staging/";
    EXPECT_EQ(mt::read_file(bs_.path_of(h)), bytes);
    EXPECT_TRUE(files_in(bs_.quarantine_dir()).empty());
}

TEST_F(BlobStoreTest, PublishOverWrongSizeFileQuarantinesIt) {
    const std::string good = "the real content of the blob";
    const std::string bad = "truncated";
    const Sha256 h = sha256_of(good);
    stdfs::create_directories(bs_.path_of(h).parent_path());
    mt::write_text_file(bs_.path_of(h), bad);

    StagingFile f = bs_.make_staging(".tmp");
    write_fd(f.fd(), good);
    EXPECT_TRUE(bs_.publish(f, h, good.size()));
    EXPECT_EQ(mt::read_file(bs_.path_of(h)), good);

    auto q = files_in(bs_.quarantine_dir());
    ASSERT_EQ(q.size(), 1u);
    EXPECT_EQ(mt::read_file(q[0]), bad);
    EXPECT_TRUE(q[0].filename().string().starts_with(h.hex() + "."));
    EXPECT_TRUE(files_in(bs_.staging_dir()).empty());
}

// ---- Remove and quarantine -----------------------------------------------------------------

TEST_F(BlobStoreTest, QuarantineMovesTheFile) {
    mt::write_random_file(src_ / "a.bin", 5000, 5);
    const Sha256 h = ingest(src_ / "a.bin").digests.sha256;
    const auto before = std::chrono::system_clock::now();
    const stdfs::path q = bs_.quarantine(h);
    EXPECT_EQ(q.parent_path(), bs_.quarantine_dir());
    const std::string name = q.filename().string();
    ASSERT_TRUE(name.starts_with(h.hex() + ".")) << name;
    // <hex>.<unix seconds>
    const auto secs = std::stoll(name.substr(h.hex().size() + 1));
    const auto then =
        std::chrono::duration_cast<std::chrono::seconds>(before.time_since_epoch()).count();
    EXPECT_GE(secs, then - 1);
    EXPECT_LE(secs, then + 60);
    EXPECT_EQ(mt::read_file(q), mt::read_file(src_ / "a.bin"));
    EXPECT_FALSE(bs_.exists(h));
    EXPECT_FALSE(stdfs::exists(bs_.path_of(h)));
    EXPECT_FALSE(bs_.open_blob(h));
    // Quarantining what is not there is an error (nothing to keep as evidence).
    EXPECT_THROW(bs_.quarantine(h), StoreError);
}

TEST_F(BlobStoreTest, RemoveDeletesAndToleratesMissing) {
    mt::write_random_file(src_ / "a.bin", 100, 5);
    const Sha256 h = ingest(src_ / "a.bin").digests.sha256;
    bs_.remove(h);
    EXPECT_FALSE(bs_.exists(h));
    EXPECT_NO_THROW(bs_.remove(h));
    EXPECT_NO_THROW(bs_.remove(sha256_of("never stored")));
}

TEST_F(BlobStoreTest, OpenMissingBlobGivesInvalidFdAndErrno) {
    errno = 0;
    UniqueFd fd = bs_.open_blob(sha256_of("nope"));
    EXPECT_FALSE(fd);
    EXPECT_EQ(errno, ENOENT);
}

// ---- Listing blobs/ ------------------------------------------------------------------------

TEST_F(BlobStoreTest, ForEachFileReportsWellNamedAndMisnamedFiles) {
    mt::write_random_file(src_ / "a.bin", 1000, 1);
    mt::write_random_file(src_ / "b.bin", 2000, 2);
    const Sha256 a = ingest(src_ / "a.bin").digests.sha256;
    const Sha256 b = ingest(src_ / "b.bin").digests.sha256;

    const stdfs::path top = root_ / "blobs" / "sha256";
    // A hash name in the wrong shard.
    const Sha256 c = sha256_of("c");
    std::string wrong_shard = c.hex().substr(0, 2) == "00" ? "01" : "00";
    mt::write_text_file(top / wrong_shard / c.hex(), "x");
    // A hash name with no shard at all.
    const Sha256 d = sha256_of("d");
    mt::write_text_file(top / d.hex(), "yy");
    // Not a hash.
    mt::write_text_file(top / "ab" / "notahash", "zzz");
    // A hash-looking name one digit short.
    mt::write_text_file(top / a.hex().substr(0, 2) / a.hex().substr(0, 63), "wwww");

    std::map<std::string, std::pair<std::optional<Sha256>, std::uint64_t>> seen;
    bs_.for_each_file(
        [&](const std::optional<Sha256>& h, const stdfs::path& p, std::uint64_t size) {
            EXPECT_TRUE(seen.emplace(p.string(), std::make_pair(h, size)).second) << p;
        });
    ASSERT_EQ(seen.size(), 6u);
    auto at = [&](const stdfs::path& p) { return seen.at(p.string()); };
    EXPECT_EQ(at(bs_.path_of(a)), std::make_pair(std::optional<Sha256>(a), std::uint64_t{1000}));
    EXPECT_EQ(at(bs_.path_of(b)), std::make_pair(std::optional<Sha256>(b), std::uint64_t{2000}));
    EXPECT_EQ(at(top / wrong_shard / c.hex()).first, std::nullopt);
    EXPECT_EQ(at(top / wrong_shard / c.hex()).second, 1u);
    EXPECT_EQ(at(top / d.hex()).first, std::nullopt);
    EXPECT_EQ(at(top / "ab" / "notahash").first, std::nullopt);
    EXPECT_EQ(at(top / "ab" / "notahash").second, 3u);
    EXPECT_EQ(at(top / a.hex().substr(0, 2) / a.hex().substr(0, 63)).first, std::nullopt);
}

TEST_F(BlobStoreTest, ForEachFileOnEmptyOrMissingTreeVisitsNothing) {
    int n = 0;
    bs_.for_each_file([&](const auto&, const auto&, auto) { ++n; });
    EXPECT_EQ(n, 0);
    BlobStore nowhere(tmp_ / "no-such-store");
    nowhere.for_each_file([&](const auto&, const auto&, auto) { ++n; });
    EXPECT_EQ(n, 0);
}

// ---- Staging cleanup -----------------------------------------------------------------------

TEST_F(BlobStoreTest, CleanStagingRemovesAbandonedFile) {
    const stdfs::path p = bs_.staging_dir() / "999-dead.tmp";
    mt::write_text_file(p, "half a blob");
    EXPECT_EQ(bs_.clean_staging(nullptr), 1u);
    EXPECT_FALSE(stdfs::exists(p));
}

TEST_F(BlobStoreTest, CleanStagingKeepsFileWhoseWriterIsAlive) {
    StagingFile live = bs_.make_staging(".tmp");
    write_fd(live.fd(), "being written");
    // The premise: the lock is visible to another open file description in this process.
    ASSERT_FALSE(lock_is_free(live.path()));
    age(live.path(), std::chrono::minutes(60));  // old does not matter when locked

    const stdfs::path dead = bs_.staging_dir() / "1-dead.tmp";
    mt::write_text_file(dead, "abandoned");
    EXPECT_EQ(bs_.clean_staging(nullptr), 1u);
    EXPECT_TRUE(stdfs::exists(live.path()));
    EXPECT_FALSE(stdfs::exists(dead));
    // Still locked after the cleaner let go of it.
    EXPECT_FALSE(lock_is_free(live.path()));
}

TEST_F(BlobStoreTest, CleanStagingKeepsYoungEmptyFileButNotOldOne) {
    // A writer creates its file and locks it a moment later: young and empty means "maybe".
    const stdfs::path young = bs_.staging_dir() / "1-young.tmp";
    const stdfs::path old = bs_.staging_dir() / "2-old.tmp";
    mt::write_text_file(young, "");
    mt::write_text_file(old, "");
    age(old, std::chrono::minutes(10));
    EXPECT_EQ(bs_.clean_staging(nullptr), 1u);
    EXPECT_TRUE(stdfs::exists(young));
    EXPECT_FALSE(stdfs::exists(old));
}

TEST_F(BlobStoreTest, CleanStagingRespectsKeep) {
    const stdfs::path journal = bs_.staging_dir() / "1-x.journal";
    const stdfs::path moved = bs_.staging_dir() / "1-x.move";
    const stdfs::path tmp = bs_.staging_dir() / "2-y.tmp";
    mt::write_text_file(journal, "{}");
    mt::write_text_file(moved, "user file");
    mt::write_text_file(tmp, "partial");
    std::vector<stdfs::path> asked;
    std::size_t n = bs_.clean_staging([&](const stdfs::path& p) {
        asked.push_back(p);
        return p.extension() == ".journal" || p.extension() == ".move";
    });
    EXPECT_EQ(n, 1u);
    EXPECT_TRUE(stdfs::exists(journal));
    EXPECT_TRUE(stdfs::exists(moved));
    EXPECT_FALSE(stdfs::exists(tmp));
    EXPECT_EQ(std::set<stdfs::path>(asked.begin(), asked.end()),
              (std::set<stdfs::path>{journal, moved, tmp}));
}

TEST_F(BlobStoreTest, CleanStagingDoesNotAskKeepAboutLockedFiles) {
    StagingFile live = bs_.make_staging(".journal");
    write_fd(live.fd(), "{\"origin\":\"/x\"}");
    int asked = 0;
    EXPECT_EQ(bs_.clean_staging([&](const stdfs::path&) {
        ++asked;
        return false;
    }),
              0u);
    EXPECT_EQ(asked, 0);
    EXPECT_TRUE(stdfs::exists(live.path()));
}

TEST_F(BlobStoreTest, CleanStagingCountsOnlyWhatItRemoved) {
    for (int i = 0; i < 5; ++i)
        mt::write_text_file(bs_.staging_dir() / (std::to_string(i) + "-x.tmp"), "data");
    StagingFile live = bs_.make_staging(".tmp");
    write_fd(live.fd(), "x");
    EXPECT_EQ(bs_.clean_staging(nullptr), 5u);
    EXPECT_EQ(bs_.clean_staging(nullptr), 0u);
    EXPECT_EQ(files_in(bs_.staging_dir()), std::vector<stdfs::path>{live.path()});
}

}  // namespace
}  // namespace modelfs
