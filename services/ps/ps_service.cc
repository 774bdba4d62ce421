#include "services/ps/ps_service.h"

#include <algorithm>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "services/ps/convert.h"

namespace dcasgd {

namespace {

grpc::Status Cancelled() {
  return grpc::Status(grpc::StatusCode::CANCELLED, "the client cancelled the call");
}

// Parses a raw request; INVALID_ARGUMENT when it is not a valid `Message`.
// Consumes `bytes`.
template <typename Message>
absl::Status ParseMessage(grpc::ByteBuffer* bytes, Message* message) {
  if (!grpc::SerializationTraits<Message>::Deserialize(bytes, message).ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot parse ", message->GetTypeName(),
                     ": malformed bytes or a string field that is not valid UTF-8"));
  }
  return absl::OkStatus();
}

template <typename Message>
absl::Status ParseMessage(const grpc::ByteBuffer& bytes, Message* message) {
  grpc::ByteBuffer copy(bytes);  // shares the slices
  return ParseMessage(&copy, message);
}

template <typename Message>
void SerializeMessage(const Message& message, grpc::ByteBuffer* bytes) {
  bool own_buffer = false;
  bytes->Clear();  // the serializer requires an empty buffer
  grpc::SerializationTraits<Message>::Serialize(message, bytes, &own_buffer);
}

}  // namespace

// Accumulates the messages of one push stream, enforcing the boundary rules:
// worker_id in the first message, non-empty UTF-8 tensor names, and the
// chunk-count and byte caps. Values are moved out of the messages, not copied.
class ParameterShardService::PushCollector {
 public:
  explicit PushCollector(ParameterShardService* service) : service_(service) {}

  // What a reactor does after one OnReadDone.
  enum class Step { kReadMore, kComplete, kCancelled, kRejected };

  // Handles OnReadDone(ok): parses and collects the message in buffer(), or,
  // at the end of the stream, checks the push is complete. kRejected sets
  // `*error`. A cancelled stream also ends reads: never apply part of a push.
  Step Read(bool ok, grpc::CallbackServerContext* context, absl::Status* error) {
    if (ok) {
      *error = ParseMessage(&buffer_, &request_);
      if (error->ok()) *error = Add(&request_);
      return error->ok() ? Step::kReadMore : Step::kRejected;
    }
    if (context->IsCancelled()) return Step::kCancelled;
    *error = Complete();
    return error->ok() ? Step::kComplete : Step::kRejected;
  }

  // Where the next StartRead puts its message.
  grpc::ByteBuffer* buffer() { return &buffer_; }

  // Drives OnReadDone(ok) of a Push or PushPull `reactor`: reads on, or
  // finishes it (cancelled; rejected, counted), or returns true when the push
  // is complete and must be submitted.
  template <typename Reactor>
  bool ReadDone(Reactor* reactor, bool ok, grpc::CallbackServerContext* context) {
    absl::Status error;
    switch (Read(ok, context, &error)) {
      case Step::kReadMore:
        reactor->StartRead(buffer());
        return false;
      case Step::kCancelled:
        reactor->Finish(Cancelled());
        return false;
      case Step::kRejected:
        service_->metrics_->CountRejected(error.code());
        reactor->Finish(ToGrpcStatus(error));
        return false;
      case Step::kComplete:
        return true;
    }
    return false;
  }

  absl::Status Add(v1::PushRequest* message) {
    if (!started_) {
      started_ = true;
      worker_ = message->worker_id();
      step_ = message->step();
      if (worker_ == 0) {
        return absl::InvalidArgumentError(
            "the first PushRequest of a stream must carry the worker_id returned by Join");
      }
    }
    v1::Chunk* gradient = message->mutable_gradient();
    service_->metrics_->AddReceivedBytes(gradient->values().size());
    if (absl::Status s = ValidateName("gradient chunk tensor name", gradient->tensor()); !s.ok()) {
      return s;
    }
    // Unknown tensors are left to the store (NOT_FOUND), so the cap is at
    // least one chunk.
    const uint64_t max_chunks =
        std::max<uint64_t>(1, service_->owned_chunks_.load(std::memory_order_acquire));
    if (chunks_.size() + 1 > max_chunks) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "the push carries more than the %d chunks this shard owns; send each chunk once, "
          "to its owning shard",
          max_chunks));
    }
    bytes_ += gradient->values().size();
    if (bytes_ > static_cast<uint64_t>(service_->max_push_bytes_)) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "the push carries more than %d gradient bytes (the server's --max_push_bytes)",
          service_->max_push_bytes_));
    }
    GradientChunk& chunk = chunks_.emplace_back();
    chunk.tensor.swap(*gradient->mutable_tensor());
    chunk.chunk_index = gradient->chunk_index();
    chunk.values.swap(*gradient->mutable_values());
    return absl::OkStatus();
  }

  // After the client half-closed.
  absl::Status Complete() const {
    if (!started_) {
      return absl::InvalidArgumentError(
          "the push stream carried no message; send at least one gradient chunk");
    }
    return absl::OkStatus();
  }

  WorkerId worker() const { return worker_; }
  uint64_t step() const { return step_; }
  std::vector<GradientChunk> TakeChunks() { return std::move(chunks_); }

 private:
  ParameterShardService* const service_;
  bool started_ = false;
  WorkerId worker_ = 0;
  uint64_t step_ = 0;
  uint64_t bytes_ = 0;
  std::vector<GradientChunk> chunks_;
  grpc::ByteBuffer buffer_;
  v1::PushRequest request_;
};

// Pull: plans the chunks once, then reads and writes one chunk per message.
class ParameterShardService::PullReactor final : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
 public:
  PullReactor(ParameterShardService* service, const grpc::ByteBuffer& raw_request)
      : service_(service) {
    v1::PullRequest request;
    if (absl::Status s = ParseMessage(raw_request, &request); !s.ok()) {
      Reject(s);
      return;
    }
    worker_ = request.worker_id();
    std::vector<std::string> names;
    names.reserve(request.tensors_size());
    for (const std::string& name : request.tensors()) {
      if (absl::Status s = ValidateName("pulled tensor name", name); !s.ok()) {
        Reject(s);
        return;
      }
      names.push_back(name);
    }
    absl::StatusOr<std::vector<ChunkRef>> plan = service_->store_->PlanPull(worker_, names);
    if (!plan.ok()) {
      Reject(plan.status());
      return;
    }
    plan_ = *std::move(plan);
    service_->metrics_->CountPull();
    NextWrite();
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      Finish(Cancelled());
      return;
    }
    NextWrite();
  }

  void OnDone() override { delete this; }

 private:
  void NextWrite() {
    if (next_ == plan_.size()) {
      Finish(grpc::Status::OK);
      return;
    }
    const ChunkRef& ref = plan_[next_++];
    v1::Chunk* chunk = response_.mutable_chunk();
    chunk->set_tensor(*ref.tensor);
    chunk->set_chunk_index(ref.chunk_index);
    response_.set_version(service_->store_->ReadChunk(worker_, ref, chunk->mutable_values()));
    service_->metrics_->AddSentBytes(chunk->values().size());
    SerializeMessage(response_, &bytes_);
    StartWrite(&bytes_);
  }

  void Reject(const absl::Status& status) {
    service_->metrics_->CountRejected(status.code());
    Finish(ToGrpcStatus(status));
  }

  ParameterShardService* const service_;
  WorkerId worker_ = 0;
  std::vector<ChunkRef> plan_;
  size_t next_ = 0;
  v1::PullResponse response_;
  grpc::ByteBuffer bytes_;
};

// Push: collects every chunk until the client half-closes, then submits the
// push; the store's callback finishes the call, maybe later on another
// thread (SSGD rounds, SSP waits).
class ParameterShardService::PushReactor final : public grpc::ServerReadReactor<grpc::ByteBuffer> {
 public:
  PushReactor(ParameterShardService* service, grpc::CallbackServerContext* context,
              grpc::ByteBuffer* response)
      : service_(service), context_(context), response_(response), collector_(service) {
    StartRead(collector_.buffer());
  }

  void OnReadDone(bool ok) override {
    if (!collector_.ReadDone(this, ok, context_)) return;
    service_->Submit(collector_.worker(), collector_.step(), collector_.TakeChunks(),
                     /*pull_after=*/false, [this](absl::StatusOr<PushResult> result) {
                       if (!result.ok()) {
                         Reject(result.status());
                         return;
                       }
                       service_->metrics_->ObservePush(*result);
                       v1::PushResponse response;
                       response.set_version(result->version);
                       response.set_staleness(result->staleness);
                       SerializeMessage(response, response_);
                       Finish(grpc::Status::OK);
                     });
  }

  void OnDone() override { delete this; }

 private:
  void Reject(const absl::Status& status) {
    service_->metrics_->CountRejected(status.code());
    Finish(ToGrpcStatus(status));
  }

  ParameterShardService* const service_;
  grpc::CallbackServerContext* const context_;
  grpc::ByteBuffer* const response_;
  PushCollector collector_;
};

// PushPull: like Push; then the update runs on the thread that saw the
// half-close and hands each updated chunk to this reactor at once, so chunk i
// is on the wire while chunk i+1 is updated (the client never waits for the
// whole update). One write is outstanding at a time; the rest queue.
class ParameterShardService::PushPullReactor final
    : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  PushPullReactor(ParameterShardService* service, grpc::CallbackServerContext* context)
      : service_(service), context_(context), collector_(service) {
    StartRead(collector_.buffer());
  }

  void OnReadDone(bool ok) override {
    if (!collector_.ReadDone(this, ok, context_)) return;
    service_->Submit(
        collector_.worker(), collector_.step(), collector_.TakeChunks(), /*pull_after=*/true,
        [this](absl::StatusOr<PushResult> result) { OnApplied(std::move(result)); },
        [this](AppliedChunk chunk) { Enqueue(std::move(chunk)); });
  }

  void OnWriteDone(bool ok) override {
    grpc::ByteBuffer* next = nullptr;
    std::optional<grpc::Status> finish;
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      if (!ok) cancelled_ = true;
      next = TakeNextWriteLocked();
      if (next == nullptr) finish = TakeFinishLocked();
    }
    if (next != nullptr) StartWrite(next);
    if (finish.has_value()) Finish(*finish);
  }

  void OnDone() override { delete this; }

 private:
  // On the applying thread, with store locks held: serialise and queue.
  void Enqueue(AppliedChunk applied) {
    service_->metrics_->AddSentBytes(applied.values.values.size());
    v1::PullResponse response;
    v1::Chunk* chunk = response.mutable_chunk();
    chunk->mutable_tensor()->swap(applied.values.tensor);
    chunk->set_chunk_index(applied.values.chunk_index);
    chunk->mutable_values()->swap(applied.values.values);
    response.set_version(applied.version);
    response.set_staleness(applied.staleness);
    auto bytes = std::make_unique<grpc::ByteBuffer>();
    SerializeMessage(response, bytes.get());
    grpc::ByteBuffer* next = nullptr;
    {
      absl::MutexLock lock(&mu_);
      if (cancelled_) return;
      ready_.push_back(std::move(bytes));
      next = TakeNextWriteLocked();
    }
    if (next != nullptr) StartWrite(next);
  }

  void OnApplied(absl::StatusOr<PushResult> result) {
    if (result.ok()) {
      service_->metrics_->ObservePush(*result);
      service_->metrics_->CountPull();
    } else {
      service_->metrics_->CountRejected(result.status().code());
    }
    std::optional<grpc::Status> finish;
    {
      absl::MutexLock lock(&mu_);
      applied_ = true;
      final_status_ = result.ok() ? grpc::Status::OK : ToGrpcStatus(result.status());
      if (!writing_) finish = TakeFinishLocked();
    }
    if (finish.has_value()) Finish(*finish);
  }

  // The next queued message to write, if no write is outstanding.
  grpc::ByteBuffer* TakeNextWriteLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (writing_ || cancelled_ || ready_.empty()) return nullptr;
    writing_ = true;
    in_flight_ = std::move(ready_.front());
    ready_.pop_front();
    return in_flight_.get();
  }

  // The status to finish with, once: after the update and every write ended.
  std::optional<grpc::Status> TakeFinishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_ || !applied_ || writing_ || (!ready_.empty() && !cancelled_)) {
      return std::nullopt;
    }
    finished_ = true;
    return cancelled_ ? Cancelled() : final_status_;
  }

  ParameterShardService* const service_;
  grpc::CallbackServerContext* const context_;
  // Reads happen before the update starts; only gRPC's read callbacks touch it.
  PushCollector collector_;

  // Shared by the applying thread (Enqueue, OnApplied) and gRPC's write
  // callbacks.
  absl::Mutex mu_;
  std::deque<std::unique_ptr<grpc::ByteBuffer>> ready_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<grpc::ByteBuffer> in_flight_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool applied_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status final_status_ ABSL_GUARDED_BY(mu_);
};

ParameterShardService::ParameterShardService(ShardStore* store, ShardMetrics* metrics,
                                             Checkpointer* checkpointer, int64_t max_push_bytes)
    : store_(store),
      metrics_(metrics),
      checkpointer_(checkpointer),
      max_push_bytes_(max_push_bytes) {
  absl::MutexLock lock(&declare_mu_);
  RefreshOwnedChunks();
}

ParameterShardService::~ParameterShardService() = default;

void ParameterShardService::BeginShutdown() {
  {
    absl::MutexLock lock(&submit_mu_);
    shutting_down_ = true;
  }
  store_->CancelWaiting();
}

void ParameterShardService::Submit(WorkerId worker, uint64_t step,
                                   std::vector<GradientChunk> chunks, bool pull_after,
                                   ShardStore::PushDone done, ShardStore::ChunkSink sink) {
  absl::ReaderMutexLock lock(&submit_mu_);
  if (shutting_down_) {
    done(absl::UnavailableError("the shard is shutting down; retry when it is back"));
    return;
  }
  store_->SubmitPush(worker, step, std::move(chunks), pull_after, std::move(done), std::move(sink));
}

void ParameterShardService::RefreshOwnedChunks() {
  uint64_t owned = 0;
  for (const TensorSpec& spec : store_->ListTensors()) owned += store_->OwnedChunks(spec.name);
  owned_chunks_.store(owned, std::memory_order_release);
}

grpc::ServerUnaryReactor* ParameterShardService::Respond(grpc::CallbackServerContext* context,
                                                         const absl::Status& status) {
  if (!status.ok()) metrics_->CountRejected(status.code());
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
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
  absl::StatusOr<std::vector<TensorSpec>> declared;
  {
    absl::MutexLock lock(&declare_mu_);
    declared = store_->Declare(std::move(specs));
    if (declared.ok()) RefreshOwnedChunks();
  }
  if (!declared.ok()) return declared.status();
  if (checkpointer_ != nullptr) checkpointer_->NoteDeclared();
  for (const TensorSpec& spec : *declared) TensorSpecToProto(spec, response->add_tensors());
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* ParameterShardService::DeclareTensors(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  v1::DeclareTensorsRequest parsed;
  absl::Status status = ParseMessage(*request, &parsed);
  v1::DeclareTensorsResponse reply;
  if (status.ok()) status = DoDeclare(parsed, &reply);
  if (status.ok()) SerializeMessage(reply, response);
  return Respond(context, status);
}

absl::Status ParameterShardService::DoJoin(const v1::JoinRequest& request,
                                           v1::JoinResponse* response) {
  if (absl::Status s = ValidateName("worker_name", request.worker_name()); !s.ok()) return s;
  absl::StatusOr<JoinResult> joined = store_->Join(request.worker_name());
  if (!joined.ok()) return joined.status();
  response->set_worker_id(joined->worker_id);
  response->set_lease_ms(absl::ToInt64Milliseconds(joined->lease));
  response->set_shard_index(store_->config().shard_index);
  response->set_shard_count(store_->config().shard_count);
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* ParameterShardService::Join(grpc::CallbackServerContext* context,
                                                      const grpc::ByteBuffer* request,
                                                      grpc::ByteBuffer* response) {
  v1::JoinRequest parsed;
  absl::Status status = ParseMessage(*request, &parsed);
  v1::JoinResponse reply;
  if (status.ok()) status = DoJoin(parsed, &reply);
  if (status.ok()) SerializeMessage(reply, response);
  return Respond(context, status);
}

grpc::ServerUnaryReactor* ParameterShardService::Heartbeat(grpc::CallbackServerContext* context,
                                                           const v1::HeartbeatRequest* request,
                                                           v1::HeartbeatResponse* response) {
  absl::Status status = store_->Heartbeat(request->worker_id());
  if (status.ok()) response->set_lease_ms(absl::ToInt64Milliseconds(store_->config().lease));
  return Respond(context, status);
}

grpc::ServerUnaryReactor* ParameterShardService::Leave(grpc::CallbackServerContext* context,
                                                       const v1::LeaveRequest* request,
                                                       v1::LeaveResponse* response) {
  return Respond(context, store_->Leave(request->worker_id()));
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* ParameterShardService::Pull(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request) {
  return new PullReactor(this, *request);
}

grpc::ServerReadReactor<grpc::ByteBuffer>* ParameterShardService::Push(
    grpc::CallbackServerContext* context, grpc::ByteBuffer* response) {
  return new PushReactor(this, context, response);
}

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* ParameterShardService::PushPull(
    grpc::CallbackServerContext* context) {
  return new PushPullReactor(this, context);
}

grpc::ServerUnaryReactor* ParameterShardService::GetStatus(grpc::CallbackServerContext* context,
                                                           const v1::GetStatusRequest* request,
                                                           v1::ShardStatus* response) {
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
      absl::StrCat(config.optimizer.DebugString(), " sync=", SyncModeName(config.sync)));
  for (const TensorSpec& spec : store_->ListTensors()) {
    v1::TensorStatus* tensor = response->add_tensors();
    TensorSpecToProto(spec, tensor->mutable_spec());
    tensor->set_owned_chunks(store_->OwnedChunks(spec.name));
  }
  response->set_checkpoint_version(checkpointer_ == nullptr ? 0 : checkpointer_->last_version());
  return Respond(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* ParameterShardService::Checkpoint(grpc::CallbackServerContext* context,
                                                            const v1::CheckpointRequest* request,
                                                            v1::CheckpointResponse* response) {
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
    response->set_path(info->path);
    response->set_version(info->version);
    response->set_bytes(info->bytes);
    reactor->Finish(grpc::Status::OK);
  });
  return reactor;
}

}  // namespace dcasgd
