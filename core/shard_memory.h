#ifndef DCASGD_CORE_SHARD_MEMORY_H_
#define DCASGD_CORE_SHARD_MEMORY_H_

#include <cstdint>
#include <string>

namespace dcasgd {

// The one sizing rule of a parameter shard (docs/operations.md, "Sizing a
// shard"): what a shard's resident memory is at most, given what it holds.
// ShardStore::Declare checks it against the memory budget before it
// allocates anything, the operations guide prints the same formula, and
// tests/integration/shard_memory_test.cc measures real shards against it.

// What the shard holds (over every declared tensor).
struct ShardFootprint {
  uint64_t weight_elements = 0;  // float32 weights of the chunks this shard owns
  uint64_t chunks = 0;           // chunks this shard owns
  uint64_t spec_bytes = 0;       // bytes of explicit initial values kept with the specs
};

// How the shard is configured.
struct ShardMemoryConfig {
  // float32 vectors of optimizer state per weight: the mean square of
  // DC-ASGD-a, the momentum and the gap scale of gap-aware damping, 0 to 3.
  uint32_t state_vectors = 0;
  // Whether the rule keeps a backup per worker (DC-ASGD or gap-aware damping
  // in async or SSP modes; plain ASGD and SSGD never read one).
  bool backups = false;
  // Bytes of one backup element: 4 for float32, 2 for bfloat16 / float16
  // (--backup_dtype).
  uint32_t backup_element_bytes = 4;
  uint32_t max_workers = 0;
  // Backups kept beyond one per worker: the sum of the pipeline depths of
  // the live workers (ps.proto JoinRequest.pipeline_depth; a worker of depth
  // d keeps d + 1).
  uint64_t extra_backups = 0;
  // Whether pushes wait in the shard (SSGD rounds, SSP bound): then each
  // worker may have one push's gradients parked there.
  bool waiting_pushes = false;
  // The shard-wide budget of request bytes in flight.
  uint64_t inflight_bytes = 0;
};

// Resident bytes by cause. Every term is an upper bound for what it names.
struct ShardMemory {
  uint64_t base = 0;             // the process without tensors: code, gRPC, allocator
  uint64_t weights = 0;          // 4 B per owned weight
  uint64_t optimizer_state = 0;  // 4 B per weight per state vector
  // 4 B (or 2 B in 16 bits) per weight per backup: one per worker up to
  // max_workers, plus the extra backups of pipelined workers.
  uint64_t backups = 0;
  uint64_t waiting = 0;         // SSGD/SSP: one parked push per worker, 4 B per weight
  uint64_t chunk_overhead = 0;  // bookkeeping per chunk and per backup of a chunk
  uint64_t specs = 0;           // explicit initial values, kept for re-declaration
  uint64_t inflight = 0;        // the in-flight budget
  uint64_t transport = 0;       // HTTP/2 windows: one per worker's stream

  uint64_t total() const;
  // "1.23 GiB = base 64.0 MiB + weights ... + in flight ...", for messages.
  std::string DebugString() const;
};

// Per-process baseline: code, gRPC's threads and buffers of idle
// connections, the allocator's arenas and the metrics registry (measured on
// Debian 12 / gRPC 1.51 at about 25 MiB; twice that is allowed).
inline constexpr uint64_t kShardBaseBytes = uint64_t{48} << 20;
// Bookkeeping of one owned chunk (its struct, mutex, map node and the
// allocator's headers of its vectors), and of one backup of one chunk (hash
// map slot, vector header and allocation header).
inline constexpr uint64_t kChunkOverheadBytes = 512;
inline constexpr uint64_t kBackupOverheadBytes = 96;
// The HTTP/2 flow-control window of one stream, fixed (no BDP probing): what
// the transport may hold of a stream the shard is not reading (one that waits
// for the in-flight budget). At 256 KiB a stream still moves 1.3 GB/s over a
// 0.2 ms round trip.
inline constexpr uint64_t kStreamWindowBytes = uint64_t{256} << 10;

ShardMemory ShardMemoryFor(const ShardFootprint& footprint, const ShardMemoryConfig& config);

// "123.4 MiB".
std::string HumanBytes(uint64_t bytes);

}  // namespace dcasgd

#endif  // DCASGD_CORE_SHARD_MEMORY_H_
