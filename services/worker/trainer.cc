#include "services/worker/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/retry.h"
#include "core/status_macros.h"

namespace dcasgd {
namespace {

double Since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

// Errors after which the step is dropped and the worker pulls again.
bool Recoverable(const absl::Status& s) {
  return s.code() == absl::StatusCode::kUnavailable ||
         s.code() == absl::StatusCode::kFailedPrecondition ||
         s.code() == absl::StatusCode::kAborted || s.code() == absl::StatusCode::kDeadlineExceeded;
}

std::vector<std::string> TensorNames(const model::Model& model, uint64_t seed) {
  std::vector<std::string> names;
  for (const TensorSpec& spec : model.ParameterSpecs(seed)) names.push_back(spec.name);
  return names;
}

}  // namespace

Trainer::Trainer(const WorkerOptions& options, PsClient* ps, CoordinatorClient* coordinator,
                 DataSource* data, const model::Model* model, WorkerMetrics* metrics)
    : options_(options),
      ps_(ps),
      coordinator_(coordinator),
      data_(data),
      model_(model),
      metrics_(metrics) {}

absl::Status Trainer::PullWithRetry(const absl::Notification* stop) {
  client::Backoff backoff(client::Backoff::Options{absl::Milliseconds(100), absl::Seconds(5)});
  const absl::Time give_up = absl::Now() + absl::Minutes(5);
  while (true) {
    absl::Status s = ps_->Pull(names_, &weights_);
    if (s.ok()) return s;
    if (!Recoverable(s) && s.code() != absl::StatusCode::kNotFound) return s;
    if (s.code() == absl::StatusCode::kNotFound && !specs_.empty()) {
      // A shard restarted without a checkpoint of the declarations: declare
      // again (idempotent on the shards that still have them).
      absl::Status declared = ps_->Declare(specs_);
      if (!declared.ok() && declared.code() != absl::StatusCode::kAlreadyExists) {
        std::fprintf(stderr, "[%s] re-declaring failed: %s\n", options_.worker_name.c_str(),
                     std::string(declared.message()).c_str());
      }
    }
    if (absl::Now() > give_up) return s;
    std::fprintf(stderr, "[%s] pull failed, retrying: %s\n", options_.worker_name.c_str(),
                 std::string(s.message()).c_str());
    if (stop->WaitForNotificationWithTimeout(backoff.Next())) return absl::OkStatus();
  }
}

absl::Status Trainer::Run(const absl::Notification* stop) {
  const std::vector<TensorSpec> specs = model_->ParameterSpecs(options_.seed);
  names_ = TensorNames(*model_, options_.seed);
  absl::Status declared = ps_->Declare(specs);
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
    ASSIGN_OR_RETURN(v1::AcquireDataShardResponse answer,
                     coordinator_->Acquire(options_.worker_name, num_shards, options_.epochs));
    if (answer.has_job_done() && answer.job_done()) {
      std::fprintf(stderr, "[%s] job done after %lld steps of this worker\n",
                   options_.worker_name.c_str(), static_cast<long long>(steps_));
      // The shards keep serving; have them checkpoint the finished model now
      // rather than at the next interval (a no-op where checkpoints are off).
      auto written = ps_->Checkpoint();
      if (!written.ok() && written.status().code() != absl::StatusCode::kFailedPrecondition) {
        std::fprintf(stderr, "[%s] final checkpoint request failed: %s\n",
                     options_.worker_name.c_str(), std::string(written.status().message()).c_str());
      }
      return absl::OkStatus();
    }
    if (!answer.has_lease()) {
      stop->WaitForNotificationWithTimeout(absl::Milliseconds(answer.retry_after_ms()));
      continue;
    }
    bool finished = false;
    RETURN_IF_ERROR(TrainShard(answer.lease(), stop, &finished));
    if (finished) {
      absl::Status done = coordinator_->Complete(answer.lease().lease_id());
      if (!done.ok()) {
        // The lease expired meanwhile and the shard went to someone else.
        std::fprintf(stderr, "[%s] %s\n", options_.worker_name.c_str(),
                     std::string(done.message()).c_str());
      }
    }
    if (options_.max_steps > 0 && steps_ >= options_.max_steps) return absl::OkStatus();
  }
  return absl::OkStatus();
}

absl::Status Trainer::TrainShard(const v1::DataLease& lease, const absl::Notification* stop,
                                 bool* finished) {
  *finished = false;
  ASSIGN_OR_RETURN(data::LabeledExamples examples, data_->LoadTrain(lease.data_shard()));
  if (examples.feature_dim != static_cast<size_t>(model_->input_dim())) {
    return absl::FailedPreconditionError(absl::StrCat(
        "data shard ", lease.data_shard(), " has ", examples.feature_dim,
        " features per example; model ", model_->name(), " takes ", model_->input_dim()));
  }
  std::vector<uint32_t> order(examples.count);
  std::iota(order.begin(), order.end(), 0u);
  std::mt19937_64 rng(options_.seed * 1000003 + lease.epoch() * 7919 + lease.data_shard());
  std::shuffle(order.begin(), order.end(), rng);

  const size_t dim = examples.feature_dim;
  const size_t batch = static_cast<size_t>(options_.batch_size);
  std::vector<float> features;
  std::vector<int32_t> labels;
  absl::Time last_renew = absl::Now();
  const absl::Duration renew_every = absl::Milliseconds(lease.lease_ms()) / 3;
  for (size_t begin = 0; begin < examples.count; begin += batch) {
    if (stop->HasBeenNotified()) return absl::OkStatus();
    const size_t n = std::min(batch, examples.count - begin);
    features.resize(n * dim);
    labels.resize(n);
    for (size_t i = 0; i < n; ++i) {
      const uint32_t e = order[begin + i];
      std::copy_n(examples.features.data() + size_t{e} * dim, dim, features.data() + i * dim);
      labels[i] = examples.labels[e];
    }
    const auto t0 = std::chrono::steady_clock::now();
    ASSIGN_OR_RETURN(float loss, model_->Gradient(weights_, features, labels, &gradients_));
    const double compute = Since(t0);
    if (!std::isfinite(loss)) {
      // The shards would refuse the gradient (INVALID_ARGUMENT): say why.
      return absl::FailedPreconditionError(
          absl::StrCat("training diverged: the loss is ", loss, " at step ", steps_ + 1, " (epoch ",
                       lease.epoch() + 1, ", data shard ", lease.data_shard(),
                       "); lower the shards' --lr (or --lambda0), or use fewer workers"));
    }
    const auto t1 = std::chrono::steady_clock::now();
    PushStats stats;
    absl::Status pushed = ps_->PushPull(gradients_, &weights_, &stats);
    const double comm = Since(t1);
    if (!pushed.ok()) {
      if (!Recoverable(pushed)) return pushed;
      metrics_->CountRetry();
      std::fprintf(stderr, "[%s] step dropped, pulling again: %s\n", options_.worker_name.c_str(),
                   std::string(pushed.message()).c_str());
      RETURN_IF_ERROR(PullWithRetry(stop));
      continue;
    }
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
                   options_.worker_name.c_str(), lease.epoch() + 1, lease.data_shard(),
                   static_cast<long long>(steps_), window_loss_ / window_steps_,
                   window_examples_ / std::max(seconds, 1e-9), window_staleness_ / window_steps_,
                   100 * window_compute_ / busy, 100 * window_comm_ / busy);
      window_examples_ = 0;
      window_compute_ = window_comm_ = window_loss_ = window_staleness_ = 0;
      window_steps_ = 0;
      window_start_ = absl::Now();
    }
    if (options_.max_steps > 0 && steps_ >= options_.max_steps) return absl::OkStatus();
    if (absl::Now() - last_renew > renew_every) {
      absl::Status renewed = coordinator_->Renew(lease.lease_id());
      if (renewed.code() == absl::StatusCode::kFailedPrecondition) {
        // Handed to another worker: stop training on it.
        std::fprintf(stderr, "[%s] %s\n", options_.worker_name.c_str(),
                     std::string(renewed.message()).c_str());
        return absl::OkStatus();
      }
      RETURN_IF_ERROR(renewed);
      last_renew = absl::Now();
    }
  }
  *finished = true;
  return absl::OkStatus();
}

absl::Status RunEvaluator(const WorkerOptions& options, PsClient* ps,
                          CoordinatorClient* coordinator, DataSource* data,
                          const model::Model* model, WorkerMetrics* metrics,
                          const absl::Notification* stop) {
  ASSIGN_OR_RETURN(data::LabeledExamples test, data->LoadTest());
  const std::vector<std::string> names = TensorNames(*model, options.seed);
  TensorMap weights;
  bool final_round = false;
  while (!stop->HasBeenNotified()) {
    // Whether the job was done *before* this pull: then this is the model
    // every worker finished with.
    absl::StatusOr<v1::JobStatus> job = coordinator->JobStatus();
    if (job.ok() && job->done()) final_round = true;
    absl::Status pulled = ps->Pull(names, &weights);
    if (!pulled.ok()) {
      // Before the first worker declared the model: NOT_FOUND; shards
      // restarting: UNAVAILABLE. Wait and try again.
      std::fprintf(stderr, "[eval] waiting for the model: %s\n",
                   std::string(pulled.message()).c_str());
      stop->WaitForNotificationWithTimeout(absl::Seconds(1));
      continue;
    }
    uint64_t version = 0;
    auto status = ps->GetStatus();
    if (status.ok()) {
      for (const auto& shard : *status) version += shard.version();
    }
    ASSIGN_OR_RETURN(model::Evaluation eval, model->Evaluate(weights, test.features, test.labels));
    metrics->ObserveEvaluation(eval.accuracy, eval.mean_loss, static_cast<double>(version));
    std::fprintf(stderr,
                 "[eval] model version %llu: test accuracy %.4f, test loss %.4f (%lld examples)\n",
                 static_cast<unsigned long long>(version), eval.accuracy, eval.mean_loss,
                 static_cast<long long>(eval.examples));
    if (final_round) {
      std::printf("final test accuracy: %.4f (test loss %.4f, model version %llu)\n", eval.accuracy,
                  eval.mean_loss, static_cast<unsigned long long>(version));
      std::fflush(stdout);
      return absl::OkStatus();
    }
    stop->WaitForNotificationWithTimeout(options.eval_interval);
  }
  return absl::OkStatus();
}

}  // namespace dcasgd
