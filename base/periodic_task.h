#ifndef DCASGD_BASE_PERIODIC_TASK_H_
#define DCASGD_BASE_PERIODIC_TASK_H_

#include <thread>

#include "absl/functional/any_invocable.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace dcasgd {

// Runs `task` on its own thread every `period` (first run one period after
// construction) until Stop() or destruction. Stop() wakes the thread, waits
// for a running `task` to return and joins; it is idempotent. Thread-safe.
class PeriodicTask {
 public:
  PeriodicTask(absl::Duration period, absl::AnyInvocable<void()> task);
  ~PeriodicTask();
  PeriodicTask(const PeriodicTask&) = delete;
  PeriodicTask& operator=(const PeriodicTask&) = delete;

  void Stop();

 private:
  void Loop();

  // Constant after construction.
  const absl::Duration period_;
  absl::AnyInvocable<void()> task_;  // only touched by the thread

  absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;

  absl::Mutex join_mu_;  // serialises Stop() callers
  std::thread thread_ ABSL_GUARDED_BY(join_mu_);
};

}  // namespace dcasgd

#endif  // DCASGD_BASE_PERIODIC_TASK_H_
