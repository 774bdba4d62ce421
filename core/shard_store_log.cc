// ShardStore, the order of changes: the sequencer (seqs, turns, the log
// sink) and the changes it orders as entries of this store: membership
// (Join, Leave, lease expiry), pull versions and pulled chunks, pushes and
// SSGD rounds (core/shard_store.h, "The log").

#include <utility>

#include "absl/strings/str_cat.h"
#include "base/check.h"
#include "base/memory.h"
#include "base/status_macros.h"
#include "core/shard_store.h"
#include "core/shard_store_internal.h"

namespace dcasgd {

// ---------------------------------------------------------------------------
// The sequencer

void ShardStore::SetLogSink(LogSink* sink) {
  absl::MutexLock sequencer(&sequencer_mu_);
  sink_ = sink;
}

uint64_t ShardStore::last_seq() const {
  absl::MutexLock sequencer(&sequencer_mu_);
  return last_seq_;
}

uint64_t ShardStore::SequenceCoordinatorState(std::string state) {
  absl::ReaderMutexLock lock(&state_mu_);
  absl::MutexLock sequencer(&sequencer_mu_);
  const uint64_t seq = *CheckSeq(0);
  Sequence(seq, [&]() -> LogEntry::Op { return LogCoordinatorState{std::move(state)}; });
  return seq;
}

absl::StatusOr<uint64_t> ShardStore::CheckSeq(uint64_t want) const {
  const uint64_t next = last_seq_ + 1;
  if (want != 0 && want != next) {
    return absl::FailedPreconditionError(absl::StrCat(
        "log entry ", want, " does not follow shard ", config_.shard_index, "'s last entry ",
        last_seq_, ": entries apply in seq order without gaps (catch up afresh)"));
  }
  return next;
}

void ShardStore::Sequence(uint64_t seq, absl::FunctionRef<LogEntry::Op()> make) {
  last_seq_ = seq;
  // Built only for a sink: a single shard copies no gradient.
  if (sink_ != nullptr) sink_->Append(LogEntry{seq, make()});
}

uint64_t ShardStore::TakeTurn(const Chunk& chunk) { return next_turn_[chunk.slot]++; }

void ShardStore::AssignSlots(std::map<std::string, std::unique_ptr<Tensor>>& tensors, bool fresh) {
  if (fresh) next_turn_.clear();
  for (auto& [name, tensor] : tensors) {
    for (auto& [index, chunk] : tensor->owned) {
      chunk->slot = next_turn_.size();
      next_turn_.push_back(0);
    }
  }
}

std::vector<uint64_t> ShardStore::TakeFreeTurns() {
  std::vector<uint64_t> turns;
  if (!keeps_backups_) return turns;
  turns.reserve(next_turn_.size());
  for (const auto& [name, tensor] : tensors_) {
    for (const auto& [index, chunk] : tensor->owned) turns.push_back(TakeTurn(*chunk));
  }
  return turns;
}

uint64_t ShardStore::FreeBackupsAt(const std::vector<WorkerId>& workers, uint64_t seq,
                                   const std::vector<uint64_t>& turns) {
  if (turns.empty()) return 0;
  // The same order as TakeFreeTurns: tensors_ cannot change meanwhile (the
  // caller holds state_mu_ since then).
  uint64_t freed = 0;
  size_t i = 0;
  for (const auto& [name, tensor] : tensors_) {
    for (const auto& [index, chunk] : tensor->owned) {
      Chunk* c = chunk.get();
      const ChunkTurn turn{seq, turns[i++]};
      ChunkLock lock(c, &turn);
      for (WorkerId w : workers) freed += c->backups.Erase(w);
    }
  }
  return freed;
}

void ShardStore::ReleaseFreed(uint64_t freed) {
  backup_bytes_.fetch_sub(freed, std::memory_order_relaxed);
  // The backups' memory goes back to the system, not just to the allocator.
  if (freed > 0) ReturnFreeMemoryToSystem();
}

// ---------------------------------------------------------------------------
// Membership

absl::StatusOr<JoinResult> ShardStore::Join(const std::string& worker_name,
                                            uint32_t pipeline_depth) {
  if (pipeline_depth == 0) return JoinOrdered(worker_name, 0);
  // Serialised with declarations, which count the rings of live workers.
  absl::MutexLock declaring(&declare_mu_);
  if (absl::Status s = CheckJoinBudget(worker_name, pipeline_depth); !s.ok()) return s;
  return JoinOrdered(worker_name, pipeline_depth);
}

absl::StatusOr<JoinResult> ShardStore::JoinOrdered(const std::string& worker_name,
                                                   uint32_t pipeline_depth) {
  std::vector<WorkerId> ended;
  absl::StatusOr<JoinResult> joined;
  uint64_t freed = 0;
  {
    absl::ReaderMutexLock state(&state_mu_);
    uint64_t seq = 0;
    std::vector<uint64_t> turns;
    {
      absl::MutexLock sequencer(&sequencer_mu_);
      const uint64_t pull_version = version();
      joined = registry_.Join(worker_name, pull_version, &ended, pipeline_depth);
      if (joined.ok() || !ended.empty()) {
        seq = *CheckSeq(0);
        turns = ended.empty() ? std::vector<uint64_t>() : TakeFreeTurns();
      }
      if (joined.ok()) {
        Sequence(seq, [&]() -> LogEntry::Op {
          return LogJoin{worker_name,  joined->worker_id, joined->session,
                         pull_version, pipeline_depth,    ended};
        });
      } else if (!ended.empty()) {
        // Refused, but expired leases it found were ended on the way.
        Sequence(seq, [&]() -> LogEntry::Op {
          return LogLeaseEnd{ended, LogLeaseEnd::Reason::kExpired};
        });
      }
    }
    freed = FreeBackupsAt(ended, seq, turns);
  }
  if (!ended.empty()) {
    ReleaseFreed(freed);
    // Waiting pushes are re-examined (an SSGD round may complete without
    // the workers that ended).
    policy_.Release();
  }
  return joined;
}

absl::Status ShardStore::Heartbeat(WorkerId worker) { return registry_.Heartbeat(worker); }

absl::Status ShardStore::Leave(WorkerId worker) {
  return EndLeases(
             [this, worker]() -> absl::StatusOr<std::vector<WorkerId>> {
               RETURN_IF_ERROR(registry_.Leave(worker));
               return std::vector<WorkerId>{worker};
             },
             LogLeaseEnd::Reason::kLeave)
      .status();
}

int ShardStore::ExpireLeases() {
  absl::StatusOr<std::vector<WorkerId>> expired = EndLeases(
      [this]() -> absl::StatusOr<std::vector<WorkerId>> { return registry_.ExpireLeases(); },
      LogLeaseEnd::Reason::kExpired);
  return expired.ok() ? static_cast<int>(expired->size()) : 0;
}

absl::StatusOr<std::vector<WorkerId>> ShardStore::EndLeases(
    absl::FunctionRef<absl::StatusOr<std::vector<WorkerId>>()> end, LogLeaseEnd::Reason reason) {
  absl::StatusOr<std::vector<WorkerId>> ended;
  uint64_t freed = 0;
  {
    absl::ReaderMutexLock state(&state_mu_);
    uint64_t seq = 0;
    std::vector<uint64_t> turns;
    {
      absl::MutexLock sequencer(&sequencer_mu_);
      ended = end();
      if (!ended.ok() || ended->empty()) return ended;
      seq = *CheckSeq(0);
      turns = TakeFreeTurns();
      Sequence(seq, [&]() -> LogEntry::Op { return LogLeaseEnd{*ended, reason}; });
    }
    // The workers' liveness is already false, so no backup of theirs is
    // written by chunk work ordered after this entry, and what was ordered
    // before runs before the free (the turns).
    freed = FreeBackupsAt(*ended, seq, turns);
  }
  ReleaseFreed(freed);
  policy_.Release();
  return ended;
}

// ---------------------------------------------------------------------------
// Pulls

void ShardStore::OrderRecordPull(WorkerId worker, std::optional<uint64_t> version) {
  absl::MutexLock sequencer(&sequencer_mu_);
  const uint64_t pulled = version.has_value() ? *version : this->version();
  if (!registry_.RecordPull(worker, pulled)) return;
  Sequence(*CheckSeq(0), [&]() -> LogEntry::Op { return LogRecordPull{worker, pulled}; });
}

bool ShardStore::OrderReplay(WorkerId worker, uint64_t step, const std::vector<Chunk*>& chunks,
                             std::vector<ChunkTurn>* turns) {
  absl::MutexLock sequencer(&sequencer_mu_);
  if (!registry_.RenewBase(worker, step)) return false;
  const uint64_t seq = *CheckSeq(0);
  turns->reserve(chunks.size());
  for (const Chunk* chunk : chunks) turns->push_back(ChunkTurn{seq, TakeTurn(*chunk)});
  Sequence(seq, [&]() -> LogEntry::Op {
    LogReplay replay{worker, step, {}};
    replay.chunks.reserve(chunks.size());
    for (const Chunk* chunk : chunks) replay.chunks.push_back({*chunk->tensor, chunk->index});
    return replay;
  });
  return true;
}

bool ShardStore::OrderPullChunk(const Chunk& chunk, WorkerId worker, const WorkerLiveness& liveness,
                                ChunkTurn* turn) {
  absl::MutexLock sequencer(&sequencer_mu_);
  // Every lease end is ordered under this mutex, so this agrees with the
  // order: a LeaseEnd before it ended the worker, one after it frees the
  // backup at a later turn.
  if (!liveness.live.load(std::memory_order_acquire)) return false;
  turn->seq = *CheckSeq(0);
  turn->turn = TakeTurn(chunk);
  Sequence(turn->seq, [&]() -> LogEntry::Op {
    return LogPullChunk{worker, *chunk.tensor, chunk.index, true};
  });
  return true;
}

// ---------------------------------------------------------------------------
// Pushes

ShardStore::OrderedPush ShardStore::OrderPush(const PendingPush& p) {
  OrderedPush o;
  absl::MutexLock sequencer(&sequencer_mu_);
  // Staleness counts from the base the gradient was computed on; should it
  // have left the ring since validation (a pull meanwhile), from the newest.
  absl::StatusOr<uint64_t> base_version = registry_.BaseVersion(p.worker, p.push.base_step);
  const uint64_t pull_version = base_version.ok() ? *base_version : registry_.PullVersion(p.worker);
  const uint64_t before = version_.load(std::memory_order_relaxed);
  o.seq = *CheckSeq(0);
  o.version = before + 1;
  o.staleness = before >= pull_version ? before - pull_version : 0;
  o.lr = EffectiveLearningRate(config_.optimizer, before, o.staleness);
  o.liveness = p.push.liveness;
  o.live = o.liveness != nullptr && o.liveness->live.load(std::memory_order_acquire);
  // The version is taken when the update is ordered, so the chunks streamed
  // while it runs already carry it.
  version_.store(o.version, std::memory_order_release);
  registry_.RecordApplied(p.worker, o.version, p.pull_after, p.step);
  registry_.RecordStep(p.worker, p.step, o.version, o.staleness);
  o.turns.reserve(p.push.chunks.size());
  for (const Chunk* chunk : p.push.chunks) o.turns.push_back(TakeTurn(*chunk));
  Sequence(o.seq, [&]() -> LogEntry::Op {
    return LogPush{p.worker,    p.step,       p.push.base_step, o.version,
                   o.staleness, p.pull_after, p.push.gradients};
  });
  return o;
}

ShardStore::OrderedPush ShardStore::OrderRound(const std::vector<std::unique_ptr<HeldPush>>& round,
                                               const std::vector<Chunk*>& order) {
  OrderedPush o;
  OptimizerConfig sgd = config_.optimizer;
  sgd.rule = UpdateRule::kAsgd;
  absl::MutexLock sequencer(&sequencer_mu_);
  const uint64_t before = version_.load(std::memory_order_relaxed);
  o.seq = *CheckSeq(0);
  o.version = before + 1;
  o.lr = EffectiveLearningRate(sgd, before, 0);
  version_.store(o.version, std::memory_order_release);
  for (const auto& held : round) {
    const PendingPush& p = static_cast<const PendingPush&>(*held);
    registry_.RecordApplied(p.worker, o.version, p.pull_after, p.step);
    registry_.RecordStep(p.worker, p.step, o.version, 0);
  }
  o.turns.reserve(order.size());
  for (const Chunk* chunk : order) o.turns.push_back(TakeTurn(*chunk));
  Sequence(o.seq, [&]() -> LogEntry::Op {
    LogSsgdRound entry;
    entry.version = o.version;
    for (const auto& held : round) {
      const PendingPush& p = static_cast<const PendingPush&>(*held);
      entry.pushes.push_back({p.worker, p.step, p.pull_after, p.push.gradients});
    }
    return entry;
  });
  return o;
}

}  // namespace dcasgd
