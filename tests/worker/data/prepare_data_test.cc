#include "services/worker/data/prepare_data.h"

#include <stdlib.h>
#include <sys/wait.h>
#include <zlib.h>

#include <array>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "services/worker/data/data_shard.h"
#include "storage/local_dir_store.h"
#include "storage/s3_store.h"
#include "tests/testing/s3rver_process.h"

namespace dcasgd::data {
namespace {

using storage::BlobInfo;
using storage::BlobStore;
using storage::LocalDirStore;
using storage::S3Config;
using storage::S3Store;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string BigEndian(uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
          static_cast<char>(v)};
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

std::string MakeTempDir() {
  std::string dir = (std::filesystem::temp_directory_path() / "dcasgd-prep-XXXXXX").string();
  if (::mkdtemp(dir.data()) == nullptr) return "";
  return dir;
}

TEST(ShardBoundaries, ContiguousRangesDifferingByAtMostOne) {
  EXPECT_THAT(ShardBoundaries(10, 3), ElementsAre(0, 3, 6, 10));
  EXPECT_THAT(ShardBoundaries(60000, 20).back(), 60000u);
  EXPECT_THAT(ShardBoundaries(5, 5), ElementsAre(0, 1, 2, 3, 4, 5));
  EXPECT_THAT(ShardBoundaries(7, 1), ElementsAre(0, 7));
  const std::vector<uint64_t> b = ShardBoundaries(1001, 7);
  for (size_t i = 1; i < b.size(); ++i) {
    EXPECT_GE(b[i] - b[i - 1], 1001u / 7);
    EXPECT_LE(b[i] - b[i - 1], 1001u / 7 + 1);
  }
}

TEST(DataShardObjectName, ZeroPadsIndexAndCount) {
  EXPECT_EQ(DataShardObjectName("train", 0, 20), "train/shard-00000-of-00020.dsd");
  EXPECT_EQ(DataShardObjectName("test", 0, 1), "test/shard-00000-of-00001.dsd");
}

// A synthetic IDX source: example i has every pixel = i (mod 256) in its
// first byte pattern and label i % classes, so tests can recognise examples.
class SyntheticSource : public ::testing::Test {
 protected:
  void SetUp() override {
    source_ = MakeTempDir();
    dest_ = MakeTempDir();
    ASSERT_FALSE(source_.empty());
    ASSERT_FALSE(dest_.empty());
    WriteSplit("train", 23);
    WriteSplit("t10k", 5);
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(source_, ec);
    std::filesystem::remove_all(dest_, ec);
  }

  void WriteGzip(const std::string& name, const std::string& bytes) {
    gzFile file = gzopen((source_ + "/" + name).c_str(), "wb");
    ASSERT_NE(file, nullptr);
    ASSERT_EQ(gzwrite(file, bytes.data(), static_cast<unsigned>(bytes.size())),
              static_cast<int>(bytes.size()));
    ASSERT_EQ(gzclose(file), Z_OK);
  }
  void WriteSplit(const std::string& split, uint32_t count) {
    std::string images = BigEndian(0x803) + BigEndian(count) + BigEndian(2) + BigEndian(2);
    std::string labels = BigEndian(0x801) + BigEndian(count);
    for (uint32_t i = 0; i < count; ++i) {
      images += std::string(4, static_cast<char>(i));
      labels += static_cast<char>(i % 10);
    }
    WriteGzip(split + "-images-idx3-ubyte.gz", images);
    WriteGzip(split + "-labels-idx1-ubyte.gz", labels);
  }

  // Example ids (first pixel) per shard of `split`, decoding each shard.
  std::vector<std::vector<int>> ReadExamples(BlobStore& store, const std::string& split) {
    std::vector<std::vector<int>> out;
    absl::StatusOr<std::vector<BlobInfo>> listed = store.List(split + "/");
    EXPECT_TRUE(listed.ok()) << listed.status();
    if (!listed.ok()) return out;
    for (const BlobInfo& info : *listed) {
      absl::StatusOr<std::string> bytes = store.Get(info.key);
      EXPECT_TRUE(bytes.ok()) << bytes.status();
      absl::StatusOr<DataShard> shard = DecodeDataShard(*bytes, store.Describe(info.key));
      EXPECT_TRUE(shard.ok()) << shard.status();
      if (!shard.ok()) continue;
      std::vector<int> ids;
      for (size_t e = 0; e < shard->example_count(); ++e) {
        const int id = shard->pixels[e * 4];
        EXPECT_EQ(shard->labels[e], id % 10) << "label travels with its image";
        ids.push_back(id);
      }
      out.push_back(ids);
    }
    return out;
  }

  PrepareDataOptions Options() const {
    PrepareDataOptions options;
    options.source_dir = source_;
    options.train_shards = 4;
    options.test_shards = 2;
    return options;
  }

  std::string source_;
  std::string dest_;
};

TEST_F(SyntheticSource, WritesContiguousShardsInFileOrderWithoutSeed) {
  LocalDirStore store(dest_);
  absl::StatusOr<Manifest> manifest = PrepareData(Options(), store);
  ASSERT_TRUE(manifest.ok()) << manifest.status();
  EXPECT_EQ(manifest->train_examples, 23u);
  EXPECT_EQ(manifest->test_examples, 5u);
  EXPECT_EQ(manifest->shards.size(), 6u);
  const std::vector<std::vector<int>> train = ReadExamples(store, "train");
  ASSERT_EQ(train.size(), 4u);
  std::vector<int> all;
  for (const std::vector<int>& shard : train) all.insert(all.end(), shard.begin(), shard.end());
  std::vector<int> expected(23);
  for (int i = 0; i < 23; ++i) expected[i] = i;
  EXPECT_EQ(all, expected);
  EXPECT_EQ(train[0].size(), 5u);
  EXPECT_EQ(train[3].size(), 6u);
  EXPECT_EQ(ReadExamples(store, "test").size(), 2u);
}

TEST_F(SyntheticSource, SeedShufflesDeterministicallyAndKeepsEveryExampleOnce) {
  PrepareDataOptions options = Options();
  options.seed = 42;
  LocalDirStore first(dest_ + "/first");
  LocalDirStore second(dest_ + "/second");
  LocalDirStore other(dest_ + "/other");
  ASSERT_TRUE(PrepareData(options, first).ok());
  ASSERT_TRUE(PrepareData(options, second).ok());
  options.seed = 43;
  ASSERT_TRUE(PrepareData(options, other).ok());
  const auto a = ReadExamples(first, "train");
  EXPECT_EQ(a, ReadExamples(second, "train"));
  EXPECT_NE(a, ReadExamples(other, "train"));
  std::multiset<int> ids;
  std::vector<int> order;
  for (const auto& shard : a) {
    ids.insert(shard.begin(), shard.end());
    order.insert(order.end(), shard.begin(), shard.end());
  }
  EXPECT_EQ(ids.size(), 23u);
  EXPECT_EQ(std::set<int>(ids.begin(), ids.end()).size(), 23u);
  EXPECT_FALSE(std::is_sorted(order.begin(), order.end()));
}

TEST_F(SyntheticSource, ManifestListsObjectsCountsAndCrcs) {
  LocalDirStore store(dest_);
  absl::StatusOr<Manifest> manifest = PrepareData(Options(), store);
  ASSERT_TRUE(manifest.ok()) << manifest.status();
  absl::StatusOr<std::string> json = store.Get("manifest.json");
  ASSERT_TRUE(json.ok()) << json.status();
  EXPECT_THAT(*json, HasSubstr("\"train_examples\": 23"));
  EXPECT_THAT(*json, HasSubstr("\"seed\": null"));
  for (const ManifestShard& shard : manifest->shards) {
    absl::StatusOr<std::string> bytes = store.Get(shard.object);
    ASSERT_TRUE(bytes.ok()) << bytes.status();
    EXPECT_EQ(bytes->size(), shard.bytes);
    EXPECT_EQ(Crc32(absl::string_view(*bytes).substr(0, bytes->size() - 4)), shard.crc32);
    EXPECT_THAT(*json, HasSubstr("\"object\": \"" + shard.object + "\""));
    EXPECT_THAT(*json, HasSubstr("\"crc32\": " + std::to_string(shard.crc32)));
  }
}

TEST_F(SyntheticSource, RejectsShardCountsOutsideTheSplitAndWritesNothing) {
  LocalDirStore store(dest_);
  PrepareDataOptions options = Options();
  options.train_shards = 24;  // more shards than examples
  EXPECT_EQ(PrepareData(options, store).status().code(), absl::StatusCode::kInvalidArgument);
  options.train_shards = 0;
  EXPECT_EQ(PrepareData(options, store).status().code(), absl::StatusCode::kInvalidArgument);
  options.train_shards = 4;
  options.test_shards = 6;
  EXPECT_EQ(PrepareData(options, store).status().code(), absl::StatusCode::kInvalidArgument);
  absl::StatusOr<std::vector<BlobInfo>> listed = store.List("");
  ASSERT_TRUE(listed.ok());
  EXPECT_TRUE(listed->empty());
}

TEST_F(SyntheticSource, MissingSourceIsNotFound) {
  LocalDirStore store(dest_);
  PrepareDataOptions options = Options();
  options.source_dir = source_ + "/nowhere";
  EXPECT_EQ(PrepareData(options, store).status().code(), absl::StatusCode::kNotFound);
}

// End to end: the real binary on the real Fashion-MNIST files.
struct SplitTotals {
  uint64_t examples = 0;
  size_t shards = 0;
  std::array<int, 10> per_class{};
};

SplitTotals DecodeSplit(BlobStore& store, const std::string& split) {
  SplitTotals totals;
  absl::StatusOr<std::vector<BlobInfo>> listed = store.List(split + "/");
  EXPECT_TRUE(listed.ok()) << listed.status();
  if (!listed.ok()) return totals;
  for (const BlobInfo& info : *listed) {
    absl::StatusOr<std::string> bytes = store.Get(info.key);
    EXPECT_TRUE(bytes.ok()) << bytes.status();
    if (!bytes.ok()) continue;
    absl::StatusOr<DataShard> shard = DecodeDataShard(*bytes, store.Describe(info.key));
    EXPECT_TRUE(shard.ok()) << shard.status();
    if (!shard.ok()) continue;
    EXPECT_EQ(shard->rows, 28u);
    EXPECT_EQ(shard->cols, 28u);
    ++totals.shards;
    totals.examples += shard->example_count();
    for (uint8_t label : shard->labels) ++totals.per_class[label];
  }
  return totals;
}

void ExpectFullFashionMnist(BlobStore& store, size_t train_shards, size_t test_shards) {
  const SplitTotals train = DecodeSplit(store, "train");
  EXPECT_EQ(train.shards, train_shards);
  EXPECT_EQ(train.examples, 60000u);
  for (int count : train.per_class) EXPECT_EQ(count, 6000);
  const SplitTotals test = DecodeSplit(store, "test");
  EXPECT_EQ(test.shards, test_shards);
  EXPECT_EQ(test.examples, 10000u);
  for (int count : test.per_class) EXPECT_EQ(count, 1000);
  absl::StatusOr<std::string> manifest = store.Get("manifest.json");
  ASSERT_TRUE(manifest.ok()) << manifest.status();
  EXPECT_THAT(*manifest, HasSubstr("\"train_examples\": 60000"));
  EXPECT_THAT(*manifest, HasSubstr("\"test_examples\": 10000"));
}

// Runs `command` through the shell; returns its exit code, output in *output.
int RunShell(const std::string& command, std::string* output, const std::string& log) {
  const int rc = std::system((command + " > " + log + " 2>&1").c_str());
  *output = ReadFile(log);
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

TEST(PrepareDataTool, WritesFashionMnistIntoADirectory) {
  const std::string dir = MakeTempDir();
  ASSERT_FALSE(dir.empty());
  std::string output;
  const int rc = RunShell(std::string(DCASGD_PREPARE_DATA_BINARY) + " --dest " + dir + "/out",
                          &output, dir + "/log");
  ASSERT_EQ(rc, 0) << output;
  LocalDirStore store(dir + "/out");
  ExpectFullFashionMnist(store, 20, 1);
  absl::StatusOr<std::vector<BlobInfo>> listed = store.List("train/");
  ASSERT_TRUE(listed.ok());
  EXPECT_EQ(listed->front().key, "train/shard-00000-of-00020.dsd");
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

TEST(PrepareDataTool, WritesShuffledFashionMnistIntoS3) {
  absl::StatusOr<std::unique_ptr<testing::S3rverProcess>> server =
      testing::S3rverProcess::Start("datasets");
  if (!server.ok() && testing::AllowSkipS3()) GTEST_SKIP() << server.status();
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string dir = MakeTempDir();
  ASSERT_FALSE(dir.empty());
  const std::string env = std::string("AWS_ACCESS_KEY_ID=") + testing::S3rverProcess::kAccessKeyId +
                          " AWS_SECRET_ACCESS_KEY=" + testing::S3rverProcess::kSecretAccessKey +
                          " AWS_REGION=us-east-1 AWS_ENDPOINT_URL_S3=" + (*server)->endpoint() +
                          " ";
  std::string output;
  int rc = RunShell(env + DCASGD_PREPARE_DATA_BINARY +
                        " --dest s3://datasets/fashion/v1 --shards 7 --test_shards 3 --seed 11",
                    &output, dir + "/log");
  ASSERT_EQ(rc, 0) << output;
  EXPECT_THAT(output, HasSubstr("s3://datasets/fashion/v1"));

  S3Config config;
  config.endpoint = (*server)->endpoint();
  config.access_key_id = testing::S3rverProcess::kAccessKeyId;
  config.secret_access_key = testing::S3rverProcess::kSecretAccessKey;
  config.bucket = "datasets";
  config.prefix = "fashion/v1";
  config.list_page_size = 4;  // several pages
  absl::StatusOr<std::unique_ptr<S3Store>> store = S3Store::Create(config);
  ASSERT_TRUE(store.ok()) << store.status();
  ExpectFullFashionMnist(**store, 7, 3);
  absl::StatusOr<std::string> manifest = (*store)->Get("manifest.json");
  ASSERT_TRUE(manifest.ok());
  EXPECT_THAT(*manifest, HasSubstr("\"seed\": 11"));
  EXPECT_THAT(*manifest, HasSubstr("train/shard-00006-of-00007.dsd"));

  // Wrong credentials: the tool fails and says why.
  rc = RunShell("AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=wrong AWS_ENDPOINT_URL_S3=" +
                    (*server)->endpoint() + " " + DCASGD_PREPARE_DATA_BINARY +
                    " --dest s3://datasets/other --shards 2",
                &output, dir + "/log");
  EXPECT_NE(rc, 0);
  EXPECT_THAT(output, HasSubstr("PERMISSION_DENIED"));
  EXPECT_THAT(output, HasSubstr("datasets"));
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

TEST(PrepareDataTool, RequiresADestination) {
  const std::string dir = MakeTempDir();
  std::string output;
  EXPECT_NE(RunShell(DCASGD_PREPARE_DATA_BINARY, &output, dir + "/log"), 0);
  EXPECT_THAT(output, HasSubstr("--dest"));
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

}  // namespace
}  // namespace dcasgd::data
