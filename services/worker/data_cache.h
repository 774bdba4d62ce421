#ifndef DCASGD_SERVICES_WORKER_DATA_CACHE_H_
#define DCASGD_SERVICES_WORKER_DATA_CACHE_H_

#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "services/worker/data/data_shard.h"

namespace dcasgd {

// Decoded data shards kept in memory, so that a worker that trains on a data
// shard again (the next epoch, another lease of it) neither reads, verifies
// nor decodes it again. Holds at most `capacity_bytes` of examples (features
// and labels); the least recently used shard is dropped first. A shard larger
// than the whole capacity is not kept. Shards are shared, not copied: one
// still in use stays alive after it was dropped here. Thread-safe: the
// logical workers of one process share one cache.
class DataShardCache {
 public:
  explicit DataShardCache(size_t capacity_bytes) : capacity_bytes_(capacity_bytes) {}
  DataShardCache(const DataShardCache&) = delete;
  DataShardCache& operator=(const DataShardCache&) = delete;

  // The shard stored under `key` (now the most recently used), or null.
  std::shared_ptr<const data::LabeledExamples> Find(const std::string& key);
  // Stores `examples` under `key` (replacing what was there), dropping the
  // least recently used shards until it fits.
  void Insert(const std::string& key, std::shared_ptr<const data::LabeledExamples> examples);

  // What one shard counts against the capacity.
  static size_t BytesOf(const data::LabeledExamples& examples);

  size_t capacity_bytes() const { return capacity_bytes_; }
  size_t bytes() const;
  size_t size() const;
  uint64_t hits() const;
  uint64_t misses() const;
  // "data cache: H hits, M misses, X of Y MiB held" for the log.
  std::string Summary() const;

 private:
  struct Entry {
    std::shared_ptr<const data::LabeledExamples> examples;
    size_t bytes = 0;
    std::list<std::string>::iterator recency;  // position in recency_
  };
  void EraseLocked(absl::flat_hash_map<std::string, Entry>::iterator it)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const size_t capacity_bytes_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, Entry> entries_ ABSL_GUARDED_BY(mu_);
  std::list<std::string> recency_ ABSL_GUARDED_BY(mu_);  // most recently used first
  size_t bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t hits_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t misses_ ABSL_GUARDED_BY(mu_) = 0;
};

// A cache of `capacity_bytes`, or null (no cache) for 0.
std::shared_ptr<DataShardCache> MakeDataShardCache(size_t capacity_bytes);

}  // namespace dcasgd

#endif  // DCASGD_SERVICES_WORKER_DATA_CACHE_H_
