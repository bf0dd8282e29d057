#include "modelfs/store/errors.h"

#include <cerrno>
#include <cstring>

namespace modelfs {

void throw_errno(const std::string& what, int err) {
    if (err == ENOSPC || err == EDQUOT) {
        throw StoreError(ErrorKind::no_space,
                         what + ": " + std::strerror(err) +
                             " (free some space, e.g. `modelfs gc`, then run the command again)");
    }
    throw StoreError(ErrorKind::io, what + ": " + std::strerror(err));
}

}  // namespace modelfs
