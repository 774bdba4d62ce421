#ifndef DCASGD_SERVICES_WITNESS_WITNESS_SERVER_H_
#define DCASGD_SERVICES_WITNESS_WITNESS_SERVER_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "auth/authorizer.h"
#include "auth/health_port.h"
#include "grpcpp/server.h"
#include "services/witness/witness_metrics.h"
#include "services/witness/witness_options.h"
#include "services/witness/witness_registers.h"
#include "services/witness/witness_service.h"

namespace dcasgd {

// One running witness: the registers (restored from --state_dir), the gRPC
// server (dcasgd.v1.Witness, health, reflection), the optional health-only
// port and the metrics endpoint. main.cc is Start + wait for a signal +
// Shutdown.
class WitnessServer {
 public:
  // Opens the registers (OpenWitnessRegisters: a corrupt file is DATA_LOSS,
  // never an empty start), applies --init, starts serving, marks health
  // SERVING, writes the port file and logs one line to stderr. UNAVAILABLE
  // when a port cannot be bound.
  static absl::StatusOr<std::unique_ptr<WitnessServer>> Start(const WitnessOptions& options);

  // Shuts down if Shutdown was not called.
  ~WitnessServer();
  WitnessServer(const WitnessServer&) = delete;
  WitnessServer& operator=(const WitnessServer&) = delete;

  // Health NOT_SERVING; stops accepting calls and gives in-flight ones
  // `grace`. Every answered change was already durable, so nothing is
  // written here. Blocks. Later calls return at once.
  void Shutdown(absl::Duration grace);

  int grpc_port() const { return grpc_port_; }
  int health_port() const { return health_ != nullptr ? health_->port() : 0; }
  int metrics_port() const { return metrics_->port(); }
  WitnessRegisters* registers() { return registers_.get(); }

 private:
  explicit WitnessServer(const WitnessOptions& options) : options_(options) {}
  absl::Status StartImpl();
  // The health-only port (--health_listen) and the metrics endpoint.
  absl::Status StartSidePorts();
  void SetHealth(const std::string& service, bool serving);
  absl::Status Announce(const std::string& restored);

  // Constant after Start.
  const WitnessOptions options_;
  std::unique_ptr<WitnessRegisters> registers_;
  std::unique_ptr<WitnessMetrics> metrics_;
  std::unique_ptr<auth::Authorizer> authorizer_;
  std::unique_ptr<WitnessService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<auth::HealthPort> health_;  // --health_listen
  int grpc_port_ = 0;

  absl::Mutex shutdown_mu_;
  bool shut_down_ ABSL_GUARDED_BY(shutdown_mu_) = false;
};

}  // namespace dcasgd

#endif  // DCASGD_SERVICES_WITNESS_WITNESS_SERVER_H_
