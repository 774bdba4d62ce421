#ifndef DCASGD_PROTOS_CONVERT_H_
#define DCASGD_PROTOS_CONVERT_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/tensor.h"
#include "dcasgd/v1/ps.pb.h"

namespace dcasgd {

// Translations between the dcasgd.v1 messages and the core types, shared by
// the server and the C++ client. Pure functions.

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

}  // namespace dcasgd

#endif  // DCASGD_PROTOS_CONVERT_H_
