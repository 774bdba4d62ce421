#include "core/placement.h"

#include <algorithm>

#include "base/check.h"

namespace dcasgd {

uint64_t Fnv1a64(absl::string_view bytes, uint64_t hash) {
  for (unsigned char c : bytes) {
    hash ^= c;
    hash *= 0x100000001b3ULL;
  }
  return hash;
}

uint32_t ShardOfChunk(absl::string_view tensor, uint64_t chunk_index, uint32_t shard_count) {
  DCASGD_CHECK(shard_count >= 1);
  return static_cast<uint32_t>((Fnv1a64(tensor) + chunk_index) % shard_count);
}

int OwnedChunkRuns(uint64_t name_hash, uint64_t num_chunks, uint32_t shard_index,
                   uint32_t shard_count, ChunkRun runs[2]) {
  DCASGD_CHECK(shard_count >= 1 && shard_index < shard_count);
  // Indices below `wrap` keep h + i below 2^64; at i = wrap the sum is 0.
  const uint64_t wrap = name_hash == 0 ? num_chunks : std::min(num_chunks, uint64_t{0} - name_hash);
  runs[0].first = (shard_index + shard_count - name_hash % shard_count) % shard_count;
  runs[0].end = wrap;
  if (wrap == num_chunks) return 1;
  runs[1].first = wrap + shard_index;
  runs[1].end = num_chunks;
  return 2;
}

}  // namespace dcasgd
