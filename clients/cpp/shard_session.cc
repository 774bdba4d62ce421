#include "clients/cpp/shard_session.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/backoff.h"
#include "base/status_macros.h"
#include "clients/cpp/round_stream.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "wire/status.h"

namespace dcasgd {
namespace client {

ShardSession::ShardSession(uint32_t index, uint32_t count, const std::string& address,
                           const grpc::ChannelArguments& args, std::string worker_name,
                           CallPolicy policy,
                           const std::shared_ptr<const auth::ClientCredentials>& credentials,
                           uint32_t pipeline_depth)
    : index_(index),
      count_(count),
      label_(absl::StrCat("shard ", index, " (", address, ")")),
      worker_name_(std::move(worker_name)),
      pipeline_depth_(pipeline_depth),
      policy_(policy),
      channel_((credentials != nullptr ? credentials : auth::ClientCredentials::Insecure())
                   ->NewChannel(address, args)),
      stub_(v1::ParameterShard::NewStub(channel_)) {}

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
  absl::MutexLock lock(&exchange_mu_);
  if (reopen && (exchange_ == nullptr || exchange_->ended())) {
    exchange_ = RoundStream::Open(stub_.get(), label_, policy_.max_message_bytes);
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
  for (int n = 1;; ++n) {
    const WorkerCredentials worker = credentials();
    const uint64_t id = worker.worker_id;
    if (kind == CallKind::kPush && id == 0) {
      return absl::FailedPreconditionError(
          absl::StrCat(label_, ": this client is not joined (evaluator, or after Leave)"));
    }
    absl::Status status = attempt(worker);
    if (status.ok()) return status;
    if (IsTransient(status) && n < policy_.max_attempts) {
      WaitBeforeRetry(backoff.Next());
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
  if (channel_->GetState(/*try_to_connect=*/false) == GRPC_CHANNEL_READY) {
    // Connected: the shard itself answered (e.g. shutting down); back off.
    absl::SleepFor(delay);
    return;
  }
  // Not connected (the shard is down or restarting): retry as soon as the
  // channel reconnects, not a whole backoff later.
  channel_->WaitForConnected(absl::ToChronoTime(absl::Now() + delay));
}

absl::Status ShardSession::Join() {
  v1::JoinRequest request;
  request.set_worker_name(worker_name_);
  request.set_pipeline_depth(pipeline_depth_);
  v1::JoinResponse response;
  RETURN_IF_ERROR(Call(CallKind::kRead, [&](const WorkerCredentials&) {
    grpc::ClientContext context;
    SetDeadline(&context);
    return FromGrpcStatus(stub_->Join(&context, request, &response), label_);
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
  const grpc::Status status = stub_->Heartbeat(&context, request, &response);
  if (status.ok()) {
    absl::MutexLock lock(&mu_);
    if (response.lease_ms() > 0) lease_ms_ = response.lease_ms();
  } else if (status.error_code() == grpc::StatusCode::FAILED_PRECONDITION) {
    // The lease is gone, and with it the backup: the next push fails and
    // re-joins anyway, but re-joining now keeps membership accurate.
    Rejoin(id).IgnoreError();
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
    const absl::Status status = FromGrpcStatus(stub_->Leave(&context, request, &response), label_);
    // Unknown or expired (e.g. the shard restarted meanwhile): the lease is
    // gone already, which is what Leave wants.
    if (absl::IsFailedPrecondition(status)) return absl::OkStatus();
    if (!absl::IsUnavailable(status) || n >= max_attempts) return status;
    absl::SleepFor(backoff.Next());
  }
}

}  // namespace client
}  // namespace dcasgd
