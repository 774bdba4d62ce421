// Fuzz target: the coordinator's persisted state (coordinator/schedule_file.h,
// docs/checkpoint-format.md "coordinator.state") from arbitrary bytes, read
// the way shard 0 reads it at start: OpenDataCoordinator over a directory
// holding the bytes as coordinator.state.
//
// Checks: no crash, leak or undefined behaviour, and no allocation beyond
// the coordinator's limits whatever the file claims (ASan's and libFuzzer's
// memory limits); a file is either refused with DATA_LOSS naming it, or
// restored into a coordinator that serialises back to a text which restores
// again to the same text and keeps serving requests.

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/clock.h"
#include "base/file.h"
#include "coordinator/data_coordinator.h"
#include "coordinator/schedule_file.h"
#include "tests/fuzz/fuzz_input.h"

namespace dcasgd::fuzz {
namespace {

void Run(const uint8_t* data, size_t size) {
  const std::string path = absl::StrCat(ScratchDir(), "/", kScheduleFileName);
  // Not durable: the file is read back at once (and fsync costs runs).
  if (!WriteFileAtomically(path, absl::string_view(reinterpret_cast<const char*>(data), size),
                           /*durable=*/false)
           .ok()) {
    Fail("cannot write the fuzz input");
  }
  ManualClock clock;
  absl::StatusOr<OpenedCoordinator> opened =
      OpenDataCoordinator(absl::Seconds(10), &clock, ScratchDir());
  if (!opened.ok()) {
    // An empty file is "nothing saved yet" (OpenDataCoordinator); any other
    // refusal is DATA_LOSS naming the file.
    if (!absl::IsDataLoss(opened.status()) ||
        opened.status().message().find(kScheduleFileName) == absl::string_view::npos) {
      Fail("a corrupt data schedule is not DATA_LOSS naming the file", opened.status());
    }
    return;
  }
  DataCoordinator& coordinator = *opened->coordinator;
  const std::string text = coordinator.SerializeProgress();
  DataCoordinator again(absl::Seconds(10), &clock);
  if (absl::Status s = again.RestoreProgress(text); !s.ok()) {
    Fail("a restored data schedule saves what does not restore", s);
  }
  if (again.SerializeProgress() != text) Fail("a restored data schedule changes when saved twice");
  // A restored coordinator keeps serving: its leases renew and complete, and
  // the next acquire of its own job succeeds or says why not.
  const JobProgress p = coordinator.Progress();
  if (p.configured) {
    absl::StatusOr<AcquireResult> acquired =
        coordinator.Acquire("fuzz-worker", p.num_data_shards, p.epochs);
    CheckAnswer(acquired.status());
    if (acquired.ok()) {
      if (const auto* lease = std::get_if<DataLease>(&*acquired)) {
        CheckAnswer(coordinator.Complete(lease->lease_id, lease->secret));
      }
    }
  }
}

}  // namespace
}  // namespace dcasgd::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  dcasgd::fuzz::Run(data, size);
  return 0;
}
