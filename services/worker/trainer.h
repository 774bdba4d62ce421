#ifndef DCASGD_SERVICES_WORKER_TRAINER_H_
#define DCASGD_SERVICES_WORKER_TRAINER_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/notification.h"
#include "clients/cpp/ps_client.h"
#include "coordinator/coordinator_client.h"
#include "services/worker/data_source.h"
#include "services/worker/model/model.h"
#include "services/worker/step_schedule.h"
#include "services/worker/worker_metrics.h"
#include "services/worker/worker_options.h"

namespace dcasgd {

class DataLeaseRenewer;  // trainer.cc

// The train loop of one stateless worker (paper Alg. 1, worker side):
// declare the model (idempotent), pull, then repeatedly lease a data shard
// from the coordinator, and for each minibatch compute the gradient on the
// pulled weights and PushPull it; the reply is the next step's weights.
//
// Failures: a lost lease or missing backup (FAILED_PRECONDITION; the client
// has re-joined), a too-stale push (ABORTED), a shard restarted without the
// model (NOT_FOUND) or unreachable, restarting or hung shards (UNAVAILABLE,
// CANCELLED, DEADLINE_EXCEEDED) make the worker pull again with backoff
// (declaring the model again if needed) and push the same batch again with
// the same step, so no shard applies it twice; a batch is skipped after 10
// failed pushes. Shard 0's coordinator being unreachable or unable to save
// is waited out (renewals fail softly, Acquire and Complete retry). Outages
// longer than 5 minutes, a corrupt data shard or a rejected S3 request end
// Run with that error. Not thread-safe; all pointers must outlive the
// trainer.
//
// Pipelined (options.pipeline_depth d > 0, not with virtual workers): the
// gradient of the next batch is computed on the latest weights received
// while up to d PushPulls are in flight (PushPullAsync), and each push names
// the step of the reply its gradient was computed on (0: the last pull) as
// its base, so the shards compensate from exactly those weights. A push that
// fails is retried as above (pull, recompute, push with its step) after the
// pushes behind it were answered; the pipeline then starts again from the
// pulled weights.
class Trainer {
 public:
  Trainer(const WorkerOptions& options, PsClient* ps, CoordinatorClient* coordinator,
          DataSource* data, const model::Model* model, WorkerMetrics* metrics);

  // Runs until the job is done (OK), `stop` is notified (OK, after the step
  // in progress), or max_steps is reached (OK). The caller Leaves afterwards.
  absl::Status Run(const absl::Notification* stop);

  int64_t steps() const { return steps_; }

  // Makes this trainer logical worker `slot` of `schedule` (virtual
  // workers): it pushes only in its turns and steps out of the schedule while
  // it has no data lease. Call before Run; `schedule` must outlive Run.
  void set_schedule(StepSchedule* schedule, int slot) {
    schedule_ = schedule;
    slot_ = slot;
  }

 private:
  // Pulls every model tensor, retrying UNAVAILABLE / FAILED_PRECONDITION /
  // NOT_FOUND with backoff until it works, `stop`, or ~5 minutes.
  absl::Status PullWithRetry(const absl::Notification* stop);
  // Runs `call` until it returns something other than a transient error
  // (UNAVAILABLE, CANCELLED, DEADLINE_EXCEEDED), `stop`, or ~5 minutes.
  template <typename Call>
  absl::Status RetryTransient(const char* what, const absl::Notification* stop, Call call);
  // Trains on one leased shard, renewed in the background by `renewer` (so
  // it lives on while the worker waits for a shard to come back); stops
  // early when the renewer reports the lease lost. *finished says whether
  // every batch was done.
  absl::Status TrainShard(const DataLease& lease, DataLeaseRenewer* renewer,
                          const absl::Notification* stop, bool* finished);
  // Completes a fully trained lease at the coordinator and says so.
  void CompleteLease(const DataLease& lease);
  // FAILED_PRECONDITION "training diverged" with where and what to change.
  absl::Status Diverged(float loss, const DataLease& lease) const;
  // One batch of the pipeline, from its gradient to its answer.
  struct InFlight;
  // TrainShard with options.pipeline_depth pushes in flight.
  absl::Status TrainShardPipelined(const DataLease& lease, const data::LabeledExamples& examples,
                                   const std::vector<uint32_t>& order, DataLeaseRenewer* renewer,
                                   const absl::Notification* stop);
  // Waits for the oldest push in flight and takes its reply as the weights;
  // a failed push has its batch pushed again synchronously (PushBatch).
  // Sets *resynced when it pulled (the weights are no longer the replies'
  // sequence, and every push in flight was answered). An answered batch goes
  // to `spare`, whose buffers the next batch reuses.
  absl::Status FinishOldest(const DataLease& lease, std::deque<std::unique_ptr<InFlight>>* flight,
                            std::vector<std::unique_ptr<InFlight>>* spare,
                            const absl::Notification* stop, bool* resynced);
  // Pushes one batch until a push of it succeeds (computing its gradient
  // on the current weights each attempt), is superseded, or has failed 10
  // times. `step` 0: a new one; `failed`: the error of an earlier attempt of
  // it (handled first: pull, then push again). Sets *pushed_batch, and
  // *stopped when `stop` (or the schedule) ended it.
  absl::Status PushBatch(const DataLease& lease, const std::vector<float>& features,
                         const std::vector<int32_t>& labels, size_t n, uint64_t step,
                         absl::Status failed, const absl::Notification* stop, bool* pushed_batch,
                         bool* stopped);
  // After a failed push of `step` (attempt number `attempt`): logs it,
  // counts the retry and pulls. OK to go on (*give_up says whether the batch
  // is skipped); an error that is not recoverable ends the worker.
  absl::Status AfterFailedPush(const absl::Status& pushed, int attempt, uint64_t step,
                               const absl::Notification* stop, bool* give_up);
  // Counts a pushed batch of `n` examples (metrics, and the progress line
  // every options.log_every steps).
  void RecordStep(const DataLease& lease, size_t n, double compute, double comm, float loss,
                  const PushStats& stats);

  const WorkerOptions options_;
  PsClient* const ps_;
  CoordinatorClient* const coordinator_;
  DataSource* const data_;
  const model::Model* const model_;
  WorkerMetrics* const metrics_;
  StepSchedule* schedule_ = nullptr;  // not owned; null: push whenever ready
  int slot_ = 0;

  std::vector<TensorSpec> specs_;  // as declared, for re-declaring
  std::vector<std::string> names_;
  TensorMap weights_;
  // The step of the PushPull whose reply weights_ holds; 0 after a pull (the
  // base of a push computed on them, ps.proto PushRequest.base_step).
  uint64_t weights_step_ = 0;
  TensorMap gradients_;
  int64_t steps_ = 0;
  // For the progress line.
  int64_t window_examples_ = 0;
  double window_compute_ = 0, window_comm_ = 0, window_loss_ = 0, window_staleness_ = 0;
  int window_steps_ = 0;
  absl::Time window_start_;
};

}  // namespace dcasgd

#endif  // DCASGD_SERVICES_WORKER_TRAINER_H_
