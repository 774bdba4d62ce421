#include "services/ps/ps_metrics.h"

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "base/enum_names.h"
#include "base/metrics_exposer.h"
#include "base/status_macros.h"
#include "prometheus/collectable.h"
#include "prometheus/text_serializer.h"

namespace dcasgd {

class ShardMetrics::StatsCollector final : public prometheus::Collectable {
 public:
  explicit StatsCollector(const ShardMetrics* metrics) : metrics_(metrics) {}
  std::vector<prometheus::MetricFamily> Collect() const override {
    metrics_->RefreshGauges();
    return metrics_->registry_->Collect();
  }

 private:
  const ShardMetrics* const metrics_;
};

namespace {

// The reasons of rejected requests (the `reason` label), one per status code
// the shard answers with (base/enum_names.h).
constexpr EnumName<absl::StatusCode> kRejectReasons[] = {
    {absl::StatusCode::kNotFound, "not_found"},
    {absl::StatusCode::kInvalidArgument, "invalid_argument"},
    {absl::StatusCode::kFailedPrecondition, "failed_precondition"},
    {absl::StatusCode::kAborted, "aborted"},
    {absl::StatusCode::kResourceExhausted, "resource_exhausted"},
    {absl::StatusCode::kAlreadyExists, "already_exists"},
    {absl::StatusCode::kUnavailable, "unavailable"},
    {absl::StatusCode::kUnauthenticated, "unauthenticated"},
};

// The label of `code`, or null for codes that are not counted.
const char* RejectReason(absl::StatusCode code) {
  for (const EnumName<absl::StatusCode>& row : kRejectReasons) {
    if (row.value == code) return row.name;
  }
  return nullptr;
}

// 10us .. 10s, three buckets per decade.
prometheus::Histogram::BucketBoundaries UpdateDurationBuckets() {
  prometheus::Histogram::BucketBoundaries buckets;
  for (int i = 0; i <= 18; ++i) buckets.push_back(1e-5 * std::pow(10.0, i / 3.0));
  return buckets;
}

}  // namespace

ShardMetrics::ShardMetrics(uint32_t shard_index, const ShardStore* store)
    : store_(store),
      registry_(std::make_shared<prometheus::Registry>()),
      collector_(std::make_shared<StatsCollector>(this)) {
  const prometheus::Labels shard = {{"shard", absl::StrCat(shard_index)}};
  prometheus::Registry& r = *registry_;
  staleness_ = &prometheus::BuildHistogram()
                    .Name("dcasgd_ps_staleness")
                    .Help("Versions applied between a worker's pull and its push, per push.")
                    .Labels(shard)
                    .Register(r)
                    .Add({}, prometheus::Histogram::BucketBoundaries{0, 1, 2, 3, 4, 6, 8, 12, 16,
                                                                     24, 32, 64, 128});
  pushes_ = &prometheus::BuildCounter()
                 .Name("dcasgd_ps_pushes_total")
                 .Help("Pushes applied (one version each, or one share of an SSGD round).")
                 .Labels(shard)
                 .Register(r)
                 .Add({});
  pulls_ = &prometheus::BuildCounter()
                .Name("dcasgd_ps_pulls_total")
                .Help("Pull and PushPull calls that streamed values.")
                .Labels(shard)
                .Register(r)
                .Add({});
  received_bytes_ = &prometheus::BuildCounter()
                         .Name("dcasgd_ps_received_bytes_total")
                         .Help("Gradient value bytes received in pushes.")
                         .Labels(shard)
                         .Register(r)
                         .Add({});
  sent_bytes_ = &prometheus::BuildCounter()
                     .Name("dcasgd_ps_sent_bytes_total")
                     .Help("Weight value bytes sent in pulls.")
                     .Labels(shard)
                     .Register(r)
                     .Add({});
  update_duration_ = &prometheus::BuildHistogram()
                          .Name("dcasgd_ps_update_duration_seconds")
                          .Help("Time spent in the update kernels per applied push.")
                          .Labels(shard)
                          .Register(r)
                          .Add({}, UpdateDurationBuckets());
  model_version_ = &prometheus::BuildGauge()
                        .Name("dcasgd_ps_model_version")
                        .Help("Updates applied by this shard (its version).")
                        .Labels(shard)
                        .Register(r)
                        .Add({});
  active_workers_ = &prometheus::BuildGauge()
                         .Name("dcasgd_ps_active_workers")
                         .Help("Workers holding a live lease.")
                         .Labels(shard)
                         .Register(r)
                         .Add({});
  weight_bytes_ = &prometheus::BuildGauge()
                       .Name("dcasgd_ps_weight_bytes")
                       .Help("Bytes of the weights this shard owns.")
                       .Labels(shard)
                       .Register(r)
                       .Add({});
  backup_bytes_ = &prometheus::BuildGauge()
                       .Name("dcasgd_ps_backup_bytes")
                       .Help("Bytes of per-worker weight backups (w_bak) held.")
                       .Labels(shard)
                       .Register(r)
                       .Add({});
  optimizer_state_bytes_ = &prometheus::BuildGauge()
                                .Name("dcasgd_ps_optimizer_state_bytes")
                                .Help("Bytes of mean-square and momentum vectors.")
                                .Labels(shard)
                                .Register(r)
                                .Add({});
  rejected_ = &prometheus::BuildCounter()
                   .Name("dcasgd_ps_rejected_requests_total")
                   .Help("Requests answered with an error, by status code.")
                   .Labels(shard)
                   .Register(r);
  for (const EnumName<absl::StatusCode>& row : kRejectReasons) {
    rejected_->Add({{"reason", row.name}});
  }
  repeated_pushes_ =
      &prometheus::BuildCounter()
           .Name("dcasgd_ps_repeated_pushes_total")
           .Help(
               "Pushes repeating a step already applied (a retry after a lost "
               "acknowledgement): answered with the recorded result, not applied again.")
           .Labels(shard)
           .Register(r)
           .Add({});
  checkpoints_ = &prometheus::BuildCounter()
                      .Name("dcasgd_ps_checkpoints_total")
                      .Help("Checkpoints written.")
                      .Labels(shard)
                      .Register(r)
                      .Add({});
  checkpoint_failures_ = &prometheus::BuildCounter()
                              .Name("dcasgd_ps_checkpoint_failures_total")
                              .Help("Checkpoint writes that failed (e.g. a full disk).")
                              .Labels(shard)
                              .Register(r)
                              .Add({});
  checkpoint_age_ =
      &prometheus::BuildGauge()
           .Name("dcasgd_ps_checkpoint_age_seconds")
           .Help(
               "Seconds since the shard's state was last durable (a checkpoint of it written "
               "or restored, or no change since); 0 when checkpoints are off.")
           .Labels(shard)
           .Register(r)
           .Add({});
  checkpoint_durable_time_ =
      &prometheus::BuildGauge()
           .Name("dcasgd_ps_checkpoint_durable_timestamp_seconds")
           .Help("Unix time when the shard's state was last durable; 0 when checkpoints are off.")
           .Labels(shard)
           .Register(r)
           .Add({});
  lease_expirations_ = &prometheus::BuildCounter()
                            .Name("dcasgd_ps_lease_expirations_total")
                            .Help("Worker leases that ended without a Leave.")
                            .Labels(shard)
                            .Register(r)
                            .Add({});
  inflight_waits_ = &prometheus::BuildCounter()
                         .Name("dcasgd_ps_inflight_waits_total")
                         .Help("Streams that waited for room in the in-flight byte budget.")
                         .Labels(shard)
                         .Register(r)
                         .Add({});
  exchange_streams_ = &prometheus::BuildCounter()
                           .Name("dcasgd_ps_exchange_streams_total")
                           .Help("Exchange streams opened (workers' long-lived push streams).")
                           .Labels(shard)
                           .Register(r)
                           .Add({});
  inflight_bytes_ = &prometheus::BuildGauge()
                         .Name("dcasgd_ps_inflight_bytes")
                         .Help("Bytes held by push, PushPull and pull streams in flight.")
                         .Labels(shard)
                         .Register(r)
                         .Add({});
  memory_rule_bytes_ = &prometheus::BuildGauge()
                            .Name("dcasgd_ps_memory_rule_bytes")
                            .Help("What the sizing rule allows for the declared tensors.")
                            .Labels(shard)
                            .Register(r)
                            .Add({});
  memory_budget_bytes_ = &prometheus::BuildGauge()
                              .Name("dcasgd_ps_memory_budget_bytes")
                              .Help("The memory budget declarations are checked against.")
                              .Labels(shard)
                              .Register(r)
                              .Add({});
}

ShardMetrics::~ShardMetrics() {
  // Stop serving scrapes before the collector and registry go away.
  exposer_.reset();
}

absl::Status ShardMetrics::StartExposer(const std::string& address) {
  if (exposer_ != nullptr) return absl::FailedPreconditionError("metrics exposer already started");
  ASSIGN_OR_RETURN(exposer_, StartMetricsExposer(address, collector_));
  return absl::OkStatus();
}

int ShardMetrics::port() const { return ExposerPort(exposer_.get()); }

std::string ShardMetrics::ExpositionText() const {
  return prometheus::TextSerializer().Serialize(collector_->Collect());
}

void ShardMetrics::ObservePush(const PushResult& result) {
  if (result.replayed) {
    repeated_pushes_->Increment();
    return;
  }
  pushes_->Increment();
  staleness_->Observe(static_cast<double>(result.staleness));
  update_duration_->Observe(result.apply_seconds);
}

void ShardMetrics::CountPull() { pulls_->Increment(); }

void ShardMetrics::AddReceivedBytes(uint64_t bytes) {
  received_bytes_->Increment(static_cast<double>(bytes));
}

void ShardMetrics::AddSentBytes(uint64_t bytes) {
  sent_bytes_->Increment(static_cast<double>(bytes));
}

void ShardMetrics::CountRejected(absl::StatusCode code) {
  const char* reason = RejectReason(code);
  if (reason == nullptr) return;
  // Add() returns the existing series for known labels.
  rejected_->Add({{"reason", reason}}).Increment();
}

void ShardMetrics::CountCheckpoint() { checkpoints_->Increment(); }

void ShardMetrics::CountCheckpointFailure() { checkpoint_failures_->Increment(); }

void ShardMetrics::NoteDurable(absl::Time at) {
  durable_unix_nanos_.store(absl::ToUnixNanos(at), std::memory_order_relaxed);
}

void ShardMetrics::CountLeaseExpirations(int n) {
  if (n > 0) lease_expirations_->Increment(n);
}

void ShardMetrics::CountInflightWait() { inflight_waits_->Increment(); }

void ShardMetrics::CountExchangeStream() { exchange_streams_->Increment(); }

void ShardMetrics::AttachInflightBudget(const InflightBudget* budget) { inflight_ = budget; }

void ShardMetrics::RefreshGauges() const {
  const ShardStats stats = store_->Stats();
  model_version_->Set(static_cast<double>(stats.version));
  active_workers_->Set(stats.active_workers);
  weight_bytes_->Set(static_cast<double>(stats.weight_bytes));
  backup_bytes_->Set(static_cast<double>(stats.backup_bytes));
  optimizer_state_bytes_->Set(static_cast<double>(stats.optimizer_state_bytes));
  memory_rule_bytes_->Set(static_cast<double>(store_->MemoryRule().total()));
  memory_budget_bytes_->Set(static_cast<double>(store_->config().memory_budget_bytes));
  if (inflight_ != nullptr) inflight_bytes_->Set(static_cast<double>(inflight_->in_use()));
  const int64_t durable = durable_unix_nanos_.load(std::memory_order_relaxed);
  if (durable != 0) {
    const absl::Time at = absl::FromUnixNanos(durable);
    checkpoint_durable_time_->Set(absl::ToDoubleSeconds(at - absl::UnixEpoch()));
    checkpoint_age_->Set(std::max(0.0, absl::ToDoubleSeconds(absl::Now() - at)));
  }
}

}  // namespace dcasgd
