#include "base/port_file.h"

#include "absl/strings/str_cat.h"
#include "base/file.h"

namespace dcasgd {

absl::Status WritePortFile(const std::string& path,
                           const std::vector<std::pair<std::string, int>>& ports) {
  std::string contents;
  for (const auto& [name, port] : ports) absl::StrAppend(&contents, name, " ", port, "\n");
  return WriteFileAtomically(path, contents, /*durable=*/false);
}

}  // namespace dcasgd
