#ifndef DCASGD_SERVICES_PS_REPLICATION_MEMBER_H_
#define DCASGD_SERVICES_PS_REPLICATION_MEMBER_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "auth/tls.h"
#include "core/shard_store.h"
#include "dcasgd/v1/ps.pb.h"
#include "dcasgd/v1/replication.grpc.pb.h"
#include "grpcpp/server_context.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/registry.h"
#include "services/ps/replication_options.h"
#include "services/ps/replication_outbox.h"
#include "wire/status.h"

namespace dcasgd {

class ReplicaFollower;

// kRoleMetadataKey (wire/status.h) names a member's role when it refuses a
// client call (docs/design.md, "How clients find the primary").
// Bumped with any change of the update kernels or of what a log entry means:
// the two members of a pair must agree (ReplicaHello.kernel_revision).
// 2: the Replay entry (a repeated push step renews the base it resends).
inline constexpr uint32_t kKernelRevision = 2;
inline constexpr uint32_t kReplicationProtocolVersion = 1;
// The deadline of one call to the witness (retried at the next tick).
inline constexpr absl::Duration kWitnessCallDeadline = absl::Seconds(2);

// One member of a replicated shard pair (dcasgd-ps --replicas=2): its role
// and epoch, the witness calls that change them, the commit rule, the gate in
// front of client calls, and the timers of failover (docs/design.md,
// "Replicated shards": "Acknowledgement", "Failure detection, promotion and
// fencing").
//
// Roles. At start the member asks the witness for the register: an empty
// one (a new job) is claimed by member a at once (unless its epoch file says
// it already saw an epoch: then the witness lost its register, and it waits),
// member b follows a; a register held alone by this member is claimed again;
// otherwise the member follows its peer (ReplicaFollower) and never claims on
// a timeout before it holds a valid copy. One exception: both members
// restarted (a paired register names this member, and the peer says it is
// starting or catching up itself, so neither holds more than its
// checkpoint): the register's holder claims and serves from its checkpoint,
// as an unreplicated shard would, and the peer catches up from it. A primary serves clients;
// everything else answers them UNAVAILABLE (Admit).
//
// Commits. A call's final answer waits (WhenCommitted) for the replica's
// acknowledgement of the store's last seq after the call's own changes were
// sequenced: the store sequences a call's entries before it returns (or
// before it runs the push's `done`), so that seq covers them; it may cover
// later entries of other calls too, which costs a little latency and never
// correctness, since acknowledgements are cumulative. While the primary is
// alone (no replica, or one still catching up) everything is committed at
// once.
//
// Failover. A primary whose replica acknowledged nothing it sent for
// --failover_timeout_ms (dead, stopped, cut off or slow) claims the next
// epoch at the witness: granted, it commits what waited and goes on alone;
// refused, it is deposed. It refuses changes (`unconfirmed`) once nothing it
// sent within --replication_lease_ms was acknowledged. A replica silent-timed
// out by its primary (or whose primary's port refuses connections) claims:
// granted, it serves as primary with every worker given a fresh lease;
// refused, it is out of date.
//
// Not yet (docs/design.md, "Order of implementation"): catching up in place
// (a deposed or out-of-date member keeps its state and must be restarted to
// catch up, which it then does from a fresh store), resuming a broken stream,
// replicating the data coordinator's state, async mode, planned handover.
//
// Thread-safe. `store` must outlive the member; Stop before destroying it.
class ReplicationMember {
 public:
  struct Hooks {
    // Restores the member's checkpoint into the store (once, before it first
    // serves as primary). An error stops the process: never serve empty.
    std::function<absl::Status()> restore;
    // The store holds a valid copy from now on: checkpoints may start.
    std::function<void()> state_valid;
    // Sets a health service's serving status (dcasgd.replication).
    std::function<void(const std::string&, bool)> set_health;
    // Shard 0: the data coordinator's state as text (empty elsewhere), and
    // replacing it with a primary's (a replica following the log).
    std::function<std::string()> coordinator_state;
    std::function<absl::Status(const std::string&)> load_coordinator_state;
    // Shard 0, promoted: every data lease out gets a fresh deadline, as
    // every worker lease does (deadlines are not replicated).
    std::function<void()> renew_data_leases;
  };

  // `epoch_file`: where the highest epoch this member saw is kept (empty:
  // none, without a checkpoint directory).
  ReplicationMember(ReplicationOptions options, ShardStore* store, std::string epoch_file,
                    int64_t max_message_bytes, int64_t max_push_bytes, Hooks hooks,
                    prometheus::Registry* metrics);
  ~ReplicationMember();
  ReplicationMember(const ReplicationMember&) = delete;
  ReplicationMember& operator=(const ReplicationMember&) = delete;

  // Loads the outgoing credentials (INVALID_ARGUMENT / NOT_FOUND naming the
  // file) and starts the control thread and the follower.
  absl::Status Start();
  // Ends the streams and threads; calls still waiting for a commit get
  // UNAVAILABLE. Blocks briefly. Idempotent.
  void Stop();

  // The gate in front of every client call but GetStatus: OK on a primary
  // within its lease; otherwise UNAVAILABLE naming the role and epoch, with
  // the role in trailing metadata `dcasgd-role`.
  absl::Status Admit(grpc::ServerContextBase* context) const;
  // Runs `done` once `seq` is committed (OK) or can no longer be (UNAVAILABLE:
  // this member stopped being primary, or is stopping): at once, or later
  // from the thread that received the acknowledgement. Never under a lock.
  void WhenCommitted(uint64_t seq, absl::AnyInvocable<void(absl::Status)> done);
  // Shard 0's coordinator changed to `state` (its StateSaver, under the
  // coordinator's lock): sequences a CoordinatorState entry and blocks until
  // it is committed. UNAVAILABLE (nothing sequenced) on a member that is not
  // primary, or when the commit fails: the coordinator then refuses the change.
  absl::Status CommitCoordinatorState(const std::string& state);
  // The coordinator's state for a snapshot, and a primary's applied here.
  std::string CoordinatorState() const;
  absl::Status LoadCoordinatorState(const std::string& state);
  // Role, epoch, member and last seq for GetStatus.
  void FillStatus(v1::ShardStatus* status) const;
  bool primary() const;
  // Whether the store holds a valid copy (a primary, or a caught-up replica).
  bool holds_valid_state() const;

  // The primary's side, for ReplicationService.
  struct Attachment {
    uint64_t id = 0;
    uint64_t epoch = 0;
  };
  // A replica's hello: FAILED_PRECONDITION when this member is not primary or
  // the hello's shard, member, protocol, kernel or configuration differs;
  // ABORTED when it carries a higher epoch (this member is then deposed);
  // UNAVAILABLE while commits still wait for a previous replica (retry).
  // Opens the outbox: every entry sequenced from now on is queued.
  absl::StatusOr<Attachment> AttachReplica(grpc::ServerContext* context,
                                           const v1::ReplicaHello& hello);
  // The snapshot of the attachment ends at `cut`; its last message was sent
  // at `sent_ns`: an acknowledgement echoing it means the replica loaded it.
  void SnapshotSent(uint64_t id, uint64_t cut, int64_t sent_ns);
  void OnAck(uint64_t id, const v1::ReplicaAck& ack);
  void Detach(uint64_t id);
  ReplicationOutbox* outbox() { return &outbox_; }
  const ReplicationOptions& options() const { return options_; }
  int64_t max_message_bytes() const { return max_message_bytes_; }

  // The replica's side, for ReplicaFollower.
  //
  // Whether the follower should (re)connect now, and with which epoch.
  bool ShouldFollow() const;
  uint64_t epoch() const;
  // Every message from the primary.
  void NoteHeard(uint64_t epoch);
  // The snapshot loaded: a valid copy.
  void CaughtUp(uint64_t epoch);
  // The stream ended; `refused`: the primary's port refuses connections.
  void FollowEnded(const absl::Status& status, bool refused);
  // The peer refused the hello as a member that is not primary, naming its
  // role (RoleName).
  void NotePeerRole(const std::string& role);

  // Monotonic nanoseconds (PrimaryMessage.sent_ns).
  static int64_t NowNs();

 private:
  void Loop();
  void Tick();
  // This shard's register at the witness.
  grpc::Status ReadRegister(v1::WitnessRegister* reg);
  // STARTING: ask the witness and claim or follow.
  void Decide();
  // Claims epoch `expected` + 1: the register answered, or an error.
  absl::StatusOr<v1::ClaimResponse> Claim(uint64_t expected, const std::string& reason);
  // A primary at `epoch` from now (restore: the checkpoint first).
  void BecomePrimary(uint64_t epoch, bool promoted, const std::string& why);
  // Deposed: returns the calls that waited for a commit, for FailDeposed
  // to answer outside mu_ (their callbacks may call back into the member).
  std::vector<absl::AnyInvocable<void(absl::Status)>> Depose(const std::string& why)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  static void FailDeposed(std::vector<absl::AnyInvocable<void(absl::Status)>> waiters);
  // The primary's checks: a silent replica, pairing at the witness.
  void CheckReplica();
  // The replica's check: a silent primary.
  void CheckPrimary();
  // A restarted member named by a paired register, catching up: claims when
  // its peer restarted too (see Decide).
  void CheckBothRestarted();
  void SetRole(v1::ReplicationRole role) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Takes the waiters `committed` (seq <= acked, or all) for running outside mu_.
  std::vector<absl::AnyInvocable<void(absl::Status)>> TakeWaiters(bool all)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void WriteEpochFile(uint64_t epoch);
  uint64_t ReadEpochFile() const;
  // Logs `line` at most every 10 s per `key`.
  void LogEvery(const std::string& key, const std::string& line);
  void UpdateGauges();

  // Constant after construction.
  const ReplicationOptions options_;
  ShardStore* const store_;
  const std::string epoch_file_;
  const int64_t max_message_bytes_;
  const int64_t max_push_bytes_;
  const Hooks hooks_;
  const std::string fingerprint_;
  prometheus::Gauge* paired_gauge_ = nullptr;
  prometheus::Gauge* epoch_gauge_ = nullptr;
  prometheus::Gauge* lag_gauge_ = nullptr;
  std::map<int, prometheus::Gauge*> role_gauges_;  // by v1::ReplicationRole
  prometheus::Counter* failovers_ = nullptr;

  // Set by Start.
  std::unique_ptr<v1::Witness::Stub> witness_;
  std::unique_ptr<ReplicaFollower> follower_;
  std::thread thread_;

  ReplicationOutbox outbox_;

  mutable absl::Mutex mu_;
  v1::ReplicationRole role_ ABSL_GUARDED_BY(mu_) = v1::REPLICATION_ROLE_STARTING;
  uint64_t epoch_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool valid_ ABSL_GUARDED_BY(mu_) = false;     // the store holds a valid copy
  bool restored_ ABSL_GUARDED_BY(mu_) = false;  // hooks_.restore ran
  bool sink_set_ ABSL_GUARDED_BY(mu_) = false;  // the store's LogSink is outbox_
  // Primary: commits need the replica's acknowledgement (it caught up).
  bool commit_with_replica_ ABSL_GUARDED_BY(mu_) = false;
  bool paired_at_witness_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t pairing_target_ ABSL_GUARDED_BY(mu_) = 0;  // SetPaired once acked this
  uint64_t acked_ ABSL_GUARDED_BY(mu_) = 0;           // the replica's received seq
  int64_t last_echo_ns_ ABSL_GUARDED_BY(mu_) = 0;     // send time it last acknowledged
  std::multimap<uint64_t, absl::AnyInvocable<void(absl::Status)>> waiters_ ABSL_GUARDED_BY(mu_);
  // The attached replica stream (0: none).
  uint64_t attached_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t next_attachment_ ABSL_GUARDED_BY(mu_) = 0;
  grpc::ServerContext* attached_context_ ABSL_GUARDED_BY(mu_) = nullptr;
  uint64_t snapshot_cut_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t snapshot_sent_ns_ ABSL_GUARDED_BY(mu_) = 0;  // 0: not yet sent
  // Replica.
  int64_t last_heard_ns_ ABSL_GUARDED_BY(mu_) = 0;
  bool stream_ended_ ABSL_GUARDED_BY(mu_) = false;
  bool peer_refused_ ABSL_GUARDED_BY(mu_) = false;
  // Catching up after a restart while the register was paired and named this
  // member: that register's epoch (0: not so).
  uint64_t restarted_holder_epoch_ ABSL_GUARDED_BY(mu_) = 0;
  // The role the peer last named when it refused this member's hello.
  std::string peer_role_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, absl::Time> logged_ ABSL_GUARDED_BY(mu_);
};

}  // namespace dcasgd

#endif  // DCASGD_SERVICES_PS_REPLICATION_MEMBER_H_
