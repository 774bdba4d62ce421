// ParameterShardService::Exchange: a long-lived stream of push rounds
// (ps.proto ExchangeRequest), beside the one-push streams of ps_streams.cc.
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "services/ps/cancel_fence.h"
#include "services/ps/ps_service.h"
#include "services/ps/push_collector.h"
#include "wire/chunk_values.h"
#include "wire/exchange_codec.h"
#include "wire/raw_message.h"
#include "wire/status.h"

namespace dcasgd {

namespace {

// A reply message holds at most this many bytes of chunks (or one chunk, if
// larger), so that many small chunks travel in one message, a 1 MiB model is
// one message, and a large push streams back a MiB at a time as it is
// applied. Its chunks are the backups' blocks (no copy): a larger message
// costs the shard no memory. Clients accept messages of at least 2 MiB
// (ClientOptions.max_message_bytes).
constexpr size_t kReplyMessageBytes = size_t{1} << 20;

}  // namespace

// One Exchange stream. Reads, checks and collects the rounds (PushCollector,
// the rules of one push), hands each complete round to the store, and
// queues its answers: one write is outstanding at a time.
//
// Rounds are applied one at a time: while round k is applied, the stream
// goes on reading round k+1 (so the client can send it meanwhile); once k+1
// is complete too, reads pause until k was applied. Each round reserves the
// bytes its announced chunks can hold in the in-flight budget (covering its
// replies too) from its header until its last answer is written; a round
// that does not fit waits without reading.
//
// A rejected round is answered with its status and its remaining messages
// are dropped; the stream goes on. A message that cannot be parsed, or a
// round number that does not increase, ends the stream (INVALID_ARGUMENT)
// once the round being applied was answered. An incomplete round when the
// reads end (half-close, cancellation, broken stream) is dropped: nothing of
// it is applied.
class ParameterShardService::ExchangeReactor final
    : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  ExchangeReactor(ParameterShardService* service, grpc::CallbackServerContext* context)
      : service_(service), context_(context) {
    if (absl::Status s = service_->Authorize(context, auth::Action::kPushPull); !s.ok()) {
      service_->metrics_->CountRejected(s.code());
      {
        absl::MutexLock lock(&mu_);
        finished_ = true;
      }
      Finish(ToGrpcStatus(s));
      return;
    }
    service_->metrics_->CountExchangeStream();
    StartRead(&buffer_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      EndReads(std::nullopt);
      return;
    }
    // Consumes the bytes: a round waiting for the budget holds its first
    // message once (parsed), not twice.
    if (absl::Status s = ParseMessage(&buffer_, &request_); !s.ok()) {
      EndReads(ToGrpcStatus(s));
      return;
    }
    const uint64_t round = request_.round();
    if (collecting_ != nullptr && round == collecting_->id) {
      AddChunks();
      return;
    }
    if (round != 0 && round == discarding_) {
      service_->metrics_->AddReceivedBytes(GradientBytes());
      StartRead(&buffer_);
      return;
    }
    if (round <= last_round_) {
      EndReads(grpc::Status(
          grpc::StatusCode::INVALID_ARGUMENT,
          round == 0 ? std::string("ExchangeRequest.round must be >= 1")
                     : absl::StrFormat("ExchangeRequest.round must increase along the stream: "
                                       "round %d came after round %d",
                                       round, last_round_)));
      return;
    }
    if (collecting_ != nullptr) {
      RejectRound(collecting_.get(),
                  absl::InvalidArgumentError(absl::StrFormat(
                      "round %d announced %d chunks (chunk_count) but round %d began after %d; "
                      "nothing of it was applied",
                      collecting_->id, collecting_->collector.announced(), round,
                      collecting_->collector.received())));
      collecting_.reset();
    }
    last_round_ = round;
    BeginRound();
  }

  void OnWriteDone(bool ok) override {
    uint64_t release = 0;
    grpc::ByteBuffer* next = nullptr;
    std::optional<grpc::Status> finish;
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      release = in_flight_release_;
      in_flight_release_ = 0;
      if (!ok) {
        cancelled_ = true;
        for (Outgoing& queued : queue_) release += queued.release;
        queue_.clear();
      }
      next = TakeNextWriteLocked();
      if (next == nullptr) finish = TakeFinishLocked();
    }
    service_->inflight_->Release(release);
    if (next != nullptr) StartWrite(next);
    if (finish.has_value()) Finish(*finish);
  }

  void OnCancel() override {
    // A round waiting for the budget has no read outstanding that would end
    // the stream: withdraw the wait. If it was granted meanwhile, the read it
    // starts fails and ends the reads.
    InflightBudget::Ticket ticket;
    {
      absl::MutexLock lock(&mu_);
      ticket = ticket_;
      ticket_ = 0;
    }
    if (ticket != 0 && service_->inflight_->Cancel(ticket)) EndReads(std::nullopt);
    cancel_fence_.Leave();
  }

  void OnDone() override {
    cancel_fence_.Pass();
    delete this;
  }

 private:
  // A round from its header to its last answer.
  struct Round {
    Round(uint64_t round_id, ParameterShardService* service)
        : id(round_id),
          collector(service->store_, static_cast<uint64_t>(service->max_push_bytes_)) {}
    const uint64_t id;
    PushCollector collector;
    bool pull_back = false;
    uint64_t base_step = 0;  // RoundHeader.base_step
    // In-flight budget bytes held, released with the round's last answer.
    uint64_t reserved = 0;
    // The answer being filled by the store's sink (applying thread only):
    // its fields, and its chunks, which go to the wire without a copy
    // (wire/exchange_codec.h).
    v1::ExchangeResponse reply;
    std::vector<EncodedChunk> weights;
    size_t reply_bytes = 0;
  };

  struct Outgoing {
    std::unique_ptr<grpc::ByteBuffer> bytes;
    uint64_t release = 0;  // budget bytes returned once written
  };

  uint64_t GradientBytes() const {
    uint64_t bytes = 0;
    for (const v1::Chunk& chunk : request_.gradients()) bytes += chunk.values().size();
    return bytes;
  }

  // The first message of round request_.round(): its header, then its
  // chunks once its bytes are reserved.
  void BeginRound() {
    auto round = std::make_unique<Round>(request_.round(), service_);
    absl::Status status;
    if (!request_.has_header()) {
      status = absl::InvalidArgumentError(
          "the first ExchangeRequest of a round must carry its header (worker id, session, "
          "step, chunk_count)");
    } else {
      const v1::RoundHeader& header = request_.header();
      round->pull_back = header.pull_back();
      round->base_step = header.base_step();
      status = round->collector.Begin(header.worker_id(), header.chunk_count(), header.step(),
                                      header.session(), header.wire_dtype());
    }
    if (!status.ok()) {
      service_->metrics_->AddReceivedBytes(GradientBytes());  // AddChunks counts the others
      RejectRound(round.get(), status);
      discarding_ = round->id;
      StartRead(&buffer_);
      return;
    }
    collecting_ = std::move(round);
    const uint64_t bytes =
        std::min(collecting_->collector.limit(), service_->inflight_->capacity());
    {
      absl::MutexLock lock(&mu_);
      ticket_ = service_->inflight_->AcquireOrWait(bytes, [this, bytes] {
        {
          absl::MutexLock granted(&mu_);
          ticket_ = 0;
        }
        collecting_->reserved = bytes;
        AddChunks();
      });
      if (ticket_ != 0) {
        service_->metrics_->CountInflightWait();
        return;  // the grant goes on
      }
    }
    collecting_->reserved = bytes;
    AddChunks();
  }

  // Adds request_'s chunks to the collecting round; submits it when
  // complete; reads on unless the stream must pause.
  void AddChunks() {
    service_->metrics_->AddReceivedBytes(GradientBytes());
    for (v1::Chunk& gradient : *request_.mutable_gradients()) {
      if (absl::Status s = collecting_->collector.Add(&gradient); !s.ok()) {
        RejectRound(collecting_.get(), s);
        discarding_ = collecting_->id;
        collecting_.reset();
        StartRead(&buffer_);
        return;
      }
    }
    if (collecting_->collector.complete() && !Complete(std::move(collecting_))) return;
    StartRead(&buffer_);
  }

  // A complete round: applied now, or after the round being applied. False
  // when reads must pause until then.
  bool Complete(std::unique_ptr<Round> round) {
    {
      absl::MutexLock lock(&mu_);
      if (applying_) {
        waiting_ = std::move(round);
        return false;
      }
      applying_ = true;
    }
    Submit(std::shared_ptr<Round>(std::move(round)));
    return true;
  }

  void Submit(std::shared_ptr<Round> round) {
    // A round that may wait in the store (SSGD round, SSP bound) must not
    // hold budget meanwhile (as in ps_streams.cc).
    if (service_->store_->config().sync != SyncMode::kAsync) {
      service_->inflight_->Release(round->reserved);
      round->reserved = 0;
    }
    Round* raw = round.get();
    ShardStore::ChunkSink sink = nullptr;
    if (round->pull_back) {
      sink = [this, raw](AppliedChunk applied) { AddReply(raw, std::move(applied)); };
    }
    service_->Submit(
        raw->collector.worker(), raw->collector.step(), raw->base_step, raw->collector.TakeChunks(),
        raw->pull_back,
        [this, round](absl::StatusOr<PushResult> result) { OnApplied(round, std::move(result)); },
        std::move(sink));
  }

  // On the applying thread, with store locks held: batch the chunk, and
  // queue the batch once it is large enough.
  void AddReply(Round* round, AppliedChunk applied) {
    // Encoded in the round's wire dtype (float32: the very block the store
    // keeps as the backup); messages are cut by wire bytes. A replayed round
    // goes the same way: its retry's dtype.
    const Dtype dtype = round->collector.wire_dtype();
    SharedBytes values = EncodeSharedValues(dtype, std::move(applied.values.values));
    const size_t bytes = values.size();
    service_->metrics_->AddSentBytes(bytes);
    if (round->reply_bytes > 0 && round->reply_bytes + bytes > kReplyMessageBytes) {
      round->reply.set_round(round->id);
      Enqueue(EncodeExchangeResponse(round->reply, std::move(round->weights)), 0);
      round->weights.clear();
      round->reply_bytes = 0;
    }
    round->reply_bytes += bytes;
    round->weights.push_back(
        {std::move(applied.values.tensor), applied.values.chunk_index, dtype, std::move(values)});
  }

  void OnApplied(const std::shared_ptr<Round>& round, absl::StatusOr<PushResult> result) {
    v1::ExchangeResponse& reply = round->reply;
    reply.set_round(round->id);
    reply.set_last(true);
    if (result.ok()) {
      service_->metrics_->ObservePush(*result);
      if (round->pull_back) service_->metrics_->CountPull();
      reply.set_version(result->version);
      reply.set_staleness(result->staleness);
    } else {
      service_->metrics_->CountRejected(result.status().code());
      round->weights.clear();
      reply.set_code(static_cast<int32_t>(result.status().code()));
      reply.set_message(std::string(result.status().message()));
    }
    Enqueue(EncodeExchangeResponse(reply, std::move(round->weights)), round->reserved);
    std::unique_ptr<Round> next;
    std::optional<grpc::Status> finish;
    {
      absl::MutexLock lock(&mu_);
      next = std::move(waiting_);
      applying_ = next != nullptr;
      if (next == nullptr) finish = TakeFinishLocked();
    }
    if (finish.has_value()) Finish(*finish);
    if (next != nullptr) {
      Submit(std::shared_ptr<Round>(std::move(next)));
      StartRead(&buffer_);  // reads paused when `next` completed
    }
  }

  // Answers a round that will not be applied.
  void RejectRound(Round* round, const absl::Status& status) {
    service_->metrics_->CountRejected(status.code());
    v1::ExchangeResponse reply;
    reply.set_round(round->id);
    reply.set_last(true);
    reply.set_code(static_cast<int32_t>(status.code()));
    reply.set_message(std::string(status.message()));
    Enqueue(EncodeExchangeResponse(reply, {}), round->reserved);
    round->reserved = 0;
  }

  void Enqueue(grpc::ByteBuffer message, uint64_t release) {
    auto bytes = std::make_unique<grpc::ByteBuffer>();
    bytes->Swap(&message);
    grpc::ByteBuffer* next = nullptr;
    {
      absl::MutexLock lock(&mu_);
      if (!cancelled_) {
        queue_.push_back({std::move(bytes), release});
        release = 0;
        next = TakeNextWriteLocked();
      }
    }
    service_->inflight_->Release(release);
    if (next != nullptr) StartWrite(next);
  }

  // No more reads: the client half-closed, the stream broke (nullopt), or a
  // protocol error ends it (`error`). An incomplete round is dropped.
  void EndReads(std::optional<grpc::Status> error) {
    if (collecting_ != nullptr) {
      service_->inflight_->Release(collecting_->reserved);
      collecting_.reset();
    }
    if (error.has_value()) service_->metrics_->CountRejected(absl::StatusCode::kInvalidArgument);
    std::optional<grpc::Status> finish;
    {
      absl::MutexLock lock(&mu_);
      reads_done_ = true;
      if (context_->IsCancelled()) cancelled_ = true;
      if (error.has_value()) end_status_ = *error;
      finish = TakeFinishLocked();
    }
    if (finish.has_value()) Finish(*finish);
  }

  grpc::ByteBuffer* TakeNextWriteLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (writing_ || cancelled_ || queue_.empty()) return nullptr;
    writing_ = true;
    in_flight_ = std::move(queue_.front().bytes);
    in_flight_release_ = queue_.front().release;
    queue_.pop_front();
    return in_flight_.get();
  }

  // The status to finish with, once: after the reads ended, the last round
  // was applied and every answer was written.
  std::optional<grpc::Status> TakeFinishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_ || !reads_done_ || applying_ || writing_ || (!queue_.empty() && !cancelled_)) {
      return std::nullopt;
    }
    finished_ = true;
    if (cancelled_) return grpc::Status(grpc::StatusCode::CANCELLED, "the stream was cancelled");
    return end_status_;
  }

  ParameterShardService* const service_;
  grpc::CallbackServerContext* const context_;

  // Reads happen one at a time: only gRPC's read callbacks and the budget's
  // grant (which continues a paused read) touch these.
  grpc::ByteBuffer buffer_;
  v1::ExchangeRequest request_;
  uint64_t last_round_ = 0;
  uint64_t discarding_ = 0;  // a rejected round whose later messages are dropped
  std::unique_ptr<Round> collecting_;

  CancelFence cancel_fence_;  // left by OnCancel, passed by OnDone

  // Shared by the read callbacks, the applying thread and the write
  // callbacks.
  absl::Mutex mu_;
  InflightBudget::Ticket ticket_ ABSL_GUARDED_BY(mu_) = 0;
  bool applying_ ABSL_GUARDED_BY(mu_) = false;
  // A complete round waiting for the one being applied (reads pause).
  std::unique_ptr<Round> waiting_ ABSL_GUARDED_BY(mu_);
  std::deque<Outgoing> queue_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<grpc::ByteBuffer> in_flight_ ABSL_GUARDED_BY(mu_);
  uint64_t in_flight_release_ ABSL_GUARDED_BY(mu_) = 0;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool reads_done_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status end_status_ ABSL_GUARDED_BY(mu_);
};

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* ParameterShardService::Exchange(
    grpc::CallbackServerContext* context) {
  return new ExchangeReactor(this, context);
}

}  // namespace dcasgd
