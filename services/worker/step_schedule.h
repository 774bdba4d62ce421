#ifndef DCASGD_SERVICES_WORKER_STEP_SCHEDULE_H_
#define DCASGD_SERVICES_WORKER_STEP_SCHEDULE_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace dcasgd {

// Decides which of M logical ("virtual") workers in one process pushes next,
// so that the staleness the shards see is under control instead of being
// whatever the machine's scheduler makes of M processes on a few cores.
//
// A logical worker computes its gradient on the weights it pulled whenever it
// likes (the M workers compute in parallel), but pushes only in its turn,
// AwaitTurn .. EndTurn around its PushPull. One turn is one push, so the
// staleness of a push is the number of turns others took since this worker's
// previous turn:
//   round-robin  turns go 0, 1, ..., M-1, 0, ...: every push after the first
//                round has staleness exactly M-1;
//   random       the next worker is drawn uniformly (seeded): staleness is
//                geometric with mean M-1, with the heavy tail of a real
//                cluster;
//   slow:K[:F]   every K-th worker (slots K-1, 2K-1, ...) takes F times as
//                long per step as the others (F defaults to K): turns follow
//                each worker's simulated finishing time, so stragglers push
//                with large staleness and the others with small.
// Only workers that take part (Enter .. Exit: a worker that waits for a data
// lease or has finished steps out) get turns; the schedule waits for a
// participant whose turn it is while it computes.
//
// Thread-safe. AwaitTurn blocks; Stop wakes every waiter.
class StepSchedule {
 public:
  enum class Kind { kRoundRobin, kRandom, kSlow };

  // "round-robin", "random" or "slow:K[:F]" (K >= 2, F >= 1) for `workers`
  // logical workers (>= 1). INVALID_ARGUMENT naming the accepted forms.
  static absl::StatusOr<std::unique_ptr<StepSchedule>> Create(const std::string& spec, int workers,
                                                              uint64_t seed);

  // Every slot takes part from the start: the first turns go to slots that
  // are still starting up rather than to whoever is quickest.
  StepSchedule(Kind kind, int workers, int slow_every, int slow_factor, uint64_t seed);

  // `slot` takes part / stops taking part. Idempotent. Exit of the slot whose
  // turn it is (not yet taken) passes the turn on.
  void Enter(int slot);
  void Exit(int slot);
  // Blocks until it is `slot`'s turn (true) or Stop was called (false). The
  // slot must take part.
  bool AwaitTurn(int slot);
  // Ends `slot`'s turn. `pushed`: the push was applied, with the staleness
  // the shards reported (recorded in the histogram; `on_push` runs with the
  // push count before the next turn starts, so nothing is pushed meanwhile).
  void EndTurn(int slot, bool pushed, uint64_t staleness);
  // Wakes every waiter; AwaitTurn returns false from now on.
  void Stop();

  // Called by EndTurn after each applied push, with the number of pushes so
  // far, while no other slot can push. Set before any turn.
  void set_on_push(std::function<void(uint64_t pushes)> on_push) { on_push_ = std::move(on_push); }

  uint64_t pushes() const;
  // Staleness -> number of pushes.
  std::map<uint64_t, uint64_t> staleness_histogram() const;
  // The spec's canonical name, e.g. "slow:4:4".
  std::string name() const;

 private:
  // Picks the next slot among the participants when none holds the turn.
  void PickLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Step duration of `slot` in simulated time (slow schedule).
  double DurationOf(int slot) const;

  const Kind kind_;
  const int workers_;
  const int slow_every_;
  const int slow_factor_;
  std::function<void(uint64_t)> on_push_;

  mutable absl::Mutex mu_;
  std::vector<bool> taking_part_ ABSL_GUARDED_BY(mu_);
  // The slot whose turn it is (-1: none picked yet).
  int turn_ ABSL_GUARDED_BY(mu_) = -1;
  // Whether turn_ is inside AwaitTurn .. EndTurn.
  bool turn_taken_ ABSL_GUARDED_BY(mu_) = false;
  // The slot that pushed last (round-robin continues after it).
  int last_ ABSL_GUARDED_BY(mu_) = -1;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
  std::mt19937_64 rng_ ABSL_GUARDED_BY(mu_);
  // Slow schedule: when each slot's next step finishes, in step units.
  std::vector<double> finish_ ABSL_GUARDED_BY(mu_);
  double now_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t pushes_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<uint64_t, uint64_t> staleness_ ABSL_GUARDED_BY(mu_);
};

}  // namespace dcasgd

#endif  // DCASGD_SERVICES_WORKER_STEP_SCHEDULE_H_
