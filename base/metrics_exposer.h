#ifndef DCASGD_BASE_METRICS_EXPOSER_H_
#define DCASGD_BASE_METRICS_EXPOSER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "prometheus/collectable.h"
#include "prometheus/exposer.h"

namespace dcasgd {

// Serves GET /metrics with what `collectable` collects on `address`
// ("host:port", port 0 picks a free one), from `threads` threads of its own.
// UNAVAILABLE naming the address when it cannot bind (prometheus-cpp reports
// that by throwing; this is where it becomes a Status). The exposer holds
// `collectable` by weak reference: keep it alive until the exposer is
// destroyed, which stops serving.
absl::StatusOr<std::unique_ptr<prometheus::Exposer>> StartMetricsExposer(
    const std::string& address, const std::shared_ptr<prometheus::Collectable>& collectable,
    int threads = 2);

// The port `exposer` listens on; 0 for null.
int ExposerPort(const prometheus::Exposer* exposer);

}  // namespace dcasgd

#endif  // DCASGD_BASE_METRICS_EXPOSER_H_
