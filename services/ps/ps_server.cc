#include "services/ps/ps_server.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/file.h"
#include "base/memory.h"
#include "base/port_file.h"
#include "base/status_macros.h"
#include "coordinator/schedule_file.h"
#include "core/shard_memory.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_builder.h"

namespace dcasgd {

namespace {

constexpr char kServiceName[] = "dcasgd.v1.ParameterShard";

// A member's coordinator changes commit like the store's (its replica has
// them before they take effect); none without replication.
std::function<absl::Status(const std::string&)> CoordinatorCommit(ReplicationMember* member) {
  if (member == nullptr) return nullptr;
  return [member](const std::string& state) { return member->CommitCoordinatorState(state); };
}

// A member that is not primary refuses coordinator calls too; none without
// replication.
DataCoordinatorService::Gate CoordinatorGate(ReplicationMember* member) {
  if (member == nullptr) return nullptr;
  return [member](grpc::CallbackServerContext* context) { return member->Admit(context); };
}

}  // namespace

PsServer::PsServer(const PsOptions& options) : options_(options) {}

absl::StatusOr<std::unique_ptr<PsServer>> PsServer::Start(const PsOptions& options) {
  std::unique_ptr<PsServer> server(new PsServer(options));
  RETURN_IF_ERROR(server->StartImpl());
  return server;
}

absl::Status PsServer::StartImpl() {
  store_ = std::make_unique<ShardStore>(options_.shard, Clock::Real());
  metrics_ = std::make_unique<ShardMetrics>(options_.shard.shard_index, store_.get());

  ASSIGN_OR_RETURN(std::string restored, PrepareCheckpoints());
  inflight_ = std::make_unique<InflightBudget>(options_.shard.inflight_budget_bytes);
  metrics_->AttachInflightBudget(inflight_.get());
  ASSIGN_OR_RETURN(authorizer_, auth::Authorizer::Create(options_.auth));
  ASSIGN_OR_RETURN(std::shared_ptr<grpc::ServerCredentials> credentials,
                   auth::MakeServerCredentials(options_.tls));
  service_ = std::make_unique<ParameterShardService>(
      store_.get(), metrics_.get(), checkpointer_.get(), options_.max_push_bytes,
      options_.max_message_bytes, inflight_.get(), authorizer_.get());

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options_.listen, credentials, &grpc_port_);
  // gRPC binds with SO_REUSEPORT by default: a second server started on a
  // port in use would share its connections instead of failing.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.RegisterService(service_.get());
  if (options_.replication.enabled()) AddReplication(&builder);
  if (options_.shard.shard_index == 0) {
    // The job's data schedule and its leases survive a restart of shard 0
    // next to its checkpoint; a corrupt file stops the start like a corrupt
    // checkpoint. Data-set leases use the worker lease duration: both track
    // live workers.
    ASSIGN_OR_RETURN(
        OpenedCoordinator opened,
        OpenDataCoordinator(options_.shard.lease, Clock::Real(), options_.checkpoint_dir,
                            CoordinatorCommit(member_.get())));
    coordinator_ = std::move(opened.coordinator);
    if (!opened.restored.empty()) absl::StrAppend(&restored, "; ", opened.restored);
    coordinator_service_ = std::make_unique<DataCoordinatorService>(
        coordinator_.get(), authorizer_.get(), CoordinatorGate(member_.get()));
    builder.RegisterService(coordinator_service_.get());
  }
  builder.SetMaxReceiveMessageSize(static_cast<int>(options_.max_message_bytes));
  // A fixed HTTP/2 window per stream instead of BDP probing, which grows
  // windows to many MiB: a stream waiting for the in-flight budget then holds
  // at most this much in the transport (the sizing rule's transport term).
  builder.AddChannelArgument(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES,
                             static_cast<int>(kStreamWindowBytes));
  // Accept the clients' keepalive pings (every 10 s, and every second from a
  // client of a replicated shard: clients/cpp/channel_args.h): gRPC's default
  // minimum of 5 minutes between pings without data would answer them with
  // GOAWAY "too_many_pings". Half the fastest interval leaves room for timer
  // jitter.
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 500);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  server_ = builder.BuildAndStart();
  if (server_ == nullptr || grpc_port_ == 0) {
    server_.reset();
    return absl::UnavailableError(
        absl::StrCat("cannot serve gRPC on '", options_.listen, "' (address in use or invalid)"));
  }

  if (absl::Status started = StartSidePorts(); !started.ok()) {
    server_->Shutdown();
    server_.reset();
    health_.reset();
    return started;
  }

  StartBackgroundTasks();
  if (member_ != nullptr) {
    if (absl::Status s = member_->Start(); !s.ok()) {
      server_->Shutdown(absl::ToChronoTime(absl::Now()));
      server_.reset();
      return s;
    }
  }

  return Announce(restored);
}

void PsServer::AddReplication(grpc::ServerBuilder* builder) {
  ReplicationMember::Hooks hooks;
  hooks.restore = [this]() -> absl::Status {
    ASSIGN_OR_RETURN(std::string restored, RestoreCheckpoint());
    std::fprintf(stderr, "dcasgd-ps: restored %s\n", restored.c_str());
    return absl::OkStatus();
  };
  hooks.state_valid = [this] {
    if (checkpointer_ != nullptr) {
      checkpointer_->Start(options_.checkpoint_interval, options_.checkpoint_min_interval);
    }
  };
  hooks.set_health = [this](const std::string& name, bool serving) { SetHealth(name, serving); };
  hooks.coordinator_state = [this] {
    return coordinator_ == nullptr ? std::string() : coordinator_->SerializeProgress();
  };
  hooks.renew_data_leases = [this] {
    if (coordinator_ != nullptr) coordinator_->RenewAllLeases();
  };
  hooks.load_coordinator_state = [this](const std::string& state) -> absl::Status {
    if (coordinator_ == nullptr) return absl::OkStatus();
    // Kept in the member's own file too, for when it restarts as primary.
    // A failed write (a full volume) is a failed checkpoint of this member,
    // not a reason to leave the pair: the schedule is in memory here and on
    // the primary, and the file is rewritten with the next change.
    if (!options_.checkpoint_dir.empty()) {
      absl::Status saved =
          WriteFileAtomically(absl::StrCat(options_.checkpoint_dir, "/", kScheduleFileName), state);
      if (!saved.ok()) {
        metrics_->CountCheckpointFailure();
        if (!schedule_write_failing_.exchange(true)) {
          std::fprintf(stderr,
                       "dcasgd-ps: cannot save the replicated data schedule (%s): this member "
                       "stays in its pair; its checkpoint holds an older schedule until a "
                       "write succeeds\n",
                       saved.ToString().c_str());
        }
      } else if (schedule_write_failing_.exchange(false)) {
        std::fprintf(stderr, "dcasgd-ps: the replicated data schedule is saved again\n");
      }
    }
    return coordinator_->RestoreProgress(state);
  };
  const std::string epoch_file =
      options_.checkpoint_dir.empty()
          ? std::string()
          : absl::StrCat(options_.checkpoint_dir, "/shard-", options_.shard.shard_index, ".epoch");
  member_ = std::make_unique<ReplicationMember>(options_.replication, store_.get(), epoch_file,
                                                options_.max_message_bytes, options_.max_push_bytes,
                                                std::move(hooks), metrics_->registry());
  service_->AttachReplication(member_.get());
  replication_service_ =
      std::make_unique<ReplicationService>(member_.get(), store_.get(), authorizer_.get());
  builder->RegisterService(replication_service_.get());
}

absl::Status PsServer::StartSidePorts() {
  ASSIGN_OR_RETURN(health_, auth::HealthPort::Start(options_.health_listen));
  if (options_.metrics_address.empty()) return absl::OkStatus();
  return metrics_->StartExposer(options_.metrics_address);
}

absl::StatusOr<std::string> PsServer::PrepareCheckpoints() {
  if (options_.replication.enabled()) {
    // A member restores its checkpoint only when it becomes primary: a
    // member that catches up loads its peer's snapshot into a fresh store.
    if (!options_.checkpoint_dir.empty()) {
      std::error_code error;
      std::filesystem::create_directories(options_.checkpoint_dir, error);
      if (error) {
        return absl::FailedPreconditionError(absl::StrCat("cannot create checkpoint directory '",
                                                          options_.checkpoint_dir,
                                                          "': ", error.message()));
      }
      checkpointer_ =
          std::make_unique<Checkpointer>(store_.get(), options_.checkpoint_dir, metrics_.get());
    }
    return std::string("nothing yet (a member of a pair restores when it becomes primary)");
  }
  return RestoreCheckpoint();
}

absl::StatusOr<std::string> PsServer::RestoreCheckpoint() {
  if (options_.checkpoint_dir.empty()) return std::string("none");
  if (checkpointer_ == nullptr) {
    checkpointer_ =
        std::make_unique<Checkpointer>(store_.get(), options_.checkpoint_dir, metrics_.get());
  }
  ASSIGN_OR_RETURN(const bool did_restore, checkpointer_->RestoreIfPresent());
  return did_restore
             ? absl::StrCat(checkpointer_->path(), " at version ", checkpointer_->last_version())
             : absl::StrCat("none (", checkpointer_->path(), " absent)");
}

void PsServer::StartBackgroundTasks() {
  const absl::Duration lease = options_.shard.lease;
  lease_reaper_ = std::make_unique<PeriodicTask>(lease / 4, [this] {
    // Only a primary decides expiry (a LeaseEnd entry the replica applies).
    if (member_ != nullptr && !member_->primary()) return;
    metrics_->CountLeaseExpirations(store_->ExpireLeases());
  });
  // Each second: trim after a burst of requests ended, and every 5 s while
  // idle (closed connections free their transport buffers, which the budget
  // does not see).
  memory_trimmer_ = std::make_unique<PeriodicTask>(
      absl::Seconds(1), [this, mark = uint64_t{0}, idle_ticks = 0]() mutable {
        const bool burst_ended = inflight_->IdleAfterRelease(&mark);
        idle_ticks = inflight_->in_use() == 0 ? idle_ticks + 1 : 0;
        if (burst_ended || (idle_ticks > 0 && idle_ticks % 5 == 0)) ReturnFreeMemoryToSystem();
      });
  // A member starts its checkpoints once it holds a valid copy (hooks).
  if (checkpointer_ != nullptr && member_ == nullptr) {
    checkpointer_->Start(options_.checkpoint_interval, options_.checkpoint_min_interval);
  }

  SetHealth("", true);
  SetHealth(kServiceName, true);
  SetHealth(kCheckpointHealthService, true);
  if (checkpointer_ != nullptr) {
    // The shard keeps serving when checkpoints fail (training goes on; only
    // durability suffers), so only the named service says so, for
    // readiness probes and alerts.
    const absl::Duration max_age = options_.checkpoint_max_age;
    durability_watch_ = std::make_unique<PeriodicTask>(
        std::clamp(max_age / 10, absl::Milliseconds(100), absl::Seconds(1)),
        [this, max_age, durable = true]() mutable {
          const absl::Duration age = checkpointer_->DurableAge();
          const bool now_durable = age <= max_age;
          if (now_durable == durable) return;
          durable = now_durable;
          SetHealth(kCheckpointHealthService, durable);
          if (durable) {
            std::fprintf(stderr,
                         "dcasgd-ps: the state is durable again: health service '%s' is "
                         "SERVING\n",
                         kCheckpointHealthService);
          } else {
            std::fprintf(stderr,
                         "dcasgd-ps: the state has not been durable for %s (more than "
                         "--checkpoint_max_age_seconds): health service '%s' is NOT_SERVING; "
                         "the shard keeps serving\n",
                         absl::FormatDuration(absl::Trunc(age, absl::Seconds(1))).c_str(),
                         kCheckpointHealthService);
          }
        });
  }
}

void PsServer::SetHealth(const std::string& service, bool serving) {
  auth::SetServingStatus(*server_, health_.get(), service, serving);
}

absl::Status PsServer::Announce(const std::string& restored) {
  // The lines first, the port file last: whoever waits for the port file
  // (tests, scripts/run-local.sh) then finds them in the log.
  std::fprintf(stderr,
               "dcasgd-ps: serving shard %u/%u: grpc port %d, metrics port %d, restored %s; %s\n",
               options_.shard.shard_index, options_.shard.shard_count, grpc_port_, metrics_->port(),
               restored.c_str(), options_.DebugString().c_str());
  // Said at every start, so that nobody runs an open shard by accident.
  if (!options_.tls.enabled() && !options_.auth.enabled()) {
    std::fprintf(stderr,
                 "dcasgd-ps: WARNING: serving without TLS or authentication: anyone who reaches "
                 "port %d can read and change the model (docs/security.md)\n",
                 grpc_port_);
  } else if (!options_.tls.enabled()) {
    std::fprintf(stderr,
                 "dcasgd-ps: WARNING: serving without TLS: bearer tokens and the model cross the "
                 "network in plaintext on port %d (docs/security.md)\n",
                 grpc_port_);
  } else if (!options_.auth.enabled()) {
    std::fprintf(stderr,
                 "dcasgd-ps: WARNING: serving without authentication: %s on port %d can read "
                 "and change the model (docs/security.md)\n",
                 options_.tls.client_ca.empty() ? "anyone who reaches the port"
                                                : "any holder of a client certificate",
                 grpc_port_);
  }
  if (!options_.port_file.empty()) {
    std::vector<std::pair<std::string, int>> ports = {{"grpc", grpc_port_},
                                                      {"metrics", metrics_->port()}};
    if (health_port() != 0) ports.emplace_back("health", health_port());
    RETURN_IF_ERROR(WritePortFile(options_.port_file, ports));
  }
  return absl::OkStatus();
}

PsServer::~PsServer() {
  if (absl::Status s = Shutdown(absl::Seconds(5)); !s.ok()) {
    std::fprintf(stderr, "dcasgd-ps: %s\n", s.ToString().c_str());
  }
}

std::string PsServer::local_address() const { return absl::StrCat("127.0.0.1:", grpc_port_); }

absl::Status PsServer::Shutdown(absl::Duration grace) {
  absl::MutexLock lock(&shutdown_mu_);
  if (shut_down_) return absl::OkStatus();
  shut_down_ = true;
  if (server_ == nullptr) return absl::OkStatus();  // Start failed half-way

  // Stopped first so it cannot flip a service back to SERVING.
  if (durability_watch_ != nullptr) durability_watch_->Stop();
  server_->GetHealthCheckService()->SetServingStatus(false);
  if (health_ != nullptr) health_->SetNotServing();
  service_->BeginShutdown();
  // Ends the replication streams (and fails calls waiting for a commit)
  // before the server waits for its calls.
  if (member_ != nullptr) member_->Stop();
  server_->Shutdown(absl::ToChronoTime(absl::Now() + grace));
  server_->Wait();
  if (health_ != nullptr) health_->Shutdown();
  if (lease_reaper_ != nullptr) lease_reaper_->Stop();
  if (memory_trimmer_ != nullptr) memory_trimmer_->Stop();
  if (checkpointer_ == nullptr) return absl::OkStatus();
  checkpointer_->Stop();
  if (member_ != nullptr && !member_->holds_valid_state()) {
    // Its last good checkpoint stays: what it holds is no valid copy.
    std::fprintf(stderr, "dcasgd-ps: no final checkpoint: this member never held a valid copy\n");
    return absl::OkStatus();
  }
  absl::StatusOr<CheckpointInfo> info =
      checkpointer_->WriteFinal(options_.final_checkpoint_timeout);
  if (!info.ok()) return info.status();
  std::fprintf(stderr, "dcasgd-ps: final checkpoint %s at version %llu (%llu bytes)\n",
               info->path.c_str(), static_cast<unsigned long long>(info->version),
               static_cast<unsigned long long>(info->bytes));
  return absl::OkStatus();
}

}  // namespace dcasgd
