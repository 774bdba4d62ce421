#ifndef DCASGD_CORE_PLACEMENT_H_
#define DCASGD_CORE_PLACEMENT_H_

#include <cstdint>

#include "absl/strings/string_view.h"

namespace dcasgd {

// 64-bit FNV-1a of `bytes` (offset basis 0xcbf29ce484222325, prime
// 0x100000001b3). Part of the wire contract: every client computes it.
// Passing the hash of earlier bytes as `hash` continues it over `bytes`.
inline constexpr uint64_t kFnv1a64Offset = 0xcbf29ce484222325ULL;
uint64_t Fnv1a64(absl::string_view bytes, uint64_t hash = kFnv1a64Offset);

// The shard that owns chunk `chunk_index` of `tensor` in a job of
// `shard_count` shards: (Fnv1a64(tensor) + chunk_index) mod shard_count, with
// the sum wrapping mod 2^64. A pure function: servers and clients in every
// language agree on it without a lookup service. Consecutive chunks of a
// tensor go round-robin over the shards, starting at a name-dependent shard.
// Requires shard_count >= 1.
uint32_t ShardOfChunk(absl::string_view tensor, uint64_t chunk_index, uint32_t shard_count);

// Every `stride`-th chunk index from `first` up to, not including, `end`.
struct ChunkRun {
  uint64_t first = 0;
  uint64_t end = 0;
  // How many indices the run holds.
  uint64_t count(uint32_t stride) const { return first < end ? (end - 1 - first) / stride + 1 : 0; }
};

// The chunks among `num_chunks` of a tensor whose name hashes to `name_hash`
// (Fnv1a64) that shard `shard_index` of `shard_count` owns, without visiting
// each chunk (a declaration may name 2^40): at most two runs with stride
// shard_count, because h + i wraps mod 2^64 at most once. Fills `runs` and
// returns how many (1 or 2; a run may be empty).
int OwnedChunkRuns(uint64_t name_hash, uint64_t num_chunks, uint32_t shard_index,
                   uint32_t shard_count, ChunkRun runs[2]);

}  // namespace dcasgd

#endif  // DCASGD_CORE_PLACEMENT_H_
