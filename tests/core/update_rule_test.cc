#include "core/update_rule.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/core/update_reference.h"

namespace dcasgd {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;
using update_reference::Chunk;
using update_reference::ConfigFor;
using update_reference::ExpectVectorsNear;
using update_reference::kTolerance;
using update_reference::RandomChunk;
using update_reference::ReferenceUpdate;
using update_reference::Views;

TEST(OptimizerConfig, ForRuleGivesTheRuleDependentLambda0) {
  EXPECT_FLOAT_EQ(OptimizerConfig::ForRule(UpdateRule::kDcAsgdConstant).lambda0, 0.04f);
  EXPECT_FLOAT_EQ(OptimizerConfig::ForRule(UpdateRule::kDcAsgdAdaptive).lambda0, 2.0f);
  for (UpdateRule rule :
       {UpdateRule::kAsgd, UpdateRule::kDcAsgdConstant, UpdateRule::kDcAsgdAdaptive}) {
    const OptimizerConfig config = OptimizerConfig::ForRule(rule);
    EXPECT_EQ(config.rule, rule);
    EXPECT_TRUE(config.Validate().ok()) << NameOf(kUpdateRuleNames, rule);
    // Only lambda0 depends on the rule.
    OptimizerConfig plain;
    plain.rule = rule;
    plain.lambda0 = config.lambda0;
    EXPECT_EQ(config.DebugString(), plain.DebugString());
  }
}

// --- Parameterised comparison with the reference ---------------------------

using KernelParam = std::tuple<size_t, UpdateRule, float /*momentum*/, float /*wd*/,
                               bool /*weights_copy*/, bool /*gap_aware*/>;

class ApplyUpdateMatchesReference : public ::testing::TestWithParam<KernelParam> {};

TEST_P(ApplyUpdateMatchesReference, AllVectors) {
  const auto [n, rule, momentum, weight_decay, with_copy, gap_aware] = GetParam();
  OptimizerConfig config = ConfigFor(rule);
  config.momentum = momentum;
  config.weight_decay = weight_decay;
  config.gap_aware = gap_aware;
  ASSERT_TRUE(config.Validate().ok());

  Chunk actual = RandomChunk(n, static_cast<uint32_t>(n * 31 + static_cast<int>(rule)));
  Chunk expected = actual;
  const std::vector<float> initial_w = actual.w;
  ApplyUpdate(config, config.learning_rate, Views(actual, with_copy));
  ReferenceUpdate(config, config.learning_rate, expected);

  ExpectVectorsNear(actual.w, expected.w, "w");
  ExpectVectorsNear(actual.mean_square, expected.mean_square, "mean_square");
  ExpectVectorsNear(actual.momentum, expected.momentum, "momentum");
  ExpectVectorsNear(actual.gap_scale, expected.gap_scale, "gap_scale");
  // Vectors the variant does not use stay untouched.
  EXPECT_EQ(actual.backup, expected.backup);
  if (with_copy) {
    EXPECT_EQ(actual.weights_copy, actual.w);
  } else {
    EXPECT_EQ(actual.weights_copy, std::vector<float>(n, 0.0f));
  }
  if (n > 0) {
    // The update did something (guards against a kernel that returns early).
    size_t changed = 0;
    for (size_t i = 0; i < n; ++i) changed += actual.w[i] != initial_w[i];
    EXPECT_GT(changed, 0u);
  }
}

std::string KernelParamName(const ::testing::TestParamInfo<KernelParam>& info) {
  const size_t n = std::get<0>(info.param);
  std::string rule_name = NameOf(kUpdateRuleNames, std::get<1>(info.param));
  for (char& ch : rule_name) {
    if (ch == '-') ch = '_';
  }
  return absl::StrCat("n", n, "_", rule_name, std::get<2>(info.param) != 0.0f ? "_momentum" : "",
                      std::get<3>(info.param) != 0.0f ? "_wd" : "",
                      std::get<4>(info.param) ? "_newbak" : "",
                      std::get<5>(info.param) ? "_gap" : "");
}

INSTANTIATE_TEST_SUITE_P(Sizes, ApplyUpdateMatchesReference,
                         ::testing::Combine(::testing::Values<size_t>(0, 1, 7, 1000, 65537),
                                            ::testing::Values(UpdateRule::kAsgd,
                                                              UpdateRule::kDcAsgdConstant,
                                                              UpdateRule::kDcAsgdAdaptive),
                                            ::testing::Values(0.0f, 0.9f),
                                            ::testing::Values(0.0f, 1e-4f), ::testing::Bool(),
                                            ::testing::Bool()),
                         KernelParamName);

// --- Gap-aware damping -----------------------------------------------------

Chunk OneElement(float w, float g, float backup, float gap_scale) {
  Chunk c;
  c.w = {w};
  c.g = {g};
  c.backup = {backup};
  c.mean_square = {0.0f};
  c.momentum = {0.0f};
  c.gap_scale = {gap_scale};
  c.weights_copy = {0.0f};
  return c;
}

TEST(GapAware, DividesTheGradientByTheGapInMeanSteps) {
  OptimizerConfig config = ConfigFor(UpdateRule::kAsgd);
  config.gap_aware = true;
  const float lr = 0.1f;
  // The weight moved 0.5 since the worker pulled; its mean step is 0.1: the
  // gap is 5 mean steps, so g counts a fifth.
  Chunk c = OneElement(1.0f, 1.0f, 0.5f, 0.1f);
  ApplyUpdate(config, lr, Views(c, false));
  EXPECT_NEAR(c.w[0], 1.0 - 0.1 * (1.0 / 5.0), 1e-6);
  // The mean step takes in this step (0.02) at rate 1 - 0.999.
  EXPECT_NEAR(c.gap_scale[0], 0.999 * 0.1 + 0.001 * 0.02, 1e-8);

  // A gap below one mean step is not damped (no amplification).
  Chunk small = OneElement(1.0f, 1.0f, 0.95f, 0.1f);
  ApplyUpdate(config, lr, Views(small, false));
  EXPECT_NEAR(small.w[0], 1.0 - 0.1, 1e-6);
}

TEST(GapAware, TheFirstStepIsUndampedAndStartsTheMeanStep) {
  OptimizerConfig config = ConfigFor(UpdateRule::kAsgd);
  config.gap_aware = true;
  Chunk c = OneElement(1.0f, 2.0f, -5.0f, kGapScaleUnset);
  ApplyUpdate(config, 0.1f, Views(c, false));
  EXPECT_NEAR(c.w[0], 1.0 - 0.2, 1e-6);
  EXPECT_NEAR(c.gap_scale[0], 0.2, 1e-6);
}

TEST(GapAware, TheRuleSeesTheDampedGradient) {
  // DC-ASGD-a: the mean square and the compensation both use g / 4.
  OptimizerConfig config = ConfigFor(UpdateRule::kDcAsgdAdaptive);
  config.gap_aware = true;
  const float lr = 0.1f;
  Chunk c = OneElement(1.0f, 1.0f, 0.6f, 0.1f);  // gap 0.4 = 4 mean steps
  ApplyUpdate(config, lr, Views(c, false));
  const double g = 0.25, m = config.ms_decay;
  const double ms = (1.0 - m) * g * g;
  const double lambda = config.lambda0 / std::sqrt(ms + config.epsilon);
  EXPECT_NEAR(c.mean_square[0], ms, 1e-8);
  EXPECT_NEAR(c.w[0], 1.0 - lr * (g + lambda * g * g * 0.4), 1e-6);
}

TEST(GapAware, OffLeavesTheGapScaleAloneAndAsgdReadsNoBackup) {
  OptimizerConfig config = ConfigFor(UpdateRule::kAsgd);
  EXPECT_FALSE(config.uses_backup());
  EXPECT_EQ(config.state_vectors(), 0);
  Chunk c = RandomChunk(100, 9);
  const std::vector<float> gap = c.gap_scale;
  ApplyUpdate(config, config.learning_rate, Views(c, false));
  EXPECT_EQ(c.gap_scale, gap);
  // On, even ASGD needs the worker's backup and one more state vector.
  config.gap_aware = true;
  EXPECT_TRUE(config.uses_backup());
  EXPECT_TRUE(config.uses_gap_scale());
  EXPECT_EQ(config.state_vectors(), 1);
  config.momentum = 0.9f;
  config.rule = UpdateRule::kDcAsgdAdaptive;
  EXPECT_EQ(config.state_vectors(), 3);
}

TEST(GapAware, RepeatedStepsTrackTheReference) {
  for (UpdateRule rule :
       {UpdateRule::kAsgd, UpdateRule::kDcAsgdConstant, UpdateRule::kDcAsgdAdaptive}) {
    SCOPED_TRACE(NameOf(kUpdateRuleNames, rule));
    OptimizerConfig config = ConfigFor(rule);
    config.gap_aware = true;
    config.gap_decay = 0.9f;
    Chunk actual = RandomChunk(300, 21);
    std::fill(actual.gap_scale.begin(), actual.gap_scale.end(), kGapScaleUnset);
    Chunk expected = actual;
    for (int step = 0; step < 6; ++step) {
      std::mt19937 rng(200 + step);
      std::uniform_real_distribution<float> unit(-1.0f, 1.0f);
      for (size_t i = 0; i < actual.g.size(); ++i) actual.g[i] = expected.g[i] = unit(rng);
      ApplyUpdate(config, config.learning_rate, Views(actual, false));
      ReferenceUpdate(config, config.learning_rate, expected);
      ExpectVectorsNear(actual.w, expected.w, absl::StrCat("w after step ", step));
      ExpectVectorsNear(actual.gap_scale, expected.gap_scale,
                        absl::StrCat("gap_scale after step ", step));
    }
    for (float c : actual.gap_scale) ASSERT_GE(c, 0.0f);
  }
}

// --- The traps of ALGORITHM.md ------------------------------------------------

TEST(ApplyUpdate, LambdaDoesNotCompoundAcrossSteps) {
  for (UpdateRule rule : {UpdateRule::kDcAsgdConstant, UpdateRule::kDcAsgdAdaptive}) {
    SCOPED_TRACE(NameOf(kUpdateRuleNames, rule));
    const OptimizerConfig config = ConfigFor(rule);
    Chunk actual = RandomChunk(257, 7);
    Chunk expected = actual;
    for (int step = 0; step < 5; ++step) {
      // Fresh gradients each step; the backup stays at the worker's pull.
      std::mt19937 rng(100 + step);
      std::uniform_real_distribution<float> unit(-1.0f, 1.0f);
      for (size_t i = 0; i < actual.g.size(); ++i) actual.g[i] = expected.g[i] = unit(rng);
      ApplyUpdate(config, config.learning_rate, Views(actual, false));
      ReferenceUpdate(config, config.learning_rate, expected);
      ExpectVectorsNear(actual.w, expected.w, absl::StrCat("w after step ", step));
      ExpectVectorsNear(actual.mean_square, expected.mean_square,
                        absl::StrCat("mean_square after step ", step));
    }
  }
}

TEST(ApplyUpdate, AsgdIgnoresBackup) {
  OptimizerConfig config = ConfigFor(UpdateRule::kAsgd);
  Chunk c = RandomChunk(1000, 3);
  std::fill(c.backup.begin(), c.backup.end(), std::numeric_limits<float>::quiet_NaN());
  std::vector<float> sgd = c.w;
  for (size_t i = 0; i < sgd.size(); ++i) sgd[i] = c.w[i] - config.learning_rate * c.g[i];

  ApplyUpdate(config, config.learning_rate, Views(c, false));
  for (size_t i = 0; i < c.w.size(); ++i) {
    ASSERT_TRUE(std::isfinite(c.w[i])) << i;
    ASSERT_FLOAT_EQ(c.w[i], sgd[i]) << i;
  }
}

TEST(ApplyUpdate, AsgdAcceptsNullBackup) {
  OptimizerConfig config = ConfigFor(UpdateRule::kAsgd);
  Chunk c = RandomChunk(100, 4);
  Chunk expected = c;
  ChunkVectors v = Views(c, true);
  v.backup = nullptr;
  v.mean_square = nullptr;
  v.momentum = nullptr;
  ApplyUpdate(config, config.learning_rate, v);
  ReferenceUpdate(config, config.learning_rate, expected);
  ExpectVectorsNear(c.w, expected.w, "w");
  EXPECT_EQ(c.weights_copy, c.w);
}

TEST(ApplyUpdate, CompensationUsesBackupNotZero) {
  for (UpdateRule rule : {UpdateRule::kDcAsgdConstant, UpdateRule::kDcAsgdAdaptive}) {
    SCOPED_TRACE(NameOf(kUpdateRuleNames, rule));
    const OptimizerConfig config = ConfigFor(rule);
    const Chunk start = RandomChunk(1000, 11);

    // backup == w: nothing to compensate, so the result is plain SGD.
    Chunk same = start;
    same.backup = same.w;
    Chunk sgd = start;
    OptimizerConfig asgd = config;
    asgd.rule = UpdateRule::kAsgd;
    ApplyUpdate(config, config.learning_rate, Views(same, false));
    ApplyUpdate(asgd, config.learning_rate, Views(sgd, false));
    EXPECT_EQ(same.w, sgd.w);

    // A zero backup (the zero-initialised-backup trap) compensates w - 0.
    Chunk zero = start;
    std::fill(zero.backup.begin(), zero.backup.end(), 0.0f);
    Chunk expected = zero;
    ApplyUpdate(config, config.learning_rate, Views(zero, false));
    ReferenceUpdate(config, config.learning_rate, expected);
    ExpectVectorsNear(zero.w, expected.w, "w with zero backup");
    size_t differ = 0;
    for (size_t i = 0; i < zero.w.size(); ++i) {
      differ += std::fabs(zero.w[i] - sgd.w[i]) > 1e-4f;
    }
    EXPECT_GT(differ, zero.w.size() / 2);
  }
}

TEST(ApplyUpdate, WeightDecayStaysOutOfGradientSquareFactor) {
  OptimizerConfig config = ConfigFor(UpdateRule::kDcAsgdConstant);
  config.lambda0 = 0.5f;
  config.weight_decay = 0.25f;
  const float lr = 0.1f;
  Chunk c;
  c.w = {2.0f};
  c.g = {0.5f};
  c.backup = {1.0f};
  c.mean_square = {0.0f};
  c.momentum = {0.0f};
  c.weights_copy = {0.0f};
  const double w = 2.0, g = 0.5, bak = 1.0, wd = 0.25, lambda = 0.5;
  // d = g + wd*w + lambda*g*g*(w - bak) (MXNet's composition) ...
  const double right = w - lr * (g + wd * w + lambda * g * g * (w - bak));
  // ... not with the decayed gradient squared.
  const double decayed = g + wd * w;
  const double wrong = w - lr * (decayed + lambda * decayed * decayed * (w - bak));
  ASSERT_GT(std::fabs(right - wrong), 1e-3);

  ApplyUpdate(config, lr, Views(c, false));
  EXPECT_NEAR(c.w[0], right, 1e-6);
}

TEST(ApplyUpdate, MeanSquareUpdatedBeforeLambda) {
  OptimizerConfig config = ConfigFor(UpdateRule::kDcAsgdAdaptive);
  const float lr = 0.1f;
  Chunk c;
  c.w = {1.0f};
  c.g = {1.0f};
  c.backup = {0.5f};
  c.mean_square = {0.0f};
  c.momentum = {0.0f};
  c.weights_copy = {0.0f};
  const double m = config.ms_decay, eps = config.epsilon, lambda0 = config.lambda0;
  const double new_ms = (1.0 - m) * 1.0;
  const double after = 1.0 - lr * (1.0 + lambda0 / std::sqrt(new_ms + eps) * 0.5);
  // Lambda from the old MS (0) would be lambda0 / sqrt(eps), ~700x larger.
  const double before = 1.0 - lr * (1.0 + lambda0 / std::sqrt(0.0 + eps) * 0.5);
  ASSERT_GT(std::fabs(after - before), 1.0);

  ApplyUpdate(config, lr, Views(c, false));
  EXPECT_NEAR(c.mean_square[0], new_ms, 1e-7);
  EXPECT_NEAR(c.w[0], after, 1e-5);
}

TEST(ApplyUpdate, WeightsCopyEqualsNewWeightsExactly) {
  for (UpdateRule rule :
       {UpdateRule::kAsgd, UpdateRule::kDcAsgdConstant, UpdateRule::kDcAsgdAdaptive}) {
    SCOPED_TRACE(NameOf(kUpdateRuleNames, rule));
    OptimizerConfig config = ConfigFor(rule);
    config.momentum = 0.9f;
    Chunk c = RandomChunk(1031, 5);
    ApplyUpdate(config, config.learning_rate, Views(c, true));
    ASSERT_EQ(c.weights_copy.size(), c.w.size());
    for (size_t i = 0; i < c.w.size(); ++i) {
      // Bitwise: the worker computes its next gradient on exactly these values.
      ASSERT_EQ(c.weights_copy[i], c.w[i]) << i;
    }
  }
}

TEST(ApplyUpdate, UnalignedViewsMatchReference) {
  // Chunks of a shard start anywhere in its buffers: run on views that begin
  // one element (and three for weights_copy) into the vectors.
  const size_t n = 998;
  auto slice = [n](const std::vector<float>& from) {
    return std::vector<float>(from.begin() + 1, from.begin() + 1 + n);
  };
  for (UpdateRule rule :
       {UpdateRule::kAsgd, UpdateRule::kDcAsgdConstant, UpdateRule::kDcAsgdAdaptive}) {
    SCOPED_TRACE(NameOf(kUpdateRuleNames, rule));
    const OptimizerConfig config = ConfigFor(rule);
    Chunk c = RandomChunk(n + 3, 13);
    Chunk expected;
    expected.w = slice(c.w);
    expected.g = slice(c.g);
    expected.backup = slice(c.backup);
    expected.mean_square = slice(c.mean_square);
    expected.momentum = slice(c.momentum);
    const float last_w = c.w[n + 1];
    ChunkVectors v = Views(c, true);
    v.weights += 1;
    v.gradient += 1;
    v.backup += 1;
    v.mean_square += 1;
    v.momentum += 1;
    v.weights_copy += 3;
    v.n = n;
    ApplyUpdate(config, config.learning_rate, v);
    ReferenceUpdate(config, config.learning_rate, expected);
    ExpectVectorsNear(slice(c.w), expected.w, "w");
    ExpectVectorsNear(slice(c.mean_square), expected.mean_square, "mean_square");
    for (size_t i = 0; i < n; ++i) ASSERT_EQ(c.weights_copy[i + 3], c.w[i + 1]) << i;
    // Elements outside the view are untouched.
    EXPECT_EQ(c.w[n + 1], last_w);
    EXPECT_EQ(c.weights_copy[0], 0.0f);
  }
}

// Runs `workers` asynchronous workers round-robin on f(w) = 0.5 * sum(a * w^2)
// through ApplyUpdate: each pushes the gradient of the model it pulled
// (staleness workers - 1) and its backup is refreshed by the fused PushPull.
// Returns the largest |w| after `steps` pushes (infinity once it overflows).
double RunStaleQuadratic(const OptimizerConfig& config, int workers, int steps) {
  const std::vector<float> curvature = {1.0f, 4.0f, 9.0f};
  const size_t n = curvature.size();
  std::vector<float> w = {10.0f, -10.0f, 5.0f};
  std::vector<std::vector<float>> backups(workers, w);
  std::vector<float> mean_square(n, 0.0f), momentum(n, 0.0f), gradient(n);
  for (int step = 0; step < steps; ++step) {
    std::vector<float>& backup = backups[step % workers];
    for (size_t i = 0; i < n; ++i) gradient[i] = curvature[i] * backup[i];
    ChunkVectors v;
    v.weights = w.data();
    v.gradient = gradient.data();
    v.backup = backup.data();
    v.mean_square = mean_square.data();
    v.momentum = momentum.data();
    v.n = n;
    ApplyUpdate(config, config.learning_rate, v);
    backup = w;  // what the worker is sent becomes its backup
  }
  double largest = 0.0;
  for (float x : w) {
    if (!std::isfinite(x)) return std::numeric_limits<double>::infinity();
    largest = std::max(largest, static_cast<double>(std::fabs(x)));
  }
  return largest;
}

TEST(ApplyUpdate, TooLargeLambdaDivergesWhileDefaultConverges) {
  OptimizerConfig config = ConfigFor(UpdateRule::kDcAsgdConstant);
  config.learning_rate = 0.02f;
  config.lambda0 = 0.04f;
  EXPECT_LT(RunStaleQuadratic(config, 4, 2000), 1e-3);
  config.lambda0 = 1e4f;
  EXPECT_GT(RunStaleQuadratic(config, 4, 2000), 10.0);
}

// --- Bounds: the weight clamp and the finiteness proof ----------------------

TEST(ApplyUpdate, ClampedWeightsMatchTheReference) {
  for (UpdateRule rule :
       {UpdateRule::kAsgd, UpdateRule::kDcAsgdConstant, UpdateRule::kDcAsgdAdaptive}) {
    for (float momentum : {0.0f, 0.9f}) {
      SCOPED_TRACE(absl::StrCat(NameOf(kUpdateRuleNames, rule), " momentum ", momentum));
      OptimizerConfig config = ConfigFor(rule);
      config.momentum = momentum;
      config.learning_rate = 5.0f;  // most weights leave [-0.5, 0.5]
      config.max_weight_abs = 0.5f;
      ASSERT_TRUE(config.Validate().ok());
      Chunk actual = RandomChunk(1000, 11);
      Chunk expected = actual;
      ApplyUpdate(config, config.learning_rate, Views(actual, true));
      ReferenceUpdate(config, config.learning_rate, expected);
      ExpectVectorsNear(actual.w, expected.w, "w");
      size_t clamped = 0;
      for (float w : actual.w) {
        ASSERT_LE(std::fabs(w), 0.5f);
        clamped += std::fabs(w) == 0.5f;
      }
      EXPECT_GT(clamped, 100u) << "the clamp was not exercised";
      EXPECT_EQ(actual.weights_copy, actual.w);
    }
  }
}

// The worst inputs the bounds allow, many times over, at the edge of what
// Validate accepts: every value stays finite and every weight within the
// clamp (the argument of UpdateBounds, checked on the float kernels).
TEST(ApplyUpdate, WorstCaseInputsWithinTheBoundsStayFinite) {
  for (UpdateRule rule :
       {UpdateRule::kAsgd, UpdateRule::kDcAsgdConstant, UpdateRule::kDcAsgdAdaptive}) {
    for (float momentum : {0.0f, 0.99f}) {
      for (float decay : {0.0f, 1.0f}) {
        SCOPED_TRACE(
            absl::StrCat(NameOf(kUpdateRuleNames, rule), " momentum ", momentum, " wd ", decay));
        OptimizerConfig config = ConfigFor(rule);
        config.momentum = momentum;
        config.weight_decay = decay;
        config.learning_rate = 100.0f;
        config.lambda0 = rule == UpdateRule::kDcAsgdConstant ? 1e6f : 1e4f;
        config.epsilon = 1e-30f;
        ASSERT_TRUE(config.Validate().ok()) << config.Validate();
        const float g = config.max_gradient_abs, c = config.max_weight_abs;
        const size_t n = 256;
        Chunk chunk;
        for (size_t i = 0; i < n; ++i) {
          const float sign = i % 2 ? 1.0f : -1.0f;
          chunk.w.push_back(sign * c);
          chunk.backup.push_back(-sign * c);
          chunk.g.push_back((i % 4 < 2 ? 1.0f : -1.0f) * (i % 8 < 4 ? g : 1e-30f));
          chunk.mean_square.push_back(0.0f);
          chunk.momentum.push_back(0.0f);
        }
        chunk.weights_copy.assign(n, 0.0f);
        for (int step = 0; step < 50; ++step) {
          ApplyUpdate(config, config.learning_rate, Views(chunk, false));
          for (size_t i = 0; i < n; ++i) {
            ASSERT_TRUE(std::isfinite(chunk.w[i]) && std::fabs(chunk.w[i]) <= c) << i;
            ASSERT_TRUE(std::isfinite(chunk.momentum[i])) << i;
            ASSERT_TRUE(std::isfinite(chunk.mean_square[i])) << i;
          }
        }
      }
    }
  }
}

TEST(OptimizerConfig, ValidateRejectsBoundsThatCouldOverflow) {
  OptimizerConfig constant = ConfigFor(UpdateRule::kDcAsgdConstant);
  constant.lambda0 = 1e30f;  // lambda0 * g^2 * 2C overflows
  absl::Status status = constant.Validate();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("overflow float32"));

  OptimizerConfig adaptive = ConfigFor(UpdateRule::kDcAsgdAdaptive);
  adaptive.lambda0 = 1e20f;
  adaptive.epsilon = 1e-40f;  // lambda0 / sqrt(eps) alone is 1e40
  EXPECT_THAT(std::string(adaptive.Validate().message()), HasSubstr("overflow float32"));

  OptimizerConfig momentum = ConfigFor(UpdateRule::kAsgd);
  momentum.max_gradient_abs = 1e30f;
  momentum.learning_rate = 1e6f;
  momentum.momentum = 0.999f;
  EXPECT_THAT(std::string(momentum.Validate().message()), HasSubstr("overflow float32"));

  for (float bad : {0.0f, -1.0f, std::numeric_limits<float>::infinity(),
                    std::numeric_limits<float>::quiet_NaN()}) {
    OptimizerConfig g = ConfigFor(UpdateRule::kAsgd);
    g.max_gradient_abs = bad;
    EXPECT_THAT(std::string(g.Validate().message()), HasSubstr("max_gradient_abs")) << bad;
    OptimizerConfig w = ConfigFor(UpdateRule::kAsgd);
    w.max_weight_abs = bad;
    EXPECT_THAT(std::string(w.Validate().message()), HasSubstr("max_weight_abs")) << bad;
  }
}

TEST(ComputeUpdateBounds, TheTermsOfTheArgument) {
  OptimizerConfig c = ConfigFor(UpdateRule::kDcAsgdConstant);  // lambda0 0.04
  c.max_gradient_abs = 10.0f;
  c.max_weight_abs = 2.0f;
  c.learning_rate = 0.5f;
  UpdateBounds b = ComputeUpdateBounds(c);
  EXPECT_NEAR(b.compensation, 0.04 * 100 * 4, 1e-6);
  EXPECT_NEAR(b.direction, 10 + 16, 1e-5);
  EXPECT_NEAR(b.momentum, 0.5 * 26, 1e-5);

  OptimizerConfig a = ConfigFor(UpdateRule::kDcAsgdAdaptive);  // lambda0 2, m 0.95
  a.max_gradient_abs = 10.0f;
  a.max_weight_abs = 2.0f;
  b = ComputeUpdateBounds(a);
  EXPECT_NEAR(b.compensation, 2.0 / std::sqrt(double{1.0f - 0.95f}) * 10 * 4, 1e-3);
  EXPECT_NEAR(b.lambda_max, 2.0 / std::sqrt(double{1e-7f}), 1e-2);
}

// --- Configuration -------------------------------------------------------------

TEST(OptimizerConfig, DefaultsAreValid) {
  EXPECT_TRUE(OptimizerConfig().Validate().ok());
  for (UpdateRule rule :
       {UpdateRule::kAsgd, UpdateRule::kDcAsgdConstant, UpdateRule::kDcAsgdAdaptive}) {
    EXPECT_TRUE(ConfigFor(rule).Validate().ok()) << NameOf(kUpdateRuleNames, rule);
  }
  OptimizerConfig step;
  step.schedule = LrSchedule::kStepDecay;
  step.decay_every = 1000;
  EXPECT_TRUE(step.Validate().ok());
}

TEST(OptimizerConfig, ValidateRejectsEachBadField) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  struct Case {
    const char* field;
    void (*mutate)(OptimizerConfig&, float nan, float inf);
  };
  const Case cases[] = {
      {"learning_rate", [](OptimizerConfig& c, float, float) { c.learning_rate = 0.0f; }},
      {"learning_rate", [](OptimizerConfig& c, float, float) { c.learning_rate = -0.1f; }},
      {"learning_rate", [](OptimizerConfig& c, float n, float) { c.learning_rate = n; }},
      {"learning_rate", [](OptimizerConfig& c, float, float i) { c.learning_rate = i; }},
      {"lambda0", [](OptimizerConfig& c, float, float) { c.lambda0 = -1.0f; }},
      {"lambda0", [](OptimizerConfig& c, float n, float) { c.lambda0 = n; }},
      {"ms_decay", [](OptimizerConfig& c, float, float) { c.ms_decay = 1.0f; }},
      {"ms_decay", [](OptimizerConfig& c, float, float) { c.ms_decay = -0.5f; }},
      {"ms_decay", [](OptimizerConfig& c, float n, float) { c.ms_decay = n; }},
      {"epsilon", [](OptimizerConfig& c, float, float) { c.epsilon = 0.0f; }},
      {"epsilon", [](OptimizerConfig& c, float, float) { c.epsilon = -1e-7f; }},
      {"momentum", [](OptimizerConfig& c, float, float) { c.momentum = 1.0f; }},
      {"momentum", [](OptimizerConfig& c, float, float) { c.momentum = -0.1f; }},
      {"gap_decay", [](OptimizerConfig& c, float, float) { c.gap_decay = 1.0f; }},
      {"gap_decay", [](OptimizerConfig& c, float, float) { c.gap_decay = -0.5f; }},
      {"weight_decay", [](OptimizerConfig& c, float, float) { c.weight_decay = -1e-4f; }},
      {"weight_decay", [](OptimizerConfig& c, float n, float) { c.weight_decay = n; }},
      {"decay_every",
       [](OptimizerConfig& c, float, float) {
         c.schedule = LrSchedule::kStepDecay;
         c.decay_every = 0;
       }},
      {"decay_factor",
       [](OptimizerConfig& c, float, float) {
         c.schedule = LrSchedule::kStepDecay;
         c.decay_every = 10;
         c.decay_factor = 0.0f;
       }},
      {"decay_factor",
       [](OptimizerConfig& c, float, float) {
         c.schedule = LrSchedule::kStepDecay;
         c.decay_every = 10;
         c.decay_factor = 1.5f;
       }},
  };
  for (const Case& test_case : cases) {
    OptimizerConfig config;
    test_case.mutate(config, nan, inf);
    const absl::Status status = config.Validate();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << config.DebugString();
    EXPECT_THAT(std::string(status.message()), HasSubstr(test_case.field));
  }
}

TEST(OptimizerConfig, DebugStringNamesEveryKnob) {
  OptimizerConfig config;
  EXPECT_THAT(config.DebugString(),
              StartsWith("dcasgd-a lr=0.1 lambda0=2 m=0.95 eps=1e-07 momentum=0 wd=0"));
  config.rule = UpdateRule::kAsgd;
  config.momentum = 0.9f;
  config.staleness_aware = true;
  config.schedule = LrSchedule::kStepDecay;
  config.decay_every = 500;
  const std::string s = config.DebugString();
  EXPECT_THAT(s, StartsWith("asgd "));
  EXPECT_THAT(s, HasSubstr("momentum=0.9"));
  EXPECT_THAT(s, HasSubstr("staleness_aware=true"));
  EXPECT_THAT(s, HasSubstr("decay_every=500"));
  EXPECT_THAT(s, HasSubstr("gap_aware=false"));
  config.gap_aware = true;
  config.gap_decay = 0.99f;
  EXPECT_THAT(config.DebugString(), HasSubstr("gap_aware=true gap_decay=0.99"));
}

TEST(UpdateRuleNames, ParseRoundTripsAndAcceptsAliases) {
  for (UpdateRule rule :
       {UpdateRule::kAsgd, UpdateRule::kDcAsgdConstant, UpdateRule::kDcAsgdAdaptive}) {
    const absl::StatusOr<UpdateRule> parsed =
        ParseEnum("update rule", kUpdateRuleNames, NameOf(kUpdateRuleNames, rule));
    ASSERT_TRUE(parsed.ok()) << NameOf(kUpdateRuleNames, rule);
    EXPECT_EQ(*parsed, rule);
  }
  EXPECT_EQ(std::string(NameOf(kUpdateRuleNames, UpdateRule::kAsgd)), "asgd");
  EXPECT_EQ(std::string(NameOf(kUpdateRuleNames, UpdateRule::kDcAsgdConstant)), "dcasgd-c");
  EXPECT_EQ(std::string(NameOf(kUpdateRuleNames, UpdateRule::kDcAsgdAdaptive)), "dcasgd-a");
  EXPECT_EQ(ParseEnum("update rule", kUpdateRuleNames, "dc-asgd-c").value(),
            UpdateRule::kDcAsgdConstant);
  EXPECT_EQ(ParseEnum("update rule", kUpdateRuleNames, "dc-asgd-a").value(),
            UpdateRule::kDcAsgdAdaptive);
  for (const char* bad : {"", "sgd", "DCASGD-A", "dcasgd", "dcasgd-a "}) {
    const absl::StatusOr<UpdateRule> parsed = ParseEnum("update rule", kUpdateRuleNames, bad);
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument) << "'" << bad << "'";
  }
}

TEST(EffectiveLearningRate, ConstantScheduleIgnoresVersion) {
  OptimizerConfig config;
  config.learning_rate = 0.05f;
  for (uint64_t version : {uint64_t{0}, uint64_t{1}, uint64_t{1} << 40}) {
    EXPECT_EQ(EffectiveLearningRate(config, version, 0), 0.05f) << version;
    EXPECT_EQ(EffectiveLearningRate(config, version, 7), 0.05f) << version;
  }
}

TEST(EffectiveLearningRate, StepDecayMultipliesEveryPeriod) {
  OptimizerConfig config;
  config.learning_rate = 0.5f;
  config.schedule = LrSchedule::kStepDecay;
  config.decay_every = 100;
  config.decay_factor = 0.1f;
  struct Case {
    uint64_t version;
    int periods;
  };
  for (const Case& c :
       {Case{0, 0}, Case{99, 0}, Case{100, 1}, Case{199, 1}, Case{250, 2}, Case{1000, 10}}) {
    const double expected = 0.5 * std::pow(static_cast<double>(0.1f), c.periods);
    EXPECT_NEAR(EffectiveLearningRate(config, c.version, 0), expected, expected * 1e-6)
        << c.version;
  }
}

TEST(EffectiveLearningRate, StalenessAwareDividesByStaleness) {
  OptimizerConfig config;
  config.learning_rate = 0.4f;
  config.staleness_aware = true;
  EXPECT_FLOAT_EQ(EffectiveLearningRate(config, 10, 0), 0.4f);
  EXPECT_FLOAT_EQ(EffectiveLearningRate(config, 10, 1), 0.4f);
  EXPECT_FLOAT_EQ(EffectiveLearningRate(config, 10, 4), 0.1f);
  EXPECT_FLOAT_EQ(EffectiveLearningRate(config, 10, 1000), 0.0004f);
  config.staleness_aware = false;
  EXPECT_FLOAT_EQ(EffectiveLearningRate(config, 10, 4), 0.4f);
}

TEST(EffectiveLearningRate, StalenessAwareComposesWithStepDecay) {
  OptimizerConfig config;
  config.learning_rate = 1.0f;
  config.staleness_aware = true;
  config.schedule = LrSchedule::kStepDecay;
  config.decay_every = 10;
  config.decay_factor = 0.5f;
  EXPECT_FLOAT_EQ(EffectiveLearningRate(config, 25, 8), 0.25f / 8);
}

}  // namespace
}  // namespace dcasgd
