#ifndef DCASGD_SERVICES_WORKER_VIRTUAL_WORKERS_H_
#define DCASGD_SERVICES_WORKER_VIRTUAL_WORKERS_H_

#include "absl/status/status.h"
#include "absl/synchronization/notification.h"
#include "services/worker/model/model.h"
#include "services/worker/worker_metrics.h"
#include "services/worker/worker_options.h"

namespace dcasgd {

// Virtual workers: options.virtual_workers logical workers in one process,
// for convergence studies at a staleness that is under control. Each one is
// a full worker to the shards and the coordinator (its own Join and worker
// id, named "<worker_name>-v<i>", its own backup on every shard, its own data
// leases, model copy and gradient), trained by its own Trainer on its own
// thread; a StepSchedule (options.schedule) decides which one pushes next
// ("free": no turns, as M ordinary workers would; SSGD shards need it because
// a round waits for every worker). The shards, the update rules and the wire
// are the production ones: nothing about the algorithm is simulated.
//
// Output (stdout, one line each, for scripts): "eval step N: test accuracy A,
// test loss L" every options.eval_every_steps pushes (measured while no
// logical worker pushes, so exactly at N pushes); at the end of a finished
// job "final test accuracy: A (test loss L, pushes N, weights F)" (F: a
// 64-bit FNV-1a fingerprint of the weights' bytes, equal only for
// bit-identical models), then "staleness: {"s": count, ...}" (the staleness of every applied push
// as the shards reported it) and "wall seconds: S".
//
// Returns the first logical worker's error (the others stop after their
// step), FAILED_PRECONDITION for a turn-taking schedule on SSGD shards,
// INVALID_ARGUMENT for an unknown schedule.
absl::Status RunVirtualWorkers(const WorkerOptions& options, const model::Model& model,
                               WorkerMetrics* metrics, const absl::Notification* stop);

}  // namespace dcasgd

#endif  // DCASGD_SERVICES_WORKER_VIRTUAL_WORKERS_H_
