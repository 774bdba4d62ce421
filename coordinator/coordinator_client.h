#ifndef DCASGD_COORDINATOR_COORDINATOR_CLIENT_H_
#define DCASGD_COORDINATOR_COORDINATOR_CLIENT_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "coordinator/data_coordinator.h"

namespace dcasgd {
namespace auth {
class ClientCredentials;  // auth/tls.h
}  // namespace auth
}  // namespace dcasgd

namespace dcasgd {

// A client of the DataCoordinator on shard 0 (dcasgd.v1.DataCoordinator),
// answering with the coordinator's own types (coordinator/data_coordinator.h)
// so no generated message reaches the trainer. Calls retry UNAVAILABLE,
// CANCELLED and DEADLINE_EXCEEDED (shard 0 restarting, or unable to save its
// schedule for a while) with backoff for up to `patience`, then return the
// error (message prefixed "coordinator (shard 0, <address>) <method>"); Renew
// tries once (it is repeated periodically anyway). Other codes are returned
// as the coordinator sent them (DataCoordinator's contract). Blocking;
// thread-safe.
class CoordinatorClient {
 public:
  // `address`: shard 0's "host:port", or "a|b" for both members of a
  // replicated shard 0 (calls move to the other member on a transient
  // failure). `credentials`: TLS and the bearer token (auth/tls.h); null:
  // plaintext.
  CoordinatorClient(const std::string& address, absl::Duration patience = absl::Minutes(5),
                    std::shared_ptr<const auth::ClientCredentials> credentials = nullptr);
  ~CoordinatorClient();
  CoordinatorClient(const CoordinatorClient&) = delete;
  CoordinatorClient& operator=(const CoordinatorClient&) = delete;

  // A data lease, "ask again after", or "the job is done".
  absl::StatusOr<AcquireResult> Acquire(const std::string& worker_name, uint32_t num_data_shards,
                                        uint32_t epochs);
  // `secret` is the lease's DataLease::secret (UNAUTHENTICATED otherwise).
  absl::Status Renew(uint64_t lease_id, const std::string& secret);
  absl::Status Complete(uint64_t lease_id, const std::string& secret);
  absl::StatusOr<JobProgress> JobStatus();

 private:
  template <typename Call>
  absl::Status WithRetries(const char* what, absl::Duration patience, Call call);

  const std::string address_;
  const absl::Duration patience_;
  struct Stub;  // the generated stub, kept out of this header
  std::unique_ptr<Stub> stub_;
};

}  // namespace dcasgd

#endif  // DCASGD_COORDINATOR_COORDINATOR_CLIENT_H_
