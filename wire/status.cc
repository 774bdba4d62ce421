#include "wire/status.h"

#include <string>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"

namespace dcasgd {

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(static_cast<int>(status.code())),
                      std::string(status.message()));
}

absl::Status FromGrpcStatus(const grpc::Status& status, absl::string_view peer) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      absl::StrCat(peer, ": ", status.error_message()));
}

namespace {

// The payload of a refusal's status that holds the role it named.
constexpr char kRolePayload[] = "type.dcasgd.dev/refusing-role";

}  // namespace

absl::Status FromGrpcCall(const grpc::Status& status, const grpc::ClientContext& context,
                          absl::string_view peer) {
  absl::Status converted = FromGrpcStatus(status, peer);
  if (status.error_code() != grpc::StatusCode::UNAVAILABLE) return converted;
  const auto& trailers = context.GetServerTrailingMetadata();
  auto role = trailers.find(kRoleMetadataKey);
  if (role != trailers.end() && role->second.size() > 0) {
    SetRefusingRole(&converted, absl::string_view(role->second.data(), role->second.size()));
  }
  return converted;
}

void SetRefusingRole(absl::Status* status, absl::string_view role) {
  status->SetPayload(kRolePayload, absl::Cord(std::string(role)));
}

std::string RefusingRole(const absl::Status& status) {
  const auto role = status.GetPayload(kRolePayload);
  return role.has_value() ? std::string(*role) : std::string();
}

}  // namespace dcasgd
