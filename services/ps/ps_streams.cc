// ParameterShardService, the streaming RPCs: Pull, Push and PushPull
// (services/ps/ps_service.h). The unary RPCs are in ps_service.cc.
#include <algorithm>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "services/ps/cancel_fence.h"
#include "services/ps/ps_service.h"
#include "services/ps/push_collector.h"
#include "wire/chunk_values.h"
#include "wire/raw_message.h"
#include "wire/status.h"
#include "wire/tensor_spec.h"

namespace dcasgd {

namespace {

grpc::Status Cancelled() {
  return grpc::Status(grpc::StatusCode::CANCELLED, "the client cancelled the call");
}

}  // namespace

// One Push or PushPull stream up to the moment its push is handed to the
// store (`Base` is the gRPC reactor type). It reads and checks every message
// (first-message rules, names, chunk count, bytes), reserves the push's bytes
// in the in-flight budget (waiting without reading when the budget is full),
// and, after the client half-closed with exactly the announced chunks, sends
// initial metadata as the proof that the stream is still alive: only then
// does Submit() (the subclass) run the update. Any other end finishes the
// call with nothing applied. The reservation is released when the reactor
// is deleted (OnDone), after the update and every reply.
template <typename Base>
class ParameterShardService::PushStream : public Base {
 public:
  PushStream(ParameterShardService* service, grpc::CallbackServerContext* context)
      : service_(service),
        context_(context),
        collector_(service->store_, static_cast<uint64_t>(service->max_push_bytes_)) {}

  ~PushStream() override { service_->inflight_->Release(reserved_); }

  void OnReadDone(bool ok) override {
    if (!ok) {
      EndOfReads();
      return;
    }
    bool wait = false;
    absl::Status status = ParseMessage(&buffer_, &request_);
    if (status.ok()) status = Add(&request_, &wait);
    if (!status.ok()) {
      Reject(status);
      return;
    }
    if (!wait) this->StartRead(&buffer_);
  }

  void OnSendInitialMetadataDone(bool ok) override {
    if (!ok) {
      // The stream broke after its last read (reset, cancel, deadline, or a
      // message above the size limit that gRPC reported as the end of
      // reads): the client sees an error, so nothing may be applied.
      this->Finish(Cancelled());
      return;
    }
    // A push that may wait in the store (SSGD round, SSP bound) must not
    // hold budget meanwhile: the round may need pushes that wait for this
    // budget. The store keeps one waiting push per worker, a term of the
    // sizing rule of its own.
    if (service_->store_->config().sync != SyncMode::kAsync) {
      uint64_t reserved;
      {
        absl::MutexLock lock(&mu_);
        reserved = reserved_;
        reserved_ = 0;
      }
      service_->inflight_->Release(reserved);
    }
    Submit(collector_.worker(), collector_.step(), base_step_, collector_.TakeChunks());
  }

  void OnCancel() override {
    // A stream waiting for the budget has no read outstanding that would end
    // it: withdraw the wait. If it was granted meanwhile, the read it starts
    // fails and finishes the call.
    InflightBudget::Ticket ticket;
    {
      absl::MutexLock lock(&mu_);
      ticket = ticket_;
      ticket_ = 0;
    }
    if (ticket != 0 && service_->inflight_->Cancel(ticket)) this->Finish(Cancelled());
    cancel_fence_.Leave();
  }

 protected:
  // Left by OnCancel, passed by the subclass's OnDone.
  CancelFence cancel_fence_;

  // Starts the update of the complete push (on the thread that saw the
  // initial metadata sent).
  virtual void Submit(WorkerId worker, uint64_t step, uint64_t base_step,
                      std::vector<GradientChunk> chunks) = 0;

  void Start() { this->StartRead(&buffer_); }

  // The dtype the push's replies travel in (its first message).
  Dtype wire_dtype() const { return collector_.wire_dtype(); }

  void Reject(const absl::Status& status) {
    service_->metrics_->CountRejected(status.code());
    this->Finish(ToGrpcStatus(status));
  }

  ParameterShardService* const service_;
  grpc::CallbackServerContext* const context_;

 private:
  // Collects one message. Sets *wait when the stream must wait for the
  // budget before reading on (the grant starts the next read).
  absl::Status Add(v1::PushRequest* message, bool* wait) {
    service_->metrics_->AddReceivedBytes(message->gradient().values().size());
    if (!collector_.started()) {
      if (absl::Status s =
              collector_.Begin(message->worker_id(), message->chunk_count(), message->step(),
                               message->session(), message->wire_dtype());
          !s.ok()) {
        return s;
      }
      base_step_ = message->base_step();
    }
    if (absl::Status s = collector_.Add(message->mutable_gradient()); !s.ok()) return s;
    if (collector_.received() == 1) *wait = !Reserve();
    return absl::OkStatus();
  }

  // Reserves the push's bytes (`collector_.limit()`, which also covers its PushPull
  // replies); false when the stream must wait for them.
  bool Reserve() {
    const uint64_t bytes = std::min(collector_.limit(), service_->inflight_->capacity());
    absl::MutexLock lock(&mu_);
    ticket_ = service_->inflight_->AcquireOrWait(bytes, [this, bytes] {
      {
        absl::MutexLock granted(&mu_);
        ticket_ = 0;
        reserved_ = bytes;
      }
      this->StartRead(&buffer_);
    });
    if (ticket_ != 0) {
      service_->metrics_->CountInflightWait();
      return false;
    }
    reserved_ = bytes;
    return true;
  }

  // OnReadDone(false): a half-close, or a broken stream.
  void EndOfReads() {
    if (context_->IsCancelled()) {
      this->Finish(Cancelled());
      return;
    }
    if (!collector_.started()) {
      Reject(absl::InvalidArgumentError(
          "the push stream carried no message; send at least one gradient chunk"));
      return;
    }
    if (!collector_.complete()) {
      Reject(absl::InvalidArgumentError(absl::StrFormat(
          "the push announced %d chunks (chunk_count) but the stream ended after %d; nothing "
          "was applied",
          collector_.announced(), collector_.received())));
      return;
    }
    this->StartSendInitialMetadata();
  }

  // Reads happen one at a time; only gRPC's read callbacks (and the budget's
  // grant, which starts the next read) touch these.
  grpc::ByteBuffer buffer_;
  v1::PushRequest request_;
  PushCollector collector_;
  // The first message's base_step (read on the reactor's read path only).
  uint64_t base_step_ = 0;

  // Shared with OnCancel and the budget's grant.
  absl::Mutex mu_;
  InflightBudget::Ticket ticket_ ABSL_GUARDED_BY(mu_) = 0;
  // Released in the destructor, when no callback can run any more.
  uint64_t reserved_ ABSL_GUARDED_BY(mu_) = 0;
};

// Pull: plans the chunks once, then reads and writes one chunk per message,
// each holding its bytes in the in-flight budget until written.
class ParameterShardService::PullReactor final : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
 public:
  PullReactor(ParameterShardService* service, grpc::CallbackServerContext* context,
              const grpc::ByteBuffer& raw_request)
      : service_(service) {
    // Who calls is known before the request is parsed; what the call may do
    // depends on its worker id (0: a read without a backup).
    absl::StatusOr<auth::Caller> caller = service_->Authenticate(context);
    if (!caller.ok()) {
      Reject(caller.status());
      return;
    }
    v1::PullRequest request;
    if (absl::Status s = ParseMessage(raw_request, &request); !s.ok()) {
      Reject(s);
      return;
    }
    absl::StatusOr<Dtype> wire_dtype =
        DtypeFromProto(request.wire_dtype(), "PullRequest.wire_dtype");
    if (!wire_dtype.ok()) {
      Reject(wire_dtype.status());
      return;
    }
    wire_dtype_ = *wire_dtype;
    const auth::Action action =
        request.worker_id() == 0 ? auth::Action::kPullReadOnly : auth::Action::kPullAsWorker;
    if (absl::Status s = auth::Authorizer::Check(*caller, action); !s.ok()) {
      Reject(s);
      return;
    }
    if (absl::Status s = service_->Admit(context, action); !s.ok()) {
      Reject(s);
      return;
    }
    // A pull that records a backup acts as the worker: its session too.
    if (request.worker_id() != 0) {
      if (absl::Status s = service_->store_->Authenticate(request.worker_id(), request.session());
          !s.ok()) {
        Reject(s);
        return;
      }
    }
    std::vector<std::string> names;
    names.reserve(request.tensors_size());
    for (const std::string& name : request.tensors()) {
      if (absl::Status s = ValidateName("pulled tensor name", name); !s.ok()) {
        Reject(s);
        return;
      }
      names.push_back(name);
    }
    absl::StatusOr<PullPlan> plan = service_->store_->PlanPull(request.worker_id(), names);
    if (!plan.ok()) {
      Reject(plan.status());
      return;
    }
    plan_ = *std::move(plan);
    service_->metrics_->CountPull();
    NextWrite();
  }

  ~PullReactor() override { service_->inflight_->Release(held_); }

  void OnWriteDone(bool ok) override {
    service_->inflight_->Release(held_);
    held_ = 0;
    if (!ok) {
      Finish(Cancelled());
      return;
    }
    NextWrite();
  }

  void OnCancel() override {
    InflightBudget::Ticket ticket;
    {
      absl::MutexLock lock(&mu_);
      ticket = ticket_;
      ticket_ = 0;
    }
    if (ticket != 0 && service_->inflight_->Cancel(ticket)) Finish(Cancelled());
    cancel_fence_.Leave();
  }

  void OnDone() override {
    cancel_fence_.Pass();
    delete this;
  }

 private:
  void NextWrite() {
    if (next_ == plan_.chunks.size()) {
      if (plan_.worker == 0) {
        Finish(grpc::Status::OK);
        return;
      }
      // A worker's pull recorded its pull version and backups: its OK is
      // an acknowledgement.
      service_->AfterCommit([this](absl::Status committed) {
        if (!committed.ok()) service_->metrics_->CountRejected(committed.code());
        Finish(ToGrpcStatus(committed));
      });
      return;
    }
    // The message in flight holds the chunk in its wire dtype.
    const uint64_t bytes = std::min<uint64_t>(WireBytes(wire_dtype_, plan_.chunks[next_].elements),
                                              service_->inflight_->capacity());
    {
      absl::MutexLock lock(&mu_);
      ticket_ = service_->inflight_->AcquireOrWait(bytes, [this, bytes] {
        {
          absl::MutexLock granted(&mu_);
          ticket_ = 0;
        }
        held_ = bytes;
        WriteNext();
      });
      if (ticket_ != 0) {
        service_->metrics_->CountInflightWait();
        return;  // the grant writes
      }
    }
    held_ = bytes;
    WriteNext();
  }

  void WriteNext() {
    const ChunkRef& ref = plan_.chunks[next_++];
    v1::Chunk* chunk = response_.mutable_chunk();
    chunk->set_tensor(*ref.tensor);
    chunk->set_chunk_index(ref.chunk_index);
    chunk->set_dtype(DtypeToProto(wire_dtype_));
    response_.set_version(service_->store_->ReadChunk(plan_, ref, chunk->mutable_values()));
    // The backup is the float32 values just read (ps.proto Dtype); the
    // worker gets their rounding, converted in the same buffer.
    EncodeValuesInPlace(wire_dtype_, chunk->mutable_values());
    service_->metrics_->AddSentBytes(chunk->values().size());
    SerializeMessage(response_, &bytes_);
    // One copy in flight (the serialised one), not two.
    std::string().swap(*chunk->mutable_values());
    StartWrite(&bytes_);
  }

  void Reject(const absl::Status& status) {
    service_->metrics_->CountRejected(status.code());
    Finish(ToGrpcStatus(status));
  }

  ParameterShardService* const service_;
  Dtype wire_dtype_ = Dtype::kFloat32;  // set by the constructor
  PullPlan plan_;
  // Writes happen one at a time: only the write path touches these.
  size_t next_ = 0;
  uint64_t held_ = 0;  // budget bytes of the message being written
  v1::PullResponse response_;
  grpc::ByteBuffer bytes_;

  absl::Mutex mu_;
  InflightBudget::Ticket ticket_ ABSL_GUARDED_BY(mu_) = 0;

  CancelFence cancel_fence_;  // left by OnCancel, passed by OnDone
};

// Push: collects every chunk until the client half-closes, then submits the
// push; the store's callback finishes the call, maybe later on another
// thread (SSGD rounds, SSP waits).
class ParameterShardService::PushReactor final
    : public PushStream<grpc::ServerReadReactor<grpc::ByteBuffer>> {
 public:
  PushReactor(ParameterShardService* service, grpc::CallbackServerContext* context,
              grpc::ByteBuffer* response)
      : PushStream(service, context), response_(response) {
    if (absl::Status s = service_->Authorize(context, auth::Action::kPush); !s.ok()) {
      Reject(s);
      return;
    }
    Start();
  }

  void OnDone() override {
    this->cancel_fence_.Pass();
    delete this;
  }

 private:
  void Submit(WorkerId worker, uint64_t step, uint64_t base_step,
              std::vector<GradientChunk> chunks) override {
    service_->Submit(worker, step, base_step, std::move(chunks), /*pull_after=*/false,
                     [this](absl::StatusOr<PushResult> result) {
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

  grpc::ByteBuffer* const response_;
};

// PushPull: like Push; then the update runs on the thread that saw the
// initial metadata sent and hands each updated chunk to this reactor at once,
// so chunk i is on the wire while chunk i+1 is updated (the client never
// waits for the whole update). One write is outstanding at a time; the rest
// queue (their bytes are within the push's reservation: each gradient chunk
// is freed as its reply is made).
class ParameterShardService::PushPullReactor final
    : public PushStream<grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>> {
 public:
  PushPullReactor(ParameterShardService* service, grpc::CallbackServerContext* context)
      : PushStream(service, context) {
    if (absl::Status s = service_->Authorize(context, auth::Action::kPushPull); !s.ok()) {
      Reject(s);
      return;
    }
    Start();
  }

  void OnWriteDone(bool ok) override {
    grpc::ByteBuffer* next = nullptr;
    std::optional<grpc::Status> finish;
    {
      absl::MutexLock lock(&write_mu_);
      writing_ = false;
      if (!ok) cancelled_ = true;
      next = TakeNextWriteLocked();
      if (next == nullptr) finish = TakeFinishLocked();
    }
    if (next != nullptr) StartWrite(next);
    if (finish.has_value()) Finish(*finish);
  }

  void OnDone() override {
    this->cancel_fence_.Pass();
    delete this;
  }

 private:
  void Submit(WorkerId worker, uint64_t step, uint64_t base_step,
              std::vector<GradientChunk> chunks) override {
    service_->Submit(
        worker, step, base_step, std::move(chunks), /*pull_after=*/true,
        [this](absl::StatusOr<PushResult> result) { OnApplied(std::move(result)); },
        [this, dtype = wire_dtype()](AppliedChunk chunk) { Enqueue(dtype, std::move(chunk)); });
  }

  // On the applying thread, with store locks held: encode in the dtype the
  // push asked for, serialise and queue. A replayed step goes the
  // same way, so it is answered in the dtype its retry asks for.
  void Enqueue(Dtype dtype, AppliedChunk applied) {
    v1::PullResponse response;
    v1::Chunk* chunk = response.mutable_chunk();
    // One pass from the store's block (which may be the backup) into the
    // message, in the wire dtype.
    const SharedBytes& values = applied.values.values;
    EncodeValues(dtype,
                 absl::MakeConstSpan(reinterpret_cast<const float*>(values.data()),
                                     values.size() / sizeof(float)),
                 chunk->mutable_values());
    service_->metrics_->AddSentBytes(chunk->values().size());
    chunk->set_dtype(DtypeToProto(dtype));
    chunk->mutable_tensor()->swap(applied.values.tensor);
    chunk->set_chunk_index(applied.values.chunk_index);
    response.set_version(applied.version);
    response.set_staleness(applied.staleness);
    auto bytes = std::make_unique<grpc::ByteBuffer>();
    SerializeMessage(response, bytes.get());
    grpc::ByteBuffer* next = nullptr;
    {
      absl::MutexLock lock(&write_mu_);
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
      absl::MutexLock lock(&write_mu_);
      applied_ = true;
      final_status_ = result.ok() ? grpc::Status::OK : ToGrpcStatus(result.status());
      if (!writing_) finish = TakeFinishLocked();
    }
    if (finish.has_value()) Finish(*finish);
  }

  // The next queued message to write, if no write is outstanding.
  grpc::ByteBuffer* TakeNextWriteLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_) {
    if (writing_ || cancelled_ || ready_.empty()) return nullptr;
    writing_ = true;
    in_flight_ = std::move(ready_.front());
    ready_.pop_front();
    return in_flight_.get();
  }

  // The status to finish with, once: after the update and every write ended.
  std::optional<grpc::Status> TakeFinishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_) {
    if (finished_ || !applied_ || writing_ || (!ready_.empty() && !cancelled_)) {
      return std::nullopt;
    }
    finished_ = true;
    return cancelled_ ? Cancelled() : final_status_;
  }

  // Shared by the applying thread (Enqueue, OnApplied) and gRPC's write
  // callbacks.
  absl::Mutex write_mu_;
  std::deque<std::unique_ptr<grpc::ByteBuffer>> ready_ ABSL_GUARDED_BY(write_mu_);
  std::unique_ptr<grpc::ByteBuffer> in_flight_ ABSL_GUARDED_BY(write_mu_);
  bool writing_ ABSL_GUARDED_BY(write_mu_) = false;
  bool applied_ ABSL_GUARDED_BY(write_mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(write_mu_) = false;
  bool finished_ ABSL_GUARDED_BY(write_mu_) = false;
  grpc::Status final_status_ ABSL_GUARDED_BY(write_mu_);
};

grpc::ServerWriteReactor<grpc::ByteBuffer>* ParameterShardService::Pull(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request) {
  return new PullReactor(this, context, *request);
}

grpc::ServerReadReactor<grpc::ByteBuffer>* ParameterShardService::Push(
    grpc::CallbackServerContext* context, grpc::ByteBuffer* response) {
  return new PushReactor(this, context, response);
}

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* ParameterShardService::PushPull(
    grpc::CallbackServerContext* context) {
  return new PushPullReactor(this, context);
}

}  // namespace dcasgd
