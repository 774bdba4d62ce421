// The update rules with 16-bit backups (OptimizerConfig::backup_dtype,
// --backup_dtype): the kernel reads the rounded backup, converted exactly to
// float32, so it must match the double-precision reference computed on the
// rounded backup within the float32 kernel's own tolerance (kTolerance,
// 5e-7 relative), for DC-ASGD-c, DC-ASGD-a and gap-aware damping, with
// segments, tails and every optional vector; the baseline and AVX2 builds
// agree bit for bit; and against a float32 backup the new weights differ by
// no more than the compensation term's share of the rounding.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "core/dtype.h"
#include "core/update_rule.h"
#include "gtest/gtest.h"
#include "tests/core/update_reference.h"

namespace dcasgd {
namespace {

using update_reference::Chunk;
using update_reference::ConfigFor;
using update_reference::ExpectVectorsNear;
using update_reference::RandomChunk;
using update_reference::ReferenceUpdate;
using update_reference::Views;

// The chunk's backup as the shard keeps it in `dtype`, and `c.backup`
// replaced by its float32 value (what the reference computes with).
std::vector<uint16_t> RoundBackup(Dtype dtype, Chunk& c) {
  std::vector<uint16_t> bits(c.backup.size());
  FloatTo16(dtype, c.backup, absl::MakeSpan(bits));
  FloatFrom16(dtype, bits, absl::MakeSpan(c.backup));
  return bits;
}

ChunkVectors Views16(Chunk& c, const std::vector<uint16_t>& bak16, bool with_copy) {
  ChunkVectors v = Views(c, with_copy);
  v.backup = nullptr;  // only the 16-bit backup may be read
  v.backup16 = bak16.data();
  return v;
}

using Param = std::tuple<Dtype, UpdateRule, bool /*gap_aware*/, size_t, bool /*momentum+wd*/,
                         bool /*weights_copy*/>;

class Backup16MatchesReference : public ::testing::TestWithParam<Param> {};

TEST_P(Backup16MatchesReference, OnTheRoundedBackup) {
  const auto [dtype, rule, gap_aware, n, extras, with_copy] = GetParam();
  OptimizerConfig config = ConfigFor(rule);
  config.backup_dtype = dtype;
  config.gap_aware = gap_aware;
  if (extras) {
    config.momentum = 0.9f;
    config.weight_decay = 1e-4f;
  }
  if (dtype == Dtype::kFloat16) config.max_weight_abs = 65504.0f;
  ASSERT_TRUE(config.Validate().ok()) << config.Validate();

  Chunk actual = RandomChunk(n, static_cast<uint32_t>(n * 7 + static_cast<int>(rule)));
  const std::vector<float> unrounded = actual.backup;
  const std::vector<uint16_t> bak16 = RoundBackup(dtype, actual);
  size_t rounded = 0;
  for (size_t i = 0; i < n; ++i) rounded += actual.backup[i] != unrounded[i];
  if (n >= 1000) {
    EXPECT_GT(rounded, n / 2) << "the backup really is rounded";
  }
  Chunk expected = actual;
  const std::vector<float> initial_w = actual.w;
  // Without damping, two steps from the same backup (a worker's second push
  // before a pull). With damping one: its second step divides by the first
  // step's size, whose float32 rounding (relative, for tiny steps) the
  // double reference does not share, with float32 backups as well.
  for (int step = 0; step < (gap_aware ? 1 : 2); ++step) {
    ApplyUpdate(config, config.learning_rate, Views16(actual, bak16, with_copy));
    ReferenceUpdate(config, config.learning_rate, expected);
  }
  ExpectVectorsNear(actual.w, expected.w, "w");
  ExpectVectorsNear(actual.mean_square, expected.mean_square, "mean_square");
  ExpectVectorsNear(actual.momentum, expected.momentum, "momentum");
  ExpectVectorsNear(actual.gap_scale, expected.gap_scale, "gap_scale");
  if (with_copy) {
    EXPECT_EQ(actual.weights_copy, actual.w);
  }
  size_t changed = 0;
  for (size_t i = 0; i < n; ++i) changed += actual.w[i] != initial_w[i];
  EXPECT_GT(changed, 0u);
}

std::string ParamName(const ::testing::TestParamInfo<Param>& info) {
  std::string rule = NameOf(kUpdateRuleNames, std::get<1>(info.param));
  for (char& ch : rule) {
    if (ch == '-') ch = '_';
  }
  return absl::StrCat(NameOf(kDtypeNames, std::get<0>(info.param)), "_", rule,
                      std::get<2>(info.param) ? "_gap" : "", "_n", std::get<3>(info.param),
                      std::get<4>(info.param) ? "_momentum_wd" : "",
                      std::get<5>(info.param) ? "_copy" : "");
}

// 1024 elements are one conversion segment: 1, 7, 1000 stay within one,
// 2053 and 65537 cross several and end in a scalar tail.
INSTANTIATE_TEST_SUITE_P(AllRules, Backup16MatchesReference,
                         ::testing::Combine(::testing::Values(Dtype::kBfloat16, Dtype::kFloat16),
                                            ::testing::Values(UpdateRule::kAsgd,
                                                              UpdateRule::kDcAsgdConstant,
                                                              UpdateRule::kDcAsgdAdaptive),
                                            ::testing::Bool(),
                                            ::testing::Values<size_t>(1, 7, 1000, 2053, 65537),
                                            ::testing::Bool(), ::testing::Bool()),
                         ParamName);

// Against a float32 backup, one DC-ASGD step (no momentum, no damping) moves
// w by lr * lambda * g^2 * (w - w_bak): rounding w_bak changes the new w by
// lr * lambda * g^2 * |w_bak - round(w_bak)| and nothing else (plus float
// roundings of the two updates).
TEST(Backup16, DiffersFromFloat32ByTheCompensationOfTheRounding) {
  for (Dtype dtype : {Dtype::kBfloat16, Dtype::kFloat16}) {
    for (UpdateRule rule : {UpdateRule::kDcAsgdConstant, UpdateRule::kDcAsgdAdaptive}) {
      OptimizerConfig config = ConfigFor(rule);
      config.max_weight_abs = 100.0f;
      OptimizerConfig config16 = config;
      config16.backup_dtype = dtype;
      Chunk full = RandomChunk(4096, 11);
      Chunk half = full;
      const std::vector<float> w0 = full.w;
      const std::vector<float> ms0 = full.mean_square;
      std::vector<uint16_t> bak16 = RoundBackup(dtype, half);
      ApplyUpdate(config, config.learning_rate, Views(full, false));
      ApplyUpdate(config16, config.learning_rate, Views16(half, bak16, false));
      size_t differ = 0;
      for (size_t i = 0; i < full.w.size(); ++i) {
        const double g = full.g[i];
        double lambda = config.lambda0;
        if (rule == UpdateRule::kDcAsgdAdaptive) {
          const double ms = config.ms_decay * ms0[i] + (1.0 - config.ms_decay) * g * g;
          lambda = config.lambda0 / std::sqrt(ms + config.epsilon);
        }
        const double shift = config.learning_rate * lambda * g * g *
                             std::fabs(static_cast<double>(full.backup[i]) - half.backup[i]);
        ASSERT_NEAR(half.w[i], full.w[i], shift + 2e-7 * (1.0 + std::fabs(w0[i])))
            << NameOf(kDtypeNames, dtype) << " " << NameOf(kUpdateRuleNames, rule) << " [" << i
            << "]";
        differ += half.w[i] != full.w[i];
      }
      EXPECT_GT(differ, 0u) << "the rounding is visible";
    }
  }
}

bool BitEqual(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() &&
         (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

// The AVX2 build reads 16-bit backups exactly as the baseline build does.
TEST(Backup16, Avx2MatchesBaselineBitForBit) {
  if (!KernelIsaSupported(KernelIsa::kAvx2)) GTEST_SKIP() << "this CPU has no AVX2";
  size_t cases = 0;
  for (Dtype dtype : {Dtype::kBfloat16, Dtype::kFloat16}) {
    for (UpdateRule rule :
         {UpdateRule::kAsgd, UpdateRule::kDcAsgdConstant, UpdateRule::kDcAsgdAdaptive}) {
      for (bool gap_aware : {false, true}) {
        for (size_t n : {size_t{1}, size_t{63}, size_t{1000}, size_t{2053}}) {
          OptimizerConfig config = ConfigFor(rule);
          config.backup_dtype = dtype;
          config.gap_aware = gap_aware;
          config.momentum = 0.9f;
          config.max_weight_abs = 1000.0f;
          Chunk a = RandomChunk(n, 5);
          const std::vector<uint16_t> bak16 = RoundBackup(dtype, a);
          Chunk b = a;
          for (int step = 0; step < 3; ++step) {
            ApplyUpdateWithIsa(KernelIsa::kBaseline, config, config.learning_rate,
                               Views16(a, bak16, true));
            ApplyUpdateWithIsa(KernelIsa::kAvx2, config, config.learning_rate,
                               Views16(b, bak16, true));
          }
          const std::string what =
              absl::StrCat(NameOf(kDtypeNames, dtype), " ", NameOf(kUpdateRuleNames, rule),
                           " gap=", gap_aware, " n=", n);
          EXPECT_TRUE(BitEqual(a.w, b.w)) << what;
          EXPECT_TRUE(BitEqual(a.weights_copy, b.weights_copy)) << what;
          EXPECT_TRUE(BitEqual(a.mean_square, b.mean_square)) << what;
          EXPECT_TRUE(BitEqual(a.momentum, b.momentum)) << what;
          EXPECT_TRUE(BitEqual(a.gap_scale, b.gap_scale)) << what;
          ++cases;
        }
      }
    }
  }
  EXPECT_EQ(cases, 48u);
}

TEST(Backup16, ValidateNeedsFloat16RangeAndNamesTheFix) {
  OptimizerConfig config;
  config.backup_dtype = Dtype::kFloat16;
  const absl::Status s = config.Validate();  // max_weight_abs 1e6 by default
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("float16 backups hold |w| <= 65504"), std::string::npos) << s;
  EXPECT_NE(s.message().find("lower max_weight_abs"), std::string::npos) << s;
  config.max_weight_abs = 65504.0f;
  EXPECT_TRUE(config.Validate().ok());
  config.backup_dtype = Dtype::kBfloat16;
  config.max_weight_abs = 1e6f;
  EXPECT_TRUE(config.Validate().ok()) << "bfloat16 has float32's range";
  EXPECT_NE(config.DebugString().find("backup_dtype=bfloat16"), std::string::npos);
  config.backup_dtype = static_cast<Dtype>(7);
  EXPECT_EQ(config.Validate().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace dcasgd
