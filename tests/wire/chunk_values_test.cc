#include "wire/chunk_values.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace dcasgd {
namespace {

// Values that exercise rounding: ties, subnormals, the edges of float16,
// infinities and NaN.
std::vector<float> TrickyValues(size_t n) {
  std::vector<float> values(n);
  for (size_t i = 0; i < n; ++i) {
    values[i] =
        std::ldexp(1.0f + static_cast<float>(i % 257) / 256.0f, static_cast<int>(i % 61) - 30) *
        ((i & 1) ? -1.0f : 1.0f);
  }
  if (n > 4) {
    values[0] = std::numeric_limits<float>::infinity();
    values[1] = -std::numeric_limits<float>::infinity();
    values[2] = std::numeric_limits<float>::quiet_NaN();
    values[3] = 70000.0f;  // beyond float16
    values[4] = 1e-30f;
  }
  return values;
}

std::string FloatBytes(const std::vector<float>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
}

class ChunkValuesTest : public ::testing::TestWithParam<std::tuple<Dtype, size_t>> {};

TEST_P(ChunkValuesTest, EncodeMatchesCoreConversionAndRoundTrips) {
  const auto [dtype, n] = GetParam();
  const std::vector<float> values = TrickyValues(n);
  std::string encoded;
  EncodeValues(dtype, values, &encoded);
  ASSERT_EQ(encoded.size(), WireBytes(dtype, n));
  for (size_t i = 0; i < n; ++i) {
    if (dtype == Dtype::kFloat32) {
      float got;
      std::memcpy(&got, encoded.data() + 4 * i, 4);
      ASSERT_EQ(std::memcmp(&got, &values[i], 4), 0) << i;
    } else {
      uint16_t got;
      std::memcpy(&got, encoded.data() + 2 * i, 2);
      ASSERT_EQ(got, FloatToBits16(dtype, values[i])) << i;
    }
  }
  // In place gives the same bytes.
  std::string in_place = FloatBytes(values);
  EncodeValuesInPlace(dtype, &in_place);
  EXPECT_EQ(in_place, encoded);
  // So does a shared block, which is left as it was (it may be a backup):
  // float32 is the block itself, a 16-bit dtype a new one.
  const SharedBytes block(FloatBytes(values));
  const SharedBytes shared = EncodeSharedValues(dtype, block);
  EXPECT_EQ(shared.view(), encoded);
  EXPECT_EQ(block.view(), FloatBytes(values));
  EXPECT_EQ(shared.SameBlock(block), dtype == Dtype::kFloat32);
  // Decoding is exact: each value is the rounding's float32 value.
  std::vector<float> decoded(n, 123.0f);
  ASSERT_TRUE(DecodeValues(dtype, encoded, absl::MakeSpan(decoded)).ok());
  std::string widened = encoded;
  ASSERT_TRUE(DecodeToFloat32InPlace(dtype, &widened).ok());
  EXPECT_EQ(widened, FloatBytes(decoded));
  for (size_t i = 0; i < n; ++i) {
    const float expected = dtype == Dtype::kFloat32
                               ? values[i]
                               : FloatFromBits16(dtype, FloatToBits16(dtype, values[i]));
    if (std::isnan(expected)) {
      EXPECT_TRUE(std::isnan(decoded[i])) << i;
    } else {
      EXPECT_EQ(decoded[i], expected) << i;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    DtypesAndSizes, ChunkValuesTest,
    ::testing::Combine(::testing::Values(Dtype::kFloat32, Dtype::kBfloat16, Dtype::kFloat16),
                       // 0, 1, and around the 1024-element block of the in-place loops.
                       ::testing::Values(size_t{0}, size_t{1}, size_t{7}, size_t{1023},
                                         size_t{1024}, size_t{1025}, size_t{5000})));

TEST(DecodeValues, WrongLengthIsInvalidArgumentAndLeavesTheOutputAlone) {
  std::vector<float> out(4, 7.0f);
  const std::string bytes(7, '\0');
  for (Dtype dtype : {Dtype::kFloat32, Dtype::kBfloat16, Dtype::kFloat16}) {
    const absl::Status s = DecodeValues(dtype, bytes, absl::MakeSpan(out));
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(s.message().find("expected"), absl::string_view::npos) << s;
  }
  EXPECT_EQ(out, std::vector<float>(4, 7.0f));
}

TEST(DecodeToFloat32InPlace, OddLengthIsInvalidArgument) {
  std::string bytes(5, '\0');
  const absl::Status s = DecodeToFloat32InPlace(Dtype::kBfloat16, &bytes);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("2 bytes per element"), absl::string_view::npos) << s;
}

TEST(DtypeFromProto, KnownValuesAndAnActionableErrorForOthers) {
  EXPECT_EQ(*DtypeFromProto(v1::DTYPE_FLOAT32, "f"), Dtype::kFloat32);
  EXPECT_EQ(*DtypeFromProto(v1::DTYPE_BFLOAT16, "f"), Dtype::kBfloat16);
  EXPECT_EQ(*DtypeFromProto(v1::DTYPE_FLOAT16, "f"), Dtype::kFloat16);
  for (Dtype dtype : {Dtype::kFloat32, Dtype::kBfloat16, Dtype::kFloat16}) {
    EXPECT_EQ(*DtypeFromProto(DtypeToProto(dtype), "f"), dtype);
  }
  const absl::StatusOr<Dtype> bad = DtypeFromProto(3, "Chunk.dtype");
  ASSERT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("Chunk.dtype has unknown value 3"), absl::string_view::npos)
      << bad.status();
  EXPECT_FALSE(DtypeFromProto(-1, "f").ok());
}

}  // namespace
}  // namespace dcasgd
