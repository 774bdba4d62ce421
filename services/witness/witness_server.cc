#include "services/witness/witness_server.h"

#include <cstdio>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "auth/tls.h"
#include "base/port_file.h"
#include "base/status_macros.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_builder.h"

namespace dcasgd {
namespace {

constexpr char kServiceName[] = "dcasgd.v1.Witness";
// Every witness request is a few dozen bytes (a reason at most 1 KiB).
constexpr int kMaxMessageBytes = 64 << 10;

}  // namespace

absl::StatusOr<std::unique_ptr<WitnessServer>> WitnessServer::Start(const WitnessOptions& options) {
  std::unique_ptr<WitnessServer> server(new WitnessServer(options));
  RETURN_IF_ERROR(server->StartImpl());
  return server;
}

absl::Status WitnessServer::StartImpl() {
  std::string restored;
  ASSIGN_OR_RETURN(registers_,
                   OpenWitnessRegisters(options_.state_dir, options_.shard_count, &restored));
  for (const WitnessInit& init : options_.init) {
    RETURN_IF_ERROR(registers_->Init(init.shard, init.epoch, init.member).status());
  }
  metrics_ = std::make_unique<WitnessMetrics>(registers_.get());
  ASSIGN_OR_RETURN(authorizer_, auth::Authorizer::Create(options_.auth));
  ASSIGN_OR_RETURN(std::shared_ptr<grpc::ServerCredentials> credentials,
                   auth::MakeServerCredentials(options_.tls));
  service_ = std::make_unique<WitnessService>(registers_.get(), metrics_.get(), authorizer_.get());

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options_.listen, credentials, &grpc_port_);
  // gRPC binds with SO_REUSEPORT by default: a second server started on a
  // port in use would share its connections instead of failing.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.RegisterService(service_.get());
  builder.SetMaxReceiveMessageSize(kMaxMessageBytes);
  // The members' channels may ping as often as their channels to the shards
  // (every 1 s, docs/design.md, "How clients find the primary").
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 500);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  server_ = builder.BuildAndStart();
  if (server_ == nullptr || grpc_port_ == 0) {
    server_.reset();
    return absl::UnavailableError(
        absl::StrCat("cannot serve gRPC on '", options_.listen, "' (address in use or invalid)"));
  }
  if (absl::Status started = StartSidePorts(); !started.ok()) {
    Shutdown(absl::ZeroDuration());
    return started;
  }
  SetHealth("", true);
  SetHealth(kServiceName, true);
  return Announce(restored);
}

absl::Status WitnessServer::StartSidePorts() {
  ASSIGN_OR_RETURN(health_, auth::HealthPort::Start(options_.health_listen));
  if (options_.metrics_address.empty()) return absl::OkStatus();
  return metrics_->StartExposer(options_.metrics_address);
}

void WitnessServer::SetHealth(const std::string& service, bool serving) {
  auth::SetServingStatus(*server_, health_.get(), service, serving);
}

absl::Status WitnessServer::Announce(const std::string& restored) {
  if (!options_.port_file.empty()) {
    std::vector<std::pair<std::string, int>> ports = {{"grpc", grpc_port_},
                                                      {"metrics", metrics_->port()}};
    if (health_port() != 0) ports.emplace_back("health", health_port());
    RETURN_IF_ERROR(WritePortFile(options_.port_file, ports));
  }
  std::fprintf(stderr,
               "dcasgd-witness: serving %u shards: grpc port %d, metrics port %d, registers %s; "
               "%s\n",
               options_.shard_count, grpc_port_, metrics_->port(), restored.c_str(),
               options_.DebugString().c_str());
  // Said at every start: whoever may call Claim can take any shard's primary
  // role from its members.
  if (!options_.auth.enabled()) {
    std::fprintf(stderr,
                 "dcasgd-witness: WARNING: serving without authentication: anyone who reaches "
                 "port %d can move the shards' epochs (docs/security.md)\n",
                 grpc_port_);
  } else if (!options_.tls.enabled()) {
    std::fprintf(stderr,
                 "dcasgd-witness: WARNING: serving without TLS: bearer tokens cross the network "
                 "in plaintext on port %d (docs/security.md)\n",
                 grpc_port_);
  }
  return absl::OkStatus();
}

WitnessServer::~WitnessServer() { Shutdown(absl::Seconds(5)); }

void WitnessServer::Shutdown(absl::Duration grace) {
  absl::MutexLock lock(&shutdown_mu_);
  if (shut_down_) return;
  shut_down_ = true;
  if (server_ != nullptr) {
    server_->GetHealthCheckService()->SetServingStatus(false);
    if (health_ != nullptr) health_->SetNotServing();
    server_->Shutdown(absl::ToChronoTime(absl::Now() + grace));
    server_->Wait();
  }
  if (health_ != nullptr) health_->Shutdown();
}

}  // namespace dcasgd
