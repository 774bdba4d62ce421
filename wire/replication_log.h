#ifndef DCASGD_WIRE_REPLICATION_LOG_H_
#define DCASGD_WIRE_REPLICATION_LOG_H_

// The replication log at the API boundary: protos/dcasgd/v1/replication.proto's
// LogEntry, WorkerRecord, BackupCopy and SnapshotHeader as core's structs
// (core/replication_log.h) and back. Pure functions, thread-safe.
//
// From the wire, everything a store could not check by itself is checked
// here: a seq of 0, an entry of no kind this version knows (an unset oneof,
// or a field of a newer protocol), empty or over-long lists, ids of 0,
// sessions that are not kSecretBytes long, bad names, float32 arrays whose
// byte length is not a multiple of 4, optimizer vectors of another length
// than the weights, chunks in a dtype other than float32. Each is
// INVALID_ARGUMENT naming the entry's seq and field; nothing is returned
// half-converted. What depends on the store (a chunk it does not own, a
// backup of the wrong length for its backup dtype, a gap in the seqs) is
// ShardStore::ApplyEntry's to refuse.

#include <cstddef>
#include <cstdint>

#include "absl/status/statusor.h"
#include "core/replication_log.h"
#include "dcasgd/v1/replication.pb.h"

namespace dcasgd {

// The most items of one list in an entry: workers ended at once, pushes of
// an SSGD round (each at most one per worker), tensors of one declaration,
// chunks of one push, backups of one chunk.
inline constexpr size_t kMaxLogWorkers = size_t{1} << 16;
inline constexpr size_t kMaxLogTensors = size_t{1} << 16;
inline constexpr size_t kMaxLogChunks = size_t{1} << 20;
// The largest coordinator state an entry may carry (its text is a few hundred
// bytes per data lease).
inline constexpr size_t kMaxCoordinatorStateBytes = size_t{64} << 20;

absl::StatusOr<LogEntry> LogEntryFromProto(const v1::LogEntry& proto);
void LogEntryToProto(const LogEntry& entry, v1::LogEntry* proto);

// One SnapshotChunk alone (the checks LogEntryFromProto makes of it), for a
// catch-up whose chunks arrive outside the log's seqs.
absl::StatusOr<LogSnapshotChunk> SnapshotChunkFromProto(const v1::LogEntry::SnapshotChunk& proto);

absl::StatusOr<WorkerRecord> WorkerRecordFromProto(const v1::WorkerRecord& proto);
void WorkerRecordToProto(const WorkerRecord& record, v1::WorkerRecord* proto);

absl::StatusOr<BackupCopy> BackupCopyFromProto(const v1::BackupCopy& proto);
void BackupCopyToProto(const BackupCopy& copy, v1::BackupCopy* proto);

absl::StatusOr<SnapshotHeader> SnapshotHeaderFromProto(const v1::SnapshotHeader& proto);
void SnapshotHeaderToProto(const SnapshotHeader& header, v1::SnapshotHeader* proto);

}  // namespace dcasgd

#endif  // DCASGD_WIRE_REPLICATION_LOG_H_
