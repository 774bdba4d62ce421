// The primary's side of a ReplicationMember (replication_member.h): replica
// streams attaching and acknowledging, and the checks of its timer.
#include <cstdio>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/notification.h"
#include "grpcpp/client_context.h"
#include "services/ps/replication_member.h"

namespace dcasgd {

namespace {

bool IsPrimary(v1::ReplicationRole role) {
  return role == v1::REPLICATION_ROLE_PRIMARY_PAIRED || role == v1::REPLICATION_ROLE_PRIMARY_SOLO;
}

}  // namespace

void ReplicationMember::CheckReplica() {
  uint64_t expected = 0;
  uint64_t pair_epoch = 0;
  {
    absl::MutexLock lock(&mu_);
    const int64_t silence = NowNs() - last_echo_ns_;
    if (commit_with_replica_ && silence > absl::ToInt64Nanoseconds(options_.failover_timeout)) {
      expected = epoch_;
      if (attached_context_ != nullptr) attached_context_->TryCancel();
    } else if (commit_with_replica_ && !paired_at_witness_ && acked_ >= pairing_target_) {
      pair_epoch = epoch_;
    }
  }
  if (expected != 0) {
    BecomePrimary(expected, /*promoted=*/true,
                  absl::StrCat("replica ", options_.member == v1::MEMBER_A ? "b" : "a",
                               " lost: no acknowledgement for ",
                               absl::FormatDuration(options_.failover_timeout)));
    return;
  }
  if (pair_epoch == 0) return;
  v1::SetPairedRequest request;
  request.set_shard_index(store_->config().shard_index);
  request.set_member(options_.member);
  request.set_epoch(pair_epoch);
  request.set_paired(true);
  v1::WitnessRegister reg;
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + kWitnessCallDeadline));
  if (grpc::Status s = witness_->SetPaired(&context, request, &reg); !s.ok()) {
    LogEvery("set-paired", absl::StrCat("cannot mark the pair paired at the witness: ",
                                        s.error_message(), " (retrying)"));
    return;
  }
  absl::MutexLock lock(&mu_);
  if (epoch_ != pair_epoch || !commit_with_replica_) return;
  paired_at_witness_ = true;
  SetRole(v1::REPLICATION_ROLE_PRIMARY_PAIRED);
  std::fprintf(stderr,
               "dcasgd-ps: shard %u member %s: paired at epoch %llu: every acknowledged update "
               "is now held by both members\n",
               store_->config().shard_index, MemberName(options_.member),
               static_cast<unsigned long long>(pair_epoch));
}

absl::StatusOr<ReplicationMember::Attachment> ReplicationMember::AttachReplica(
    grpc::ServerContext* context, const v1::ReplicaHello& hello) {
  const ShardConfig& config = store_->config();
  const v1::Member peer = options_.member == v1::MEMBER_A ? v1::MEMBER_B : v1::MEMBER_A;
  std::string differs;
  if (hello.protocol_version() != kReplicationProtocolVersion) differs = "protocol_version";
  if (hello.shard_index() != config.shard_index) differs = "shard_index";
  if (hello.shard_count() != config.shard_count) differs = "shard_count";
  if (hello.member() != peer) differs = "member";
  if (hello.kernel_revision() != kKernelRevision) differs = "kernel_revision";
  if (hello.config_fingerprint() != fingerprint_) differs = "config_fingerprint";
  if (!differs.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the replica's ", differs, " differs from this primary's (shard ", config.shard_index, "/",
        config.shard_count, " member ", MemberName(options_.member), ", kernel revision ",
        kKernelRevision, "): fix its flags or build"));
  }
  absl::ReleasableMutexLock lock(&mu_);
  if (!IsPrimary(role_)) {
    // The role tells a restarted peer whether this member lost its memory
    // too (ReplicationMember::NotePeerRole).
    context->AddTrailingMetadata(kRoleMetadataKey, RoleName(role_));
    return absl::FailedPreconditionError(absl::StrCat("member ", MemberName(options_.member),
                                                      " is ", RoleName(role_), " at epoch ", epoch_,
                                                      ", not primary"));
  }
  if (hello.epoch() > epoch_) {
    std::vector<absl::AnyInvocable<void(absl::Status)>> waiters =
        Depose(absl::StrCat("its peer has seen epoch ", hello.epoch()));
    absl::Status aborted = absl::AbortedError(
        absl::StrCat("this member's epoch ", epoch_, " is below the replica's ", hello.epoch()));
    lock.Release();
    FailDeposed(std::move(waiters));
    return aborted;
  }
  if (commit_with_replica_ || attached_ != 0) {
    if (attached_context_ != nullptr && !commit_with_replica_) attached_context_->TryCancel();
    return absl::UnavailableError(
        "the primary still has a replica stream (or commits waiting for one): retry");
  }
  attached_ = ++next_attachment_;
  attached_context_ = context;
  snapshot_sent_ns_ = 0;
  acked_ = 0;
  last_echo_ns_ = NowNs();
  outbox_.Open();
  return Attachment{attached_, epoch_};
}

void ReplicationMember::SnapshotSent(uint64_t id, uint64_t cut, int64_t sent_ns) {
  absl::MutexLock lock(&mu_);
  if (id != attached_) return;
  snapshot_cut_ = cut;
  snapshot_sent_ns_ = sent_ns;
}

void ReplicationMember::OnAck(uint64_t id, const v1::ReplicaAck& ack) {
  bool caught_up = false;
  std::vector<absl::AnyInvocable<void(absl::Status)>> committed;
  {
    absl::MutexLock lock(&mu_);
    if (id != attached_ || ack.epoch() != epoch_ || !IsPrimary(role_)) return;
    if (ack.echo_sent_ns() > last_echo_ns_) last_echo_ns_ = ack.echo_sent_ns();
    if (ack.received_seq() > acked_) acked_ = ack.received_seq();
    caught_up = !commit_with_replica_ && snapshot_sent_ns_ != 0 &&
                ack.echo_sent_ns() >= snapshot_sent_ns_ && acked_ >= snapshot_cut_;
    if (!caught_up) committed = TakeWaiters(/*all=*/false);
  }
  outbox_.Acknowledged(ack.received_seq());
  for (auto& done : committed) done(absl::OkStatus());
  if (!caught_up) return;
  // From now on commits wait for this replica; once it acknowledged
  // everything sequenced so far (committed alone included) the pair is
  // marked paired at the witness (CheckReplica).
  const uint64_t target = store_->last_seq();
  absl::MutexLock lock(&mu_);
  if (id != attached_) return;
  commit_with_replica_ = true;
  pairing_target_ = target;
}

void ReplicationMember::Detach(uint64_t id) {
  absl::MutexLock lock(&mu_);
  if (id != attached_) return;
  attached_ = 0;
  attached_context_ = nullptr;
  outbox_.Close();
}

absl::Status ReplicationMember::CommitCoordinatorState(const std::string& state) {
  if (!primary()) {
    return absl::UnavailableError(absl::StrCat("member ", MemberName(options_.member),
                                               " is not primary: the data schedule is not "
                                               "changed here"));
  }
  absl::Notification committed;
  absl::Status status;
  WhenCommitted(store_->SequenceCoordinatorState(state), [&](absl::Status s) {
    status = std::move(s);
    committed.Notify();
  });
  committed.WaitForNotification();
  return status;
}

std::string ReplicationMember::CoordinatorState() const {
  return hooks_.coordinator_state ? hooks_.coordinator_state() : std::string();
}

absl::Status ReplicationMember::LoadCoordinatorState(const std::string& state) {
  if (state.empty() || !hooks_.load_coordinator_state) return absl::OkStatus();
  return hooks_.load_coordinator_state(state);
}

}  // namespace dcasgd
