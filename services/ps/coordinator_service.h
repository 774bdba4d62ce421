#ifndef DCASGD_SERVICES_PS_COORDINATOR_SERVICE_H_
#define DCASGD_SERVICES_PS_COORDINATOR_SERVICE_H_

#include <functional>
#include <string>

#include "absl/synchronization/mutex.h"
#include "core/data_coordinator.h"
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
// take one mutex briefly and never block. Requests are parsed here, so a
// malformed one is INVALID_ARGUMENT with a message. Thread-safe;
// `coordinator` must outlive the service.
class DataCoordinatorService final : public DataCoordinatorBase {
 public:
  // Writes the coordinator's SerializeProgress() text durably.
  using ProgressSaver = std::function<absl::Status(const std::string&)>;

  // With `save_progress`, the durable progress is written after every call
  // that changed it (the job fixed, a data shard done), before the reply.
  explicit DataCoordinatorService(DataCoordinator* coordinator,
                                  ProgressSaver save_progress = nullptr)
      : coordinator_(coordinator), save_progress_(std::move(save_progress)) {}

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

  // Saves the progress if it changed since the last save.
  absl::Status SaveIfChanged();

  DataCoordinator* const coordinator_;
  const ProgressSaver save_progress_;
  // Serialises saves; the generation the file holds.
  absl::Mutex save_mu_;
  uint64_t saved_generation_ ABSL_GUARDED_BY(save_mu_) = 0;
};

}  // namespace dcasgd

#endif  // DCASGD_SERVICES_PS_COORDINATOR_SERVICE_H_
