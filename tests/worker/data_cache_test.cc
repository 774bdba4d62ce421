#include "services/worker/data_cache.h"

#include <memory>
#include <string>

#include "gtest/gtest.h"

namespace dcasgd {
namespace {

// A shard of `count` examples of 4 features: 20 bytes each.
std::shared_ptr<const data::LabeledExamples> Shard(size_t count, float value = 0) {
  auto examples = std::make_shared<data::LabeledExamples>();
  examples->count = count;
  examples->feature_dim = 4;
  examples->num_classes = 2;
  examples->features.assign(count * 4, value);
  examples->labels.assign(count, 1);
  return examples;
}

TEST(DataShardCache, ABytesCountIsItsFeaturesAndLabels) {
  EXPECT_EQ(DataShardCache::BytesOf(*Shard(3)), 3 * (4 * sizeof(float) + sizeof(int)));
}

TEST(DataShardCache, FindsWhatWasInsertedWithoutCopyingIt) {
  DataShardCache cache(1000);
  auto shard = Shard(2, 0.5f);
  EXPECT_EQ(cache.Find("a"), nullptr);
  cache.Insert("a", shard);
  EXPECT_EQ(cache.Find("a"), shard);
  EXPECT_EQ(cache.Find("b"), nullptr);
  EXPECT_EQ(cache.hits(), 1u);
  EXPECT_EQ(cache.misses(), 2u);
  EXPECT_EQ(cache.bytes(), 40u);
  EXPECT_EQ(cache.size(), 1u);
}

TEST(DataShardCache, DropsTheLeastRecentlyUsedShardToStayWithinItsCapacity) {
  DataShardCache cache(100);  // five 20-byte examples
  cache.Insert("a", Shard(2));
  cache.Insert("b", Shard(2));
  ASSERT_NE(cache.Find("a"), nullptr);  // "b" is now the least recently used
  cache.Insert("c", Shard(1));          // 100 bytes: all fit
  EXPECT_EQ(cache.bytes(), 100u);
  cache.Insert("d", Shard(2));  // drops "b" only
  EXPECT_EQ(cache.Find("b"), nullptr);
  EXPECT_NE(cache.Find("a"), nullptr);
  EXPECT_NE(cache.Find("c"), nullptr);
  EXPECT_NE(cache.Find("d"), nullptr);
  EXPECT_EQ(cache.bytes(), 100u);
  EXPECT_EQ(cache.size(), 3u);
}

TEST(DataShardCache, ReplacingAShardCountsItOnce) {
  DataShardCache cache(100);
  cache.Insert("a", Shard(2, 1));
  auto newer = Shard(3, 2);
  cache.Insert("a", newer);
  EXPECT_EQ(cache.Find("a"), newer);
  EXPECT_EQ(cache.bytes(), 60u);
  EXPECT_EQ(cache.size(), 1u);
}

TEST(DataShardCache, AShardLargerThanTheCapacityIsNotKeptAndDropsNothing) {
  DataShardCache cache(100);
  cache.Insert("a", Shard(2));
  cache.Insert("huge", Shard(6));
  EXPECT_EQ(cache.Find("huge"), nullptr);
  EXPECT_NE(cache.Find("a"), nullptr);
  EXPECT_EQ(cache.bytes(), 40u);
}

TEST(DataShardCache, ADroppedShardStaysAliveForItsUsers) {
  DataShardCache cache(40);
  cache.Insert("a", Shard(2, 7));
  std::shared_ptr<const data::LabeledExamples> in_use = cache.Find("a");
  cache.Insert("b", Shard(2));
  EXPECT_EQ(cache.Find("a"), nullptr);
  ASSERT_NE(in_use, nullptr);
  EXPECT_EQ(in_use->features[7], 7.0f);
}

TEST(DataShardCache, NoCacheForZeroBytes) {
  EXPECT_EQ(MakeDataShardCache(0), nullptr);
  std::shared_ptr<DataShardCache> cache = MakeDataShardCache(64);
  ASSERT_NE(cache, nullptr);
  EXPECT_EQ(cache->capacity_bytes(), 64u);
}

}  // namespace
}  // namespace dcasgd
