#ifndef DCASGD_SERVICES_PS_PS_SERVICE_H_
#define DCASGD_SERVICES_PS_PS_SERVICE_H_

#include <atomic>
#include <cstdint>

#include "absl/synchronization/mutex.h"
#include "core/shard_store.h"
#include "dcasgd/v1/ps.grpc.pb.h"
#include "grpcpp/support/byte_buffer.h"
#include "services/ps/checkpointer.h"
#include "services/ps/ps_metrics.h"

namespace dcasgd {

// The generated service with the methods whose requests carry names or
// streams taken as raw bytes (see ParameterShardService).
using ParameterShardBase = v1::ParameterShard::WithCallbackMethod_Heartbeat<
    v1::ParameterShard::WithCallbackMethod_Leave<v1::ParameterShard::WithCallbackMethod_GetStatus<
        v1::ParameterShard::WithCallbackMethod_Checkpoint<
            v1::ParameterShard::WithRawCallbackMethod_DeclareTensors<
                v1::ParameterShard::WithRawCallbackMethod_Join<
                    v1::ParameterShard::WithRawCallbackMethod_Pull<
                        v1::ParameterShard::WithRawCallbackMethod_Push<
                            v1::ParameterShard::WithRawCallbackMethod_PushPull<
                                v1::ParameterShard::Service>>>>>>>>>;

// dcasgd.v1.ParameterShard over one ShardStore, with the gRPC callback API.
// It validates requests at the boundary (names, sizes, first-message rules),
// translates them into ShardStore calls and the results back, and counts
// metrics. Unary calls finish on the call's default reactor; streams are
// small reactors that never block a gRPC thread: a push waiting for an SSGD
// round or the SSP bound finishes later from the thread that releases it.
//
// DeclareTensors, Join, Pull, Push and PushPull receive raw bytes and parse
// them here, so that a malformed message (e.g. a name that is not UTF-8) is
// INVALID_ARGUMENT instead of gRPC's INTERNAL and, in a push stream, is never
// mistaken for the end of the stream (which would apply part of a push).
//
// Error codes follow ps.proto; beyond the store's own checks, a push stream
// with more chunks than this shard owns or more than `max_push_bytes` of
// gradient is RESOURCE_EXHAUSTED with nothing applied.
//
// Thread-safe. `store`, `metrics` and `checkpointer` (null: checkpoints off)
// must outlive the service and the gRPC server it is registered with.
class ParameterShardService final : public ParameterShardBase {
 public:
  ParameterShardService(ShardStore* store, ShardMetrics* metrics, Checkpointer* checkpointer,
                        int64_t max_push_bytes);
  ~ParameterShardService() override;

  // Shutdown, step 1 (before grpc::Server::Shutdown): later pushes fail with
  // UNAVAILABLE and every waiting push is failed now, so no stream is left
  // waiting for a round that will not come. Idempotent.
  void BeginShutdown();

  grpc::ServerUnaryReactor* DeclareTensors(grpc::CallbackServerContext* context,
                                           const grpc::ByteBuffer* request,
                                           grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* Join(grpc::CallbackServerContext* context,
                                 const grpc::ByteBuffer* request,
                                 grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* Heartbeat(grpc::CallbackServerContext* context,
                                      const v1::HeartbeatRequest* request,
                                      v1::HeartbeatResponse* response) override;
  grpc::ServerUnaryReactor* Leave(grpc::CallbackServerContext* context,
                                  const v1::LeaveRequest* request,
                                  v1::LeaveResponse* response) override;
  grpc::ServerWriteReactor<grpc::ByteBuffer>* Pull(grpc::CallbackServerContext* context,
                                                   const grpc::ByteBuffer* request) override;
  grpc::ServerReadReactor<grpc::ByteBuffer>* Push(grpc::CallbackServerContext* context,
                                                  grpc::ByteBuffer* response) override;
  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* PushPull(
      grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* GetStatus(grpc::CallbackServerContext* context,
                                      const v1::GetStatusRequest* request,
                                      v1::ShardStatus* response) override;
  grpc::ServerUnaryReactor* Checkpoint(grpc::CallbackServerContext* context,
                                       const v1::CheckpointRequest* request,
                                       v1::CheckpointResponse* response) override;

 private:
  class PullReactor;
  class PushCollector;
  class PushReactor;
  class PushPullReactor;

  // Finishes a unary call, counting a rejection.
  grpc::ServerUnaryReactor* Respond(grpc::CallbackServerContext* context,
                                    const absl::Status& status);
  absl::Status DoDeclare(const v1::DeclareTensorsRequest& request,
                         v1::DeclareTensorsResponse* response);
  absl::Status DoJoin(const v1::JoinRequest& request, v1::JoinResponse* response);
  // Hands a collected push to the store unless shutting down; `done` runs
  // exactly once (maybe later, on another thread).
  void Submit(WorkerId worker, uint64_t step, std::vector<GradientChunk> chunks, bool pull_after,
              ShardStore::PushDone done, ShardStore::ChunkSink sink = nullptr);
  // Recounts the chunks this shard owns after declarations.
  void RefreshOwnedChunks();

  // Constant after construction.
  ShardStore* const store_;
  ShardMetrics* const metrics_;
  Checkpointer* const checkpointer_;
  const int64_t max_push_bytes_;

  // Chunks this shard owns over all tensors: the cap on chunks per push.
  // Atomic: read by every push stream, rewritten after each Declare.
  std::atomic<uint64_t> owned_chunks_{0};

  // Held shared while a push is handed to the store, exclusively to flip
  // shutting_down_, so no push starts waiting after CancelWaiting ran.
  absl::Mutex submit_mu_;
  bool shutting_down_ ABSL_GUARDED_BY(submit_mu_) = false;
  absl::Mutex declare_mu_;  // serialises Declare + RefreshOwnedChunks
};

}  // namespace dcasgd

#endif  // DCASGD_SERVICES_PS_PS_SERVICE_H_
