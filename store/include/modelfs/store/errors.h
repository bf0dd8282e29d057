// Errors raised by the store (and by fetch and the layouts, which share this model). Each carries
// a kind and a message that names the path or hash involved and, where there is one, what to do
// about it. What a kind means outside, the errno a tool gets through a mount and the CLI's exit
// code, is one row of meaning_of(): nothing else maps kinds.
#pragma once

#include <cerrno>
#include <stdexcept>
#include <string>

namespace modelfs {

enum class ErrorKind {
    bad_input,   // the user's file or argument is wrong (malformed header, unknown category, ...)
    not_found,   // no such model, hash, path
    no_store,    // the folder is not a store, or the store cannot be opened
    schema,      // the store was written by a newer modelfs
    no_space,    // ENOSPC / EDQUOT while writing
    io,          // any other I/O failure
    corrupt,     // stored content does not match its hash
    conflict,    // ambiguous name or hash prefix, name already taken by other content, ...
    not_empty,   // a folder that must be empty is not
    permission,  // the file system refused access (EACCES)
    not_permitted,  // the operation is not allowed on this object (EPERM)
    read_only,      // a read-only place (EROFS)
    busy,           // in use by someone else (EBUSY)
    name_too_long,  // a name longer than the file system takes (ENAMETOOLONG)
    unauthorized,   // a server refused the credentials (HTTP 401/403)
};

// The CLI's exit code for a kind, as tools/cli.h's ExitCode numbers them (checked there).
inline constexpr int kExitFailed = 1, kExitNotFound = 3, kExitNoStore = 4;

struct ErrorMeaning {
    int errno_value;  // what a tool gets at the FUSE boundary
    int exit_code;    // what the CLI exits with
};

// Every kind's meaning, one row each (the switch has no default: a new kind needs its row).
constexpr ErrorMeaning meaning_of(ErrorKind k) {
    // clang-format off
    switch (k) {
        case ErrorKind::bad_input:     return {EINVAL, kExitFailed};
        case ErrorKind::not_found:     return {ENOENT, kExitNotFound};
        case ErrorKind::no_store:      return {EIO, kExitNoStore};
        case ErrorKind::schema:        return {EIO, kExitNoStore};
        case ErrorKind::no_space:      return {ENOSPC, kExitFailed};
        case ErrorKind::io:            return {EIO, kExitFailed};
        case ErrorKind::corrupt:       return {EIO, kExitFailed};
        case ErrorKind::conflict:      return {EEXIST, kExitFailed};
        case ErrorKind::not_empty:     return {ENOTEMPTY, kExitFailed};
        case ErrorKind::permission:    return {EACCES, kExitFailed};
        case ErrorKind::not_permitted: return {EPERM, kExitFailed};
        case ErrorKind::read_only:     return {EROFS, kExitFailed};
        case ErrorKind::busy:          return {EBUSY, kExitFailed};
        case ErrorKind::name_too_long: return {ENAMETOOLONG, kExitFailed};
        case ErrorKind::unauthorized:  return {EACCES, kExitFailed};
    }
    // clang-format on
    return {EIO, kExitFailed};
}
constexpr int errno_for(ErrorKind k) {
    return meaning_of(k).errno_value;
}
constexpr int exit_code_for(ErrorKind k) {
    return meaning_of(k).exit_code;
}

class StoreError : public std::runtime_error {
  public:
    StoreError(ErrorKind kind, const std::string& message)
        : std::runtime_error(message), kind_(kind) {}
    ErrorKind kind() const { return kind_; }

  private:
    ErrorKind kind_;
};

// The kind of a failed system call's errno: ENOSPC/EDQUOT no_space, the errnos that have a kind
// of their own (EACCES, EPERM, EROFS, EBUSY, ENAMETOOLONG, ENOTEMPTY) that kind, the rest io.
// ENOENT stays io: a file vanishing under the store is an I/O failure, not a missing model.
ErrorKind kind_of_errno(int err);

// Builds the right StoreError for a failed system call (kind_of_errno), with a hint for a full
// disk. `what` says what was being done ("writing /store/staging/x").
[[noreturn]] void throw_errno(const std::string& what, int err);

}  // namespace modelfs
