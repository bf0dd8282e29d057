// Blobs are immutable (issue 14): the store never takes in an inode something outside it can
// still write (second hard links, other owners are copied), and every open of a blob is checked
// against the stat its record holds (Store::check_blob), so bytes changed behind the store's back
// are quarantined, never served under the old hash.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <optional>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "modelfs/store/store.h"
#include "support/sized_models.h"
#include "support/test_env.h"

namespace stdfs = std::filesystem;
using namespace modelfs;
using namespace modelfs::testing;

namespace {

struct stat stat_of(const stdfs::path& p) {
    struct stat st {};
    EXPECT_EQ(::lstat(p.c_str(), &st), 0) << p;
    return st;
}

bool same_inode(const stdfs::path& a, const stdfs::path& b) {
    struct stat sa = stat_of(a), sb = stat_of(b);
    return sa.st_ino == sb.st_ino && sa.st_dev == sb.st_dev;
}

// Writes `text` at offset 0 of `p` as its owner would: chmod u+w first if need be.
void scribble(const stdfs::path& p, const std::string& text) {
    ::chmod(p.c_str(), 0644);
    int fd = ::open(p.c_str(), O_WRONLY);
    ASSERT_GE(fd, 0) << p << ": " << std::strerror(errno);
    ASSERT_EQ(::pwrite(fd, text.data(), text.size(), 0), static_cast<ssize_t>(text.size()));
    ::close(fd);
}

// Sets the mtime of `p` back to `st`'s, as `touch -d` would (the ctime moves anyway).
void restore_mtime(const stdfs::path& p, const struct stat& st) {
    struct timespec ts[2] = {st.st_atim, st.st_mtim};
    ASSERT_EQ(::utimensat(AT_FDCWD, p.c_str(), ts, 0), 0);
}

class ImmutableTest : public ::testing::Test {
  protected:
    TempDir tmp{"modelfs-immutable"};
    stdfs::path root = tmp / "store";
    stdfs::path src = tmp / "src";
    std::optional<Store> store_;

    void SetUp() override {
        store_.emplace(Store::init(root));
        stdfs::create_directories(src / "loras");
    }
    Store& s() { return *store_; }

    stdfs::path blob(const std::string& hex) { return s().blobs().path_of(*Sha256::from_hex(hex)); }

    ImportItem import_one(const stdfs::path& p, bool move) {
        ImportOptions o;
        o.move = move;
        o.jobs = 1;
        ImportReport r = s().import({p}, o);
        EXPECT_EQ(r.items.size(), 1u);
        EXPECT_TRUE(r.ok()) << r.items.at(0).error;
        return r.items.at(0);
    }

    BlobRecord record(const std::string& hex) {
        auto r = s().catalog().read().get_blob(*Sha256::from_hex(hex));
        EXPECT_TRUE(r);
        return r.value_or(BlobRecord{});
    }

    Store::BlobCheck check(const std::string& hex) {
        UniqueFd fd = s().blobs().open_blob(*Sha256::from_hex(hex));
        EXPECT_TRUE(fd);
        return s().check_blob(*Sha256::from_hex(hex), fd.get());
    }

    // A file committed the way the mount's ingest commits one: linked when the store may take it.
    FileCommitResult commit_file(const stdfs::path& p, const std::string& name) {
        UniqueFd fd(::open(p.c_str(), O_RDONLY | O_CLOEXEC));
        EXPECT_TRUE(fd);
        FileCommit f;
        f.path = p;
        f.fd = fd.get();
        f.digests = digest_fd(fd.get());
        f.category = Category::lora;
        f.name = name;
        f.ext = ".safetensors";
        return s().commit_file(f);
    }
};

TEST_F(ImmutableTest, MoveOfAFileWithASecondHardLinkCopies) {
    const stdfs::path f = src / "loras/a.ckpt", other = tmp / "other-name.safetensors";
    write_random_file(f, 300000, 1);
    stdfs::create_hard_link(f, other);
    const std::string sha = sha256_hex_of_file(f);
    ImportItem it = import_one(f, true);
    EXPECT_EQ(it.sha256.hex(), sha);
    EXPECT_FALSE(stdfs::exists(f)) << "a move takes the name the user gave";
    ASSERT_TRUE(stdfs::exists(other));
    EXPECT_FALSE(same_inode(other, blob(sha))) << "the blob must be an inode of its own";
    EXPECT_EQ(stat_of(other).st_nlink, 1u);
    EXPECT_EQ(stat_of(blob(sha)).st_nlink, 1u);
    // The other name stays the user's, writable, and writing it never reaches the store.
    EXPECT_EQ(stat_of(other).st_mode & 0777, 0644u);
    scribble(other, "overwritten");
    EXPECT_EQ(sha256_hex_of_file(blob(sha)), sha);
    EXPECT_TRUE(s().verify(false).problems.empty());
}

TEST_F(ImmutableTest, MoveOfAFileWithOneLinkIsStillZeroCopy) {
    const stdfs::path f = src / "loras/a.ckpt";
    write_random_file(f, 300000, 2);
    const ino_t ino = stat_of(f).st_ino;
    const std::string sha = sha256_hex_of_file(f);
    import_one(f, true);
    EXPECT_FALSE(stdfs::exists(f));
    EXPECT_EQ(stat_of(blob(sha)).st_ino, ino) << "renamed into the store, not copied";
}

TEST_F(ImmutableTest, FilesOfAnotherOwnerAreCopiedNotLinked) {
    if (::geteuid() != 0) GTEST_SKIP() << "chown to another uid needs root";
    const stdfs::path moved = src / "loras/theirs.ckpt";
    const stdfs::path mounted = root / "views/comfyui/loras/theirs2.safetensors";
    write_sized_safetensors(moved, 200000, 3);
    stdfs::create_directories(mounted.parent_path());
    write_sized_safetensors(mounted, 200000, 4);
    ASSERT_EQ(::chown(moved.c_str(), 65534, 65534), 0);
    ASSERT_EQ(::chown(mounted.c_str(), 65534, 65534), 0);
    const std::string sha1 = sha256_hex_of_file(moved), sha2 = sha256_hex_of_file(mounted);
    const ino_t ino1 = stat_of(moved).st_ino;

    import_one(moved, true);
    EXPECT_FALSE(stdfs::exists(moved));
    EXPECT_NE(stat_of(blob(sha1)).st_ino, ino1) << "another owner's inode was taken";
    EXPECT_EQ(stat_of(blob(sha1)).st_uid, 0u);

    EXPECT_TRUE(commit_file(mounted, "theirs2").new_blob);
    EXPECT_FALSE(same_inode(mounted, blob(sha2)));
    EXPECT_EQ(stat_of(mounted).st_mode & 0777, 0644u) << "the owner's file is left as it was";
    EXPECT_EQ(stat_of(blob(sha2)).st_uid, 0u);
    scribble(mounted, "theirs, still");
    EXPECT_EQ(sha256_hex_of_file(blob(sha2)), sha2);
}

// The mount's ingest: an overlay file of the store's owner with one link is linked (zero copy);
// one that got a second name is copied.
TEST_F(ImmutableTest, CommitFileLinksOnlyWhatNothingElseNames) {
    const stdfs::path mine = root / "views/comfyui/loras/mine.safetensors";
    const stdfs::path linked = root / "views/comfyui/loras/linked.safetensors";
    stdfs::create_directories(mine.parent_path());
    write_sized_safetensors(mine, 100000, 5);
    write_sized_safetensors(linked, 100000, 6);
    stdfs::create_hard_link(linked, tmp / "elsewhere.safetensors");
    const std::string sha1 = sha256_hex_of_file(mine), sha2 = sha256_hex_of_file(linked);
    EXPECT_TRUE(commit_file(mine, "mine").new_blob);
    EXPECT_TRUE(same_inode(mine, blob(sha1)));
    EXPECT_TRUE(commit_file(linked, "linked").new_blob);
    EXPECT_FALSE(same_inode(linked, blob(sha2)));
    EXPECT_FALSE(same_inode(tmp / "elsewhere.safetensors", blob(sha2)));
    scribble(tmp / "elsewhere.safetensors", "changed through the other name");
    EXPECT_EQ(sha256_hex_of_file(blob(sha2)), sha2);
}

TEST_F(ImmutableTest, HfCacheBlobWithTwoLinksIsCopied) {
    const stdfs::path cache = tmp / "hub/blobs";
    stdfs::create_directories(cache);
    write_random_file(tmp / "w1", 150000, 7);
    write_random_file(tmp / "w2", 150000, 8);
    const std::string sha1 = sha256_hex_of_file(tmp / "w1"), sha2 = sha256_hex_of_file(tmp / "w2");
    stdfs::rename(tmp / "w1", cache / sha1);
    stdfs::rename(tmp / "w2", cache / sha2);
    stdfs::create_hard_link(cache / sha2, tmp / "snapshot-link");  // a second name
    TrustedTree t;
    t.category = Category::diffusers;
    t.name = "org/model";
    t.label = "main";
    t.files = {{"a.bin", cache / sha1, *Sha256::from_hex(sha1), std::nullopt},
               {"b.bin", cache / sha2, *Sha256::from_hex(sha2), std::nullopt}};
    TrustedTreeResult r = s().commit_trusted_tree(t);
    EXPECT_EQ(r.linked, 1u);
    EXPECT_EQ(r.copied, 1u);
    EXPECT_TRUE(same_inode(cache / sha1, blob(sha1)));
    EXPECT_FALSE(same_inode(cache / sha2, blob(sha2)));
    EXPECT_EQ(stat_of(cache / sha2).st_nlink, 2u);
    EXPECT_FALSE(record(sha2).unverified) << "a copy reads every byte: verified";
    scribble(tmp / "snapshot-link", "edited");
    EXPECT_EQ(sha256_hex_of_file(blob(sha2)), sha2);
}

TEST_F(ImmutableTest, CommitsRecordTheBlobStat) {
    const stdfs::path f = src / "loras/a.ckpt";
    write_random_file(f, 50000, 9);
    const std::string sha = sha256_hex_of_file(f);
    import_one(f, false);
    BlobRecord r = record(sha);
    ASSERT_TRUE(r.seen);
    const struct stat st = stat_of(blob(sha));
    EXPECT_EQ(r.seen->ino, st.st_ino);
    EXPECT_EQ(r.seen->size, 50000u);
    EXPECT_EQ(r.seen->ctime_ns, st.st_ctim.tv_sec * 1000000000 + st.st_ctim.tv_nsec);
    // Survives a reopen (a CBOR key of the record).
    store_.reset();
    store_.emplace(Store::open(root));
    EXPECT_EQ(record(sha).seen, r.seen);
}

TEST_F(ImmutableTest, UnchangedBlobOpensWithoutARehash) {
    const stdfs::path f = src / "loras/a.ckpt";
    write_random_file(f, 50000, 10);
    const std::string sha = sha256_hex_of_file(f);
    import_one(f, false);
    const auto before = Store::blob_rehashes();
    for (int i = 0; i < 3; ++i) EXPECT_EQ(check(sha), Store::BlobCheck::ok);
    EXPECT_EQ(Store::blob_rehashes(), before);
}

TEST_F(ImmutableTest, ChangedBytesWithRestoredMtimeAreQuarantined) {
    const stdfs::path f = src / "loras/a.ckpt";
    write_random_file(f, 50000, 11);
    const std::string sha = sha256_hex_of_file(f);
    import_one(f, false);
    const stdfs::path b = blob(sha);
    const struct stat st = stat_of(b);
    scribble(b, "not the stored bytes");
    ::chmod(b.c_str(), 0444);
    restore_mtime(b, st);
    ASSERT_EQ(stat_of(b).st_size, st.st_size);
    const auto before = Store::blob_rehashes();
    EXPECT_EQ(check(sha), Store::BlobCheck::quarantined);
    EXPECT_EQ(Store::blob_rehashes(), before + 1);
    EXPECT_FALSE(stdfs::exists(b));
    EXPECT_EQ(record(sha).state, BlobState::quarantined);
    EXPECT_FALSE(stdfs::is_empty(root / "quarantine"));
}

TEST_F(ImmutableTest, TouchedButUnchangedBlobIsRehashedOnceThenTrusted) {
    const stdfs::path f = src / "loras/a.ckpt";
    write_random_file(f, 50000, 12);
    const std::string sha = sha256_hex_of_file(f);
    import_one(f, false);
    ::chmod(blob(sha).c_str(), 0444);  // ctime moves, content does not
    ::usleep(10000);
    ::chmod(blob(sha).c_str(), 0444);
    struct timespec ts[2] = {{0, UTIME_NOW}, {0, UTIME_NOW}};
    ASSERT_EQ(::utimensat(AT_FDCWD, blob(sha).c_str(), ts, 0), 0);
    const auto before = Store::blob_rehashes();
    EXPECT_EQ(check(sha), Store::BlobCheck::rehashed);
    EXPECT_EQ(check(sha), Store::BlobCheck::ok);
    EXPECT_EQ(Store::blob_rehashes(), before + 1);
    EXPECT_EQ(record(sha).state, BlobState::present);
}

// Several opens of one changed blob at once (a tool's threads): one hash, one answer.
TEST_F(ImmutableTest, ConcurrentChecksOfOneBlobHashItOnce) {
    const stdfs::path f = src / "loras/a.ckpt";
    write_random_file(f, 8u << 20, 17);
    const std::string sha = sha256_hex_of_file(f);
    import_one(f, false);
    ::chmod(blob(sha).c_str(), 0444);  // only the ctime moves
    std::vector<UniqueFd> fds;
    for (int i = 0; i < 4; ++i) fds.push_back(s().blobs().open_blob(*Sha256::from_hex(sha)));
    const auto before = Store::blob_rehashes();
    std::vector<Store::BlobCheck> got(fds.size());
    {
        std::vector<std::jthread> ts;
        for (std::size_t i = 0; i < fds.size(); ++i)
            ts.emplace_back(
                [&, i] { got[i] = s().check_blob(*Sha256::from_hex(sha), fds[i].get()); });
    }
    EXPECT_EQ(Store::blob_rehashes(), before + 1);
    for (auto g : got) EXPECT_NE(g, Store::BlobCheck::quarantined);
}

// A descriptor opened before another check quarantined the blob is refused too.
TEST_F(ImmutableTest, AlreadyOpenDescriptorOfAQuarantinedBlobIsRefused) {
    const stdfs::path f = src / "loras/a.ckpt";
    write_random_file(f, 50000, 18);
    const std::string sha = sha256_hex_of_file(f);
    import_one(f, false);
    UniqueFd early = s().blobs().open_blob(*Sha256::from_hex(sha));
    scribble(blob(sha), "bad");
    EXPECT_EQ(check(sha), Store::BlobCheck::quarantined);
    EXPECT_EQ(s().check_blob(*Sha256::from_hex(sha), early.get()), Store::BlobCheck::quarantined);
}

// Stores written before the stat record: the first open hashes the blob, then records it.
TEST_F(ImmutableTest, RecordWithoutStatIsHashedOnceThenRecorded) {
    const stdfs::path f = src / "loras/a.ckpt";
    write_random_file(f, 50000, 13);
    const std::string sha = sha256_hex_of_file(f);
    import_one(f, false);
    {
        auto txn = s().catalog().write();
        auto r = txn.get_blob(*Sha256::from_hex(sha));
        r->seen.reset();
        txn.put_blob(*Sha256::from_hex(sha), *r);
        txn.commit();
    }
    const auto before = Store::blob_rehashes();
    EXPECT_EQ(check(sha), Store::BlobCheck::rehashed);
    EXPECT_TRUE(record(sha).seen);
    EXPECT_EQ(check(sha), Store::BlobCheck::ok);
    EXPECT_EQ(Store::blob_rehashes(), before + 1);
}

// A full verify records the stat of what it hashed: the next open needs no hash.
TEST_F(ImmutableTest, VerifyRecordsTheStatOfWhatItHashed) {
    const stdfs::path f = src / "loras/a.ckpt";
    write_random_file(f, 50000, 16);
    const std::string sha = sha256_hex_of_file(f);
    import_one(f, false);
    {
        auto txn = s().catalog().write();
        auto r = txn.get_blob(*Sha256::from_hex(sha));
        r->seen.reset();
        txn.put_blob(*Sha256::from_hex(sha), *r);
        txn.commit();
    }
    EXPECT_TRUE(s().verify(false).problems.empty());
    EXPECT_TRUE(record(sha).seen);
    const auto before = Store::blob_rehashes();
    EXPECT_EQ(check(sha), Store::BlobCheck::ok);
    EXPECT_EQ(Store::blob_rehashes(), before);
}

// A link change of another name (the ingest unlinking the overlay name) moves only the ctime:
// record_blob_stat follows it; a change of the bytes is never vouched for.
TEST_F(ImmutableTest, RecordBlobStatFollowsOnlyLinkChanges) {
    const stdfs::path mine = root / "views/comfyui/loras/mine.safetensors";
    stdfs::create_directories(mine.parent_path());
    write_sized_safetensors(mine, 100000, 14);
    const std::string sha = sha256_hex_of_file(mine);
    commit_file(mine, "mine");
    ::usleep(10000);
    stdfs::remove(mine);  // as the ingest does after the commit
    EXPECT_TRUE(s().record_blob_stat(*Sha256::from_hex(sha)));
    const auto before = Store::blob_rehashes();
    EXPECT_EQ(check(sha), Store::BlobCheck::ok);
    EXPECT_EQ(Store::blob_rehashes(), before);

    scribble(blob(sha), "changed");
    EXPECT_FALSE(s().record_blob_stat(*Sha256::from_hex(sha)));
    EXPECT_EQ(check(sha), Store::BlobCheck::quarantined);
}

TEST_F(ImmutableTest, VerifyFastHashesABlobWhoseStatMoved) {
    const stdfs::path f = src / "loras/a.ckpt";
    write_random_file(f, 50000, 15);
    const std::string sha = sha256_hex_of_file(f);
    import_one(f, false);
    const stdfs::path b = blob(sha);
    const struct stat st = stat_of(b);
    scribble(b, "tampered");
    restore_mtime(b, st);
    VerifyReport rep = s().verify(true);
    ASSERT_EQ(rep.problems.size(), 1u);
    EXPECT_EQ(rep.problems[0].what, "corrupt");
    EXPECT_NE(rep.problems[0].detail.find("SHA-256"), std::string::npos) << rep.problems[0].detail;
    EXPECT_EQ(record(sha).state, BlobState::quarantined);
}

}  // namespace
