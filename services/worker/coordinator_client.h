#ifndef DCASGD_SERVICES_WORKER_COORDINATOR_CLIENT_H_
#define DCASGD_SERVICES_WORKER_COORDINATOR_CLIENT_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "dcasgd/v1/coordinator.grpc.pb.h"

namespace dcasgd {

// A client of the DataCoordinator on shard 0. Calls retry UNAVAILABLE,
// CANCELLED and DEADLINE_EXCEEDED (shard 0 restarting, or unable to save its
// schedule for a while) with backoff for up to `patience`, then return the
// error; Renew tries once (it is repeated periodically anyway). Thread-safe.
class CoordinatorClient {
 public:
  CoordinatorClient(const std::string& address, absl::Duration patience = absl::Minutes(5));

  absl::StatusOr<v1::AcquireDataShardResponse> Acquire(const std::string& worker_name,
                                                       uint32_t num_data_shards, uint32_t epochs);
  absl::Status Renew(uint64_t lease_id);
  absl::Status Complete(uint64_t lease_id);
  absl::StatusOr<v1::JobStatus> JobStatus();

 private:
  template <typename Call>
  absl::Status WithRetries(const char* what, absl::Duration patience, Call call);

  const std::string address_;
  const absl::Duration patience_;
  std::unique_ptr<v1::DataCoordinator::Stub> stub_;
};

}  // namespace dcasgd

#endif  // DCASGD_SERVICES_WORKER_COORDINATOR_CLIENT_H_
