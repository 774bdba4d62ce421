#ifndef DCASGD_CLIENT_RETRY_H_
#define DCASGD_CLIENT_RETRY_H_

#include <cstdint>
#include <random>

#include "absl/time/time.h"

namespace dcasgd {
namespace client {

// Exponential backoff with jitter for retrying UNAVAILABLE: the n-th call of
// Next() (n = 0, 1, ...) returns min(max, initial * multiplier^n) scaled by a
// uniform factor in [1 - jitter, 1 + jitter], and never more than `max`.
// Jitter spreads the retries of many workers after a shard restart.
// Not thread-safe: one Backoff per retry loop.
class Backoff {
 public:
  struct Options {
    absl::Duration initial = absl::Milliseconds(50);
    absl::Duration max = absl::Seconds(2);
    double multiplier = 2.0;  // >= 1
    double jitter = 0.2;      // in [0, 1)
  };

  // `seed` makes the jitter reproducible in tests.
  explicit Backoff(const Options& options, uint64_t seed = std::random_device{}());

  // The delay before the next attempt.
  absl::Duration Next();

 private:
  const Options options_;
  absl::Duration current_;  // before jitter
  std::mt19937_64 rng_;
};

}  // namespace client
}  // namespace dcasgd

#endif  // DCASGD_CLIENT_RETRY_H_
