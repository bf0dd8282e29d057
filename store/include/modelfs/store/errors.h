// Errors raised by the store. Each carries a kind (so the CLI can pick an exit code) and a
// message that names the path or hash involved and, where there is one, what to do about it.
#pragma once

#include <stdexcept>
#include <string>

namespace modelfs {

enum class ErrorKind {
    bad_input,  // the user's file or argument is wrong (malformed header, unknown category, ...)
    not_found,  // no such model, hash, path
    no_store,   // the folder is not a store, or the store cannot be opened
    schema,     // the store was written by a newer modelfs
    no_space,   // ENOSPC / EDQUOT while writing
    io,         // any other I/O failure
    corrupt,    // stored content does not match its hash
    conflict,   // ambiguous name or hash prefix, name already taken by other content, ...
};

class StoreError : public std::runtime_error {
  public:
    StoreError(ErrorKind kind, const std::string& message)
        : std::runtime_error(message), kind_(kind) {}
    ErrorKind kind() const { return kind_; }

  private:
    ErrorKind kind_;
};

// Builds the right StoreError for a failed system call: ENOSPC/EDQUOT become no_space with a hint,
// everything else io. `what` says what was being done ("writing /store/staging/x").
[[noreturn]] void throw_errno(const std::string& what, int err);

}  // namespace modelfs
