// The one error model: each kind's errno at the FUSE boundary and its exit code come from one
// row (meaning_of), and failed system calls get the kind their errno names.
#include "modelfs/store/errors.h"

#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace modelfs {
namespace {

TEST(ErrorModel, EachKindHasTheErrnoAToolExpects) {
    EXPECT_EQ(errno_for(ErrorKind::bad_input), EINVAL);
    EXPECT_EQ(errno_for(ErrorKind::not_found), ENOENT);
    EXPECT_EQ(errno_for(ErrorKind::no_space), ENOSPC);
    EXPECT_EQ(errno_for(ErrorKind::io), EIO);
    EXPECT_EQ(errno_for(ErrorKind::corrupt), EIO);
    EXPECT_EQ(errno_for(ErrorKind::conflict), EEXIST);
    EXPECT_EQ(errno_for(ErrorKind::not_empty), ENOTEMPTY);
    EXPECT_EQ(errno_for(ErrorKind::permission), EACCES);
    EXPECT_EQ(errno_for(ErrorKind::not_permitted), EPERM);
    EXPECT_EQ(errno_for(ErrorKind::read_only), EROFS);
    EXPECT_EQ(errno_for(ErrorKind::busy), EBUSY);
    EXPECT_EQ(errno_for(ErrorKind::name_too_long), ENAMETOOLONG);
    EXPECT_EQ(errno_for(ErrorKind::unauthorized), EACCES);
}

// The exit codes README.md documents: 3 not found, 4 no usable store, 1 anything else.
TEST(ErrorModel, ExitCodesAreTheDocumentedOnes) {
    EXPECT_EQ(exit_code_for(ErrorKind::not_found), 3);
    EXPECT_EQ(exit_code_for(ErrorKind::no_store), 4);
    EXPECT_EQ(exit_code_for(ErrorKind::schema), 4);
    for (ErrorKind k : {ErrorKind::bad_input, ErrorKind::no_space, ErrorKind::io,
                        ErrorKind::corrupt, ErrorKind::conflict, ErrorKind::unauthorized,
                        ErrorKind::permission, ErrorKind::read_only})
        EXPECT_EQ(exit_code_for(k), 1) << static_cast<int>(k);
}

TEST(ErrorModel, FailedSystemCallsGetTheKindOfTheirErrno) {
    auto kind_thrown = [](int err, std::string* what) {
        try {
            throw_errno("writing /store/staging/x", err);
        } catch (const StoreError& e) {
            *what = e.what();
            return e.kind();
        }
    };
    std::string what;
    EXPECT_EQ(kind_thrown(ENOSPC, &what), ErrorKind::no_space);
    EXPECT_NE(what.find("modelfs gc"), std::string::npos) << what;  // what to do about it
    EXPECT_NE(what.find("/store/staging/x"), std::string::npos) << what;
    EXPECT_EQ(kind_thrown(EDQUOT, &what), ErrorKind::no_space);
    EXPECT_EQ(kind_thrown(EACCES, &what), ErrorKind::permission);
    EXPECT_EQ(kind_thrown(EPERM, &what), ErrorKind::not_permitted);
    EXPECT_EQ(kind_thrown(EROFS, &what), ErrorKind::read_only);
    EXPECT_EQ(kind_thrown(EBUSY, &what), ErrorKind::busy);
    EXPECT_EQ(kind_thrown(ENAMETOOLONG, &what), ErrorKind::name_too_long);
    EXPECT_EQ(kind_thrown(ENOTEMPTY, &what), ErrorKind::not_empty);
    // A file vanishing under the store is an I/O failure, not a missing model (exit code 1).
    EXPECT_EQ(kind_thrown(ENOENT, &what), ErrorKind::io);
    EXPECT_EQ(kind_thrown(EISDIR, &what), ErrorKind::io);
    EXPECT_NE(what.find(std::strerror(EISDIR)), std::string::npos) << what;
    // A system call's errno comes back out at the FUSE boundary as it went in.
    for (int err : {ENOSPC, EACCES, EPERM, EROFS, EBUSY, ENAMETOOLONG, ENOTEMPTY, EIO})
        EXPECT_EQ(errno_for(kind_of_errno(err)), err) << err;
}

}  // namespace
}  // namespace modelfs
