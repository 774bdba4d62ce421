#include "services/worker/data/data_shard.h"

#include <string>
#include <tuple>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dcasgd::data {
namespace {

using ::testing::HasSubstr;

constexpr char kName[] = "s3://bucket/fm/train/shard-00003-of-00020.dsd";

DataShard MakeShard(size_t count, uint32_t rows, uint32_t cols, uint32_t classes) {
  DataShard shard;
  shard.rows = rows;
  shard.cols = cols;
  shard.num_classes = classes;
  for (size_t i = 0; i < count * rows * cols; ++i) {
    shard.pixels.push_back(static_cast<uint8_t>((i * 37 + 11) % 256));
  }
  for (size_t i = 0; i < count; ++i) shard.labels.push_back(static_cast<uint8_t>(i % classes));
  return shard;
}

// Rewrites the CRC trailer so a deliberately altered shard passes the CRC
// check and reaches the later validation.
void ResealCrc(std::string* encoded) {
  const size_t body = encoded->size() - kDataShardTrailerBytes;
  const uint32_t crc = Crc32(absl::string_view(*encoded).substr(0, body));
  for (int i = 0; i < 4; ++i) (*encoded)[body + i] = static_cast<char>((crc >> (8 * i)) & 0xFF);
}

class DataShardRoundTrip
    : public ::testing::TestWithParam<std::tuple<size_t, uint32_t, uint32_t, uint32_t>> {};

TEST_P(DataShardRoundTrip, DecodeReturnsWhatWasEncoded) {
  const auto [count, rows, cols, classes] = GetParam();
  const DataShard shard = MakeShard(count, rows, cols, classes);
  absl::StatusOr<std::string> encoded = EncodeDataShard(shard);
  ASSERT_TRUE(encoded.ok()) << encoded.status();
  EXPECT_EQ(encoded->size(),
            kDataShardHeaderBytes + count * rows * cols + count + kDataShardTrailerBytes);
  EXPECT_EQ(encoded->substr(0, 8), "DCASGDDS");
  absl::StatusOr<DataShard> decoded = DecodeDataShard(*encoded, kName);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->rows, rows);
  EXPECT_EQ(decoded->cols, cols);
  EXPECT_EQ(decoded->num_classes, classes);
  EXPECT_EQ(decoded->example_count(), count);
  EXPECT_EQ(decoded->pixels, shard.pixels);
  EXPECT_EQ(decoded->labels, shard.labels);
}

INSTANTIATE_TEST_SUITE_P(Sizes, DataShardRoundTrip,
                         ::testing::Values(std::make_tuple(0, 28, 28, 10),
                                           std::make_tuple(1, 28, 28, 10),
                                           std::make_tuple(1, 1, 1, 1),
                                           std::make_tuple(7, 3, 5, 256),
                                           std::make_tuple(300, 28, 28, 10)));

TEST(DataShard, EveryTruncationIsDataLossNamingTheShard) {
  absl::StatusOr<std::string> encoded = EncodeDataShard(MakeShard(3, 4, 5, 10));
  ASSERT_TRUE(encoded.ok()) << encoded.status();
  for (size_t len = 0; len < encoded->size(); ++len) {
    const absl::Status status = DecodeDataShard(encoded->substr(0, len), kName).status();
    ASSERT_EQ(status.code(), absl::StatusCode::kDataLoss) << "length " << len << ": " << status;
    EXPECT_THAT(std::string(status.message()), HasSubstr(kName));
  }
}

TEST(DataShard, EveryFlippedByteIsDataLossNamingTheShard) {
  absl::StatusOr<std::string> encoded = EncodeDataShard(MakeShard(3, 4, 5, 10));
  ASSERT_TRUE(encoded.ok()) << encoded.status();
  for (size_t i = 0; i < encoded->size(); ++i) {
    for (const unsigned char mask : {0x01, 0x80, 0xFF}) {
      std::string corrupt = *encoded;
      corrupt[i] = static_cast<char>(corrupt[i] ^ mask);
      const absl::Status status = DecodeDataShard(corrupt, kName).status();
      ASSERT_EQ(status.code(), absl::StatusCode::kDataLoss)
          << "byte " << i << " mask " << int{mask} << ": " << status;
      EXPECT_THAT(std::string(status.message()), HasSubstr(kName));
    }
  }
}

TEST(DataShard, AppendedBytesAreDataLoss) {
  absl::StatusOr<std::string> encoded = EncodeDataShard(MakeShard(2, 2, 2, 3));
  ASSERT_TRUE(encoded.ok());
  EXPECT_EQ(DecodeDataShard(*encoded + "x", kName).status().code(), absl::StatusCode::kDataLoss);
}

TEST(DataShard, ConsistentCrcButImpossibleContentIsDataLoss) {
  absl::StatusOr<std::string> encoded = EncodeDataShard(MakeShard(2, 2, 2, 3));
  ASSERT_TRUE(encoded.ok());
  // Label 9 with 3 classes.
  std::string bad_label = *encoded;
  bad_label[kDataShardHeaderBytes + 8] = 9;
  ResealCrc(&bad_label);
  absl::Status status = DecodeDataShard(bad_label, kName).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr("label"));
  // Example count that disagrees with the payload.
  std::string bad_count = *encoded;
  bad_count[16] = 5;
  ResealCrc(&bad_count);
  status = DecodeDataShard(bad_count, kName).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << status;
  // Huge example count must not overflow the size check.
  std::string huge_count = *encoded;
  for (int i = 16; i < 24; ++i) huge_count[i] = '\xFF';
  ResealCrc(&huge_count);
  EXPECT_EQ(DecodeDataShard(huge_count, kName).status().code(), absl::StatusCode::kDataLoss);
  // Zero rows.
  std::string zero_rows = *encoded;
  zero_rows[24] = 0;
  ResealCrc(&zero_rows);
  EXPECT_EQ(DecodeDataShard(zero_rows, kName).status().code(), absl::StatusCode::kDataLoss);
}

TEST(DataShard, NewerFormatVersionIsFailedPrecondition) {
  absl::StatusOr<std::string> encoded = EncodeDataShard(MakeShard(1, 2, 2, 3));
  ASSERT_TRUE(encoded.ok());
  (*encoded)[8] = 2;
  ResealCrc(&*encoded);
  const absl::Status status = DecodeDataShard(*encoded, kName).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr(kName));
}

TEST(DataShard, EncodeRejectsInconsistentShards) {
  DataShard shard = MakeShard(2, 2, 2, 3);
  shard.pixels.pop_back();
  EXPECT_EQ(EncodeDataShard(shard).status().code(), absl::StatusCode::kInvalidArgument);
  shard = MakeShard(2, 2, 2, 3);
  shard.labels[1] = 3;
  EXPECT_EQ(EncodeDataShard(shard).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(EncodeDataShard(MakeShard(0, 0, 2, 3)).status().code(),
            absl::StatusCode::kInvalidArgument);
  DataShard no_classes = MakeShard(0, 2, 2, 1);
  no_classes.num_classes = 0;
  EXPECT_EQ(EncodeDataShard(no_classes).status().code(), absl::StatusCode::kInvalidArgument);
  DataShard too_many = MakeShard(0, 2, 2, 1);
  too_many.num_classes = 257;
  EXPECT_EQ(EncodeDataShard(too_many).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(DataShard, HeaderLayoutIsLittleEndian) {
  absl::StatusOr<std::string> encoded = EncodeDataShard(MakeShard(258, 2, 3, 10));
  ASSERT_TRUE(encoded.ok());
  EXPECT_EQ(encoded->substr(8, 4), std::string("\x01\x00\x00\x00", 4));       // version
  EXPECT_EQ(encoded->substr(16, 8), std::string("\x02\x01\0\0\0\0\0\0", 8));  // 258
  EXPECT_EQ(encoded->substr(24, 4), std::string("\x02\x00\x00\x00", 4));      // rows
  EXPECT_EQ(encoded->substr(28, 4), std::string("\x03\x00\x00\x00", 4));      // cols
  EXPECT_EQ(encoded->substr(32, 4), std::string("\x0A\x00\x00\x00", 4));      // classes
}

TEST(Crc32, KnownVector) {
  EXPECT_EQ(Crc32("123456789"), 0xCBF43926u);
  EXPECT_EQ(Crc32(""), 0u);
}

TEST(ToLabeledExamples, ScalesPixelsToUnitIntervalRowMajor) {
  DataShard shard;
  shard.rows = 1;
  shard.cols = 3;
  shard.num_classes = 10;
  shard.pixels = {0, 51, 255, 255, 0, 102};
  shard.labels = {7, 0};
  const LabeledExamples examples = ToLabeledExamples(shard);
  EXPECT_EQ(examples.count, 2u);
  EXPECT_EQ(examples.feature_dim, 3u);
  EXPECT_EQ(examples.num_classes, 10);
  ASSERT_EQ(examples.features.size(), 6u);
  EXPECT_EQ(examples.features[0], 0.0f);
  EXPECT_FLOAT_EQ(examples.features[1], 0.2f);
  EXPECT_EQ(examples.features[2], 1.0f);
  EXPECT_EQ(examples.features[3], 1.0f);
  EXPECT_FLOAT_EQ(examples.features[5], 0.4f);
  EXPECT_EQ(examples.labels, (std::vector<int>{7, 0}));
}

TEST(ToLabeledExamples, EmptyShardGivesNoExamples) {
  const LabeledExamples examples = ToLabeledExamples(MakeShard(0, 28, 28, 10));
  EXPECT_EQ(examples.count, 0u);
  EXPECT_EQ(examples.feature_dim, 784u);
  EXPECT_TRUE(examples.features.empty());
  EXPECT_TRUE(examples.labels.empty());
}

}  // namespace
}  // namespace dcasgd::data
