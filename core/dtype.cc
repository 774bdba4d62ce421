#include "core/dtype.h"

#include <cstring>
#include <limits>

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#include <immintrin.h>
#define DCASGD_HAVE_F16C_PATH 1
#endif

#include "Eigen/Core"
#include "base/check.h"

namespace dcasgd {

namespace {

// Eigen's scalar conversions (Eigen/src/Core/arch/Default/{BFloat16,Half}.h)
// round to nearest even and keep NaN a NaN; numext::bit_cast gives the raw
// bits. The span functions below use them where no faster exact path exists.
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

// bfloat16 is the upper half of a float32, so both directions are integer
// arithmetic that GCC vectorises (Eigen's scalar conversions are not, and
// made the DC-ASGD-a kernel with bfloat16 backups 1.7x slower than with
// float32 ones; docs/benchmarks.md). Rounding to nearest even adds 0x7fff
// plus the lowest kept bit before truncating; a NaN keeps its sign and top
// payload bits with the quiet bit set, so that truncation cannot make it an
// infinity. tests/core/dtype_test.cc checks both against Eigen's.
inline __attribute__((always_inline)) void NarrowToBfloat16(const float* src, uint16_t* dst,
                                                            size_t n) {
  for (size_t i = 0; i < n; ++i) {
    uint32_t bits;
    std::memcpy(&bits, src + i, sizeof(bits));
    const uint32_t rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
    const bool nan = (bits & 0x7fffffffu) > 0x7f800000u;
    dst[i] = static_cast<uint16_t>(nan ? (bits >> 16) | 0x40u : rounded);
  }
}

#ifdef DCASGD_HAVE_F16C_PATH
// SSE2 has no unsigned 32 -> 16 bit pack, so the baseline loop narrows one
// lane at a time; with AVX2 it runs 8 wide (3x faster, docs/benchmarks.md).
__attribute__((target("avx2"))) void NarrowToBfloat16Avx2(const float* src, uint16_t* dst,
                                                          size_t n) {
  NarrowToBfloat16(src, dst, n);
}
#endif

void FloatToBfloat16(absl::Span<const float> in, absl::Span<uint16_t> out) {
  DCASGD_CHECK(in.size() == out.size());
#ifdef DCASGD_HAVE_F16C_PATH
  static const bool avx2 = __builtin_cpu_supports("avx2");
  if (avx2) {
    NarrowToBfloat16Avx2(in.data(), out.data(), in.size());
    return;
  }
#endif
  NarrowToBfloat16(in.data(), out.data(), in.size());
}

void Bfloat16ToFloat(absl::Span<const uint16_t> in, absl::Span<float> out) {
  DCASGD_CHECK(in.size() == out.size());
  const uint16_t* src = in.data();
  float* dst = out.data();
  for (size_t i = 0; i < in.size(); ++i) {
    const uint32_t bits = static_cast<uint32_t>(src[i]) << 16;
    std::memcpy(dst + i, &bits, sizeof(bits));
  }
}

namespace dtype_internal {

void FloatToBfloat16Portable(absl::Span<const float> in, absl::Span<uint16_t> out) {
  DCASGD_CHECK(in.size() == out.size());
  NarrowToBfloat16(in.data(), out.data(), in.size());
}

void FloatToFloat16Portable(absl::Span<const float> in, absl::Span<uint16_t> out) {
  DCASGD_CHECK(in.size() == out.size());
  for (size_t i = 0; i < in.size(); ++i) out[i] = ToFp16(in[i]);
}

void Float16ToFloatPortable(absl::Span<const uint16_t> in, absl::Span<float> out) {
  DCASGD_CHECK(in.size() == out.size());
  for (size_t i = 0; i < in.size(); ++i) out[i] = FromFp16(in[i]);
}

}  // namespace dtype_internal

#ifdef DCASGD_HAVE_F16C_PATH
namespace {

// The F16C instructions (every x86-64 CPU with AVX2) convert 8 values at a
// time, IEEE round to nearest even with subnormals, NaN quieted, overflow to
// infinity: what Eigen's scalar code computes, 5-10x faster.
__attribute__((target("avx,f16c"))) void FloatToFloat16F16c(const float* in, uint16_t* out,
                                                            size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(in + i), _MM_FROUND_TO_NEAREST_INT);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), h);
  }
  for (; i < n; ++i) out[i] = ToFp16(in[i]);
}

__attribute__((target("avx,f16c"))) void Float16ToFloatF16c(const uint16_t* in, float* out,
                                                            size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + i));
    _mm256_storeu_ps(out + i, _mm256_cvtph_ps(h));
  }
  for (; i < n; ++i) out[i] = FromFp16(in[i]);
}

// CPUID leaf 1 ECX: F16C is bit 29, AVX bit 28 (clang 14 does not accept
// "f16c" in __builtin_cpu_supports, GCC does; cpuid.h works for both).
bool HaveF16c() {
  static const bool f16c = [] {
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    if (__get_cpuid(1, &eax, &ebx, &ecx, &edx) == 0) return false;
    return __builtin_cpu_supports("avx") && (ecx & bit_F16C) != 0;
  }();
  return f16c;
}

}  // namespace
#endif

bool Float16HardwareConversion() {
#ifdef DCASGD_HAVE_F16C_PATH
  return HaveF16c();
#else
  return false;
#endif
}

void FloatToFloat16(absl::Span<const float> in, absl::Span<uint16_t> out) {
  DCASGD_CHECK(in.size() == out.size());
#ifdef DCASGD_HAVE_F16C_PATH
  if (HaveF16c()) {
    FloatToFloat16F16c(in.data(), out.data(), in.size());
    return;
  }
#endif
  dtype_internal::FloatToFloat16Portable(in, out);
}

void Float16ToFloat(absl::Span<const uint16_t> in, absl::Span<float> out) {
  DCASGD_CHECK(in.size() == out.size());
#ifdef DCASGD_HAVE_F16C_PATH
  if (HaveF16c()) {
    Float16ToFloatF16c(in.data(), out.data(), in.size());
    return;
  }
#endif
  dtype_internal::Float16ToFloatPortable(in, out);
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
