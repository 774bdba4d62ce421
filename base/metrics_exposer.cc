#include "base/metrics_exposer.h"

#include <exception>
#include <vector>

#include "absl/strings/str_cat.h"

namespace dcasgd {

absl::StatusOr<std::unique_ptr<prometheus::Exposer>> StartMetricsExposer(
    const std::string& address, const std::shared_ptr<prometheus::Collectable>& collectable,
    int threads) {
  std::unique_ptr<prometheus::Exposer> exposer;
  try {
    exposer = std::make_unique<prometheus::Exposer>(address, static_cast<size_t>(threads));
  } catch (const std::exception& e) {
    return absl::UnavailableError(
        absl::StrCat("cannot serve metrics on '", address, "': ", e.what()));
  }
  exposer->RegisterCollectable(collectable);
  return exposer;
}

int ExposerPort(const prometheus::Exposer* exposer) {
  if (exposer == nullptr) return 0;
  const std::vector<int> ports = exposer->GetListeningPorts();
  return ports.empty() ? 0 : ports.front();
}

}  // namespace dcasgd
