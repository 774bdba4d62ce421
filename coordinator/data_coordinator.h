#ifndef DCASGD_COORDINATOR_DATA_COORDINATOR_H_
#define DCASGD_COORDINATOR_DATA_COORDINATOR_H_

#include <cstdint>
#include <deque>
#include <optional>
#include <set>
#include <string>
#include <variant>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "base/clock.h"

namespace dcasgd {

// A data shard handed to a worker for one epoch.
struct DataLease {
  uint64_t lease_id = 0;
  // The lease's secret (base/secret.h, kSecretBytes): Renew and Complete
  // need it, so a lease id guessed by another caller changes nothing. Never
  // logged.
  std::string secret;
  uint32_t data_shard = 0;
  uint32_t epoch = 0;
  absl::Duration lease;
};

// Answer to Acquire: a lease, "ask again later", or "the job is done".
struct RetryLater {
  absl::Duration after;
};
struct JobDone {};
using AcquireResult = std::variant<DataLease, RetryLater, JobDone>;

struct JobProgress {
  bool configured = false;
  uint32_t num_data_shards = 0;
  uint32_t epochs = 0;
  uint64_t completed = 0;
  uint32_t leased = 0;
  uint64_t reissued = 0;
  uint32_t current_epoch = 0;
  bool done = false;
};

// Leases data-set shards to workers so that every epoch covers every data
// shard exactly once, whatever workers join, leave or die. Work items
// (epoch, shard) are handed out in order; epochs may overlap at their
// boundary so no worker idles while others finish an epoch. A lease that is
// neither renewed nor completed by its deadline goes back to the front of the
// queue.
//
// With a `save` function, every change of the durable state (the job fixed,
// a lease granted, a data shard done) is saved before it takes effect: when
// the save fails the call changes nothing and returns UNAVAILABLE (retry),
// so no lease is ever granted that a restart would forget. The saved state
// includes the leases out, so their holders can renew and complete them
// after a restart of the coordinator. Thread-safe; `save` runs under the
// coordinator's lock (calls wait for it).
//
// Lease secrets: every lease gets a fresh secret from the kernel's CSPRNG.
// Lease ids count up (easy to guess), so Renew and Complete need the secret
// as well: a caller holding only the id gets UNAUTHENTICATED and changes
// nothing. The coordinator keeps (and saves) only the secret's SHA-256, so a
// restarted coordinator still accepts the secrets of the leases it restores,
// and its state file does not give them away.
//
// Memory is bounded by the limits below whatever callers ask: the schedule
// is a cursor over the items plus two bits per item, not a list of them.
class DataCoordinator {
 public:
  // The largest job: data shards per epoch, epochs, and their product (the
  // saved schedule holds one character per item).
  static constexpr uint32_t kMaxDataShards = uint32_t{1} << 20;
  static constexpr uint32_t kMaxEpochs = uint32_t{1} << 16;
  static constexpr uint64_t kMaxWorkItems = uint64_t{1} << 22;
  // Leases out at once (each holds its worker's name).
  static constexpr size_t kMaxLeases = size_t{1} << 16;

  // Writes a SerializeProgress() text durably (atomically).
  using StateSaver = absl::AnyInvocable<absl::Status(const std::string&)>;

  // `clock` must outlive the coordinator. `save` may be null (nothing is
  // durable).
  DataCoordinator(absl::Duration lease, Clock* clock, StateSaver save = nullptr);

  // The first call fixes the job: INVALID_ARGUMENT for zero shards/epochs or
  // a job beyond the limits above (nothing is fixed then), FAILED_PRECONDITION
  // when a later call names a different job, RESOURCE_EXHAUSTED when
  // kMaxLeases leases are out, UNAVAILABLE when the new lease cannot be saved
  // (none is granted).
  absl::StatusOr<AcquireResult> Acquire(const std::string& worker_name, uint32_t num_data_shards,
                                        uint32_t epochs);
  // FAILED_PRECONDITION when the lease is unknown or has expired;
  // UNAUTHENTICATED (nothing renewed) when `secret` is not the lease's.
  absl::Status Renew(uint64_t lease_id, absl::string_view secret);
  // FAILED_PRECONDITION when the lease is unknown or has expired;
  // UNAUTHENTICATED (nothing done) when `secret` is not the lease's;
  // UNAVAILABLE when the completion cannot be saved (the lease stays).
  absl::Status Complete(uint64_t lease_id, absl::string_view secret);
  JobProgress Progress();
  absl::Duration lease() const { return lease_; }
  // Every lease out gets a fresh deadline (now + lease), without reclaiming
  // expired ones first: a replica promoted to serve shard 0 holds the
  // deadlines of the last schedule change it applied (renewals are not
  // replicated), which may have passed while the workers renewed with the
  // old primary.
  void RenewAllLeases();

  // The durable state of the job (its shape, which (epoch, shard) items are
  // done, the re-issue count, the leases out with their workers and the
  // SHA-256 of their secrets) as text, so shard 0 can restart without
  // restarting the data schedule.
  std::string SerializeProgress();
  // Replaces all state with a SerializeProgress() text (this version's or
  // an earlier one). Restored leases get a fresh deadline. Leases of a
  // format-2 text had no secret, so none could be checked: they go back to
  // the front of the queue (counted as re-issued). DATA_LOSS (and no change)
  // when the text is malformed or beyond the limits above.
  absl::Status RestoreProgress(absl::string_view text);

 private:
  struct Item {
    uint32_t epoch;
    uint32_t shard;
  };
  struct Outstanding {
    Item item;
    std::string worker;
    absl::Time deadline;
    std::string secret_digest;  // SecretDigest of the lease's secret
  };
  // The lease `lease_id` if `secret` is its secret: FAILED_PRECONDITION when
  // it is unknown or expired, UNAUTHENTICATED when the secret is wrong.
  absl::StatusOr<Outstanding*> FindLease(uint64_t lease_id, absl::string_view secret)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ReclaimExpired() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // leased_ and deadlines_ change together, through these three only (and
  // RenewAllLeases, which rebuilds deadlines_).
  void AddLease(uint64_t lease_id, Outstanding outstanding) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void EraseLease(uint64_t lease_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ClearLeases() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Back to no job: the shape and the schedule forgotten (leases and
  // counters are the caller's).
  void UnconfigureLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The next item to hand out (returned ones first, then the cursor's next
  // item neither done nor leased), or nullopt when none is pending.
  std::optional<Item> TakePending() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  size_t IndexOf(const Item& item) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return size_t{item.epoch} * num_data_shards_ + item.shard;
  }
  std::string SerializeLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Saves the state (OK without a saver); UNAVAILABLE naming `what` when the
  // save fails.
  absl::Status Commit(absl::string_view what) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const absl::Duration lease_;
  Clock* const clock_;

  absl::Mutex mu_;
  StateSaver save_ ABSL_GUARDED_BY(mu_);
  bool configured_ ABSL_GUARDED_BY(mu_) = false;
  uint32_t num_data_shards_ ABSL_GUARDED_BY(mu_) = 0;
  uint32_t epochs_ ABSL_GUARDED_BY(mu_) = 0;
  // Items whose lease expired, to hand out before the cursor's.
  std::deque<Item> returned_ ABSL_GUARDED_BY(mu_);
  // Items e * num_data_shards_ + s below this were handed out (or done).
  uint64_t cursor_ ABSL_GUARDED_BY(mu_) = 0;
  absl::flat_hash_map<uint64_t, Outstanding> leased_ ABSL_GUARDED_BY(mu_);
  // (deadline, lease id) of every entry of leased_, earliest first: finding
  // what expired costs what expired, not a scan of every lease (up to
  // kMaxLeases) on every call.
  std::set<std::pair<absl::Time, uint64_t>> deadlines_ ABSL_GUARDED_BY(mu_);
  // completed_per_epoch_[e]: shards of epoch e done.
  std::vector<uint32_t> completed_per_epoch_ ABSL_GUARDED_BY(mu_);
  // done_[e * num_data_shards_ + s]: item (e, s) is done; out_[...]: leased.
  std::vector<bool> done_ ABSL_GUARDED_BY(mu_);
  std::vector<bool> out_ ABSL_GUARDED_BY(mu_);
  uint64_t completed_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t reissued_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t next_lease_id_ ABSL_GUARDED_BY(mu_) = 1;
};

}  // namespace dcasgd

#endif  // DCASGD_COORDINATOR_DATA_COORDINATOR_H_
