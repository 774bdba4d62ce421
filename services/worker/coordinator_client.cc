#include "services/worker/coordinator_client.h"

#include "absl/strings/str_cat.h"
#include "client/retry.h"
#include "client/rpc_convert.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"

namespace dcasgd {

CoordinatorClient::CoordinatorClient(const std::string& address, absl::Duration patience)
    : address_(address),
      patience_(patience),
      stub_(v1::DataCoordinator::NewStub(
          grpc::CreateChannel(address, grpc::InsecureChannelCredentials()))) {}

template <typename Call>
absl::Status CoordinatorClient::WithRetries(const char* what, Call call) {
  client::Backoff backoff(client::Backoff::Options{});
  const absl::Time give_up = absl::Now() + patience_;
  while (true) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
    grpc::Status status = call(&context);
    absl::Status s = client::FromGrpcStatus(
        status, absl::StrCat("coordinator (shard 0, ", address_, ") ", what));
    if (s.code() != absl::StatusCode::kUnavailable &&
        s.code() != absl::StatusCode::kDeadlineExceeded) {
      return s;
    }
    absl::Duration wait = backoff.Next();
    if (absl::Now() + wait > give_up) return s;
    absl::SleepFor(wait);
  }
}

absl::StatusOr<v1::AcquireDataShardResponse> CoordinatorClient::Acquire(
    const std::string& worker_name, uint32_t num_data_shards, uint32_t epochs) {
  v1::AcquireDataShardRequest request;
  request.set_worker_name(worker_name);
  request.set_num_data_shards(num_data_shards);
  request.set_epochs(epochs);
  v1::AcquireDataShardResponse response;
  absl::Status s = WithRetries("AcquireDataShard", [&](grpc::ClientContext* context) {
    return stub_->AcquireDataShard(context, request, &response);
  });
  if (!s.ok()) return s;
  return response;
}

absl::Status CoordinatorClient::Renew(uint64_t lease_id) {
  v1::RenewDataLeaseRequest request;
  request.set_lease_id(lease_id);
  v1::RenewDataLeaseResponse response;
  return WithRetries("RenewDataLease", [&](grpc::ClientContext* context) {
    return stub_->RenewDataLease(context, request, &response);
  });
}

absl::Status CoordinatorClient::Complete(uint64_t lease_id) {
  v1::CompleteDataShardRequest request;
  request.set_lease_id(lease_id);
  v1::CompleteDataShardResponse response;
  return WithRetries("CompleteDataShard", [&](grpc::ClientContext* context) {
    return stub_->CompleteDataShard(context, request, &response);
  });
}

absl::StatusOr<v1::JobStatus> CoordinatorClient::JobStatus() {
  v1::GetJobStatusRequest request;
  v1::JobStatus response;
  absl::Status s = WithRetries("GetJobStatus", [&](grpc::ClientContext* context) {
    return stub_->GetJobStatus(context, request, &response);
  });
  if (!s.ok()) return s;
  return response;
}

}  // namespace dcasgd
