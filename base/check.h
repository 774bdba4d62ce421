#ifndef DCASGD_BASE_CHECK_H_
#define DCASGD_BASE_CHECK_H_

#include <cstdio>
#include <cstdlib>

// CHECK for programmer errors only (never for input): prints the failed
// condition and aborts. Abseil 20220623 (Debian 12) has no absl/log.
#define DCASGD_CHECK(cond)                                                          \
  do {                                                                              \
    if (!(cond)) {                                                                  \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                 \
    }                                                                               \
  } while (0)

#endif  // DCASGD_BASE_CHECK_H_
