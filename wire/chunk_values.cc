#include "wire/chunk_values.h"

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "base/endian.h"  // chunk values are little-endian float32 or 16-bit words

namespace dcasgd {

namespace {

// Conversions go through a small buffer on the stack, a block at a time, so
// that a string can be narrowed or widened in place.
constexpr size_t kBlock = 1024;

}  // namespace

absl::StatusOr<Dtype> DtypeFromProto(int value, absl::string_view field) {
  switch (value) {
    case v1::DTYPE_FLOAT32:
      return Dtype::kFloat32;
    case v1::DTYPE_BFLOAT16:
      return Dtype::kBfloat16;
    case v1::DTYPE_FLOAT16:
      return Dtype::kFloat16;
    default:
      break;
  }
  return absl::InvalidArgumentError(
      absl::StrCat(field, " has unknown value ", value,
                   "; use DTYPE_FLOAT32 (0), DTYPE_BFLOAT16 (1) or DTYPE_FLOAT16 (2); nothing was "
                   "applied"));
}

v1::Dtype DtypeToProto(Dtype dtype) {
  switch (dtype) {
    case Dtype::kFloat32:
      break;
    case Dtype::kBfloat16:
      return v1::DTYPE_BFLOAT16;
    case Dtype::kFloat16:
      return v1::DTYPE_FLOAT16;
  }
  return v1::DTYPE_FLOAT32;
}

void EncodeValues(Dtype dtype, absl::Span<const float> values, std::string* out) {
  out->resize(WireBytes(dtype, values.size()));
  EncodeValuesTo(dtype, values, out->data());
}

void EncodeValuesTo(Dtype dtype, absl::Span<const float> values, char* out) {
  if (dtype == Dtype::kFloat32) {
    if (!values.empty()) std::memcpy(out, values.data(), WireBytes(dtype, values.size()));
    return;
  }
  // `out` is not aligned for uint16_t in general: convert into an aligned
  // block and copy its bytes.
  std::array<uint16_t, kBlock> block;
  for (size_t i = 0; i < values.size(); i += kBlock) {
    const size_t n = std::min(kBlock, values.size() - i);
    FloatTo16(dtype, values.subspan(i, n), absl::MakeSpan(block.data(), n));
    std::memcpy(out + 2 * i, block.data(), 2 * n);
  }
}

void EncodeValuesInPlace(Dtype dtype, std::string* values) {
  if (dtype == Dtype::kFloat32) return;
  const size_t elements = values->size() / sizeof(float);
  std::array<float, kBlock> in;
  std::array<uint16_t, kBlock> out;
  char* bytes = values->data();
  // Block k reads bytes [4kB, 4(k+1)B) before writing [2kB, 2(k+1)B): every
  // write lands on bytes already read, never on a later block's input.
  for (size_t i = 0; i < elements; i += kBlock) {
    const size_t n = std::min(kBlock, elements - i);
    std::memcpy(in.data(), bytes + 4 * i, 4 * n);
    FloatTo16(dtype, absl::MakeConstSpan(in.data(), n), absl::MakeSpan(out.data(), n));
    std::memcpy(bytes + 2 * i, out.data(), 2 * n);
  }
  values->resize(2 * elements);
}

SharedBytes EncodeSharedValues(Dtype dtype, SharedBytes values) {
  if (dtype == Dtype::kFloat32) return values;
  const size_t elements = values.size() / sizeof(float);
  char* data = nullptr;
  SharedBytes out = SharedBytes::Allocate(WireBytes(dtype, elements), &data);
  EncodeValuesTo(
      dtype, absl::MakeConstSpan(reinterpret_cast<const float*>(values.data()), elements), data);
  return out;
}

absl::Status DecodeValues(Dtype dtype, absl::string_view bytes, absl::Span<float> out) {
  const size_t expected = WireBytes(dtype, out.size());
  if (bytes.size() != expected) {
    return absl::InvalidArgumentError(absl::StrCat(bytes.size(), " bytes of ",
                                                   NameOf(kDtypeNames, dtype), " values; expected ",
                                                   expected, " (", out.size(), " elements)"));
  }
  if (dtype == Dtype::kFloat32) {
    if (!out.empty()) std::memcpy(out.data(), bytes.data(), expected);
    return absl::OkStatus();
  }
  std::array<uint16_t, kBlock> block;
  for (size_t i = 0; i < out.size(); i += kBlock) {
    const size_t n = std::min(kBlock, out.size() - i);
    std::memcpy(block.data(), bytes.data() + 2 * i, 2 * n);
    FloatFrom16(dtype, absl::MakeConstSpan(block.data(), n), out.subspan(i, n));
  }
  return absl::OkStatus();
}

absl::Status DecodeToFloat32InPlace(Dtype dtype, std::string* values) {
  if (dtype == Dtype::kFloat32) return absl::OkStatus();
  if (values->size() % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat("a ", NameOf(kDtypeNames, dtype),
                                                   " chunk holds 2 bytes per element; got ",
                                                   values->size(), " bytes"));
  }
  const size_t elements = values->size() / 2;
  values->resize(4 * elements);
  std::array<uint16_t, kBlock> in;
  std::array<float, kBlock> out;
  char* bytes = values->data();
  // Backwards, so that each block's input (bytes [2kB, 2(k+1)B)) is read
  // before the wider output of that or a later block ([4kB, 4(k+1)B))
  // overwrites it: the output of block k starts at or after its input.
  for (size_t end = elements; end > 0;) {
    const size_t start = end > kBlock ? end - kBlock : 0;
    const size_t n = end - start;
    std::memcpy(in.data(), bytes + 2 * start, 2 * n);
    FloatFrom16(dtype, absl::MakeConstSpan(in.data(), n), absl::MakeSpan(out.data(), n));
    std::memcpy(bytes + 4 * start, out.data(), 4 * n);
    end = start;
  }
  return absl::OkStatus();
}

}  // namespace dcasgd
