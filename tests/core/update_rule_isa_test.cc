// The AVX2 build of the update kernels gives bit-identical results to the
// baseline build for every rule and option (no FMA contraction), including
// the scalar tails and the variant that copies the new weights out.
#include <cmath>
#include <cstring>
#include <random>
#include <tuple>
#include <vector>

#include "core/update_rule.h"
#include "gtest/gtest.h"

namespace dcasgd {
namespace {

struct Vectors {
  std::vector<float> w, g, bak, ms, mom, gap, nb;
};

Vectors Random(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  Vectors v;
  for (auto* x : {&v.w, &v.g, &v.bak, &v.mom}) {
    x->resize(n);
    for (float& f : *x) f = normal(rng);
  }
  v.ms.resize(n);
  for (float& f : v.ms) f = std::abs(normal(rng));
  v.nb.assign(n, 0.0f);
  // Gap-aware damping's mean steps: some unset, the rest small and positive.
  v.gap.resize(n);
  for (size_t i = 0; i < n; ++i)
    v.gap[i] = i % 5 == 0 ? kGapScaleUnset : 0.1f * std::abs(normal(rng));
  return v;
}

void Apply(KernelIsa isa, const OptimizerConfig& c, Vectors& v, bool with_copy) {
  ChunkVectors cv;
  cv.n = v.w.size();
  cv.weights = v.w.data();
  cv.gradient = v.g.data();
  cv.backup = v.bak.data();
  cv.mean_square = v.ms.data();
  cv.gap_scale = v.gap.data();
  cv.momentum = v.mom.data();
  cv.weights_copy = with_copy ? v.nb.data() : nullptr;
  ApplyUpdateWithIsa(isa, c, c.learning_rate, cv);
}

bool BitEqual(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return false;
  return a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

class KernelIsaTest
    : public ::testing::TestWithParam<std::tuple<UpdateRule, float, float, bool, size_t, bool>> {};

TEST_P(KernelIsaTest, Avx2MatchesBaselineBitForBit) {
  if (!KernelIsaSupported(KernelIsa::kAvx2)) GTEST_SKIP() << "this CPU has no AVX2";
  const auto [rule, momentum, decay, with_copy, n, gap_aware] = GetParam();
  OptimizerConfig c;
  c.rule = rule;
  c.learning_rate = 0.05f;
  c.lambda0 = rule == UpdateRule::kDcAsgdAdaptive ? 2.0f : 0.04f;
  c.momentum = momentum;
  c.weight_decay = decay;
  c.gap_aware = gap_aware;
  Vectors a = Random(n, 7), b = Random(n, 7);
  for (int step = 0; step < 3; ++step) {
    Apply(KernelIsa::kBaseline, c, a, with_copy);
    Apply(KernelIsa::kAvx2, c, b, with_copy);
  }
  EXPECT_TRUE(BitEqual(a.w, b.w));
  EXPECT_TRUE(BitEqual(a.ms, b.ms));
  EXPECT_TRUE(BitEqual(a.mom, b.mom));
  EXPECT_TRUE(BitEqual(a.nb, b.nb));
  EXPECT_TRUE(BitEqual(a.bak, b.bak));
  EXPECT_TRUE(BitEqual(a.gap, b.gap));
}

INSTANTIATE_TEST_SUITE_P(AllVariants, KernelIsaTest,
                         ::testing::Combine(::testing::Values(UpdateRule::kAsgd,
                                                              UpdateRule::kDcAsgdConstant,
                                                              UpdateRule::kDcAsgdAdaptive),
                                            ::testing::Values(0.0f, 0.9f),
                                            ::testing::Values(0.0f, 1e-4f), ::testing::Bool(),
                                            ::testing::Values(size_t{0}, size_t{1}, size_t{63},
                                                              size_t{64}, size_t{1000}),
                                            ::testing::Bool()));

// With the weight clamp active on about a third of the elements.
TEST(KernelIsa, Avx2MatchesBaselineWhenTheClampBinds) {
  if (!KernelIsaSupported(KernelIsa::kAvx2)) GTEST_SKIP() << "this CPU has no AVX2";
  for (UpdateRule rule :
       {UpdateRule::kAsgd, UpdateRule::kDcAsgdConstant, UpdateRule::kDcAsgdAdaptive}) {
    OptimizerConfig c;
    c.rule = rule;
    c.learning_rate = 0.5f;
    c.max_weight_abs = 1.0f;
    Vectors a = Random(1000, 9), b = Random(1000, 9);
    for (int step = 0; step < 3; ++step) {
      Apply(KernelIsa::kBaseline, c, a, false);
      Apply(KernelIsa::kAvx2, c, b, false);
    }
    size_t clamped = 0;
    for (float w : a.w) clamped += std::abs(w) == 1.0f;
    EXPECT_GT(clamped, 100u);
    EXPECT_TRUE(BitEqual(a.w, b.w)) << NameOf(kUpdateRuleNames, rule);
    EXPECT_TRUE(BitEqual(a.nb, b.nb)) << NameOf(kUpdateRuleNames, rule);
  }
}

TEST(KernelIsa, BaselineIsAlwaysSupported) {
  EXPECT_TRUE(KernelIsaSupported(KernelIsa::kBaseline));
}

}  // namespace
}  // namespace dcasgd
