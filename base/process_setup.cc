#include "base/process_setup.h"

#include "absl/synchronization/mutex.h"
#include "base/memory.h"

namespace dcasgd {

void PrepareServiceProcess() {
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  TuneAllocatorForLargeMessages();
}

}  // namespace dcasgd
