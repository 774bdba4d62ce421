#include "base/backoff.h"

#include <algorithm>

#include "absl/time/clock.h"

namespace dcasgd {

Backoff::Backoff(const Options& options)
    : options_(options), current_(std::min(options.initial, options.max)) {}

Backoff::Backoff(const Options& options, uint64_t seed)
    : options_(options), current_(std::min(options.initial, options.max)), seed_(seed) {}

absl::Duration Backoff::Next() {
  absl::Duration delay = current_;
  if (options_.jitter > 0) {
    if (!rng_.has_value()) rng_.emplace(seed_.has_value() ? *seed_ : std::random_device{}());
    std::uniform_real_distribution<double> factor(1.0 - options_.jitter, 1.0 + options_.jitter);
    delay = delay * factor(*rng_);
  }
  current_ = std::min(options_.max, current_ * std::max(1.0, options_.multiplier));
  return std::min(delay, options_.max);
}

bool IsTransient(const absl::Status& status) {
  return absl::IsUnavailable(status) || absl::IsCancelled(status) ||
         absl::IsDeadlineExceeded(status);
}

absl::Status RetryWithBackoff(const RetryPolicy& policy, absl::FunctionRef<absl::Status()> attempt,
                              absl::FunctionRef<bool(const absl::Status&)> retryable,
                              absl::FunctionRef<void(const absl::Status&)> on_retry,
                              const absl::Notification* stop) {
  Backoff backoff(policy.backoff);
  const absl::Time give_up = absl::Now() + policy.patience;
  while (true) {
    absl::Status status = attempt();
    if (status.ok() || !retryable(status) || absl::Now() > give_up) return status;
    on_retry(status);
    const absl::Duration delay = backoff.Next();
    if (stop == nullptr) {
      absl::SleepFor(delay);
    } else if (stop->WaitForNotificationWithTimeout(delay)) {
      return status;
    }
  }
}

}  // namespace dcasgd
