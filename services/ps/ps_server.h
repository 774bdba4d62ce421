#ifndef DCASGD_SERVICES_PS_PS_SERVER_H_
#define DCASGD_SERVICES_PS_PS_SERVER_H_

#include <atomic>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "auth/authorizer.h"
#include "auth/health_port.h"
#include "base/periodic_task.h"
#include "coordinator/coordinator_service.h"
#include "coordinator/data_coordinator.h"
#include "core/shard_store.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "services/ps/checkpointer.h"
#include "services/ps/inflight_budget.h"
#include "services/ps/ps_metrics.h"
#include "services/ps/ps_options.h"
#include "services/ps/ps_service.h"
#include "services/ps/replication_member.h"
#include "services/ps/replication_service.h"

namespace dcasgd {

// The grpc.health.v1 service name that reports whether the shard's state is
// durable: NOT_SERVING when no checkpoint has covered it for longer than
// --checkpoint_max_age_seconds. "" and dcasgd.v1.ParameterShard stay SERVING
// meanwhile (the shard keeps training).
inline constexpr char kCheckpointHealthService[] = "dcasgd.checkpoint";

// One running parameter shard: the store, the gRPC server (ParameterShard,
// health, reflection; shard 0 also hosts the DataCoordinator), the metrics endpoint, the
// checkpointer and the lease reaper. main.cc is Start + wait for a signal + Shutdown; tests run it
// in process the same way.
class PsServer {
 public:
  // Restores <checkpoint_dir>/shard-<i>.ckpt when present (an unreadable or
  // corrupt one is an error: never start empty silently), starts serving,
  // marks health SERVING, writes the port file and logs one line to stderr.
  // UNAVAILABLE when a port cannot be bound.
  static absl::StatusOr<std::unique_ptr<PsServer>> Start(const PsOptions& options);

  // Shuts down if Shutdown was not called.
  ~PsServer();
  PsServer(const PsServer&) = delete;
  PsServer& operator=(const PsServer&) = delete;

  // Health NOT_SERVING; new pushes fail with UNAVAILABLE and waiting ones are
  // released; stops accepting calls and gives in-flight ones `grace` before
  // cancelling them; stops the background threads; writes the final
  // checkpoint (when checkpoints are on and the state changed since the
  // last one), retrying a failing write for --final_checkpoint_timeout_seconds,
  // and returns its status: on failure the message says which versions are
  // lost. Blocks. Later calls return OK at once.
  absl::Status Shutdown(absl::Duration grace);

  int grpc_port() const { return grpc_port_; }
  // 0 without --health_listen.
  int health_port() const { return health_ != nullptr ? health_->port() : 0; }
  // 0 when metrics are off.
  int metrics_port() const { return metrics_->port(); }
  // "127.0.0.1:<grpc_port>": where a local client reaches the server.
  std::string local_address() const;

  ShardStore* store() { return store_.get(); }
  ShardMetrics* metrics() { return metrics_.get(); }
  Checkpointer* checkpointer() { return checkpointer_.get(); }

 private:
  explicit PsServer(const PsOptions& options);
  absl::Status StartImpl();
  // RestoreCheckpoint, or for a member of a pair only the checkpointer and
  // its directory (it restores when it becomes primary).
  absl::StatusOr<std::string> PrepareCheckpoints();
  // Creates the checkpointer (if --checkpoint_dir) and restores the latest
  // checkpoint into the store; describes what was restored for the log.
  absl::StatusOr<std::string> RestoreCheckpoint();
  // The health-only port (--health_listen) and the metrics endpoint.
  absl::Status StartSidePorts();
  // Once the server is up: the lease reaper, periodic checkpoints, the health
  // statuses and the durability watch.
  void StartBackgroundTasks();
  // Sets the serving status of `service` on the gRPC server and on the
  // health-only port.
  void SetHealth(const std::string& service, bool serving);
  // With --replicas=2: the member (its checkpoint restored only when it
  // becomes primary) and the ShardReplication service on `builder`.
  void AddReplication(grpc::ServerBuilder* builder);
  // Writes the port file (if asked) and logs what is served, loudly when
  // anyone who reaches the port may call it.
  absl::Status Announce(const std::string& restored);

  // Constant after Start.
  const PsOptions options_;
  std::unique_ptr<ShardStore> store_;
  // Before metrics_, so destroyed after it: the metrics exposer's scrapes
  // read it until metrics_ is gone (ShardMetrics::AttachInflightBudget).
  std::unique_ptr<InflightBudget> inflight_;
  std::unique_ptr<ShardMetrics> metrics_;
  std::unique_ptr<Checkpointer> checkpointer_;  // null: checkpoints off
  std::unique_ptr<auth::Authorizer> authorizer_;
  std::unique_ptr<ParameterShardService> service_;
  std::unique_ptr<DataCoordinator> coordinator_;  // shard 0 only
  std::unique_ptr<DataCoordinatorService> coordinator_service_;
  // --replicas=2 only (null otherwise).
  std::unique_ptr<ReplicationMember> member_;
  std::unique_ptr<ReplicationService> replication_service_;
  std::unique_ptr<grpc::Server> server_;
  // Plaintext, grpc.health.v1 only (--health_listen).
  std::unique_ptr<auth::HealthPort> health_;
  std::unique_ptr<PeriodicTask> lease_reaper_;
  // Flips the health service kCheckpointHealthService (checkpoints on).
  std::unique_ptr<PeriodicTask> durability_watch_;
  // Hands freed message buffers back to the system once a burst of requests
  // ended (the allocator keeps them otherwise: TuneAllocatorForLargeMessages).
  std::unique_ptr<PeriodicTask> memory_trimmer_;
  // A replica's last write of the replicated data schedule failed (so the
  // next failure is not logged again). Atomic: written by the replication
  // follower's thread only, but read nowhere else under a lock.
  std::atomic<bool> schedule_write_failing_{false};
  int grpc_port_ = 0;

  absl::Mutex shutdown_mu_;
  bool shut_down_ ABSL_GUARDED_BY(shutdown_mu_) = false;
};

}  // namespace dcasgd

#endif  // DCASGD_SERVICES_PS_PS_SERVER_H_
