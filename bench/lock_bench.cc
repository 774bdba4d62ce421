// What Abseil's lock-order tracking costs per lock, in the same run: one
// absl::Mutex locked and unlocked by 1 or 2 threads (2: contended), with
// the tracking as Debian's debug build of Abseil has it by default (tests),
// and off, as every dcasgd service sets it (base/process_setup.h).
//
// Run: build/<dir>/bench/lock_bench

#include "absl/synchronization/mutex.h"
#include "benchmark/benchmark.h"

namespace dcasgd {
namespace {

absl::Mutex mu;
int64_t counter ABSL_GUARDED_BY(mu) = 0;

void LockUnlock(benchmark::State& state, absl::OnDeadlockCycle mode) {
  if (state.thread_index() == 0) absl::SetMutexDeadlockDetectionMode(mode);
  for (auto _ : state) {
    absl::MutexLock lock(&mu);
    ++counter;
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_LockTracked(benchmark::State& state) { LockUnlock(state, absl::OnDeadlockCycle::kAbort); }
void BM_LockUntracked(benchmark::State& state) {
  LockUnlock(state, absl::OnDeadlockCycle::kIgnore);
}
// Interleaved, so that a change of load hits both alike.
BENCHMARK(BM_LockTracked)->Threads(1)->Threads(2)->Repetitions(3);
BENCHMARK(BM_LockUntracked)->Threads(1)->Threads(2)->Repetitions(3);

}  // namespace
}  // namespace dcasgd

BENCHMARK_MAIN();
