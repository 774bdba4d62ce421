#ifndef DCASGD_SERVICES_WORKER_DATA_SOURCE_H_
#define DCASGD_SERVICES_WORKER_DATA_SOURCE_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "services/worker/data/data_shard.h"
#include "services/worker/data_cache.h"
#include "storage/blob_store.h"

namespace dcasgd {

// The data set a worker trains on: the train/ and test/ data shards written
// by dcasgd-prepare-data under a store root (s3://bucket/prefix or a
// directory). Not thread-safe: one per worker thread (they may share one
// cache).
class DataSource {
 public:
  // Lists the shards. NOT_FOUND when the root holds no train/*.dsd objects;
  // the store's errors (PERMISSION_DENIED naming the bucket on a 403, ...)
  // otherwise. With a `cache`, train shards once decoded are kept there.
  static absl::StatusOr<std::unique_ptr<DataSource>> Open(
      const std::string& root, std::shared_ptr<DataShardCache> cache = nullptr);

  size_t num_train_shards() const { return train_.size(); }
  // Train shard `index`: from the cache, or read and verified (DATA_LOSS
  // naming the object when it is truncated or corrupt: never trained on, and
  // never cached) and then cached.
  absl::StatusOr<std::shared_ptr<const data::LabeledExamples>> LoadTrain(size_t index);
  // Every test shard, concatenated. NOT_FOUND when there is none.
  absl::StatusOr<data::LabeledExamples> LoadTest();

 private:
  DataSource(std::unique_ptr<storage::BlobStore> store, std::vector<std::string> train,
             std::vector<std::string> test, std::shared_ptr<DataShardCache> cache)
      : store_(std::move(store)),
        train_(std::move(train)),
        test_(std::move(test)),
        cache_(std::move(cache)) {}
  absl::StatusOr<data::LabeledExamples> Load(const std::string& key);

  std::unique_ptr<storage::BlobStore> store_;
  std::vector<std::string> train_;  // keys, sorted
  std::vector<std::string> test_;
  std::shared_ptr<DataShardCache> cache_;  // may be null
};

}  // namespace dcasgd

#endif  // DCASGD_SERVICES_WORKER_DATA_SOURCE_H_
