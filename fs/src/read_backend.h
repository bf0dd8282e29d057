// How file contents reach the kernel, behind one small interface. Today's backend replies to
// every read with the file's descriptor, so libfuse splices the pages without copying them.
// libfuse 3.17 adds FUSE passthrough (the kernel reads the backing file itself, at native speed);
// a backend using it registers the descriptor at open and never sees a read.
#pragma once

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

#include <memory>

#include "modelfs/store/unique_fd.h"

namespace modelfs::fs {

class ReadBackend {
  public:
    virtual ~ReadBackend() = default;
    // Replies to an open of a file whose bytes are `fd` (owned from now on). `immutable`: the
    // bytes never change (a blob), so the kernel may keep its page cache across opens. Returns
    // false when the reply could not be sent (the opener was interrupted; `fd` is closed).
    virtual bool open(fuse_req_t req, fuse_file_info* fi, UniqueFd fd, bool immutable) = 0;
    virtual void read(fuse_req_t req, fuse_file_info* fi, size_t size, off_t off) = 0;
    virtual void release(fuse_file_info* fi) = 0;
};

std::unique_ptr<ReadBackend> make_splice_read_backend();

}  // namespace modelfs::fs
