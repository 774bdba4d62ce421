#ifndef DCASGD_CLIENTS_CPP_CHUNK_PLAN_H_
#define DCASGD_CLIENTS_CPP_CHUNK_PLAN_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/types/span.h"

namespace dcasgd {
namespace client {

// What the client needs to know of a declared tensor to split it: no
// initialiser (explicit initial values can be large and are never needed
// again after the declaration).
struct TensorLayout {
  std::string name;
  uint64_t num_elements = 0;
  uint32_t chunk_elements = 0;  // resolved, >= 1

  // ceil(num_elements / chunk_elements); 0 for an empty tensor.
  uint64_t num_chunks() const;
  // Elements of chunk `index`: chunk_elements except for a shorter last one.
  // Requires index < num_chunks().
  uint64_t chunk_length(uint64_t index) const;
};

// One chunk of one tensor of a plan.
struct ChunkRef {
  size_t tensor = 0;    // index into the planned tensors
  uint64_t index = 0;   // chunk index within the tensor
  uint64_t offset = 0;  // first element in the flat tensor
  uint64_t length = 0;  // elements
};

// Splits `tensors` into chunks (ps.proto "Chunking and placement") and groups
// them by owning shard: result[s] holds the chunks of shard s, in tensor order
// and then chunk order. Always returns `shard_count` lists (some may be empty).
// Requires shard_count >= 1 and every chunk_elements >= 1.
std::vector<std::vector<ChunkRef>> PlanChunks(absl::Span<const TensorLayout> tensors,
                                              uint32_t shard_count);

}  // namespace client
}  // namespace dcasgd

#endif  // DCASGD_CLIENTS_CPP_CHUNK_PLAN_H_
