#ifndef DCASGD_SERVICES_PS_MEMORY_LIMIT_H_
#define DCASGD_SERVICES_PS_MEMORY_LIMIT_H_

#include <cstdint>
#include <string>

namespace dcasgd {

// Where the memory limit of this process came from, and its value.
struct MemoryLimit {
  uint64_t bytes = 0;
  std::string source;  // "cgroup v2 /sys/fs/cgroup/.../memory.max", "physical memory"
};

// The memory this process may use: the smallest limit of its cgroup (v2
// memory.max, or v1 memory.limit_in_bytes, of its own cgroup and every
// parent, as /proc/self/cgroup names them) and the machine's physical
// memory. `root` prefixes every path read (tests point it at a fake tree;
// "" in production). Never fails: unreadable files are skipped.
MemoryLimit DetectMemoryLimit(const std::string& root = "");

}  // namespace dcasgd

#endif  // DCASGD_SERVICES_PS_MEMORY_LIMIT_H_
