#include "client/retry.h"

#include <algorithm>

namespace dcasgd {
namespace client {

Backoff::Backoff(const Options& options, uint64_t seed)
    : options_(options), current_(std::min(options.initial, options.max)), rng_(seed) {}

absl::Duration Backoff::Next() {
  absl::Duration delay = current_;
  if (options_.jitter > 0) {
    std::uniform_real_distribution<double> factor(1.0 - options_.jitter, 1.0 + options_.jitter);
    delay = delay * factor(rng_);
  }
  current_ = std::min(options_.max, current_ * std::max(1.0, options_.multiplier));
  return std::min(delay, options_.max);
}

}  // namespace client
}  // namespace dcasgd
