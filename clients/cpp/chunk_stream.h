#ifndef DCASGD_CLIENTS_CPP_CHUNK_STREAM_H_
#define DCASGD_CLIENTS_CPP_CHUNK_STREAM_H_

// Internal to clients/cpp: one shard's part of a Pull, Push or PushPull as a
// gRPC stream of chunks (ps.proto "Chunking and placement"). One attempt per
// call; retries and re-joins are ShardSession's.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "clients/cpp/chunk_plan.h"
#include "clients/cpp/shard_session.h"
#include "core/dtype.h"

namespace dcasgd {
namespace client {

// The tensors of one call, and where their values come from or go to.
struct CallTensors {
  explicit CallTensors(std::vector<TensorLayout> tensor_layouts);
  // `index` points into `layouts`: neither copied nor moved.
  CallTensors(const CallTensors&) = delete;
  CallTensors& operator=(const CallTensors&) = delete;

  std::vector<TensorLayout> layouts;
  absl::flat_hash_map<absl::string_view, size_t> index;  // by name, into layouts
  // Per tensor: the gradient to send (Push, PushPull) and the buffer of
  // num_elements floats to fill (Pull, PushPull); null where unused.
  std::vector<const float*> sources;
  std::vector<float*> destinations;
  // What gradients travel as, and the weights asked back in (ps.proto Dtype;
  // ClientOptions.wire_dtype). Replies are decoded by their own Chunk.dtype.
  Dtype wire_dtype = Dtype::kFloat32;
};

// What one shard answered, and where the time went.
struct ShardReply {
  uint64_t version = 0;    // the shard version after the call
  uint64_t staleness = 0;  // of the push, as the shard observed it
  absl::Duration send_time, wait_time, receive_time;
};

// Checks the chunks one shard sends back against what was asked of it and
// copies their values into the destination tensors. One per attempt.
// `tensors`, `expected` and the label must outlive it.
class ChunkReceiver {
 public:
  ChunkReceiver(const CallTensors& tensors, const std::vector<PlannedChunk>& expected,
                absl::string_view shard_label);

  // Decodes one received chunk (from its Chunk.dtype) into its destination;
  // `version` and `staleness` are what its message reported. INTERNAL when
  // the shard sent a chunk that was not asked for, twice, with an unknown
  // dtype or with the wrong length.
  absl::Status Accept(const v1::Chunk& chunk, uint64_t version, uint64_t staleness);

  // The same checks for a chunk whose values are still on the wire, `bytes`
  // long in `dtype`: where they are to be decoded (the chunk counts as
  // received), or the error Accept would give. For a reader that decodes
  // them straight from the message (wire/exchange_codec.h).
  absl::StatusOr<absl::Span<float>> Place(absl::string_view tensor, uint64_t chunk_index,
                                          Dtype dtype, size_t bytes);

  // INTERNAL unless every expected chunk arrived.
  absl::Status Finish() const;

  uint64_t version() const { return version_; }
  // PushPull replies: the staleness the shard observed for the push.
  uint64_t staleness() const { return staleness_; }

 private:
  absl::Status Error(absl::string_view what) const;
  // The tensor's position in `tensors_`, if chunk `index` of it is one asked
  // for and not received yet.
  absl::StatusOr<size_t> Find(absl::string_view tensor, uint64_t index) const;

  const CallTensors& tensors_;
  const absl::string_view shard_label_;
  const size_t expected_count_;
  // Per tensor and chunk: 0 not asked, 1 expected, 2 received.
  std::vector<std::vector<uint8_t>> wanted_;
  size_t received_ = 0;
  uint64_t version_ = 0;
  uint64_t staleness_ = 0;
};

// Pulls `chunks` (all owned by `session`'s shard) into their destinations.
// INTERNAL when the shard sends a chunk not asked for, twice, with the wrong
// length, or not all of them; otherwise the call's status (prefixed with the
// shard's label).
// `worker` is the shard's credentials() (worker id 0: a pull that records
// no backup).
absl::Status PullChunks(ShardSession& session, const WorkerCredentials& worker,
                        const CallTensors& tensors, const std::vector<PlannedChunk>& chunks,
                        ShardReply* reply);

// Streams the gradients of `chunks` as one push with `step`, computed on
// the weights `base_step` names (ps.proto PushRequest.base_step); with
// `pull_back` the updated values of the same chunks come back into the
// destinations (PushPull), checked as PullChunks does.
absl::Status PushChunks(ShardSession& session, const WorkerCredentials& worker, uint64_t step,
                        uint64_t base_step, const CallTensors& tensors,
                        const std::vector<PlannedChunk>& chunks, bool pull_back, ShardReply* reply);

}  // namespace client
}  // namespace dcasgd

#endif  // DCASGD_CLIENTS_CPP_CHUNK_STREAM_H_
