#ifndef DCASGD_WIRE_STATUS_H_
#define DCASGD_WIRE_STATUS_H_

// Status at the RPC boundary, both ways. Inside dcasgd every error is an
// absl::Status; grpc::Status exists only where a call crosses the wire. absl
// and gRPC share the numeric code space, so a code never changes on the way.

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "grpcpp/client_context.h"
#include "grpcpp/support/status.h"

namespace dcasgd {

// Server side: the same code and message. OK stays OK.
grpc::Status ToGrpcStatus(const absl::Status& status);

// Client side: the same code and the message prefixed by `peer`, e.g.
// "shard 1 (10.0.0.2:7000): unknown tensor 'w'". OK stays OK.
absl::Status FromGrpcStatus(const grpc::Status& status, absl::string_view peer);

// The trailing metadata with which a member of a replicated shard that is
// not the primary names its role when it refuses a call (UNAVAILABLE):
// "starting", "replica", "catching-up", "deposed", "unconfirmed",
// "handing-over" (docs/design.md, "How clients find the primary").
inline constexpr char kRoleMetadataKey[] = "dcasgd-role";

// As FromGrpcStatus, for a finished call of `context`: an UNAVAILABLE whose
// trailers name a role (kRoleMetadataKey) keeps it, for RefusingRole.
absl::Status FromGrpcCall(const grpc::Status& status, const grpc::ClientContext& context,
                          absl::string_view peer);
// The role a member refusing the call named (FromGrpcCall); empty when the
// error is not such a refusal.
std::string RefusingRole(const absl::Status& status);
// Marks `status` (not OK) as a refusal by a member naming `role` (non-empty).
void SetRefusingRole(absl::Status* status, absl::string_view role);

}  // namespace dcasgd

#endif  // DCASGD_WIRE_STATUS_H_
