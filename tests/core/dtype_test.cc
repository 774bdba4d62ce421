// The 16-bit conversions (core/dtype.h), exhaustively: every bfloat16 and
// float16 bit pattern through float32 and back, every halfway case between
// two neighbouring 16-bit values, NaN, infinities, subnormals and overflow.
#include "core/dtype.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "Eigen/Core"
#include "gtest/gtest.h"

namespace dcasgd {
namespace {

float Bits32(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

std::vector<uint16_t> AllPatterns() {
  std::vector<uint16_t> all(65536);
  for (uint32_t b = 0; b < 65536; ++b) all[b] = static_cast<uint16_t>(b);
  return all;
}

class Dtype16Test : public ::testing::TestWithParam<Dtype> {};

// Every 16-bit value is a float32 value: to float32 and back gives the same
// bits, except that a NaN comes back as some NaN.
TEST_P(Dtype16Test, EveryPatternRoundTripsThroughFloat32) {
  const Dtype dtype = GetParam();
  const std::vector<uint16_t> all = AllPatterns();
  std::vector<float> wide(all.size());
  std::vector<uint16_t> back(all.size());
  FloatFrom16(dtype, all, absl::MakeSpan(wide));
  FloatTo16(dtype, wide, absl::MakeSpan(back));
  size_t nans = 0;
  for (size_t b = 0; b < all.size(); ++b) {
    if (std::isnan(wide[b])) {
      ++nans;
      EXPECT_TRUE(std::isnan(FloatFromBits16(dtype, back[b]))) << std::hex << b;
      EXPECT_EQ(std::signbit(wide[b]), (b & 0x8000) != 0) << std::hex << b;
      continue;
    }
    ASSERT_EQ(back[b], all[b]) << std::hex << "pattern 0x" << b << " = " << wide[b];
    EXPECT_EQ(FloatFromBits16(dtype, all[b]), wide[b]);  // the scalar form agrees
  }
  // Exponent all ones with a non-zero fraction: 2 * (2^7 - 1) for bfloat16,
  // 2 * (2^10 - 1) for float16.
  EXPECT_EQ(nans, dtype == Dtype::kBfloat16 ? 254u : 2046u);
}

// The value of a 16-bit pattern in double, with the pattern past the largest
// finite one (infinity) standing for the next power of two: the midpoint
// between the largest finite value and it is the overflow threshold of IEEE
// round-to-nearest.
double Value(Dtype dtype, uint16_t bits) {
  if (bits == (dtype == Dtype::kBfloat16 ? 0x7f80 : 0x7c00)) {
    return 2.0 * static_cast<double>(FloatFromBits16(dtype, bits - 1)) -
           static_cast<double>(FloatFromBits16(dtype, bits - 2));
  }
  return FloatFromBits16(dtype, bits);
}

// Between every two neighbouring non-negative values b < b+1 (up to infinity):
// the exact midpoint rounds to the one with an even pattern, the float32
// values just below and above it to the nearer one. The same for negatives.
TEST_P(Dtype16Test, HalfwayCasesRoundToEven) {
  const Dtype dtype = GetParam();
  const uint16_t inf = dtype == Dtype::kBfloat16 ? 0x7f80 : 0x7c00;
  size_t checked = 0;
  for (uint16_t b = 0; b < inf; ++b) {
    const double lo = Value(dtype, b);
    const double hi = Value(dtype, static_cast<uint16_t>(b + 1));
    const float mid = static_cast<float>((lo + hi) / 2);
    ASSERT_EQ(static_cast<double>(mid), (lo + hi) / 2) << "the midpoint is a float32";
    const uint16_t even = (b % 2 == 0) ? b : static_cast<uint16_t>(b + 1);
    const float below = std::nextafter(mid, -1.0f);
    const float above = std::nextafter(mid, std::numeric_limits<float>::infinity());
    for (uint16_t sign : {uint16_t{0}, uint16_t{0x8000}}) {
      const float s = sign ? -1.0f : 1.0f;
      ASSERT_EQ(FloatToBits16(dtype, s * mid), even | sign) << std::hex << b << " " << mid;
      ASSERT_EQ(FloatToBits16(dtype, s * below), b | sign) << std::hex << b;
      ASSERT_EQ(FloatToBits16(dtype, s * above), (b + 1) | sign) << std::hex << b;
    }
    ++checked;
  }
  EXPECT_EQ(checked, inf);
}

TEST_P(Dtype16Test, NanStaysNanInfinityStaysInfinity) {
  const Dtype dtype = GetParam();
  // Signalling and quiet NaNs with payloads that truncation alone would turn
  // into infinity (0x7f800001) or zero.
  for (uint32_t bits : {0x7f800001u, 0x7fc00000u, 0x7fffffffu, 0x7f810000u, 0xff800001u,
                        0xffc00000u, 0x7f802000u}) {
    const uint16_t h = FloatToBits16(dtype, Bits32(bits));
    EXPECT_TRUE(std::isnan(FloatFromBits16(dtype, h))) << std::hex << bits << " -> " << h;
    EXPECT_EQ(h >> 15, bits >> 31) << "the sign is kept";
  }
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(FloatFromBits16(dtype, FloatToBits16(dtype, inf)), inf);
  EXPECT_EQ(FloatFromBits16(dtype, FloatToBits16(dtype, -inf)), -inf);
  EXPECT_EQ(FloatToBits16(dtype, 0.0f), 0);
  EXPECT_EQ(FloatToBits16(dtype, -0.0f), 0x8000);
}

std::string DtypeTestName(const ::testing::TestParamInfo<Dtype>& param) {
  return NameOf(kDtypeNames, param.param);
}

INSTANTIATE_TEST_SUITE_P(Both, Dtype16Test, ::testing::Values(Dtype::kBfloat16, Dtype::kFloat16),
                         DtypeTestName);

TEST(Float16, OverflowBecomesInfinity) {
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(DtypeMaxFinite(Dtype::kFloat16), 65504.0f);
  EXPECT_EQ(FloatFromBits16(Dtype::kFloat16, FloatToBits16(Dtype::kFloat16, 65504.0f)), 65504.0f);
  // Below the threshold 65520 (65504 + half a unit of 32) it rounds down.
  EXPECT_EQ(FloatFromBits16(Dtype::kFloat16, FloatToBits16(Dtype::kFloat16, 65519.996f)), 65504.0f);
  for (float big : {65520.0f, 1e6f, std::numeric_limits<float>::max()}) {
    EXPECT_EQ(FloatFromBits16(Dtype::kFloat16, FloatToBits16(Dtype::kFloat16, big)), inf) << big;
    EXPECT_EQ(FloatFromBits16(Dtype::kFloat16, FloatToBits16(Dtype::kFloat16, -big)), -inf) << big;
  }
}

TEST(Float16, Subnormals) {
  // The smallest subnormal 2^-24 and the largest (1023 * 2^-24) are exact.
  EXPECT_EQ(FloatToBits16(Dtype::kFloat16, std::ldexp(1.0f, -24)), 0x0001);
  EXPECT_EQ(FloatToBits16(Dtype::kFloat16, 1023 * std::ldexp(1.0f, -24)), 0x03ff);
  EXPECT_EQ(FloatToBits16(Dtype::kFloat16, std::ldexp(1.0f, -14)), 0x0400);  // smallest normal
  // Half the smallest subnormal is a tie, to even: zero. Anything above it:
  // the smallest subnormal. A quarter of it: zero.
  EXPECT_EQ(FloatToBits16(Dtype::kFloat16, std::ldexp(1.0f, -25)), 0x0000);
  EXPECT_EQ(FloatToBits16(Dtype::kFloat16, std::ldexp(1.0f, -25) * 1.0001f), 0x0001);
  EXPECT_EQ(FloatToBits16(Dtype::kFloat16, -std::ldexp(1.0f, -26)), 0x8000);
  // 1.5 subnormal units: a tie between 1 and 2, to even (2).
  EXPECT_EQ(FloatToBits16(Dtype::kFloat16, 1.5f * std::ldexp(1.0f, -24)), 0x0002);
}

TEST(Bfloat16, KeepsFloat32RangeAndSubnormals) {
  EXPECT_EQ(DtypeMaxFinite(Dtype::kBfloat16), Bits32(0x7f7f0000u));
  EXPECT_TRUE(
      std::isfinite(FloatFromBits16(Dtype::kBfloat16, FloatToBits16(Dtype::kBfloat16, 1e38f))));
  // float32 subnormals map onto bfloat16 subnormals: 0x00010000 is exact.
  EXPECT_EQ(FloatToBits16(Dtype::kBfloat16, Bits32(0x00010000u)), 0x0001);
  EXPECT_EQ(FloatToBits16(Dtype::kBfloat16, Bits32(0x00008000u)), 0x0000);  // tie to even
  EXPECT_EQ(FloatToBits16(Dtype::kBfloat16, Bits32(0x00018000u)), 0x0002);  // tie to even
  // Rounding the largest float32 overflows to infinity (above bf16's max
  // plus half a unit).
  EXPECT_EQ(FloatToBits16(Dtype::kBfloat16, std::numeric_limits<float>::max()), 0x7f80);
}

// The fast paths (integer arithmetic for bfloat16, 8 wide with AVX2; F16C
// for float16 where the CPU has it) and the portable ones give exactly
// Eigen's bits: every 16-bit pattern widened, and
// every 61st float32 bit pattern (70 million, all exponents) narrowed; NaNs
// only need to stay NaN.
TEST(Dtype, FastPathsMatchEigen) {
  const std::vector<uint16_t> all = AllPatterns();
  std::vector<float> bf(all.size()), fp(all.size()), fp_portable(all.size());
  Bfloat16ToFloat(all, absl::MakeSpan(bf));
  Float16ToFloat(all, absl::MakeSpan(fp));
  dtype_internal::Float16ToFloatPortable(all, absl::MakeSpan(fp_portable));
  for (size_t b = 0; b < all.size(); ++b) {
    const float eigen_bf = static_cast<float>(Eigen::numext::bit_cast<Eigen::bfloat16>(all[b]));
    const float eigen_fp = static_cast<float>(Eigen::numext::bit_cast<Eigen::half>(all[b]));
    if (std::isnan(eigen_bf)) {
      ASSERT_TRUE(std::isnan(bf[b]));
    } else {
      ASSERT_EQ(bf[b], eigen_bf) << b;
    }
    if (std::isnan(eigen_fp)) {
      ASSERT_TRUE(std::isnan(fp[b]) && std::isnan(fp_portable[b]));
    } else {
      ASSERT_EQ(fp[b], eigen_fp) << b;
      ASSERT_EQ(fp_portable[b], eigen_fp) << b;
    }
  }
  constexpr size_t kBatch = 1 << 16;
  std::vector<float> in(kBatch);
  std::vector<uint16_t> out_bf(kBatch), out_fp(kBatch), out_portable(kBatch);
  std::vector<uint16_t> out_bf_portable(kBatch);
  size_t checked = 0;
  for (uint64_t start = 0; start < (uint64_t{1} << 32); start += 61 * kBatch) {
    for (size_t i = 0; i < kBatch; ++i) {
      in[i] = Bits32(static_cast<uint32_t>(start + 61 * i));
    }
    FloatToBfloat16(in, absl::MakeSpan(out_bf));
    FloatToFloat16(in, absl::MakeSpan(out_fp));
    dtype_internal::FloatToFloat16Portable(in, absl::MakeSpan(out_portable));
    dtype_internal::FloatToBfloat16Portable(in, absl::MakeSpan(out_bf_portable));
    for (size_t i = 0; i < kBatch; ++i) {
      if (std::isnan(in[i])) {
        ASSERT_TRUE(std::isnan(FloatFromBits16(Dtype::kBfloat16, out_bf[i])));
        ASSERT_EQ(out_bf_portable[i], out_bf[i]);
        ASSERT_TRUE(std::isnan(FloatFromBits16(Dtype::kFloat16, out_fp[i])));
        ASSERT_TRUE(std::isnan(FloatFromBits16(Dtype::kFloat16, out_portable[i])));
        continue;
      }
      ASSERT_EQ(out_bf[i], Eigen::numext::bit_cast<uint16_t>(Eigen::bfloat16(in[i]))) << in[i];
      ASSERT_EQ(out_bf_portable[i], out_bf[i]) << in[i];
      const uint16_t eigen_fp = Eigen::numext::bit_cast<uint16_t>(Eigen::half(in[i]));
      ASSERT_EQ(out_fp[i], eigen_fp) << in[i];
      ASSERT_EQ(out_portable[i], eigen_fp) << in[i];
    }
    checked += kBatch;
  }
  EXPECT_GT(checked, size_t{70000000});
}

TEST(Dtype, NamesAndSizes) {
  EXPECT_EQ(DtypeBytes(Dtype::kFloat32), 4u);
  EXPECT_EQ(DtypeBytes(Dtype::kBfloat16), 2u);
  EXPECT_EQ(DtypeBytes(Dtype::kFloat16), 2u);
  EXPECT_EQ(*ParseEnum("dtype", kDtypeNames, "bfloat16"), Dtype::kBfloat16);
  EXPECT_EQ(*ParseEnum("dtype", kDtypeNames, "fp16"), Dtype::kFloat16);
  const auto bad = ParseEnum("backup dtype", kDtypeNames, "int8");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message(),
            "unknown backup dtype 'int8': use one of float32 | bfloat16 | float16");
}

// The relative rounding error the docs state: at most 2^-8 for bfloat16 and
// 2^-11 for float16 (half a unit in the last place of 8 and 11 significant
// bits) on normal values.
TEST(Dtype, RelativeErrorBound) {
  for (Dtype dtype : {Dtype::kBfloat16, Dtype::kFloat16}) {
    const double bound = dtype == Dtype::kBfloat16 ? std::ldexp(1.0, -8) : std::ldexp(1.0, -11);
    double worst = 0;
    for (float x = 1e-3f; x < 6e4f; x *= 1.0001f) {
      const double r = FloatFromBits16(dtype, FloatToBits16(dtype, x));
      worst = std::max(worst, std::abs(r - x) / x);
    }
    EXPECT_LE(worst, bound) << NameOf(kDtypeNames, dtype);
    EXPECT_GT(worst, bound * 0.9) << "the bound is tight";
  }
}

}  // namespace
}  // namespace dcasgd
