#ifndef DCASGD_SERVICES_PS_CHECKPOINTER_H_
#define DCASGD_SERVICES_PS_CHECKPOINTER_H_

#include <atomic>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "core/checkpoint.h"
#include "core/shard_store.h"
#include "services/ps/ps_metrics.h"

namespace dcasgd {

struct CheckpointInfo {
  std::string path;
  uint64_t version = 0;
  uint64_t bytes = 0;
};

// Durable state of one shard: <dir>/shard-<index>.ckpt, written atomically
// (core/checkpoint.h) from ShardStore::Snapshot().
//
// Writes run on the checkpointer's own thread (periodic ones and those asked
// for by RequestWrite), so no RPC thread blocks on disk. A write that fails
// (a full disk) leaves the previous checkpoint in place, is counted
// (dcasgd_ps_checkpoint_failures_total) and logged with how long the state
// has not been durable; the shard keeps serving and the next write retries.
// DurableAge() and the dcasgd_ps_checkpoint_age_seconds gauge say since when
// the state is not covered by a checkpoint. Thread-safe.
class Checkpointer {
 public:
  using WriteDone = absl::AnyInvocable<void(absl::StatusOr<CheckpointInfo>)>;
  // Writes a snapshot to a path atomically; returns the bytes written.
  using SnapshotWriter =
      absl::AnyInvocable<absl::StatusOr<uint64_t>(const std::string&, const ShardSnapshot&)>;

  // `store` and `metrics` (may be null) must outlive this object. `dir` is
  // non-empty; it is created if missing by RestoreIfPresent. `writer`
  // replaces WriteCheckpoint (tests of the failure paths); null: the real one.
  Checkpointer(ShardStore* store, std::string dir, ShardMetrics* metrics,
               SnapshotWriter writer = nullptr);
  // Stops the thread; requests still queued fail with UNAVAILABLE.
  ~Checkpointer();
  Checkpointer(const Checkpointer&) = delete;
  Checkpointer& operator=(const Checkpointer&) = delete;

  const std::string& path() const { return path_; }

  // At start, before serving: creates the directory if needed and restores
  // path() if it exists. Returns whether a checkpoint was restored. Any other
  // failure (unreadable, corrupt, for another shard) is an error the caller
  // must not ignore: starting empty would silently lose the model. Either
  // way the state is durable now (restored, or empty).
  absl::StatusOr<bool> RestoreIfPresent();

  // Writes a checkpoint now on the calling thread (serialised with others),
  // changed or not. Errors name the file; failures are counted and logged.
  absl::StatusOr<CheckpointInfo> Write();

  // Starts the thread: writes every `interval` when the shard changed
  // (version or declarations) since the last write or restore, and serves
  // RequestWrite, never writing twice within `min_interval`. Call at most
  // once.
  void Start(absl::Duration interval, absl::Duration min_interval = absl::Seconds(1));
  // Stops and joins the thread (idempotent); queued requests fail with
  // UNAVAILABLE.
  void Stop();

  // Asks for a checkpoint; `done` runs on the checkpointer's thread with the
  // result. Coalesced: when nothing changed since the last checkpoint, the
  // answer is that checkpoint and nothing is written; requests waiting
  // together share one write; a write follows the previous one by at least
  // `min_interval` (Start). Without a running thread, `done` runs at once
  // with UNAVAILABLE.
  void RequestWrite(WriteDone done);

  // At shutdown, after Stop: writes the final checkpoint unless nothing
  // changed since the last one, retrying failed writes with backoff until
  // one succeeds or `budget` has passed (at least one attempt). On giving up
  // the error says which versions are lost (those since the last good
  // checkpoint).
  absl::StatusOr<CheckpointInfo> WriteFinal(absl::Duration budget);

  // Declarations change the state without bumping the version; the service
  // calls this after each successful Declare so the next periodic write
  // happens.
  void NoteDeclared() { declare_generation_.fetch_add(1, std::memory_order_acq_rel); }

  // Version of the last checkpoint written or restored; 0 for none.
  uint64_t last_version() const { return last_version_.load(std::memory_order_acquire); }

  // How long the shard's state has not been durable: the time since the
  // snapshot of the last checkpoint written (or restored, or found
  // unchanged). Grows while writes fail.
  absl::Duration DurableAge() const;

 private:
  void Loop(absl::Duration interval, absl::Duration min_interval);
  bool Changed() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  absl::StatusOr<CheckpointInfo> WriteLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  // The state is durable as of `at`.
  void NoteDurable(absl::Time at);

  // Constant after construction.
  ShardStore* const store_;
  const std::string dir_;
  const std::string path_;
  ShardMetrics* const metrics_;

  // Bumped by NoteDeclared (any thread); atomic so the service never waits on
  // a write in progress.
  std::atomic<uint64_t> declare_generation_{0};
  // Written under write_mu_, read lock-free by GetStatus.
  std::atomic<uint64_t> last_version_{0};
  // absl::ToUnixNanos of the time the state was last durable (0: not yet);
  // atomic so health checks read it while a slow write holds write_mu_.
  std::atomic<int64_t> durable_unix_nanos_{0};

  // Serialises writes; what the last successful write or restore covered.
  absl::Mutex write_mu_;
  SnapshotWriter writer_ ABSL_GUARDED_BY(write_mu_);
  bool have_written_ ABSL_GUARDED_BY(write_mu_) = false;
  uint64_t written_version_ ABSL_GUARDED_BY(write_mu_) = 0;
  uint64_t written_generation_ ABSL_GUARDED_BY(write_mu_) = 0;
  CheckpointInfo last_info_ ABSL_GUARDED_BY(write_mu_);
  int failures_in_a_row_ ABSL_GUARDED_BY(write_mu_) = 0;

  absl::Mutex mu_;
  bool running_ ABSL_GUARDED_BY(mu_) = false;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<WriteDone> requests_ ABSL_GUARDED_BY(mu_);
  std::thread thread_ ABSL_GUARDED_BY(mu_);
};

}  // namespace dcasgd

#endif  // DCASGD_SERVICES_PS_CHECKPOINTER_H_
