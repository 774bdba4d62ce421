#include "core/update_rule.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>

#if defined(__SSE__)
#include <xmmintrin.h>
#endif

#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "base/check.h"
#include "base/status_macros.h"
#include "core/dtype.h"

namespace dcasgd {

namespace {

// `value` is in range when `in_range` holds; NaN never is, because every
// caller spells the condition so that a comparison with NaN makes it false.
absl::Status CheckField(bool in_range, absl::string_view field, double value,
                        absl::string_view requirement) {
  if (in_range) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("optimizer ", field, " must be ", requirement, ", got ", value));
}

// Per-call scalars, hoisted out of the loop.
struct Scalars {
  float lr;
  float lambda0;
  float ms_decay;
  float one_minus_ms_decay;
  float epsilon;
  float momentum;
  float weight_decay;
  float max_weight;  // the clamp: [-max_weight, max_weight]
  bool gap_aware;
  float gap_decay;
  float one_minus_gap_decay;
  float gap_epsilon;   // keeps |w - w_bak| / C finite where C = 0
  Dtype backup_dtype;  // float32: ChunkVectors::backup; else backup16
};

}  // namespace

// The kernels, compiled twice: for the baseline instruction set, and on
// x86-64 also for AVX2 (chosen at run time), where DC-ASGD-a's square root and
// division run on 8 lanes instead of 4 (docs/benchmarks.md). No FMA: the
// results stay bit-identical between the two.
namespace kernels_baseline {
#include "core/update_kernels.inc"
}  // namespace kernels_baseline

#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx2")
namespace kernels_avx2 {
#include "core/update_kernels.inc"
}  // namespace kernels_avx2
#pragma GCC pop_options
#define DCASGD_HAVE_AVX2_KERNELS 1
#endif

namespace {
bool UseAvx2() {
#ifdef DCASGD_HAVE_AVX2_KERNELS
  static const bool avx2 = __builtin_cpu_supports("avx2");
  return avx2;
#else
  return false;
#endif
}
}  // namespace

absl::Status OptimizerConfig::Validate() const {
  RETURN_IF_ERROR(CheckField(learning_rate > 0.0f && std::isfinite(learning_rate), "learning_rate",
                             learning_rate, "finite and > 0"));
  RETURN_IF_ERROR(
      CheckField(lambda0 >= 0.0f && std::isfinite(lambda0), "lambda0", lambda0, "finite and >= 0"));
  RETURN_IF_ERROR(
      CheckField(ms_decay >= 0.0f && ms_decay < 1.0f, "ms_decay", ms_decay, "in [0, 1)"));
  RETURN_IF_ERROR(
      CheckField(epsilon > 0.0f && std::isfinite(epsilon), "epsilon", epsilon, "finite and > 0"));
  RETURN_IF_ERROR(
      CheckField(momentum >= 0.0f && momentum < 1.0f, "momentum", momentum, "in [0, 1)"));
  RETURN_IF_ERROR(CheckField(weight_decay >= 0.0f && std::isfinite(weight_decay), "weight_decay",
                             weight_decay, "finite and >= 0"));
  RETURN_IF_ERROR(
      CheckField(gap_decay >= 0.0f && gap_decay < 1.0f, "gap_decay", gap_decay, "in [0, 1)"));
  switch (schedule) {
    case LrSchedule::kConstant:
      break;
    case LrSchedule::kStepDecay:
      RETURN_IF_ERROR(CheckField(decay_every > 0, "decay_every", static_cast<double>(decay_every),
                                 "> 0 for the step-decay schedule"));
      RETURN_IF_ERROR(CheckField(decay_factor > 0.0f && decay_factor <= 1.0f, "decay_factor",
                                 decay_factor, "in (0, 1] for the step-decay schedule"));
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("optimizer schedule has unknown value ", static_cast<int>(schedule)));
  }
  switch (rule) {
    case UpdateRule::kAsgd:
    case UpdateRule::kDcAsgdConstant:
    case UpdateRule::kDcAsgdAdaptive:
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("optimizer rule has unknown value ", static_cast<int>(rule)));
  }
  RETURN_IF_ERROR(CheckField(max_gradient_abs > 0.0f && std::isfinite(max_gradient_abs),
                             "max_gradient_abs", max_gradient_abs, "finite and > 0"));
  RETURN_IF_ERROR(CheckField(max_weight_abs > 0.0f && std::isfinite(max_weight_abs),
                             "max_weight_abs", max_weight_abs, "finite and > 0"));
  switch (backup_dtype) {
    case Dtype::kFloat32:
    case Dtype::kBfloat16:
      break;
    case Dtype::kFloat16:
      // A backup beyond 65504 would round to infinity, and w - w_bak with it.
      if (!(max_weight_abs <= DtypeMaxFinite(Dtype::kFloat16))) {
        return absl::InvalidArgumentError(absl::StrCat(
            "float16 backups hold |w| <= 65504 only, but max_weight_abs is ", max_weight_abs,
            ": lower max_weight_abs to at most 65504, or keep backups in bfloat16 (float32's "
            "range)"));
      }
      break;
    default:
      return absl::InvalidArgumentError(absl::StrCat("optimizer backup_dtype has unknown value ",
                                                     static_cast<int>(backup_dtype)));
  }
  // A 16-bit backup may exceed max_weight_abs by its rounding (at most 2^-8
  // relative): the 2^10 margin below covers it.
  // A factor of 2^10 below FLT_MAX leaves room for the roundings of the
  // float kernels, which the double bounds do not see.
  constexpr double kSafe = std::numeric_limits<float>::max() / 1024.0;
  const UpdateBounds bounds = ComputeUpdateBounds(*this);
  if (!(bounds.largest <= kSafe)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "with these hyper-parameters an update could overflow float32 (worst case ", bounds.largest,
        " > ", kSafe,
        "): lower max_gradient_abs, max_weight_abs, lambda0 or the learning rate, or raise "
        "epsilon or lower momentum / ms_decay"));
  }
  return absl::OkStatus();
}

UpdateBounds ComputeUpdateBounds(const OptimizerConfig& config) {
  const double g = config.max_gradient_abs;
  const double c = config.max_weight_abs;
  UpdateBounds b;
  double lambda_g2 = 0;  // |lambda * g * g|
  switch (config.rule) {
    case UpdateRule::kAsgd:
      break;
    case UpdateRule::kDcAsgdConstant:
      b.lambda_max = config.lambda0;
      lambda_g2 = static_cast<double>(config.lambda0) * g * g;
      break;
    case UpdateRule::kDcAsgdAdaptive: {
      b.lambda_max = config.lambda0 / std::sqrt(static_cast<double>(config.epsilon));
      // 1 - m as the kernel computes it, in float.
      const double one_minus_m = 1.0f - config.ms_decay;
      lambda_g2 = config.lambda0 / std::sqrt(one_minus_m) * g;
      break;
    }
  }
  b.compensation = lambda_g2 * 2.0 * c;
  b.direction = g + static_cast<double>(config.weight_decay) * c + b.compensation;
  // The schedules only ever lower the rate.
  const double step = static_cast<double>(config.learning_rate) * b.direction;
  b.momentum = config.momentum == 0.0f ? step : step / (1.0f - config.momentum);
  double largest =
      std::max({b.lambda_max, b.compensation, b.direction, b.momentum, c + b.momentum});
  // lambda * g (the kernels' first product) is at most lambda_max * G.
  largest = std::max({largest, b.lambda_max * g, lambda_g2});
  if (config.uses_mean_square()) largest = std::max(largest, g * g);
  b.largest = largest;
  return b;
}

std::string OptimizerConfig::DebugString() const {
  std::string out =
      absl::StrCat(NameOf(kUpdateRuleNames, rule), " lr=", learning_rate, " lambda0=", lambda0,
                   " m=", ms_decay, " eps=", epsilon, " momentum=", momentum, " wd=", weight_decay,
                   " staleness_aware=", staleness_aware ? "true" : "false",
                   " gap_aware=", gap_aware ? "true" : "false");
  if (gap_aware) absl::StrAppend(&out, " gap_decay=", gap_decay);
  absl::StrAppend(&out, " schedule=", NameOf(kLrScheduleNames, schedule));
  if (schedule == LrSchedule::kStepDecay) {
    absl::StrAppend(&out, " decay_factor=", decay_factor, " decay_every=", decay_every);
  }
  absl::StrAppend(&out, " max_gradient_abs=", max_gradient_abs, " max_weight_abs=", max_weight_abs);
  if (backup_dtype != Dtype::kFloat32) {
    absl::StrAppend(&out, " backup_dtype=", NameOf(kDtypeNames, backup_dtype));
  }
  return out;
}

OptimizerConfig OptimizerConfig::ForRule(UpdateRule rule) {
  OptimizerConfig config;
  config.rule = rule;
  config.lambda0 = rule == UpdateRule::kDcAsgdConstant ? 0.04f : 2.0f;
  return config;
}

float EffectiveLearningRate(const OptimizerConfig& config, uint64_t version, uint64_t staleness) {
  double lr = config.learning_rate;
  // decay_every == 0 is rejected by Validate(); treat it as constant rather
  // than divide by zero.
  if (config.schedule == LrSchedule::kStepDecay && config.decay_every > 0) {
    const uint64_t steps = version / config.decay_every;
    lr *= std::pow(static_cast<double>(config.decay_factor), static_cast<double>(steps));
  }
  // Zhang et al. 2016: lr / tau, with fresh (tau = 0) gradients at full rate.
  if (config.staleness_aware && staleness > 1) lr /= static_cast<double>(staleness);
  return static_cast<float>(lr);
}

bool KernelIsaSupported(KernelIsa isa) { return isa == KernelIsa::kBaseline || UseAvx2(); }

void ApplyUpdate(const OptimizerConfig& config, float lr, const ChunkVectors& v) {
  ApplyUpdateWithIsa(UseAvx2() ? KernelIsa::kAvx2 : KernelIsa::kBaseline, config, lr, v);
}

void ApplyUpdateWithIsa(KernelIsa isa, const OptimizerConfig& config, float lr,
                        const ChunkVectors& v) {
  DCASGD_CHECK(KernelIsaSupported(isa));
  if (v.n == 0) return;
  // Missing vectors are programmer errors of the shard store, not input.
  DCASGD_CHECK(v.weights != nullptr && v.gradient != nullptr);
  DCASGD_CHECK(
      !config.uses_backup() ||
      (config.backup_dtype == Dtype::kFloat32 ? v.backup != nullptr : v.backup16 != nullptr));
  DCASGD_CHECK(!config.uses_mean_square() || v.mean_square != nullptr);
  DCASGD_CHECK(!config.uses_momentum() || v.momentum != nullptr);
  DCASGD_CHECK(!config.uses_gap_scale() || v.gap_scale != nullptr);
  // The kernels' __restrict promises: the copy overlaps nothing it reads.
  DCASGD_CHECK(
      v.weights_copy == nullptr ||
      (v.weights_copy != v.weights && v.weights_copy != v.backup && v.weights_copy != v.gap_scale));
  const Scalars s{lr,
                  config.lambda0,
                  config.ms_decay,
                  1.0f - config.ms_decay,
                  config.epsilon,
                  config.momentum,
                  config.weight_decay,
                  config.max_weight_abs,
                  config.gap_aware,
                  config.gap_decay,
                  1.0f - config.gap_decay,
                  1e-12f,
                  config.backup_dtype};
#ifdef DCASGD_HAVE_AVX2_KERNELS
  if (isa == KernelIsa::kAvx2) {
    kernels_avx2::Run(s, config.rule, v);
    return;
  }
#endif
  kernels_baseline::Run(s, config.rule, v);
}

}  // namespace dcasgd
