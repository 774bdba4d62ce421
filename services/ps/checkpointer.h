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
// for by RequestWrite), so no RPC thread blocks on disk. Thread-safe.
class Checkpointer {
 public:
  using WriteDone = absl::AnyInvocable<void(absl::StatusOr<CheckpointInfo>)>;

  // `store` and `metrics` (may be null) must outlive this object. `dir` is
  // non-empty; it is created if missing by RestoreIfPresent.
  Checkpointer(ShardStore* store, std::string dir, ShardMetrics* metrics);
  // Stops the thread; requests still queued fail with UNAVAILABLE.
  ~Checkpointer();
  Checkpointer(const Checkpointer&) = delete;
  Checkpointer& operator=(const Checkpointer&) = delete;

  const std::string& path() const { return path_; }

  // At start, before serving: creates the directory if needed and restores
  // path() if it exists. Returns whether a checkpoint was restored. Any other
  // failure (unreadable, corrupt, for another shard) is an error the caller
  // must not ignore: starting empty would silently lose the model.
  absl::StatusOr<bool> RestoreIfPresent();

  // Writes a checkpoint now on the calling thread (serialised with others).
  absl::StatusOr<CheckpointInfo> Write();

  // Starts the thread: writes every `interval` when the shard changed
  // (version or declarations) since the last write or restore, and serves
  // RequestWrite. Call at most once.
  void Start(absl::Duration interval);
  // Stops and joins the thread (idempotent); queued requests fail with
  // UNAVAILABLE.
  void Stop();

  // Writes on the thread as soon as possible and calls `done` there with the
  // result. Without a running thread, `done` runs at once with UNAVAILABLE.
  void RequestWrite(WriteDone done);

  // Declarations change the state without bumping the version; the service
  // calls this after each successful Declare so the next periodic write
  // happens.
  void NoteDeclared() { declare_generation_.fetch_add(1, std::memory_order_acq_rel); }

  // Version of the last checkpoint written or restored; 0 for none.
  uint64_t last_version() const { return last_version_.load(std::memory_order_acquire); }

 private:
  void Loop(absl::Duration interval);
  bool Changed() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);

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

  // Serialises writes; what the last write or restore covered.
  absl::Mutex write_mu_;
  bool have_written_ ABSL_GUARDED_BY(write_mu_) = false;
  uint64_t written_version_ ABSL_GUARDED_BY(write_mu_) = 0;
  uint64_t written_generation_ ABSL_GUARDED_BY(write_mu_) = 0;

  absl::Mutex mu_;
  bool running_ ABSL_GUARDED_BY(mu_) = false;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<WriteDone> requests_ ABSL_GUARDED_BY(mu_);
  std::thread thread_ ABSL_GUARDED_BY(mu_);
};

}  // namespace dcasgd

#endif  // DCASGD_SERVICES_PS_CHECKPOINTER_H_
