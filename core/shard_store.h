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
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "base/clock.h"
#include "base/enum_names.h"
#include "base/random.h"
#include "core/checkpoint.h"
#include "core/push.h"
#include "core/shard_memory.h"
#include "core/sync_policy.h"
#include "core/tensor.h"
#include "core/update_rule.h"
#include "core/worker_registry.h"

namespace dcasgd {

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

// A pull resolved by PlanPull: the chunks to send, and for a worker its
// lease at planning time, so that a backup is written only while it lives.
struct PullPlan {
  WorkerId worker = 0;
  std::vector<ChunkRef> chunks;
  std::shared_ptr<WorkerLiveness> liveness;  // null for an evaluator
};

// The state of one parameter shard: the chunks it owns with their weights,
// optimizer state and per-worker backups, and the version counter. It
// orchestrates the two other parts of a shard: the WorkerRegistry (joins,
// leases, pull versions, SSP clocks, push steps; core/worker_registry.h) and
// the SyncPolicy (when a push is applied: async, SSP, SSGD rounds;
// core/sync_policy.h). No gRPC: the service translates requests into these
// calls.
//
// Backups are kept only when the rule reads them (DC-ASGD in async and SSP
// modes; not for ASGD or SSGD), and only for workers whose lease lives when
// the backup is written: a pull or PushPull still streaming when its worker
// leaves or expires writes nothing after that. Freed backups go back to the
// operating system (malloc_trim). Pull versions, and so staleness, are
// recorded for every worker either way. One function (ServeChunk) applies an
// update to a chunk and alone writes what a worker is sent and its backup.
//
// Thread-safe. Updates lock one chunk at a time (per-chunk absl::Mutex), so
// pushes of different workers proceed in parallel on different chunks; a
// store-wide reader/writer lock lets Snapshot() take a consistent cut. Tensors
// are never removed, so ChunkRefs stay valid for the store's lifetime.
class ShardStore : private SyncPolicy::Applier {
 public:
  using PushDone = ::dcasgd::PushDone;
  using ChunkSink = ::dcasgd::ChunkSink;

  // `clock` and `random` must outlive the store (Clock::Real() and
  // RandomSource::Secure() in production). Worker ids are drawn from `random`.
  ShardStore(ShardConfig config, Clock* clock, RandomSource* random = RandomSource::Secure());
  ~ShardStore() override;
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

  // Membership (WorkerRegistry::Join, Heartbeat, Leave). Join replaces a live
  // worker of the same name; INVALID_ARGUMENT for an empty name or a
  // pipeline depth above kMaxPipelineDepth; RESOURCE_EXHAUSTED when
  // max_workers live workers already hold leases, or (with a memory budget)
  // when the sizing rule with the `pipeline_depth` extra backups of this
  // worker would exceed it (the message has the numbers). Workers whose
  // leases end lose their backups (all of a pipelined worker's ring), and
  // waiting pushes are re-examined (an SSGD round may complete without them).
  absl::StatusOr<JoinResult> Join(const std::string& worker_name, uint32_t pipeline_depth = 0);
  // FAILED_PRECONDITION when the worker is unknown or its lease expired.
  absl::Status Heartbeat(WorkerId worker);
  // Whether a request naming `worker` carries the session its Join returned
  // (WorkerRegistry::Authenticate): FAILED_PRECONDITION for an unknown or
  // expired worker, UNAUTHENTICATED for a missing or wrong session. Renews
  // nothing. The service calls it before any call that acts as a worker (on
  // a push's first message, before anything of it is buffered).
  absl::Status Authenticate(WorkerId worker, absl::string_view session) const {
    return registry_.Authenticate(worker, session);
  }
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
  // push per worker waits; another is FAILED_PRECONDITION; SyncPolicy).
  //
  // With `pull_after` (a PushPull; `sink` is then required), each pushed
  // chunk's new values go to `sink` right after the chunk is updated, on the
  // applying thread and with store locks held (the sink must not call back
  // into the store or block), all before `done` runs; they become the
  // worker's backup.
  //
  // `base_step` (ps.proto PushRequest.base_step) names the backup the
  // gradient was computed on: the reply to that push step of the worker, or
  // 0 its last pull (a worker of pipeline depth 0 has one backup, named by 0
  // or its step). The compensation and gap-aware damping use it, and the
  // staleness is counted from its version. FAILED_PRECONDITION, nothing
  // applied, for a base the worker does not have (on any pushed chunk).
  //
  // `step` (ps.proto PushRequest.step; 0: none) deduplicates retries: the
  // store remembers, per worker, the last step it applied with its version
  // and staleness. The same step again is not applied: the result is the
  // recorded one, marked `replayed`, and with `pull_after` the sink receives
  // the worker's backup of the pushed chunks written by that step (what it
  // was sent; depth 0: its one backup; for rules that keep no backups, the
  // current weights, as a pull).
  // An older step is ALREADY_EXISTS; a step whose first push is still being
  // applied (or waits) is UNAVAILABLE (retry); nothing is applied for either.
  void SubmitPush(WorkerId worker, uint64_t step, std::vector<GradientChunk> chunks,
                  bool pull_after, PushDone done, ChunkSink sink = nullptr, uint64_t base_step = 0);

  // Fails every waiting push with UNAVAILABLE (shutdown).
  void CancelWaiting() { policy_.CancelWaiting(); }

  ShardStats Stats() const;
  uint64_t version() const { return version_.load(std::memory_order_acquire); }
  // The sizing rule for what the shard holds now, with its configuration.
  ShardMemory MemoryRule() const;
  // Whether the rule keeps per-worker backups (not for ASGD nor SSGD).
  bool keeps_backups() const { return keeps_backups_; }

  // A consistent cut of weights, optimizer state and version.
  ShardSnapshot Snapshot() const;
  // Replaces all state with `snapshot` (at start, before serving). The
  // snapshot's structure is trusted as ReadCheckpoint (or Snapshot) checked
  // it: specs valid with chunk_elements resolved, chunk indices in range and
  // increasing, vectors of the chunks' lengths (optimizer vectors may be
  // empty). FAILED_PRECONDITION if its shard index or count differ from the
  // config; DATA_LOSS when it holds a chunk this shard does not own or lacks
  // one it owns, for NaN or Inf weights or optimizer state, or a negative
  // mean square. Weights beyond max_weight_abs are clamped to it (a
  // checkpoint of a shard with a larger bound) and momentum to its bound.
  absl::Status Restore(ShardSnapshot snapshot);

 private:
  struct Chunk;
  struct Tensor;
  struct ValidatedPush;
  struct PendingPush;
  struct PendingTensor;
  struct DeclarePlan;
  // Where a chunk's values go in ServeChunk: the reply buffer `values` of
  // one worker (0: an evaluator) and, if the rule keeps backups and its lease
  // lives, its backup.
  struct Recipient {
    WorkerId worker = 0;
    const WorkerLiveness* liveness = nullptr;
    std::string* values = nullptr;  // resized to the chunk's bytes
    // A repeated push step: send the worker's backup (what it was sent the
    // first time) instead of the weights, and write no backup.
    bool resend_backup = false;
    // The key of the backup written (the push step of a PushPull, 0 for a
    // pull) or resent.
    uint64_t step = 0;
  };
  // An update for ServeChunk: `gradient` (the chunk's length) with `rule`
  // at rate `lr`, compensated with the backup of `pusher` of `base_step`.
  struct ChunkUpdate {
    const OptimizerConfig* rule = nullptr;
    float lr = 0;
    const float* gradient = nullptr;
    WorkerId pusher = 0;
    uint64_t base_step = 0;
  };

  // The one place that changes a chunk for a push and writes what a worker
  // is sent and keeps: under the chunk's lock, applies `update` (if given),
  // then for `to` (if given) writes the chunk's values to `to->values` and
  // stores them as the worker's backup. FAILED_PRECONDITION only for a
  // resend without a backup. Adds the bytes of new backups to `*added`.
  absl::Status ServeChunk(Chunk* chunk, const ChunkUpdate* update, const Recipient* to,
                          uint64_t* added);

  // Declare, in steps: the new specs and what they add (INVALID_ARGUMENT,
  // ALREADY_EXISTS); the budgets (RESOURCE_EXHAUSTED); building the chunks
  // without state_mu_; inserting them.
  absl::StatusOr<DeclarePlan> PlanDeclare(const std::vector<TensorSpec>& specs) const;
  absl::Status CheckBudgets(DeclarePlan& plan) const;
  // Join: whether the `pipeline_depth` extra backups of `worker_name` fit the
  // memory budget (RESOURCE_EXHAUSTED with the rule's terms otherwise).
  absl::Status CheckJoinBudget(const std::string& worker_name, uint32_t pipeline_depth) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(declare_mu_);
  absl::StatusOr<std::vector<PendingTensor>> BuildTensors(const DeclarePlan& plan) const;
  void InsertTensors(std::vector<PendingTensor> built, const DeclarePlan& plan);
  std::unique_ptr<Chunk> MakeChunk(const TensorSpec& spec, uint64_t index) const;
  // Restore: one tensor of a snapshot, checked and clamped.
  absl::StatusOr<std::unique_ptr<Tensor>> RestoreTensor(TensorState& ts, uint64_t* state_bytes);

  // Step deduplication (see SubmitPush): true when the push must go on;
  // otherwise `done` (and `sink`) already have their answer.
  bool ClaimStep(WorkerId worker, uint64_t step, const std::vector<GradientChunk>& chunks,
                 bool pull_after, PushDone& done, ChunkSink& sink);
  // The answer to a repeated step: with `pull_after`, the worker's backups of
  // `chunks` (for rules without backups: the current weights, recorded as a
  // pull) go to `sink`, all or nothing.
  absl::Status Replay(WorkerId worker, uint64_t step, const std::vector<GradientChunk>& chunks,
                      const StepClaim& claim, ChunkSink& sink);
  absl::StatusOr<ValidatedPush> Validate(WorkerId worker, uint64_t base_step,
                                         std::vector<GradientChunk> chunks) const;
  // The chunk a pushed gradient is for, if it is declared, owned here and
  // `bytes` long (the errors of CheckChunk).
  absl::StatusOr<const Chunk*> FindPushedChunk(const std::string& tensor, uint64_t chunk_index,
                                               size_t bytes) const
      ABSL_SHARED_LOCKS_REQUIRED(state_mu_);
  // SyncPolicy::Applier: one push alone (async and SSP), or an SSGD round.
  PushResult Apply(HeldPush& push) override;
  std::vector<PushResult> ApplyRound(std::vector<std::unique_ptr<HeldPush>>& round) override;
  // Frees the backups of workers whose leases ended, then lets the policy
  // release what their departure unblocks.
  void EndWorkers(const std::vector<WorkerId>& workers);
  void FreeBackups(const std::vector<WorkerId>& workers);
  // The sizing rule for `footprint` with this shard's configuration and
  // `extra_backups` backups of pipelined workers beyond one per worker.
  ShardMemory MemoryFor(const ShardFootprint& footprint, uint64_t extra_backups) const;
  // What the sizing rule counts now.
  ShardFootprint Footprint() const;

  // Constant after construction.
  const ShardConfig config_;
  const bool keeps_backups_;

  // Serialises declarations, which allocate without holding state_mu_.
  absl::Mutex declare_mu_ ABSL_ACQUIRED_BEFORE(state_mu_);

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

  // Declared after the state above and in this order: the policy (whose
  // waiting pushes refer to chunks and report to the registry) goes first.
  WorkerRegistry registry_;
  SyncPolicy policy_;
};

}  // namespace dcasgd

#endif  // DCASGD_CORE_SHARD_STORE_H_
