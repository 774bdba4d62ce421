#include "coordinator/coordinator_client.h"

#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "auth/tls.h"
#include "base/backoff.h"
#include "clients/cpp/channel_args.h"
#include "clients/cpp/member_cursor.h"
#include "dcasgd/v1/coordinator.grpc.pb.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "wire/status.h"

namespace dcasgd {

namespace {

std::shared_ptr<grpc::Channel> MakeChannel(
    const std::string& address, bool pair,
    const std::shared_ptr<const auth::ClientCredentials>& credentials) {
  grpc::ChannelArguments args;
  client::SetResilienceArgs(&args, pair);
  return (credentials != nullptr ? credentials : auth::ClientCredentials::Insecure())
      ->NewChannel(address, args);
}

}  // namespace

// One stub per member of shard 0; calls go to the current one and move to
// the other after a transient failure (a member that is not the primary
// answers UNAVAILABLE).
struct CoordinatorClient::Stub {
  explicit Stub(size_t count) : cursor(count) {}

  std::vector<std::unique_ptr<v1::DataCoordinator::Stub>> members;  // const after construction
  client::MemberCursor cursor;

  v1::DataCoordinator::Stub* rpc(size_t* member) {
    *member = cursor.current();
    return members[*member].get();
  }
  void MoveOn(size_t failed) { cursor.MoveOn(failed); }
};

CoordinatorClient::CoordinatorClient(const std::string& address, absl::Duration patience,
                                     std::shared_ptr<const auth::ClientCredentials> credentials)
    : address_(address), patience_(patience) {
  const std::vector<std::string> members = absl::StrSplit(address, '|');
  stub_.reset(new Stub(members.size()));
  for (const std::string& member : members) {
    stub_->members.push_back(
        v1::DataCoordinator::NewStub(MakeChannel(member, members.size() > 1, credentials)));
  }
}

CoordinatorClient::~CoordinatorClient() = default;

template <typename Call>
absl::Status CoordinatorClient::WithRetries(const char* what, absl::Duration patience, Call call) {
  bool logged = false;
  // Shard 0 restarting (UNAVAILABLE), shutting down with the call in flight
  // (CANCELLED), hung (DEADLINE_EXCEEDED), or unable to save its schedule
  // (UNAVAILABLE, nothing changed): every call is safe to repeat.
  return RetryWithBackoff(
      RetryPolicy{{absl::Milliseconds(50), absl::Seconds(1)}, patience},
      [&] {
        grpc::ClientContext context;
        // A single try (Renew) must not hold up training for long.
        const absl::Duration timeout =
            patience > absl::ZeroDuration() ? absl::Seconds(30) : absl::Seconds(5);
        context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
        size_t member = 0;
        v1::DataCoordinator::Stub* rpc = stub_->rpc(&member);
        absl::Status status = FromGrpcStatus(
            call(rpc, &context), absl::StrCat("coordinator (shard 0, ", address_, ") ", what));
        if (IsTransient(status)) stub_->MoveOn(member);
        return status;
      },
      IsTransient,
      [&](const absl::Status& error) {
        // Once per call: an outage of shard 0 should be visible, not spam.
        if (logged) return;
        std::fprintf(stderr, "%s; retrying for up to %s\n", std::string(error.message()).c_str(),
                     absl::FormatDuration(patience).c_str());
        logged = true;
      });
}

absl::StatusOr<AcquireResult> CoordinatorClient::Acquire(const std::string& worker_name,
                                                         uint32_t num_data_shards,
                                                         uint32_t epochs) {
  v1::AcquireDataShardRequest request;
  request.set_worker_name(worker_name);
  request.set_num_data_shards(num_data_shards);
  request.set_epochs(epochs);
  v1::AcquireDataShardResponse response;
  absl::Status s = WithRetries("AcquireDataShard", patience_,
                               [&](v1::DataCoordinator::Stub* rpc, grpc::ClientContext* context) {
                                 return rpc->AcquireDataShard(context, request, &response);
                               });
  if (!s.ok()) return s;
  if (response.has_lease()) {
    const v1::DataLease& lease = response.lease();
    return AcquireResult(DataLease{lease.lease_id(), lease.lease_secret(), lease.data_shard(),
                                   lease.epoch(), absl::Milliseconds(lease.lease_ms())});
  }
  if (response.has_job_done() && response.job_done()) return AcquireResult(JobDone{});
  return AcquireResult(RetryLater{absl::Milliseconds(response.retry_after_ms())});
}

absl::Status CoordinatorClient::Renew(uint64_t lease_id, const std::string& secret) {
  v1::RenewDataLeaseRequest request;
  request.set_lease_id(lease_id);
  request.set_lease_secret(secret);
  v1::RenewDataLeaseResponse response;
  return WithRetries("RenewDataLease", absl::ZeroDuration(),
                     [&](v1::DataCoordinator::Stub* rpc, grpc::ClientContext* context) {
                       return rpc->RenewDataLease(context, request, &response);
                     });
}

absl::Status CoordinatorClient::Complete(uint64_t lease_id, const std::string& secret) {
  v1::CompleteDataShardRequest request;
  request.set_lease_id(lease_id);
  request.set_lease_secret(secret);
  v1::CompleteDataShardResponse response;
  return WithRetries("CompleteDataShard", patience_,
                     [&](v1::DataCoordinator::Stub* rpc, grpc::ClientContext* context) {
                       return rpc->CompleteDataShard(context, request, &response);
                     });
}

absl::StatusOr<JobProgress> CoordinatorClient::JobStatus() {
  v1::GetJobStatusRequest request;
  v1::JobStatus response;
  absl::Status s = WithRetries("GetJobStatus", patience_,
                               [&](v1::DataCoordinator::Stub* rpc, grpc::ClientContext* context) {
                                 return rpc->GetJobStatus(context, request, &response);
                               });
  if (!s.ok()) return s;
  JobProgress progress;
  progress.configured = response.configured();
  progress.num_data_shards = response.num_data_shards();
  progress.epochs = response.epochs();
  progress.completed = response.completed();
  progress.leased = response.leased();
  progress.reissued = response.reissued();
  progress.current_epoch = response.current_epoch();
  progress.done = response.done();
  return progress;
}

}  // namespace dcasgd
