#include "core/replication_log.h"

namespace dcasgd {

const char* LogEntryKindName(const LogEntry::Op& op) {
  static constexpr const char* kNames[] = {
      "Declare",    "Join",   "LeaseEnd",      "RecordPull",
      "PullChunk",  "Push",   "SsgdRound",     "CoordinatorState",
      "Checkpoint", "Digest", "SnapshotChunk", "SnapshotEnd",
      "Replay"};
  static_assert(std::size(kNames) == std::variant_size_v<LogEntry::Op>);
  return kNames[op.index()];
}

}  // namespace dcasgd
