// ShardStore, the replica's side: entries another store sequenced applied
// here through the same functions (ApplyEntry), and whole-state snapshots
// with backups and the worker table for a catch-up (core/shard_store.h).

#include <map>
#include <utility>
#include <variant>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "base/check.h"
#include "base/status_macros.h"
#include "core/placement.h"
#include "core/shard_store.h"
#include "core/shard_store_internal.h"

namespace dcasgd {
namespace {

absl::Status Diverged(uint64_t seq, absl::string_view what) {
  return absl::FailedPreconditionError(
      absl::StrCat("log entry ", seq, ": ", what, " (the copies diverged: catch up afresh)"));
}

}  // namespace

absl::Status ShardStore::ApplyEntry(const LogEntry& entry) {
  const uint64_t seq = entry.seq;
  if (seq == 0) return absl::InvalidArgumentError("log entry with seq 0 (seqs count from 1)");
  const LogEntry::Op& op = entry.op;
  if (const auto* e = std::get_if<LogDeclare>(&op)) return DeclareAt(e->tensors, seq).status();
  if (const auto* e = std::get_if<LogJoin>(&op)) return ApplyJoin(seq, *e);
  if (const auto* e = std::get_if<LogLeaseEnd>(&op)) return ApplyLeaseEnd(seq, *e);
  if (const auto* e = std::get_if<LogRecordPull>(&op)) return ApplyRecordPull(seq, *e);
  if (const auto* e = std::get_if<LogPullChunk>(&op)) return ApplyPullChunk(seq, *e);
  if (const auto* e = std::get_if<LogPush>(&op)) return ApplyPush(seq, *e);
  if (const auto* e = std::get_if<LogReplay>(&op)) return ApplyReplay(seq, *e);
  if (const auto* e = std::get_if<LogSsgdRound>(&op)) return ApplySsgdRound(seq, *e);
  if (const auto* e = std::get_if<LogSnapshotChunk>(&op)) return ApplySnapshotChunk(seq, *e);
  // Checkpoint, Digest, CoordinatorState, SnapshotEnd: the caller acts.
  return ApplyMarker(seq);
}

absl::Status ShardStore::ApplyMarker(uint64_t seq) {
  absl::ReaderMutexLock state(&state_mu_);
  absl::MutexLock sequencer(&sequencer_mu_);
  ASSIGN_OR_RETURN(last_seq_, CheckSeq(seq));
  return absl::OkStatus();
}

absl::StatusOr<ShardStore::Chunk*> ShardStore::EntryChunk(const std::string& tensor,
                                                          uint64_t index) const {
  auto it = tensors_.find(tensor);
  if (it != tensors_.end()) {
    auto owned = it->second->owned.find(index);
    if (owned != it->second->owned.end()) return owned->second.get();
  }
  return absl::NotFoundError(absl::StrCat("chunk ", index, " of tensor ", QuotedName(tensor),
                                          " is not declared on shard ", config_.shard_index,
                                          " or not owned by it"));
}

absl::Status ShardStore::ApplyJoin(uint64_t seq, const LogJoin& join) {
  uint64_t freed = 0;
  {
    absl::ReaderMutexLock state(&state_mu_);
    std::vector<uint64_t> turns;
    {
      absl::MutexLock sequencer(&sequencer_mu_);
      RETURN_IF_ERROR(CheckSeq(seq).status());
      WorkerRecord record;
      record.worker_id = join.worker_id;
      record.worker_name = join.worker_name;
      record.session = join.session;
      record.pipeline_depth = join.pipeline_depth;
      record.bases = {{0, join.pull_version}};
      if (absl::Status s = registry_.Admit(record, join.ended_worker_ids); !s.ok()) {
        return Diverged(seq, s.message());
      }
      last_seq_ = seq;
      if (!join.ended_worker_ids.empty()) turns = TakeFreeTurns();
    }
    freed = FreeBackupsAt(join.ended_worker_ids, seq, turns);
  }
  ReleaseFreed(freed);
  return absl::OkStatus();
}

absl::Status ShardStore::ApplyLeaseEnd(uint64_t seq, const LogLeaseEnd& end) {
  uint64_t freed = 0;
  {
    absl::ReaderMutexLock state(&state_mu_);
    std::vector<uint64_t> turns;
    {
      absl::MutexLock sequencer(&sequencer_mu_);
      RETURN_IF_ERROR(CheckSeq(seq).status());
      if (absl::Status s = registry_.End(end.worker_ids); !s.ok()) {
        return Diverged(seq, s.message());
      }
      last_seq_ = seq;
      turns = TakeFreeTurns();
    }
    freed = FreeBackupsAt(end.worker_ids, seq, turns);
  }
  ReleaseFreed(freed);
  return absl::OkStatus();
}

absl::Status ShardStore::ApplyRecordPull(uint64_t seq, const LogRecordPull& pull) {
  absl::ReaderMutexLock state(&state_mu_);
  absl::MutexLock sequencer(&sequencer_mu_);
  RETURN_IF_ERROR(CheckSeq(seq).status());
  if (!registry_.RecordPull(pull.worker_id, pull.version)) {
    return Diverged(seq, absl::StrCat("worker ", pull.worker_id, " is unknown"));
  }
  last_seq_ = seq;
  return absl::OkStatus();
}

absl::Status ShardStore::ApplyPullChunk(uint64_t seq, const LogPullChunk& pull) {
  uint64_t added = 0;
  {
    absl::ReaderMutexLock state(&state_mu_);
    ASSIGN_OR_RETURN(Chunk * chunk, EntryChunk(pull.tensor, pull.chunk_index));
    ChunkTurn turn;
    Recipient to{pull.worker_id, nullptr, nullptr};
    std::shared_ptr<WorkerLiveness> liveness;
    {
      absl::MutexLock sequencer(&sequencer_mu_);
      RETURN_IF_ERROR(CheckSeq(seq).status());
      liveness = registry_.Liveness(pull.worker_id);
      if (pull.live && liveness == nullptr) {
        return Diverged(seq, absl::StrCat("worker ", pull.worker_id, " is unknown"));
      }
      last_seq_ = seq;
      // A chunk of a worker that did not live changes nothing: no turn.
      if (!pull.live || !keeps_backups_) return absl::OkStatus();
      to.liveness = liveness.get();
      to.live = true;
      turn = ChunkTurn{seq, TakeTurn(*chunk)};
    }
    DCASGD_CHECK(ServeChunk(chunk, &turn, nullptr, &to, &added).ok());
  }
  if (added) backup_bytes_.fetch_add(added, std::memory_order_relaxed);
  return absl::OkStatus();
}

absl::Status ShardStore::ApplyReplay(uint64_t seq, const LogReplay& replay) {
  absl::ReaderMutexLock state(&state_mu_);
  std::vector<Chunk*> chunks;
  chunks.reserve(replay.chunks.size());
  for (const LogReplay::ChunkId& id : replay.chunks) {
    ASSIGN_OR_RETURN(Chunk * chunk, EntryChunk(id.tensor, id.chunk_index));
    chunks.push_back(chunk);
  }
  if (!keeps_backups_) return Diverged(seq, "a Replay entry under a rule that keeps no backups");
  std::vector<ChunkTurn> turns;
  {
    absl::MutexLock sequencer(&sequencer_mu_);
    RETURN_IF_ERROR(CheckSeq(seq).status());
    if (!registry_.RenewBase(replay.worker_id, replay.step)) {
      return Diverged(seq, absl::StrCat("worker ", replay.worker_id, " is unknown"));
    }
    last_seq_ = seq;
    turns.reserve(chunks.size());
    for (const Chunk* chunk : chunks) turns.push_back(ChunkTurn{seq, TakeTurn(*chunk)});
  }
  for (size_t i = 0; i < chunks.size(); ++i) {
    ChunkLock lock(chunks[i], &turns[i]);
    chunks[i]->backups.Renew(replay.worker_id, replay.step);
  }
  return absl::OkStatus();
}

absl::Status ShardStore::ApplyPush(uint64_t seq, const LogPush& push) {
  uint64_t backup_added = 0;
  {
    absl::ReaderMutexLock state(&state_mu_);
    std::vector<Chunk*> chunks;
    chunks.reserve(push.gradients.size());
    for (const GradientChunk& g : push.gradients) {
      ASSIGN_OR_RETURN(const Chunk* chunk,
                       FindPushedChunk(g.tensor, g.chunk_index, g.values.size()));
      chunks.push_back(const_cast<Chunk*>(chunk));
    }
    OrderedPush o;
    {
      absl::MutexLock sequencer(&sequencer_mu_);
      RETURN_IF_ERROR(CheckSeq(seq).status());
      const uint64_t before = version_.load(std::memory_order_relaxed);
      if (push.version != before + 1) {
        return Diverged(seq, absl::StrCat("the push creates version ", push.version,
                                          " but this shard is at version ", before));
      }
      o.seq = seq;
      o.version = push.version;
      o.staleness = push.staleness;
      o.lr = EffectiveLearningRate(config_.optimizer, before, push.staleness);
      o.liveness = registry_.Liveness(push.worker_id);
      o.live = o.liveness != nullptr;
      last_seq_ = seq;
      version_.store(o.version, std::memory_order_release);
      registry_.RecordApplied(push.worker_id, o.version, push.pull_back, push.step);
      registry_.RecordStep(push.worker_id, push.step, o.version, o.staleness);
      for (const Chunk* chunk : chunks) o.turns.push_back(TakeTurn(*chunk));
    }
    RunPush(o, push.worker_id, push.step, push.base_step, push.pull_back, chunks, push.gradients,
            nullptr, nullptr, &backup_added);
  }
  if (backup_added) backup_bytes_.fetch_add(backup_added, std::memory_order_relaxed);
  return absl::OkStatus();
}

absl::Status ShardStore::ApplySsgdRound(uint64_t seq, const LogSsgdRound& round) {
  uint64_t backup_added = 0;
  absl::ReaderMutexLock state(&state_mu_);
  // Grouped by chunk in first-seen order, as ApplyRound does on the primary.
  std::vector<Chunk*> order;
  std::vector<std::vector<const std::string*>> grads;
  absl::flat_hash_map<Chunk*, size_t> position;
  for (const LogSsgdRound::RoundPush& p : round.pushes) {
    for (const GradientChunk& g : p.gradients) {
      ASSIGN_OR_RETURN(const Chunk* found,
                       FindPushedChunk(g.tensor, g.chunk_index, g.values.size()));
      Chunk* chunk = const_cast<Chunk*>(found);
      auto [it, inserted] = position.try_emplace(chunk, order.size());
      if (inserted) {
        order.push_back(chunk);
        grads.emplace_back();
      }
      grads[it->second].push_back(&g.values);
    }
  }
  OrderedPush o;
  {
    absl::MutexLock sequencer(&sequencer_mu_);
    RETURN_IF_ERROR(CheckSeq(seq).status());
    const uint64_t before = version_.load(std::memory_order_relaxed);
    if (round.version != before + 1) {
      return Diverged(seq, absl::StrCat("the round creates version ", round.version,
                                        " but this shard is at version ", before));
    }
    OptimizerConfig sgd = config_.optimizer;
    sgd.rule = UpdateRule::kAsgd;
    o.seq = seq;
    o.version = round.version;
    o.lr = EffectiveLearningRate(sgd, before, 0);
    last_seq_ = seq;
    version_.store(o.version, std::memory_order_release);
    for (const LogSsgdRound::RoundPush& p : round.pushes) {
      registry_.RecordApplied(p.worker_id, o.version, p.pull_back, p.step);
      registry_.RecordStep(p.worker_id, p.step, o.version, 0);
    }
    for (const Chunk* chunk : order) o.turns.push_back(TakeTurn(*chunk));
  }
  RunRound(o, order, grads, &backup_added);
  if (backup_added) backup_bytes_.fetch_add(backup_added, std::memory_order_relaxed);
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------
// Catch-up: chunk copies and whole snapshots

absl::Status ShardStore::CheckChunkCopy(
    size_t length, const LogSnapshotChunk& copy,
    const absl::flat_hash_map<WorkerId, uint32_t>& depths) const {
  const std::string chunk =
      absl::StrCat("chunk ", copy.state.index, " of tensor ", QuotedName(copy.tensor));
  if (copy.part == 0) {
    const OptimizerConfig& rule = config_.optimizer;
    const struct {
      const char* name;
      const std::vector<float>* values;
      bool used;
    } vectors[] = {{"weights", &copy.state.weights, true},
                   {"mean_square", &copy.state.mean_square, rule.uses_mean_square()},
                   {"momentum", &copy.state.momentum, rule.uses_momentum()},
                   {"gap_scale", &copy.state.gap_scale, rule.uses_gap_scale()}};
    for (const auto& v : vectors) {
      if (v.values->size() != (v.used ? length : 0)) {
        return absl::InvalidArgumentError(
            absl::StrCat("copy of ", chunk, " has ", v.values->size(), " ", v.name,
                         " values; this shard's rule keeps ", v.used ? length : 0));
      }
    }
  }
  const uint64_t backup_bytes =
      static_cast<uint64_t>(length) * DtypeBytes(config_.optimizer.backup_dtype);
  for (const BackupCopy& b : copy.backups) {
    if (!depths.contains(b.worker_id)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "copy of ", chunk, " has a backup of worker ", b.worker_id, ", which is unknown"));
    }
    if (b.values.size() != backup_bytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "copy of ", chunk, " has a backup of worker ", b.worker_id, " of ", b.values.size(),
          " bytes; expected ", backup_bytes, " (", length, " values of the backup dtype)"));
    }
  }
  return absl::OkStatus();
}

int64_t ShardStore::LoadChunkCopy(Chunk* chunk, const ChunkTurn* turn, const LogSnapshotChunk& copy,
                                  const absl::flat_hash_map<WorkerId, uint32_t>& depths) {
  ChunkLock lock(chunk, turn);
  const uint64_t before = chunk->backups.TotalBytes();
  if (copy.part == 0) {
    chunk->weights = copy.state.weights;
    chunk->mean_square = copy.state.mean_square;
    chunk->momentum = copy.state.momentum;
    chunk->gap_scale = copy.state.gap_scale;
  }
  chunk->backups.Import(
      copy.backups, chunk->length,
      [&depths](WorkerId worker) { return size_t{depths.at(worker)} + 1; },
      /*replace=*/copy.part == 0);
  return static_cast<int64_t>(chunk->backups.TotalBytes()) - static_cast<int64_t>(before);
}

absl::Status ShardStore::ApplySnapshotChunk(uint64_t seq, const LogSnapshotChunk& copy) {
  int64_t added = 0;
  {
    absl::ReaderMutexLock state(&state_mu_);
    ASSIGN_OR_RETURN(Chunk * chunk, EntryChunk(copy.tensor, copy.state.index));
    absl::flat_hash_map<WorkerId, uint32_t> depths;
    for (const WorkerRecord& r : registry_.Records()) depths[r.worker_id] = r.pipeline_depth;
    RETURN_IF_ERROR(CheckChunkCopy(chunk->length, copy, depths));
    ChunkTurn turn;
    {
      absl::MutexLock sequencer(&sequencer_mu_);
      RETURN_IF_ERROR(CheckSeq(seq).status());
      last_seq_ = seq;
      turn = ChunkTurn{seq, TakeTurn(*chunk)};
    }
    added = LoadChunkCopy(chunk, &turn, copy, depths);
  }
  backup_bytes_.fetch_add(static_cast<uint64_t>(added), std::memory_order_relaxed);
  return absl::OkStatus();
}

ReplicationSnapshot ShardStore::TakeReplicationSnapshot() const {
  // The writer lock waits for every sequenced entry (each holds the reader
  // lock from its ordering to the end of its chunk work): one cut.
  absl::MutexLock state(&state_mu_);
  ReplicationSnapshot snapshot;
  SnapshotHeader& header = snapshot.header;
  {
    absl::MutexLock sequencer(&sequencer_mu_);
    header.seq = last_seq_;
  }
  header.version = version();
  header.workers = registry_.Records();
  for (const auto& [name, tensor] : tensors_) {
    header.tensors.push_back(tensor->spec);
    for (const auto& [index, chunk] : tensor->owned) {
      const Chunk* c = chunk.get();
      ChunkLock lock(c, nullptr);
      LogSnapshotChunk& copy = snapshot.chunks.emplace_back();
      copy.tensor = name;
      copy.state.index = index;
      copy.state.weights = c->weights;
      copy.state.mean_square = c->mean_square;
      copy.state.momentum = c->momentum;
      copy.state.gap_scale = c->gap_scale;
      copy.backups = c->backups.Export();
    }
  }
  header.chunk_count = snapshot.chunks.size();
  return snapshot;
}

absl::Status ShardStore::LoadReplicationSnapshot(ReplicationSnapshot snapshot) {
  {
    absl::ReaderMutexLock state(&state_mu_);
    absl::MutexLock sequencer(&sequencer_mu_);
    if (!tensors_.empty() || last_seq_ != 0 || registry_.size() != 0) {
      return absl::FailedPreconditionError(
          "a replication snapshot loads only into a fresh shard (no tensors, workers or entries)");
    }
  }
  const SnapshotHeader& header = snapshot.header;
  absl::flat_hash_map<WorkerId, uint32_t> depths;
  for (const WorkerRecord& r : header.workers) {
    if (r.worker_id == 0 || r.bases.empty() ||
        !depths.emplace(r.worker_id, r.pipeline_depth).second) {
      return absl::InvalidArgumentError(absl::StrCat("snapshot at seq ", header.seq,
                                                     ": worker record ", r.worker_id,
                                                     " has id 0, no base or a repeated id"));
    }
  }
  // Restore's input, checked as ReadCheckpoint checks a file: specs valid,
  // chunk indices in range and increasing, vectors of the chunks' lengths.
  ShardSnapshot restore;
  restore.shard_index = config_.shard_index;
  restore.shard_count = config_.shard_count;
  restore.version = header.version;
  std::map<std::string, size_t> tensor_of;
  for (const TensorSpec& spec : header.tensors) {
    RETURN_IF_ERROR(ValidateTensorSpec(spec));
    if (spec.chunk_elements == 0 || !tensor_of.emplace(spec.name, restore.tensors.size()).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("snapshot tensor ", QuotedName(spec.name), " is unresolved or repeated"));
    }
    restore.tensors.push_back(TensorState{spec, {}});
  }
  for (const LogSnapshotChunk& copy : snapshot.chunks) {
    auto it = tensor_of.find(copy.tensor);
    if (it == tensor_of.end() || copy.part != 0) {
      return absl::InvalidArgumentError(absl::StrCat("snapshot chunk of tensor ",
                                                     QuotedName(copy.tensor),
                                                     " is of no tensor of the header, "
                                                     "or not a whole chunk (part ",
                                                     copy.part, ")"));
    }
    TensorState& ts = restore.tensors[it->second];
    const uint64_t index = copy.state.index;
    if (index >= ts.spec.num_chunks() || (!ts.chunks.empty() && index <= ts.chunks.back().index)) {
      return absl::InvalidArgumentError(absl::StrCat("snapshot chunk ", index, " of tensor ",
                                                     QuotedName(copy.tensor),
                                                     " is out of range or out of order"));
    }
    RETURN_IF_ERROR(CheckChunkCopy(ts.spec.chunk_length(index), copy, depths));
    ts.chunks.push_back(copy.state);
  }
  RETURN_IF_ERROR(Restore(std::move(restore)));
  // Restore succeeded: the rest cannot fail (checked above); the store is
  // not serving yet.
  DCASGD_CHECK(registry_.Load(header.workers).ok());
  int64_t added = 0;
  {
    absl::ReaderMutexLock state(&state_mu_);
    for (const LogSnapshotChunk& copy : snapshot.chunks) {
      added += LoadChunkCopy(tensors_.at(copy.tensor)->owned.at(copy.state.index).get(), nullptr,
                             copy, depths);
    }
    absl::MutexLock sequencer(&sequencer_mu_);
    last_seq_ = header.seq;
  }
  backup_bytes_.fetch_add(static_cast<uint64_t>(added), std::memory_order_relaxed);
  return absl::OkStatus();
}

}  // namespace dcasgd
