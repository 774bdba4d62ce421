#ifndef DCASGD_CORE_SHARD_STORE_INTERNAL_H_
#define DCASGD_CORE_SHARD_STORE_INTERNAL_H_

// The store's own structures, shared by its two source files
// (shard_store.cc: workers, pulls and pushes; shard_store_tensors.cc:
// declarations, statistics, snapshots). Not for other users.

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "core/shard_store.h"

namespace dcasgd {

// Bytes held by `n` floats.
inline uint64_t FloatBytes(size_t n) { return static_cast<uint64_t>(n) * sizeof(float); }

// One chunk of a tensor owned by this shard. Never moves once created.
struct ShardStore::Chunk {
  Chunk(const std::string* tensor_name, uint64_t chunk_index, size_t n)
      : tensor(tensor_name), index(chunk_index), length(n) {}

  // Constant once the chunk is in tensors_ (set right after insertion, to the
  // map key that owns the name).
  const std::string* tensor;
  const uint64_t index;
  const size_t length;

  mutable absl::Mutex mu;
  std::vector<float> weights ABSL_GUARDED_BY(mu);
  std::vector<float> mean_square ABSL_GUARDED_BY(mu);  // empty unless DC-ASGD-a
  std::vector<float> momentum ABSL_GUARDED_BY(mu);     // empty unless momentum
  std::vector<float> gap_scale ABSL_GUARDED_BY(mu);    // empty unless gap-aware
  // w_bak(m): exactly the values last sent to worker m (paper Alg. 1).
  absl::flat_hash_map<WorkerId, std::vector<float>> backups ABSL_GUARDED_BY(mu);
};

struct ShardStore::Tensor {
  TensorSpec spec;                                   // defaults resolved
  std::map<uint64_t, std::unique_ptr<Chunk>> owned;  // by chunk index
};

}  // namespace dcasgd

#endif  // DCASGD_CORE_SHARD_STORE_INTERNAL_H_
