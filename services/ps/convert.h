#ifndef DCASGD_SERVICES_PS_CONVERT_H_
#define DCASGD_SERVICES_PS_CONVERT_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/tensor.h"
#include "dcasgd/v1/ps.pb.h"
#include "grpcpp/support/status.h"
#include "protos/convert.h"

namespace dcasgd {

// The RPC boundary: absl::Status -> grpc::Status. The message <-> core type
// translations (TensorSpec, names) are shared with the client in
// protos/convert.h.

// The same code and message. absl and gRPC share the numeric code space.
grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace dcasgd

#endif  // DCASGD_SERVICES_PS_CONVERT_H_
