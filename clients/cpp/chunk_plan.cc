#include "clients/cpp/chunk_plan.h"

#include "base/check.h"
#include "core/placement.h"

namespace dcasgd {
namespace client {

std::vector<std::vector<PlannedChunk>> PlanChunks(absl::Span<const TensorLayout> tensors,
                                                  uint32_t shard_count) {
  DCASGD_CHECK(shard_count >= 1);
  std::vector<std::vector<PlannedChunk>> plan(shard_count);
  for (size_t t = 0; t < tensors.size(); ++t) {
    const TensorLayout& layout = tensors[t];
    const uint64_t chunks = layout.num_chunks();
    for (uint64_t i = 0; i < chunks; ++i) {
      const uint32_t shard = ShardOfChunk(layout.name, i, shard_count);
      plan[shard].push_back(PlannedChunk{t, i, layout.chunk_offset(i), layout.chunk_length(i)});
    }
  }
  return plan;
}

std::vector<uint32_t> ShardsWithChunks(const std::vector<std::vector<PlannedChunk>>& plan) {
  std::vector<uint32_t> shards;
  for (uint32_t s = 0; s < plan.size(); ++s) {
    if (!plan[s].empty()) shards.push_back(s);
  }
  return shards;
}

}  // namespace client
}  // namespace dcasgd
