#include "services/ps/coordinator_service.h"

#include "absl/time/time.h"
#include "services/ps/convert.h"
#include "services/ps/raw_message.h"

namespace dcasgd {
namespace {

grpc::ServerUnaryReactor* Finish(grpc::CallbackServerContext* context, const absl::Status& status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

uint64_t Millis(absl::Duration d) { return static_cast<uint64_t>(absl::ToInt64Milliseconds(d)); }

// Parses `raw` as a Request, runs `handle`, serialises its response into
// `raw_response` and finishes the call.
template <typename Request, typename Response, typename Handler>
grpc::ServerUnaryReactor* Unary(grpc::CallbackServerContext* context, const grpc::ByteBuffer* raw,
                                grpc::ByteBuffer* raw_response, Handler handle) {
  Request request;
  Response response;
  absl::Status status = ParseMessage(*raw, &request);
  if (status.ok()) status = handle(request, &response);
  if (status.ok()) SerializeMessage(response, raw_response);
  return Finish(context, status);
}

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

absl::Status DataCoordinatorService::DoAcquire(const v1::AcquireDataShardRequest& request,
                                               v1::AcquireDataShardResponse* response) {
  if (absl::Status s = ValidateName("worker_name", request.worker_name()); !s.ok()) return s;
  absl::StatusOr<AcquireResult> result =
      coordinator_->Acquire(request.worker_name(), request.num_data_shards(), request.epochs());
  if (!result.ok()) return result.status();
  // The first Acquire fixes the job: make that durable before answering.
  if (absl::Status saved = SaveIfChanged(); !saved.ok()) return saved;
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
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* DataCoordinatorService::AcquireDataShard(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return Unary<v1::AcquireDataShardRequest, v1::AcquireDataShardResponse>(
      context, request, response,
      [this](const v1::AcquireDataShardRequest& r, v1::AcquireDataShardResponse* out) {
        return DoAcquire(r, out);
      });
}

grpc::ServerUnaryReactor* DataCoordinatorService::RenewDataLease(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return Unary<v1::RenewDataLeaseRequest, v1::RenewDataLeaseResponse>(
      context, request, response,
      [this](const v1::RenewDataLeaseRequest& r, v1::RenewDataLeaseResponse* out) {
        absl::Status s = coordinator_->Renew(r.lease_id());
        if (s.ok()) out->set_lease_ms(Millis(coordinator_->lease()));
        return s;
      });
}

grpc::ServerUnaryReactor* DataCoordinatorService::CompleteDataShard(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return Unary<v1::CompleteDataShardRequest, v1::CompleteDataShardResponse>(
      context, request, response,
      [this](const v1::CompleteDataShardRequest& r, v1::CompleteDataShardResponse*) {
        absl::Status done = coordinator_->Complete(r.lease_id());
        // A failed save is returned to the worker, which logs it; the item
        // stays done in memory and the next successful save covers it.
        if (done.ok()) done = SaveIfChanged();
        return done;
      });
}

grpc::ServerUnaryReactor* DataCoordinatorService::GetJobStatus(grpc::CallbackServerContext* context,
                                                               const grpc::ByteBuffer* request,
                                                               grpc::ByteBuffer* response) {
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
