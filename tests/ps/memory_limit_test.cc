#include "services/ps/memory_limit.h"

#include <unistd.h>

#include <cstdio>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/ps_process.h"

namespace dcasgd {
namespace {

using ::testing::HasSubstr;

uint64_t PhysicalMemory() {
  return static_cast<uint64_t>(sysconf(_SC_PHYS_PAGES)) *
         static_cast<uint64_t>(sysconf(_SC_PAGE_SIZE));
}

void Write(const std::string& path, const std::string& text) {
  ASSERT_EQ(system(("mkdir -p '" + path.substr(0, path.rfind('/')) + "'").c_str()), 0);
  FILE* f = std::fopen(path.c_str(), "w");
  ASSERT_NE(f, nullptr) << path;
  std::fputs(text.c_str(), f);
  std::fclose(f);
}

class MemoryLimitTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::string> dir = testing::MakeTempDir("memory-limit");
    ASSERT_TRUE(dir.ok()) << dir.status();
    root_ = *dir;
  }
  void TearDown() override { testing::RemoveTree(root_); }
  std::string root_;
};

TEST_F(MemoryLimitTest, CgroupV2TakesTheSmallestLimitUpTheTree) {
  Write(root_ + "/proc/self/cgroup", "0::/kubepods/pod1/ctr\n");
  Write(root_ + "/sys/fs/cgroup/kubepods/pod1/ctr/memory.max", "max\n");
  Write(root_ + "/sys/fs/cgroup/kubepods/pod1/memory.max", "2147483648\n");
  Write(root_ + "/sys/fs/cgroup/kubepods/memory.max", "4294967296\n");
  const MemoryLimit limit = DetectMemoryLimit(root_);
  EXPECT_EQ(limit.bytes, std::min<uint64_t>(2147483648u, PhysicalMemory()));
  if (limit.bytes == 2147483648u) {
    EXPECT_THAT(limit.source, HasSubstr("pod1/memory.max"));
  }
}

TEST_F(MemoryLimitTest, CgroupV1MemoryController) {
  Write(root_ + "/proc/self/cgroup", "5:cpu,cpuacct:/x\n4:memory:/job/a\n0::/\n");
  Write(root_ + "/sys/fs/cgroup/memory/job/a/memory.limit_in_bytes", "536870912\n");
  // v1's "unlimited" is a huge number, never below physical memory.
  Write(root_ + "/sys/fs/cgroup/memory/memory.limit_in_bytes", "9223372036854771712\n");
  EXPECT_EQ(DetectMemoryLimit(root_).bytes, std::min<uint64_t>(536870912u, PhysicalMemory()));
}

TEST_F(MemoryLimitTest, PhysicalMemoryWithoutALimit) {
  Write(root_ + "/proc/self/cgroup", "0::/\n");
  Write(root_ + "/sys/fs/cgroup/memory.max", "max\n");
  const MemoryLimit limit = DetectMemoryLimit(root_);
  EXPECT_EQ(limit.bytes, PhysicalMemory());
  EXPECT_EQ(limit.source, "physical memory");
  // Nothing readable at all: the same.
  EXPECT_EQ(DetectMemoryLimit(root_ + "/nowhere").bytes, PhysicalMemory());
}

TEST(MemoryLimit, ThisProcessHasOne) {
  const MemoryLimit limit = DetectMemoryLimit();
  EXPECT_GT(limit.bytes, 0u);
  EXPECT_LE(limit.bytes, PhysicalMemory());
}

}  // namespace
}  // namespace dcasgd
