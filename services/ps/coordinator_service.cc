#include "services/ps/coordinator_service.h"

#include "absl/time/time.h"
#include "services/ps/convert.h"

namespace dcasgd {
namespace {

grpc::ServerUnaryReactor* Finish(grpc::CallbackServerContext* context, const absl::Status& status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

uint64_t Millis(absl::Duration d) { return static_cast<uint64_t>(absl::ToInt64Milliseconds(d)); }

}  // namespace

grpc::ServerUnaryReactor* DataCoordinatorService::AcquireDataShard(
    grpc::CallbackServerContext* context, const v1::AcquireDataShardRequest* request,
    v1::AcquireDataShardResponse* response) {
  absl::Status name = ValidateName("worker_name", request->worker_name());
  if (!name.ok()) return Finish(context, name);
  absl::StatusOr<AcquireResult> result =
      coordinator_->Acquire(request->worker_name(), request->num_data_shards(), request->epochs());
  // UNAVAILABLE when the lease could not be saved: none was granted.
  if (!result.ok()) return Finish(context, result.status());
  if (const auto* lease = std::get_if<DataLease>(&*result)) {
    v1::DataLease* out = response->mutable_lease();
    out->set_lease_id(lease->lease_id);
    out->set_data_shard(lease->data_shard);
    out->set_epoch(lease->epoch);
    out->set_lease_ms(Millis(lease->lease));
  } else if (const auto* retry = std::get_if<RetryLater>(&*result)) {
    response->set_retry_after_ms(Millis(retry->after));
  } else {
    response->set_job_done(true);
  }
  return Finish(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* DataCoordinatorService::RenewDataLease(
    grpc::CallbackServerContext* context, const v1::RenewDataLeaseRequest* request,
    v1::RenewDataLeaseResponse* response) {
  absl::Status s = coordinator_->Renew(request->lease_id());
  if (s.ok()) response->set_lease_ms(Millis(coordinator_->lease()));
  return Finish(context, s);
}

grpc::ServerUnaryReactor* DataCoordinatorService::CompleteDataShard(
    grpc::CallbackServerContext* context, const v1::CompleteDataShardRequest* request,
    v1::CompleteDataShardResponse* response) {
  // UNAVAILABLE when the completion could not be saved: the lease stays
  // with its worker, which retries.
  return Finish(context, coordinator_->Complete(request->lease_id()));
}

grpc::ServerUnaryReactor* DataCoordinatorService::GetJobStatus(
    grpc::CallbackServerContext* context, const v1::GetJobStatusRequest* request,
    v1::JobStatus* response) {
  JobProgress p = coordinator_->Progress();
  response->set_configured(p.configured);
  response->set_num_data_shards(p.num_data_shards);
  response->set_epochs(p.epochs);
  response->set_completed(p.completed);
  response->set_leased(p.leased);
  response->set_reissued(p.reissued);
  response->set_current_epoch(p.current_epoch);
  response->set_done(p.done);
  return Finish(context, absl::OkStatus());
}

}  // namespace dcasgd
