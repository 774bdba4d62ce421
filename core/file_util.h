#ifndef DCASGD_CORE_FILE_UTIL_H_
#define DCASGD_CORE_FILE_UTIL_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace dcasgd {

// Replaces `path` with `contents` atomically: a temporary file in the same
// directory, fsync, rename, fsync of the directory (with `durable`; without,
// only the rename: for files such as port files that need not survive a
// crash). On failure `path` is unchanged and the temporary file removed; the
// error names the path and the failing step.
absl::Status WriteFileAtomically(const std::string& path, absl::string_view contents,
                                 bool durable = true);

// The whole file. NOT_FOUND when it does not exist.
absl::StatusOr<std::string> ReadWholeFile(const std::string& path);

}  // namespace dcasgd

#endif  // DCASGD_CORE_FILE_UTIL_H_
