#include "modelfs/store/errors.h"

#include <cerrno>
#include <cstring>

namespace modelfs {

ErrorKind kind_of_errno(int err) {
    switch (err) {
        case ENOSPC:
        case EDQUOT:
            return ErrorKind::no_space;
        case EACCES:
            return ErrorKind::permission;
        case EPERM:
            return ErrorKind::not_permitted;
        case EROFS:
            return ErrorKind::read_only;
        case EBUSY:
            return ErrorKind::busy;
        case ENAMETOOLONG:
            return ErrorKind::name_too_long;
        case ENOTEMPTY:
            return ErrorKind::not_empty;
        default:
            return ErrorKind::io;
    }
}

void throw_errno(const std::string& what, int err) {
    const ErrorKind kind = kind_of_errno(err);
    std::string message = what + ": " + std::strerror(err);
    if (kind == ErrorKind::no_space)
        message += " (free some space, e.g. `modelfs gc`, then run the command again)";
    throw StoreError(kind, message);
}

}  // namespace modelfs
