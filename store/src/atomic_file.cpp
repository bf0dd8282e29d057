#include "modelfs/store/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "modelfs/store/blob_store.h"
#include "modelfs/store/errors.h"
#include "modelfs/store/unique_fd.h"

namespace modelfs {

void write_file_atomically(const std::filesystem::path& file, std::string_view text, mode_t mode) {
    std::filesystem::path tmp = file;
    tmp += ".tmp" + std::to_string(::getpid());
    // A leftover of a crashed writer (maybe of another mode) is replaced, never reused.
    if (::unlink(tmp.c_str()) != 0 && errno != ENOENT)
        throw_errno("removing " + tmp.string(), errno);
    {
        UniqueFd fd(
            ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode));
        if (!fd) throw_errno("creating " + tmp.string(), errno);
        try {
            pwrite_all(fd.get(), text.data(), text.size(), 0, tmp.string());
            fsync_or_throw(fd.get(), tmp.string());
        } catch (...) {
            ::unlink(tmp.c_str());
            throw;
        }
    }
    if (::rename(tmp.c_str(), file.c_str()) != 0) {
        const int err = errno;
        ::unlink(tmp.c_str());
        throw_errno("renaming " + tmp.string() + " to " + file.string(), err);
    }
    fsync_dir(file.parent_path().empty() ? std::filesystem::path(".") : file.parent_path());
}

}  // namespace modelfs
