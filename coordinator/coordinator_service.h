#ifndef DCASGD_COORDINATOR_COORDINATOR_SERVICE_H_
#define DCASGD_COORDINATOR_COORDINATOR_SERVICE_H_

#include <functional>
#include <utility>

#include "auth/authorizer.h"
#include "coordinator/data_coordinator.h"
#include "dcasgd/v1/coordinator.grpc.pb.h"

namespace dcasgd {

// The generated service with every method taking raw bytes.
using DataCoordinatorBase = v1::DataCoordinator::WithRawCallbackMethod_AcquireDataShard<
    v1::DataCoordinator::WithRawCallbackMethod_RenewDataLease<
        v1::DataCoordinator::WithRawCallbackMethod_CompleteDataShard<
            v1::DataCoordinator::WithRawCallbackMethod_GetJobStatus<
                v1::DataCoordinator::Service>>>>;

// dcasgd.v1.DataCoordinator over a core DataCoordinator (hosted by shard 0).
// Unary callback handlers that finish on the default reactor; the core calls
// take one mutex briefly (and, for changes, the time to save the schedule
// when the coordinator has a saver: it saves before a change takes effect).
// Requests are parsed here, so a malformed one is INVALID_ARGUMENT with a
// message. Every call is first checked by `authorizer` (auth/roles.h: the
// lease calls need role worker, GetJobStatus role reader); null: no checks.
// After the caller's check, `gate` (if set) may refuse a call: the shard
// hosting the coordinator is a member of a replicated pair that is not
// primary now (UNAVAILABLE with its role, services/ps/replication_member.h).
// Thread-safe; `coordinator` and `authorizer` must outlive the service.
class DataCoordinatorService final : public DataCoordinatorBase {
 public:
  using Gate = std::function<absl::Status(grpc::CallbackServerContext*)>;

  explicit DataCoordinatorService(DataCoordinator* coordinator,
                                  const auth::Authorizer* authorizer = nullptr, Gate gate = nullptr)
      : coordinator_(coordinator), authorizer_(authorizer), gate_(std::move(gate)) {}

  grpc::ServerUnaryReactor* AcquireDataShard(grpc::CallbackServerContext* context,
                                             const grpc::ByteBuffer* request,
                                             grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* RenewDataLease(grpc::CallbackServerContext* context,
                                           const grpc::ByteBuffer* request,
                                           grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* CompleteDataShard(grpc::CallbackServerContext* context,
                                              const grpc::ByteBuffer* request,
                                              grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* GetJobStatus(grpc::CallbackServerContext* context,
                                         const grpc::ByteBuffer* request,
                                         grpc::ByteBuffer* response) override;

 private:
  absl::Status DoAcquire(const v1::AcquireDataShardRequest& request,
                         v1::AcquireDataShardResponse* response);

  // OK when the caller of `context` may do `action` (or checks are off).
  absl::Status Authorize(grpc::CallbackServerContext* context, auth::Action action) const;

  DataCoordinator* const coordinator_;
  const auth::Authorizer* const authorizer_;
  const Gate gate_;
};

}  // namespace dcasgd

#endif  // DCASGD_COORDINATOR_COORDINATOR_SERVICE_H_
