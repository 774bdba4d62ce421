#include "core/dtype.h"

#include <limits>

#include "Eigen/Core"
#include "base/check.h"

namespace dcasgd {

namespace {

// Eigen's conversions (Eigen/src/Core/arch/Default/{BFloat16,Half}.h) round
// to nearest even and keep NaN a NaN; numext::bit_cast gives the raw bits.
inline uint16_t ToBf16(float value) {
  return Eigen::numext::bit_cast<uint16_t>(Eigen::bfloat16(value));
}
inline uint16_t ToFp16(float value) {
  return Eigen::numext::bit_cast<uint16_t>(Eigen::half(value));
}
inline float FromBf16(uint16_t bits) {
  return static_cast<float>(Eigen::numext::bit_cast<Eigen::bfloat16>(bits));
}
inline float FromFp16(uint16_t bits) {
  return static_cast<float>(Eigen::numext::bit_cast<Eigen::half>(bits));
}

}  // namespace

size_t DtypeBytes(Dtype dtype) { return dtype == Dtype::kFloat32 ? sizeof(float) : 2; }

float DtypeMaxFinite(Dtype dtype) {
  switch (dtype) {
    case Dtype::kFloat32:
      break;
    case Dtype::kBfloat16:
      return FromBf16(0x7f7f);
    case Dtype::kFloat16:
      return FromFp16(0x7bff);
  }
  return std::numeric_limits<float>::max();
}

void FloatToBfloat16(absl::Span<const float> in, absl::Span<uint16_t> out) {
  DCASGD_CHECK(in.size() == out.size());
  for (size_t i = 0; i < in.size(); ++i) out[i] = ToBf16(in[i]);
}

void FloatToFloat16(absl::Span<const float> in, absl::Span<uint16_t> out) {
  DCASGD_CHECK(in.size() == out.size());
  for (size_t i = 0; i < in.size(); ++i) out[i] = ToFp16(in[i]);
}

void Bfloat16ToFloat(absl::Span<const uint16_t> in, absl::Span<float> out) {
  DCASGD_CHECK(in.size() == out.size());
  for (size_t i = 0; i < in.size(); ++i) out[i] = FromBf16(in[i]);
}

void Float16ToFloat(absl::Span<const uint16_t> in, absl::Span<float> out) {
  DCASGD_CHECK(in.size() == out.size());
  for (size_t i = 0; i < in.size(); ++i) out[i] = FromFp16(in[i]);
}

void FloatTo16(Dtype dtype, absl::Span<const float> in, absl::Span<uint16_t> out) {
  DCASGD_CHECK(dtype != Dtype::kFloat32);
  if (dtype == Dtype::kBfloat16) {
    FloatToBfloat16(in, out);
  } else {
    FloatToFloat16(in, out);
  }
}

void FloatFrom16(Dtype dtype, absl::Span<const uint16_t> in, absl::Span<float> out) {
  DCASGD_CHECK(dtype != Dtype::kFloat32);
  if (dtype == Dtype::kBfloat16) {
    Bfloat16ToFloat(in, out);
  } else {
    Float16ToFloat(in, out);
  }
}

uint16_t FloatToBits16(Dtype dtype, float value) {
  uint16_t bits = 0;
  FloatTo16(dtype, absl::MakeConstSpan(&value, 1), absl::MakeSpan(&bits, 1));
  return bits;
}

float FloatFromBits16(Dtype dtype, uint16_t bits) {
  float value = 0;
  FloatFrom16(dtype, absl::MakeConstSpan(&bits, 1), absl::MakeSpan(&value, 1));
  return value;
}

}  // namespace dcasgd
