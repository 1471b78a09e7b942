// Command-line tools exit 1 for "the operation failed" and 2 for usage
// errors, but absl::ParseCommandLine exits 1 on a bad flag. CheckFlags()
// validates argv first with absl's syntax (-f/--f, =value or the next
// argument, --nobool, "--" ends flags) so a tool can report usage errors
// with its own status.
#ifndef SEGKV_CLIENT_FLAG_CHECK_H_
#define SEGKV_CLIENT_FLAG_CHECK_H_

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace segkv::client {

// INVALID_ARGUMENT for an unknown flag, a missing value, or a bad value of
// a flag defined in the same file as `own_flag` (built-in flags such as
// --flagfile are left to absl). Usage flags (--help...) pass.
absl::Status CheckFlags(int argc, char** argv, absl::string_view own_flag);

}  // namespace segkv::client

#endif  // SEGKV_CLIENT_FLAG_CHECK_H_
