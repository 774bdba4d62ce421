#ifndef DCASGD_CLIENTS_CPP_RPC_CONVERT_H_
#define DCASGD_CLIENTS_CPP_RPC_CONVERT_H_

// Conversions at the client's RPC boundary: core TensorSpec <->
// dcasgd.v1.TensorSpec (statuses: wire/status.h).

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "clients/cpp/chunk_plan.h"
#include "core/tensor.h"
#include "dcasgd/v1/ps.pb.h"

namespace dcasgd {
namespace client {

// The wire form of `spec`; explicit initial values become little-endian
// float32 bytes.
void SpecToProto(const TensorSpec& spec, v1::TensorSpec* out);

// The layout of a spec as a shard reports it. INVALID_ARGUMENT when a
// dimension is < 1 or chunk_elements is 0 (a shard always resolves it).
absl::StatusOr<TensorLayout> LayoutFromProto(const v1::TensorSpec& spec);

}  // namespace client
}  // namespace dcasgd

#endif  // DCASGD_CLIENTS_CPP_RPC_CONVERT_H_
