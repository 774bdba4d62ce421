#ifndef DCASGD_WIRE_TENSOR_SPEC_H_
#define DCASGD_WIRE_TENSOR_SPEC_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/tensor.h"
#include "dcasgd/v1/ps.pb.h"

namespace dcasgd {

// Tensors at the API boundary: names, TensorSpec both ways, and the layout a
// shard reports, shared by the server and the C++ client. Pure functions.
// Explicit initial values cross as little-endian float32 bytes
// (base/endian.h).

// True when `bytes` is well-formed UTF-8 (no overlongs, surrogates or code
// points above U+10FFFF).
bool IsValidUtf8(absl::string_view bytes);

// OK when `name` is non-empty, at most kMaxNameBytes long and valid UTF-8;
// INVALID_ARGUMENT naming `what` (e.g. "tensor name") otherwise. The message
// never quotes the name.
absl::Status ValidateName(absl::string_view what, absl::string_view name);

// A wire TensorSpec as a core one. INVALID_ARGUMENT for a bad name or an
// explicit-values initialiser whose byte length is not a multiple of 4; the
// remaining checks (shape, element counts, ranges) are core's
// ValidateTensorSpec, run by ShardStore::Declare.
absl::StatusOr<TensorSpec> TensorSpecFromProto(const v1::TensorSpec& proto);
void TensorSpecToProto(const TensorSpec& spec, v1::TensorSpec* proto);

// The layout of a spec as a shard reports it (chunk_elements resolved).
// INVALID_ARGUMENT when a dimension is < 1 or chunk_elements is 0.
absl::StatusOr<TensorLayout> LayoutFromProto(const v1::TensorSpec& spec);

}  // namespace dcasgd

#endif  // DCASGD_WIRE_TENSOR_SPEC_H_
