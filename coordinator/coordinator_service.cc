#include "coordinator/coordinator_service.h"

#include "absl/time/time.h"
#include "wire/raw_message.h"
#include "wire/status.h"
#include "wire/tensor_spec.h"

namespace dcasgd {
namespace {

grpc::ServerUnaryReactor* Finish(grpc::CallbackServerContext* context, const absl::Status& status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

uint64_t Millis(absl::Duration d) { return static_cast<uint64_t>(absl::ToInt64Milliseconds(d)); }

// A unary call of the coordinator: wire/raw_message.h HandleRawUnary, then
// finish it.
template <typename Request, typename Response, typename Handler>
grpc::ServerUnaryReactor* Unary(grpc::CallbackServerContext* context, const grpc::ByteBuffer* raw,
                                grpc::ByteBuffer* raw_response, Handler handle) {
  return Finish(context, HandleRawUnary<Request, Response>(*raw, raw_response, handle));
}

}  // namespace

absl::Status DataCoordinatorService::Authorize(grpc::CallbackServerContext* context,
                                               auth::Action action) const {
  if (authorizer_ != nullptr) {
    if (absl::Status s = authorizer_->Authorize(*context, action); !s.ok()) return s;
  }
  return gate_ == nullptr ? absl::OkStatus() : gate_(context);
}

absl::Status DataCoordinatorService::DoAcquire(const v1::AcquireDataShardRequest& request,
                                               v1::AcquireDataShardResponse* response) {
  if (absl::Status s = ValidateName("worker_name", request.worker_name()); !s.ok()) return s;
  absl::StatusOr<AcquireResult> result =
      coordinator_->Acquire(request.worker_name(), request.num_data_shards(), request.epochs());
  // UNAVAILABLE when the lease could not be saved: none was granted.
  if (!result.ok()) return result.status();
  if (const auto* lease = std::get_if<DataLease>(&*result)) {
    v1::DataLease* out = response->mutable_lease();
    out->set_lease_id(lease->lease_id);
    out->set_lease_secret(lease->secret);
    out->set_data_shard(lease->data_shard);
    out->set_epoch(lease->epoch);
    out->set_lease_ms(Millis(lease->lease));
  } else if (const auto* retry = std::get_if<RetryLater>(&*result)) {
    response->set_retry_after_ms(Millis(retry->after));
  } else {
    response->set_job_done(true);
  }
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* DataCoordinatorService::AcquireDataShard(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  if (absl::Status s = Authorize(context, auth::Action::kAcquireDataShard); !s.ok())
    return Finish(context, s);
  return Unary<v1::AcquireDataShardRequest, v1::AcquireDataShardResponse>(
      context, request, response,
      [this](const v1::AcquireDataShardRequest& r, v1::AcquireDataShardResponse* out) {
        return DoAcquire(r, out);
      });
}

grpc::ServerUnaryReactor* DataCoordinatorService::RenewDataLease(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  if (absl::Status s = Authorize(context, auth::Action::kRenewDataLease); !s.ok())
    return Finish(context, s);
  return Unary<v1::RenewDataLeaseRequest, v1::RenewDataLeaseResponse>(
      context, request, response,
      [this](const v1::RenewDataLeaseRequest& r, v1::RenewDataLeaseResponse* out) {
        absl::Status s = coordinator_->Renew(r.lease_id(), r.lease_secret());
        if (s.ok()) out->set_lease_ms(Millis(coordinator_->lease()));
        return s;
      });
}

grpc::ServerUnaryReactor* DataCoordinatorService::CompleteDataShard(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  if (absl::Status s = Authorize(context, auth::Action::kCompleteDataShard); !s.ok())
    return Finish(context, s);
  return Unary<v1::CompleteDataShardRequest, v1::CompleteDataShardResponse>(
      context, request, response,
      [this](const v1::CompleteDataShardRequest& r, v1::CompleteDataShardResponse*) {
        // UNAVAILABLE when the completion could not be saved: the lease stays
        // with its worker, which retries.
        return coordinator_->Complete(r.lease_id(), r.lease_secret());
      });
}

grpc::ServerUnaryReactor* DataCoordinatorService::GetJobStatus(grpc::CallbackServerContext* context,
                                                               const grpc::ByteBuffer* request,
                                                               grpc::ByteBuffer* response) {
  if (absl::Status s = Authorize(context, auth::Action::kGetJobStatus); !s.ok())
    return Finish(context, s);
  return Unary<v1::GetJobStatusRequest, v1::JobStatus>(
      context, request, response, [this](const v1::GetJobStatusRequest&, v1::JobStatus* out) {
        JobProgress p = coordinator_->Progress();
        out->set_configured(p.configured);
        out->set_num_data_shards(p.num_data_shards);
        out->set_epochs(p.epochs);
        out->set_completed(p.completed);
        out->set_leased(p.leased);
        out->set_reissued(p.reissued);
        out->set_current_epoch(p.current_epoch);
        out->set_done(p.done);
        return absl::OkStatus();
      });
}

}  // namespace dcasgd
