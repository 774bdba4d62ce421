#include "services/worker/data_source.h"

#include <memory>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace dcasgd {
namespace {

absl::StatusOr<std::vector<std::string>> ShardKeys(storage::BlobStore& store,
                                                   const std::string& split) {
  auto listed = store.List(split + "/");
  if (!listed.ok()) return listed.status();
  std::vector<std::string> keys;
  for (const storage::BlobInfo& blob : *listed) {
    if (absl::EndsWith(blob.key, ".dsd")) keys.push_back(blob.key);
  }
  return keys;  // List is sorted by key
}

}  // namespace

absl::StatusOr<std::unique_ptr<DataSource>> DataSource::Open(
    const std::string& root, std::shared_ptr<DataShardCache> cache) {
  auto store = storage::OpenBlobStore(root);
  if (!store.ok()) return store.status();
  auto train = ShardKeys(**store, "train");
  if (!train.ok()) return train.status();
  if (train->empty()) {
    return absl::NotFoundError(absl::StrCat("no training data shards (train/*.dsd) under ", root,
                                            ": run dcasgd-prepare-data first"));
  }
  auto test = ShardKeys(**store, "test");
  if (!test.ok()) return test.status();
  return std::unique_ptr<DataSource>(
      new DataSource(*std::move(store), *std::move(train), *std::move(test), std::move(cache)));
}

absl::StatusOr<data::LabeledExamples> DataSource::Load(const std::string& key) {
  auto bytes = store_->Get(key);
  if (!bytes.ok()) return bytes.status();
  auto shard = data::DecodeDataShard(*bytes, store_->Describe(key));
  if (!shard.ok()) return shard.status();
  return data::ToLabeledExamples(*shard);
}

absl::StatusOr<std::shared_ptr<const data::LabeledExamples>> DataSource::LoadTrain(size_t index) {
  if (index >= train_.size()) {
    return absl::OutOfRangeError(
        absl::StrCat("data shard ", index, " of ", train_.size(), " does not exist"));
  }
  const std::string& key = train_[index];
  if (cache_ != nullptr) {
    if (std::shared_ptr<const data::LabeledExamples> cached = cache_->Find(key)) return cached;
  }
  auto loaded = Load(key);
  if (!loaded.ok()) return loaded.status();
  auto examples = std::make_shared<const data::LabeledExamples>(*std::move(loaded));
  if (cache_ != nullptr) cache_->Insert(key, examples);
  return examples;
}

absl::StatusOr<data::LabeledExamples> DataSource::LoadTest() {
  if (test_.empty()) return absl::NotFoundError("no test data shards (test/*.dsd)");
  data::LabeledExamples all;
  for (const std::string& key : test_) {
    auto part = Load(key);
    if (!part.ok()) return part.status();
    if (all.count == 0) {
      all.feature_dim = part->feature_dim;
      all.num_classes = part->num_classes;
    }
    all.count += part->count;
    all.features.insert(all.features.end(), part->features.begin(), part->features.end());
    all.labels.insert(all.labels.end(), part->labels.begin(), part->labels.end());
  }
  return all;
}

}  // namespace dcasgd
