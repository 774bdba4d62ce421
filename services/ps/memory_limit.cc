#include "services/ps/memory_limit.h"

#include <unistd.h>

#include <fstream>
#include <sstream>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"

namespace dcasgd {

namespace {

bool ReadSmallFile(const std::string& path, std::string* text) {
  std::ifstream in(path);
  if (!in) return false;
  std::ostringstream out;
  out << in.rdbuf();
  *text = out.str();
  return true;
}

// The limit in a memory.max / memory.limit_in_bytes file; false for "max",
// unreadable or unparsable files.
bool ReadLimit(const std::string& path, uint64_t* bytes) {
  std::string text;
  if (!ReadSmallFile(path, &text)) return false;
  return absl::SimpleAtoi(absl::StripAsciiWhitespace(text), bytes);
}

// `path` ("/a/b") and each of its parents up to "/" (limits are hierarchical:
// the smallest one on the way to the root applies).
std::vector<std::string> SelfAndParents(std::string path) {
  std::vector<std::string> out;
  while (!path.empty() && path != "/") {
    out.push_back(path);
    path = path.substr(0, path.rfind('/'));
  }
  out.push_back("");
  return out;
}

}  // namespace

MemoryLimit DetectMemoryLimit(const std::string& root) {
  MemoryLimit limit;
  limit.bytes = static_cast<uint64_t>(sysconf(_SC_PHYS_PAGES)) *
                static_cast<uint64_t>(sysconf(_SC_PAGE_SIZE));
  limit.source = "physical memory";
  auto consider = [&limit](const std::string& path) {
    uint64_t bytes = 0;
    if (ReadLimit(path, &bytes) && bytes > 0 && bytes < limit.bytes) {
      limit.bytes = bytes;
      limit.source = path;
    }
  };
  std::string cgroups;
  if (!ReadSmallFile(root + "/proc/self/cgroup", &cgroups)) return limit;
  for (absl::string_view line : absl::StrSplit(cgroups, '\n', absl::SkipEmpty())) {
    // "hierarchy-id:controllers:path"; v2 is "0::path".
    std::vector<std::string> parts = absl::StrSplit(line, absl::MaxSplits(':', 2));
    if (parts.size() != 3) continue;
    if (parts[0] == "0" && parts[1].empty()) {
      for (const std::string& dir : SelfAndParents(parts[2])) {
        consider(absl::StrCat(root, "/sys/fs/cgroup", dir, "/memory.max"));
      }
    }
    for (absl::string_view controller : absl::StrSplit(parts[1], ',')) {
      if (controller != "memory") continue;
      // v1: "unlimited" is a huge number, above physical memory.
      for (const std::string& dir : SelfAndParents(parts[2])) {
        consider(absl::StrCat(root, "/sys/fs/cgroup/memory", dir, "/memory.limit_in_bytes"));
      }
    }
  }
  return limit;
}

}  // namespace dcasgd
