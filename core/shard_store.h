#ifndef DCASGD_CORE_SHARD_STORE_H_
#define DCASGD_CORE_SHARD_STORE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/any_invocable.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "base/clock.h"
#include "base/enum_names.h"
#include "base/random.h"
#include "base/shared_bytes.h"
#include "core/checkpoint.h"
#include "core/push.h"
#include "core/replication_log.h"
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
// the write is ordered (below): a pull or PushPull still streaming when its
// worker leaves or expires writes nothing ordered after that, and what was
// ordered before is freed by the lease end. Freed backups go back to the
// operating system (malloc_trim). Pull versions, and so staleness, are
// recorded for every worker either way. One function (ServeChunk) applies an
// update to a chunk and alone writes what a worker is sent and its backup.
//
// The log (docs/design.md, "Replicated shards"). Every change of replicated
// state is one LogEntry (core/replication_log.h) with a sequence number
// (seq, consecutive from 1), taken under the sequencer mutex together with
// the change's effects on the worker table and the version: a Declare, a
// Join, a Leave or lease expiry (LeaseEnd), the start of a worker's pull
// (RecordPull), each chunk a worker pulls while the rule keeps backups
// (PullChunk), an applied push (Push) or SSGD round (SsgdRound). Rejected
// requests, heartbeats and reads that write no backup are not entries.
// Ordered turns make the chunk work a function of the seq order: sequencing
// an entry takes the next turn on every chunk it touches (a push's chunks,
// the pulled chunk, every chunk when a lease end frees backups), and the work
// on a chunk waits until the chunk reaches that turn. So every chunk sees its
// entries exactly in seq order while entries on different chunks still run
// in parallel, and a second store that applies the same entries in the same
// order (ApplyEntry) reaches the same state bit for bit. No deadlock: an
// entry waits only for smaller seqs on the same chunk, and every sequenced
// entry already holds the store-wide reader lock (taken before sequencing),
// so a writer (Snapshot) waits for all of them and blocks none that others
// wait for. An optional LogSink receives each entry in seq order.
//
// Thread-safe. Updates lock one chunk at a time (per-chunk absl::Mutex), so
// pushes of different workers proceed in parallel on different chunks; a
// store-wide reader/writer lock lets Snapshot() take a consistent cut. Tensors
// are never removed, so ChunkRefs stay valid for the store's lifetime. Lock
// order: the sync policy's mutex, declare_mu_, state_mu_, the sequencer
// mutex, a chunk's mutex, the registry's mutex.
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
  // The values of one pushed chunk (float32) against the shard's bound, as
  // SubmitPush checks them (INVALID_ARGUMENT for NaN, Inf or |g| >
  // max_gradient_abs), and marks the chunk checked: called as the chunk
  // arrives, it reads the values while they are still in the cache instead
  // of once more, from memory, when the whole push is submitted.
  absl::Status CheckGradientValues(GradientChunk* chunk) const;
  absl::Status Leave(WorkerId worker);
  // Gives every worker a full lease from now (WorkerRegistry::RenewAll): a
  // replica promoted to primary, before its lease reaper runs.
  void RenewAllLeases() { registry_.RenewAll(); }
  // Ends every lease past its deadline and frees those workers' backups.
  // Returns how many ended. Called periodically by the service.
  int ExpireLeases();

  // Pull, step 1: resolves tensor names (empty = all) to this shard's chunks
  // and, for a worker (id != 0), records the current version as its pull
  // version (a RecordPull entry). NOT_FOUND for an unknown tensor, FAILED_PRECONDITION for an
  // unknown worker.
  absl::StatusOr<PullPlan> PlanPull(WorkerId worker, const std::vector<std::string>& tensors);
  // Pull, step 2: copies the chunk's current weights into `values` (resized)
  // and, for a worker whose lease still lives and when the rule keeps
  // backups, stores exactly those values as its backup of the chunk under the
  // chunk's lock (a PullChunk entry: the copy waits for the chunk work
  // ordered before it). Returns the shard version.
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

  // Replication (see the class comment).
  //
  // Sets the sink that receives every entry sequenced from now on, in seq
  // order (null, the default: entries are numbered but not built, so a
  // single shard pays no copy). Not owned: it must stay valid until replaced
  // or the store is destroyed. Entries applied through ApplyEntry are not
  // passed to it.
  void SetLogSink(LogSink* sink);
  // The seq of the last entry sequenced or applied (0: none).
  uint64_t last_seq() const;
  // Sequences a CoordinatorState entry carrying `state` (shard 0's data
  // coordinator changed; the caller waits for its commit) and returns its
  // seq. It touches no chunk and no worker.
  uint64_t SequenceCoordinatorState(std::string state);
  // Applies an entry another store sequenced (a replica following its
  // primary): the same worker-table effects, versions, turns and chunk work,
  // through the same functions (ServeChunk and the kernels), so that after
  // the same entries both stores hold the same state bit for bit. Entries
  // must come in seq order, each after the previous one returned (one
  // applying thread; the chunk work of one entry runs before it returns).
  // The primary's decisions are not checked again (limits, budgets, leases):
  // only what would make the copy differ. All or nothing, with nothing
  // applied on error: FAILED_PRECONDITION when the seq is not last_seq() + 1,
  // a version does not follow the store's, or the entry names a worker the
  // table lacks or already has (the copies diverged: catch up afresh);
  // NOT_FOUND / INVALID_ARGUMENT for a chunk the store does not own or of
  // another length; RESOURCE_EXHAUSTED when a declaration cannot be
  // allocated. Checkpoint, Digest, CoordinatorState and SnapshotEnd entries
  // only take their seq here: acting on them is the caller's.
  absl::Status ApplyEntry(const LogEntry& entry);
  // The whole state at one cut, with what a checkpoint leaves out: every
  // backup (in the backup dtype, each ring oldest first), the worker table
  // (sessions, bases, SSP clocks, step records) and the seq of the cut.
  // Takes the store-wide writer lock, as Snapshot does.
  ReplicationSnapshot TakeReplicationSnapshot() const;
  // Makes a fresh store (no tensors, no workers, no entry yet) an exact copy
  // of `snapshot`; later entries (seq > its seq) then apply with ApplyEntry.
  // FAILED_PRECONDITION for a store that is not fresh or a shard index or
  // count that differs; INVALID_ARGUMENT / DATA_LOSS (Restore's checks) for
  // chunks that do not fit the specs, backups of the wrong length or of a
  // worker the table lacks. Nothing changes on error.
  absl::Status LoadReplicationSnapshot(ReplicationSnapshot snapshot);
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
  class ChunkLock;
  // An entry's place in the order of one chunk's work: the chunk's turn it
  // waits for, and the entry's seq, which the chunk records as its last.
  struct ChunkTurn {
    uint64_t seq = 0;
    uint64_t turn = 0;
  };
  // A push (or a round) as the sequencer ordered it: what both members
  // apply identically.
  struct OrderedPush {
    uint64_t seq = 0;
    uint64_t version = 0;  // the version it creates
    uint64_t staleness = 0;
    float lr = 0;
    // Whether the pusher's lease lived when the push was ordered: only then
    // do its new values become its backups.
    bool live = false;
    std::shared_ptr<WorkerLiveness> liveness;  // the ring's depth; may be null
    std::vector<uint64_t> turns;               // one per chunk, in order
  };
  // Where a chunk's values go in ServeChunk: the reply `values` of one
  // worker (0: an evaluator) and, if the rule keeps backups and its lease
  // lives, its backup: with a float32 backup dtype the reply's block itself.
  struct Recipient {
    WorkerId worker = 0;
    const WorkerLiveness* liveness = nullptr;
    SharedBytes* values = nullptr;  // set to a block of the chunk's float32 bytes
    // A repeated push step: send the worker's backup (what it was sent the
    // first time) instead of the weights, and write no backup; at a turn (a
    // Replay entry), that backup becomes the newest of the worker's ring.
    bool resend_backup = false;
    // The key of the backup written (the push step of a PushPull, 0 for a
    // pull) or resent.
    uint64_t step = 0;
    // Whether the worker's lease lived when this was ordered (decided under
    // the sequencer mutex): only then is a backup written.
    bool live = false;
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
  // is sent and keeps: under the chunk's lock (at `turn` if given: see the
  // class comment), applies `update` (if given), then for `to` (if given)
  // writes the chunk's values to `to->values` (if not null) and stores them
  // as the worker's backup if it lived when this was ordered (the same
  // block, with no copy, when both are float32).
  // FAILED_PRECONDITION only for a resend without a backup (which takes no
  // turn). Adds the bytes of new backups to `*added`.
  absl::Status ServeChunk(Chunk* chunk, const ChunkTurn* turn, const ChunkUpdate* update,
                          const Recipient* to, uint64_t* added);

  // Sequencing (shard_store_log.cc). Each runs under the sequencer mutex
  // while the caller holds state_mu_ (shared, or exclusive for Declare).
  // The seq of the next entry: `want` when it is last_seq_ + 1 (an applied
  // entry), or the next one when `want` is 0 (this store orders it);
  // FAILED_PRECONDITION for a gap.
  absl::StatusOr<uint64_t> CheckSeq(uint64_t want) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(sequencer_mu_);
  // Takes seq `seq` and hands `op` to the sink, if any (`make` builds it
  // only then).
  void Sequence(uint64_t seq, absl::FunctionRef<LogEntry::Op()> make)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(sequencer_mu_);
  uint64_t TakeTurn(const Chunk& chunk) ABSL_EXCLUSIVE_LOCKS_REQUIRED(sequencer_mu_);
  // A turn on every chunk (in tensors_ order), when ended workers' backups
  // are freed; empty when the rule keeps none.
  std::vector<uint64_t> TakeFreeTurns() ABSL_EXCLUSIVE_LOCKS_REQUIRED(sequencer_mu_)
      ABSL_SHARED_LOCKS_REQUIRED(state_mu_);
  // Frees `workers`' backups at `turns` (from TakeFreeTurns) and returns the
  // bytes freed.
  uint64_t FreeBackupsAt(const std::vector<WorkerId>& workers, uint64_t seq,
                         const std::vector<uint64_t>& turns) ABSL_SHARED_LOCKS_REQUIRED(state_mu_);
  // After FreeBackupsAt: the gauge, and the memory back to the system.
  void ReleaseFreed(uint64_t freed);
  // Orders a worker's pull version (the start of a pull, or the answer to a
  // repeated step as a pull): `version`, or the current one when not given. Nothing
  // (no entry) for an unknown worker.
  void OrderRecordPull(WorkerId worker, std::optional<uint64_t> version)
      ABSL_SHARED_LOCKS_REQUIRED(state_mu_);
  // Orders one chunk of a worker's pull: true, with `*turn`, when the worker
  // lives (its backup will be written at the turn); false (no entry, no
  // turn: the read changes nothing) otherwise.
  bool OrderPullChunk(const Chunk& chunk, WorkerId worker, const WorkerLiveness& liveness,
                      ChunkTurn* turn) ABSL_SHARED_LOCKS_REQUIRED(state_mu_);
  // Orders the answer to a repeated push step of a rule with backups: the
  // worker's base `step` becomes its newest again (WorkerRegistry::RenewBase),
  // a turn on each of `chunks` (into `turns`, same order), at which the
  // chunk's backup of `step` becomes the newest of the worker's ring, and a
  // Replay entry. False (no entry, no turns) for an unknown worker.
  bool OrderReplay(WorkerId worker, uint64_t step, const std::vector<Chunk*>& chunks,
                   std::vector<ChunkTurn>* turns) ABSL_SHARED_LOCKS_REQUIRED(state_mu_);
  // Join, once any budget is checked: ordered with its lease ends.
  absl::StatusOr<JoinResult> JoinOrdered(const std::string& worker_name, uint32_t pipeline_depth);
  // Leave and lease expiry: ends the leases `end` returns (it runs under
  // the sequencer mutex, so in the order) as one LeaseEnd entry, frees their
  // backups at its turns and releases what waited for them.
  absl::StatusOr<std::vector<WorkerId>> EndLeases(
      absl::FunctionRef<absl::StatusOr<std::vector<WorkerId>>()> end, LogLeaseEnd::Reason reason);
  // Orders a push of this store (version, staleness, worker-table effects,
  // turns, the entry).
  OrderedPush OrderPush(const PendingPush& p) ABSL_SHARED_LOCKS_REQUIRED(state_mu_);
  // Orders an SSGD round of this store, whose chunks are `order`.
  OrderedPush OrderRound(const std::vector<std::unique_ptr<HeldPush>>& round,
                         const std::vector<Chunk*>& order) ABSL_SHARED_LOCKS_REQUIRED(state_mu_);
  // The chunk work of an ordered push: each chunk at its turn; with `sink`
  // (a PushPull of this store) the new values go there. Frees the gradients
  // of `release` (the push's own copy) once applied.
  void RunPush(const OrderedPush& o, WorkerId worker, uint64_t step, uint64_t base_step,
               bool pull_back, const std::vector<Chunk*>& chunks,
               const std::vector<GradientChunk>& gradients, std::vector<GradientChunk>* release,
               ChunkSink* sink, uint64_t* backup_added) ABSL_SHARED_LOCKS_REQUIRED(state_mu_);
  // An SSGD round's chunk work: the mean of each chunk's gradients, summed in
  // the order given, applied at the chunk's turn.
  void RunRound(const OrderedPush& o, const std::vector<Chunk*>& order,
                const std::vector<std::vector<const std::string*>>& grads, uint64_t* backup_added)
      ABSL_SHARED_LOCKS_REQUIRED(state_mu_);
  // The chunk an entry or a repeated push names: NOT_FOUND unless declared
  // and owned here.
  absl::StatusOr<Chunk*> EntryChunk(const std::string& tensor, uint64_t index) const
      ABSL_SHARED_LOCKS_REQUIRED(state_mu_);
  // ApplyEntry, per kind.
  absl::Status ApplyJoin(uint64_t seq, const LogJoin& join);
  absl::Status ApplyLeaseEnd(uint64_t seq, const LogLeaseEnd& end);
  absl::Status ApplyRecordPull(uint64_t seq, const LogRecordPull& pull);
  absl::Status ApplyPullChunk(uint64_t seq, const LogPullChunk& pull);
  absl::Status ApplyPush(uint64_t seq, const LogPush& push);
  absl::Status ApplyReplay(uint64_t seq, const LogReplay& replay);
  absl::Status ApplySsgdRound(uint64_t seq, const LogSsgdRound& round);
  absl::Status ApplySnapshotChunk(uint64_t seq, const LogSnapshotChunk& chunk);
  absl::Status ApplyMarker(uint64_t seq);
  // Catch-up: whether `copy` fits a chunk of `length` elements of this
  // store's rule (INVALID_ARGUMENT naming what does not) and names only
  // workers of `depths` (FAILED_PRECONDITION).
  absl::Status CheckChunkCopy(size_t length, const LogSnapshotChunk& copy,
                              const absl::flat_hash_map<WorkerId, uint32_t>& depths) const;
  // Replaces the chunk's state (part 0) and adds the copy's backups, at
  // `turn` if given; returns the change of the backups' bytes.
  int64_t LoadChunkCopy(Chunk* chunk, const ChunkTurn* turn, const LogSnapshotChunk& copy,
                        const absl::flat_hash_map<WorkerId, uint32_t>& depths);

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
  // Inserts the tensors and sequences the Declare entry; `seq` as CheckSeq
  // (FAILED_PRECONDITION, nothing inserted, for a gap).
  absl::Status InsertTensors(std::vector<PendingTensor> built, const DeclarePlan& plan,
                             uint64_t seq);
  // Declare with the entry's seq (0: this store orders it and checks the
  // budgets; otherwise an applied Declare, which must add every spec).
  absl::StatusOr<std::vector<TensorSpec>> DeclareAt(std::vector<TensorSpec> specs, uint64_t seq);
  // Gives every chunk of `tensors` a slot in next_turn_ (its turn counter).
  void AssignSlots(std::map<std::string, std::unique_ptr<Tensor>>& tensors, bool fresh)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(sequencer_mu_);
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

  // The sequencer: entries' seqs, and the turns handed out on each chunk.
  mutable absl::Mutex sequencer_mu_ ABSL_ACQUIRED_AFTER(state_mu_);
  uint64_t last_seq_ ABSL_GUARDED_BY(sequencer_mu_) = 0;
  // By Chunk::slot: the next turn to hand out on the chunk.
  std::vector<uint64_t> next_turn_ ABSL_GUARDED_BY(sequencer_mu_);
  LogSink* sink_ ABSL_GUARDED_BY(sequencer_mu_) = nullptr;

  // Bumped once per applied push (or SSGD round), only under the sequencer
  // mutex (so in seq order); atomic because pulls and Stats read it without
  // taking any lock.
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
