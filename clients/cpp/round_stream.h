#ifndef DCASGD_CLIENTS_CPP_ROUND_STREAM_H_
#define DCASGD_CLIENTS_CPP_ROUND_STREAM_H_

// Internal to clients/cpp: a worker's long-lived Exchange stream to one
// shard (ps.proto ParameterShard.Exchange), over which its pushes travel as
// numbered rounds with no per-call setup and no thread of their own (gRPC's
// callback API).

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "clients/cpp/chunk_stream.h"
#include "clients/cpp/shard_session.h"
#include "dcasgd/v1/ps.grpc.pb.h"
#include "grpcpp/channel.h"
#include "grpcpp/client_context.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/client_callback.h"
#include "wire/exchange_codec.h"

namespace dcasgd {
namespace client {

class RoundStream;

// One round (one push) on one shard, from the moment it is queued until the
// shard answered it or its stream ended.
class PendingRound {
 public:
  PendingRound(const CallTensors& tensors, const std::vector<PlannedChunk>& chunks,
               absl::string_view label, bool pull_back);

  PendingRound(const PendingRound&) = delete;
  PendingRound& operator=(const PendingRound&) = delete;

  // Blocks until the round is answered or its stream ended: the shard's
  // status (prefixed with the shard's label), INTERNAL for a bad reply
  // (ChunkReceiver). After `timeout` the stream is cancelled and the result
  // is DEADLINE_EXCEEDED. On return nothing writes into the destinations any
  // more. On success `reply` holds the version, staleness and timings.
  absl::Status Wait(absl::Duration timeout, ShardReply* reply);

  // Cancels the stream the round travels on (its Wait then returns
  // CANCELLED unless it was answered first). Does not wait.
  void Cancel();

 private:
  friend class RoundStream;

  // The reactor's side (its read callbacks run one at a time): where the
  // values of one answered chunk go, as the reader reaches them
  // (ChunkReceiver::Place); then the rest of the answer message, with the
  // chunks not placed. The round completes with its last message. An error
  // is a reply that cannot be trusted (it ends the stream).
  absl::StatusOr<absl::Span<float>> Place(absl::string_view tensor, uint64_t chunk_index,
                                          Dtype dtype, size_t bytes);
  absl::Status Accept(const ResponseFields& response, const std::vector<v1::Chunk>& unplaced);
  absl::Status WeightsWithoutPullBack() const;
  // Records the result once (later calls are ignored).
  void Complete(absl::Status status, const ShardReply& reply);
  // The round's last message was written.
  void MarkSent();
  // Chunks [begin, end) of the round's plan encoded as a message of round
  // `id` (no header: not the first), or null once the round completed: the
  // caller may change its gradients from then on.
  std::unique_ptr<grpc::ByteBuffer> EncodeLater(uint64_t id, size_t begin, size_t end);

  // Read callbacks only.
  ChunkReceiver receiver_;
  const std::string label_;
  const bool pull_back_;
  const absl::Time start_ = absl::Now();
  absl::Time first_reply_ = absl::InfinitePast();
  // The caller's, alive until the round's Wait returned.
  const CallTensors& tensors_;
  const std::vector<PlannedChunk>& chunks_;

  // Held while a message of the round is encoded from the caller's
  // gradients; taken after the stream's mu_ when both are held.
  absl::Mutex sources_mu_;
  bool sources_released_ ABSL_GUARDED_BY(sources_mu_) = false;  // completed

  absl::Mutex mu_;
  // Set once queued, dropped on completion; cancelled on timeout.
  std::shared_ptr<RoundStream> stream_ ABSL_GUARDED_BY(mu_);
  // When its messages were queued, and when the last one was written.
  absl::Time queued_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  absl::Time sent_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status status_ ABSL_GUARDED_BY(mu_);
  ShardReply reply_ ABSL_GUARDED_BY(mu_);
};

// The stream itself. Open() starts the call; Start() queues a round and
// returns at once; the reactor writes queued messages one at a time, reads
// the answers and hands them to their rounds. When the stream ends (the
// shard restarted, a cancel, a protocol error) every round still pending
// fails with the stream's status, and the owner opens a new stream for the
// next round (ShardSession::Exchange).
//
// Its requests are encoded straight into byte buffers
// (wire/exchange_codec.h): a gradient's values are copied once, from the
// caller's buffer into the message. Start encodes a round's first two
// messages (up to 1.25 MiB of values); the others are encoded on gRPC's
// thread, each while the one before it is written (WriteClaimed), so that
// a large push costs the caller's thread little, its copying overlaps the
// sending, and a push to several shards starts on all of them at once. A round
// answered before all of it was sent (the shard rejected it early) releases
// the caller's buffers at once: its messages not yet encoded are dropped,
// as the shard drops the rest of a rejected round. The answers'
// values are decoded straight from the received bytes into the caller's
// tensors (ReadExchangeResponse): one copy each way.
//
// Thread-safe. Owned by shared pointers: the stream keeps itself alive until
// gRPC's last callback (OnDone), so it may outlive its owner briefly.
class RoundStream final : public grpc::ClientBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>,
                          public std::enable_shared_from_this<RoundStream> {
 public:
  // Opens the stream on `channel` (kept until the stream ended). `label`
  // prefixes every error. Its messages carry at most 1 MiB of values (the
  // first of a round 256 KiB) and at most `max_message_bytes` / 2 (or one
  // chunk, if larger).
  static std::shared_ptr<RoundStream> Open(std::shared_ptr<grpc::Channel> channel,
                                           std::string label, size_t max_message_bytes);

  // Queues the round of `chunks` with `step` (and `base_step`, ps.proto
  // RoundHeader) as `worker`; `tensors` and
  // `chunks` must stay alive (and the destinations untouched) until the
  // round's Wait returned. Never blocks. A stream that already ended fails
  // the round at once (UNAVAILABLE).
  std::shared_ptr<PendingRound> Start(const WorkerCredentials& worker, uint64_t step,
                                      const CallTensors& tensors,
                                      const std::vector<PlannedChunk>& chunks, bool pull_back,
                                      uint64_t base_step = 0);

  // True once the stream ended: open a new one.
  bool ended() const;
  // Cancels the call (pending rounds fail with DEADLINE_EXCEEDED when
  // `deadline`, CANCELLED otherwise). Does not wait.
  void Cancel(bool deadline);
  // Half-closes (the shard answers what it has and ends the call) and waits
  // until the call ended, at most `timeout`; then cancels it and waits.
  void Close(absl::Duration timeout);

  // gRPC callbacks.
  void OnWriteDone(bool ok) override;
  void OnWritesDoneDone(bool ok) override;
  void OnReadDone(bool ok) override;
  void OnDone(const grpc::Status& status) override;

 private:
  // A message to write; the last one of a round points at it. Encoded, or
  // (bytes null) chunks [begin, end) of `round`, encoded later.
  struct Outgoing {
    std::unique_ptr<grpc::ByteBuffer> bytes;
    std::shared_ptr<PendingRound> last_of;
    std::shared_ptr<PendingRound> round;
    uint64_t round_id = 0;
    size_t begin = 0;
    size_t end = 0;
    uint64_t seq = 0;       // its place in the stream's queue
    bool encoding = false;  // being encoded ahead: not to be taken yet
  };

  RoundStream(std::shared_ptr<grpc::Channel> channel, std::string label, size_t max_message_bytes);

  // The status of a round that came after the stream's reads or writes
  // ended: UNAVAILABLE, with how the stream ended once it did.
  absl::Status EndedBeforeSentLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The writer: one message is written at a time; while it is, the next
  // one is encoded (EncodeAhead, on the same thread, without the lock), so
  // that its write can start as soon as the one before is done.
  //
  // Starts writing the next queued message unless a write is outstanding.
  void WriteNext() ABSL_LOCKS_EXCLUDED(mu_);
  // Writes `next` (claimed: writing_ is set), encoding it first if it was
  // not, and then encodes the one after it.
  void WriteClaimed(Outgoing next) ABSL_LOCKS_EXCLUDED(mu_);
  // Encodes the queue's first message `ahead` (marked encoding) and writes it
  // if the write before it finished meanwhile.
  void EncodeAhead(Outgoing ahead) ABSL_LOCKS_EXCLUDED(mu_);
  // Takes the next queued message for writing, if it may be written now.
  bool ClaimNextLocked(Outgoing* next) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // True (once) when the hold may go: reads ended, no write and no encoding
  // outstanding. The caller then calls RemoveHold() and touches nothing more.
  bool TakeHoldLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Finds the round of an answer being read, for its chunks' values.
  class Placer;

  grpc::GenericStub stub_;
  const std::string label_;
  const size_t message_bytes_;  // cut a round's gradients into messages of this size
  grpc::ClientContext context_;
  // Read side: gRPC's read callbacks only.
  grpc::ByteBuffer response_;

  // Serialises Start, so rounds are queued in the order of their numbers.
  absl::Mutex start_mu_;
  mutable absl::Mutex mu_;
  uint64_t last_round_ ABSL_GUARDED_BY(mu_) = 0;
  absl::flat_hash_map<uint64_t, std::shared_ptr<PendingRound>> pending_ ABSL_GUARDED_BY(mu_);
  std::deque<Outgoing> queue_ ABSL_GUARDED_BY(mu_);
  uint64_t last_seq_ ABSL_GUARDED_BY(mu_) = 0;
  Outgoing in_flight_ ABSL_GUARDED_BY(mu_);
  // A message is being encoded ahead (its thread still uses this stream).
  bool encoding_ ABSL_GUARDED_BY(mu_) = false;
  // A write or the half-close is outstanding (the hold stays meanwhile).
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool half_closed_ ABSL_GUARDED_BY(mu_) = false;
  bool reads_ended_ ABSL_GUARDED_BY(mu_) = false;
  bool hold_removed_ ABSL_GUARDED_BY(mu_) = false;
  bool deadline_ ABSL_GUARDED_BY(mu_) = false;  // cancelled by a round's timeout
  // A reply that could not be trusted: the stream was cancelled for it.
  absl::Status protocol_error_ ABSL_GUARDED_BY(mu_);
  bool ended_ ABSL_GUARDED_BY(mu_) = false;
  // What the pending rounds failed with at OnDone.
  absl::Status end_status_ ABSL_GUARDED_BY(mu_);
  // Keeps the reactor alive until OnDone.
  std::shared_ptr<RoundStream> self_ ABSL_GUARDED_BY(mu_);
};

}  // namespace client
}  // namespace dcasgd

#endif  // DCASGD_CLIENTS_CPP_ROUND_STREAM_H_
