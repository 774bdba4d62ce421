#ifndef DCASGD_SERVICES_WORKER_WORKER_METRICS_H_
#define DCASGD_SERVICES_WORKER_WORKER_METRICS_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "prometheus/counter.h"
#include "prometheus/exposer.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace dcasgd {

// Prometheus metrics of a worker or evaluator (prefixes dcasgd_worker_ and
// dcasgd_eval_, constant label worker="<name>"). Thread-safe.
class WorkerMetrics {
 public:
  explicit WorkerMetrics(const std::string& worker_name);
  ~WorkerMetrics();

  // Serves /metrics on host:port (port 0: any). UNAVAILABLE when it cannot bind.
  absl::Status Start(const std::string& address);
  int port() const;

  // One training step: examples in the batch, seconds computing the gradient
  // and in PushPull, the batch loss and the staleness the shards reported.
  void ObserveStep(int examples, double compute_seconds, double communication_seconds, double loss,
                   double staleness);
  void CountRetry();
  // One evaluation of the model at `version` (sum of shard versions).
  void ObserveEvaluation(double accuracy, double loss, double version);

 private:
  const std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Counter* examples_;
  prometheus::Counter* steps_;
  prometheus::Counter* retries_;
  prometheus::Histogram* compute_seconds_;
  prometheus::Histogram* communication_seconds_;
  prometheus::Histogram* staleness_;
  prometheus::Gauge* loss_;
  prometheus::Gauge* test_accuracy_;
  prometheus::Gauge* test_loss_;
  prometheus::Gauge* model_version_;
  std::unique_ptr<prometheus::Exposer> exposer_;
};

}  // namespace dcasgd

#endif  // DCASGD_SERVICES_WORKER_WORKER_METRICS_H_
