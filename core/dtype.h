#ifndef DCASGD_CORE_DTYPE_H_
#define DCASGD_CORE_DTYPE_H_

// The number formats values may be kept or sent in: float32, and the two
// 16-bit formats bfloat16 (float32's 8-bit exponent, 8 significant bits) and
// float16 (IEEE binary16: 5-bit exponent, 11 significant bits, largest finite
// 65504). Conversions over spans, used by the shard for 16-bit backups
// (core/shard_store.*, --backup_dtype) and meant for 16-bit values on the wire.
// No gRPC, no protobuf: both core/ and wire/ use it.

#include <cstddef>
#include <cstdint>

#include "absl/types/span.h"
#include "base/enum_names.h"

namespace dcasgd {

enum class Dtype {
  kFloat32,
  kBfloat16,
  kFloat16,
};

// "float32" | "bfloat16" | "float16" (also accepted: "bf16", "fp16", "f32").
inline constexpr EnumName<Dtype> kDtypeNames[] = {
    {Dtype::kFloat32, "float32"}, {Dtype::kBfloat16, "bfloat16"}, {Dtype::kFloat16, "float16"},
    {Dtype::kFloat32, "f32"},     {Dtype::kBfloat16, "bf16"},     {Dtype::kFloat16, "fp16"},
};

// Bytes of one element: 4 or 2.
size_t DtypeBytes(Dtype dtype);

// The largest finite magnitude of the format (FLT_MAX, ~3.39e38, 65504).
// Finite float32 values beyond it (by at least half a unit in the last place)
// convert to infinity.
float DtypeMaxFinite(Dtype dtype);

// float32 -> 16 bits, elementwise, rounding to nearest with ties to even.
// NaN stays NaN (a quiet NaN of the same sign), +-Inf stays +-Inf, values
// beyond the format's range become +-Inf, values below its smallest
// subnormal round to (signed) zero, float16 subnormals are rounded like any
// other value. `in` and `out` must have the same size (CHECKed: a programmer
// error) and must not overlap. Thread-safe (pure).
void FloatToBfloat16(absl::Span<const float> in, absl::Span<uint16_t> out);
void FloatToFloat16(absl::Span<const float> in, absl::Span<uint16_t> out);

// 16 bits -> float32, elementwise and exact (every bfloat16 and float16 value
// is a float32 value; NaN stays NaN). Same contract on sizes.
void Bfloat16ToFloat(absl::Span<const uint16_t> in, absl::Span<float> out);
void Float16ToFloat(absl::Span<const uint16_t> in, absl::Span<float> out);

// The above by `dtype`, which must be kBfloat16 or kFloat16 (CHECKed).
void FloatTo16(Dtype dtype, absl::Span<const float> in, absl::Span<uint16_t> out);
void FloatFrom16(Dtype dtype, absl::Span<const uint16_t> in, absl::Span<float> out);

// Whether float16 conversions use the CPU's F16C instructions (x86-64 with
// AVX and F16C) rather than the portable code (Eigen's scalar conversion).
// Both give the same bits.
bool Float16HardwareConversion();

// The portable conversions (no AVX2, no F16C), for tests that compare both
// paths.
namespace dtype_internal {
void FloatToBfloat16Portable(absl::Span<const float> in, absl::Span<uint16_t> out);
void FloatToFloat16Portable(absl::Span<const float> in, absl::Span<uint16_t> out);
void Float16ToFloatPortable(absl::Span<const uint16_t> in, absl::Span<float> out);
}  // namespace dtype_internal

// One value, for tests and messages.
uint16_t FloatToBits16(Dtype dtype, float value);
float FloatFromBits16(Dtype dtype, uint16_t bits);

}  // namespace dcasgd

#endif  // DCASGD_CORE_DTYPE_H_
