#ifndef DCASGD_CORE_REPLICATION_LOG_H_
#define DCASGD_CORE_REPLICATION_LOG_H_

// The replication log of a shard pair in core's words, without protobuf:
// one LogEntry per change of replicated state, numbered by `seq` in the one
// order in which both members apply changes (docs/design.md, "Replicated
// shards"). wire/replication_log.h converts these to and from
// protos/dcasgd/v1/replication.proto; ShardStore sequences them (its LogSink
// receives each one) and applies them (ShardStore::ApplyEntry).
//
// Whatever a member cannot recompute identically (random ids and sessions,
// expiry decisions, versions and staleness, liveness when a chunk is
// ordered) is in the entry; everything else is a pure function of the state
// and the entry.

#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "core/checkpoint.h"
#include "core/push.h"
#include "core/tensor.h"
#include "core/worker_registry.h"

namespace dcasgd {

// DeclareTensors: the specs a declaration added (chunk_elements resolved);
// initial values are seeded per chunk, so both members make the same chunks.
struct LogDeclare {
  std::vector<TensorSpec> tensors;
};

// Join: the worker the primary registered, and the workers it ended first (a
// live worker of the same name, expired leases ended to make room).
struct LogJoin {
  std::string worker_name;
  WorkerId worker_id = 0;
  std::string session;  // a secret: never logged
  uint64_t pull_version = 0;
  uint32_t pipeline_depth = 0;
  std::vector<WorkerId> ended_worker_ids;
};

// Leave or lease expiry: the workers end and their backups are freed.
struct LogLeaseEnd {
  enum class Reason { kLeave, kExpired };
  std::vector<WorkerId> worker_ids;
  Reason reason = Reason::kLeave;
};

// A pull of a worker recorded its pull version (the start of a Pull, or the
// answer to a repeated push step under a rule without backups).
struct LogRecordPull {
  WorkerId worker_id = 0;
  uint64_t version = 0;
};

// One pulled chunk of a worker whose lease lived when the chunk was ordered:
// at its turn, the chunk's weights become the worker's backup.
struct LogPullChunk {
  WorkerId worker_id = 0;
  std::string tensor;
  uint64_t chunk_index = 0;
  bool live = true;
};

// A repeated push step answered with the worker's backups of `chunks` keyed
// `step` (rules with backups): that base becomes the worker's newest again,
// in its worker record and, at the entry's turn on each chunk, in the
// chunk's ring (ShardStore::Replay).
struct LogReplay {
  struct ChunkId {
    std::string tensor;
    uint64_t chunk_index = 0;
  };
  WorkerId worker_id = 0;
  uint64_t step = 0;
  std::vector<ChunkId> chunks;
};

// One applied push (async and SSP modes): the version it created, its
// staleness (so its learning rate), the base its compensation read, and the
// gradient in the order it was applied.
struct LogPush {
  WorkerId worker_id = 0;
  uint64_t step = 0;
  uint64_t base_step = 0;
  uint64_t version = 0;
  uint64_t staleness = 0;
  // The new values go back (PushPull): they become the worker's backup of
  // each pushed chunk, keyed by `step`, if it still lives at the push's turn
  // in the order (both members' worker tables agree on that).
  bool pull_back = false;
  std::vector<GradientChunk> gradients;
};

// One SSGD round: the mean of its pushes' gradients, summed in this order,
// applied once as `version`.
struct LogSsgdRound {
  struct RoundPush {
    WorkerId worker_id = 0;
    uint64_t step = 0;
    bool pull_back = false;
    std::vector<GradientChunk> gradients;
  };
  uint64_t version = 0;
  std::vector<RoundPush> pushes;
};

// Shard 0: the data coordinator's whole state after a change.
struct LogCoordinatorState {
  std::string state;
};

// The primary wrote a checkpoint here; the replica writes its own.
struct LogCheckpoint {};

// Both members hash their state here and compare.
struct LogDigest {};

// A worker's backup of one chunk: the key of the ring entry (the push step
// whose reply wrote it, 0 a pull) and its values in the shard's backup dtype
// (little-endian float32, or 16-bit words; core/dtype.h), the chunk's length.
struct BackupCopy {
  WorkerId worker_id = 0;
  uint64_t step = 0;
  std::string values;
};

// Catch-up: one chunk as it was at this entry's turn on it: weights,
// optimizer vectors (empty when the rule keeps none) and every backup, each
// worker's ring oldest first.
struct LogSnapshotChunk {
  std::string tensor;
  uint32_t part = 0;
  bool last_part = true;
  ChunkState state;
  std::vector<BackupCopy> backups;
};

// Every SnapshotChunk of a catch-up was sent.
struct LogSnapshotEnd {
  uint64_t header_seq = 0;
};

// One change of replicated state, numbered in the pair's order.
struct LogEntry {
  using Op = std::variant<LogDeclare, LogJoin, LogLeaseEnd, LogRecordPull, LogPullChunk, LogPush,
                          LogSsgdRound, LogCoordinatorState, LogCheckpoint, LogDigest,
                          LogSnapshotChunk, LogSnapshotEnd, LogReplay>;
  uint64_t seq = 0;  // from 1
  Op op;
};

// The entry's kind for messages ("Push", "LeaseEnd", ...).
const char* LogEntryKindName(const LogEntry::Op& op);

// Everything of a shard but its chunks at one cut (seq): what a catch-up
// starts from, before the chunks.
struct SnapshotHeader {
  uint64_t seq = 0;
  uint64_t version = 0;
  std::vector<TensorSpec> tensors;  // chunk_elements resolved
  std::vector<WorkerRecord> workers;
  std::string coordinator_state;  // shard 0 only
  uint64_t chunk_count = 0;       // the chunks that follow
};

// A whole shard at one cut: the header and every owned chunk with its
// backups (ShardStore::TakeReplicationSnapshot).
struct ReplicationSnapshot {
  SnapshotHeader header;
  std::vector<LogSnapshotChunk> chunks;
};

// Receives the entries a ShardStore sequences, each exactly once and in seq
// order (docs/design.md, "The log: every change in one order"). Append runs
// on the sequencing thread with the store's sequencer mutex held (and its
// store-wide lock, shared or exclusive, and for an SSGD round the sync
// policy's lock): it must not call into the store and must not block for
// long (a replication stream queues the entry and returns).
class LogSink {
 public:
  virtual ~LogSink() = default;
  virtual void Append(LogEntry entry) = 0;
};

}  // namespace dcasgd

#endif  // DCASGD_CORE_REPLICATION_LOG_H_
