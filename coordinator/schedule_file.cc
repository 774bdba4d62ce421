#include "coordinator/schedule_file.h"

#include <cstdint>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/file.h"

namespace dcasgd {

absl::StatusOr<OpenedCoordinator> OpenDataCoordinator(
    absl::Duration lease, Clock* clock, const std::string& dir,
    std::function<absl::Status(const std::string&)> after_save) {
  OpenedCoordinator opened;
  if (dir.empty()) {
    DataCoordinator::StateSaver save = nullptr;
    if (after_save != nullptr) save = after_save;
    opened.coordinator = std::make_unique<DataCoordinator>(lease, clock, std::move(save));
    return opened;
  }
  const std::string path = absl::StrCat(dir, "/", kScheduleFileName);
  std::string saved_state;
  absl::StatusOr<std::string> saved = ReadWholeFile(path);
  if (saved.ok()) {
    saved_state = *std::move(saved);
  } else if (!absl::IsNotFound(saved.status())) {
    return saved.status();
  }
  opened.coordinator =
      std::make_unique<DataCoordinator>(lease, clock, [path, after_save](const std::string& text) {
        if (absl::Status s = WriteFileAtomically(path, text); !s.ok()) return s;
        return after_save == nullptr ? absl::OkStatus() : after_save(text);
      });
  if (!saved_state.empty()) {
    if (absl::Status s = opened.coordinator->RestoreProgress(saved_state); !s.ok()) {
      return absl::DataLossError(absl::StrCat(path, ": ", s.message()));
    }
    const JobProgress p = opened.coordinator->Progress();
    opened.restored =
        absl::StrCat("data schedule ", p.completed, " of ", uint64_t{p.num_data_shards} * p.epochs,
                     " data shards done, ", p.leased, " leased");
  }
  return opened;
}

}  // namespace dcasgd
