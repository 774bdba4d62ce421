#ifndef DCASGD_CORE_CHECKPOINT_H_
#define DCASGD_CORE_CHECKPOINT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/tensor.h"

namespace dcasgd {

// The durable state of one chunk. Optimizer vectors are empty when the rule
// does not use them. Backups are not checkpointed: after a restart workers
// re-join and pull.
struct ChunkState {
  uint64_t index = 0;
  std::vector<float> weights;
  std::vector<float> mean_square;
  std::vector<float> momentum;
  std::vector<float> gap_scale;  // gap-aware damping's C (format version 2)
};

struct TensorState {
  TensorSpec spec;                 // chunk_elements resolved
  std::vector<ChunkState> chunks;  // the chunks this shard owns, by index
};

// Everything a shard needs to resume: a consistent cut at `version`.
struct ShardSnapshot {
  uint32_t shard_index = 0;
  uint32_t shard_count = 1;
  uint64_t version = 0;
  std::vector<TensorState> tensors;
};

// Writes `snapshot` to `path` atomically: a temporary file in the same
// directory, fsync, rename over `path`, fsync of the directory. On failure
// `path` is unchanged and the temporary file is removed. Returns the bytes
// written. Thread-compatible.
absl::StatusOr<uint64_t> WriteCheckpoint(const std::string& path, const ShardSnapshot& snapshot);

// Reads a checkpoint written by WriteCheckpoint. NOT_FOUND when `path` does
// not exist; DATA_LOSS naming the file when it is truncated, corrupt (bad
// magic, format version or checksum) or inconsistent.
absl::StatusOr<ShardSnapshot> ReadCheckpoint(const std::string& path);

}  // namespace dcasgd

#endif  // DCASGD_CORE_CHECKPOINT_H_
