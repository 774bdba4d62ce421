#ifndef DCASGD_SERVICES_WORKER_WORKER_OPTIONS_H_
#define DCASGD_SERVICES_WORKER_WORKER_OPTIONS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "auth/tls.h"
#include "base/enum_names.h"
#include "base/flags.h"
#include "core/dtype.h"

namespace dcasgd {

// What a dcasgd-worker process does.
enum class WorkerRole {
  kTrain,        // lease data shards, compute gradients, PushPull
  kEval,         // pull the model without a backup, report test accuracy
  kHealthCheck,  // check grpc.health.v1 of every shard once, exit 0 if all serve
};
inline constexpr EnumName<WorkerRole> kWorkerRoleNames[] = {
    {WorkerRole::kTrain, "train"},
    {WorkerRole::kEval, "eval"},
    {WorkerRole::kHealthCheck, "healthcheck"},
};

struct WorkerOptions {
  WorkerRole role = WorkerRole::kTrain;
  // One address per shard, in shard order (resolved from --ps_addresses or
  // --ps_address_template + --shard_count).
  std::vector<std::string> shard_addresses;
  // Empty, or per shard the address of its second member ("" for a shard
  // with one): ClientOptions.replica_addresses.
  std::vector<std::string> replica_addresses;
  // Data set root: "s3://bucket/prefix" or a directory. Holds
  // train/shard-*.dsd and test/shard-*.dsd (dcasgd-prepare-data).
  std::string data;
  std::string model = "mlp:256,128";
  uint64_t seed = 1;
  int batch_size = 64;
  uint32_t epochs = 1;
  // Stable identity; default $HOSTNAME (the pod name).
  std::string worker_name;
  std::string metrics_address;  // empty: no /metrics
  std::string port_file;        // "metrics <port>\n" after start
  int log_every = 100;          // steps between progress lines
  absl::Duration eval_interval = absl::Seconds(10);
  // Eval: give up (exit 1) when the job is not done and makes no progress
  // for this long: every worker exited or diverged.
  absl::Duration stall_timeout = absl::Seconds(300);
  // Train: stop after this many steps (0: run the job to its end).
  int64_t max_steps = 0;
  // Train: a batch loss above this (or not finite) ends the worker with
  // "training diverged". The shards clamp weights to a finite range, so a
  // diverging model shows as an exploding loss, not as NaN.
  double max_loss = 1000;
  // Train: pushes in flight while the next gradient is computed (ps.proto
  // JoinRequest.pipeline_depth; 0: compute, push, wait). 1 is the extra step
  // of staleness DC-ASGD compensates for (docs/algorithm.md, "Pipelined
  // workers").
  uint32_t pipeline_depth = 0;
  // --pipeline_depth=auto (the default) for a trainer: pipeline_depth is
  // decided by ResolvePipelineDepth (services/worker/worker.h) from the
  // shards' rule before the worker joins: 1 under dcasgd-c or dcasgd-a with
  // --sync=async on every shard, else 0.
  bool pipeline_depth_auto = false;
  // Train: logical workers in this process (0: this process is one ordinary
  // worker). See services/worker/virtual_workers.h.
  int virtual_workers = 0;
  // With virtual workers: who pushes next (services/worker/step_schedule.h),
  // or "free" for no turns.
  std::string schedule = "round-robin";
  // Train: bytes of decoded data shards kept in memory for the next epoch
  // (services/worker/data_cache.h; --data_cache_mb); 0: read and decode a
  // data shard at every lease of it. Virtual workers share one cache.
  size_t data_cache_bytes = size_t{256} << 20;
  // With virtual workers: pushes between test-set evaluations (0: only at
  // the end).
  int64_t eval_every_steps = 0;
  // TLS and the bearer token of every channel to the shards (--tls_*,
  // --auth_token_file), loaded when the options are parsed; never null.
  std::shared_ptr<const auth::ClientCredentials> credentials = auth::ClientCredentials::Insecure();
  // What gradients and weights travel as on every connection of this process
  // to the shards (--wire_dtype; ClientOptions.wire_dtype).
  Dtype wire_dtype = Dtype::kFloat32;
};

// Upper bound of --virtual_workers: each one holds a model copy, a data
// source and a connection per shard.
inline constexpr int kMaxVirtualWorkers = 1024;

// Upper bound of --data_cache_mb (1 TiB).
inline constexpr int64_t kMaxDataCacheMb = int64_t{1} << 20;

// Parses flags (without the program name) and DCASGD_<FLAG> environment
// variables (base/flags.h: a flag on the command line wins); the worker name
// defaults to $HOSTNAME from `env`. The TLS files and the token file are read
// here. INVALID_ARGUMENT with the flag name for an unknown flag, a bad or
// missing value or an unreadable file. Not thread-safe.
absl::StatusOr<WorkerOptions> ParseWorkerOptions(const std::vector<std::string>& args,
                                                 const EnvLookup& env);

// Help text listing every flag with its default and environment variable.
std::string WorkerOptionsUsage();

// "ps-{i}.svc:7000" x 3 -> ps-0.svc:7000, ps-1.svc:7000, ps-2.svc:7000.
// INVALID_ARGUMENT when the template lacks "{i}" or count < 1.
absl::StatusOr<std::vector<std::string>> ExpandAddressTemplate(const std::string& tmpl, int count);

// The shards of a --ps_addresses list: "a0|b0,a1" -> primaries {a0, a1},
// replicas {b0, ""}; replicas is empty when no shard names two members.
// INVALID_ARGUMENT for an empty member, more than two, or two equal ones.
struct ShardMembers {
  std::vector<std::string> primaries;
  std::vector<std::string> replicas;
};
absl::StatusOr<ShardMembers> ParseShardMembers(const std::string& list);

// Shard 0's members for a CoordinatorClient: "a" or "a|b".
std::string CoordinatorAddress(const WorkerOptions& options);

}  // namespace dcasgd

#endif  // DCASGD_SERVICES_WORKER_WORKER_OPTIONS_H_
