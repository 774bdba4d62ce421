#include "services/worker/evaluator.h"

#include <cmath>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/status_macros.h"

namespace dcasgd {

absl::Status RunEvaluator(const WorkerOptions& options, PsClient* ps,
                          CoordinatorClient* coordinator, DataSource* data,
                          const model::Model* model, WorkerMetrics* metrics,
                          const absl::Notification* stop) {
  ASSIGN_OR_RETURN(data::LabeledExamples test, data->LoadTest());
  std::vector<std::string> names;
  for (const TensorSpec& spec : model->ParameterSpecs(options.seed)) names.push_back(spec.name);
  TensorMap weights;
  bool final_round = false;
  // Progress of the job: the model version and the data shards done. When
  // neither moves for options.stall_timeout, no worker is training.
  std::pair<uint64_t, uint64_t> progress = {0, 0};
  absl::Time progressed = absl::Now();
  while (!stop->HasBeenNotified()) {
    // Whether the job was done *before* this pull: then this is the model
    // every worker finished with.
    absl::StatusOr<JobProgress> job = coordinator->JobStatus();
    if (job.ok() && job->done) final_round = true;
    absl::Status pulled = ps->Pull(names, &weights);
    uint64_t version = 0;
    if (pulled.ok()) {
      auto status = ps->GetStatus();
      if (status.ok()) {
        for (const ShardStatus& shard : *status) version += shard.version;
      }
    }
    const std::pair<uint64_t, uint64_t> now_progress = {version, job.ok() ? job->completed : 0};
    if (now_progress != progress) {
      progress = now_progress;
      progressed = absl::Now();
    } else if (!final_round && absl::Now() - progressed > options.stall_timeout) {
      return absl::DeadlineExceededError(absl::StrFormat(
          "no progress for %s: the model version (%d) and the data schedule (%d of %d data "
          "shards done) have not moved; no worker is training (did every worker exit or "
          "diverge? see their logs). Giving up (--stall_timeout_seconds)",
          absl::FormatDuration(absl::Trunc(absl::Now() - progressed, absl::Seconds(1))),
          progress.first, progress.second,
          job.ok() ? uint64_t{job->num_data_shards} * job->epochs : 0));
    }
    if (!pulled.ok()) {
      // Before the first worker declared the model: NOT_FOUND; shards
      // restarting: UNAVAILABLE. Wait and try again.
      std::fprintf(stderr, "[eval] waiting for the model: %s\n",
                   std::string(pulled.message()).c_str());
      stop->WaitForNotificationWithTimeout(absl::Seconds(1));
      continue;
    }
    for (const auto& [name, values] : weights) {
      for (float v : values) {
        if (!std::isfinite(v)) {
          return absl::DataLossError(absl::StrCat(
              "the model's weights are not finite (tensor '", name, "' at model version ", version,
              "): training diverged; lower the shards' --lr (or --lambda0), or use "
              "fewer workers"));
        }
      }
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
