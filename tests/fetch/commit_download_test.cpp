// Store::commit_download and record_fetch_error, without a network: a finished partial file
// becoming a blob, a wrong one quarantined, a placeholder replaced everywhere.
#include <fcntl.h>
#include <unistd.h>

#include "fetch_env.h"
#include "modelfs/store/errors.h"
#include "modelfs/store/unique_fd.h"

namespace modelfs::test {
namespace {

class CommitDownloadTest : public FetchEnv {
  protected:
    // A finished download of `bytes` in partial/.
    std::filesystem::path partial(const std::string& name, const std::string& bytes) {
        std::filesystem::create_directories(store().partial_dir());
        auto p = store().partial_dir() / name;
        modelfs::testing::write_text_file(p, bytes);
        return p;
    }
    FileDigests digests(const std::filesystem::path& p) {
        UniqueFd fd(::open(p.c_str(), O_RDONLY));
        return digest_fd(fd.get());
    }
};

TEST_F(CommitDownloadTest, RightContentBecomesThePresentBlob) {
    std::string bytes(100'000, 'a');
    Sha256 h = sha256_of(bytes);
    add_remote(h, bytes.size(), {"https://example.com/a"});
    auto p = partial("a.part", bytes);
    UniqueFd fd(::open(p.c_str(), O_RDWR));
    Sha256 got = store().commit_download(h, fd.get(), p, digests(p));
    EXPECT_EQ(got, h);
    EXPECT_TRUE(blob_file_is(h, bytes));
    EXPECT_FALSE(std::filesystem::exists(p));
    auto rec = record(h);
    EXPECT_EQ(rec->state, BlobState::present);
    EXPECT_TRUE(rec->xxh128);
    EXPECT_EQ(rec->sources.size(), 1u);
    EXPECT_GT(rec->ingested, 0);
}

TEST_F(CommitDownloadTest, WrongContentIsQuarantinedAndNothingCatalogued) {
    std::string bytes(5000, 'b');
    Sha256 h = sha256_of("something else");
    add_remote(h, bytes.size(), {"https://example.com/b"});
    auto p = partial("b.part", bytes);
    UniqueFd fd(::open(p.c_str(), O_RDWR));
    try {
        store().commit_download(h, fd.get(), p, digests(p));
        FAIL();
    } catch (const StoreError& e) {
        EXPECT_EQ(e.kind(), ErrorKind::corrupt);
        EXPECT_NE(std::string(e.what()).find(h.hex()), std::string::npos);
    }
    EXPECT_FALSE(std::filesystem::exists(p));
    EXPECT_EQ(files_in("blobs"), 0u);
    EXPECT_EQ(files_in("quarantine"), 1u);
    auto rec = record(h);
    EXPECT_EQ(rec->state, BlobState::remote);
    EXPECT_FALSE(rec->fetch_error.empty());
    EXPECT_GT(rec->fetch_failed_at, 0);
    EXPECT_FALSE(record(sha256_of(bytes)));
}

TEST_F(CommitDownloadTest, PlaceholderMergesIntoAnExistingRecordOfTheSameContent) {
    std::string bytes(3000, 'c');
    Sha256 real = sha256_of(bytes);
    Sha256 key = sha256_of("modelfs-placeholder:https://mirror/c");
    add_remote(real, bytes.size(), {"https://origin/c"});
    add_remote(key, bytes.size(), {"https://mirror/c"}, false, /*placeholder=*/true);
    {
        auto txn = store().catalog().write();
        auto r = *txn.get_blob(key);
        r.keep = true;
        txn.put_blob(key, r);
        txn.commit();
    }
    add_model("c", key, bytes.size());
    auto p = partial("c.part", bytes);
    UniqueFd fd(::open(p.c_str(), O_RDWR));
    EXPECT_EQ(store().commit_download(key, fd.get(), p, digests(p)), real);
    EXPECT_FALSE(record(key));
    auto rec = record(real);
    ASSERT_TRUE(rec);
    EXPECT_EQ(rec->state, BlobState::present);
    ASSERT_EQ(rec->sources.size(), 2u);
    EXPECT_EQ(rec->sources[0].url, "https://origin/c");
    EXPECT_EQ(rec->sources[1].url, "https://mirror/c");
    EXPECT_TRUE(rec->keep);
    EXPECT_EQ(*store().catalog().read().get_model("lora/c")->current_version().blob, real);
}

TEST_F(CommitDownloadTest, ContentAlreadyStoredCostsNothing) {
    std::string bytes(2000, 'd');
    Sha256 h = sha256_of(bytes);
    add_remote(h, bytes.size(), {"https://example.com/d"});
    auto p1 = partial("d1.part", bytes);
    UniqueFd fd1(::open(p1.c_str(), O_RDWR));
    store().commit_download(h, fd1.get(), p1, digests(p1));
    auto p2 = partial("d2.part", bytes);
    UniqueFd fd2(::open(p2.c_str(), O_RDWR));
    EXPECT_EQ(store().commit_download(h, fd2.get(), p2, digests(p2)), h);
    EXPECT_FALSE(std::filesystem::exists(p2));
    EXPECT_EQ(files_in("blobs"), 1u);
}

TEST_F(CommitDownloadTest, MissingRecordIsRefused) {
    std::string bytes(10, 'e');
    auto p = partial("e.part", bytes);
    UniqueFd fd(::open(p.c_str(), O_RDWR));
    try {
        store().commit_download(sha256_of(bytes), fd.get(), p, digests(p));
        FAIL();
    } catch (const StoreError& e) {
        EXPECT_EQ(e.kind(), ErrorKind::not_found);
    }
    EXPECT_EQ(files_in("blobs"), 0u);
}

TEST_F(CommitDownloadTest, FetchErrorsAreRecordedAndCleared) {
    Sha256 h = sha256_of("x");
    add_remote(h, 1, {"https://example.com/x"});
    store().record_fetch_error(h, "HTTP 500");
    EXPECT_EQ(record(h)->fetch_error, "HTTP 500");
    EXPECT_GT(record(h)->fetch_failed_at, 0);
    store().record_fetch_error(h, "");
    EXPECT_TRUE(record(h)->fetch_error.empty());
    EXPECT_EQ(record(h)->fetch_failed_at, 0);
    store().record_fetch_error(sha256_of("unknown"), "ignored");  // no record: nothing to do
}

TEST_F(CommitDownloadTest, SafetensorsHeaderIsRecorded) {
    // A minimal valid safetensors file: one F32 tensor of one element.
    std::string header = R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
    std::string bytes(8, '\0');
    std::uint64_t n = header.size();
    for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>(n >> (8 * i) & 0xff);
    bytes += header + std::string(4, '\0');
    Sha256 h = sha256_of(bytes);
    add_remote(h, bytes.size(), {"https://example.com/t.safetensors"});
    auto p = partial("t.part", bytes);
    UniqueFd fd(::open(p.c_str(), O_RDWR));
    store().commit_download(h, fd.get(), p, digests(p));
    EXPECT_EQ(record(h)->safetensors_header_len, header.size());
}

}  // namespace
}  // namespace modelfs::test
