#include "base/memory.h"

#include <malloc.h>

#include <cstdlib>
#include <cstring>

#include "gtest/gtest.h"

namespace dcasgd {
namespace {

// Allocations glibc maps on their own (mmap) right now.
size_t MappedBlocks() { return mallinfo2().hblks; }

// A buffer of `mib` MiB, written so that it is really used.
void* Buffer(size_t mib) {
  void* p = std::malloc(mib << 20);
  std::memset(p, 1, mib << 20);
  return p;
}

// One process, so glibc's default first and the tuned allocator after it.
// By default glibc maps a block above its threshold (128 KiB at first) and,
// freeing it, raises the threshold to that block's size: each step below
// asks for more than the step before, so only the tuning keeps it off mmap.
TEST(TuneAllocatorForLargeMessages, LargeMessagesComeFromTheHeapNotFromMmap) {
  const size_t before = MappedBlocks();
  void* by_default = Buffer(8);
  EXPECT_EQ(MappedBlocks(), before + 1);
  std::free(by_default);

  setenv("DCASGD_MALLOC_DEFAULTS", "1", 1);
  TuneAllocatorForLargeMessages();  // keeps the defaults
  void* still_default = Buffer(16);
  EXPECT_EQ(MappedBlocks(), before + 1);
  std::free(still_default);

  unsetenv("DCASGD_MALLOC_DEFAULTS");
  TuneAllocatorForLargeMessages();
  void* tuned = Buffer(24);
  EXPECT_EQ(MappedBlocks(), before) << "a 24 MiB allocation must come from the heap";
  std::free(tuned);
  // The heap keeps the freed buffer for the next message (no trim at free);
  // the explicit trim still returns it.
  const size_t kept = mallinfo2().fordblks;
  EXPECT_GE(kept, size_t{24} << 20);
  ReturnFreeMemoryToSystem();
}

}  // namespace
}  // namespace dcasgd
