#ifndef DCASGD_BASE_RANDOM_H_
#define DCASGD_BASE_RANDOM_H_

#include <cstdint>

namespace dcasgd {

// The source of random identifiers (worker ids), so tests can script them.
// Implementations are thread-safe.
class RandomSource {
 public:
  virtual ~RandomSource() = default;
  // 64 random bits.
  virtual uint64_t Next64() = 0;
  // The operating system's CSPRNG (getrandom(2)): ids drawn from it differ
  // across processes and restarts, unlike a counter. Process-wide; never
  // deleted.
  static RandomSource* Secure();
};

}  // namespace dcasgd

#endif  // DCASGD_BASE_RANDOM_H_
