#include "base/periodic_task.h"

#include <utility>

namespace dcasgd {

PeriodicTask::PeriodicTask(absl::Duration period, absl::AnyInvocable<void()> task)
    : period_(period), task_(std::move(task)) {
  absl::MutexLock lock(&join_mu_);
  thread_ = std::thread([this] { Loop(); });
}

PeriodicTask::~PeriodicTask() { Stop(); }

void PeriodicTask::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  absl::MutexLock lock(&join_mu_);
  if (thread_.joinable()) thread_.join();
}

void PeriodicTask::Loop() {
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      mu_.AwaitWithTimeout(absl::Condition(&stop_), period_);
      if (stop_) return;
    }
    task_();
  }
}

}  // namespace dcasgd
