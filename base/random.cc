#include "base/random.h"

#include <sys/random.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>

namespace dcasgd {
namespace {

class SecureRandom final : public RandomSource {
 public:
  uint64_t Next64() override {
    uint64_t value = 0;
    // getrandom never returns short reads for <= 256 bytes once the pool is
    // initialised; EINTR is the only error worth retrying.
    while (true) {
      const ssize_t n = getrandom(&value, sizeof(value), 0);
      if (n == static_cast<ssize_t>(sizeof(value))) return value;
      if (n < 0 && errno == EINTR) continue;
      // No randomness from the kernel (ENOSYS on a kernel older than 3.17):
      // ids could collide across restarts, which must not pass silently.
      std::fprintf(stderr, "dcasgd: getrandom(2) failed (errno %d); cannot make worker ids\n",
                   errno);
      std::abort();
    }
  }
};

}  // namespace

RandomSource* RandomSource::Secure() {
  static SecureRandom* source = new SecureRandom();  // never deleted: used until exit
  return source;
}

}  // namespace dcasgd
