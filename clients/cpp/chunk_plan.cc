#include "clients/cpp/chunk_plan.h"

#include <algorithm>

#include "base/check.h"
#include "core/placement.h"

namespace dcasgd {
namespace client {

uint64_t TensorLayout::num_chunks() const {
  DCASGD_CHECK(chunk_elements >= 1);
  return (num_elements + chunk_elements - 1) / chunk_elements;
}

uint64_t TensorLayout::chunk_length(uint64_t index) const {
  const uint64_t begin = index * chunk_elements;
  DCASGD_CHECK(begin < num_elements);
  return std::min<uint64_t>(chunk_elements, num_elements - begin);
}

std::vector<std::vector<ChunkRef>> PlanChunks(absl::Span<const TensorLayout> tensors,
                                              uint32_t shard_count) {
  DCASGD_CHECK(shard_count >= 1);
  std::vector<std::vector<ChunkRef>> plan(shard_count);
  for (size_t t = 0; t < tensors.size(); ++t) {
    const TensorLayout& layout = tensors[t];
    const uint64_t chunks = layout.num_chunks();
    for (uint64_t i = 0; i < chunks; ++i) {
      const uint32_t shard = ShardOfChunk(layout.name, i, shard_count);
      plan[shard].push_back(
          ChunkRef{t, i, i * uint64_t{layout.chunk_elements}, layout.chunk_length(i)});
    }
  }
  return plan;
}

}  // namespace client
}  // namespace dcasgd
