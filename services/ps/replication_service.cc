#include "services/ps/replication_service.h"

#include <algorithm>
#include <cstdio>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "wire/replication_log.h"
#include "wire/status.h"

namespace dcasgd {

namespace {

// An EntryBatch holds entries up to this many bytes (or one larger entry).
constexpr uint64_t kBatchBytes = 256 << 10;
// Room left in a message for its framing and a snapshot part's fields.
constexpr int64_t kMessageSlack = 64 << 10;

uint64_t FloatBytes(const ChunkState& s) {
  return sizeof(float) *
         (s.weights.size() + s.mean_square.size() + s.momentum.size() + s.gap_scale.size());
}

}  // namespace

ReplicationService::ReplicationService(ReplicationMember* member, ShardStore* store,
                                       const auth::Authorizer* authorizer)
    : member_(member), store_(store), authorizer_(authorizer) {}

grpc::Status ReplicationService::Replicate(grpc::ServerContext* context, Stream* stream) {
  if (authorizer_ != nullptr) {
    if (absl::Status s = authorizer_->Authorize(*context, auth::Action::kReplicate); !s.ok()) {
      return ToGrpcStatus(s);
    }
  }
  v1::ReplicaMessage first;
  if (!stream->Read(&first)) return grpc::Status(grpc::StatusCode::CANCELLED, "no hello");
  if (!first.has_hello()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "the first message of Replicate must be a ReplicaHello");
  }
  absl::StatusOr<ReplicationMember::Attachment> attached =
      member_->AttachReplica(context, first.hello());
  if (!attached.ok()) return ToGrpcStatus(attached.status());
  const uint64_t id = attached->id;
  // Acknowledgements, read while this thread writes (one reader and one
  // writer at a time is what the synchronous stream allows).
  std::thread reader([this, stream, id] {
    v1::ReplicaMessage message;
    while (stream->Read(&message)) {
      if (message.has_ack()) member_->OnAck(id, message.ack());
    }
  });
  absl::StatusOr<uint64_t> cut = SendSnapshot(stream, attached->epoch, id);
  absl::Status status = cut.status();
  if (status.ok()) status = SendLog(context, stream, attached->epoch, *cut);
  context->TryCancel();  // ends the reader's Read
  reader.join();
  member_->Detach(id);
  if (status.ok()) return grpc::Status::OK;
  std::fprintf(stderr, "dcasgd-ps: replica stream ended: %s\n", status.ToString().c_str());
  return ToGrpcStatus(status);
}

absl::StatusOr<uint64_t> ReplicationService::SendSnapshot(Stream* stream, uint64_t epoch,
                                                          uint64_t id) {
  ReplicationSnapshot snapshot = store_->TakeReplicationSnapshot();
  const uint64_t cut = snapshot.header.seq;
  v1::PrimaryMessage message;
  message.set_epoch(epoch);
  message.set_sent_ns(ReplicationMember::NowNs());
  SnapshotHeaderToProto(snapshot.header, message.mutable_snapshot_header());
  if (!stream->Write(message)) return absl::CancelledError("the replica went away");
  const int64_t limit = std::max<int64_t>(member_->max_message_bytes() - kMessageSlack, 4096);
  auto send = [&](LogEntry::Op op) {
    v1::PrimaryMessage m;
    m.set_epoch(epoch);
    m.set_sent_ns(ReplicationMember::NowNs());
    LogEntryToProto(LogEntry{cut, std::move(op)}, m.mutable_entries()->add_entries());
    return stream->Write(m);
  };
  for (LogSnapshotChunk& chunk : snapshot.chunks) {
    const uint64_t base = FloatBytes(chunk.state) + chunk.tensor.size() + 64;
    if (static_cast<int64_t>(base) > limit) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "chunk ", chunk.state.index, " of tensor '", chunk.tensor, "' takes ", base,
          " bytes with its optimizer state, above --max_message_bytes: raise it on both members"));
    }
    std::vector<BackupCopy> backups = std::move(chunk.backups);
    LogSnapshotChunk part{chunk.tensor, 0, false, std::move(chunk.state), {}};
    uint64_t bytes = base;
    for (BackupCopy& b : backups) {
      const uint64_t more = b.values.size() + 32;
      if (static_cast<int64_t>(bytes + more) > limit) {
        const uint64_t index = part.state.index;
        const uint32_t next = part.part + 1;
        if (!send(std::move(part))) return absl::CancelledError("the replica went away");
        part = LogSnapshotChunk{chunk.tensor, next, false, ChunkState{index, {}, {}, {}, {}}, {}};
        bytes = 64 + chunk.tensor.size();
      }
      bytes += more;
      part.backups.push_back(std::move(b));
    }
    part.last_part = true;
    if (!send(std::move(part))) return absl::CancelledError("the replica went away");
  }
  const int64_t end_sent = ReplicationMember::NowNs();
  v1::PrimaryMessage end;
  end.set_epoch(epoch);
  end.set_sent_ns(end_sent);
  LogEntryToProto(LogEntry{cut, LogSnapshotEnd{cut}}, end.mutable_entries()->add_entries());
  member_->SnapshotSent(id, cut, end_sent);
  if (!stream->Write(end)) return absl::CancelledError("the replica went away");
  return cut;
}

absl::Status ReplicationService::SendLog(grpc::ServerContext* context, Stream* stream,
                                         uint64_t epoch, uint64_t cut) {
  const absl::Duration heartbeat = member_->options().heartbeat;
  while (!context->IsCancelled()) {
    absl::StatusOr<std::vector<LogEntry>> entries = member_->outbox()->Take(heartbeat, kBatchBytes);
    if (!entries.ok()) return entries.status();
    v1::PrimaryMessage message;
    message.set_epoch(epoch);
    for (const LogEntry& entry : *entries) {
      if (entry.seq <= cut) continue;  // in the snapshot already
      LogEntryToProto(entry, message.mutable_entries()->add_entries());
    }
    if (!message.has_entries()) message.mutable_heartbeat()->set_last_seq(store_->last_seq());
    message.set_sent_ns(ReplicationMember::NowNs());
    if (!stream->Write(message)) return absl::OkStatus();  // the replica went away
  }
  return absl::OkStatus();
}

}  // namespace dcasgd
