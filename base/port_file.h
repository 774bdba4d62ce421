#ifndef DCASGD_BASE_PORT_FILE_H_
#define DCASGD_BASE_PORT_FILE_H_

#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"

namespace dcasgd {

// Writes "<name> <port>\n" for each of `ports` (e.g. {"grpc", 7000},
// {"metrics", 9100}) to `path` atomically, so that a process that started
// with port 0 tells tests and scripts which ports it bound, and a reader
// polling for the file never sees it half-written. Not made durable: a port
// file need not survive a crash.
absl::Status WritePortFile(const std::string& path,
                           const std::vector<std::pair<std::string, int>>& ports);

}  // namespace dcasgd

#endif  // DCASGD_BASE_PORT_FILE_H_
