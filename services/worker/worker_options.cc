#include "services/worker/worker_options.h"

#include <limits>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "base/flags.h"
#include "base/status_macros.h"
#include "core/push.h"

ABSL_FLAG(std::string, role, "train", "train | eval | healthcheck");
ABSL_FLAG(std::string, ps_addresses, "",
          "comma-separated shard addresses, in shard order; a replicated shard's two members "
          "as a|b (e.g. ps-0:7000|ps-2:7000,ps-1:7000|ps-3:7000)");
ABSL_FLAG(std::string, ps_address_template, "",
          "shard address with {i} for the index, e.g. dcasgd-ps-{i}.dcasgd-ps-headless:7000; "
          "used with --shard_count when --ps_addresses is empty");
ABSL_FLAG(int32_t, shard_count, 0, "number of shards (with --ps_address_template)");
ABSL_FLAG(int32_t, ps_replicas, 1,
          "members per shard with --ps_address_template: 1, or 2 (member b of shard i is the "
          "template with {i} = i + shard_count, the chart's pod numbering)");
ABSL_FLAG(std::string, data, "",
          "data set root: s3://bucket/prefix or a directory (from dcasgd-prepare-data)");
ABSL_FLAG(std::string, model, "mlp:256,128",
          "softmax | mlp:H1,H2,... | cnn | cnn:C1,C2,H | torchscript:PATH (a module saved with "
          "torch.jit.script; builds with -DDCASGD_WITH_TORCH=ON)");
ABSL_FLAG(uint64_t, seed, 1, "seed of the parameter initialisation and shuffling");
ABSL_FLAG(int32_t, batch_size, 64, "examples per gradient");
ABSL_FLAG(uint32_t, epochs, 1, "passes over the training set (the whole job)");
ABSL_FLAG(std::string, worker_name, "", "stable worker identity; default $HOSTNAME");
ABSL_FLAG(std::string, metrics_address, "0.0.0.0:9200",
          "Prometheus /metrics host:port (port 0: any); empty: off");
ABSL_FLAG(std::string, port_file, "", "write 'metrics <port>' here after start");
ABSL_FLAG(int32_t, log_every, 100, "steps between progress lines");
ABSL_FLAG(double, eval_interval_seconds, 10, "eval: seconds between evaluations");
ABSL_FLAG(double, stall_timeout_seconds, 300,
          "eval: exit 1 when the job is not done and neither the model version nor the data "
          "schedule moved for this long (no worker can make progress); 0: wait forever");
ABSL_FLAG(int64_t, max_steps, 0, "train: stop after this many steps (0: the whole job)");
ABSL_FLAG(double, max_loss, 1000,
          "train: stop with 'training diverged' when a batch's loss exceeds this (the shards "
          "keep the weights finite, so divergence shows as an exploding loss); 0: off");
ABSL_FLAG(std::string, pipeline_depth, "auto",
          "train: compute the gradient of step t+1 while the PushPull of step t is in flight, "
          "up to this many pushes ahead (0-4; the shards keep depth+1 backups of this worker "
          "and compensate each push from the weights it was computed on); 0: compute, push, "
          "wait; auto: 1 when every shard runs a DC-ASGD rule (dcasgd-c, dcasgd-a) with "
          "--sync=async, else 0 (and 0 with --virtual_workers)");
ABSL_FLAG(int64_t, data_cache_mb, 256,
          "train: MiB of decoded data shards kept in memory, so that the next epoch neither "
          "reads nor decodes them again (least recently used dropped first; Fashion-MNIST "
          "takes 180); 0: read every lease's data shard from the store");
ABSL_FLAG(int32_t, virtual_workers, 0,
          "train: run this many logical workers in this process, each a full worker to the "
          "shards (own join, backup, leases), taking turns to push as --schedule says, so the "
          "staleness is under control (convergence studies); 0: one ordinary worker");
ABSL_FLAG(std::string, schedule, "round-robin",
          "with --virtual_workers: round-robin (staleness exactly M-1) | random (geometric "
          "staleness, mean M-1) | slow:K[:F] (every K-th worker F times slower) | free (no "
          "turns; needed for --sync=ssgd shards)");
ABSL_FLAG(int64_t, eval_every_steps, 0,
          "with --virtual_workers: evaluate the model on the test set after every this many "
          "pushes (while no worker pushes) and once at the end; 0: only at the end");
ABSL_FLAG(std::string, tls_ca, "",
          "PEM CA bundle that signed the shards' certificates: connect with TLS; empty: "
          "plaintext");
ABSL_FLAG(std::string, tls_cert, "", "PEM client certificate, for shards that require mutual TLS");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert");
ABSL_FLAG(std::string, tls_server_name, "",
          "name to verify in the shards' certificates instead of each address's host");
ABSL_FLAG(std::string, auth_token_file, "",
          "file holding the bearer token sent with every call (a Kubernetes Secret key); empty: "
          "none");

ABSL_FLAG(std::string, wire_dtype, "float32",
          "float32 | bfloat16 | float16: what gradients and weights travel as between this "
          "process and the shards (16 bits: half the bytes, rounded to nearest even)");

namespace dcasgd {
namespace {

// Every flag defined above, nothing else.
const FlagSet& WorkerFlags() {
  static const FlagSet* flags = new FlagSet("dcasgd-worker", __FILE__);  // never deleted
  return *flags;
}

absl::Status Invalid(absl::string_view flag, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat("--", flag, ": ", why));
}

}  // namespace

absl::StatusOr<std::vector<std::string>> ExpandAddressTemplate(const std::string& tmpl, int count) {
  if (tmpl.find("{i}") == std::string::npos) {
    return Invalid("ps_address_template", absl::StrCat("'", tmpl, "' has no {i}"));
  }
  if (count < 1) return Invalid("shard_count", "must be >= 1 with --ps_address_template");
  std::vector<std::string> out;
  for (int i = 0; i < count; ++i) {
    out.push_back(absl::StrReplaceAll(tmpl, {{"{i}", absl::StrCat(i)}}));
  }
  return out;
}

std::string CoordinatorAddress(const WorkerOptions& options) {
  if (options.replica_addresses.empty() || options.replica_addresses[0].empty()) {
    return options.shard_addresses[0];
  }
  return absl::StrCat(options.shard_addresses[0], "|", options.replica_addresses[0]);
}

absl::StatusOr<ShardMembers> ParseShardMembers(const std::string& list) {
  ShardMembers out;
  bool replicated = false;
  for (absl::string_view shard : absl::StrSplit(list, ',', absl::SkipWhitespace())) {
    std::vector<std::string> members;
    for (absl::string_view member : absl::StrSplit(shard, '|')) {
      members.emplace_back(absl::StripAsciiWhitespace(member));
    }
    const size_t index = out.primaries.size();
    if (members.size() > 2 || members[0].empty() || (members.size() == 2 && members[1].empty())) {
      return Invalid("ps_addresses", absl::StrCat("shard ", index, ": '", shard,
                                                  "' is not host:port or a|b (two members)"));
    }
    if (members.size() == 2 && members[0] == members[1]) {
      return Invalid("ps_addresses",
                     absl::StrCat("shard ", index, ": both members are ", members[0]));
    }
    out.primaries.push_back(members[0]);
    out.replicas.push_back(members.size() == 2 ? members[1] : "");
    replicated = replicated || members.size() == 2;
  }
  if (!replicated) out.replicas.clear();
  return out;
}

absl::StatusOr<WorkerOptions> ParseWorkerOptions(const std::vector<std::string>& args,
                                                 const EnvLookup& env) {
  RETURN_IF_ERROR(WorkerFlags().Parse(args, env).status());
  WorkerOptions o;
  if (absl::StatusOr<WorkerRole> role =
          ParseEnum("role", kWorkerRoleNames, absl::GetFlag(FLAGS_role));
      role.ok()) {
    o.role = *role;
  } else {
    return Invalid("role", role.status().message());
  }
  const std::string list = absl::GetFlag(FLAGS_ps_addresses);
  const int replicas = absl::GetFlag(FLAGS_ps_replicas);
  if (replicas != 1 && replicas != 2) return Invalid("ps_replicas", "must be 1 or 2");
  if (!list.empty()) {
    ASSIGN_OR_RETURN(ShardMembers members, ParseShardMembers(list));
    o.shard_addresses = std::move(members.primaries);
    o.replica_addresses = std::move(members.replicas);
  } else if (!absl::GetFlag(FLAGS_ps_address_template).empty()) {
    const int count = absl::GetFlag(FLAGS_shard_count);
    auto expanded =
        ExpandAddressTemplate(absl::GetFlag(FLAGS_ps_address_template), replicas * count);
    if (!expanded.ok()) return expanded.status();
    o.shard_addresses.assign(expanded->begin(), expanded->begin() + count);
    if (replicas == 2) o.replica_addresses.assign(expanded->begin() + count, expanded->end());
  }
  if (o.shard_addresses.empty()) {
    return Invalid("ps_addresses", "give the shard addresses (or --ps_address_template)");
  }
  o.data = absl::GetFlag(FLAGS_data);
  if (o.data.empty() && o.role != WorkerRole::kHealthCheck) {
    return Invalid("data", "give the data set root (s3://bucket/prefix or a directory)");
  }
  o.model = absl::GetFlag(FLAGS_model);
  o.seed = absl::GetFlag(FLAGS_seed);
  o.batch_size = absl::GetFlag(FLAGS_batch_size);
  if (o.batch_size < 1) return Invalid("batch_size", "must be >= 1");
  o.epochs = absl::GetFlag(FLAGS_epochs);
  if (o.epochs < 1) return Invalid("epochs", "must be >= 1");
  o.worker_name = absl::GetFlag(FLAGS_worker_name);
  if (o.worker_name.empty()) o.worker_name = env("HOSTNAME").value_or("");
  if (o.worker_name.empty() && o.role == WorkerRole::kTrain) {
    return Invalid("worker_name", "empty and $HOSTNAME is not set");
  }
  o.metrics_address = absl::GetFlag(FLAGS_metrics_address);
  o.port_file = absl::GetFlag(FLAGS_port_file);
  o.log_every = absl::GetFlag(FLAGS_log_every);
  if (o.log_every < 1) return Invalid("log_every", "must be >= 1");
  const double interval = absl::GetFlag(FLAGS_eval_interval_seconds);
  if (!(interval > 0)) return Invalid("eval_interval_seconds", "must be > 0");
  o.eval_interval = absl::Seconds(interval);
  const double stall = absl::GetFlag(FLAGS_stall_timeout_seconds);
  if (!(stall >= 0)) return Invalid("stall_timeout_seconds", "must be >= 0 (0: off)");
  o.stall_timeout = stall > 0 ? absl::Seconds(stall) : absl::InfiniteDuration();
  o.max_steps = absl::GetFlag(FLAGS_max_steps);
  if (o.max_steps < 0) return Invalid("max_steps", "must be >= 0");
  const double max_loss = absl::GetFlag(FLAGS_max_loss);
  if (!(max_loss >= 0)) return Invalid("max_loss", "must be >= 0 (0: off)");
  o.max_loss = max_loss > 0 ? max_loss : std::numeric_limits<double>::infinity();
  const int64_t data_cache_mb = absl::GetFlag(FLAGS_data_cache_mb);
  if (data_cache_mb < 0 || data_cache_mb > kMaxDataCacheMb) {
    return Invalid("data_cache_mb", absl::StrCat("must be in [0, ", kMaxDataCacheMb, "]"));
  }
  o.data_cache_bytes = static_cast<size_t>(data_cache_mb) << 20;
  o.virtual_workers = absl::GetFlag(FLAGS_virtual_workers);
  if (o.virtual_workers < 0 || o.virtual_workers > kMaxVirtualWorkers) {
    return Invalid("virtual_workers", absl::StrCat("must be in [0, ", kMaxVirtualWorkers, "]"));
  }
  if (o.virtual_workers > 0 && o.role != WorkerRole::kTrain) {
    return Invalid("virtual_workers", "only with --role=train");
  }
  if (absl::StatusOr<Dtype> wire =
          ParseEnum("wire dtype", kDtypeNames, absl::GetFlag(FLAGS_wire_dtype));
      wire.ok()) {
    o.wire_dtype = *wire;
  } else {
    return Invalid("wire_dtype", wire.status().message());
  }
  const std::string depth = absl::GetFlag(FLAGS_pipeline_depth);
  if (depth == "auto") {
    // Resolved from the shards' rule before joining (ResolvePipelineDepth);
    // virtual workers push in turns and always run at depth 0.
    o.pipeline_depth_auto = o.virtual_workers == 0 && o.role == WorkerRole::kTrain;
    o.pipeline_depth = 0;
  } else {
    uint32_t value = 0;
    if (!absl::SimpleAtoi(depth, &value) || value > kMaxPipelineDepth) {
      return Invalid("pipeline_depth", absl::StrCat("must be auto or in [0, ", kMaxPipelineDepth,
                                                    "], got '", depth, "'"));
    }
    o.pipeline_depth = value;
  }
  if (o.pipeline_depth > 0 && o.virtual_workers > 0) {
    return Invalid("pipeline_depth",
                   "virtual workers push in turns and run at depth 0: drop one of the flags");
  }
  o.schedule = absl::GetFlag(FLAGS_schedule);
  o.eval_every_steps = absl::GetFlag(FLAGS_eval_every_steps);
  if (o.eval_every_steps < 0) return Invalid("eval_every_steps", "must be >= 0");
  auth::ClientSecurity security;
  security.ca = absl::GetFlag(FLAGS_tls_ca);
  security.cert = absl::GetFlag(FLAGS_tls_cert);
  security.key = absl::GetFlag(FLAGS_tls_key);
  security.server_name = absl::GetFlag(FLAGS_tls_server_name);
  security.token_file = absl::GetFlag(FLAGS_auth_token_file);
  ASSIGN_OR_RETURN(o.credentials, auth::ClientCredentials::Load(security));
  return o;
}

std::string WorkerOptionsUsage() {
  return WorkerFlags().Usage(
      "dcasgd-worker: a stateless trainer (--role=train), the evaluator (--role=eval) or a "
      "health check of every shard and member (--role=healthcheck).");
}

}  // namespace dcasgd
