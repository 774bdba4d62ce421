#ifndef DCASGD_SERVICES_PS_REPLICATION_OUTBOX_H_
#define DCASGD_SERVICES_PS_REPLICATION_OUTBOX_H_

#include <cstdint>
#include <deque>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "core/replication_log.h"

namespace dcasgd {

// The primary's log on its way to the replica: the store's LogSink while the
// member is primary. Open while a replica stream is attached: entries queue
// until the stream takes them, and their bytes count until the replica
// acknowledges them; closed, entries are dropped (the next replica starts
// from a snapshot). The queued and unacknowledged bytes together are bounded
// by `capacity`: an Append beyond it marks the outbox overflowed, closes it
// and frees the queue, and the stream ends with RESOURCE_EXHAUSTED (the
// replica fell too far behind and catches up afresh), so memory never grows
// beyond the bound while commits wait for the failover timeout instead.
//
// Thread-safe. Append runs under the store's sequencer mutex: it only moves
// the entry into the queue (no copy of its gradients) and signals.
class ReplicationOutbox final : public LogSink {
 public:
  explicit ReplicationOutbox(uint64_t capacity) : capacity_(capacity) {}

  void Append(LogEntry entry) override;
  // Starts queuing (a fresh queue, no overflow).
  void Open();
  // Stops queuing and frees what was queued.
  void Close();
  // Up to `max_bytes` of queued entries (at least one when any is queued),
  // waiting up to `timeout` for one; empty after the timeout or when closed.
  // RESOURCE_EXHAUSTED when the outbox overflowed.
  absl::StatusOr<std::vector<LogEntry>> Take(absl::Duration timeout, uint64_t max_bytes);
  // The replica acknowledged every entry up to `seq`: their bytes are free.
  void Acknowledged(uint64_t seq);
  // The bytes an entry holds (its gradients, specs, state), for the bound.
  static uint64_t EntryBytes(const LogEntry& entry);

 private:
  const uint64_t capacity_;

  absl::Mutex mu_;
  bool open_ ABSL_GUARDED_BY(mu_) = false;
  bool overflowed_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<std::pair<LogEntry, uint64_t>> queued_ ABSL_GUARDED_BY(mu_);
  // Taken, not yet acknowledged: (seq, bytes) in seq order.
  std::deque<std::pair<uint64_t, uint64_t>> sent_ ABSL_GUARDED_BY(mu_);
  uint64_t bytes_ ABSL_GUARDED_BY(mu_) = 0;  // queued + sent
};

}  // namespace dcasgd

#endif  // DCASGD_SERVICES_PS_REPLICATION_OUTBOX_H_
