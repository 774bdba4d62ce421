#include "services/worker/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <variant>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "base/backoff.h"
#include "base/status_macros.h"

namespace dcasgd {
namespace {

double Since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

// How the worker rides out shards (or the coordinator) being unreachable:
// retries capped at 1 s apart, so a returning shard is used within about a
// second, for up to 5 minutes before it gives up and exits.
const RetryPolicy kOutagePolicy{{absl::Milliseconds(100), absl::Seconds(1)}, absl::Minutes(5)};
// Attempts at one batch before it is skipped (e.g. pushes that stay too
// stale for --max_staleness).
constexpr int kMaxBatchAttempts = 10;

// Errors after which the worker pulls again and pushes the batch again: a
// shard unreachable or restarting (transient), a lost lease or backup
// (FAILED_PRECONDITION; the client re-joined), a too-stale push (ABORTED), a
// shard restarted without the model (NOT_FOUND; pulling declares it again).
bool Recoverable(const absl::Status& s) {
  return IsTransient(s) || s.code() == absl::StatusCode::kFailedPrecondition ||
         s.code() == absl::StatusCode::kAborted || s.code() == absl::StatusCode::kNotFound;
}

// Gathers the examples `indices` of `examples` into one batch.
void CopyBatch(const data::LabeledExamples& examples, absl::Span<const uint32_t> indices,
               std::vector<float>* features, std::vector<int32_t>* labels) {
  const size_t dim = examples.feature_dim;
  features->resize(indices.size() * dim);
  labels->resize(indices.size());
  for (size_t i = 0; i < indices.size(); ++i) {
    const uint32_t e = indices[i];
    std::copy_n(examples.features.data() + size_t{e} * dim, dim, features->data() + i * dim);
    (*labels)[i] = examples.labels[e];
  }
}

// A Checkpoint request the shards may refuse at the end of the job without
// anything being wrong: checkpoints off, or workers without role admin.
bool IsExpectedCheckpointRefusal(const absl::Status& status) {
  return status.code() == absl::StatusCode::kFailedPrecondition ||
         status.code() == absl::StatusCode::kPermissionDenied;
}

}  // namespace

// Renews one data lease every third of its duration on its own thread until
// destroyed. A FAILED_PRECONDITION answer (the lease expired and was handed
// to another worker), or UNAUTHENTICATED (the coordinator refuses the
// lease's secret: it cannot be renewed either), is reported by Lost(); other errors (shard 0
// restarting: its saved leases survive) are logged and retried at the next
// interval.
class DataLeaseRenewer {
 public:
  DataLeaseRenewer(CoordinatorClient* coordinator, const DataLease& lease,
                   const std::string& worker_name)
      : coordinator_(coordinator),
        lease_id_(lease.lease_id),
        secret_(lease.secret),
        interval_(std::max(absl::Milliseconds(10), lease.lease / 3)),
        worker_name_(worker_name),
        thread_([this] { Loop(); }) {}
  ~DataLeaseRenewer() {
    {
      absl::MutexLock lock(&mu_);
      stop_ = true;
    }
    thread_.join();
  }
  DataLeaseRenewer(const DataLeaseRenewer&) = delete;
  DataLeaseRenewer& operator=(const DataLeaseRenewer&) = delete;

  // Why the lease is lost, once it is.
  std::optional<std::string> Lost() {
    absl::MutexLock lock(&mu_);
    return lost_;
  }

 private:
  void Loop() {
    while (true) {
      {
        absl::MutexLock lock(&mu_);
        if (mu_.AwaitWithTimeout(absl::Condition(&stop_), interval_)) return;
      }
      absl::Status renewed = coordinator_->Renew(lease_id_, secret_);
      if (renewed.ok()) continue;
      if (renewed.code() == absl::StatusCode::kFailedPrecondition ||
          renewed.code() == absl::StatusCode::kUnauthenticated) {
        absl::MutexLock lock(&mu_);
        lost_ = std::string(renewed.message());
        return;
      }
      std::fprintf(stderr, "[%s] renewing data lease %llu failed, training on: %s\n",
                   worker_name_.c_str(), static_cast<unsigned long long>(lease_id_),
                   std::string(renewed.message()).c_str());
    }
  }

  CoordinatorClient* const coordinator_;
  const uint64_t lease_id_;
  const std::string secret_;  // the lease's secret: never logged
  const absl::Duration interval_;
  const std::string worker_name_;
  absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<std::string> lost_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;  // last: starts after the fields it uses
};

Trainer::Trainer(const WorkerOptions& options, PsClient* ps, CoordinatorClient* coordinator,
                 DataSource* data, const model::Model* model, WorkerMetrics* metrics)
    : options_(options),
      ps_(ps),
      coordinator_(coordinator),
      data_(data),
      model_(model),
      metrics_(metrics) {}

template <typename Call>
absl::Status Trainer::RetryTransient(const char* what, const absl::Notification* stop, Call call) {
  return RetryWithBackoff(
      kOutagePolicy, call, IsTransient,
      [&](const absl::Status& error) {
        std::fprintf(stderr, "[%s] %s failed, retrying: %s\n", options_.worker_name.c_str(), what,
                     std::string(error.message()).c_str());
      },
      stop);
}

absl::Status Trainer::PullWithRetry(const absl::Notification* stop) {
  absl::Status pulled = RetryWithBackoff(
      kOutagePolicy, [&] { return ps_->Pull(names_, &weights_); }, Recoverable,
      [&](const absl::Status& error) {
        if (error.code() == absl::StatusCode::kNotFound && !specs_.empty()) {
          // A shard restarted without a checkpoint of the declarations:
          // declare again (idempotent on the shards that still have them).
          absl::Status declared = ps_->Declare(specs_);
          if (!declared.ok() && declared.code() != absl::StatusCode::kAlreadyExists) {
            std::fprintf(stderr, "[%s] re-declaring failed: %s\n", options_.worker_name.c_str(),
                         std::string(declared.message()).c_str());
          }
        }
        std::fprintf(stderr, "[%s] pull failed, retrying: %s\n", options_.worker_name.c_str(),
                     std::string(error.message()).c_str());
      },
      stop);
  // Stopped while waiting: the caller sees `stop` and ends the step.
  if (!pulled.ok() && stop->HasBeenNotified()) return absl::OkStatus();
  return pulled;
}

absl::Status Trainer::Run(const absl::Notification* stop) {
  // However Run ends, a logical worker stops taking turns.
  absl::Cleanup step_out = [this] {
    if (schedule_ != nullptr) schedule_->Exit(slot_);
  };
  const std::vector<TensorSpec> specs = model_->ParameterSpecs(options_.seed);
  for (const TensorSpec& spec : specs) names_.push_back(spec.name);
  absl::Status declared =
      RetryTransient("declaring the model", stop, [&] { return ps_->Declare(specs); });
  specs_ = specs;
  if (declared.code() == absl::StatusCode::kAlreadyExists) {
    // Another trainer (e.g. a Python worker) declared the model first with
    // another initialiser. The job is already initialised: join it if every
    // tensor has the size this model needs.
    RETURN_IF_ERROR(ps_->FetchSpecs());
    RETURN_IF_ERROR(PullWithRetry(stop));
    for (const TensorSpec& spec : specs) {
      if (weights_[spec.name].size() != spec.num_elements()) return declared;
    }
    std::fprintf(stderr, "[%s] model already declared with another initialiser; joining it\n",
                 options_.worker_name.c_str());
  } else {
    RETURN_IF_ERROR(declared);
  }
  RETURN_IF_ERROR(PullWithRetry(stop));
  window_start_ = absl::Now();
  const uint32_t num_shards = static_cast<uint32_t>(data_->num_train_shards());
  while (!stop->HasBeenNotified()) {
    ASSIGN_OR_RETURN(AcquireResult answer,
                     coordinator_->Acquire(options_.worker_name, num_shards, options_.epochs));
    if (std::holds_alternative<JobDone>(answer)) {
      std::fprintf(stderr, "[%s] job done after %lld steps of this worker\n",
                   options_.worker_name.c_str(), static_cast<long long>(steps_));
      // Have the shards checkpoint the finished model now (a no-op where
      // checkpoints are off; refused where workers lack role admin).
      auto written = ps_->Checkpoint();
      if (!written.ok() && !IsExpectedCheckpointRefusal(written.status())) {
        std::fprintf(stderr, "[%s] final checkpoint request failed: %s\n",
                     options_.worker_name.c_str(), std::string(written.status().message()).c_str());
      }
      return absl::OkStatus();
    }
    if (const auto* later = std::get_if<RetryLater>(&answer)) {
      // Nothing to train until others finish: the other logical workers
      // take their turns meanwhile.
      if (schedule_ != nullptr) schedule_->Exit(slot_);
      stop->WaitForNotificationWithTimeout(later->after);
      continue;
    }
    if (schedule_ != nullptr) schedule_->Enter(slot_);
    const DataLease& lease = std::get<DataLease>(answer);
    bool finished = false;
    // Renewed until completed: also while Complete waits for shard 0 (a
    // restart, a full disk), so the lease does not expire meanwhile.
    DataLeaseRenewer renewer(coordinator_, lease, options_.worker_name);
    RETURN_IF_ERROR(TrainShard(lease, &renewer, stop, &finished));
    if (finished) {
      // Retries while shard 0 restarts or cannot save (its leases survive a
      // restart, so the completion still counts afterwards).
      absl::Status done = coordinator_->Complete(lease.lease_id, lease.secret);
      if (done.ok()) {
        std::fprintf(stderr, "[%s] trained data shard %u of epoch %u (lease %llu)\n",
                     options_.worker_name.c_str(), lease.data_shard, lease.epoch + 1,
                     static_cast<unsigned long long>(lease.lease_id));
      } else {
        // FAILED_PRECONDITION: the lease expired meanwhile and the shard went
        // to someone else, who trains it again. Otherwise shard 0 stayed
        // unreachable; the lease will expire the same way.
        std::fprintf(stderr,
                     "[%s] trained data shard %u of epoch %u but could not complete "
                     "lease %llu: %s\n",
                     options_.worker_name.c_str(), lease.data_shard, lease.epoch + 1,
                     static_cast<unsigned long long>(lease.lease_id),
                     std::string(done.message()).c_str());
      }
    }
    if (options_.max_steps > 0 && steps_ >= options_.max_steps) return absl::OkStatus();
  }
  return absl::OkStatus();
}

absl::Status Trainer::Diverged(float loss, const DataLease& lease) const {
  return absl::FailedPreconditionError(absl::StrCat(
      "training diverged: the loss is ", loss, " at step ", steps_ + 1, " (epoch ", lease.epoch + 1,
      ", data shard ", lease.data_shard, "; --max_loss ", options_.max_loss,
      "); lower the shards' --lr (or --lambda0), or use fewer workers"));
}

void Trainer::RecordStep(const DataLease& lease, size_t n, double compute, double comm, float loss,
                         const PushStats& stats) {
  ++steps_;
  metrics_->ObserveStep(static_cast<int>(n), compute, comm, loss,
                        static_cast<double>(stats.max_staleness));
  window_examples_ += static_cast<int64_t>(n);
  window_compute_ += compute;
  window_comm_ += comm;
  window_loss_ += loss;
  window_staleness_ += stats.mean_staleness;
  ++window_steps_;
  if (steps_ % options_.log_every == 0) {
    const double seconds = absl::ToDoubleSeconds(absl::Now() - window_start_);
    const double busy = std::max(1e-9, window_compute_ + window_comm_);
    std::fprintf(stderr,
                 "[%s] epoch %u shard %u step %lld: loss %.4f, %.0f examples/s, "
                 "staleness %.2f, compute %.0f%% / communication %.0f%%\n",
                 options_.worker_name.c_str(), lease.epoch + 1, lease.data_shard,
                 static_cast<long long>(steps_), window_loss_ / window_steps_,
                 window_examples_ / std::max(seconds, 1e-9), window_staleness_ / window_steps_,
                 100 * window_compute_ / busy, 100 * window_comm_ / busy);
    window_examples_ = 0;
    window_compute_ = window_comm_ = window_loss_ = window_staleness_ = 0;
    window_steps_ = 0;
    window_start_ = absl::Now();
  }
}

absl::Status Trainer::TrainShard(const DataLease& lease, DataLeaseRenewer* renewer,
                                 const absl::Notification* stop, bool* finished) {
  *finished = false;
  ASSIGN_OR_RETURN(data::LabeledExamples examples, data_->LoadTrain(lease.data_shard));
  if (examples.feature_dim != static_cast<size_t>(model_->input_dim())) {
    return absl::FailedPreconditionError(absl::StrCat(
        "data shard ", lease.data_shard, " has ", examples.feature_dim,
        " features per example; model ", model_->name(), " takes ", model_->input_dim()));
  }
  std::vector<uint32_t> order(examples.count);
  std::iota(order.begin(), order.end(), 0u);
  std::mt19937_64 rng(options_.seed * 1000003 + lease.epoch * 7919 + lease.data_shard);
  std::shuffle(order.begin(), order.end(), rng);

  const size_t batch = static_cast<size_t>(options_.batch_size);
  std::vector<float> features;
  std::vector<int32_t> labels;
  for (size_t begin = 0; begin < examples.count; begin += batch) {
    if (stop->HasBeenNotified()) return absl::OkStatus();
    const size_t n = std::min(batch, examples.count - begin);
    CopyBatch(examples, absl::MakeConstSpan(order).subspan(begin, n), &features, &labels);
    // The batch is pushed until a push of it succeeds: after an error the
    // worker pulls and computes the gradient again, and pushes it with the
    // same step, so shards that applied the failed push answer without
    // applying it twice and the others apply the new one.
    uint64_t step = 0;  // 0: the client takes a new one
    float loss = 0;
    double compute = 0, comm = 0;
    PushStats stats;
    bool pushed_batch = false;
    for (int attempt = 1; !pushed_batch; ++attempt) {
      const auto t0 = std::chrono::steady_clock::now();
      ASSIGN_OR_RETURN(loss, model_->Gradient(weights_, features, labels, &gradients_));
      compute = Since(t0);
      // Not finite (the shards would refuse the gradient) or exploding (the
      // shards keep weights finite by clamping them): say why and stop.
      if (!std::isfinite(loss) || loss > options_.max_loss) return Diverged(loss, lease);
      // A logical worker pushes only in its turn (stopped: end the shard).
      if (schedule_ != nullptr && !schedule_->AwaitTurn(slot_)) return absl::OkStatus();
      const auto t1 = std::chrono::steady_clock::now();
      absl::Status pushed = ps_->PushPull(gradients_, &weights_, &stats, step);
      if (schedule_ != nullptr) schedule_->EndTurn(slot_, pushed.ok(), stats.max_staleness);
      comm = Since(t1);
      step = stats.step;
      if (pushed.ok()) {
        pushed_batch = true;
        break;
      }
      if (pushed.code() == absl::StatusCode::kAlreadyExists) {
        // A later step was applied already: this one is superseded.
        std::fprintf(stderr, "[%s] %s\n", options_.worker_name.c_str(),
                     std::string(pushed.message()).c_str());
      } else if (!Recoverable(pushed)) {
        return pushed;
      }
      metrics_->CountRetry();
      if (attempt >= kMaxBatchAttempts) {
        std::fprintf(stderr, "[%s] batch skipped after %d failed pushes: %s\n",
                     options_.worker_name.c_str(), attempt, std::string(pushed.message()).c_str());
      } else {
        std::fprintf(stderr, "[%s] step %llu failed, pulling and pushing its batch again: %s\n",
                     options_.worker_name.c_str(), static_cast<unsigned long long>(step),
                     std::string(pushed.message()).c_str());
      }
      RETURN_IF_ERROR(PullWithRetry(stop));
      if (stop->HasBeenNotified()) return absl::OkStatus();
      if (attempt >= kMaxBatchAttempts || pushed.code() == absl::StatusCode::kAlreadyExists) break;
    }
    if (pushed_batch) {
      RecordStep(lease, n, compute, comm, loss, stats);
      if (options_.max_steps > 0 && steps_ >= options_.max_steps) return absl::OkStatus();
    }
    if (std::optional<std::string> lost = renewer->Lost()) {
      // Handed to another worker: stop training on it.
      std::fprintf(stderr, "[%s] %s\n", options_.worker_name.c_str(), lost->c_str());
      return absl::OkStatus();
    }
  }
  *finished = true;
  return absl::OkStatus();
}

}  // namespace dcasgd
