#include "services/worker/data_source.h"

#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "services/worker/data/data_shard.h"

namespace dcasgd {
namespace {

using ::testing::HasSubstr;

data::DataShard MakeShard(uint8_t first_pixel, size_t count) {
  data::DataShard shard;
  shard.rows = 2;
  shard.cols = 3;
  shard.num_classes = 10;
  for (size_t i = 0; i < count * 6; ++i)
    shard.pixels.push_back(static_cast<uint8_t>(first_pixel + i));
  for (size_t i = 0; i < count; ++i) shard.labels.push_back(static_cast<uint8_t>(i % 10));
  return shard;
}

// A data set root of two train shards and one test shard, removed at the end.
class DataSourceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string dir = (std::filesystem::temp_directory_path() / "dcasgd-source-XXXXXX").string();
    ASSERT_NE(::mkdtemp(dir.data()), nullptr);
    root_ = dir;
    std::filesystem::create_directories(root_ / "train");
    std::filesystem::create_directories(root_ / "test");
    Write("train/shard-00000-of-00002.dsd", MakeShard(0, 5));
    Write("train/shard-00001-of-00002.dsd", MakeShard(100, 4));
    Write("test/shard-00000-of-00001.dsd", MakeShard(200, 3));
  }
  void TearDown() override { std::filesystem::remove_all(root_); }

  void Write(const std::string& key, const data::DataShard& shard) {
    absl::StatusOr<std::string> bytes = data::EncodeDataShard(shard);
    ASSERT_TRUE(bytes.ok()) << bytes.status();
    WriteBytes(key, *bytes);
  }
  void WriteBytes(const std::string& key, const std::string& bytes) {
    std::ofstream(root_ / key, std::ios::binary | std::ios::trunc) << bytes;
  }

  std::filesystem::path root_;
};

TEST_F(DataSourceTest, WithoutACacheEveryLoadReadsTheStore) {
  absl::StatusOr<std::unique_ptr<DataSource>> source = DataSource::Open(root_.string());
  ASSERT_TRUE(source.ok()) << source.status();
  ASSERT_EQ((*source)->num_train_shards(), 2u);
  auto first = (*source)->LoadTrain(1);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ((*first)->count, 4u);
  EXPECT_EQ((*first)->features[0], 100.0f / 255.0f);
  // Rewritten in the store: the next load sees it.
  Write("train/shard-00001-of-00002.dsd", MakeShard(50, 4));
  auto second = (*source)->LoadTrain(1);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_NE(*first, *second);
  EXPECT_EQ((*second)->features[0], 50.0f / 255.0f);
}

TEST_F(DataSourceTest, ACachedShardIsDecodedOnceAndEqualsAFreshLoad) {
  auto cache = std::make_shared<DataShardCache>(size_t{1} << 20);
  auto cached_source = DataSource::Open(root_.string(), cache);
  auto plain_source = DataSource::Open(root_.string());
  ASSERT_TRUE(cached_source.ok() && plain_source.ok());
  auto first = (*cached_source)->LoadTrain(0);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(cache->misses(), 1u);
  EXPECT_EQ(cache->size(), 1u);
  // The next epoch: the same shard, no read.
  std::filesystem::remove(root_ / "train/shard-00000-of-00002.dsd");
  auto again = (*cached_source)->LoadTrain(0);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(*again, *first);
  EXPECT_EQ(cache->hits(), 1u);
  // What the cache serves is what an uncached source decodes.
  Write("train/shard-00000-of-00002.dsd", MakeShard(0, 5));
  auto fresh = (*plain_source)->LoadTrain(0);
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  EXPECT_EQ((*again)->count, (*fresh)->count);
  EXPECT_EQ((*again)->feature_dim, (*fresh)->feature_dim);
  EXPECT_EQ((*again)->num_classes, (*fresh)->num_classes);
  EXPECT_EQ((*again)->features, (*fresh)->features);
  EXPECT_EQ((*again)->labels, (*fresh)->labels);
}

TEST_F(DataSourceTest, SourcesSharingACacheDecodeEachShardOnce) {
  auto cache = std::make_shared<DataShardCache>(size_t{1} << 20);
  auto a = DataSource::Open(root_.string(), cache);
  auto b = DataSource::Open(root_.string(), cache);
  ASSERT_TRUE(a.ok() && b.ok());
  auto from_a = (*a)->LoadTrain(1);
  auto from_b = (*b)->LoadTrain(1);
  ASSERT_TRUE(from_a.ok() && from_b.ok());
  EXPECT_EQ(*from_a, *from_b);
  EXPECT_EQ(cache->misses(), 1u);
  EXPECT_EQ(cache->hits(), 1u);
}

TEST_F(DataSourceTest, ACorruptShardIsDataLossAndNeverCached) {
  auto cache = std::make_shared<DataShardCache>(size_t{1} << 20);
  absl::StatusOr<std::string> bytes = data::EncodeDataShard(MakeShard(0, 5));
  ASSERT_TRUE(bytes.ok());
  (*bytes)[45] ^= 1;  // a pixel: the CRC no longer matches
  WriteBytes("train/shard-00000-of-00002.dsd", *bytes);
  auto source = DataSource::Open(root_.string(), cache);
  ASSERT_TRUE(source.ok()) << source.status();
  for (int attempt = 0; attempt < 2; ++attempt) {
    auto loaded = (*source)->LoadTrain(0);
    ASSERT_EQ(loaded.status().code(), absl::StatusCode::kDataLoss) << attempt;
    EXPECT_THAT(loaded.status().message(), HasSubstr("shard-00000-of-00002.dsd"));
  }
  EXPECT_EQ(cache->size(), 0u);
  EXPECT_EQ(cache->misses(), 2u);
}

TEST_F(DataSourceTest, AShardBeyondTheListIsOutOfRange) {
  auto source = DataSource::Open(root_.string(), std::make_shared<DataShardCache>(1024));
  ASSERT_TRUE(source.ok()) << source.status();
  EXPECT_EQ((*source)->LoadTrain(2).status().code(), absl::StatusCode::kOutOfRange);
}

}  // namespace
}  // namespace dcasgd
