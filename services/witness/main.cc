// dcasgd-witness: the arbiter of epochs of a job's replicated shards
// (docs/design.md, "Members, roles and the witness"). Parses flags (and
// DCASGD_* environment variables), serves until SIGTERM or SIGINT, then shuts
// down. Exit 0 after a clean shutdown, 2 for bad flags, 1 for anything else
// (e.g. a corrupt register file).
#include <cstdio>
#include <string>
#include <vector>

#include "base/flags.h"
#include "base/process_setup.h"
#include "base/signals.h"
#include "services/witness/witness_options.h"
#include "services/witness/witness_server.h"

int main(int argc, char** argv) {
  dcasgd::PrepareServiceProcess();
  const std::vector<std::string> args(argv + 1, argv + argc);
  if (dcasgd::WantsHelp(args)) {
    std::fputs(dcasgd::WitnessOptionsUsage().c_str(), stdout);
    return 0;
  }
  absl::StatusOr<dcasgd::WitnessOptions> options =
      dcasgd::ParseWitnessOptions(args, dcasgd::ProcessEnv());
  if (!options.ok()) {
    std::fprintf(stderr, "dcasgd-witness: %s\n", std::string(options.status().message()).c_str());
    return 2;
  }
  // Before gRPC starts its threads, which inherit the mask.
  dcasgd::BlockShutdownSignals();
  absl::StatusOr<std::unique_ptr<dcasgd::WitnessServer>> server =
      dcasgd::WitnessServer::Start(*options);
  if (!server.ok()) {
    std::fprintf(stderr, "dcasgd-witness: %s\n", server.status().ToString().c_str());
    return 1;
  }
  const int signal_number = dcasgd::WaitForShutdownSignal();
  std::fprintf(stderr, "dcasgd-witness: signal %d, shutting down\n", signal_number);
  (*server)->Shutdown(absl::Seconds(5));
  return 0;
}
