#ifndef DCASGD_SERVICES_PS_PS_OPTIONS_H_
#define DCASGD_SERVICES_PS_PS_OPTIONS_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "auth/authorizer.h"
#include "auth/tls.h"
#include "base/flags.h"
#include "core/shard_store.h"
#include "services/ps/replication_options.h"

namespace dcasgd {

// Everything dcasgd-ps is configured with.
struct PsOptions {
  // host:port of the gRPC server; port 0 picks a free one.
  std::string listen = "0.0.0.0:7000";
  // Shard index/count, update rule, sync mode, lease.
  ShardConfig shard;
  // Empty: no checkpoints, nothing restored.
  std::string checkpoint_dir;
  absl::Duration checkpoint_interval = absl::Seconds(60);
  // Checkpoint RPCs never write more often than this.
  absl::Duration checkpoint_min_interval = absl::Seconds(1);
  // The health service "dcasgd.checkpoint" turns NOT_SERVING when the
  // state has not been durable for longer than this (writes failing).
  absl::Duration checkpoint_max_age = absl::Seconds(180);
  // At shutdown, failed final checkpoint writes are retried this long.
  absl::Duration final_checkpoint_timeout = absl::Seconds(5);
  // host:port of the Prometheus /metrics endpoint; empty: off.
  std::string metrics_address = "0.0.0.0:9100";
  // gRPC max receive message size.
  int64_t max_message_bytes = 16 << 20;
  // Total gradient bytes one Push/PushPull stream may carry.
  int64_t max_push_bytes = int64_t{1} << 30;
  // After start, "grpc <port>\nmetrics <port>\n" is written here atomically.
  std::string port_file;
  // host:port of a plaintext server with only grpc.health.v1 (and
  // reflection), for probes that cannot speak TLS (Kubernetes' gRPC probes);
  // empty: none.
  std::string health_listen;
  // TLS (mTLS with a client CA) on the gRPC port; empty: plaintext.
  auth::ServerTlsFiles tls;
  // Who may call (tokens, certificate identities); off when empty.
  auth::AuthOptions auth;
  // Where shard.memory_budget_bytes came from (a flag, or the detected limit).
  std::string memory_budget_source;
  // --replicas and the pair's flags.
  ReplicationOptions replication;

  // One line, for the startup log.
  std::string DebugString() const;
};

// Parses command-line arguments (without the program name) and the
// environment into options (base/flags.h: every flag --foo_bar may also be
// given as the environment variable DCASGD_FOO_BAR; the flag wins).
// --shard_index=auto takes the trailing number of $HOSTNAME (StatefulSet pods
// are named <set>-<i>). When --lambda0 is not given it is the rule's
// default (OptimizerConfig::ForRule, core/update_rule.h).
//
// INVALID_ARGUMENT with a message naming the flag (or variable) for unknown
// flags, positional arguments, unparsable or out-of-range values. Repeated
// calls do not see each other's values. Not thread-safe.
absl::StatusOr<PsOptions> ParsePsOptions(const std::vector<std::string>& args,
                                         const EnvLookup& env);

// Help text listing every flag with its default and environment variable.
std::string PsOptionsUsage();

}  // namespace dcasgd

#endif  // DCASGD_SERVICES_PS_PS_OPTIONS_H_
