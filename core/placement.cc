#include "core/placement.h"

#include "core/check.h"

namespace dcasgd {

uint64_t Fnv1a64(absl::string_view bytes) {
  uint64_t hash = 0xcbf29ce484222325ULL;
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

}  // namespace dcasgd
