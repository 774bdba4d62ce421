#ifndef DCASGD_SERVICES_WITNESS_WITNESS_METRICS_H_
#define DCASGD_SERVICES_WITNESS_WITNESS_METRICS_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "prometheus/counter.h"
#include "prometheus/exposer.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/registry.h"
#include "services/witness/witness_registers.h"

namespace dcasgd {

// The Prometheus metrics of the witness (prefix dcasgd_witness_, label
// shard="<index>" on the per-shard series, every shard's created at start so
// a shard that never changed shows 0):
//   dcasgd_witness_claims_total{shard,result="granted"|"refused"}
//   dcasgd_witness_forces_total{shard}
//   dcasgd_witness_epoch{shard}, dcasgd_witness_paired{shard},
//   dcasgd_witness_holder{shard,member="a"|"b"} (1 for the holder)
//   dcasgd_witness_save_failures_total (a register that could not be written)
// The register gauges are read from `registers` at every scrape, so they are
// never stale.
//
// Thread-safe: the Count methods may be called from any thread.
class WitnessMetrics {
 public:
  // `registers` must outlive this object.
  explicit WitnessMetrics(const WitnessRegisters* registers);
  ~WitnessMetrics();
  WitnessMetrics(const WitnessMetrics&) = delete;
  WitnessMetrics& operator=(const WitnessMetrics&) = delete;

  // Serves GET /metrics on `address` (host:port, port 0 picks one).
  // UNAVAILABLE when it cannot bind; FAILED_PRECONDITION if already started.
  absl::Status StartExposer(const std::string& address);
  // The exposer's port; 0 when it is not started.
  int port() const;
  // The text exposition /metrics serves.
  std::string ExpositionText() const;

  // A Claim of `shard` that was answered (granted or refused).
  void CountClaim(uint32_t shard, bool granted);
  void CountForce(uint32_t shard);
  // A change that failed with `status`: counted when it was a failed save.
  void CountFailure(const absl::Status& status);

 private:
  class RegisterCollector;
  void RefreshGauges() const;

  // Constant after construction. prometheus-cpp metrics are thread-safe.
  const WitnessRegisters* const registers_;
  const std::shared_ptr<prometheus::Registry> registry_;
  std::vector<prometheus::Counter*> granted_;  // by shard
  std::vector<prometheus::Counter*> refused_;
  std::vector<prometheus::Counter*> forces_;
  std::vector<prometheus::Gauge*> epoch_;
  std::vector<prometheus::Gauge*> paired_;
  std::vector<prometheus::Gauge*> holder_a_;
  std::vector<prometheus::Gauge*> holder_b_;
  prometheus::Counter* save_failures_;
  // Refreshes the gauges, then collects the registry; what the exposer reads.
  const std::shared_ptr<RegisterCollector> collector_;

  // Set once by StartExposer, before any concurrent use of port().
  std::unique_ptr<prometheus::Exposer> exposer_;
};

}  // namespace dcasgd

#endif  // DCASGD_SERVICES_WITNESS_WITNESS_METRICS_H_
