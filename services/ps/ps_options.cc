#include "services/ps/ps_options.h"

#include <algorithm>
#include <limits>
#include <set>
#include <utility>

#include "absl/flags/flag.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "auth/server_flags.h"
#include "base/enum_names.h"
#include "base/flags.h"
#include "base/status_macros.h"
#include "core/dtype.h"
#include "core/shard_memory.h"
#include "services/ps/memory_limit.h"

ABSL_FLAG(std::string, listen, "0.0.0.0:7000", "gRPC listen address host:port (port 0: any)");
ABSL_FLAG(std::string, shard_index, "0",
          "this shard's index, or 'auto' for the trailing number of $HOSTNAME");
ABSL_FLAG(int64_t, shard_count, 1, "number of shards in the job");
ABSL_FLAG(std::string, update_rule, "dcasgd-a", "asgd | dcasgd-c | dcasgd-a");
ABSL_FLAG(std::string, sync, "async", "async | ssgd | ssp");
ABSL_FLAG(int64_t, ssp_bound, 3, "ssp: pushes a worker may be ahead of the slowest one");
ABSL_FLAG(std::string, ssp_policy, "wait", "ssp: wait | reject a push past the bound");
ABSL_FLAG(int64_t, max_staleness, -1,
          "async: reject (ABORTED) pushes staler than this; -1 turns it off");
ABSL_FLAG(double, lr, 0.1, "learning rate");
ABSL_FLAG(double, lambda0, 2.0,
          "delay-compensation strength; default 0.04 for dcasgd-c, 2.0 for dcasgd-a");
ABSL_FLAG(double, ms_decay, 0.95, "dcasgd-a mean-square decay m");
ABSL_FLAG(double, epsilon, 1e-7, "dcasgd-a epsilon");
ABSL_FLAG(double, momentum, 0.0, "momentum mu (0: none)");
ABSL_FLAG(double, weight_decay, 0.0, "L2 weight decay");
ABSL_FLAG(bool, staleness_aware, false, "divide the learning rate by max(1, staleness)");
ABSL_FLAG(bool, gap_aware, false,
          "gap-aware damping: divide each gradient coordinate by max(1, |w - w_bak| / C), C its "
          "mean step (async and ssp; any rule)");
ABSL_FLAG(double, gap_decay, 0.999, "gap-aware damping: decay of the mean step C");
ABSL_FLAG(std::string, lr_schedule, "constant", "constant | step");
ABSL_FLAG(double, lr_decay_factor, 0.1, "step schedule: multiply lr by this every lr_decay_every");
ABSL_FLAG(int64_t, lr_decay_every, 0, "step schedule: versions between decays");
ABSL_FLAG(double, lease_seconds, 30.0, "worker lease; workers heartbeat within it");
ABSL_FLAG(std::string, checkpoint_dir, "", "directory of shard-<i>.ckpt; empty: off");
ABSL_FLAG(double, checkpoint_interval_seconds, 60.0, "seconds between periodic checkpoints");
ABSL_FLAG(double, checkpoint_min_interval_seconds, 1.0,
          "Checkpoint RPCs write at most once per this many seconds (and only after a change)");
ABSL_FLAG(double, checkpoint_max_age_seconds, 0.0,
          "health service 'dcasgd.checkpoint' is NOT_SERVING when the state has not been durable "
          "for longer than this; 0: three checkpoint intervals");
ABSL_FLAG(double, final_checkpoint_timeout_seconds, 5.0,
          "at shutdown, retry a failing final checkpoint for this long before giving up");
ABSL_FLAG(std::string, metrics_address, "0.0.0.0:9100",
          "Prometheus /metrics host:port (port 0: any); empty: off");
ABSL_FLAG(int64_t, max_message_bytes, 16 << 20, "gRPC max receive message size");
ABSL_FLAG(int64_t, max_push_bytes, int64_t{1} << 30, "max total gradient bytes in one push stream");
ABSL_FLAG(std::string, port_file, "", "write 'grpc <port>\\nmetrics <port>\\n' here after start");
ABSL_FLAG(int64_t, memory_budget_bytes, 0,
          "memory the sizing rule may reach; declarations beyond it are RESOURCE_EXHAUSTED. "
          "0: 90% of the container's memory limit (cgroup), else of physical memory");
ABSL_FLAG(int64_t, max_workers, 64,
          "live workers (leases) at once; Join beyond is RESOURCE_EXHAUSTED. Their backups are "
          "budgeted");
ABSL_FLAG(int64_t, max_inflight_bytes, 0,
          "bytes all push, PushPull and pull streams together may hold; streams beyond wait. "
          "0: 1/8 of the memory budget, within [16 MiB, 1 GiB]");
ABSL_FLAG(double, max_gradient_abs, 1e6,
          "a push with any |gradient element| above this is INVALID_ARGUMENT, nothing applied");
ABSL_FLAG(double, max_weight_abs, 1e6, "weights are clamped to [-this, this] after each update");
ABSL_FLAG(std::string, backup_dtype, "float32",
          "float32 | bfloat16 | float16: how each worker's backup w_bak is kept; 16 bits halve the "
          "backups' memory, rounding w_bak by 2^-8 (bfloat16) or 2^-11 (float16) relative; "
          "float16 needs --max_weight_abs <= 65504. Weights and optimizer state stay float32");

ABSL_FLAG(int64_t, replicas, 1,
          "1: this shard alone; 2: a member of a replicated pair (--member, --peer_address, "
          "--witness_address; docs/design.md, Replicated shards)");
ABSL_FLAG(std::string, member, "auto",
          "a | b | auto: this member's name in its pair; auto: a when the trailing number o of "
          "$HOSTNAME is below --shard_count, else b (--shard_index=auto then takes o mod count)");
ABSL_FLAG(std::string, peer_address, "",
          "--replicas=2: the other member's host:port; '{i}' is replaced by its pod ordinal");
ABSL_FLAG(std::string, witness_address, "", "--replicas=2: the witness's host:port");
ABSL_FLAG(int64_t, replication_heartbeat_ms, 250,
          "the primary sends a heartbeat to its replica after this long without other messages");
ABSL_FLAG(int64_t, replication_lease_ms, 2000,
          "the primary accepts changes only within this long of sending something its replica "
          "acknowledged");
ABSL_FLAG(int64_t, failover_timeout_ms, 3000,
          "silence after which the replica claims the primary role and the primary drops its "
          "replica; at least --replication_lease_ms + 500");
ABSL_FLAG(int64_t, replication_buffer_bytes, int64_t{256} << 20,
          "log held for the replica (sent, not acknowledged); a replica further behind is dropped");
ABSL_FLAG(std::string, peer_tls_ca, "",
          "PEM CA of the peer's and the witness's certificates: the member's outgoing calls use "
          "TLS; empty: plaintext");
ABSL_FLAG(std::string, peer_tls_cert, "",
          "PEM client certificate for the member's outgoing calls, for a peer and a witness that "
          "require mutual TLS (with --peer_tls_key and --peer_tls_ca)");
ABSL_FLAG(std::string, peer_tls_key, "", "PEM private key of --peer_tls_cert");
ABSL_FLAG(std::string, peer_token_file, "",
          "file holding the replication role's bearer token for the member's outgoing calls");

namespace dcasgd {
namespace {

// Every flag defined above and the servers' shared security flags
// (auth/server_flags.h), nothing else.
const FlagSet& PsFlags() {
  static const FlagSet* flags =
      new FlagSet("dcasgd-ps", {__FILE__, auth::ServerSecurityFlagsFile()});  // never deleted
  return *flags;
}

// The trailing decimal number of `hostname` ("dcasgd-ps-3" -> 3).
absl::StatusOr<uint32_t> TrailingNumber(absl::string_view hostname) {
  size_t start = hostname.size();
  while (start > 0 && absl::ascii_isdigit(static_cast<unsigned char>(hostname[start - 1]))) {
    --start;
  }
  uint32_t n = 0;
  if (start == hostname.size() || !absl::SimpleAtoi(hostname.substr(start), &n)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--shard_index=auto needs $HOSTNAME ending in the shard number (like 'ps-2'), got '",
        hostname, "'"));
  }
  return n;
}

absl::Status Prefixed(absl::string_view flag, const absl::Status& status) {
  if (status.ok()) return status;
  return absl::Status(status.code(), absl::StrCat("--", flag, ": ", status.message()));
}

// The enum value a flag names, or INVALID_ARGUMENT naming the flag.
template <typename Enum, size_t N>
absl::Status ParseEnumFlag(absl::string_view flag, absl::string_view what,
                           const EnumName<Enum> (&table)[N], absl::string_view value, Enum* out) {
  absl::StatusOr<Enum> parsed = ParseEnum(what, table, value);
  if (!parsed.ok()) return Prefixed(flag, parsed.status());
  *out = *parsed;
  return absl::OkStatus();
}

// --listen, --shard_index, --shard_count.
absl::Status ParsePlacement(const EnvLookup& env, PsOptions* options) {
  options->listen = absl::GetFlag(FLAGS_listen);
  if (options->listen.empty()) return absl::InvalidArgumentError("--listen is empty");
  ShardConfig& shard = options->shard;
  const int64_t shard_count = absl::GetFlag(FLAGS_shard_count);
  if (shard_count < 1 || shard_count > std::numeric_limits<uint32_t>::max()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--shard_count=", shard_count, ": must be at least 1"));
  }
  shard.shard_count = static_cast<uint32_t>(shard_count);
  const std::string shard_index = absl::GetFlag(FLAGS_shard_index);
  if (shard_index == "auto") {
    ASSIGN_OR_RETURN(shard.shard_index, TrailingNumber(env("HOSTNAME").value_or("")));
    // A pair's 2N pods: members b are pods N..2N-1 (--member=auto).
    if (absl::GetFlag(FLAGS_replicas) == 2) shard.shard_index %= shard.shard_count;
  } else if (!absl::SimpleAtoi(shard_index, &shard.shard_index)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--shard_index='", shard_index, "': not a non-negative integer or 'auto'"));
  }
  if (shard.shard_index >= shard.shard_count) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--shard_index=", shard.shard_index, " is not below --shard_count=", shard.shard_count));
  }
  return absl::OkStatus();
}

// The update rule and its hyper-parameters; `given` are the flags set
// explicitly (lambda0 defaults by rule otherwise).
absl::Status ParseOptimizer(const std::set<std::string>& given, OptimizerConfig* opt) {
  UpdateRule rule = UpdateRule::kDcAsgdAdaptive;
  RETURN_IF_ERROR(ParseEnumFlag("update_rule", "update rule", kUpdateRuleNames,
                                absl::GetFlag(FLAGS_update_rule), &rule));
  // The rule's defaults (core/update_rule.h), then what the flags say.
  *opt = OptimizerConfig::ForRule(rule);
  if (given.count("lambda0") != 0) opt->lambda0 = static_cast<float>(absl::GetFlag(FLAGS_lambda0));
  opt->learning_rate = static_cast<float>(absl::GetFlag(FLAGS_lr));
  opt->ms_decay = static_cast<float>(absl::GetFlag(FLAGS_ms_decay));
  opt->epsilon = static_cast<float>(absl::GetFlag(FLAGS_epsilon));
  opt->momentum = static_cast<float>(absl::GetFlag(FLAGS_momentum));
  opt->weight_decay = static_cast<float>(absl::GetFlag(FLAGS_weight_decay));
  opt->staleness_aware = absl::GetFlag(FLAGS_staleness_aware);
  opt->gap_aware = absl::GetFlag(FLAGS_gap_aware);
  opt->gap_decay = static_cast<float>(absl::GetFlag(FLAGS_gap_decay));
  RETURN_IF_ERROR(ParseEnumFlag("lr_schedule", "learning-rate schedule", kLrScheduleNames,
                                absl::GetFlag(FLAGS_lr_schedule), &opt->schedule));
  opt->decay_factor = static_cast<float>(absl::GetFlag(FLAGS_lr_decay_factor));
  const int64_t decay_every = absl::GetFlag(FLAGS_lr_decay_every);
  if (decay_every < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--lr_decay_every=", decay_every, ": must be >= 0"));
  }
  opt->decay_every = static_cast<uint64_t>(decay_every);
  opt->max_gradient_abs = static_cast<float>(absl::GetFlag(FLAGS_max_gradient_abs));
  opt->max_weight_abs = static_cast<float>(absl::GetFlag(FLAGS_max_weight_abs));
  RETURN_IF_ERROR(ParseEnumFlag("backup_dtype", "backup dtype", kDtypeNames,
                                absl::GetFlag(FLAGS_backup_dtype), &opt->backup_dtype));
  return absl::OkStatus();
}

// --sync and its bounds, --max_staleness, --lease_seconds, --max_workers.
absl::Status ParseMembership(ShardConfig* shard) {
  RETURN_IF_ERROR(
      ParseEnumFlag("sync", "sync mode", kSyncModeNames, absl::GetFlag(FLAGS_sync), &shard->sync));
  const int64_t ssp_bound = absl::GetFlag(FLAGS_ssp_bound);
  if (ssp_bound < 0 || ssp_bound > std::numeric_limits<uint32_t>::max()) {
    return absl::InvalidArgumentError(absl::StrCat("--ssp_bound=", ssp_bound, ": must be >= 0"));
  }
  shard->ssp_bound = static_cast<uint32_t>(ssp_bound);
  RETURN_IF_ERROR(ParseEnumFlag("ssp_policy", "SSP policy", kSspPolicyNames,
                                absl::GetFlag(FLAGS_ssp_policy), &shard->ssp_policy));
  shard->max_staleness = absl::GetFlag(FLAGS_max_staleness);
  if (shard->max_staleness < -1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max_staleness=", shard->max_staleness, ": must be >= 0, or -1 for off"));
  }
  ASSIGN_OR_RETURN(shard->lease, SecondsFlag("lease_seconds", absl::GetFlag(FLAGS_lease_seconds),
                                             /*zero_ok=*/false));
  const int64_t max_workers = absl::GetFlag(FLAGS_max_workers);
  if (max_workers < 1 || max_workers > kMaxWorkersLimit) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max_workers=", max_workers, ": must be in [1, ", kMaxWorkersLimit, "]"));
  }
  shard->max_workers = static_cast<uint32_t>(max_workers);
  return absl::OkStatus();
}

// --memory_budget_bytes (or the detected limit) and --max_inflight_bytes.
absl::Status ParseMemory(PsOptions* options) {
  ShardConfig& shard = options->shard;
  const int64_t budget = absl::GetFlag(FLAGS_memory_budget_bytes);
  if (budget < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--memory_budget_bytes=", budget, ": must be >= 0 (0: automatic)"));
  }
  if (budget > 0) {
    shard.memory_budget_bytes = static_cast<uint64_t>(budget);
    options->memory_budget_source = "--memory_budget_bytes";
  } else {
    const MemoryLimit limit = DetectMemoryLimit();
    shard.memory_budget_bytes = limit.bytes / 10 * 9;
    options->memory_budget_source = absl::StrCat("90% of ", limit.source);
  }
  const int64_t inflight = absl::GetFlag(FLAGS_max_inflight_bytes);
  if (inflight < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max_inflight_bytes=", inflight, ": must be >= 0 (0: automatic)"));
  }
  shard.inflight_budget_bytes = inflight > 0
                                    ? static_cast<uint64_t>(inflight)
                                    : std::clamp<uint64_t>(shard.memory_budget_bytes / 8,
                                                           uint64_t{16} << 20, uint64_t{1} << 30);
  return absl::OkStatus();
}

// --checkpoint_* and --final_checkpoint_timeout_seconds.
absl::Status ParseCheckpoints(PsOptions* options) {
  options->checkpoint_dir = absl::GetFlag(FLAGS_checkpoint_dir);
  ASSIGN_OR_RETURN(
      options->checkpoint_interval,
      SecondsFlag("checkpoint_interval_seconds", absl::GetFlag(FLAGS_checkpoint_interval_seconds),
                  /*zero_ok=*/false));
  ASSIGN_OR_RETURN(
      options->checkpoint_min_interval,
      SecondsFlag("checkpoint_min_interval_seconds",
                  absl::GetFlag(FLAGS_checkpoint_min_interval_seconds), /*zero_ok=*/true));
  ASSIGN_OR_RETURN(
      const absl::Duration max_age,
      SecondsFlag("checkpoint_max_age_seconds", absl::GetFlag(FLAGS_checkpoint_max_age_seconds),
                  /*zero_ok=*/true, " (0: three intervals)"));
  options->checkpoint_max_age =
      max_age > absl::ZeroDuration() ? max_age : 3 * options->checkpoint_interval;
  ASSIGN_OR_RETURN(options->final_checkpoint_timeout,
                   SecondsFlag("final_checkpoint_timeout_seconds",
                               absl::GetFlag(FLAGS_final_checkpoint_timeout_seconds),
                               /*zero_ok=*/true));
  return absl::OkStatus();
}

// --metrics_address, --max_message_bytes, --max_push_bytes, --port_file.
absl::Status ParseServing(PsOptions* options) {
  options->metrics_address = absl::GetFlag(FLAGS_metrics_address);
  options->max_message_bytes = absl::GetFlag(FLAGS_max_message_bytes);
  if (options->max_message_bytes < 1024 ||
      options->max_message_bytes > std::numeric_limits<int32_t>::max()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--max_message_bytes=", options->max_message_bytes, ": must be in [1024, 2^31)"));
  }
  options->max_push_bytes = absl::GetFlag(FLAGS_max_push_bytes);
  if (options->max_push_bytes < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max_push_bytes=", options->max_push_bytes, ": must be positive"));
  }
  options->port_file = absl::GetFlag(FLAGS_port_file);
  return absl::OkStatus();
}

// --tls_*, --auth_* and --health_listen (auth/server_flags.h).
absl::Status ParseSecurity(PsOptions* options) {
  ASSIGN_OR_RETURN(auth::ServerSecurity security, auth::ServerSecurityFromFlags());
  options->health_listen = std::move(security.health_listen);
  options->tls = std::move(security.tls);
  options->auth = std::move(security.auth);
  return absl::OkStatus();
}

// Milliseconds of a replication timing flag, in [1, 1e9].
absl::StatusOr<absl::Duration> MillisFlag(absl::string_view flag, int64_t ms) {
  if (ms < 1 || ms > 1000000000) {
    return absl::InvalidArgumentError(absl::StrCat("--", flag, "=", ms, ": must be in [1, 1e9]"));
  }
  return absl::Milliseconds(ms);
}

// --member (auto: from the pod ordinal) and '{i}' in --peer_address.
absl::Status ParseMember(const EnvLookup& env, PsOptions* options) {
  ReplicationOptions& r = options->replication;
  const std::string member = absl::GetFlag(FLAGS_member);
  const uint32_t count = options->shard.shard_count;
  std::optional<uint32_t> ordinal;
  if (member == "auto" || absl::StrContains(r.peer_address, "{i}")) {
    absl::StatusOr<uint32_t> o = TrailingNumber(env("HOSTNAME").value_or(""));
    if (!o.ok()) return Prefixed("member=auto or --peer_address with {i}", o.status());
    if (*o >= 2 * count) {
      return absl::InvalidArgumentError(absl::StrCat("pod ordinal ", *o,
                                                     " of $HOSTNAME is not below "
                                                     "2 x --shard_count=",
                                                     2 * count));
    }
    ordinal = *o;
  }
  if (member == "a") {
    r.member = v1::MEMBER_A;
  } else if (member == "b") {
    r.member = v1::MEMBER_B;
  } else if (member == "auto") {
    r.member = *ordinal < count ? v1::MEMBER_A : v1::MEMBER_B;
  } else {
    return absl::InvalidArgumentError(absl::StrCat("--member='", member, "': a, b or auto"));
  }
  if (ordinal.has_value()) {
    r.peer_address = absl::StrReplaceAll(r.peer_address,
                                         {{"{i}", absl::StrCat((*ordinal + count) % (2 * count))}});
  }
  return absl::OkStatus();
}

// --replicas and the flags of a pair.
absl::Status ParseReplication(const EnvLookup& env, PsOptions* options) {
  ReplicationOptions& r = options->replication;
  const int64_t replicas = absl::GetFlag(FLAGS_replicas);
  if (replicas != 1 && replicas != 2) {
    return absl::InvalidArgumentError(absl::StrCat("--replicas=", replicas, ": must be 1 or 2"));
  }
  r.replicas = static_cast<uint32_t>(replicas);
  r.peer_address = absl::GetFlag(FLAGS_peer_address);
  r.witness_address = absl::GetFlag(FLAGS_witness_address);
  if (!r.enabled()) {
    if (!r.peer_address.empty() || !r.witness_address.empty()) {
      return absl::InvalidArgumentError(
          "--peer_address and --witness_address need --replicas=2 (a shard alone has neither)");
    }
    return absl::OkStatus();
  }
  if (r.peer_address.empty() || r.witness_address.empty()) {
    return absl::InvalidArgumentError(
        "--replicas=2 needs --peer_address (the other member) and --witness_address");
  }
  RETURN_IF_ERROR(ParseMember(env, options));
  ASSIGN_OR_RETURN(r.heartbeat, MillisFlag("replication_heartbeat_ms",
                                           absl::GetFlag(FLAGS_replication_heartbeat_ms)));
  ASSIGN_OR_RETURN(r.lease,
                   MillisFlag("replication_lease_ms", absl::GetFlag(FLAGS_replication_lease_ms)));
  ASSIGN_OR_RETURN(r.failover_timeout,
                   MillisFlag("failover_timeout_ms", absl::GetFlag(FLAGS_failover_timeout_ms)));
  if (r.heartbeat >= r.lease) {
    return absl::InvalidArgumentError(
        "--replication_heartbeat_ms must be below --replication_lease_ms (a lease renews only "
        "with what the replica acknowledges)");
  }
  if (r.failover_timeout < r.lease + absl::Milliseconds(500)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--failover_timeout_ms=", absl::ToInt64Milliseconds(r.failover_timeout),
                     ": must be at least --replication_lease_ms + 500 = ",
                     absl::ToInt64Milliseconds(r.lease) + 500,
                     " (a primary must notice its lapsed lease before its replica may claim)"));
  }
  const int64_t buffer = absl::GetFlag(FLAGS_replication_buffer_bytes);
  if (buffer < (int64_t{1} << 20)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--replication_buffer_bytes=", buffer, ": must be at least 1 MiB"));
  }
  r.buffer_bytes = static_cast<uint64_t>(buffer);
  r.peer_security.ca = absl::GetFlag(FLAGS_peer_tls_ca);
  r.peer_security.cert = absl::GetFlag(FLAGS_peer_tls_cert);
  r.peer_security.key = absl::GetFlag(FLAGS_peer_tls_key);
  r.peer_security.token_file = absl::GetFlag(FLAGS_peer_token_file);
  if (r.peer_security.cert.empty() != r.peer_security.key.empty()) {
    return absl::InvalidArgumentError("--peer_tls_cert and --peer_tls_key go together");
  }
  if (!r.peer_security.cert.empty() && r.peer_security.ca.empty()) {
    return absl::InvalidArgumentError(
        "--peer_tls_cert needs --peer_tls_ca (the CA of the peer's and the witness's "
        "certificates)");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<PsOptions> ParsePsOptions(const std::vector<std::string>& args,
                                         const EnvLookup& env) {
  ASSIGN_OR_RETURN(const std::set<std::string> given, PsFlags().Parse(args, env));
  PsOptions options;
  RETURN_IF_ERROR(ParsePlacement(env, &options));
  RETURN_IF_ERROR(ParseOptimizer(given, &options.shard.optimizer));
  RETURN_IF_ERROR(ParseMembership(&options.shard));
  RETURN_IF_ERROR(ParseMemory(&options));
  if (absl::Status s = options.shard.Validate(); !s.ok()) {
    // Name the flags of the fields the config checks.
    return absl::Status(s.code(), absl::StrCat(s.message(),
                                               " (flags --lr, --lambda0, --ms_decay, --epsilon, "
                                               "--momentum, --max_gradient_abs, "
                                               "--max_weight_abs, --backup_dtype)"));
  }
  RETURN_IF_ERROR(ParseCheckpoints(&options));
  RETURN_IF_ERROR(ParseServing(&options));
  RETURN_IF_ERROR(ParseSecurity(&options));
  RETURN_IF_ERROR(ParseReplication(env, &options));
  return options;
}

std::string PsOptionsUsage() {
  return PsFlags().Usage("dcasgd-ps: one parameter shard of a DC-ASGD job.");
}

std::string PsOptions::DebugString() const {
  return absl::StrFormat(
      "listen=%s shard=%d/%d rule={%s} sync=%s ssp_bound=%d ssp_policy=%s "
      "max_staleness=%d lease=%s checkpoint_dir='%s' checkpoint_interval=%s "
      "checkpoint_max_age=%s metrics_address='%s' max_message_bytes=%d max_push_bytes=%d "
      "max_workers=%d memory_budget=%s (%s) max_inflight=%s %s%s",
      listen, shard.shard_index, shard.shard_count, shard.optimizer.DebugString(),
      NameOf(kSyncModeNames, shard.sync), shard.ssp_bound,
      NameOf(kSspPolicyNames, shard.ssp_policy), shard.max_staleness,
      absl::FormatDuration(shard.lease), checkpoint_dir, absl::FormatDuration(checkpoint_interval),
      absl::FormatDuration(checkpoint_max_age), metrics_address, max_message_bytes, max_push_bytes,
      shard.max_workers, HumanBytes(shard.memory_budget_bytes), memory_budget_source,
      HumanBytes(shard.inflight_budget_bytes), auth::DescribeServerSecurity(tls, auth),
      !replication.enabled()
          ? ""
          : absl::StrCat(" replicas=2 member=", MemberName(replication.member), " peer=",
                         replication.peer_address, " witness=", replication.witness_address,
                         " replication_lease=", absl::FormatDuration(replication.lease),
                         " failover_timeout=", absl::FormatDuration(replication.failover_timeout)));
}

}  // namespace dcasgd
