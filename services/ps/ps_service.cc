#include "services/ps/ps_service.h"

#include <algorithm>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "wire/raw_message.h"
#include "wire/status.h"
#include "wire/tensor_spec.h"

namespace dcasgd {

ParameterShardService::ParameterShardService(ShardStore* store, ShardMetrics* metrics,
                                             Checkpointer* checkpointer, int64_t max_push_bytes,
                                             int64_t max_message_bytes, InflightBudget* inflight,
                                             const auth::Authorizer* authorizer)
    : store_(store),
      metrics_(metrics),
      checkpointer_(checkpointer),
      max_push_bytes_(max_push_bytes),
      max_message_bytes_(max_message_bytes),
      inflight_(inflight),
      authorizer_(authorizer) {}

absl::Status ParameterShardService::Authorize(grpc::CallbackServerContext* context,
                                              auth::Action action) const {
  if (authorizer_ != nullptr) {
    if (absl::Status s = authorizer_->Authorize(*context, action); !s.ok()) return s;
  }
  return Admit(context, action);
}

absl::Status ParameterShardService::Admit(grpc::CallbackServerContext* context,
                                          auth::Action action) const {
  if (member_ == nullptr || action == auth::Action::kGetStatus) return absl::OkStatus();
  return member_->Admit(context);
}

void ParameterShardService::AfterCommit(absl::AnyInvocable<void(absl::Status)> finish) {
  if (member_ == nullptr) {
    finish(absl::OkStatus());
    return;
  }
  // The store sequenced the caller's entries before returning to it, so
  // its last seq now covers them.
  member_->WhenCommitted(store_->last_seq(), std::move(finish));
}

grpc::ServerUnaryReactor* ParameterShardService::RespondCommitted(
    grpc::CallbackServerContext* context, const absl::Status& status) {
  if (!status.ok() || member_ == nullptr) return Respond(context, status);
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  AfterCommit([this, reactor](absl::Status committed) {
    if (!committed.ok()) metrics_->CountRejected(committed.code());
    reactor->Finish(ToGrpcStatus(committed));
  });
  return reactor;
}

absl::StatusOr<auth::Caller> ParameterShardService::Authenticate(
    grpc::CallbackServerContext* context) const {
  if (authorizer_ == nullptr) return auth::Caller{auth::Role::kAdmin, "anonymous"};
  return authorizer_->Authenticate(*context);
}

ParameterShardService::~ParameterShardService() = default;

void ParameterShardService::BeginShutdown() {
  {
    absl::MutexLock lock(&submit_mu_);
    shutting_down_ = true;
  }
  store_->CancelWaiting();
}

void ParameterShardService::Submit(WorkerId worker, uint64_t step, uint64_t base_step,
                                   std::vector<GradientChunk> chunks, bool pull_after,
                                   ShardStore::PushDone done, ShardStore::ChunkSink sink) {
  absl::ReaderMutexLock lock(&submit_mu_);
  if (shutting_down_) {
    done(absl::UnavailableError("the shard is shutting down; retry when it is back"));
    return;
  }
  if (member_ != nullptr) {
    // Checked again per push: an Exchange stream opened while this member
    // was primary carries rounds after it stopped being one.
    if (absl::Status s = member_->Admit(nullptr); !s.ok()) {
      done(s);
      return;
    }
    // The final answer (a Push's response, a PushPull's or round's status)
    // once the push's entry is committed; a refused push changed nothing.
    done = [this, inner = std::move(done)](absl::StatusOr<PushResult> result) mutable {
      if (!result.ok()) {
        inner(std::move(result));
        return;
      }
      AfterCommit(
          [inner = std::move(inner), result = std::move(result)](absl::Status committed) mutable {
            if (committed.ok()) {
              inner(std::move(result));
            } else {
              inner(std::move(committed));
            }
          });
    };
  }
  store_->SubmitPush(worker, step, std::move(chunks), pull_after, std::move(done), std::move(sink),
                     base_step);
}

grpc::ServerUnaryReactor* ParameterShardService::Respond(grpc::CallbackServerContext* context,
                                                         const absl::Status& status) {
  if (!status.ok()) metrics_->CountRejected(status.code());
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

template <typename Request, typename Response, typename Handler>
grpc::ServerUnaryReactor* ParameterShardService::Unary(grpc::CallbackServerContext* context,
                                                       const grpc::ByteBuffer* raw,
                                                       grpc::ByteBuffer* raw_response,
                                                       Handler handle, bool commit) {
  Request request;
  Response response;
  absl::Status status = ParseMessage(*raw, &request);
  if (status.ok()) status = handle(request, &response);
  if (status.ok()) SerializeMessage(response, raw_response);
  return commit ? RespondCommitted(context, status) : Respond(context, status);
}

absl::Status ParameterShardService::DoDeclare(const v1::DeclareTensorsRequest& request,
                                              v1::DeclareTensorsResponse* response) {
  std::vector<TensorSpec> specs;
  specs.reserve(request.tensors_size());
  for (const v1::TensorSpec& proto : request.tensors()) {
    absl::StatusOr<TensorSpec> spec = TensorSpecFromProto(proto);
    if (!spec.ok()) return spec.status();
    specs.push_back(*std::move(spec));
  }
  absl::StatusOr<std::vector<TensorSpec>> declared = store_->Declare(std::move(specs));
  if (!declared.ok()) return declared.status();
  if (checkpointer_ != nullptr) checkpointer_->NoteDeclared();
  for (const TensorSpec& spec : *declared) TensorSpecToProto(spec, response->add_tensors());
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* ParameterShardService::DeclareTensors(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  if (absl::Status s = Authorize(context, auth::Action::kDeclareTensors); !s.ok()) {
    return Respond(context, s);
  }
  return Unary<v1::DeclareTensorsRequest, v1::DeclareTensorsResponse>(
      context, request, response,
      [this](const v1::DeclareTensorsRequest& r, v1::DeclareTensorsResponse* out) {
        return DoDeclare(r, out);
      },
      /*commit=*/true);
}

absl::Status ParameterShardService::DoJoin(const v1::JoinRequest& request,
                                           v1::JoinResponse* response) {
  if (absl::Status s = ValidateName("worker_name", request.worker_name()); !s.ok()) return s;
  absl::StatusOr<JoinResult> joined = store_->Join(request.worker_name(), request.pipeline_depth());
  if (!joined.ok()) return joined.status();
  response->set_worker_id(joined->worker_id);
  response->set_session(joined->session);
  response->set_lease_ms(absl::ToInt64Milliseconds(joined->lease));
  response->set_shard_index(store_->config().shard_index);
  response->set_shard_count(store_->config().shard_count);
  response->set_max_message_bytes(static_cast<uint64_t>(max_message_bytes_));
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* ParameterShardService::Join(grpc::CallbackServerContext* context,
                                                      const grpc::ByteBuffer* request,
                                                      grpc::ByteBuffer* response) {
  if (absl::Status s = Authorize(context, auth::Action::kJoin); !s.ok()) {
    return Respond(context, s);
  }
  return Unary<v1::JoinRequest, v1::JoinResponse>(
      context, request, response,
      [this](const v1::JoinRequest& r, v1::JoinResponse* out) { return DoJoin(r, out); },
      /*commit=*/true);
}

grpc::ServerUnaryReactor* ParameterShardService::Heartbeat(grpc::CallbackServerContext* context,
                                                           const grpc::ByteBuffer* request,
                                                           grpc::ByteBuffer* response) {
  if (absl::Status s = Authorize(context, auth::Action::kHeartbeat); !s.ok()) {
    return Respond(context, s);
  }
  return Unary<v1::HeartbeatRequest, v1::HeartbeatResponse>(
      context, request, response,
      [this](const v1::HeartbeatRequest& r, v1::HeartbeatResponse* out) {
        absl::Status status = store_->Authenticate(r.worker_id(), r.session());
        if (status.ok()) status = store_->Heartbeat(r.worker_id());
        if (status.ok()) out->set_lease_ms(absl::ToInt64Milliseconds(store_->config().lease));
        return status;
      });
}

grpc::ServerUnaryReactor* ParameterShardService::Leave(grpc::CallbackServerContext* context,
                                                       const grpc::ByteBuffer* request,
                                                       grpc::ByteBuffer* response) {
  if (absl::Status s = Authorize(context, auth::Action::kLeave); !s.ok()) {
    return Respond(context, s);
  }
  return Unary<v1::LeaveRequest, v1::LeaveResponse>(
      context, request, response,
      [this](const v1::LeaveRequest& r, v1::LeaveResponse*) {
        if (absl::Status s = store_->Authenticate(r.worker_id(), r.session()); !s.ok()) return s;
        return store_->Leave(r.worker_id());
      },
      /*commit=*/true);
}

void ParameterShardService::DoGetStatus(v1::ShardStatus* response) {
  const ShardConfig& config = store_->config();
  const ShardStats stats = store_->Stats();
  response->set_shard_index(config.shard_index);
  response->set_shard_count(config.shard_count);
  response->set_version(stats.version);
  response->set_active_workers(stats.active_workers);
  response->set_weight_bytes(stats.weight_bytes);
  response->set_backup_bytes(stats.backup_bytes);
  response->set_optimizer_state_bytes(stats.optimizer_state_bytes);
  response->set_update_rule(
      absl::StrCat(config.optimizer.DebugString(), " sync=", NameOf(kSyncModeNames, config.sync)));
  response->set_rule(NameOf(kUpdateRuleNames, config.optimizer.rule));
  response->set_sync(NameOf(kSyncModeNames, config.sync));
  for (const TensorSpec& spec : store_->ListTensors()) {
    v1::TensorStatus* tensor = response->add_tensors();
    TensorSpecToProto(spec, tensor->mutable_spec());
    // Explicit initial values can be as large as a message: the status
    // keeps only that they were explicit.
    if (tensor->spec().init().has_values()) tensor->mutable_spec()->mutable_init()->clear_values();
    tensor->set_owned_chunks(store_->OwnedChunks(spec.name));
  }
  response->set_checkpoint_version(checkpointer_ == nullptr ? 0 : checkpointer_->last_version());
  if (member_ != nullptr) member_->FillStatus(response);
}

grpc::ServerUnaryReactor* ParameterShardService::GetStatus(grpc::CallbackServerContext* context,
                                                           const grpc::ByteBuffer* request,
                                                           grpc::ByteBuffer* response) {
  if (absl::Status s = Authorize(context, auth::Action::kGetStatus); !s.ok()) {
    return Respond(context, s);
  }
  return Unary<v1::GetStatusRequest, v1::ShardStatus>(
      context, request, response, [this](const v1::GetStatusRequest&, v1::ShardStatus* out) {
        DoGetStatus(out);
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* ParameterShardService::Checkpoint(grpc::CallbackServerContext* context,
                                                            const grpc::ByteBuffer* request,
                                                            grpc::ByteBuffer* response) {
  if (absl::Status s = Authorize(context, auth::Action::kCheckpoint); !s.ok()) {
    return Respond(context, s);
  }
  v1::CheckpointRequest parsed;
  if (absl::Status s = ParseMessage(*request, &parsed); !s.ok()) return Respond(context, s);
  if (checkpointer_ == nullptr) {
    return Respond(context, absl::FailedPreconditionError(
                                "checkpoints are off: start dcasgd-ps with --checkpoint_dir"));
  }
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  // The write runs on the checkpointer's thread, not on this gRPC thread.
  checkpointer_->RequestWrite([this, reactor, response](absl::StatusOr<CheckpointInfo> info) {
    if (!info.ok()) {
      metrics_->CountRejected(info.status().code());
      reactor->Finish(ToGrpcStatus(info.status()));
      return;
    }
    v1::CheckpointResponse reply;
    reply.set_path(info->path);
    reply.set_version(info->version);
    reply.set_bytes(info->bytes);
    SerializeMessage(reply, response);
    reactor->Finish(grpc::Status::OK);
  });
  return reactor;
}

}  // namespace dcasgd
