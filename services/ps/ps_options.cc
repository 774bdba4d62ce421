#include "services/ps/ps_options.h"

#include <algorithm>
#include <cstdlib>
#include <limits>
#include <map>
#include <set>
#include <utility>

#include "absl/flags/flag.h"
#include "absl/flags/reflection.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/shard_memory.h"
#include "core/status_macros.h"
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

namespace dcasgd {
namespace {

// Every flag this binary reads, in --help order.
constexpr const char* kFlagNames[] = {
    "listen",
    "shard_index",
    "shard_count",
    "update_rule",
    "sync",
    "ssp_bound",
    "ssp_policy",
    "max_staleness",
    "lr",
    "lambda0",
    "ms_decay",
    "epsilon",
    "momentum",
    "weight_decay",
    "staleness_aware",
    "lr_schedule",
    "lr_decay_factor",
    "lr_decay_every",
    "lease_seconds",
    "checkpoint_dir",
    "checkpoint_interval_seconds",
    "checkpoint_min_interval_seconds",
    "checkpoint_max_age_seconds",
    "final_checkpoint_timeout_seconds",
    "metrics_address",
    "max_message_bytes",
    "max_push_bytes",
    "port_file",
    "memory_budget_bytes",
    "max_workers",
    "max_inflight_bytes",
    "max_gradient_abs",
    "max_weight_abs",
};

std::string EnvName(absl::string_view flag) {
  return absl::StrCat("DCASGD_", absl::AsciiStrToUpper(flag));
}

bool IsKnownFlag(absl::string_view name) {
  for (const char* known : kFlagNames) {
    if (name == known) return true;
  }
  return false;
}

// Splits argv into flag name -> value (the last occurrence wins).
absl::StatusOr<std::map<std::string, std::string>> SplitArgs(const std::vector<std::string>& args) {
  std::map<std::string, std::string> values;
  for (size_t i = 0; i < args.size(); ++i) {
    absl::string_view arg = args[i];
    if (!absl::StartsWith(arg, "-") || arg == "-" || arg == "--") {
      return absl::InvalidArgumentError(
          absl::StrCat("unexpected argument '", arg, "': dcasgd-ps takes only --flags"));
    }
    arg.remove_prefix(absl::StartsWith(arg, "--") ? 2 : 1);
    std::string name;
    std::optional<std::string> value;
    if (size_t eq = arg.find('='); eq != absl::string_view::npos) {
      name = std::string(arg.substr(0, eq));
      value = std::string(arg.substr(eq + 1));
    } else {
      name = std::string(arg);
    }
    if (!IsKnownFlag(name)) {
      // --nofoo for a boolean --foo.
      if (!value.has_value() && absl::StartsWith(name, "no") && IsKnownFlag(name.substr(2)) &&
          absl::FindCommandLineFlag(name.substr(2))->IsOfType<bool>()) {
        values[name.substr(2)] = "false";
        continue;
      }
      return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name, " (see --help)"));
    }
    if (!value.has_value()) {
      if (absl::FindCommandLineFlag(name)->IsOfType<bool>()) {
        value = "true";
      } else if (i + 1 < args.size()) {
        value = args[++i];
      } else {
        return absl::InvalidArgumentError(absl::StrCat("flag --", name, " needs a value"));
      }
    }
    values[name] = *std::move(value);
  }
  return values;
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

absl::StatusOr<SspPolicy> ParseSspPolicy(absl::string_view name) {
  if (name == "wait") return SspPolicy::kWait;
  if (name == "reject") return SspPolicy::kReject;
  return absl::InvalidArgumentError(
      absl::StrCat("--ssp_policy: '", name, "' is not one of wait|reject"));
}

absl::StatusOr<LrSchedule> ParseLrSchedule(absl::string_view name) {
  if (name == "constant") return LrSchedule::kConstant;
  if (name == "step") return LrSchedule::kStepDecay;
  return absl::InvalidArgumentError(
      absl::StrCat("--lr_schedule: '", name, "' is not one of constant|step"));
}

absl::Status Prefixed(absl::string_view flag, const absl::Status& status) {
  if (status.ok()) return status;
  return absl::Status(status.code(), absl::StrCat("--", flag, ": ", status.message()));
}

}  // namespace

EnvLookup ProcessEnv() {
  return [](const std::string& name) -> std::optional<std::string> {
    const char* value = std::getenv(name.c_str());
    if (value == nullptr) return std::nullopt;
    return std::string(value);
  };
}

absl::StatusOr<PsOptions> ParsePsOptions(const std::vector<std::string>& args,
                                         const EnvLookup& env) {
  absl::StatusOr<std::map<std::string, std::string>> cmdline = SplitArgs(args);
  if (!cmdline.ok()) return cmdline.status();

  // Sets every flag: command line, else environment, else the default.
  std::set<std::string> given;
  for (const char* name : kFlagNames) {
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    std::string value = flag->DefaultValue();
    std::string source = absl::StrCat("--", name);
    if (auto it = cmdline->find(name); it != cmdline->end()) {
      value = it->second;
      given.insert(name);
    } else if (std::optional<std::string> from_env = env(EnvName(name))) {
      value = *std::move(from_env);
      source = absl::StrCat("environment variable ", EnvName(name));
      given.insert(name);
    }
    std::string error;
    if (!flag->ParseFrom(value, &error)) {
      return absl::InvalidArgumentError(absl::StrCat(source, "='", value, "': ", error));
    }
  }

  PsOptions options;
  options.listen = absl::GetFlag(FLAGS_listen);
  if (options.listen.empty()) return absl::InvalidArgumentError("--listen is empty");

  ShardConfig& shard = options.shard;
  const int64_t shard_count = absl::GetFlag(FLAGS_shard_count);
  if (shard_count < 1 || shard_count > std::numeric_limits<uint32_t>::max()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--shard_count=", shard_count, ": must be at least 1"));
  }
  shard.shard_count = static_cast<uint32_t>(shard_count);
  const std::string shard_index = absl::GetFlag(FLAGS_shard_index);
  if (shard_index == "auto") {
    absl::StatusOr<uint32_t> index = TrailingNumber(env("HOSTNAME").value_or(""));
    if (!index.ok()) return index.status();
    shard.shard_index = *index;
  } else if (!absl::SimpleAtoi(shard_index, &shard.shard_index)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--shard_index='", shard_index, "': not a non-negative integer or 'auto'"));
  }
  if (shard.shard_index >= shard.shard_count) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--shard_index=", shard.shard_index, " is not below --shard_count=", shard.shard_count));
  }

  OptimizerConfig& opt = shard.optimizer;
  {
    absl::StatusOr<UpdateRule> rule = ParseUpdateRule(absl::GetFlag(FLAGS_update_rule));
    if (!rule.ok()) return Prefixed("update_rule", rule.status());
    opt.rule = *rule;
  }
  opt.learning_rate = static_cast<float>(absl::GetFlag(FLAGS_lr));
  if (given.count("lambda0") != 0) {
    opt.lambda0 = static_cast<float>(absl::GetFlag(FLAGS_lambda0));
  } else {
    opt.lambda0 = opt.rule == UpdateRule::kDcAsgdConstant ? 0.04f : 2.0f;
  }
  opt.ms_decay = static_cast<float>(absl::GetFlag(FLAGS_ms_decay));
  opt.epsilon = static_cast<float>(absl::GetFlag(FLAGS_epsilon));
  opt.momentum = static_cast<float>(absl::GetFlag(FLAGS_momentum));
  opt.weight_decay = static_cast<float>(absl::GetFlag(FLAGS_weight_decay));
  opt.staleness_aware = absl::GetFlag(FLAGS_staleness_aware);
  {
    absl::StatusOr<LrSchedule> schedule = ParseLrSchedule(absl::GetFlag(FLAGS_lr_schedule));
    if (!schedule.ok()) return schedule.status();
    opt.schedule = *schedule;
  }
  opt.decay_factor = static_cast<float>(absl::GetFlag(FLAGS_lr_decay_factor));
  const int64_t decay_every = absl::GetFlag(FLAGS_lr_decay_every);
  if (decay_every < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--lr_decay_every=", decay_every, ": must be >= 0"));
  }
  opt.decay_every = static_cast<uint64_t>(decay_every);
  opt.max_gradient_abs = static_cast<float>(absl::GetFlag(FLAGS_max_gradient_abs));
  opt.max_weight_abs = static_cast<float>(absl::GetFlag(FLAGS_max_weight_abs));

  {
    absl::StatusOr<SyncMode> sync = ParseSyncMode(absl::GetFlag(FLAGS_sync));
    if (!sync.ok()) return Prefixed("sync", sync.status());
    shard.sync = *sync;
  }
  const int64_t ssp_bound = absl::GetFlag(FLAGS_ssp_bound);
  if (ssp_bound < 0 || ssp_bound > std::numeric_limits<uint32_t>::max()) {
    return absl::InvalidArgumentError(absl::StrCat("--ssp_bound=", ssp_bound, ": must be >= 0"));
  }
  shard.ssp_bound = static_cast<uint32_t>(ssp_bound);
  {
    absl::StatusOr<SspPolicy> policy = ParseSspPolicy(absl::GetFlag(FLAGS_ssp_policy));
    if (!policy.ok()) return policy.status();
    shard.ssp_policy = *policy;
  }
  shard.max_staleness = absl::GetFlag(FLAGS_max_staleness);
  if (shard.max_staleness < -1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max_staleness=", shard.max_staleness, ": must be >= 0, or -1 for off"));
  }
  const double lease_seconds = absl::GetFlag(FLAGS_lease_seconds);
  if (!(lease_seconds > 0) || lease_seconds > 1e9) {
    return absl::InvalidArgumentError(
        absl::StrCat("--lease_seconds=", lease_seconds, ": must be positive"));
  }
  shard.lease = absl::Seconds(lease_seconds);
  const int64_t max_workers = absl::GetFlag(FLAGS_max_workers);
  if (max_workers < 1 || max_workers > kMaxWorkersLimit) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max_workers=", max_workers, ": must be in [1, ", kMaxWorkersLimit, "]"));
  }
  shard.max_workers = static_cast<uint32_t>(max_workers);
  const int64_t budget = absl::GetFlag(FLAGS_memory_budget_bytes);
  if (budget < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--memory_budget_bytes=", budget, ": must be >= 0 (0: automatic)"));
  }
  if (budget > 0) {
    shard.memory_budget_bytes = static_cast<uint64_t>(budget);
    options.memory_budget_source = "--memory_budget_bytes";
  } else {
    const MemoryLimit limit = DetectMemoryLimit();
    shard.memory_budget_bytes = limit.bytes / 10 * 9;
    options.memory_budget_source = absl::StrCat("90% of ", limit.source);
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
  if (absl::Status s = shard.Validate(); !s.ok()) {
    // Name the flags of the fields the config checks.
    return absl::Status(s.code(), absl::StrCat(s.message(),
                                               " (flags --lr, --lambda0, --ms_decay, --epsilon, "
                                               "--momentum, --max_gradient_abs, "
                                               "--max_weight_abs)"));
  }

  options.checkpoint_dir = absl::GetFlag(FLAGS_checkpoint_dir);
  const double interval = absl::GetFlag(FLAGS_checkpoint_interval_seconds);
  if (!(interval > 0) || interval > 1e9) {
    return absl::InvalidArgumentError(
        absl::StrCat("--checkpoint_interval_seconds=", interval, ": must be positive"));
  }
  options.checkpoint_interval = absl::Seconds(interval);
  const double min_interval = absl::GetFlag(FLAGS_checkpoint_min_interval_seconds);
  if (!(min_interval >= 0) || min_interval > 1e9) {
    return absl::InvalidArgumentError(
        absl::StrCat("--checkpoint_min_interval_seconds=", min_interval, ": must be >= 0"));
  }
  options.checkpoint_min_interval = absl::Seconds(min_interval);
  const double max_age = absl::GetFlag(FLAGS_checkpoint_max_age_seconds);
  if (!(max_age >= 0) || max_age > 1e9) {
    return absl::InvalidArgumentError(absl::StrCat("--checkpoint_max_age_seconds=", max_age,
                                                   ": must be >= 0 (0: three intervals)"));
  }
  options.checkpoint_max_age =
      max_age > 0 ? absl::Seconds(max_age) : 3 * options.checkpoint_interval;
  const double final_timeout = absl::GetFlag(FLAGS_final_checkpoint_timeout_seconds);
  if (!(final_timeout >= 0) || final_timeout > 1e9) {
    return absl::InvalidArgumentError(
        absl::StrCat("--final_checkpoint_timeout_seconds=", final_timeout, ": must be >= 0"));
  }
  options.final_checkpoint_timeout = absl::Seconds(final_timeout);
  options.metrics_address = absl::GetFlag(FLAGS_metrics_address);
  options.max_message_bytes = absl::GetFlag(FLAGS_max_message_bytes);
  if (options.max_message_bytes < 1024 ||
      options.max_message_bytes > std::numeric_limits<int32_t>::max()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--max_message_bytes=", options.max_message_bytes, ": must be in [1024, 2^31)"));
  }
  options.max_push_bytes = absl::GetFlag(FLAGS_max_push_bytes);
  if (options.max_push_bytes < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max_push_bytes=", options.max_push_bytes, ": must be positive"));
  }
  options.port_file = absl::GetFlag(FLAGS_port_file);
  return options;
}

std::string PsOptionsUsage() {
  std::string usage =
      "dcasgd-ps: one parameter shard of a DC-ASGD job.\n"
      "Every --flag may also be set by the environment variable DCASGD_<FLAG>; "
      "the flag wins.\n\n";
  for (const char* name : kFlagNames) {
    const absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    absl::StrAppendFormat(&usage, "  --%s (%s)\n      %s; default: '%s'\n", name, EnvName(name),
                          flag->Help(), flag->DefaultValue());
  }
  return usage;
}

std::string PsOptions::DebugString() const {
  return absl::StrFormat(
      "listen=%s shard=%d/%d rule={%s} sync=%s ssp_bound=%d ssp_policy=%s "
      "max_staleness=%d lease=%s checkpoint_dir='%s' checkpoint_interval=%s "
      "checkpoint_max_age=%s metrics_address='%s' max_message_bytes=%d max_push_bytes=%d "
      "max_workers=%d memory_budget=%s (%s) max_inflight=%s",
      listen, shard.shard_index, shard.shard_count, shard.optimizer.DebugString(),
      SyncModeName(shard.sync), shard.ssp_bound,
      shard.ssp_policy == SspPolicy::kWait ? "wait" : "reject", shard.max_staleness,
      absl::FormatDuration(shard.lease), checkpoint_dir, absl::FormatDuration(checkpoint_interval),
      absl::FormatDuration(checkpoint_max_age), metrics_address, max_message_bytes, max_push_bytes,
      shard.max_workers, HumanBytes(shard.memory_budget_bytes), memory_budget_source,
      HumanBytes(shard.inflight_budget_bytes));
}

}  // namespace dcasgd
