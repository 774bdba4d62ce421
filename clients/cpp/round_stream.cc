#include "clients/cpp/round_stream.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "wire/chunk_values.h"
#include "wire/exchange_codec.h"
#include "wire/status.h"

namespace dcasgd {
namespace client {
namespace {

// A round's gradients are cut into messages of at most this many bytes of
// values (or one chunk, if larger), and at most half the message limit the
// stream was opened with (ours and the shard's, JoinResponse): many small
// chunks travel together, and a large push goes in few messages, which cost
// fewer callbacks and parses on both sides (docs/benchmarks.md, "Exchange
// messages of up to 1 MiB"). Beyond 1 MiB a large push gains nothing more.
constexpr size_t kRoundMessageBytes = size_t{1} << 20;
// The first message of a round carries at most this many bytes of values
// (or one chunk): the shard reads it before it reserves the round's bytes in
// its in-flight budget, and a round waiting for the budget holds it, so it
// stays within the per-worker transport term of the shard's sizing rule
// (core/shard_memory.h). A 1 MiB model is two messages: 256 KiB and 768 KiB.
constexpr size_t kFirstMessageBytes = size_t{256} << 10;
// RoundStream::Start encodes this many of a round's messages on the
// caller's thread; gRPC's thread encodes the rest, each ahead of its turn.
constexpr size_t kEncodedByStart = 2;

// ps.proto ParameterShard.Exchange, called through a generic stub so that
// requests go out as byte buffers (wire/exchange_codec.h).
constexpr char kExchangeMethod[] = "/dcasgd.v1.ParameterShard/Exchange";

// Chunk `c` of `tensors`'s gradients, as a message carries it.
OutgoingChunk GradientChunk(const CallTensors& tensors, const PlannedChunk& c) {
  return {tensors.layouts[c.tensor].name, c.index, tensors.wire_dtype,
          absl::MakeConstSpan(tensors.sources[c.tensor] + c.offset, c.length)};
}

// `head` (the round number, and the header in a round's first message)
// followed by chunks [begin, end) of the plan, as one message.
std::unique_ptr<grpc::ByteBuffer> EncodeMessage(const v1::ExchangeRequest& head,
                                                const CallTensors& tensors,
                                                const std::vector<PlannedChunk>& chunks,
                                                size_t begin, size_t end) {
  std::vector<OutgoingChunk> gradients;
  gradients.reserve(end - begin);
  for (size_t i = begin; i < end; ++i) gradients.push_back(GradientChunk(tensors, chunks[i]));
  auto bytes = std::make_unique<grpc::ByteBuffer>();
  grpc::ByteBuffer encoded = EncodeExchangeRequest(head, gradients);
  bytes->Swap(&encoded);
  return bytes;
}

// Where a round's messages begin in its plan: the first carries at most
// `first_limit` bytes of values, the others at most `limit` (each at least
// one chunk). Ends with chunks.size().
std::vector<size_t> CutMessages(const std::vector<PlannedChunk>& chunks, size_t element_bytes,
                                size_t first_limit, size_t limit) {
  std::vector<size_t> begins = {0};
  size_t bytes = 0;
  for (size_t i = 0; i < chunks.size(); ++i) {
    const size_t chunk_bytes = chunks[i].length * element_bytes;
    if (bytes > 0 && bytes + chunk_bytes > (begins.size() == 1 ? first_limit : limit)) {
      begins.push_back(i);
      bytes = 0;
    }
    bytes += chunk_bytes;
  }
  begins.push_back(chunks.size());
  return begins;
}

absl::StatusCode CodeFromWire(int32_t code) {
  if (code < 1 || code > 16) return absl::StatusCode::kUnknown;
  return static_cast<absl::StatusCode>(code);
}

}  // namespace

PendingRound::PendingRound(const CallTensors& tensors, const std::vector<PlannedChunk>& chunks,
                           absl::string_view label, bool pull_back)
    : receiver_(tensors, chunks, label),
      label_(label),
      pull_back_(pull_back),
      tensors_(tensors),
      chunks_(chunks) {}

std::unique_ptr<grpc::ByteBuffer> PendingRound::EncodeLater(uint64_t id, size_t begin, size_t end) {
  absl::MutexLock lock(&sources_mu_);
  if (sources_released_) return nullptr;
  v1::ExchangeRequest head;
  head.set_round(id);
  return EncodeMessage(head, tensors_, chunks_, begin, end);
}

absl::Status PendingRound::Wait(absl::Duration timeout, ShardReply* reply) {
  std::shared_ptr<RoundStream> stream;
  {
    absl::MutexLock lock(&mu_);
    if (!mu_.AwaitWithTimeout(absl::Condition(&done_), timeout)) stream = stream_;
  }
  // Past the timeout: cancel the stream; its end fails this round, after
  // which nothing writes into the destinations any more.
  if (stream != nullptr) stream->Cancel(/*deadline=*/true);
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(&done_));
  if (status_.ok()) {
    if (reply != nullptr) *reply = reply_;
    return absl::OkStatus();
  }
  // A copy of its own, not one sharing status_'s message: the caller and
  // the stream's thread (which may drop the last reference to this round)
  // then never count one message's references down on two threads, an
  // order abseil keeps in its library, where ThreadSanitizer cannot see it.
  absl::Status copy(status_.code(), status_.message());
  if (const std::string role = RefusingRole(status_); !role.empty()) SetRefusingRole(&copy, role);
  return copy;
}

void PendingRound::Cancel() {
  std::shared_ptr<RoundStream> stream;
  {
    absl::MutexLock lock(&mu_);
    stream = stream_;
  }
  if (stream != nullptr) stream->Cancel(/*deadline=*/false);
}

void PendingRound::MarkSent() {
  absl::MutexLock lock(&mu_);
  sent_ = absl::Now();
}

absl::StatusOr<absl::Span<float>> PendingRound::Place(absl::string_view tensor,
                                                      uint64_t chunk_index, Dtype dtype,
                                                      size_t bytes) {
  if (first_reply_ == absl::InfinitePast()) first_reply_ = absl::Now();
  if (!pull_back_) return WeightsWithoutPullBack();
  return receiver_.Place(tensor, chunk_index, dtype, bytes);
}

absl::Status PendingRound::WeightsWithoutPullBack() const {
  return absl::InternalError(
      absl::StrCat(label_, ": sent weights in the answer to a push without pull_back"));
}

absl::Status PendingRound::Accept(const ResponseFields& response,
                                  const std::vector<v1::Chunk>& unplaced) {
  const absl::Time now = absl::Now();
  if (first_reply_ == absl::InfinitePast()) first_reply_ = now;
  if (!pull_back_ && !unplaced.empty()) return WeightsWithoutPullBack();
  for (const v1::Chunk& chunk : unplaced) {
    RETURN_IF_ERROR(receiver_.Accept(chunk, response.version, response.staleness));
  }
  if (!response.last) return absl::OkStatus();
  absl::Status status;
  if (response.code != 0) {
    status =
        absl::Status(CodeFromWire(response.code), absl::StrCat(label_, ": ", response.message));
  } else if (pull_back_) {
    status = receiver_.Finish();
  }
  ShardReply reply;
  reply.version = response.version;
  reply.staleness = response.staleness;
  {
    // The answer may be read before the write callback of the round's last
    // message ran: then the first answer bounds the send.
    absl::MutexLock lock(&mu_);
    const absl::Time sent =
        std::clamp(sent_ == absl::InfinitePast() ? queued_ : sent_, start_, first_reply_);
    reply.send_time = sent - start_;
    reply.wait_time = first_reply_ - sent;
    reply.receive_time = now - first_reply_;
  }
  Complete(std::move(status), reply);
  return absl::OkStatus();
}

void PendingRound::Complete(absl::Status status, const ShardReply& reply) {
  {
    // Waits for a message of it being encoded; none is encoded after this,
    // so once Wait returns the caller may change its gradients.
    absl::MutexLock lock(&sources_mu_);
    sources_released_ = true;
  }
  std::shared_ptr<RoundStream> stream;
  absl::MutexLock lock(&mu_);
  if (done_) return;
  done_ = true;
  status_ = std::move(status);
  reply_ = reply;
  // Breaks the stream -> pending map -> round cycle; dropped after the lock.
  stream = std::move(stream_);
}

RoundStream::RoundStream(std::shared_ptr<grpc::Channel> channel, std::string label,
                         size_t max_message_bytes)
    : stub_(std::move(channel)),
      label_(std::move(label)),
      message_bytes_(std::max<size_t>(1, std::min(kRoundMessageBytes, max_message_bytes / 2))) {}

class RoundStream::Placer final : public ChunkPlacer {
 public:
  explicit Placer(RoundStream* stream) : stream_(stream) {}

  absl::StatusOr<absl::Span<float>> Place(uint64_t round_id, absl::string_view tensor,
                                          uint64_t chunk_index, Dtype dtype,
                                          size_t bytes) override {
    std::shared_ptr<PendingRound> round = Find(round_id);
    if (round == nullptr) return absl::Span<float>();  // Accept's error
    return round->Place(tensor, chunk_index, dtype, bytes);
  }

  // The pending round `round_id` (looked up once), or null.
  std::shared_ptr<PendingRound> Find(uint64_t round_id) {
    if (round_ == nullptr || round_id_ != round_id) {
      absl::MutexLock lock(&stream_->mu_);
      auto it = stream_->pending_.find(round_id);
      round_ = it == stream_->pending_.end() ? nullptr : it->second;
      round_id_ = round_id;
    }
    return round_;
  }

 private:
  RoundStream* const stream_;
  uint64_t round_id_ = 0;
  std::shared_ptr<PendingRound> round_;
};

std::shared_ptr<RoundStream> RoundStream::Open(std::shared_ptr<grpc::Channel> channel,
                                               std::string label, size_t max_message_bytes) {
  std::shared_ptr<RoundStream> stream(
      new RoundStream(std::move(channel), std::move(label), max_message_bytes));
  {
    absl::MutexLock lock(&stream->mu_);
    stream->self_ = stream;
  }
  stream->stub_.PrepareBidiStreamingCall(&stream->context_, kExchangeMethod, grpc::StubOptions(),
                                         stream.get());
  // The hold keeps OnDone away while this client may still start writes
  // from its own threads; it goes once reads ended and no write is out.
  stream->AddHold();
  stream->StartRead(&stream->response_);
  stream->StartCall();
  return stream;
}

std::shared_ptr<PendingRound> RoundStream::Start(const WorkerCredentials& worker, uint64_t step,
                                                 const CallTensors& tensors,
                                                 const std::vector<PlannedChunk>& chunks,
                                                 bool pull_back, uint64_t base_step) {
  auto round = std::make_shared<PendingRound>(tensors, chunks, label_, pull_back);
  absl::MutexLock start_lock(&start_mu_);
  uint64_t id;
  {
    absl::MutexLock lock(&mu_);
    if (ended_ || reads_ended_ || half_closed_) {
      round->Complete(EndedBeforeSentLocked(), {});
      return round;
    }
    id = ++last_round_;
  }
  // The first two messages are built here, without the reactor's lock
  // (start_mu_ keeps rounds in order); the others on gRPC's thread, each
  // while the one before it is written (WriteClaimed). A round of one or two
  // messages (up to 1.25 MiB) then goes out as fast as it can; for a larger
  // one the copying overlaps the sending, and a push to several shards
  // starts on all of them at once.
  const std::vector<size_t> begins =
      CutMessages(chunks, DtypeBytes(tensors.wire_dtype),
                  std::min(kFirstMessageBytes, message_bytes_), message_bytes_);
  std::deque<Outgoing> messages;
  v1::ExchangeRequest head;
  head.set_round(id);
  v1::RoundHeader* header = head.mutable_header();
  header->set_worker_id(worker.worker_id);
  header->set_session(worker.session);
  header->set_step(step);
  header->set_chunk_count(static_cast<uint32_t>(chunks.size()));
  header->set_pull_back(pull_back);
  header->set_wire_dtype(DtypeToProto(tensors.wire_dtype));
  header->set_base_step(base_step);
  for (size_t m = 0; m + 1 < begins.size(); ++m) {
    Outgoing& message = messages.emplace_back();
    if (m >= kEncodedByStart) {
      message.round = round;
      message.round_id = id;
      message.begin = begins[m];
      message.end = begins[m + 1];
      continue;
    }
    message.bytes = EncodeMessage(head, tensors, chunks, begins[m], begins[m + 1]);
    head.clear_header();
  }
  messages.back().last_of = round;
  {
    absl::MutexLock round_lock(&round->mu_);
    round->queued_ = absl::Now();
  }
  {
    absl::MutexLock lock(&mu_);
    if (ended_ || reads_ended_ || half_closed_) {
      // Ended meanwhile: its end failed every pending round, not this one.
      round->Complete(EndedBeforeSentLocked(), {});
      return round;
    }
    {
      absl::MutexLock round_lock(&round->mu_);
      round->stream_ = shared_from_this();
    }
    pending_.emplace(id, round);
    for (Outgoing& outgoing : messages) {
      outgoing.seq = ++last_seq_;
      queue_.push_back(std::move(outgoing));
    }
  }
  WriteNext();
  return round;
}

absl::Status RoundStream::EndedBeforeSentLocked() const {
  // UNAVAILABLE whatever ended the stream: the round was never sent, so a
  // fresh stream may take it (another round's error is not this one's).
  absl::Status status = absl::UnavailableError(absl::StrCat(
      label_, ": the push stream ended before the round was sent",
      ended_ ? absl::StrCat(" (it ended with ", absl::StatusCodeToString(end_status_.code()), ": ",
                            end_status_.message(), ")")
             : ""));
  // Refused by a member that is not the primary: so is the round.
  if (const std::string role = RefusingRole(end_status_); !role.empty()) {
    SetRefusingRole(&status, role);
  }
  return status;
}

bool RoundStream::TakeHoldLocked() {
  if (hold_removed_ || !reads_ended_ || writing_ || encoding_) return false;
  hold_removed_ = true;
  return true;
}

bool RoundStream::ClaimNextLocked(Outgoing* next) {
  if (writing_ || reads_ended_ || queue_.empty() || queue_.front().encoding) return false;
  writing_ = true;
  *next = std::move(queue_.front());
  queue_.pop_front();
  return true;
}

void RoundStream::WriteNext() {
  Outgoing next;
  {
    absl::MutexLock lock(&mu_);
    if (!ClaimNextLocked(&next)) return;
  }
  WriteClaimed(std::move(next));
}

void RoundStream::WriteClaimed(Outgoing next) {
  for (;;) {
    if (next.bytes == nullptr) {
      next.bytes = next.round->EncodeLater(next.round_id, next.begin, next.end);
    }
    const grpc::ByteBuffer* bytes = nullptr;
    Outgoing ahead;
    bool remove_hold = false;
    {
      absl::MutexLock lock(&mu_);
      if (next.bytes == nullptr || reads_ended_) {
        // Its round was answered before all of it was sent (the shard drops
        // the rest of a rejected round), or the stream is ending (OnDone
        // fails the rounds): not written.
        writing_ = false;
        if (ClaimNextLocked(&next)) continue;
        remove_hold = TakeHoldLocked();
      } else {
        in_flight_ = std::move(next);
        bytes = in_flight_.bytes.get();
        // The message after it is encoded while this one is written.
        if (!encoding_ && !queue_.empty() && queue_.front().bytes == nullptr) {
          Outgoing& following = queue_.front();
          following.encoding = true;
          encoding_ = true;
          ahead.round = following.round;
          ahead.round_id = following.round_id;
          ahead.begin = following.begin;
          ahead.end = following.end;
          ahead.seq = following.seq;
        }
      }
    }
    if (remove_hold) {
      RemoveHold();  // OnDone may delete this stream now
      return;
    }
    if (bytes != nullptr) StartWrite(bytes);
    // The stream stays alive meanwhile: no hold goes while encoding_ is set.
    if (ahead.round != nullptr) EncodeAhead(std::move(ahead));
    return;
  }
}

void RoundStream::EncodeAhead(Outgoing ahead) {
  std::unique_ptr<grpc::ByteBuffer> bytes =
      ahead.round->EncodeLater(ahead.round_id, ahead.begin, ahead.end);
  Outgoing next;
  bool claimed = false;
  bool remove_hold = false;
  {
    absl::MutexLock lock(&mu_);
    encoding_ = false;
    // Gone if the stream broke meanwhile (the queue was cleared).
    if (!queue_.empty() && queue_.front().seq == ahead.seq) {
      if (bytes != nullptr) {
        queue_.front().bytes = std::move(bytes);
        queue_.front().encoding = false;
      } else {
        queue_.pop_front();  // its round was answered: not sent
      }
    }
    // The write before it may have finished meanwhile: then it is written here.
    claimed = ClaimNextLocked(&next);
    if (!claimed) remove_hold = TakeHoldLocked();
  }
  if (claimed) {
    WriteClaimed(std::move(next));
  } else if (remove_hold) {
    RemoveHold();
  }
}

bool RoundStream::ended() const {
  absl::MutexLock lock(&mu_);
  return ended_ || reads_ended_ || half_closed_;
}

void RoundStream::Cancel(bool deadline) {
  {
    absl::MutexLock lock(&mu_);
    if (ended_) return;
    if (deadline) deadline_ = true;
  }
  context_.TryCancel();
}

void RoundStream::Close(absl::Duration timeout) {
  bool writes_done = false;
  {
    absl::MutexLock lock(&mu_);
    if (ended_) return;
    if (!half_closed_ && !reads_ended_ && !writing_ && queue_.empty()) {
      half_closed_ = true;
      writes_done = true;
      // The half-close is a write operation too: until OnWritesDoneDone the
      // hold stays, so the reads ending meanwhile (the shard closed the
      // call) cannot let OnDone free the call before StartWritesDone below.
      writing_ = true;
    }
  }
  if (writes_done) StartWritesDone();
  absl::MutexLock lock(&mu_);
  if (writes_done && mu_.AwaitWithTimeout(absl::Condition(&ended_), timeout)) return;
  mu_.Unlock();
  context_.TryCancel();
  mu_.Lock();
  mu_.Await(absl::Condition(&ended_));
}

void RoundStream::OnWriteDone(bool ok) {
  std::shared_ptr<PendingRound> sent;
  Outgoing written;  // freed without the lock
  Outgoing next;
  bool claimed = false;
  bool remove_hold = false;
  {
    absl::MutexLock lock(&mu_);
    writing_ = false;
    written = std::move(in_flight_);
    sent = std::move(written.last_of);
    if (!ok) queue_.clear();  // the stream broke: OnDone fails the rounds
    claimed = ClaimNextLocked(&next);
    if (!claimed) remove_hold = TakeHoldLocked();
  }
  if (ok && sent != nullptr) sent->MarkSent();
  if (claimed) {
    WriteClaimed(std::move(next));
  } else if (remove_hold) {
    RemoveHold();  // OnDone may delete this stream now
  }
}

void RoundStream::OnWritesDoneDone(bool /*ok*/) {
  bool remove_hold = false;
  {
    absl::MutexLock lock(&mu_);
    writing_ = false;
    remove_hold = TakeHoldLocked();
  }
  if (remove_hold) RemoveHold();
}

void RoundStream::OnReadDone(bool ok) {
  if (!ok) {
    bool remove_hold = false;
    {
      absl::MutexLock lock(&mu_);
      reads_ended_ = true;
      queue_.clear();
      remove_hold = TakeHoldLocked();
    }
    if (remove_hold) RemoveHold();
    return;
  }
  Placer placer(this);
  std::vector<v1::Chunk> unplaced;
  absl::StatusOr<ResponseFields> response = ReadExchangeResponse(&response_, &placer, &unplaced);
  absl::Status bad;
  if (!response.ok()) {
    bad = absl::IsInvalidArgument(response.status())
              ? absl::InternalError(absl::StrCat(label_, ": ", response.status().message()))
              : response.status();  // the round's own check of a chunk
  } else if (std::shared_ptr<PendingRound> round = placer.Find(response->round); round == nullptr) {
    bad = absl::InternalError(
        absl::StrCat(label_, ": answered round ", response->round, ", which is not pending"));
  } else {
    if (response->last) {
      absl::MutexLock lock(&mu_);
      pending_.erase(response->round);
    }
    bad = round->Accept(*response, unplaced);
  }
  if (!bad.ok()) {
    // A reply that cannot be trusted ends the stream; its rounds fail.
    {
      absl::MutexLock lock(&mu_);
      if (protocol_error_.ok()) protocol_error_ = bad;
    }
    context_.TryCancel();
  }
  // After a cancel this read fails, which ends the reads (and the hold).
  StartRead(&response_);
}

void RoundStream::OnDone(const grpc::Status& status) {
  std::shared_ptr<RoundStream> self;
  absl::flat_hash_map<uint64_t, std::shared_ptr<PendingRound>> pending;
  absl::Status failure;
  {
    absl::MutexLock lock(&mu_);
    ended_ = true;
    pending.swap(pending_);
    if (!protocol_error_.ok()) {
      failure = protocol_error_;
    } else if (deadline_) {
      failure = absl::DeadlineExceededError(absl::StrCat(
          label_, ": no answer to a push within the RPC timeout; the stream was cancelled"));
    } else if (status.ok()) {
      failure = absl::UnavailableError(
          absl::StrCat(label_, ": the shard ended the push stream before answering"));
    } else {
      failure = FromGrpcCall(status, context_, label_);
    }
    end_status_ = failure;
    self = std::move(self_);
  }
  for (auto& [id, round] : pending) round->Complete(failure, {});
  // `self` may hold the last reference: this object is deleted on return.
}

}  // namespace client
}  // namespace dcasgd
