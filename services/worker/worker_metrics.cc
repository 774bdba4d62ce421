#include "services/worker/worker_metrics.h"

#include "absl/strings/str_cat.h"
#include "base/metrics_exposer.h"
#include "base/status_macros.h"

namespace dcasgd {
namespace {

prometheus::Histogram::BucketBoundaries SecondsBuckets() {
  // 100 us .. ~6.5 s, x2 apart.
  prometheus::Histogram::BucketBoundaries b;
  for (double s = 1e-4; s < 7; s *= 2) b.push_back(s);
  return b;
}

}  // namespace

WorkerMetrics::WorkerMetrics(const std::string& worker_name)
    : registry_(std::make_shared<prometheus::Registry>()) {
  const std::map<std::string, std::string> labels = {{"worker", worker_name}};
  auto& r = *registry_;
  examples_ = &prometheus::BuildCounter()
                   .Name("dcasgd_worker_examples_total")
                   .Help("Training examples whose gradient was pushed.")
                   .Register(r)
                   .Add(labels);
  steps_ = &prometheus::BuildCounter()
                .Name("dcasgd_worker_steps_total")
                .Help("Training steps (one PushPull each).")
                .Register(r)
                .Add(labels);
  retries_ = &prometheus::BuildCounter()
                  .Name("dcasgd_worker_retries_total")
                  .Help("Steps redone after a shard error (lease lost, unavailable, stale).")
                  .Register(r)
                  .Add(labels);
  compute_seconds_ = &prometheus::BuildHistogram()
                          .Name("dcasgd_worker_compute_seconds")
                          .Help("Time per step computing the gradient.")
                          .Register(r)
                          .Add(labels, SecondsBuckets());
  communication_seconds_ = &prometheus::BuildHistogram()
                                .Name("dcasgd_worker_communication_seconds")
                                .Help("Time per step in PushPull with the shards.")
                                .Register(r)
                                .Add(labels, SecondsBuckets());
  staleness_ = &prometheus::BuildHistogram()
                    .Name("dcasgd_worker_staleness")
                    .Help("Staleness of this worker's pushes (max over shards), in versions.")
                    .Register(r)
                    .Add(labels, prometheus::Histogram::BucketBoundaries{0, 1, 2, 3, 4, 6, 8, 12,
                                                                         16, 24, 32, 64, 128});
  loss_ = &prometheus::BuildGauge()
               .Name("dcasgd_worker_loss")
               .Help("Training loss of the last minibatch.")
               .Register(r)
               .Add(labels);
  test_accuracy_ = &prometheus::BuildGauge()
                        .Name("dcasgd_eval_test_accuracy")
                        .Help("Test-set accuracy of the last evaluation (0..1).")
                        .Register(r)
                        .Add(labels);
  test_loss_ = &prometheus::BuildGauge()
                    .Name("dcasgd_eval_test_loss")
                    .Help("Test-set mean cross-entropy of the last evaluation.")
                    .Register(r)
                    .Add(labels);
  model_version_ = &prometheus::BuildGauge()
                        .Name("dcasgd_eval_model_version")
                        .Help("Sum of the shard versions of the last evaluated model.")
                        .Register(r)
                        .Add(labels);
}

WorkerMetrics::~WorkerMetrics() = default;

absl::Status WorkerMetrics::Start(const std::string& address) {
  ASSIGN_OR_RETURN(exposer_, StartMetricsExposer(address, registry_));
  return absl::OkStatus();
}

int WorkerMetrics::port() const { return ExposerPort(exposer_.get()); }

void WorkerMetrics::ObserveStep(int examples, double compute_seconds, double communication_seconds,
                                double loss, double staleness) {
  examples_->Increment(examples);
  steps_->Increment();
  compute_seconds_->Observe(compute_seconds);
  communication_seconds_->Observe(communication_seconds);
  loss_->Set(loss);
  staleness_->Observe(staleness);
}

void WorkerMetrics::CountRetry() { retries_->Increment(); }

void WorkerMetrics::ObserveEvaluation(double accuracy, double loss, double version) {
  test_accuracy_->Set(accuracy);
  test_loss_->Set(loss);
  model_version_->Set(version);
}

}  // namespace dcasgd
