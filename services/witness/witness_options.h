#ifndef DCASGD_SERVICES_WITNESS_WITNESS_OPTIONS_H_
#define DCASGD_SERVICES_WITNESS_WITNESS_OPTIONS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "auth/authorizer.h"
#include "auth/tls.h"
#include "base/flags.h"
#include "services/witness/witness_registers.h"

namespace dcasgd {

// One register recreated by --init (shard:epoch:member).
struct WitnessInit {
  uint32_t shard = 0;
  uint64_t epoch = 0;
  Member member = Member::kNone;
};

// Everything dcasgd-witness is configured with.
struct WitnessOptions {
  // host:port of the gRPC server; port 0 picks a free one.
  std::string listen = "0.0.0.0:7000";
  // The directory of witness.state (a volume of its own). Required.
  std::string state_dir;
  // Shards of the job (every member's --shard_count). Required.
  uint32_t shard_count = 0;
  // Registers to recreate after the state was lost (WitnessRegisters::Init).
  std::vector<WitnessInit> init;
  // host:port of the Prometheus /metrics endpoint; empty: off.
  std::string metrics_address = "0.0.0.0:9100";
  // After start, "grpc <port>\nmetrics <port>\n" is written here atomically.
  std::string port_file;
  // host:port of a plaintext server with only grpc.health.v1 (and
  // reflection), for probes that cannot speak TLS; empty: none.
  std::string health_listen;
  // TLS (mTLS with a client CA) on the gRPC port; empty: plaintext.
  auth::ServerTlsFiles tls;
  // Who may call (tokens, certificate identities); off when empty.
  auth::AuthOptions auth;

  // One line, for the startup log.
  std::string DebugString() const;
};

// Parses command-line arguments (without the program name) and the
// environment into options (base/flags.h: every flag --foo_bar may also be
// given as DCASGD_FOO_BAR; the flag wins). INVALID_ARGUMENT naming the flag
// for unknown flags, positional arguments, missing, unparsable or
// out-of-range values. Not thread-safe.
absl::StatusOr<WitnessOptions> ParseWitnessOptions(const std::vector<std::string>& args,
                                                   const EnvLookup& env);

// Parses --init's value: "shard:epoch:member,..." (member a or b, epoch at
// least 1, shard below `shard_count`, each shard at most once; empty: none).
absl::StatusOr<std::vector<WitnessInit>> ParseWitnessInit(absl::string_view spec,
                                                          uint32_t shard_count);

// Help text listing every flag with its default and environment variable.
std::string WitnessOptionsUsage();

}  // namespace dcasgd

#endif  // DCASGD_SERVICES_WITNESS_WITNESS_OPTIONS_H_
