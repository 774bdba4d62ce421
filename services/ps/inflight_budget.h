#ifndef DCASGD_SERVICES_PS_INFLIGHT_BUDGET_H_
#define DCASGD_SERVICES_PS_INFLIGHT_BUDGET_H_

#include <cstdint>
#include <deque>

#include "absl/functional/any_invocable.h"
#include "absl/synchronization/mutex.h"

namespace dcasgd {

// The bytes that requests in flight may hold on one shard, all calls
// together: gradients of pushes being received, their PushPull replies, and
// pull messages being sent. A counting semaphore whose waiters are callbacks,
// so that a gRPC reactor waits for room without blocking a thread: a stream
// that finds the budget full stops reading (HTTP/2 flow control then holds
// its client back) until bytes are released.
//
// Waiters are served in arrival order, so a large request is not starved by
// small ones. Thread-safe; callbacks run without the lock held.
class InflightBudget {
 public:
  using Ticket = uint64_t;

  explicit InflightBudget(uint64_t capacity);
  InflightBudget(const InflightBudget&) = delete;
  InflightBudget& operator=(const InflightBudget&) = delete;

  uint64_t capacity() const { return capacity_; }
  uint64_t in_use() const;

  // Takes `bytes` (<= capacity) now when they fit and nobody waits ahead, and
  // returns 0 (`granted` is dropped, not called). Otherwise queues `granted`,
  // which runs once the bytes are taken for the caller, on the thread of the
  // Release that made room, and returns a ticket (> 0) for Cancel.
  Ticket AcquireOrWait(uint64_t bytes, absl::AnyInvocable<void()> granted);

  // Withdraws a queued waiter: true when it was still queued (its callback
  // will never run and it holds nothing); false when it was already granted
  // (its callback runs or ran, and the caller holds the bytes).
  bool Cancel(Ticket ticket);

  // Returns bytes taken earlier and grants the waiters that now fit.
  void Release(uint64_t bytes);

  // True when nothing is in flight and bytes were released since the last
  // call that returned true (`*mark`, 0 at first, is that call's count):
  // the buffers of a burst of requests were freed, and the shard may hand
  // the memory back (ReturnFreeMemoryToSystem).
  bool IdleAfterRelease(uint64_t* mark) const;

 private:
  struct Waiter {
    Ticket ticket;
    uint64_t bytes;
    absl::AnyInvocable<void()> granted;
  };

  // Constant after construction.
  const uint64_t capacity_;

  mutable absl::Mutex mu_;
  uint64_t in_use_ ABSL_GUARDED_BY(mu_) = 0;
  // Bytes released since construction (IdleAfterRelease).
  uint64_t released_total_ ABSL_GUARDED_BY(mu_) = 0;
  std::deque<Waiter> waiters_ ABSL_GUARDED_BY(mu_);
  Ticket next_ticket_ ABSL_GUARDED_BY(mu_) = 1;
};

}  // namespace dcasgd

#endif  // DCASGD_SERVICES_PS_INFLIGHT_BUDGET_H_
