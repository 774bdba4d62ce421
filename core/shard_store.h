#ifndef DCASGD_CORE_SHARD_STORE_H_
#define DCASGD_CORE_SHARD_STORE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "base/clock.h"
#include "base/enum_names.h"
#include "base/random.h"
#include "core/checkpoint.h"
#include "core/shard_memory.h"
#include "core/tensor.h"
#include "core/update_rule.h"

namespace dcasgd {

using WorkerId = uint64_t;

// How pushes of different workers are ordered.
enum class SyncMode {
  kAsync,  // apply each push at once (ASGD / DC-ASGD)
  kSsgd,   // average one push of every active worker, apply once per round
  kSsp,    // async, but a worker may be at most `ssp_bound` pushes ahead of
           // the slowest active worker (Ho et al. 2013)
};
enum class SspPolicy { kWait, kReject };

// Names in flags and messages (base/enum_names.h); "bsp" is an alias of ssgd.
inline constexpr EnumName<SyncMode> kSyncModeNames[] = {
    {SyncMode::kAsync, "async"},
    {SyncMode::kSsgd, "ssgd"},
    {SyncMode::kSsp, "ssp"},
    {SyncMode::kSsgd, "bsp"},
};
inline constexpr EnumName<SspPolicy> kSspPolicyNames[] = {
    {SspPolicy::kWait, "wait"},
    {SspPolicy::kReject, "reject"},
};

// The largest --max_workers a shard accepts.
inline constexpr uint32_t kMaxWorkersLimit = uint32_t{1} << 16;

struct ShardConfig {
  uint32_t shard_index = 0;
  uint32_t shard_count = 1;
  OptimizerConfig optimizer;
  SyncMode sync = SyncMode::kAsync;
  uint32_t ssp_bound = 0;
  SspPolicy ssp_policy = SspPolicy::kWait;
  // Async modes: a push whose staleness exceeds this is ABORTED (< 0: off).
  int64_t max_staleness = -1;
  absl::Duration lease = absl::Seconds(30);
  // Memory (core/shard_memory.h). A Join beyond max_workers live workers is
  // RESOURCE_EXHAUSTED; the backups of that many workers are budgeted.
  uint32_t max_workers = 64;
  // A declaration after which the sizing rule would exceed this is
  // RESOURCE_EXHAUSTED and allocates nothing; 0: no budget.
  uint64_t memory_budget_bytes = 0;
  // The service's shard-wide budget of request bytes in flight: a term of
  // the sizing rule, and the most one push may carry (a declaration after
  // which the owned weights exceed it is RESOURCE_EXHAUSTED).
  uint64_t inflight_budget_bytes = uint64_t{256} << 20;

  absl::Status Validate() const;
};

// One chunk of a pushed gradient: little-endian float32 bytes.
struct GradientChunk {
  std::string tensor;
  uint64_t chunk_index = 0;
  std::string values;
};

// One chunk of weights as sent on the wire.
struct ChunkValues {
  std::string tensor;
  uint64_t chunk_index = 0;
  std::string values;  // little-endian float32
};

// One chunk of a PushPull reply, handed to the caller as soon as it is applied
// (before the whole push is), so it can be on the wire while the next chunk
// is updated.
struct AppliedChunk {
  uint64_t version = 0;    // the version this push creates
  uint64_t staleness = 0;  // of this push
  ChunkValues values;      // new weights, which are also the worker's backup
};

struct PushResult {
  uint64_t version = 0;      // shard version after the update
  uint64_t staleness = 0;    // versions applied since this worker's pull
  double apply_seconds = 0;  // time spent in the update kernels
  // The push repeated an already applied step: nothing was applied now; the
  // version and staleness are those recorded for that step.
  bool replayed = false;
  // PushPull only: the new values of the pushed chunks, in push order; they
  // are the worker's new backup.
  std::vector<ChunkValues> new_values;
};

struct JoinResult {
  WorkerId worker_id = 0;
  absl::Duration lease;
};

struct ShardStats {
  uint64_t version = 0;
  uint32_t active_workers = 0;
  uint64_t weight_bytes = 0;
  uint64_t backup_bytes = 0;
  uint64_t optimizer_state_bytes = 0;
  // Chunks owned, and the bytes of the longest one: what one push may carry.
  uint64_t owned_chunks = 0;
  uint64_t largest_chunk_bytes = 0;
};

// A chunk to send in a pull, resolved from names by PlanPull.
struct ChunkRef {
  const void* chunk = nullptr;  // opaque: the store's chunk
  const std::string* tensor = nullptr;
  uint64_t chunk_index = 0;
  uint64_t elements = 0;  // the chunk's length
};

// Whether a worker's lease still lives; shared by the store and the calls
// that may write the worker's backups (defined in shard_store.cc).
struct WorkerLiveness;

// A pull resolved by PlanPull: the chunks to send, and for a worker its
// lease at planning time, so that a backup is written only while it lives.
struct PullPlan {
  WorkerId worker = 0;
  std::vector<ChunkRef> chunks;
  std::shared_ptr<WorkerLiveness> liveness;  // null for an evaluator
};

// The state of one parameter shard: the chunks it owns, per-worker backups,
// optimizer state, the version counter, worker leases and the synchronous
// modes. No gRPC: the service translates requests into these calls.
//
// Backups are kept only when the rule reads them (DC-ASGD in async and SSP
// modes; not for ASGD or SSGD), and only for workers whose lease lives when
// the backup is written: a pull or PushPull still streaming when its worker
// leaves or expires writes nothing after that. Freed backups go back to the
// operating system (malloc_trim). Pull versions, and so staleness, are
// recorded for every worker either way.
//
// Thread-safe. Updates lock one chunk at a time (per-chunk absl::Mutex), so
// pushes of different workers proceed in parallel on different chunks; a
// store-wide reader/writer lock lets Snapshot() take a consistent cut. Tensors
// are never removed, so ChunkRefs stay valid for the store's lifetime.
class ShardStore {
 public:
  using PushDone = absl::AnyInvocable<void(absl::StatusOr<PushResult>)>;
  using ChunkSink = absl::AnyInvocable<void(AppliedChunk)>;

  // `clock` and `random` must outlive the store (Clock::Real() and
  // RandomSource::Secure() in production). Worker ids are drawn from `random`.
  ShardStore(ShardConfig config, Clock* clock, RandomSource* random = RandomSource::Secure());
  ~ShardStore();
  ShardStore(const ShardStore&) = delete;
  ShardStore& operator=(const ShardStore&) = delete;

  const ShardConfig& config() const { return config_; }

  // Declares tensors, all or nothing: INVALID_ARGUMENT for a bad spec
  // (including initial values beyond max_weight_abs), ALREADY_EXISTS for a
  // name declared with a different spec, RESOURCE_EXHAUSTED (with the
  // numbers) when the sizing rule would then exceed the memory budget, the
  // owned chunks kMaxOwnedChunks, or the owned weights the in-flight budget,
  // or when the allocation fails. Identical re-declarations are no-ops.
  // Initialises the chunks this shard owns; the allocation runs outside the
  // store-wide lock, so pulls, pushes and health checks go on meanwhile
  // (declarations are serialised). Returns the specs with defaults resolved.
  absl::StatusOr<std::vector<TensorSpec>> Declare(std::vector<TensorSpec> specs);
  // The most chunks one shard may own (bounds bookkeeping and pull plans).
  static constexpr uint64_t kMaxOwnedChunks = uint64_t{1} << 20;
  std::vector<TensorSpec> ListTensors() const;
  // Chunks of `name` owned here (0 when unknown).
  uint64_t OwnedChunks(const std::string& name) const;

  // Membership. Join replaces a live worker of the same name. Ids are random,
  // non-zero and unique among live workers, so an id handed out before a
  // restart of the shard is (with overwhelming probability) never handed out
  // again to another worker after it. INVALID_ARGUMENT for an empty name;
  // RESOURCE_EXHAUSTED when max_workers live workers already hold leases.
  absl::StatusOr<JoinResult> Join(const std::string& worker_name);
  // FAILED_PRECONDITION when the worker is unknown or its lease expired.
  absl::Status Heartbeat(WorkerId worker);
  // The same check without renewing the lease (e.g. on a push's first
  // message, before anything of it is buffered).
  absl::Status CheckLease(WorkerId worker) const { return CheckWorker(worker, nullptr); }
  // One pushed chunk checked as it arrives, before it is buffered: NOT_FOUND
  // for an unknown tensor or chunk, or one owned by another shard;
  // INVALID_ARGUMENT when `bytes` is not the chunk's length. SubmitPush
  // checks again, with everything else, before applying.
  absl::Status CheckChunk(const std::string& tensor, uint64_t chunk_index, size_t bytes) const;
  absl::Status Leave(WorkerId worker);
  // Ends every lease past its deadline and frees those workers' backups.
  // Returns how many ended. Called periodically by the service.
  int ExpireLeases();

  // Pull, step 1: resolves tensor names (empty = all) to this shard's chunks
  // and, for a worker (id != 0), records the current version as its pull
  // version. NOT_FOUND for an unknown tensor, FAILED_PRECONDITION for an
  // unknown worker.
  absl::StatusOr<PullPlan> PlanPull(WorkerId worker, const std::vector<std::string>& tensors);
  // Pull, step 2: copies the chunk's current weights into `values` (resized)
  // and, for a worker whose lease still lives and when the rule keeps
  // backups, stores exactly those values as its backup of the chunk under the
  // chunk's lock. Returns the shard version.
  uint64_t ReadChunk(const PullPlan& plan, const ChunkRef& ref, std::string* values);

  // Validates the whole push (worker known; every chunk declared, owned here,
  // of the right length, every |g| <= max_gradient_abs (so finite), not
  // repeated; a backup exists when the rule needs one) and then applies it as
  // one update (one version), or rejects it with nothing applied. `done` runs
  // exactly once: at once for async modes, or later from another caller's
  // thread when the push waits for an SSGD round or the SSP bound (at most one
  // push per worker waits; another is FAILED_PRECONDITION). With
  // `pull_after`, the result carries the new values, which become the
  // worker's backup.
  //
  // `step` (ps.proto PushRequest.step; 0: none) deduplicates retries: the
  // store remembers, per worker, the last step it applied with its version
  // and staleness. The same step again is not applied: the result is the
  // recorded one, marked `replayed`, and with `pull_after` the new values are
  // the worker's current backup of the pushed chunks (what it was sent; for
  // rules that keep no backups, the current weights, as a pull).
  // An older step is ALREADY_EXISTS; a step whose first push is still being
  // applied (or waits) is UNAVAILABLE (retry); nothing is applied for either.
  //
  // With `sink` (and pull_after), the new values are not collected in the
  // result: each chunk goes to `sink` right after it is updated, on the
  // applying thread and with store locks held (the sink must not call back
  // into the store or block), all before `done` runs.
  void SubmitPush(WorkerId worker, uint64_t step, std::vector<GradientChunk> chunks,
                  bool pull_after, PushDone done, ChunkSink sink = nullptr);

  // Fails every waiting push with UNAVAILABLE (shutdown).
  void CancelWaiting();

  ShardStats Stats() const;
  uint64_t version() const { return version_.load(std::memory_order_acquire); }
  // The sizing rule for what the shard holds now, with its configuration.
  ShardMemory MemoryRule() const;
  // Whether the rule keeps per-worker backups (not for ASGD nor SSGD).
  bool keeps_backups() const { return keeps_backups_; }

  // A consistent cut of weights, optimizer state and version.
  ShardSnapshot Snapshot() const;
  // Replaces all state with `snapshot` (at start, before serving).
  // FAILED_PRECONDITION if its shard index or count differ from the config;
  // DATA_LOSS for NaN or Inf weights or optimizer state, or a negative mean
  // square. Weights beyond max_weight_abs are clamped to it (a checkpoint of
  // a shard with a larger bound) and momentum to its bound.
  absl::Status Restore(ShardSnapshot snapshot);

 private:
  struct Chunk;
  struct Tensor;
  struct Worker;
  struct WaitingPush;
  struct ValidatedPush;
  struct PendingTensor;

  // FAILED_PRECONDITION unless `worker` holds a live lease; reports its pull
  // version when asked.
  absl::Status CheckWorker(WorkerId worker, uint64_t* pull_version) const;
  // Step deduplication (see SubmitPush): claims `step` for a new push, or
  // answers a repeated one. Returns true when the push must go on.
  bool ClaimStep(WorkerId worker, uint64_t step, const std::vector<GradientChunk>& chunks,
                 bool pull_after, PushDone& done, ChunkSink& sink);
  // Records the outcome of a claimed step (applied or not) and releases it.
  void FinishStep(WorkerId worker, uint64_t step, const absl::StatusOr<PushResult>& result);
  // The answer to a repeated step: the recorded version and staleness and,
  // with `pull_after`, the worker's backups of `chunks` (for rules without
  // backups: the current weights, recorded as a pull).
  absl::StatusOr<PushResult> Replay(WorkerId worker, const std::vector<GradientChunk>& chunks,
                                    bool pull_after, uint64_t version, uint64_t staleness);
  absl::StatusOr<ValidatedPush> Validate(WorkerId worker, std::vector<GradientChunk> chunks) const;
  // The chunk a pushed gradient is for, if it is declared, owned here and
  // `bytes` long (the errors of CheckChunk).
  absl::StatusOr<const Chunk*> FindPushedChunk(const std::string& tensor, uint64_t chunk_index,
                                               size_t bytes) const
      ABSL_SHARED_LOCKS_REQUIRED(state_mu_);
  // Applies a validated push at once (async and SSP) as one version.
  PushResult ApplyOne(WorkerId worker, ValidatedPush& push, bool pull_after, ChunkSink* sink);
  void ApplyChunk(WorkerId worker, const WorkerLiveness* liveness, Chunk* chunk,
                  const std::string& gradient, float lr, bool pull_after, ChunkValues* out,
                  std::vector<float>* scratch, uint64_t* backup_added);
  // Stores `weights` as `worker`'s backup of `chunk` if the rule keeps
  // backups and `liveness` still says the lease lives; the caller holds the
  // chunk's lock. Adds the bytes of a new backup to `*added`.
  void StoreBackup(WorkerId worker, const WorkerLiveness* liveness, Chunk* chunk,
                   const float* weights, uint64_t* added);
  // The liveness of a worker's lease (null when unknown).
  std::shared_ptr<WorkerLiveness> LivenessOf(WorkerId worker) const;
  // Runs the SSP waiters that the bound now admits, or completes the SSGD
  // round once every active worker pushed. Called after every push and
  // membership change.
  void ReleaseWaiters();
  void MaybeCompleteRound();
  std::vector<PushResult> ApplyRound(std::vector<std::unique_ptr<WaitingPush>>& round)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(sync_mu_);
  void FreeBackups(const std::vector<WorkerId>& workers);
  std::unique_ptr<Chunk> MakeChunk(const TensorSpec& spec, uint64_t index) const;
  // The sizing rule for `footprint` with this shard's configuration.
  ShardMemory MemoryFor(const ShardFootprint& footprint) const;

  // Constant after construction.
  const ShardConfig config_;
  Clock* const clock_;
  const bool keeps_backups_;

  // Serialises declarations, which allocate without holding state_mu_.
  absl::Mutex declare_mu_ ABSL_ACQUIRED_BEFORE(state_mu_);
  RandomSource* const random_;

  // Tensors: added by Declare/Restore under the writer lock; read by
  // everything else under the reader lock. Chunk contents have their own
  // per-chunk mutex.
  mutable absl::Mutex state_mu_;
  std::map<std::string, std::unique_ptr<Tensor>> tensors_ ABSL_GUARDED_BY(state_mu_);

  // Bumped once per applied push (or SSGD round); atomic because pulls and
  // Stats read it without taking any lock.
  std::atomic<uint64_t> version_{0};
  // Memory gauges, atomic so Stats() needs no lock; updated with the change.
  std::atomic<uint64_t> weight_bytes_{0};
  std::atomic<uint64_t> backup_bytes_{0};
  std::atomic<uint64_t> optimizer_state_bytes_{0};
  // What the sizing rule counts, atomic for the same reason; written under
  // state_mu_ (Declare, Restore).
  std::atomic<uint64_t> owned_chunks_{0};
  std::atomic<uint64_t> largest_chunk_bytes_{0};
  std::atomic<uint64_t> spec_bytes_{0};

  mutable absl::Mutex members_mu_;
  absl::flat_hash_map<WorkerId, std::unique_ptr<Worker>> workers_ ABSL_GUARDED_BY(members_mu_);

  // SSGD rounds and SSP waiters.
  absl::Mutex sync_mu_;
  std::vector<std::unique_ptr<WaitingPush>> waiting_ ABSL_GUARDED_BY(sync_mu_);
};

}  // namespace dcasgd

#endif  // DCASGD_CORE_SHARD_STORE_H_
