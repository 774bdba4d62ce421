#ifndef DCASGD_SERVICES_PS_PS_SERVICE_H_
#define DCASGD_SERVICES_PS_PS_SERVICE_H_

#include <atomic>
#include <cstdint>

#include "absl/synchronization/mutex.h"
#include "auth/authorizer.h"
#include "core/shard_store.h"
#include "dcasgd/v1/ps.grpc.pb.h"
#include "grpcpp/support/byte_buffer.h"
#include "services/ps/checkpointer.h"
#include "services/ps/inflight_budget.h"
#include "services/ps/ps_metrics.h"
#include "services/ps/replication_member.h"

namespace dcasgd {

// The generated service with every method taking raw bytes: requests are
// parsed here (see ParameterShardService).
using ParameterShardBase = v1::ParameterShard::WithRawCallbackMethod_Heartbeat<
    v1::ParameterShard::WithRawCallbackMethod_Leave<
        v1::ParameterShard::WithRawCallbackMethod_GetStatus<
            v1::ParameterShard::WithRawCallbackMethod_Checkpoint<
                v1::ParameterShard::WithRawCallbackMethod_DeclareTensors<
                    v1::ParameterShard::WithRawCallbackMethod_Join<
                        v1::ParameterShard::WithRawCallbackMethod_Pull<
                            v1::ParameterShard::WithRawCallbackMethod_Push<
                                v1::ParameterShard::WithRawCallbackMethod_PushPull<
                                    v1::ParameterShard::WithRawCallbackMethod_Exchange<
                                        v1::ParameterShard::Service>>>>>>>>>>;

// dcasgd.v1.ParameterShard over one ShardStore, with the gRPC callback API.
// It validates requests at the boundary (names, sizes, first-message rules),
// translates them into ShardStore calls and the results back, and counts
// metrics. Unary calls finish on the call's default reactor; streams are
// small reactors that never block a gRPC thread: a push waiting for an SSGD
// round, the SSP bound or room in the in-flight budget finishes later from
// the thread that releases it.
//
// Worker sessions: Heartbeat, Leave, a Pull with a worker id and the first
// message of a push are refused (UNAUTHENTICATED, nothing done) unless they
// carry the session the worker's Join returned (ShardStore::Authenticate).
//
// Every method receives raw bytes and parses them here, so that a malformed
// message (random bytes, a truncated field, a name that is not UTF-8) is
// INVALID_ARGUMENT with a message instead of gRPC's bare UNIMPLEMENTED or
// INTERNAL and, in a push stream, is never mistaken for its end.
//
// A push is all or nothing (docs/security.md). Its first message carries the
// worker id and its session, checked before anything is buffered, and the
// chunk count; it is
// applied only when exactly that many chunks arrived, the client half-closed,
// and the stream is still alive (initial metadata is sent before the update,
// and a stream that was cancelled, reset or failed, e.g. by a message above
// the size limit, cannot send it). Error codes follow ps.proto; a push that
// announces more chunks than this shard owns, or carries more gradient bytes
// than its chunks can hold or than `max_push_bytes`, is RESOURCE_EXHAUSTED
// with nothing applied.
//
// Memory in flight: every push stream reserves, once its first message told
// how many chunks follow, the bytes those chunks can hold at most (which
// also covers its PushPull replies), and every pull message its chunk's
// bytes, from `inflight`; a stream that does not fit waits without reading
// or writing until others release their bytes.
//
// Callers: every call is first checked by `authorizer` (auth/roles.h), before
// its request is parsed (a Pull's role depends on its worker id, so it is
// authenticated first and its role checked once parsed); a refused call is
// UNAUTHENTICATED or PERMISSION_DENIED and touches nothing. Null: no checks.
//
// A member of a replicated pair (AttachReplication): every call but GetStatus
// first passes ReplicationMember::Admit (a member that is not primary answers
// UNAVAILABLE with its role), and the final answer of a call that changes
// the state (DeclareTensors, Join, Leave, a Pull with a worker id, a Push, a
// PushPull, an Exchange round) waits until the store's last seq after the
// change is committed (ReplicationMember::WhenCommitted): at once when the
// primary is alone, else once the replica acknowledged it.
//
// Thread-safe. `store`, `metrics`, `checkpointer` (null: checkpoints off),
// `inflight` and `authorizer` must outlive the service and the gRPC server it
// is registered with.
class ParameterShardService final : public ParameterShardBase {
 public:
  ParameterShardService(ShardStore* store, ShardMetrics* metrics, Checkpointer* checkpointer,
                        int64_t max_push_bytes, int64_t max_message_bytes, InflightBudget* inflight,
                        const auth::Authorizer* authorizer = nullptr);
  ~ParameterShardService() override;

  // Makes the service a member's (see the class comment). Call once, before
  // serving; `member` must outlive the service.
  void AttachReplication(ReplicationMember* member) { member_ = member; }

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
                                      const grpc::ByteBuffer* request,
                                      grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* Leave(grpc::CallbackServerContext* context,
                                  const grpc::ByteBuffer* request,
                                  grpc::ByteBuffer* response) override;
  grpc::ServerWriteReactor<grpc::ByteBuffer>* Pull(grpc::CallbackServerContext* context,
                                                   const grpc::ByteBuffer* request) override;
  grpc::ServerReadReactor<grpc::ByteBuffer>* Push(grpc::CallbackServerContext* context,
                                                  grpc::ByteBuffer* response) override;
  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* PushPull(
      grpc::CallbackServerContext* context) override;
  // ps_exchange.cc.
  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* Exchange(
      grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* GetStatus(grpc::CallbackServerContext* context,
                                      const grpc::ByteBuffer* request,
                                      grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* Checkpoint(grpc::CallbackServerContext* context,
                                       const grpc::ByteBuffer* request,
                                       grpc::ByteBuffer* response) override;

 private:
  class PullReactor;
  template <typename Base>
  class PushStream;
  class PushReactor;
  class PushPullReactor;
  class ExchangeReactor;

  // OK when the caller of `context` may do `action` (or checks are off).
  absl::Status Authorize(grpc::CallbackServerContext* context, auth::Action action) const;
  // OK when this member serves `action` now (always without replication).
  absl::Status Admit(grpc::CallbackServerContext* context, auth::Action action) const;
  // Who calls (a full-rights caller when checks are off).
  absl::StatusOr<auth::Caller> Authenticate(grpc::CallbackServerContext* context) const;

  // Finishes a unary call, counting a rejection.
  grpc::ServerUnaryReactor* Respond(grpc::CallbackServerContext* context,
                                    const absl::Status& status);
  // As Respond, once the changes sequenced so far are committed (a member
  // of a pair; at once otherwise or on error).
  grpc::ServerUnaryReactor* RespondCommitted(grpc::CallbackServerContext* context,
                                             const absl::Status& status);
  // Runs `finish` with OK once the changes sequenced so far are committed,
  // or with why they cannot be (at once without replication).
  void AfterCommit(absl::AnyInvocable<void(absl::Status)> finish);
  // Parses `raw` as a Request, runs `handle`, serialises its response into
  // `raw_response` and finishes the call (after its commit, with `commit`).
  template <typename Request, typename Response, typename Handler>
  grpc::ServerUnaryReactor* Unary(grpc::CallbackServerContext* context, const grpc::ByteBuffer* raw,
                                  grpc::ByteBuffer* raw_response, Handler handle,
                                  bool commit = false);
  absl::Status DoDeclare(const v1::DeclareTensorsRequest& request,
                         v1::DeclareTensorsResponse* response);
  absl::Status DoJoin(const v1::JoinRequest& request, v1::JoinResponse* response);
  void DoGetStatus(v1::ShardStatus* response);
  // Hands a collected push to the store unless shutting down; `done` runs
  // exactly once (maybe later, on another thread). `base_step` as
  // ShardStore::SubmitPush.
  void Submit(WorkerId worker, uint64_t step, uint64_t base_step, std::vector<GradientChunk> chunks,
              bool pull_after, ShardStore::PushDone done, ShardStore::ChunkSink sink = nullptr);

  // Constant after construction.
  ShardStore* const store_;
  ShardMetrics* const metrics_;
  Checkpointer* const checkpointer_;
  const int64_t max_push_bytes_;
  const int64_t max_message_bytes_;  // the server's receive limit, told at Join
  InflightBudget* const inflight_;
  const auth::Authorizer* const authorizer_;
  // Set once by AttachReplication, before serving; null: a shard alone.
  ReplicationMember* member_ = nullptr;

  // Held shared while a push is handed to the store, exclusively to flip
  // shutting_down_, so no push starts waiting after CancelWaiting ran.
  absl::Mutex submit_mu_;
  bool shutting_down_ ABSL_GUARDED_BY(submit_mu_) = false;
};

}  // namespace dcasgd

#endif  // DCASGD_SERVICES_PS_PS_SERVICE_H_
