#ifndef DCASGD_CLIENTS_CPP_CHUNK_PLAN_H_
#define DCASGD_CLIENTS_CPP_CHUNK_PLAN_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/types/span.h"
#include "core/chunk_layout.h"

namespace dcasgd {
namespace client {

// One chunk of one tensor of a call, as planned for its shard (core's
// ChunkRef, in core/shard_store.h, is a chunk held by a shard's store).
struct PlannedChunk {
  size_t tensor = 0;    // index into the planned tensors
  uint64_t index = 0;   // chunk index within the tensor
  uint64_t offset = 0;  // first element in the flat tensor
  uint64_t length = 0;  // elements
};

// Splits `tensors` into chunks (ps.proto "Chunking and placement") and groups
// them by owning shard: result[s] holds the chunks of shard s, in tensor order
// and then chunk order. Always returns `shard_count` lists (some may be empty).
// Requires shard_count >= 1 and every chunk_elements >= 1.
std::vector<std::vector<PlannedChunk>> PlanChunks(absl::Span<const TensorLayout> tensors,
                                                  uint32_t shard_count);

// The shards that own at least one chunk of `plan` (PlanChunks), ascending.
std::vector<uint32_t> ShardsWithChunks(const std::vector<std::vector<PlannedChunk>>& plan);

}  // namespace client
}  // namespace dcasgd

#endif  // DCASGD_CLIENTS_CPP_CHUNK_PLAN_H_
