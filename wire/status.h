#ifndef DCASGD_WIRE_STATUS_H_
#define DCASGD_WIRE_STATUS_H_

// Status at the RPC boundary, both ways. Inside dcasgd every error is an
// absl::Status; grpc::Status exists only where a call crosses the wire. absl
// and gRPC share the numeric code space, so a code never changes on the way.

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "grpcpp/support/status.h"

namespace dcasgd {

// Server side: the same code and message. OK stays OK.
grpc::Status ToGrpcStatus(const absl::Status& status);

// Client side: the same code and the message prefixed by `peer`, e.g.
// "shard 1 (10.0.0.2:7000): unknown tensor 'w'". OK stays OK.
absl::Status FromGrpcStatus(const grpc::Status& status, absl::string_view peer);

}  // namespace dcasgd

#endif  // DCASGD_WIRE_STATUS_H_
