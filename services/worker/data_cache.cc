#include "services/worker/data_cache.h"

#include <utility>

#include "absl/strings/str_format.h"

namespace dcasgd {

size_t DataShardCache::BytesOf(const data::LabeledExamples& examples) {
  return examples.features.size() * sizeof(float) + examples.labels.size() * sizeof(int);
}

std::shared_ptr<const data::LabeledExamples> DataShardCache::Find(const std::string& key) {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(key);
  if (it == entries_.end()) {
    ++misses_;
    return nullptr;
  }
  ++hits_;
  recency_.splice(recency_.begin(), recency_, it->second.recency);
  return it->second.examples;
}

void DataShardCache::Insert(const std::string& key,
                            std::shared_ptr<const data::LabeledExamples> examples) {
  const size_t bytes = BytesOf(*examples);
  absl::MutexLock lock(&mu_);
  if (auto it = entries_.find(key); it != entries_.end()) EraseLocked(it);
  if (bytes > capacity_bytes_) return;
  while (bytes_ + bytes > capacity_bytes_) EraseLocked(entries_.find(recency_.back()));
  recency_.push_front(key);
  entries_.emplace(key, Entry{std::move(examples), bytes, recency_.begin()});
  bytes_ += bytes;
}

void DataShardCache::EraseLocked(absl::flat_hash_map<std::string, Entry>::iterator it) {
  bytes_ -= it->second.bytes;
  recency_.erase(it->second.recency);
  entries_.erase(it);
}

size_t DataShardCache::bytes() const {
  absl::MutexLock lock(&mu_);
  return bytes_;
}

size_t DataShardCache::size() const {
  absl::MutexLock lock(&mu_);
  return entries_.size();
}

uint64_t DataShardCache::hits() const {
  absl::MutexLock lock(&mu_);
  return hits_;
}

uint64_t DataShardCache::misses() const {
  absl::MutexLock lock(&mu_);
  return misses_;
}

std::string DataShardCache::Summary() const {
  absl::MutexLock lock(&mu_);
  constexpr double kMiB = 1 << 20;
  return absl::StrFormat("data cache: %u hits, %u misses, %.1f of %.0f MiB held", hits_, misses_,
                         static_cast<double>(bytes_) / kMiB,
                         static_cast<double>(capacity_bytes_) / kMiB);
}

std::shared_ptr<DataShardCache> MakeDataShardCache(size_t capacity_bytes) {
  if (capacity_bytes == 0) return nullptr;
  return std::make_shared<DataShardCache>(capacity_bytes);
}

}  // namespace dcasgd
