#ifndef DCASGD_CORE_UPDATE_RULE_H_
#define DCASGD_CORE_UPDATE_RULE_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "base/enum_names.h"
#include "core/dtype.h"

namespace dcasgd {

// The server-side rule applied to a pushed gradient (ALGORITHM.md).
enum class UpdateRule {
  kAsgd,            // lambda = 0: SGD on (possibly stale) gradients
  kDcAsgdConstant,  // DC-ASGD-c: lambda_t = lambda0
  kDcAsgdAdaptive,  // DC-ASGD-a: lambda_t = lambda0 / sqrt(MS + eps)
};

enum class LrSchedule {
  kConstant,
  kStepDecay,  // lr * decay_factor ^ floor(version / decay_every)
};

// Hyper-parameters of the update rule. Copyable value type.
struct OptimizerConfig {
  UpdateRule rule = UpdateRule::kDcAsgdAdaptive;
  float learning_rate = 0.1f;
  // lambda0; ForRule(rule) gives the rule's default.
  float lambda0 = 2.0f;
  // DC-ASGD-a mean square: MS <- m * MS + (1 - m) * g * g, m = ms_decay.
  float ms_decay = 0.95f;
  float epsilon = 1e-7f;
  // Momentum mu (0 = none) and L2 weight decay, composed as MXNet does.
  float momentum = 0.0f;
  float weight_decay = 0.0f;
  // Staleness-aware ASGD (Zhang et al. 2016): lr / max(1, staleness).
  bool staleness_aware = false;
  // Gap-aware damping (Barkai et al., ICLR 2020), with any rule: each
  // coordinate of g is divided by max(1, |w - w_bak| / C), where C is the
  // running mean of that coordinate's update size |w_new - w_old|
  // (C <- gap_decay * C + (1 - gap_decay) * |step|, started at the chunk's
  // first step). The damped g is what the rule sees (mean square and
  // compensation included). Needs the worker's backup, also under ASGD.
  bool gap_aware = false;
  float gap_decay = 0.999f;
  LrSchedule schedule = LrSchedule::kConstant;
  float decay_factor = 0.1f;
  uint64_t decay_every = 0;  // versions; required > 0 for kStepDecay
  // The bounds that keep every update finite in float32 (docs/security.md):
  // the shard rejects a push holding any |g| > max_gradient_abs (nothing of
  // it is applied), and the kernels clamp every new weight to
  // [-max_weight_abs, max_weight_abs]. With both bounds and the
  // hyper-parameters above, Validate() proves no intermediate can overflow.
  float max_gradient_abs = 1e6f;
  float max_weight_abs = 1e6f;
  // How the shard keeps each worker's backup w_bak (--backup_dtype): float32,
  // or rounded to bfloat16 / float16 (to nearest even, core/dtype.h), half the
  // memory. The kernels read a 16-bit backup through ChunkVectors::backup16,
  // converted exactly to float32, so the update is the float32 update on the
  // rounded backup: w - w_bak is off by the rounding of w_bak (relative 2^-8
  // for bfloat16, 2^-11 for float16; docs/algorithm.md). float16 holds
  // |w| <= 65504 only, so it needs max_weight_abs <= 65504. Weights and
  // optimizer state stay float32.
  Dtype backup_dtype = Dtype::kFloat32;

  // INVALID_ARGUMENT naming the offending field when a value is out of range
  // (lr > 0, lambda0 >= 0, 0 <= ms_decay < 1, eps > 0, 0 <= momentum < 1,
  // weight_decay >= 0, step decay with decay_every > 0 and 0 < factor <= 1,
  // finite positive bounds, max_weight_abs <= 65504 with float16 backups),
  // or when the worst case of UpdateBounds() is not
  // safely finite in float32 (the message names the flags to lower).
  absl::Status Validate() const;
  // A configuration for `rule` with the rule-dependent defaults: lambda0 is
  // 0.04 for DC-ASGD-c (MXNet's default) and 2.0 for DC-ASGD-a (the value of
  // the ports of the authors' code; ASGD ignores it); every other field as
  // declared above.
  static OptimizerConfig ForRule(UpdateRule rule);
  // "dcasgd-a lr=0.1 lambda0=2 m=0.95 eps=1e-07 momentum=0 wd=0 ...".
  std::string DebugString() const;
  bool uses_backup() const { return rule != UpdateRule::kAsgd || gap_aware; }
  bool uses_mean_square() const { return rule == UpdateRule::kDcAsgdAdaptive; }
  bool uses_momentum() const { return momentum != 0.0f; }
  bool uses_gap_scale() const { return gap_aware; }
  // Per-element optimizer state vectors a chunk keeps: mean square, momentum
  // and gap scale, 0 to 3.
  int state_vectors() const {
    return (uses_mean_square() ? 1 : 0) + (uses_momentum() ? 1 : 0) + (uses_gap_scale() ? 1 : 0);
  }
};

// Worst-case magnitudes of one update under `config`'s bounds, computed in
// double from |g| <= G = max_gradient_abs, |w|, |w_bak| <= C = max_weight_abs
// and 0 <= MS (the argument is in docs/security.md):
//   lambda_max     DC-ASGD-c: lambda0; DC-ASGD-a: lambda0 / sqrt(eps)
//   compensation   |lambda * g * g * (w - w_bak)|: DC-ASGD-c lambda0 G^2 2C;
//                  DC-ASGD-a lambda0 G 2C / sqrt(1 - m), because the MS
//                  updated first is >= (1 - m) g^2
//   direction      |d| <= G + wd C + compensation
//   momentum       |mom| <= lr |d| / (1 - mu) (a geometric series; lr |d|
//                  without momentum)
// Every float intermediate of the kernels is bounded by one of these, by
// G^2 (the mean square) or by C + momentum (the new weight before clamping).
struct UpdateBounds {
  double lambda_max = 0;
  double compensation = 0;
  double direction = 0;
  double momentum = 0;
  // The largest of the above, G^2 and C + momentum.
  double largest = 0;
};
UpdateBounds ComputeUpdateBounds(const OptimizerConfig& config);

// The rules' names in flags and messages: "asgd" | "dcasgd-c" | "dcasgd-a"
// (also accepted: "dc-asgd-c", "dc-asgd-a"). Use with NameOf / ParseEnum.
inline constexpr EnumName<UpdateRule> kUpdateRuleNames[] = {
    {UpdateRule::kAsgd, "asgd"},
    {UpdateRule::kDcAsgdConstant, "dcasgd-c"},
    {UpdateRule::kDcAsgdAdaptive, "dcasgd-a"},
    {UpdateRule::kDcAsgdConstant, "dc-asgd-c"},
    {UpdateRule::kDcAsgdAdaptive, "dc-asgd-a"},
};
inline constexpr EnumName<LrSchedule> kLrScheduleNames[] = {
    {LrSchedule::kConstant, "constant"},
    {LrSchedule::kStepDecay, "step"},
};

// The learning rate for an update applied when the shard is at `version`
// (before the update) for a gradient of staleness `staleness`: the schedule's
// rate, divided by max(1, staleness) when staleness_aware.
float EffectiveLearningRate(const OptimizerConfig& config, uint64_t version, uint64_t staleness);

// The gap scale of a chunk that has not been updated yet.
inline constexpr float kGapScaleUnset = -1.0f;

// Views of one chunk's vectors, all of length n. Not owned.
struct ChunkVectors {
  float* weights = nullptr;         // w, updated in place
  const float* gradient = nullptr;  // g
  const float* backup = nullptr;    // w_bak(m); may be null for kAsgd
  // w_bak(m) in config.backup_dtype when that is a 16-bit format: then it is
  // read instead of `backup` (and required iff uses_backup()).
  const uint16_t* backup16 = nullptr;
  float* mean_square = nullptr;  // MS; required iff uses_mean_square()
  float* momentum = nullptr;     // mom; required iff uses_momentum()
  // C of gap-aware damping; required iff uses_gap_scale(). A negative value
  // means "no step yet" (a new chunk holds kGapScaleUnset): no damping, and
  // the first step sets C = |step|.
  float* gap_scale = nullptr;
  // If set, receives a copy of the new w as it is computed (the reply
  // buffer of a PushPull, which saves a second pass over the chunk). Must
  // not overlap any other vector.
  float* weights_copy = nullptr;
  size_t n = 0;
};

// Applies one update to one chunk, elementwise (paper eq. 10 / Alg. 1; MXNet's
// composition with momentum and weight decay):
//   g      <- g / max(1, |w - w_bak| / (C + 1e-12))      (gap-aware, C >= 0)
//   MS     <- m * MS + (1 - m) * g * g                    (adaptive only)
//   lambda <- lambda0 | lambda0 / sqrt(MS + eps) | 0      (from lambda0 each step)
//   d      =  g + wd * w + lambda * g * g * (w - w_bak)
//   mom    <- mu * mom - lr * d; w <- w + mom            (mu > 0)
//   w      <- w - lr * d                                 (mu = 0)
//   w      <- clamp(w, -max_weight_abs, max_weight_abs)
//   C      <- C < 0 ? |w - w_old| : gd * C + (1 - gd) * |w - w_old|  (gap-aware)
// Weight decay stays out of the g*g factor. `lr` is the effective rate.
// Finite inputs within the config's bounds give finite outputs (see
// UpdateBounds); the caller checks the gradient bound first.
// The caller holds the chunk's lock; the function is otherwise pure.
void ApplyUpdate(const OptimizerConfig& config, float lr, const ChunkVectors& v);

// The instruction sets the kernels are compiled for. ApplyUpdate uses the best
// one the CPU has; the results are bit-identical (no FMA), which tests check.
enum class KernelIsa { kBaseline, kAvx2 };
bool KernelIsaSupported(KernelIsa isa);
// ApplyUpdate with a given instruction set; it must be supported.
void ApplyUpdateWithIsa(KernelIsa isa, const OptimizerConfig& config, float lr,
                        const ChunkVectors& v);

}  // namespace dcasgd

#endif  // DCASGD_CORE_UPDATE_RULE_H_
