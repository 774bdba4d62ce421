#ifndef DCASGD_CORE_TENSOR_H_
#define DCASGD_CORE_TENSOR_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "core/chunk_layout.h"

namespace dcasgd {

// Elements per chunk when a declaration leaves it 0.
inline constexpr uint32_t kDefaultChunkElements = 65536;

// The longest tensor or worker name, in bytes of UTF-8. Checked at
// declaration and at every request boundary, so that no request can make the
// shard keep, compare or echo an unbounded string.
inline constexpr size_t kMaxNameBytes = 256;

// The most dimensions a tensor may have (shapes are echoed in messages).
inline constexpr size_t kMaxRank = 32;

// `name` in single quotes for an error message, cut to at most 64 bytes (at a
// UTF-8 character boundary) with its length noted when longer: an error
// message never grows with the input (a client's default metadata limit is
// 8 KiB, and a longer status arrives as a different error).
std::string QuotedName(absl::string_view name);

// How a tensor's initial values are made. Random kinds are seeded per chunk
// from (seed, chunk index), so values do not depend on the shard count.
struct Initializer {
  enum class Kind { kZeros, kConstant, kUniform, kNormal, kValues };
  Kind kind = Kind::kZeros;
  float a = 0;  // constant value | uniform low | normal mean
  float b = 0;  // uniform high | normal stddev
  uint64_t seed = 0;
  std::vector<float> values;  // kValues: all prod(shape) elements

  bool operator==(const Initializer& o) const;
};

// A named dense float32 tensor split into fixed-size chunks.
struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;   // empty = scalar
  uint32_t chunk_elements = 0;  // 0 = kDefaultChunkElements
  Initializer init;

  bool operator==(const TensorSpec& o) const;
  bool operator!=(const TensorSpec& o) const { return !(*this == o); }

  uint64_t num_elements() const;
  // The chunk arithmetic of core/chunk_layout.h; chunk_elements must be
  // resolved (>= 1).
  uint64_t num_chunks() const;
  // Elements of chunk `chunk_index` (the last one may be shorter).
  uint64_t chunk_length(uint64_t chunk_index) const;
  // Offset of chunk `chunk_index` in the flat tensor.
  uint64_t chunk_offset(uint64_t chunk_index) const;
  TensorLayout layout() const { return {name, num_elements(), chunk_elements}; }
};

// INVALID_ARGUMENT unless the name is non-empty and at most kMaxNameBytes
// long, at most kMaxRank dimensions, every dimension >= 1, the
// element count fits, uniform low < high, stddev >= 0, and explicit values
// have exactly prod(shape) finite elements.
absl::Status ValidateTensorSpec(const TensorSpec& spec);

// `spec` with chunk_elements resolved to the default when 0.
TensorSpec ResolveDefaults(TensorSpec spec);

// Fills `out` (chunk_length(chunk_index) elements) with the initial values of
// chunk `chunk_index`. Deterministic for a given spec.
void InitializeChunk(const TensorSpec& spec, uint64_t chunk_index, absl::Span<float> out);

// "[784, 256]".
std::string ShapeString(const std::vector<int64_t>& shape);

}  // namespace dcasgd

#endif  // DCASGD_CORE_TENSOR_H_
