// CancelFence: states, in code ThreadSanitizer can see, that a server
// reactor's OnCancel returned before its OnDone starts.
#ifndef DCASGD_SERVICES_PS_CANCEL_FENCE_H_
#define DCASGD_SERVICES_PS_CANCEL_FENCE_H_

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace dcasgd {

// gRPC may run a reactor's OnCancel and its OnDone on different threads, and
// runs OnDone only after OnCancel returned: it counts the reactions down with
// an atomic inside libgrpc++. That order is real, but a ThreadSanitizer build
// cannot see it when libgrpc++ is not instrumented (Debian's is not), and
// reports the reactor's deletion in OnDone as racing with what OnCancel did.
// Passing a mutex from the end of OnCancel to the start of OnDone states the
// same order where TSan sees it. It costs two uncontended lock operations per
// call and never blocks: OnDone cannot start before OnCancel returned.
//
// Thread-safe.
class CancelFence {
 public:
  // The last statement of OnCancel.
  void Leave() ABSL_LOCKS_EXCLUDED(mu_) { absl::MutexLock lock(&mu_); }
  // The first statement of OnDone, before the reactor is deleted.
  void Pass() ABSL_LOCKS_EXCLUDED(mu_) { absl::MutexLock lock(&mu_); }

 private:
  absl::Mutex mu_;
};

}  // namespace dcasgd

#endif  // DCASGD_SERVICES_PS_CANCEL_FENCE_H_
