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

absl::Status DataCoordinatorService::SaveIfChanged() {
  if (!save_progress_) return absl::OkStatus();
  absl::MutexLock lock(&save_mu_);
  const uint64_t generation = coordinator_->generation();
  if (generation == saved_generation_) return absl::OkStatus();
  absl::Status saved = save_progress_(coordinator_->SerializeProgress());
  if (saved.ok()) saved_generation_ = generation;
  return saved;
}

grpc::ServerUnaryReactor* DataCoordinatorService::AcquireDataShard(
    grpc::CallbackServerContext* context, const v1::AcquireDataShardRequest* request,
    v1::AcquireDataShardResponse* response) {
  absl::Status name = ValidateName("worker_name", request->worker_name());
  if (!name.ok()) return Finish(context, name);
  absl::StatusOr<AcquireResult> result =
      coordinator_->Acquire(request->worker_name(), request->num_data_shards(), request->epochs());
  if (!result.ok()) return Finish(context, result.status());
  // The first Acquire fixes the job: make that durable before answering.
  if (absl::Status saved = SaveIfChanged(); !saved.ok()) return Finish(context, saved);
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
  absl::Status done = coordinator_->Complete(request->lease_id());
  // A failed save is returned to the worker, which logs it; the item stays
  // done in memory and the next successful save covers it.
  if (done.ok()) done = SaveIfChanged();
  return Finish(context, done);
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
