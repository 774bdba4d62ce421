#ifndef DCASGD_SERVICES_PS_PS_METRICS_H_
#define DCASGD_SERVICES_PS_PS_METRICS_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/shard_store.h"
#include "prometheus/counter.h"
#include "prometheus/exposer.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "services/ps/inflight_budget.h"

namespace dcasgd {

// The Prometheus metrics of one shard (prefix dcasgd_ps_, constant label
// shard="<index>"). Counters and histograms are updated by the service; the
// gauges (version, active workers, memory) are read from ShardStore::Stats()
// on every scrape, so they are never stale.
//
// Thread-safe: every Observe/Count method may be called from any thread.
class ShardMetrics {
 public:
  // `store` is read on each scrape; it must outlive this object.
  ShardMetrics(uint32_t shard_index, const ShardStore* store);
  ~ShardMetrics();
  ShardMetrics(const ShardMetrics&) = delete;
  ShardMetrics& operator=(const ShardMetrics&) = delete;

  // Serves GET /metrics on `address` (host:port, port 0 picks one).
  // UNAVAILABLE when it cannot bind; FAILED_PRECONDITION if already started.
  absl::Status StartExposer(const std::string& address);
  // The bound port of the exposer; 0 when it is not started.
  int port() const;

  // The text exposition /metrics serves (format 0.0.4).
  std::string ExpositionText() const;

  // An applied push: its staleness, time in the update kernels and gradient
  // bytes.
  void ObservePush(uint64_t staleness, double apply_seconds);
  void CountPull();
  void AddReceivedBytes(uint64_t bytes);
  void AddSentBytes(uint64_t bytes);
  // A request answered with `code`; codes outside the contract's list
  // (NOT_FOUND, INVALID_ARGUMENT, FAILED_PRECONDITION, ABORTED,
  // RESOURCE_EXHAUSTED, ALREADY_EXISTS, UNAVAILABLE) are not counted.
  void CountRejected(absl::StatusCode code);
  void CountCheckpoint();
  void CountLeaseExpirations(int n);
  // A stream that had to wait for room in the in-flight budget.
  void CountInflightWait();
  // The budget whose bytes in use the dcasgd_ps_inflight_bytes gauge shows.
  // Call once, before StartExposer; it must outlive this object.
  void AttachInflightBudget(const InflightBudget* budget);

 private:
  class StatsCollector;
  void RefreshGauges() const;

  // Constant after construction. prometheus-cpp metrics are thread-safe.
  const ShardStore* const store_;
  const std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Histogram* staleness_;
  prometheus::Counter* pushes_;
  prometheus::Counter* pulls_;
  prometheus::Counter* received_bytes_;
  prometheus::Counter* sent_bytes_;
  prometheus::Histogram* update_duration_;
  prometheus::Gauge* model_version_;
  prometheus::Gauge* active_workers_;
  prometheus::Gauge* weight_bytes_;
  prometheus::Gauge* backup_bytes_;
  prometheus::Gauge* optimizer_state_bytes_;
  prometheus::Family<prometheus::Counter>* rejected_;
  prometheus::Counter* checkpoints_;
  prometheus::Counter* lease_expirations_;
  prometheus::Counter* inflight_waits_;
  prometheus::Gauge* inflight_bytes_;
  prometheus::Gauge* memory_rule_bytes_;
  prometheus::Gauge* memory_budget_bytes_;
  // Set once by AttachInflightBudget, before any scrape.
  const InflightBudget* inflight_ = nullptr;
  // Refreshes the gauges, then collects the registry; what the exposer reads.
  const std::shared_ptr<StatsCollector> collector_;

  // Set once by StartExposer, before any concurrent use of port().
  std::unique_ptr<prometheus::Exposer> exposer_;
};

}  // namespace dcasgd

#endif  // DCASGD_SERVICES_PS_PS_METRICS_H_
