#ifndef DCASGD_SERVICES_PS_PS_METRICS_H_
#define DCASGD_SERVICES_PS_PS_METRICS_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
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

  // Where other parts of the shard register their metrics (replication).
  prometheus::Registry* registry() const { return registry_.get(); }

  // The text exposition /metrics serves (format 0.0.4).
  std::string ExpositionText() const;

  // An answered push: its staleness and time in the update kernels, or, for
  // a repeated step (`replayed`: answered, not applied), one repeated push.
  void ObservePush(const PushResult& result);
  void CountPull();
  void AddReceivedBytes(uint64_t bytes);
  void AddSentBytes(uint64_t bytes);
  // A request answered with `code`; codes outside the contract's list
  // (NOT_FOUND, INVALID_ARGUMENT, FAILED_PRECONDITION, ABORTED,
  // RESOURCE_EXHAUSTED, ALREADY_EXISTS, UNAVAILABLE) are not counted.
  void CountRejected(absl::StatusCode code);
  void CountCheckpoint();
  // A checkpoint write that failed (periodic, requested or final).
  void CountCheckpointFailure();
  // The shard's whole state was durable at `at` (a checkpoint of it was
  // written or restored, or nothing changed since): the age gauge counts from
  // there. Until the first call the age is 0 (checkpoints off).
  void NoteDurable(absl::Time at);
  void CountLeaseExpirations(int n);
  // A stream that had to wait for room in the in-flight budget.
  void CountInflightWait();
  // An Exchange stream was opened (a worker's long-lived push stream; a
  // steady rise means clients reconnect).
  void CountExchangeStream();
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
  prometheus::Counter* repeated_pushes_;
  prometheus::Counter* checkpoints_;
  prometheus::Counter* checkpoint_failures_;
  prometheus::Gauge* checkpoint_age_;
  prometheus::Gauge* checkpoint_durable_time_;
  prometheus::Counter* lease_expirations_;
  prometheus::Counter* inflight_waits_;
  prometheus::Counter* exchange_streams_;
  prometheus::Gauge* inflight_bytes_;
  prometheus::Gauge* memory_rule_bytes_;
  prometheus::Gauge* memory_budget_bytes_;
  // Set once by AttachInflightBudget, before any scrape.
  const InflightBudget* inflight_ = nullptr;
  // When the state was last durable (absl::ToUnixNanos; 0: never noted).
  // Atomic: written by the checkpointer thread, read by scrapes.
  std::atomic<int64_t> durable_unix_nanos_{0};
  // Refreshes the gauges, then collects the registry; what the exposer reads.
  const std::shared_ptr<StatsCollector> collector_;

  // Set once by StartExposer, before any concurrent use of port().
  std::unique_ptr<prometheus::Exposer> exposer_;
};

}  // namespace dcasgd

#endif  // DCASGD_SERVICES_PS_PS_METRICS_H_
