#include "base/memory.h"

// Any C library header defines __GLIBC__ (through <features.h>); without one
// before the test below, it is undefined there and the trim silently does
// nothing.
#include <cstdlib>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace dcasgd {

void ReturnFreeMemoryToSystem() {
#if defined(__GLIBC__)
  malloc_trim(0);
#endif
}

}  // namespace dcasgd
