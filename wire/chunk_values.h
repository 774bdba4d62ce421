#ifndef DCASGD_WIRE_CHUNK_VALUES_H_
#define DCASGD_WIRE_CHUNK_VALUES_H_

// Chunk values on the wire (ps.proto Dtype): float32, or bfloat16 / float16
// to halve the bytes. The shard and the C++ client convert here, straight
// between float32 buffers and a message's `values` bytes (no intermediate
// copy); the conversions themselves are core/dtype.h's (round to nearest
// even, NaN stays NaN, exact widening). Pure functions, thread-safe.

#include <cstddef>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "base/shared_bytes.h"
#include "core/dtype.h"
#include "dcasgd/v1/ps.pb.h"

namespace dcasgd {

// A wire dtype as the core one. INVALID_ARGUMENT naming `field` (e.g.
// "Chunk.dtype") for a value this version does not know.
absl::StatusOr<Dtype> DtypeFromProto(int value, absl::string_view field);
v1::Dtype DtypeToProto(Dtype dtype);

// Bytes of `elements` values in `dtype`.
inline size_t WireBytes(Dtype dtype, size_t elements) { return elements * DtypeBytes(dtype); }

// Writes `values` into `out` (resized to WireBytes) in `dtype`.
void EncodeValues(Dtype dtype, absl::Span<const float> values, std::string* out);
// The same into `out`, which holds WireBytes(dtype, values.size()) bytes.
void EncodeValuesTo(Dtype dtype, absl::Span<const float> values, char* out);

// `values` holds little-endian float32 bytes (a multiple of 4); re-encodes
// them in place in `dtype` and shrinks it (a no-op for float32): a reply
// buffer filled by the store goes out without a second buffer.
void EncodeValuesInPlace(Dtype dtype, std::string* values);

// `values` (float32 bytes, a multiple of 4, aligned for floats as
// SharedBytes::Allocate aligns) in `dtype`: the same block for float32, with
// no copy; else a new block. `values` is never written: it may be a shard's
// backup too.
SharedBytes EncodeSharedValues(Dtype dtype, SharedBytes values);

// Decodes `bytes`, encoded in `dtype`, into `out`. INVALID_ARGUMENT when
// `bytes` is not exactly WireBytes(dtype, out.size()) long; `out` is then
// untouched.
absl::Status DecodeValues(Dtype dtype, absl::string_view bytes, absl::Span<float> out);

// `values` holds 16-bit values of `dtype` (an even length); replaces them
// with their float32 bytes (exact), for a store that takes float32.
// INVALID_ARGUMENT for an odd length; a no-op for float32.
absl::Status DecodeToFloat32InPlace(Dtype dtype, std::string* values);

}  // namespace dcasgd

#endif  // DCASGD_WIRE_CHUNK_VALUES_H_
