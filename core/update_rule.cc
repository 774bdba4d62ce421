#include "core/update_rule.h"

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>

#if defined(__SSE__)
#include <xmmintrin.h>
#endif

#include "absl/strings/str_cat.h"
#include "core/check.h"
#include "core/status_macros.h"

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

const char* ScheduleName(LrSchedule schedule) {
  switch (schedule) {
    case LrSchedule::kConstant:
      return "constant";
    case LrSchedule::kStepDecay:
      return "step";
  }
  return "unknown";
}

// Where the new weights go besides `w`.
enum class BackupOut {
  kNone,      // nowhere
  kSeparate,  // new_backup, a buffer distinct from backup
  kInPlace,   // new_backup == backup: read the old backup, then overwrite it
};

// Per-call scalars, hoisted out of the loop.
struct Scalars {
  float lr;
  float lambda0;
  float ms_decay;
  float one_minus_ms_decay;
  float epsilon;
  float momentum;
  float weight_decay;
};

// GCC 12 at -O2 uses the "very-cheap" vectoriser cost model, which only
// vectorises loops whose trip count is a known multiple of the vector width.
// Fixed-size inner blocks give it exactly that; the tail runs scalar. 64, not
// 16: at -O3 GCC fully unrolls inner loops of <= 16 iterations first, and the
// unrolled DC-ASGD-a block then stayed scalar (4x slower).
constexpr size_t kBlock = 64;

// DC-ASGD-a mean square (Alg. 1): MS <- m * MS + (1 - m) * g * g. Returns the
// new MS + eps, the radicand of lambda_t; MS is always updated before lambda_t
// is computed from it.
inline __attribute__((always_inline)) float UpdateMeanSquare(const Scalars& s, float gi,
                                                             float* __restrict ms) {
  const float msi = s.ms_decay * *ms + s.one_minus_ms_decay * gi * gi;
  *ms = msi;
  return msi + s.epsilon;
}

// x <- sqrt(x) for one block. std::sqrt vectorises only without errno
// semantics (-fno-math-errno): otherwise GCC guards each call with a branch
// to libm, which no vectoriser accepts, and DC-ASGD-a runs ~4x slower. On x86
// the SSE square root is used directly then; both are IEEE correctly rounded,
// so the results are bit-identical for the non-negative radicands here.
inline __attribute__((always_inline)) void SqrtBlock(float* __restrict x) {
#if defined(__SSE__) && !defined(__NO_MATH_ERRNO__)
  for (size_t j = 0; j < kBlock; j += 4) _mm_storeu_ps(x + j, _mm_sqrt_ps(_mm_loadu_ps(x + j)));
#else
  for (size_t j = 0; j < kBlock; ++j) x[j] = std::sqrt(x[j]);
#endif
}

// One element of the update (paper eq. 10 with MXNet's momentum and weight
// decay) given lambda_t. Every variant is a compile-time parameter so that
// the loops below contain no branches and vectorise. `bak` is never read for
// kAsgd and is unused for kInPlace (the old backup is read from `nb`).
template <UpdateRule kRule, bool kMomentum, bool kDecay, BackupOut kOut>
inline __attribute__((always_inline)) void UpdateElement(
    const Scalars& s, float lambda, float* __restrict w, const float* __restrict g,
    const float* __restrict bak, float* __restrict mom, float* __restrict nb, size_t i) {
  const float gi = g[i];
  const float wi = w[i];
  float d = gi;
  // Weight decay stays out of the g * g factor.
  if constexpr (kDecay) d += s.weight_decay * wi;
  if constexpr (kRule != UpdateRule::kAsgd) {
    const float backup = kOut == BackupOut::kInPlace ? nb[i] : bak[i];
    d += lambda * gi * gi * (wi - backup);
  }
  float new_w;
  if constexpr (kMomentum) {
    const float mi = s.momentum * mom[i] - s.lr * d;
    mom[i] = mi;
    new_w = wi + mi;
  } else {
    new_w = wi - s.lr * d;
  }
  w[i] = new_w;
  if constexpr (kOut != BackupOut::kNone) nb[i] = new_w;
}

// noinline: GCC drops the __restrict promises of a function's parameters when
// it inlines it, and would then need run-time alias checks, which the -O2
// cost model refuses. The call costs nothing next to a chunk's worth of work.
template <UpdateRule kRule, bool kMomentum, bool kDecay, BackupOut kOut>
__attribute__((noinline)) void UpdateLoop(const Scalars s, float* __restrict w,
                                          const float* __restrict g, const float* __restrict bak,
                                          float* __restrict ms, float* __restrict mom,
                                          float* __restrict nb, size_t n) {
  size_t i = 0;
  if constexpr (kRule == UpdateRule::kDcAsgdAdaptive) {
    // lambda_t = lambda0 / sqrt(MS + eps), recomputed from lambda0 every step.
    for (; i + kBlock <= n; i += kBlock) {
      float root[kBlock];
      for (size_t j = 0; j < kBlock; ++j) root[j] = UpdateMeanSquare(s, g[i + j], ms + i + j);
      SqrtBlock(root);
      for (size_t j = 0; j < kBlock; ++j) {
        UpdateElement<kRule, kMomentum, kDecay, kOut>(s, s.lambda0 / root[j], w, g, bak, mom, nb,
                                                      i + j);
      }
    }
    for (; i < n; ++i) {
      const float lambda = s.lambda0 / std::sqrt(UpdateMeanSquare(s, g[i], ms + i));
      UpdateElement<kRule, kMomentum, kDecay, kOut>(s, lambda, w, g, bak, mom, nb, i);
    }
  } else {
    // DC-ASGD-c: lambda_t = lambda0; ASGD ignores it.
    for (; i + kBlock <= n; i += kBlock) {
      for (size_t j = 0; j < kBlock; ++j) {
        UpdateElement<kRule, kMomentum, kDecay, kOut>(s, s.lambda0, w, g, bak, mom, nb, i + j);
      }
    }
    for (; i < n; ++i) {
      UpdateElement<kRule, kMomentum, kDecay, kOut>(s, s.lambda0, w, g, bak, mom, nb, i);
    }
  }
}

template <UpdateRule kRule, bool kMomentum, bool kDecay>
void DispatchBackupOut(const Scalars& s, const ChunkVectors& v) {
  const float* bak = kRule == UpdateRule::kAsgd ? nullptr : v.backup;
  if (v.new_backup == nullptr) {
    UpdateLoop<kRule, kMomentum, kDecay, BackupOut::kNone>(s, v.weights, v.gradient, bak,
                                                           v.mean_square, v.momentum, nullptr, v.n);
  } else if (kRule != UpdateRule::kAsgd && v.new_backup == v.backup) {
    // Writing through one pointer keeps the __restrict promises true.
    UpdateLoop<kRule, kMomentum, kDecay, BackupOut::kInPlace>(
        s, v.weights, v.gradient, nullptr, v.mean_square, v.momentum, v.new_backup, v.n);
  } else {
    UpdateLoop<kRule, kMomentum, kDecay, BackupOut::kSeparate>(
        s, v.weights, v.gradient, bak, v.mean_square, v.momentum, v.new_backup, v.n);
  }
}

template <UpdateRule kRule, bool kMomentum>
void DispatchDecay(const Scalars& s, const ChunkVectors& v) {
  if (s.weight_decay != 0.0f) {
    DispatchBackupOut<kRule, kMomentum, true>(s, v);
  } else {
    DispatchBackupOut<kRule, kMomentum, false>(s, v);
  }
}

template <UpdateRule kRule>
void DispatchMomentum(const Scalars& s, const ChunkVectors& v) {
  if (s.momentum != 0.0f) {
    DispatchDecay<kRule, true>(s, v);
  } else {
    DispatchDecay<kRule, false>(s, v);
  }
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
  return absl::OkStatus();
}

std::string OptimizerConfig::DebugString() const {
  std::string out =
      absl::StrCat(UpdateRuleName(rule), " lr=", learning_rate, " lambda0=", lambda0,
                   " m=", ms_decay, " eps=", epsilon, " momentum=", momentum, " wd=", weight_decay,
                   " staleness_aware=", staleness_aware ? "true" : "false",
                   " schedule=", ScheduleName(schedule));
  if (schedule == LrSchedule::kStepDecay) {
    absl::StrAppend(&out, " decay_factor=", decay_factor, " decay_every=", decay_every);
  }
  return out;
}

absl::StatusOr<UpdateRule> ParseUpdateRule(absl::string_view name) {
  if (name == "asgd") return UpdateRule::kAsgd;
  if (name == "dcasgd-c" || name == "dc-asgd-c") return UpdateRule::kDcAsgdConstant;
  if (name == "dcasgd-a" || name == "dc-asgd-a") return UpdateRule::kDcAsgdAdaptive;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown update rule '", name, "'; expected asgd, dcasgd-c or dcasgd-a"));
}

const char* UpdateRuleName(UpdateRule rule) {
  switch (rule) {
    case UpdateRule::kAsgd:
      return "asgd";
    case UpdateRule::kDcAsgdConstant:
      return "dcasgd-c";
    case UpdateRule::kDcAsgdAdaptive:
      return "dcasgd-a";
  }
  return "unknown";
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

void ApplyUpdate(const OptimizerConfig& config, float lr, const ChunkVectors& v) {
  if (v.n == 0) return;
  // Missing vectors are programmer errors of the shard store, not input.
  DCASGD_CHECK(v.weights != nullptr && v.gradient != nullptr);
  DCASGD_CHECK(!config.uses_backup() || v.backup != nullptr);
  DCASGD_CHECK(!config.uses_mean_square() || v.mean_square != nullptr);
  DCASGD_CHECK(!config.uses_momentum() || v.momentum != nullptr);
  DCASGD_CHECK(v.new_backup != v.weights);
  const Scalars s{lr,
                  config.lambda0,
                  config.ms_decay,
                  1.0f - config.ms_decay,
                  config.epsilon,
                  config.momentum,
                  config.weight_decay};
  switch (config.rule) {
    case UpdateRule::kAsgd:
      DispatchMomentum<UpdateRule::kAsgd>(s, v);
      return;
    case UpdateRule::kDcAsgdConstant:
      DispatchMomentum<UpdateRule::kDcAsgdConstant>(s, v);
      return;
    case UpdateRule::kDcAsgdAdaptive:
      DispatchMomentum<UpdateRule::kDcAsgdAdaptive>(s, v);
      return;
  }
  DCASGD_CHECK(false && "unknown UpdateRule");
}

}  // namespace dcasgd
