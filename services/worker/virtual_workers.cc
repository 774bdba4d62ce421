#include "services/worker/virtual_workers.h"

#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "base/status_macros.h"
#include "clients/cpp/ps_client.h"
#include "coordinator/coordinator_client.h"
#include "core/placement.h"
#include "services/worker/data_cache.h"
#include "services/worker/data_source.h"
#include "services/worker/step_schedule.h"
#include "services/worker/trainer.h"
#include "services/worker/worker.h"

namespace dcasgd {
namespace {

// One logical worker: everything an ordinary worker process has, but the
// model and the metrics.
struct LogicalWorker {
  WorkerOptions options;
  std::unique_ptr<DataSource> data;
  std::unique_ptr<PsClient> ps;
  std::unique_ptr<CoordinatorClient> coordinator;
  std::unique_ptr<Trainer> trainer;
  absl::Status result;
};

// FNV-1a over the bytes of every tensor, in the model's tensor order: equal
// fingerprints mean bit-identical weights (for reproducibility checks).
uint64_t Fingerprint(const std::vector<std::string>& names, const TensorMap& weights) {
  uint64_t hash = kFnv1a64Offset;
  for (const std::string& name : names) {
    const std::vector<float>& values = weights.at(name);
    hash = Fnv1a64(absl::string_view(reinterpret_cast<const char*>(values.data()),
                                     values.size() * sizeof(float)),
                   hash);
  }
  return hash;
}

// Pulls the model as an evaluator (no backup) and evaluates it on the test
// set; *fingerprint (if set) gets the weights' Fingerprint.
absl::StatusOr<model::Evaluation> EvaluateModel(const model::Model& model, PsClient* evaluator,
                                                const data::LabeledExamples& test, uint64_t seed,
                                                uint64_t* fingerprint = nullptr) {
  std::vector<std::string> names;
  for (const TensorSpec& spec : model.ParameterSpecs(seed)) names.push_back(spec.name);
  TensorMap weights;
  RETURN_IF_ERROR(evaluator->Pull(names, &weights));
  if (fingerprint != nullptr) *fingerprint = Fingerprint(names, weights);
  return model.Evaluate(weights, test.features, test.labels);
}

std::string HistogramJson(const std::map<uint64_t, uint64_t>& histogram) {
  std::string out = "{";
  for (const auto& [staleness, count] : histogram) {
    absl::StrAppend(&out, out.size() > 1 ? ", " : "", "\"", staleness, "\": ", count);
  }
  return out + "}";
}

}  // namespace

absl::Status RunVirtualWorkers(const WorkerOptions& options, const model::Model& model,
                               WorkerMetrics* metrics, const absl::Notification* stop) {
  const int m = options.virtual_workers;
  const std::string& name = options.worker_name;
  std::unique_ptr<StepSchedule> schedule;
  if (options.schedule != "free") {
    ASSIGN_OR_RETURN(schedule, StepSchedule::Create(options.schedule, m, options.seed));
  }
  const absl::Time start = absl::Now();

  // The evaluator's view: test data and a client without a backup.
  ASSIGN_OR_RETURN(std::unique_ptr<DataSource> test_source, DataSource::Open(options.data));
  ASSIGN_OR_RETURN(data::LabeledExamples test, test_source->LoadTest());
  ClientOptions eval_options;
  eval_options.shard_addresses = options.shard_addresses;
  eval_options.replica_addresses = options.replica_addresses;
  eval_options.credentials = options.credentials;
  eval_options.wire_dtype = options.wire_dtype;
  ASSIGN_OR_RETURN(std::unique_ptr<PsClient> evaluator,
                   ConnectWithRetry(eval_options, name + "-eval", stop));
  ASSIGN_OR_RETURN(std::vector<ShardStatus> shards, evaluator->GetStatus());
  for (const ShardStatus& shard : shards) {
    if (schedule != nullptr && shard.sync == "ssgd") {
      return absl::FailedPreconditionError(absl::StrCat(
          "shard ", shard.shard_index, " runs SSGD rounds (", shard.update_rule,
          "), which wait for every worker: turns would deadlock; use --schedule=free"));
    }
  }

  std::shared_ptr<DataShardCache> cache =
      MakeDataShardCache(options.data_cache_bytes);  // shared by all
  std::vector<LogicalWorker> workers(static_cast<size_t>(m));
  for (int i = 0; i < m; ++i) {
    LogicalWorker& w = workers[static_cast<size_t>(i)];
    w.options = options;
    w.options.worker_name = absl::StrCat(name, "-v", i);
    ASSIGN_OR_RETURN(w.data, DataSource::Open(options.data, cache));
    ClientOptions client;
    client.shard_addresses = options.shard_addresses;
    client.replica_addresses = options.replica_addresses;
    client.worker_name = w.options.worker_name;
    client.credentials = options.credentials;
    client.wire_dtype = options.wire_dtype;
    ASSIGN_OR_RETURN(w.ps, ConnectWithRetry(client, w.options.worker_name, stop));
    w.coordinator = std::make_unique<CoordinatorClient>(CoordinatorAddress(options),
                                                        absl::Minutes(5), options.credentials);
    w.trainer = std::make_unique<Trainer>(w.options, w.ps.get(), w.coordinator.get(), w.data.get(),
                                          &model, metrics);
    if (schedule != nullptr) w.trainer->set_schedule(schedule.get(), i);
  }
  std::fprintf(stderr, "[%s] %d virtual workers, schedule %s, model %s, %zu shards\n", name.c_str(),
               m, schedule != nullptr ? schedule->name().c_str() : "free", model.name().c_str(),
               options.shard_addresses.size());

  if (schedule != nullptr && options.eval_every_steps > 0) {
    // Runs inside a turn: the model does not move while it is evaluated.
    schedule->set_on_push([&](uint64_t pushes) {
      if (pushes % static_cast<uint64_t>(options.eval_every_steps) != 0) return;
      absl::StatusOr<model::Evaluation> eval =
          EvaluateModel(model, evaluator.get(), test, options.seed);
      if (!eval.ok()) {
        std::fprintf(stderr, "[%s] evaluation at step %llu failed: %s\n", name.c_str(),
                     static_cast<unsigned long long>(pushes),
                     std::string(eval.status().message()).c_str());
        return;
      }
      metrics->ObserveEvaluation(eval->accuracy, eval->mean_loss, static_cast<double>(pushes));
      std::printf("eval step %llu: test accuracy %.4f, test loss %.4f\n",
                  static_cast<unsigned long long>(pushes), eval->accuracy, eval->mean_loss);
      std::fflush(stdout);
    });
  }

  // The first failure (or the caller's stop) stops every logical worker
  // after its step; a stopped schedule releases those waiting for a turn.
  absl::Notification stop_all;
  absl::Mutex mu;
  bool finished = false;  // guarded by mu
  auto stop_everything = [&] {
    absl::MutexLock lock(&mu);
    if (!stop_all.HasBeenNotified()) stop_all.Notify();
    if (schedule != nullptr) schedule->Stop();
  };
  std::thread relay([&] {
    while (!stop->WaitForNotificationWithTimeout(absl::Milliseconds(100))) {
      absl::MutexLock lock(&mu);
      if (finished) return;
    }
    stop_everything();
  });
  std::vector<std::thread> threads;
  for (LogicalWorker& w : workers) {
    threads.emplace_back([&] {
      w.result = w.trainer->Run(&stop_all);
      if (!w.result.ok()) {
        std::fprintf(stderr, "[%s] stopping every virtual worker: %s\n",
                     w.options.worker_name.c_str(), std::string(w.result.message()).c_str());
        stop_everything();
      }
    });
  }
  for (std::thread& t : threads) t.join();
  {
    absl::MutexLock lock(&mu);
    finished = true;
  }
  relay.join();

  absl::Status first = absl::OkStatus();
  uint64_t steps = 0;
  for (LogicalWorker& w : workers) {
    if (first.ok()) first = w.result;
    steps += static_cast<uint64_t>(w.trainer->steps());
    if (absl::Status left = w.ps->Leave(); !left.ok()) {
      std::fprintf(stderr, "[%s] leaving failed (the lease will expire): %s\n",
                   w.options.worker_name.c_str(), std::string(left.message()).c_str());
    }
  }
  if (cache != nullptr) std::fprintf(stderr, "[%s] %s\n", name.c_str(), cache->Summary().c_str());
  RETURN_IF_ERROR(first);
  if (stop->HasBeenNotified()) return absl::OkStatus();
  uint64_t fingerprint = 0;
  ASSIGN_OR_RETURN(model::Evaluation eval,
                   EvaluateModel(model, evaluator.get(), test, options.seed, &fingerprint));
  metrics->ObserveEvaluation(eval.accuracy, eval.mean_loss, static_cast<double>(steps));
  std::printf("final test accuracy: %.4f (test loss %.4f, pushes %llu, weights %016llx)\n",
              eval.accuracy, eval.mean_loss, static_cast<unsigned long long>(steps),
              static_cast<unsigned long long>(fingerprint));
  if (schedule != nullptr) {
    std::printf("staleness: %s\n", HistogramJson(schedule->staleness_histogram()).c_str());
  }
  std::printf("wall seconds: %.1f\n", absl::ToDoubleSeconds(absl::Now() - start));
  std::fflush(stdout);
  return absl::OkStatus();
}

}  // namespace dcasgd
