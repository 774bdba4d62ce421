#ifndef DCASGD_BASE_BACKOFF_H_
#define DCASGD_BASE_BACKOFF_H_

#include <cstdint>
#include <optional>
#include <random>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"

namespace dcasgd {

// Retrying calls to a peer that may be restarting, shutting down or hung.

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

  // Cheap to construct: the random generator is seeded (from
  // std::random_device, which opens a device) only when Next() is first
  // called, since most calls that make a Backoff never retry.
  explicit Backoff(const Options& options);
  // `seed` makes the jitter reproducible in tests.
  Backoff(const Options& options, uint64_t seed);

  // The delay before the next attempt.
  absl::Duration Next();

 private:
  const Options options_;
  absl::Duration current_;        // before jitter
  std::optional<uint64_t> seed_;  // unset: std::random_device at first use
  std::optional<std::mt19937_64> rng_;
};

// Errors of a peer restarting (UNAVAILABLE), shutting down with the call in
// flight (CANCELLED) or hung (DEADLINE_EXCEEDED): the call is worth repeating
// (every dcasgd call is safe to repeat; pushes thanks to their step).
bool IsTransient(const absl::Status& status);

struct RetryPolicy {
  Backoff::Options backoff;
  // No attempt starts once this much time has passed since the first one.
  absl::Duration patience = absl::Minutes(5);
};

// Calls `attempt` until it returns OK, an error `retryable` rejects, or an
// error once `policy.patience` has passed since the first call; before each
// retry calls `on_retry(error)` (to log it) and waits the next backoff delay.
// With `stop`, the wait ends when it is notified and the last error is
// returned. Returns the last status. Blocks the calling thread.
absl::Status RetryWithBackoff(const RetryPolicy& policy, absl::FunctionRef<absl::Status()> attempt,
                              absl::FunctionRef<bool(const absl::Status&)> retryable,
                              absl::FunctionRef<void(const absl::Status&)> on_retry,
                              const absl::Notification* stop = nullptr);

}  // namespace dcasgd

#endif  // DCASGD_BASE_BACKOFF_H_
