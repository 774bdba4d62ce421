#include "clients/cpp/shard_session.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/backoff.h"
#include "base/check.h"
#include "base/status_macros.h"
#include "clients/cpp/round_stream.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "wire/status.h"

namespace dcasgd {
namespace client {
namespace {

// The message limit assumed of a shard that does not report its own (older
// than JoinResponse.max_message_bytes): its streams send messages of half
// this, 256 KiB, as before shards reported it.
constexpr uint64_t kUnreportedShardMessageBytes = uint64_t{512} << 10;

template <typename Member>
std::vector<Member> OpenMembers(const std::vector<std::string>& addresses,
                                const grpc::ChannelArguments& args,
                                const std::shared_ptr<const auth::ClientCredentials>& credentials) {
  DCASGD_CHECK(addresses.size() == 1 || addresses.size() == 2);
  std::vector<Member> members;
  for (const std::string& address : addresses) {
    Member member;
    member.address = address;
    member.channel = (credentials != nullptr ? credentials : auth::ClientCredentials::Insecure())
                         ->NewChannel(address, args);
    member.stub = v1::ParameterShard::NewStub(member.channel);
    members.push_back(std::move(member));
  }
  return members;
}

}  // namespace

ShardSession::ShardSession(uint32_t index, uint32_t count,
                           const std::vector<std::string>& addresses,
                           const grpc::ChannelArguments& args, std::string worker_name,
                           CallPolicy policy,
                           const std::shared_ptr<const auth::ClientCredentials>& credentials,
                           uint32_t pipeline_depth)
    : index_(index),
      count_(count),
      label_(absl::StrCat("shard ", index, " (", absl::StrJoin(addresses, "|"), ")")),
      worker_name_(std::move(worker_name)),
      pipeline_depth_(pipeline_depth),
      policy_(policy),
      members_(OpenMembers<Member>(addresses, args, credentials)),
      cursor_(members_.size()) {}

v1::ParameterShard::Stub* ShardSession::stub() const {
  return members_[current_member()].stub.get();
}

size_t ShardSession::current_member() const { return cursor_.current(); }

void ShardSession::MoveOn(size_t failed) { cursor_.MoveOn(failed); }

ShardSession::~ShardSession() {
  std::shared_ptr<RoundStream> stream;
  std::vector<std::weak_ptr<RoundStream>> streams;
  {
    absl::MutexLock lock(&exchange_mu_);
    stream = std::move(exchange_);
    streams.swap(streams_);
  }
  if (stream != nullptr) stream->Close(absl::Seconds(1));
  stream.reset();
  // Closed streams are gone once their OnDone returned (it drops the last
  // reference), within moments; the bound only keeps a wedged library from
  // hanging the caller.
  const absl::Time give_up = absl::Now() + absl::Seconds(5);
  for (const std::weak_ptr<RoundStream>& weak : streams) {
    while (!weak.expired() && absl::Now() < give_up) absl::SleepFor(absl::Milliseconds(1));
  }
}

std::shared_ptr<RoundStream> ShardSession::Exchange(bool reopen) {
  const size_t member = current_member();
  absl::MutexLock lock(&exchange_mu_);
  if (reopen && exchange_ != nullptr && !exchange_->ended() && exchange_member_ != member) {
    // Its rounds fail (CANCELLED) and are retried, at the current member.
    exchange_->Cancel(/*deadline=*/false);
  }
  if (reopen && (exchange_ == nullptr || exchange_->ended() || exchange_member_ != member)) {
    // What the stream may send: below our own limit and the shard's.
    const uint64_t shard_limit = shard_message_bytes_.load(std::memory_order_relaxed);
    exchange_ = RoundStream::Open(
        members_[member].channel, label_,
        std::min<uint64_t>(policy_.max_message_bytes,
                           shard_limit > 0 ? shard_limit : kUnreportedShardMessageBytes));
    exchange_member_ = member;
    streams_.erase(std::remove_if(streams_.begin(), streams_.end(),
                                  [](const std::weak_ptr<RoundStream>& s) { return s.expired(); }),
                   streams_.end());
    streams_.push_back(exchange_);
  }
  return exchange_;
}

uint64_t ShardSession::worker_id() const {
  absl::MutexLock lock(&mu_);
  return worker_id_;
}

WorkerCredentials ShardSession::credentials() const {
  absl::MutexLock lock(&mu_);
  return WorkerCredentials{worker_id_, session_};
}

absl::Duration ShardSession::lease() const {
  absl::MutexLock lock(&mu_);
  return absl::Milliseconds(lease_ms_);
}

void ShardSession::SetDeadline(grpc::ClientContext* context) const {
  context->set_deadline(absl::ToChronoTime(absl::Now() + policy_.rpc_timeout));
}

absl::Status ShardSession::Call(
    CallKind kind, absl::FunctionRef<absl::Status(const WorkerCredentials& worker)> attempt) {
  Backoff backoff({policy_.initial_backoff, policy_.max_backoff, 2.0, 0.2});
  bool retried_after_rejoin = false;
  const int max_attempts = policy_.max_attempts * static_cast<int>(members_.size());
  // Set by the first refusal that names a role: until then, a failover in
  // progress, whose attempts are not counted.
  absl::Time failover_until = absl::InfinitePast();
  size_t refused_in_a_row = 0;
  int counted = 0;  // failed attempts that count against max_attempts
  for (;;) {
    const WorkerCredentials worker = credentials();
    const uint64_t id = worker.worker_id;
    if (kind == CallKind::kPush && id == 0) {
      return absl::FailedPreconditionError(
          absl::StrCat(label_, ": this client is not joined (evaluator, or after Leave)"));
    }
    const size_t member = current_member();
    absl::Status status = attempt(worker);
    if (status.ok()) return status;
    const bool refused = !RefusingRole(status).empty();
    if (refused && failover_until == absl::InfinitePast()) {
      failover_until = absl::Now() + policy_.failover_wait;
    }
    const bool failing_over = absl::Now() < failover_until;
    if (!failing_over) ++counted;
    if (IsTransient(status) && (failing_over || counted < max_attempts)) {
      MoveOn(member);
      refused_in_a_row = refused ? refused_in_a_row + 1 : 0;
      // The other member is tried at once after a refusal, unless it
      // refused too just before.
      if (refused_in_a_row == 0 || refused_in_a_row >= members_.size()) {
        refused_in_a_row = 0;
        WaitBeforeRetry(backoff.Next());
      }
      continue;
    }
    if (absl::IsFailedPrecondition(status) && kind != CallKind::kRead && id != 0) {
      const absl::Status rejoined = Rejoin(id);
      if (!rejoined.ok()) {
        return absl::Status(
            rejoined.code(),
            absl::StrCat(status.message(), "; re-join failed: ", rejoined.message()));
      }
      if (kind == CallKind::kPull && !retried_after_rejoin) {
        retried_after_rejoin = true;
        continue;
      }
      return absl::FailedPreconditionError(
          absl::StrCat(status.message(), "; re-joined; pull again"));
    }
    return status;
  }
}

void ShardSession::WaitBeforeRetry(absl::Duration delay) {
  grpc::Channel& channel = *members_[current_member()].channel;
  if (channel.GetState(/*try_to_connect=*/false) == GRPC_CHANNEL_READY) {
    // Connected: the shard itself answered (e.g. shutting down, or a member
    // that is not the primary); back off.
    absl::SleepFor(delay);
    return;
  }
  // Not connected (the shard is down or restarting): retry as soon as the
  // channel reconnects, not a whole backoff later.
  channel.WaitForConnected(absl::ToChronoTime(absl::Now() + delay));
}

absl::Status ShardSession::Join() {
  v1::JoinRequest request;
  request.set_worker_name(worker_name_);
  request.set_pipeline_depth(pipeline_depth_);
  v1::JoinResponse response;
  RETURN_IF_ERROR(Call(CallKind::kRead, [&](const WorkerCredentials&) {
    grpc::ClientContext context;
    SetDeadline(&context);
    return FromGrpcCall(stub()->Join(&context, request, &response), context, label_);
  }));
  if (response.shard_index() != index_ || response.shard_count() != count_) {
    return absl::FailedPreconditionError(absl::StrCat(
        label_, " says it is shard ", response.shard_index(), " of ", response.shard_count(),
        "; the client lists it as shard ", index_, " of ", count_));
  }
  if (response.worker_id() == 0) {
    return absl::InternalError(absl::StrCat(label_, ": Join returned worker id 0"));
  }
  absl::MutexLock lock(&mu_);
  worker_id_ = response.worker_id();
  session_ = response.session();
  lease_ms_ = response.lease_ms();
  shard_message_bytes_.store(response.max_message_bytes(), std::memory_order_relaxed);
  return absl::OkStatus();
}

absl::Status ShardSession::Rejoin(uint64_t failed_worker_id) {
  absl::MutexLock join_lock(&join_mu_);
  {
    absl::MutexLock lock(&mu_);
    if (left_) return absl::FailedPreconditionError(absl::StrCat(label_, ": left; not re-joining"));
    if (worker_id_ != failed_worker_id) return absl::OkStatus();  // done by another call
  }
  return Join();
}

void ShardSession::Beat(absl::Duration timeout) {
  const WorkerCredentials worker = credentials();
  const uint64_t id = worker.worker_id;
  if (id == 0) return;
  v1::HeartbeatRequest request;
  request.set_worker_id(id);
  request.set_session(worker.session);
  v1::HeartbeatResponse response;
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  const size_t member = current_member();
  const grpc::Status status = members_[member].stub->Heartbeat(&context, request, &response);
  if (status.ok()) {
    absl::MutexLock lock(&mu_);
    if (response.lease_ms() > 0) lease_ms_ = response.lease_ms();
  } else if (status.error_code() == grpc::StatusCode::FAILED_PRECONDITION) {
    // The lease is gone, and with it the backup: the next push fails and
    // re-joins anyway, but re-joining now keeps membership accurate.
    Rejoin(id).IgnoreError();
  } else if (IsTransient(FromGrpcStatus(status, label_))) {
    // The next beat (and call) goes to the other member, if any.
    MoveOn(member);
  }
  // Other errors: try again at the next beat.
}

absl::Status ShardSession::Leave(int max_attempts) {
  std::shared_ptr<RoundStream> stream;
  {
    absl::MutexLock lock(&exchange_mu_);
    stream = std::move(exchange_);
  }
  if (stream != nullptr) stream->Close(absl::Seconds(1));
  absl::MutexLock join_lock(&join_mu_);
  uint64_t id;
  v1::LeaveRequest request;
  {
    absl::MutexLock lock(&mu_);
    left_ = true;
    id = worker_id_;
    worker_id_ = 0;
    request.set_session(std::move(session_));
    session_.clear();
  }
  if (id == 0) return absl::OkStatus();
  request.set_worker_id(id);
  Backoff backoff({policy_.initial_backoff, policy_.max_backoff, 2.0, 0.2});
  for (int n = 1;; ++n) {
    v1::LeaveResponse response;
    grpc::ClientContext context;
    SetDeadline(&context);
    const size_t member = current_member();
    const absl::Status status =
        FromGrpcCall(members_[member].stub->Leave(&context, request, &response), context, label_);
    // Unknown or expired (e.g. the shard restarted meanwhile): the lease is
    // gone already, which is what Leave wants.
    if (absl::IsFailedPrecondition(status)) return absl::OkStatus();
    if (!absl::IsUnavailable(status) || n >= max_attempts * static_cast<int>(members_.size())) {
      return status;
    }
    MoveOn(member);
    absl::SleepFor(backoff.Next());
  }
}

}  // namespace client
}  // namespace dcasgd
