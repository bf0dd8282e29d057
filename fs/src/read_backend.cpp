#include "read_backend.h"

#include <unistd.h>

namespace modelfs::fs {
namespace {

class SpliceReadBackend final : public ReadBackend {
  public:
    bool open(fuse_req_t req, fuse_file_info* fi, UniqueFd fd, bool immutable) override {
        fi->fh = static_cast<std::uint64_t>(fd.get());
        fi->keep_cache = immutable ? 1 : 0;
        if (fuse_reply_open(req, fi) != 0) return false;
        fd.release();  // closed in release()
        return true;
    }
    void read(fuse_req_t req, fuse_file_info* fi, size_t size, off_t off) override {
        fuse_bufvec buf = FUSE_BUFVEC_INIT(size);
        buf.buf[0].flags = static_cast<fuse_buf_flags>(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
        buf.buf[0].fd = static_cast<int>(fi->fh);
        buf.buf[0].pos = off;
        // Not FUSE_BUF_SPLICE_MOVE: moving would take the pages out of the blob's page cache.
        fuse_reply_data(req, &buf, static_cast<fuse_buf_copy_flags>(0));
    }
    void release(fuse_file_info* fi) override { ::close(static_cast<int>(fi->fh)); }
};

}  // namespace

std::unique_ptr<ReadBackend> make_splice_read_backend() {
    return std::make_unique<SpliceReadBackend>();
}

}  // namespace modelfs::fs
