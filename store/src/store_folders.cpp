#include "modelfs/store/store_folders.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <spdlog/spdlog.h>

#include "modelfs/store/unique_fd.h"

namespace modelfs {

void make_store_folders_private(const std::filesystem::path& store) {
    struct stat root;
    if (::stat(store.c_str(), &root) != 0) return;  // Store::open says what is wrong
    const auto views = store / "views";
    if (::mkdir(views.c_str(), 0700) != 0 && errno != EEXIST)
        spdlog::warn("cannot create {}: {}", views.string(), std::strerror(errno));
    for (const char* name :
         {"views", "blobs", "staging", "quarantine", "partial", "catalog", "adopt"}) {
        const bool owner_only = std::strcmp(name, "views") == 0;
        const mode_t allowed = S_ISGID | 0700 | (owner_only ? 0 : (root.st_mode & 0050));
        const auto folder = store / name;
        UniqueFd fd(::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        struct stat st {};
        if (!fd && errno == ENOENT) continue;  // made when needed, and narrowed then
        if (fd && ::fstat(fd.get(), &st) == 0) {
            const mode_t want = st.st_mode & 07777 & allowed;
            if (want == (st.st_mode & 07777) || ::fchmod(fd.get(), want) == 0) continue;
        }
        spdlog::warn("cannot make {} reachable only by the store's owner{}: {}", folder.string(),
                     owner_only ? "" : " and group", std::strerror(errno));
    }
}

}  // namespace modelfs
