#include "services/worker/worker.h"

#include <cstdio>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "base/backoff.h"
#include "base/port_file.h"
#include "base/status_macros.h"
#include "clients/cpp/ps_client.h"
#include "coordinator/coordinator_client.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "services/worker/data_cache.h"
#include "services/worker/data_source.h"
#include "services/worker/evaluator.h"
#include "services/worker/trainer.h"
#include "services/worker/virtual_workers.h"
#include "services/worker/worker_metrics.h"

namespace dcasgd {

absl::Status CheckShardHealth(const std::string& address, absl::Duration timeout,
                              const auth::ClientCredentials& credentials) {
  auto stub =
      grpc::health::v1::Health::NewStub(credentials.NewChannel(address, grpc::ChannelArguments()));
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  grpc::health::v1::HealthCheckRequest request;
  grpc::health::v1::HealthCheckResponse response;
  grpc::Status s = stub->Check(&context, request, &response);
  if (!s.ok()) {
    return absl::UnavailableError(
        absl::StrCat("shard ", address, " health check failed: ", s.error_message()));
  }
  if (response.status() != grpc::health::v1::HealthCheckResponse::SERVING) {
    return absl::UnavailableError(absl::StrCat("shard ", address, " is not serving"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<PsClient>> ConnectWithRetry(const ClientOptions& options,
                                                           const std::string& name,
                                                           const absl::Notification* stop) {
  absl::StatusOr<std::unique_ptr<PsClient>> ps = absl::UnknownError("not connected");
  RetryWithBackoff(
      RetryPolicy{{absl::Milliseconds(100), absl::Seconds(1)}, absl::Minutes(5)},
      [&] {
        ps = PsClient::Connect(options);
        return ps.status();
      },
      IsTransient,
      [&](const absl::Status& error) {
        std::fprintf(stderr, "[%s] connecting to the shards failed, retrying: %s\n", name.c_str(),
                     std::string(error.message()).c_str());
      },
      stop)
      .IgnoreError();  // the result is in `ps`
  return ps;
}

uint32_t AutoPipelineDepth(const std::vector<ShardStatus>& shards, std::string* why) {
  for (const ShardStatus& shard : shards) {
    const bool compensated = shard.rule == "dcasgd-c" || shard.rule == "dcasgd-a";
    if (!compensated || shard.sync != "async") {
      *why = absl::StrCat("shard ", shard.shard_index, " runs ", shard.rule, " with sync ",
                          shard.sync, "; pipelining pays off under DC-ASGD with sync async");
      return 0;
    }
  }
  if (shards.empty()) {
    *why = "no shard reported its rule";
    return 0;
  }
  *why = absl::StrCat("the shards run ", shards[0].rule,
                      " with sync async, which compensates the extra step of staleness");
  return 1;
}

namespace {

// The role's client of every shard. A trainer at --pipeline_depth=auto first
// decides its depth (into `options`) from the rule the shards report to a
// reader connection, as the depth goes into Join; see AutoPipelineDepth.
absl::StatusOr<std::unique_ptr<PsClient>> ConnectToShards(const model::Model& model,
                                                          const std::string& name,
                                                          const absl::Notification* stop,
                                                          WorkerOptions* options) {
  const bool eval = options->role == WorkerRole::kEval;
  ClientOptions client_options;
  client_options.shard_addresses = options->shard_addresses;
  client_options.replica_addresses = options->replica_addresses;
  client_options.worker_name = eval ? "" : options->worker_name;
  client_options.credentials = options->credentials;
  client_options.wire_dtype = options->wire_dtype;
  const bool automatic = !eval && options->pipeline_depth_auto;
  if (automatic) {
    ClientOptions reader = client_options;
    reader.worker_name.clear();
    ASSIGN_OR_RETURN(std::unique_ptr<PsClient> status_client, ConnectWithRetry(reader, name, stop));
    // Declared before joining, so that the shards check the Join's extra
    // backups against the model's size (and an automatic depth can give
    // way, below) rather than the declaration against the Join's backups.
    // The trainer declares again (a no-op) and reports any error of it.
    status_client->Declare(model.ParameterSpecs(options->seed)).IgnoreError();
    ASSIGN_OR_RETURN(std::vector<ShardStatus> shards, status_client->GetStatus());
    std::string why;
    options->pipeline_depth = AutoPipelineDepth(shards, &why);
    options->pipeline_depth_auto = false;
    std::fprintf(stderr, "[%s] pipeline depth %u (--pipeline_depth=auto: %s)\n", name.c_str(),
                 options->pipeline_depth, why.c_str());
  }
  if (!eval) client_options.pipeline_depth = options->pipeline_depth;
  absl::StatusOr<std::unique_ptr<PsClient>> connected =
      ConnectWithRetry(client_options, name, stop);
  if (automatic && options->pipeline_depth > 0 && absl::IsResourceExhausted(connected.status()) &&
      absl::StrContains(connected.status().message(), "pipeline_depth")) {
    // The extra backups do not fit a shard's memory budget: an automatic
    // depth gives way, where an explicit one is the operator's to change.
    std::fprintf(stderr, "[%s] pipeline depth 0 instead: %s\n", name.c_str(),
                 std::string(connected.status().message()).c_str());
    options->pipeline_depth = 0;
    client_options.pipeline_depth = 0;
    connected = ConnectWithRetry(client_options, name, stop);
  }
  return connected;
}

}  // namespace

absl::Status RunWorker(const WorkerOptions& options, const absl::Notification* stop) {
  if (options.role == WorkerRole::kHealthCheck) {
    // Every process of the job: both members of a replicated shard (a
    // replica is alive, SERVING on "", though it serves no client calls).
    std::vector<std::string> addresses = options.shard_addresses;
    addresses.insert(addresses.end(), options.replica_addresses.begin(),
                     options.replica_addresses.end());
    for (const std::string& address : addresses) {
      RETURN_IF_ERROR(CheckShardHealth(address, absl::Seconds(5), *options.credentials));
      std::printf("%s SERVING\n", address.c_str());
    }
    return absl::OkStatus();
  }
  const bool eval = options.role == WorkerRole::kEval;
  const std::string name = eval && options.worker_name.empty() ? "evaluator" : options.worker_name;
  WorkerMetrics metrics(name);
  if (!options.metrics_address.empty()) RETURN_IF_ERROR(metrics.Start(options.metrics_address));
  if (!options.port_file.empty()) {
    RETURN_IF_ERROR(WritePortFile(options.port_file, {{"metrics", metrics.port()}}));
  }

  ASSIGN_OR_RETURN(std::unique_ptr<model::Model> model, model::CreateModel(options.model));
  if (!eval) {
    // A worker started after the job finished (a restarted or late pod) has
    // nothing to do: it says so and exits 0 without joining, pulling or
    // asking for checkpoints. Shard 0 unreachable for 10 s: connecting
    // below rides the outage out.
    absl::StatusOr<JobProgress> job =
        CoordinatorClient(CoordinatorAddress(options), absl::Seconds(10), options.credentials)
            .JobStatus();
    if (job.ok() && job->done) {
      std::fprintf(stderr,
                   "[%s] the job finished before this worker started (%u data shards x %u "
                   "epochs, all trained): nothing to train. Scale the workers to 0 "
                   "(docs/operations.md, \"Running a job to completion\")\n",
                   name.c_str(), job->num_data_shards, job->epochs);
      return absl::OkStatus();
    }
  }
  if (options.virtual_workers > 0) return RunVirtualWorkers(options, *model, &metrics, stop);
  // Read the data first: a wrong S3 secret or a missing bucket ends the
  // worker before it joins or trains anything.
  // The evaluator reads only the test shards: no cache.
  std::shared_ptr<DataShardCache> cache =
      eval ? nullptr : MakeDataShardCache(options.data_cache_bytes);
  ASSIGN_OR_RETURN(std::unique_ptr<DataSource> data, DataSource::Open(options.data, cache));

  WorkerOptions resolved = options;
  ASSIGN_OR_RETURN(std::unique_ptr<PsClient> ps, ConnectToShards(*model, name, stop, &resolved));
  CoordinatorClient coordinator(CoordinatorAddress(options), absl::Minutes(5), options.credentials);
  std::fprintf(stderr,
               "[%s] %s: model %s, %zu shards, %zu training data shards, metrics on port %d\n",
               name.c_str(), eval ? "evaluator" : "worker", model->name().c_str(),
               options.shard_addresses.size(), data->num_train_shards(), metrics.port());

  if (eval) {
    return RunEvaluator(options, ps.get(), &coordinator, data.get(), model.get(), &metrics, stop);
  }
  Trainer trainer(resolved, ps.get(), &coordinator, data.get(), model.get(), &metrics);
  absl::Status trained = trainer.Run(stop);
  // A shard that cannot be told (down at the very end) lets the lease expire
  // instead: nothing is lost, so this does not fail the worker.
  if (absl::Status left = ps->Leave(); !left.ok()) {
    std::fprintf(stderr, "[%s] leaving failed (the lease will expire): %s\n", name.c_str(),
                 std::string(left.message()).c_str());
  }
  std::fprintf(stderr, "[%s] left after %lld steps\n", name.c_str(),
               static_cast<long long>(trainer.steps()));
  if (cache != nullptr) std::fprintf(stderr, "[%s] %s\n", name.c_str(), cache->Summary().c_str());
  return trained;
}

}  // namespace dcasgd
