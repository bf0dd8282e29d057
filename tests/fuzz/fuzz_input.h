// What every fuzz target shares: the input as a string_view, and the input as an open file for
// the parsers that read from a file descriptor (GGUF, the completeness check), without touching
// the disk.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

namespace modelfs::fuzz {

inline std::string_view as_text(const std::uint8_t* data, std::size_t size) {
    return {reinterpret_cast<const char*>(data), size};
}

// One memfd reused for every input: a fresh file per input would make the kernel, not the
// parser, the cost of each run. Never closed: it lives as long as the fuzzing process.
class MemFile {
  public:
    MemFile() : fd_(memfd_create("modelfs-fuzz", MFD_CLOEXEC)) {
        if (fd_ < 0) {
            std::perror("memfd_create");
            std::abort();
        }
    }
    MemFile(const MemFile&) = delete;
    MemFile& operator=(const MemFile&) = delete;
    ~MemFile() { ::close(fd_); }

    // The file's content becomes `bytes`; returns the descriptor.
    int hold(std::string_view bytes) {
        if (::ftruncate(fd_, 0) != 0) {
            std::perror("ftruncate");
            std::abort();
        }
        std::size_t done = 0;
        while (done < bytes.size()) {
            ssize_t n =
                ::pwrite(fd_, bytes.data() + done, bytes.size() - done, static_cast<off_t>(done));
            if (n <= 0) {
                std::perror("pwrite");
                std::abort();
            }
            done += static_cast<std::size_t>(n);
        }
        return fd_;
    }

  private:
    int fd_;
};

}  // namespace modelfs::fuzz
