#ifndef DCASGD_SERVICES_PS_COORDINATOR_SERVICE_H_
#define DCASGD_SERVICES_PS_COORDINATOR_SERVICE_H_

#include "core/data_coordinator.h"
#include "dcasgd/v1/coordinator.grpc.pb.h"

namespace dcasgd {

// dcasgd.v1.DataCoordinator over a core DataCoordinator (hosted by shard 0).
// Unary callback handlers that finish on the default reactor; the core calls
// take one mutex briefly (and, for changes, the time to save the schedule
// when the coordinator has a saver). Thread-safe; `coordinator` must outlive
// the service.
class DataCoordinatorService final : public v1::DataCoordinator::CallbackService {
 public:
  explicit DataCoordinatorService(DataCoordinator* coordinator) : coordinator_(coordinator) {}

  grpc::ServerUnaryReactor* AcquireDataShard(grpc::CallbackServerContext* context,
                                             const v1::AcquireDataShardRequest* request,
                                             v1::AcquireDataShardResponse* response) override;
  grpc::ServerUnaryReactor* RenewDataLease(grpc::CallbackServerContext* context,
                                           const v1::RenewDataLeaseRequest* request,
                                           v1::RenewDataLeaseResponse* response) override;
  grpc::ServerUnaryReactor* CompleteDataShard(grpc::CallbackServerContext* context,
                                              const v1::CompleteDataShardRequest* request,
                                              v1::CompleteDataShardResponse* response) override;
  grpc::ServerUnaryReactor* GetJobStatus(grpc::CallbackServerContext* context,
                                         const v1::GetJobStatusRequest* request,
                                         v1::JobStatus* response) override;

 private:
  DataCoordinator* const coordinator_;
};

}  // namespace dcasgd

#endif  // DCASGD_SERVICES_PS_COORDINATOR_SERVICE_H_
