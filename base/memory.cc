#include "base/memory.h"

// Any C library header defines __GLIBC__ (through <features.h>); without one
// before the test below, it is undefined there and the trim silently does
// nothing.
#include <cstdlib>
#include <cstring>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace dcasgd {

void ReturnFreeMemoryToSystem() {
#if defined(__GLIBC__)
  malloc_trim(0);
#endif
}

void TuneAllocatorForLargeMessages() {
#if defined(__GLIBC__)
  const char* defaults = std::getenv("DCASGD_MALLOC_DEFAULTS");
  if (defaults != nullptr && std::strcmp(defaults, "1") == 0) return;
  // The largest threshold glibc accepts on 64-bit (HEAP_MAX_SIZE / 2):
  // only allocations above 32 MiB are mapped on their own.
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  // The heap top is returned only by ReturnFreeMemoryToSystem's trim.
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
#endif
}

}  // namespace dcasgd
