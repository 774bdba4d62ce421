#ifndef DCASGD_SERVICES_PS_REPLICATION_FOLLOWER_H_
#define DCASGD_SERVICES_PS_REPLICATION_FOLLOWER_H_

#include <cstdint>
#include <memory>
#include <thread>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "auth/tls.h"
#include "core/replication_log.h"
#include "core/shard_store.h"
#include "dcasgd/v1/replication.grpc.pb.h"
#include "grpcpp/client_context.h"

namespace dcasgd {

class ReplicationMember;

// The replica's side of dcasgd.v1.ShardReplication.Replicate: while its
// member is catching up, it opens the stream to the peer, sends the hello,
// loads the snapshot that comes back into the (fresh) store, then applies
// every entry in seq order with ShardStore::ApplyEntry and acknowledges each
// message once what it carried is applied (so an acknowledged entry is
// already in the replica's state, not only queued). It checks that every
// message carries the primary's epoch and every entry continues the last
// seq; anything else ends the stream. A broken stream is reported to the
// member with whether the peer's port now refuses connections (the member
// decides whether to claim); the member's failover timer cancels a silent
// stream (Cancel).
//
// Thread-safe; one thread of its own. `member` and `store` must outlive it.
class ReplicaFollower {
 public:
  ReplicaFollower(ReplicationMember* member, ShardStore* store,
                  std::shared_ptr<const auth::ClientCredentials> credentials,
                  int64_t max_receive_bytes);
  ~ReplicaFollower();
  ReplicaFollower(const ReplicaFollower&) = delete;
  ReplicaFollower& operator=(const ReplicaFollower&) = delete;

  void Start();
  // Ends the stream and the thread. Idempotent.
  void Stop();
  // Ends the current stream, if any.
  void Cancel();

 private:
  // A catch-up being received: the header, then the chunks (parts merged).
  struct Catchup;

  void Loop();
  // One stream, until it ends.
  absl::Status FollowOnce();
  // One message of the primary: applied (or collected), then acknowledged.
  absl::Status Handle(const v1::PrimaryMessage& message, Catchup* catchup);
  absl::Status HandleEntries(const v1::EntryBatch& batch, Catchup* catchup, uint64_t epoch);
  // Whether the peer's port refuses connections now (no process listens).
  bool PeerRefuses();

  ReplicationMember* const member_;
  ShardStore* const store_;
  const std::shared_ptr<const auth::ClientCredentials> credentials_;
  const int64_t max_receive_bytes_;
  const uint64_t incarnation_;
  std::thread thread_;

  absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  grpc::ClientContext* context_ ABSL_GUARDED_BY(mu_) = nullptr;  // the open stream's
};

}  // namespace dcasgd

#endif  // DCASGD_SERVICES_PS_REPLICATION_FOLLOWER_H_
