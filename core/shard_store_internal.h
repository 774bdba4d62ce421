#ifndef DCASGD_CORE_SHARD_STORE_INTERNAL_H_
#define DCASGD_CORE_SHARD_STORE_INTERNAL_H_

// The store's own structures, shared by its two source files
// (shard_store.cc: workers, pulls and pushes; shard_store_tensors.cc:
// declarations, statistics, snapshots). Not for other users.

#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "core/dtype.h"
#include "core/shard_store.h"
#include "core/update_rule.h"

namespace dcasgd {

// Bytes held by `n` floats.
inline uint64_t FloatBytes(size_t n) { return static_cast<uint64_t>(n) * sizeof(float); }

// The backups w_bak(m) of one chunk, one per worker, in the shard's backup
// dtype (--backup_dtype): float32, or rounded to 16 bits (to nearest even),
// half the memory. Thread-compatible: the chunk's mutex guards it.
class ChunkBackups {
 public:
  explicit ChunkBackups(Dtype dtype) : dtype_(dtype) {}

  bool contains(WorkerId worker) const {
    return dtype_ == Dtype::kFloat32 ? f32_.contains(worker) : b16_.contains(worker);
  }
  // Drops `worker`'s backup; returns the bytes it held (0 if none).
  uint64_t Erase(WorkerId worker) {
    if (dtype_ == Dtype::kFloat32) return EraseFrom(f32_, worker);
    return EraseFrom(b16_, worker);
  }
  // Stores `values` (rounded to the dtype) as `worker`'s backup. Returns the
  // bytes a new backup adds (0 when it replaces one of the same length).
  uint64_t Write(WorkerId worker, absl::Span<const float> values) {
    if (dtype_ == Dtype::kFloat32) {
      auto [it, inserted] = f32_.try_emplace(worker);
      it->second.assign(values.begin(), values.end());
      return inserted ? Bytes(values.size()) : 0;
    }
    auto [it, inserted] = b16_.try_emplace(worker);
    it->second.resize(values.size());
    FloatTo16(dtype_, values, absl::MakeSpan(it->second));
    return inserted ? Bytes(values.size()) : 0;
  }
  // `worker`'s backup as float32 into `out` (of its length); false if none.
  bool Read(WorkerId worker, absl::Span<float> out) const {
    if (dtype_ == Dtype::kFloat32) {
      auto it = f32_.find(worker);
      if (it == f32_.end()) return false;
      std::copy(it->second.begin(), it->second.end(), out.begin());
      return true;
    }
    auto it = b16_.find(worker);
    if (it == b16_.end()) return false;
    FloatFrom16(dtype_, it->second, out);
    return true;
  }
  // Points the kernel's backup view (v->backup, or v->backup16 for 16 bits)
  // at `worker`'s backup; false if none. Valid until the next change.
  bool Attach(WorkerId worker, ChunkVectors* v) const {
    if (dtype_ == Dtype::kFloat32) {
      auto it = f32_.find(worker);
      if (it == f32_.end()) return false;
      v->backup = it->second.data();
      return true;
    }
    auto it = b16_.find(worker);
    if (it == b16_.end()) return false;
    v->backup16 = it->second.data();
    return true;
  }
  // The bytes of one backup of `n` elements.
  uint64_t Bytes(size_t n) const { return static_cast<uint64_t>(n) * DtypeBytes(dtype_); }

 private:
  template <typename Map>
  uint64_t EraseFrom(Map& map, WorkerId worker) {
    auto it = map.find(worker);
    if (it == map.end()) return 0;
    const uint64_t bytes = Bytes(it->second.size());
    map.erase(it);
    return bytes;
  }

  const Dtype dtype_;
  // Only the map of dtype_ is used.
  absl::flat_hash_map<WorkerId, std::vector<float>> f32_;
  absl::flat_hash_map<WorkerId, std::vector<uint16_t>> b16_;
};

// One chunk of a tensor owned by this shard. Never moves once created.
struct ShardStore::Chunk {
  Chunk(const std::string* tensor_name, uint64_t chunk_index, size_t n, Dtype backup_dtype)
      : tensor(tensor_name), index(chunk_index), length(n), backups(backup_dtype) {}

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
  // w_bak(m): the values last sent to worker m (paper Alg. 1), exactly in
  // float32, or rounded to the 16-bit backup dtype.
  ChunkBackups backups ABSL_GUARDED_BY(mu);
};

struct ShardStore::Tensor {
  TensorSpec spec;                                   // defaults resolved
  std::map<uint64_t, std::unique_ptr<Chunk>> owned;  // by chunk index
};

}  // namespace dcasgd

#endif  // DCASGD_CORE_SHARD_STORE_INTERNAL_H_
