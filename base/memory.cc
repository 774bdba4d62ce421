#include "base/memory.h"

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
