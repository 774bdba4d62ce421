#include "services/worker/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
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
  // The weights of the last pull: the base of step 0.
  if (pulled.ok()) weights_step_ = 0;
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
    if (finished) CompleteLease(lease);
    if (options_.max_steps > 0 && steps_ >= options_.max_steps) return absl::OkStatus();
  }
  return absl::OkStatus();
}

void Trainer::CompleteLease(const DataLease& lease) {
  // Said before the call as well: a worker killed while Complete is on
  // the wire may have completed the data shard without saying so after.
  std::fprintf(stderr, "[%s] completing data shard %u of epoch %u (lease %llu)\n",
               options_.worker_name.c_str(), lease.data_shard, lease.epoch + 1,
               static_cast<unsigned long long>(lease.lease_id));
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
  ASSIGN_OR_RETURN(std::shared_ptr<const data::LabeledExamples> loaded,
                   data_->LoadTrain(lease.data_shard));
  const data::LabeledExamples& examples = *loaded;
  if (examples.feature_dim != static_cast<size_t>(model_->input_dim())) {
    return absl::FailedPreconditionError(absl::StrCat(
        "data shard ", lease.data_shard, " has ", examples.feature_dim,
        " features per example; model ", model_->name(), " takes ", model_->input_dim()));
  }
  std::vector<uint32_t> order(examples.count);
  std::iota(order.begin(), order.end(), 0u);
  std::mt19937_64 rng(options_.seed * 1000003 + lease.epoch * 7919 + lease.data_shard);
  std::shuffle(order.begin(), order.end(), rng);

  if (options_.pipeline_depth > 0 && schedule_ == nullptr) {
    RETURN_IF_ERROR(TrainShardPipelined(lease, examples, order, renewer, stop));
    *finished = !stop->HasBeenNotified() && renewer->Lost() == std::nullopt &&
                !(options_.max_steps > 0 && steps_ >= options_.max_steps);
    return absl::OkStatus();
  }
  const size_t batch = static_cast<size_t>(options_.batch_size);
  std::vector<float> features;
  std::vector<int32_t> labels;
  for (size_t begin = 0; begin < examples.count; begin += batch) {
    if (stop->HasBeenNotified()) return absl::OkStatus();
    const size_t n = std::min(batch, examples.count - begin);
    CopyBatch(examples, absl::MakeConstSpan(order).subspan(begin, n), &features, &labels);
    bool pushed_batch = false, stopped = false;
    RETURN_IF_ERROR(PushBatch(lease, features, labels, n, /*step=*/0, absl::OkStatus(), stop,
                              &pushed_batch, &stopped));
    if (stopped) return absl::OkStatus();
    if (pushed_batch && options_.max_steps > 0 && steps_ >= options_.max_steps) {
      return absl::OkStatus();
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

absl::Status Trainer::AfterFailedPush(const absl::Status& pushed, int attempt, uint64_t step,
                                      const absl::Notification* stop, bool* give_up) {
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
  *give_up = attempt >= kMaxBatchAttempts || pushed.code() == absl::StatusCode::kAlreadyExists;
  return absl::OkStatus();
}

absl::Status Trainer::PushBatch(const DataLease& lease, const std::vector<float>& features,
                                const std::vector<int32_t>& labels, size_t n, uint64_t step,
                                absl::Status failed, const absl::Notification* stop,
                                bool* pushed_batch, bool* stopped) {
  // The batch is pushed until a push of it succeeds: after an error the
  // worker pulls and computes the gradient again, and pushes it with the
  // same step, so shards that applied the failed push answer without
  // applying it twice and the others apply the new one.
  *pushed_batch = false;
  *stopped = false;
  int attempt = 1;
  if (!failed.ok()) {
    bool give_up = false;
    RETURN_IF_ERROR(AfterFailedPush(failed, attempt, step, stop, &give_up));
    *stopped = stop->HasBeenNotified();
    if (*stopped || give_up) return absl::OkStatus();
    ++attempt;
  }
  for (;; ++attempt) {
    const auto t0 = std::chrono::steady_clock::now();
    float loss = 0;
    ASSIGN_OR_RETURN(loss, model_->Gradient(weights_, features, labels, &gradients_));
    const double compute = Since(t0);
    // Not finite (the shards would refuse the gradient) or exploding (the
    // shards keep weights finite by clamping them): say why and stop.
    if (!std::isfinite(loss) || loss > options_.max_loss) return Diverged(loss, lease);
    // A logical worker pushes only in its turn (stopped: end the shard).
    if (schedule_ != nullptr && !schedule_->AwaitTurn(slot_)) {
      *stopped = true;
      return absl::OkStatus();
    }
    const auto t1 = std::chrono::steady_clock::now();
    // Depth 0: the shards keep one backup, the weights last sent (base 0).
    const uint64_t base = options_.pipeline_depth > 0 ? weights_step_ : 0;
    PushStats stats;
    absl::Status pushed = ps_->PushPull(gradients_, &weights_, &stats, step, base);
    if (schedule_ != nullptr) schedule_->EndTurn(slot_, pushed.ok(), stats.max_staleness);
    const double comm = Since(t1);
    step = stats.step;
    if (pushed.ok()) {
      weights_step_ = step;
      *pushed_batch = true;
      RecordStep(lease, n, compute, comm, loss, stats);
      return absl::OkStatus();
    }
    bool give_up = false;
    RETURN_IF_ERROR(AfterFailedPush(pushed, attempt, step, stop, &give_up));
    *stopped = stop->HasBeenNotified();
    if (*stopped || give_up) return absl::OkStatus();
  }
}

// One batch of the pipeline. Its buffers stay put (it is held by pointer)
// while the client reads the gradients and writes the reply.
struct Trainer::InFlight {
  std::vector<float> features;
  std::vector<int32_t> labels;
  size_t n = 0;
  float loss = 0;
  double compute = 0;
  TensorMap gradients;
  TensorMap reply;
  PushStats stats;
  uint64_t step = 0;
  PushTicket ticket = 0;
};

absl::Status Trainer::FinishOldest(const DataLease& lease,
                                   std::deque<std::unique_ptr<InFlight>>* flight,
                                   std::vector<std::unique_ptr<InFlight>>* spare,
                                   const absl::Notification* stop, bool* resynced) {
  std::unique_ptr<InFlight> p = std::move(flight->front());
  flight->pop_front();
  // Communication is the time the worker waits, not the time the push was
  // in flight (most of which overlapped the next gradient).
  const auto t = std::chrono::steady_clock::now();
  absl::Status pushed = ps_->Wait(p->ticket);
  const double comm = Since(t);
  if (pushed.ok()) {
    // The newest weights the worker has; pushes behind it are answered later.
    // The reply now holds the previous weights: buffers of the right sizes
    // for a later batch's reply, as its gradients are for its gradients.
    for (auto& [name, values] : p->reply) weights_[name].swap(values);
    weights_step_ = p->step;
    RecordStep(lease, p->n, p->compute, comm, p->loss, p->stats);
    spare->push_back(std::move(p));
    return absl::OkStatus();
  }
  // Every push behind it is answered first (the client finishes pushes in
  // order); then the failed batch is pushed again from pulled weights, and
  // the failed ones behind it after it, in step order.
  *resynced = true;
  std::vector<std::pair<std::unique_ptr<InFlight>, absl::Status>> behind;
  while (!flight->empty()) {
    std::unique_ptr<InFlight> q = std::move(flight->front());
    flight->pop_front();
    absl::Status status = ps_->Wait(q->ticket);
    behind.emplace_back(std::move(q), std::move(status));
  }
  bool pushed_batch = false, stopped = false;
  RETURN_IF_ERROR(PushBatch(lease, p->features, p->labels, p->n, p->step, pushed, stop,
                            &pushed_batch, &stopped));
  for (auto& [q, status] : behind) {
    if (status.ok()) {
      // Applied; its reply is older than the weights pulled since.
      RecordStep(lease, q->n, q->compute, 0, q->loss, q->stats);
      continue;
    }
    if (stopped) continue;
    RETURN_IF_ERROR(PushBatch(lease, q->features, q->labels, q->n, q->step, status, stop,
                              &pushed_batch, &stopped));
  }
  return absl::OkStatus();
}

absl::Status Trainer::TrainShardPipelined(const DataLease& lease,
                                          const data::LabeledExamples& examples,
                                          const std::vector<uint32_t>& order,
                                          DataLeaseRenewer* renewer,
                                          const absl::Notification* stop) {
  const size_t depth = options_.pipeline_depth;
  const size_t batch = static_cast<size_t>(options_.batch_size);
  std::deque<std::unique_ptr<InFlight>> flight;
  std::vector<std::unique_ptr<InFlight>> spare;
  auto drain = [&]() -> absl::Status {
    bool resynced = false;
    while (!flight.empty()) RETURN_IF_ERROR(FinishOldest(lease, &flight, &spare, stop, &resynced));
    return absl::OkStatus();
  };
  // However this ends (an error, divergence), no push in flight outlives
  // the buffers it reads and writes.
  absl::Cleanup answered = [&] {
    for (const std::unique_ptr<InFlight>& p : flight) ps_->Wait(p->ticket).IgnoreError();
  };
  for (size_t begin = 0; begin < examples.count; begin += batch) {
    if (stop->HasBeenNotified()) return drain();
    if (options_.max_steps > 0 &&
        steps_ + static_cast<int64_t>(flight.size()) >= options_.max_steps) {
      return drain();
    }
    std::unique_ptr<InFlight> p;
    if (spare.empty()) {
      p = std::make_unique<InFlight>();
    } else {
      p = std::move(spare.back());
      spare.pop_back();
    }
    p->n = std::min(batch, examples.count - begin);
    CopyBatch(examples, absl::MakeConstSpan(order).subspan(begin, p->n), &p->features, &p->labels);
    // On the latest weights received, while the pushes before it are in
    // flight; a pull meanwhile (a failed push) means computing it again.
    bool resynced = true;
    uint64_t base = 0;
    while (resynced) {
      resynced = false;
      const auto t0 = std::chrono::steady_clock::now();
      ASSIGN_OR_RETURN(p->loss, model_->Gradient(weights_, p->features, p->labels, &p->gradients));
      p->compute = Since(t0);
      if (!std::isfinite(p->loss) || p->loss > options_.max_loss) return Diverged(p->loss, lease);
      base = weights_step_;
      while (flight.size() >= depth && !resynced) {
        RETURN_IF_ERROR(FinishOldest(lease, &flight, &spare, stop, &resynced));
      }
      if (stop->HasBeenNotified()) return drain();
    }
    p->step = ps_->NextStep();
    p->ticket = ps_->PushPullAsync(p->gradients, &p->reply, &p->stats, p->step, base);
    flight.push_back(std::move(p));
    if (std::optional<std::string> lost = renewer->Lost()) {
      // Handed to another worker: stop training on it.
      std::fprintf(stderr, "[%s] %s\n", options_.worker_name.c_str(), lost->c_str());
      return drain();
    }
  }
  return drain();
}

}  // namespace dcasgd
