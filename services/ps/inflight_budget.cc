#include "services/ps/inflight_budget.h"

#include <utility>
#include <vector>

#include "base/check.h"

namespace dcasgd {

InflightBudget::InflightBudget(uint64_t capacity) : capacity_(capacity) {
  DCASGD_CHECK(capacity_ > 0);
}

uint64_t InflightBudget::in_use() const {
  absl::MutexLock lock(&mu_);
  return in_use_;
}

bool InflightBudget::IdleAfterRelease(uint64_t* mark) const {
  absl::MutexLock lock(&mu_);
  if (in_use_ != 0 || released_total_ == *mark) return false;
  *mark = released_total_;
  return true;
}

InflightBudget::Ticket InflightBudget::AcquireOrWait(uint64_t bytes,
                                                     absl::AnyInvocable<void()> granted) {
  DCASGD_CHECK(bytes <= capacity_);
  absl::MutexLock lock(&mu_);
  if (waiters_.empty() && in_use_ + bytes <= capacity_) {
    in_use_ += bytes;
    return 0;
  }
  const Ticket ticket = next_ticket_++;
  waiters_.push_back(Waiter{ticket, bytes, std::move(granted)});
  return ticket;
}

bool InflightBudget::Cancel(Ticket ticket) {
  std::vector<absl::AnyInvocable<void()>> run;
  bool found = false;
  {
    absl::MutexLock lock(&mu_);
    for (auto it = waiters_.begin(); it != waiters_.end(); ++it) {
      if (it->ticket != ticket) continue;
      waiters_.erase(it);
      found = true;
      break;
    }
    // The withdrawn waiter may have blocked smaller ones behind it.
    while (found && !waiters_.empty() && in_use_ + waiters_.front().bytes <= capacity_) {
      in_use_ += waiters_.front().bytes;
      run.push_back(std::move(waiters_.front().granted));
      waiters_.pop_front();
    }
  }
  for (auto& granted : run) granted();
  return found;
}

void InflightBudget::Release(uint64_t bytes) {
  if (bytes == 0) return;
  std::vector<absl::AnyInvocable<void()>> run;
  {
    absl::MutexLock lock(&mu_);
    DCASGD_CHECK(bytes <= in_use_);
    in_use_ -= bytes;
    released_total_ += bytes;
    while (!waiters_.empty() && in_use_ + waiters_.front().bytes <= capacity_) {
      in_use_ += waiters_.front().bytes;
      run.push_back(std::move(waiters_.front().granted));
      waiters_.pop_front();
    }
  }
  for (auto& granted : run) granted();
}

}  // namespace dcasgd
