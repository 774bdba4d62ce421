#ifndef DCASGD_TESTS_CORE_UPDATE_REFERENCE_H_
#define DCASGD_TESTS_CORE_UPDATE_REFERENCE_H_

// The update rule written the obvious way in double, and the random chunks
// it is compared on: shared by update_rule_test.cc (float32 backups) and
// update_rule_16bit_test.cc (16-bit backups).

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "core/update_rule.h"
#include "gtest/gtest.h"

namespace dcasgd {
namespace update_reference {

// The state of one chunk as the shard store holds it.
struct Chunk {
  std::vector<float> w, g, backup, mean_square, momentum, gap_scale, weights_copy;
};

inline Chunk RandomChunk(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> unit(-1.0f, 1.0f);
  std::uniform_real_distribution<float> positive(0.0f, 1.0f);
  Chunk c;
  for (size_t i = 0; i < n; ++i) {
    c.w.push_back(unit(rng));
    c.g.push_back(unit(rng));
    // A backup near w, as after a few updates by other workers.
    c.backup.push_back(c.w.back() + 0.1f * unit(rng));
    c.mean_square.push_back(positive(rng));
    c.momentum.push_back(0.1f * unit(rng));
    // Gap-aware damping's mean step: unset on about a fifth of the elements,
    // elsewhere small enough that |w - w_bak| / C often exceeds 1 (damped)
    // and sometimes not.
    const float r = positive(rng);
    c.gap_scale.push_back(r < 0.2f ? kGapScaleUnset : 0.2f * r);
  }
  c.weights_copy.assign(n, 0.0f);
  return c;
}

inline ChunkVectors Views(Chunk& c, bool with_copy) {
  ChunkVectors v;
  v.weights = c.w.data();
  v.gradient = c.g.data();
  v.backup = c.backup.data();
  v.mean_square = c.mean_square.data();
  v.momentum = c.momentum.data();
  v.gap_scale = c.gap_scale.data();
  v.weights_copy = with_copy ? c.weights_copy.data() : nullptr;
  v.n = c.w.size();
  return v;
}

// The update written the obvious way, one element at a time, in double.
inline void ReferenceUpdate(const OptimizerConfig& config, double lr, Chunk& c) {
  for (size_t i = 0; i < c.w.size(); ++i) {
    double g = c.g[i];
    const double w = c.w[i];
    // Gap-aware damping (Barkai et al.): g / max(1, gap in units of the mean
    // step), before the rule sees g.
    const double mean_step = config.gap_aware ? c.gap_scale[i] : -1.0;
    if (mean_step >= 0.0) {
      g /= std::max(1.0, std::fabs(w - c.backup[i]) / (mean_step + 1e-12));
    }
    double lambda = 0.0;
    if (config.rule == UpdateRule::kDcAsgdConstant) {
      lambda = config.lambda0;
    } else if (config.rule == UpdateRule::kDcAsgdAdaptive) {
      const double m = config.ms_decay;
      const double ms = m * c.mean_square[i] + (1.0 - m) * g * g;
      c.mean_square[i] = static_cast<float>(ms);
      lambda = config.lambda0 / std::sqrt(ms + config.epsilon);
    }
    const double compensation =
        config.rule == UpdateRule::kAsgd ? 0.0 : lambda * g * g * (w - c.backup[i]);
    const double d = g + config.weight_decay * w + compensation;
    double new_w;
    if (config.momentum != 0.0f) {
      const double mom = config.momentum * c.momentum[i] - lr * d;
      c.momentum[i] = static_cast<float>(mom);
      new_w = w + mom;
    } else {
      new_w = w - lr * d;
    }
    // The weight clamp (docs/security.md).
    const double bound = config.max_weight_abs;
    c.w[i] = static_cast<float>(std::min(std::max(new_w, -bound), bound));
    if (config.gap_aware) {
      const double step = std::fabs(static_cast<double>(c.w[i]) - w);
      const double decay = config.gap_decay;
      c.gap_scale[i] =
          static_cast<float>(mean_step < 0.0 ? step : decay * mean_step + (1.0 - decay) * step);
    }
  }
}

// Float kernel against double reference, relative to max(1, |value|): the
// kernel is observed within one rounding (6e-8); 5e-7 leaves room for a few
// float roundings (e.g. FMA contraction) but catches any wrong term.
constexpr double kTolerance = 5e-7;

inline void ExpectVectorsNear(const std::vector<float>& actual, const std::vector<float>& expected,
                              const std::string& what) {
  ASSERT_EQ(actual.size(), expected.size()) << what;
  for (size_t i = 0; i < actual.size(); ++i) {
    ASSERT_NEAR(actual[i], expected[i], kTolerance * (1.0 + std::fabs(expected[i])))
        << what << "[" << i << "]";
  }
}

inline OptimizerConfig ConfigFor(UpdateRule rule) {
  OptimizerConfig config;
  config.rule = rule;
  config.learning_rate = 0.1f;
  config.lambda0 = rule == UpdateRule::kDcAsgdConstant ? 0.04f : 2.0f;
  return config;
}

}  // namespace update_reference
}  // namespace dcasgd

#endif  // DCASGD_TESTS_CORE_UPDATE_REFERENCE_H_
