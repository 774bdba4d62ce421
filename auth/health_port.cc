#include "auth/health_port.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_builder.h"

namespace dcasgd::auth {

absl::StatusOr<std::unique_ptr<HealthPort>> HealthPort::Start(const std::string& listen) {
  if (listen.empty()) return std::unique_ptr<HealthPort>(new HealthPort(nullptr, 0));
  grpc::EnableDefaultHealthCheckService(true);
  // Reflection is also the one service registered at build time, which a
  // gRPC 1.51 server needs (the default health service joins later).
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  int port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort(listen, grpc::InsecureServerCredentials(), &port);
  // Not shared with a process already on that port (gRPC's default).
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot serve health on '", listen, "' (address in use or invalid)"));
  }
  return std::unique_ptr<HealthPort>(new HealthPort(std::move(server), port));
}

HealthPort::~HealthPort() { Shutdown(); }

void HealthPort::SetServingStatus(const std::string& service, bool serving) {
  if (server_ != nullptr) server_->GetHealthCheckService()->SetServingStatus(service, serving);
}

void HealthPort::SetNotServing() {
  if (server_ != nullptr) server_->GetHealthCheckService()->SetServingStatus(false);
}

void HealthPort::Shutdown() {
  if (server_ == nullptr) return;
  // gRPC's Shutdown and Wait may be called again once the server has stopped.
  server_->Shutdown(absl::ToChronoTime(absl::Now()));
  server_->Wait();
}

void SetServingStatus(grpc::Server& server, HealthPort* health_port, const std::string& service,
                      bool serving) {
  server.GetHealthCheckService()->SetServingStatus(service, serving);
  if (health_port != nullptr) health_port->SetServingStatus(service, serving);
}

}  // namespace dcasgd::auth
