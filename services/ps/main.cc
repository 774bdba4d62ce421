// dcasgd-ps: one parameter shard. Parses flags (and DCASGD_* environment
// variables), serves until SIGTERM or SIGINT, then shuts down gracefully and
// writes a final checkpoint. Exit 0 after a clean shutdown, 2 for bad flags,
// 1 for anything else (e.g. a corrupt checkpoint).
#include <cstdio>
#include <string>
#include <vector>

#include "base/flags.h"
#include "base/process_setup.h"
#include "base/signals.h"
#include "services/ps/ps_options.h"
#include "services/ps/ps_server.h"

int main(int argc, char** argv) {
  dcasgd::PrepareServiceProcess();
  const std::vector<std::string> args(argv + 1, argv + argc);
  if (dcasgd::WantsHelp(args)) {
    std::fputs(dcasgd::PsOptionsUsage().c_str(), stdout);
    return 0;
  }
  absl::StatusOr<dcasgd::PsOptions> options = dcasgd::ParsePsOptions(args, dcasgd::ProcessEnv());
  if (!options.ok()) {
    std::fprintf(stderr, "dcasgd-ps: %s\n", std::string(options.status().message()).c_str());
    return 2;
  }
  // Before gRPC starts its threads, which inherit the mask.
  dcasgd::BlockShutdownSignals();
  absl::StatusOr<std::unique_ptr<dcasgd::PsServer>> server = dcasgd::PsServer::Start(*options);
  if (!server.ok()) {
    std::fprintf(stderr, "dcasgd-ps: %s\n", server.status().ToString().c_str());
    return 1;
  }
  const int signal_number = dcasgd::WaitForShutdownSignal();
  std::fprintf(stderr, "dcasgd-ps: signal %d, shutting down\n", signal_number);
  if (absl::Status status = (*server)->Shutdown(absl::Seconds(10)); !status.ok()) {
    std::fprintf(stderr, "dcasgd-ps: %s\n", status.ToString().c_str());
    return 1;
  }
  return 0;
}
