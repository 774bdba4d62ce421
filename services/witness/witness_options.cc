#include "services/witness/witness_options.h"

#include <limits>
#include <set>
#include <utility>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "auth/server_flags.h"
#include "base/status_macros.h"

ABSL_FLAG(std::string, listen, "0.0.0.0:7000", "gRPC listen address host:port (port 0: any)");
ABSL_FLAG(std::string, state_dir, "",
          "directory of the register file witness.state, on a volume of its own (required)");
ABSL_FLAG(int64_t, shard_count, 0, "number of shards in the job, as the members' (required)");
ABSL_FLAG(std::string, init, "",
          "recreate lost registers: 'shard:epoch:member,...' (member a or b), from the members' "
          "status; a register already at that epoch or above is left as it is");
ABSL_FLAG(std::string, metrics_address, "0.0.0.0:9100",
          "Prometheus /metrics host:port (port 0: any); empty: off");
ABSL_FLAG(std::string, port_file, "", "write 'grpc <port>\\nmetrics <port>\\n' here after start");

namespace dcasgd {
namespace {

// Every flag defined above and the servers' shared security flags
// (auth/server_flags.h), nothing else.
const FlagSet& WitnessFlags() {
  static const FlagSet* flags =
      new FlagSet("dcasgd-witness", {__FILE__, auth::ServerSecurityFlagsFile()});  // never deleted
  return *flags;
}

// --tls_*, --auth_* and --health_listen (auth/server_flags.h).
absl::Status ParseSecurity(WitnessOptions* options) {
  ASSIGN_OR_RETURN(auth::ServerSecurity security, auth::ServerSecurityFromFlags());
  options->health_listen = std::move(security.health_listen);
  options->tls = std::move(security.tls);
  options->auth = std::move(security.auth);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<WitnessInit>> ParseWitnessInit(absl::string_view spec,
                                                          uint32_t shard_count) {
  std::vector<WitnessInit> inits;
  std::set<uint32_t> shards;
  for (absl::string_view item : absl::StrSplit(spec, ',', absl::SkipWhitespace())) {
    item = absl::StripAsciiWhitespace(item);
    const std::vector<absl::string_view> parts = absl::StrSplit(item, ':');
    WitnessInit init;
    if (parts.size() != 3 || !absl::SimpleAtoi(parts[0], &init.shard) ||
        !absl::SimpleAtoi(parts[1], &init.epoch)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--init: '", item, "' is not shard:epoch:member (e.g. 1:7:b)"));
    }
    if (init.shard >= shard_count) {
      return absl::InvalidArgumentError(absl::StrCat("--init: '", item, "': shard ", init.shard,
                                                     " is not below --shard_count=", shard_count));
    }
    if (init.epoch == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("--init: '", item, "': the epoch must be at least 1"));
    }
    if (parts[2] == "a") {
      init.member = Member::kA;
    } else if (parts[2] == "b") {
      init.member = Member::kB;
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("--init: '", item, "': the member must be a or b"));
    }
    if (!shards.insert(init.shard).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("--init: shard ", init.shard, " is given twice"));
    }
    inits.push_back(init);
  }
  return inits;
}

absl::StatusOr<WitnessOptions> ParseWitnessOptions(const std::vector<std::string>& args,
                                                   const EnvLookup& env) {
  RETURN_IF_ERROR(WitnessFlags().Parse(args, env).status());
  WitnessOptions options;
  options.listen = absl::GetFlag(FLAGS_listen);
  if (options.listen.empty()) return absl::InvalidArgumentError("--listen is empty");
  options.state_dir = absl::GetFlag(FLAGS_state_dir);
  if (options.state_dir.empty()) {
    return absl::InvalidArgumentError(
        "--state_dir is required: the directory of the register file, on a volume of its own");
  }
  const int64_t shard_count = absl::GetFlag(FLAGS_shard_count);
  if (shard_count < 1 || shard_count > kMaxWitnessShards) {
    return absl::InvalidArgumentError(absl::StrCat("--shard_count=", shard_count,
                                                   ": must be in [1, ", kMaxWitnessShards,
                                                   "] (the job's, as its members')"));
  }
  options.shard_count = static_cast<uint32_t>(shard_count);
  ASSIGN_OR_RETURN(options.init, ParseWitnessInit(absl::GetFlag(FLAGS_init), options.shard_count));
  options.metrics_address = absl::GetFlag(FLAGS_metrics_address);
  options.port_file = absl::GetFlag(FLAGS_port_file);
  RETURN_IF_ERROR(ParseSecurity(&options));
  return options;
}

std::string WitnessOptionsUsage() {
  return WitnessFlags().Usage(
      "dcasgd-witness: the arbiter of epochs of a job's replicated shards (one register per "
      "shard).");
}

std::string WitnessOptions::DebugString() const {
  return absl::StrFormat("listen=%s state_dir='%s' shard_count=%d init=%d metrics_address='%s' %s",
                         listen, state_dir, shard_count, init.size(), metrics_address,
                         auth::DescribeServerSecurity(tls, auth));
}

}  // namespace dcasgd
