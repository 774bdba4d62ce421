#ifndef DCASGD_AUTH_HEALTH_PORT_H_
#define DCASGD_AUTH_HEALTH_PORT_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "grpcpp/server.h"

namespace dcasgd::auth {

// The plaintext port of --health_listen: it answers grpc.health.v1 and
// reflection, and no dcasgd service is registered on it, so that probes which
// present no client certificate (the kubelet's) reach a server whose own port
// requires TLS or mutual TLS. It repeats the serving statuses of the server
// it stands beside (SetServingStatus below). Thread-safe.
class HealthPort {
 public:
  // Serves on `listen` ("host:port"; empty: no port, and every method below
  // does nothing). UNAVAILABLE naming the address when it cannot be bound.
  static absl::StatusOr<std::unique_ptr<HealthPort>> Start(const std::string& listen);
  ~HealthPort();
  HealthPort(const HealthPort&) = delete;
  HealthPort& operator=(const HealthPort&) = delete;

  // The bound port; 0 without one.
  int port() const { return port_; }
  void SetServingStatus(const std::string& service, bool serving);
  // Every service NOT_SERVING (a server shutting down).
  void SetNotServing();
  // Stops at once (probes need no grace); idempotent.
  void Shutdown();

 private:
  HealthPort(std::unique_ptr<grpc::Server> server, int port)
      : server_(std::move(server)), port_(port) {}

  const std::unique_ptr<grpc::Server> server_;  // null: no port
  const int port_;
};

// `service`'s status on `server`'s own health service and on `health_port`
// (null: none).
void SetServingStatus(grpc::Server& server, HealthPort* health_port, const std::string& service,
                      bool serving);

}  // namespace dcasgd::auth

#endif  // DCASGD_AUTH_HEALTH_PORT_H_
