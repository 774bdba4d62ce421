#ifndef DCASGD_COORDINATOR_SCHEDULE_FILE_H_
#define DCASGD_COORDINATOR_SCHEDULE_FILE_H_

// The persisted data schedule: where shard 0 keeps its DataCoordinator's state
// (docs/checkpoint-format.md, "coordinator.state") so that a restart neither
// restarts the epochs nor forgets the leases out.

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "base/clock.h"
#include "coordinator/data_coordinator.h"

namespace dcasgd {

// The file's name inside the shard's checkpoint directory.
inline constexpr char kScheduleFileName[] = "coordinator.state";

// A coordinator and what was restored into it.
struct OpenedCoordinator {
  std::unique_ptr<DataCoordinator> coordinator;
  // "data schedule C of N data shards done, L leased" when a saved schedule
  // was restored; empty otherwise.
  std::string restored;
};

// The coordinator of one job with `lease` as its data-lease duration. With
// an empty `dir` nothing is durable. Otherwise <dir>/coordinator.state is
// restored when present and every later change is written to it atomically
// before it takes effect (DataCoordinator's StateSaver). An unreadable file
// is that read error and a corrupt one DATA_LOSS naming the file: a start
// never silently begins the schedule again. `clock` must outlive the result.
// Blocks on the file system.
//
// `after_save` (if set) runs after each write, under the coordinator's lock,
// and its error fails the save like a failed write (a replicated shard 0
// waits there until its replica has the state).
absl::StatusOr<OpenedCoordinator> OpenDataCoordinator(
    absl::Duration lease, Clock* clock, const std::string& dir,
    std::function<absl::Status(const std::string&)> after_save = nullptr);

}  // namespace dcasgd

#endif  // DCASGD_COORDINATOR_SCHEDULE_FILE_H_
