#ifndef DCASGD_SERVICES_WORKER_DATA_SOURCE_H_
#define DCASGD_SERVICES_WORKER_DATA_SOURCE_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "services/worker/data/data_shard.h"
#include "storage/blob_store.h"

namespace dcasgd {

// The data set a worker trains on: the train/ and test/ data shards written
// by dcasgd-prepare-data under a store root (s3://bucket/prefix or a
// directory). Not thread-safe: one per worker thread.
class DataSource {
 public:
  // Lists the shards. NOT_FOUND when the root holds no train/*.dsd objects;
  // the store's errors (PERMISSION_DENIED naming the bucket on a 403, ...)
  // otherwise.
  static absl::StatusOr<std::unique_ptr<DataSource>> Open(const std::string& root);

  size_t num_train_shards() const { return train_.size(); }
  // Reads and verifies train shard `index`: DATA_LOSS naming the object when it
  // is truncated or corrupt (never trained on).
  absl::StatusOr<data::LabeledExamples> LoadTrain(size_t index);
  // Every test shard, concatenated. NOT_FOUND when there is none.
  absl::StatusOr<data::LabeledExamples> LoadTest();

 private:
  DataSource(std::unique_ptr<storage::BlobStore> store, std::vector<std::string> train,
             std::vector<std::string> test)
      : store_(std::move(store)), train_(std::move(train)), test_(std::move(test)) {}
  absl::StatusOr<data::LabeledExamples> Load(const std::string& key);

  std::unique_ptr<storage::BlobStore> store_;
  std::vector<std::string> train_;  // keys, sorted
  std::vector<std::string> test_;
};

}  // namespace dcasgd

#endif  // DCASGD_SERVICES_WORKER_DATA_SOURCE_H_
