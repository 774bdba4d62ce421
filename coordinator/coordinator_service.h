#ifndef DCASGD_COORDINATOR_COORDINATOR_SERVICE_H_
#define DCASGD_COORDINATOR_COORDINATOR_SERVICE_H_

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
// message. Thread-safe; `coordinator` must outlive the service.
class DataCoordinatorService final : public DataCoordinatorBase {
 public:
  explicit DataCoordinatorService(DataCoordinator* coordinator) : coordinator_(coordinator) {}

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

  DataCoordinator* const coordinator_;
};

}  // namespace dcasgd

#endif  // DCASGD_COORDINATOR_COORDINATOR_SERVICE_H_
