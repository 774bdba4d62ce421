#ifndef DCASGD_SERVICES_PS_REPLICATION_SERVICE_H_
#define DCASGD_SERVICES_PS_REPLICATION_SERVICE_H_

#include <cstdint>

#include "auth/authorizer.h"
#include "core/shard_store.h"
#include "dcasgd/v1/replication.grpc.pb.h"
#include "services/ps/replication_member.h"

namespace dcasgd {

// The primary's side of dcasgd.v1.ShardReplication.Replicate
// (replication.proto), served on the shard's gRPC port by a member of a pair.
// One stream per replica, on a thread of its own (gRPC's synchronous API: the
// stream writes as fast as the replica reads, and blocking there blocks no
// client call). The caller needs the `replication` role (or admin) when
// `authorizer` is set. The hello is checked by ReplicationMember::AttachReplica;
// then:
//
// 1. The snapshot: the outbox is opened first, then the store is cut
//    (ShardStore::TakeReplicationSnapshot, under its writer lock), so every
//    entry after the cut is queued and none before it is sent twice. The
//    header goes in one message; each chunk follows as SnapshotChunk entries
//    whose LogEntry.seq is the cut's seq (they are not positions of the log:
//    this first implementation cuts once instead of sequencing a copy of
//    each chunk), split into parts so that no message exceeds
//    --max_message_bytes; then SnapshotEnd.
// 2. The log: EntryBatch messages of consecutive entries (at most 256 KiB,
//    or one larger entry), and a heartbeat after --replication_heartbeat_ms
//    without anything else. Every message carries the epoch and the send
//    time the replica echoes in its acknowledgements, which a second thread
//    reads and hands to the member (commits, the lease).
//
// The stream ends when the replica ends it, when the member drops it
// (a cancelled context), or with RESOURCE_EXHAUSTED when the replica fell
// more than --replication_buffer_bytes behind.
//
// Thread-safe. `member`, `store` and `authorizer` (null: no checks) must
// outlive the service and the server it is registered with.
class ReplicationService final : public v1::ShardReplication::Service {
 public:
  ReplicationService(ReplicationMember* member, ShardStore* store,
                     const auth::Authorizer* authorizer);

  grpc::Status Replicate(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<v1::PrimaryMessage, v1::ReplicaMessage>* stream) override;

 private:
  using Stream = grpc::ServerReaderWriter<v1::PrimaryMessage, v1::ReplicaMessage>;
  // Cuts the store and sends the snapshot of attachment `id`; returns the
  // cut's seq.
  absl::StatusOr<uint64_t> SendSnapshot(Stream* stream, uint64_t epoch, uint64_t id);
  // Sends the log and heartbeats until the stream ends.
  absl::Status SendLog(grpc::ServerContext* context, Stream* stream, uint64_t epoch, uint64_t cut);

  ReplicationMember* const member_;
  ShardStore* const store_;
  const auth::Authorizer* const authorizer_;
};

}  // namespace dcasgd

#endif  // DCASGD_SERVICES_PS_REPLICATION_SERVICE_H_
