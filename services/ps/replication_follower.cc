#include "services/ps/replication_follower.h"

#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/random.h"
#include "base/status_macros.h"
#include "grpcpp/support/channel_arguments.h"
#include "services/ps/replication_member.h"
#include "wire/replication_log.h"
#include "wire/status.h"

namespace dcasgd {

namespace {

// Between two attempts to open the stream while catching up.
constexpr absl::Duration kRetry = absl::Milliseconds(200);
// How long a probe of the peer's port may take to tell "refused".
constexpr absl::Duration kProbe = absl::Milliseconds(500);

absl::Status Broken(absl::string_view what) {
  return absl::FailedPreconditionError(
      absl::StrCat("the primary's stream broke the protocol: ", what));
}

}  // namespace

struct ReplicaFollower::Catchup {
  uint64_t epoch = 0;  // the primary's, from its first answer
  std::optional<SnapshotHeader> header;
  std::vector<LogSnapshotChunk> chunks;
  bool loaded = false;
};

ReplicaFollower::ReplicaFollower(ReplicationMember* member, ShardStore* store,
                                 std::shared_ptr<const auth::ClientCredentials> credentials,
                                 int64_t max_receive_bytes)
    : member_(member),
      store_(store),
      credentials_(std::move(credentials)),
      max_receive_bytes_(max_receive_bytes),
      incarnation_(RandomSource::Secure()->Next64()) {}

ReplicaFollower::~ReplicaFollower() { Stop(); }

void ReplicaFollower::Start() {
  thread_ = std::thread([this] { Loop(); });
}

void ReplicaFollower::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
    if (context_ != nullptr) context_->TryCancel();
  }
  if (thread_.joinable()) thread_.join();
}

void ReplicaFollower::Cancel() {
  absl::MutexLock lock(&mu_);
  if (context_ != nullptr) context_->TryCancel();
}

void ReplicaFollower::Loop() {
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      auto stop = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stop_; };
      if (mu_.AwaitWithTimeout(absl::Condition(&stop), kRetry)) return;
    }
    if (!member_->ShouldFollow()) continue;
    const absl::Status status = FollowOnce();
    member_->FollowEnded(status, !status.ok() && PeerRefuses());
  }
}

absl::Status ReplicaFollower::FollowOnce() {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(static_cast<int>(std::min<int64_t>(max_receive_bytes_, INT32_MAX)));
  std::unique_ptr<v1::ShardReplication::Stub> stub = v1::ShardReplication::NewStub(
      credentials_->NewChannel(member_->options().peer_address, args));
  grpc::ClientContext context;
  {
    absl::MutexLock lock(&mu_);
    if (stop_) return absl::CancelledError("stopping");
    context_ = &context;
  }
  auto stream = stub->Replicate(&context);
  const ShardConfig& config = store_->config();
  v1::ReplicaMessage hello;
  v1::ReplicaHello* h = hello.mutable_hello();
  h->set_protocol_version(kReplicationProtocolVersion);
  h->set_shard_index(config.shard_index);
  h->set_shard_count(config.shard_count);
  h->set_member(member_->options().member);
  h->set_epoch(member_->epoch());
  h->set_incarnation(incarnation_);
  h->set_received_seq(store_->last_seq());
  h->set_kernel_revision(kKernelRevision);
  h->set_config_fingerprint(ConfigFingerprint(config));
  absl::Status status;
  if (stream->Write(hello)) {
    Catchup catchup;
    v1::PrimaryMessage message;
    while (stream->Read(&message)) {
      status = Handle(message, &catchup);
      if (!status.ok()) break;
      v1::ReplicaMessage ack;
      ack.mutable_ack()->set_epoch(catchup.epoch);
      ack.mutable_ack()->set_received_seq(catchup.loaded ? store_->last_seq() : 0);
      ack.mutable_ack()->set_applied_seq(catchup.loaded ? store_->last_seq() : 0);
      ack.mutable_ack()->set_echo_sent_ns(message.sent_ns());
      if (!stream->Write(ack)) break;
    }
  }
  if (!status.ok()) context.TryCancel();
  const grpc::Status end = stream->Finish();
  {
    absl::MutexLock lock(&mu_);
    context_ = nullptr;
  }
  // A peer that is not primary names its role.
  for (const auto& [key, value] : context.GetServerTrailingMetadata()) {
    if (key == kRoleMetadataKey) member_->NotePeerRole(std::string(value.data(), value.size()));
  }
  if (!status.ok()) return status;
  return end.ok() ? absl::UnavailableError("the primary ended the stream")
                  : FromGrpcStatus(end, absl::StrCat("primary ", member_->options().peer_address));
}

absl::Status ReplicaFollower::Handle(const v1::PrimaryMessage& message, Catchup* catchup) {
  if (message.has_snapshot_header()) {
    if (catchup->header.has_value()) return Broken("a second snapshot header");
    if (message.epoch() < member_->epoch()) {
      return absl::AbortedError(absl::StrCat("the primary's epoch ", message.epoch(),
                                             " is below this member's ", member_->epoch()));
    }
    absl::StatusOr<SnapshotHeader> header = SnapshotHeaderFromProto(message.snapshot_header());
    if (!header.ok()) return header.status();
    catchup->header = *std::move(header);
    catchup->epoch = message.epoch();
    member_->NoteHeard(catchup->epoch);
    return absl::OkStatus();
  }
  if (!catchup->header.has_value()) {
    return Broken("the answer to the hello is not a snapshot header (resume is not supported)");
  }
  if (message.epoch() != catchup->epoch) {
    return absl::AbortedError(
        absl::StrCat("the primary's epoch moved from ", catchup->epoch, " to ", message.epoch()));
  }
  member_->NoteHeard(catchup->epoch);
  if (message.has_entries()) return HandleEntries(message.entries(), catchup, catchup->epoch);
  return absl::OkStatus();  // heartbeats; digests and step-downs are not sent yet
}

absl::Status ReplicaFollower::HandleEntries(const v1::EntryBatch& batch, Catchup* catchup,
                                            uint64_t epoch) {
  for (const v1::LogEntry& proto : batch.entries()) {
    if (!catchup->loaded) {
      if (proto.has_snapshot_chunk()) {
        absl::StatusOr<LogSnapshotChunk> part = SnapshotChunkFromProto(proto.snapshot_chunk());
        if (!part.ok()) return part.status();
        if (part->part == 0) {
          catchup->chunks.push_back(*std::move(part));
        } else if (catchup->chunks.empty() || catchup->chunks.back().tensor != part->tensor ||
                   catchup->chunks.back().state.index != part->state.index) {
          return Broken("a snapshot chunk part without its part 0");
        } else {
          for (BackupCopy& b : part->backups)
            catchup->chunks.back().backups.push_back(std::move(b));
        }
        catchup->chunks.back().part = 0;
        catchup->chunks.back().last_part = true;
      } else if (proto.has_snapshot_end()) {
        if (proto.snapshot_end().header_seq() != catchup->header->seq) {
          return Broken("the snapshot's end names another header");
        }
        ReplicationSnapshot snapshot;
        snapshot.header = *catchup->header;
        snapshot.chunks = std::move(catchup->chunks);
        const std::string coordinator_state = snapshot.header.coordinator_state;
        if (absl::Status s = store_->LoadReplicationSnapshot(std::move(snapshot)); !s.ok()) {
          return s;
        }
        RETURN_IF_ERROR(member_->LoadCoordinatorState(coordinator_state));
        catchup->loaded = true;
        member_->CaughtUp(epoch);
      } else {
        return Broken("a log entry before the snapshot ended");
      }
      continue;
    }
    if (proto.seq() != store_->last_seq() + 1) {
      return Broken(
          absl::StrCat("entry seq ", proto.seq(), " does not follow ", store_->last_seq()));
    }
    absl::StatusOr<LogEntry> entry = LogEntryFromProto(proto);
    if (!entry.ok()) return entry.status();
    if (absl::Status s = store_->ApplyEntry(*entry); !s.ok()) {
      // The copy cannot go on from here: it drops out (the primary goes on
      // alone) rather than apply part of the log.
      return absl::Status(s.code(), absl::StrCat("cannot apply entry ", proto.seq(), " (",
                                                 LogEntryKindName(entry->op), "): ", s.message()));
    }
    // The store only took its seq: the coordinator's state is the member's.
    if (const auto* state = std::get_if<LogCoordinatorState>(&entry->op)) {
      RETURN_IF_ERROR(member_->LoadCoordinatorState(state->state));
    }
  }
  return absl::OkStatus();
}

bool ReplicaFollower::PeerRefuses() {
  std::shared_ptr<grpc::Channel> channel =
      credentials_->NewChannel(member_->options().peer_address, grpc::ChannelArguments());
  const auto deadline = absl::ToChronoTime(absl::Now() + kProbe);
  grpc_connectivity_state state = channel->GetState(/*try_to_connect=*/true);
  while (state != GRPC_CHANNEL_READY && state != GRPC_CHANNEL_TRANSIENT_FAILURE) {
    if (!channel->WaitForStateChange(state, deadline)) break;
    state = channel->GetState(/*try_to_connect=*/true);
  }
  return state == GRPC_CHANNEL_TRANSIENT_FAILURE;
}

}  // namespace dcasgd
