// dcasgd-ps: one parameter shard. Parses flags (and DCASGD_* environment
// variables), serves until SIGTERM or SIGINT, then shuts down gracefully and
// writes a final checkpoint. Exit 0 after a clean shutdown, 2 for bad flags,
// 1 for anything else (e.g. a corrupt checkpoint).
#include <pthread.h>
#include <signal.h>

#include <cstdio>
#include <string>
#include <vector>

#include "services/ps/ps_options.h"
#include "services/ps/ps_server.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  for (const std::string& arg : args) {
    if (arg == "--help" || arg == "-help" || arg == "--helpfull") {
      std::fputs(dcasgd::PsOptionsUsage().c_str(), stdout);
      return 0;
    }
  }
  absl::StatusOr<dcasgd::PsOptions> options = dcasgd::ParsePsOptions(args, dcasgd::ProcessEnv());
  if (!options.ok()) {
    std::fprintf(stderr, "dcasgd-ps: %s\n", std::string(options.status().message()).c_str());
    return 2;
  }

  // Block the shutdown signals in every thread (gRPC's included, which are
  // created later and inherit the mask); this thread takes them with
  // sigwait, so no code runs in a signal handler.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  absl::StatusOr<std::unique_ptr<dcasgd::PsServer>> server = dcasgd::PsServer::Start(*options);
  if (!server.ok()) {
    std::fprintf(stderr, "dcasgd-ps: %s\n", server.status().ToString().c_str());
    return 1;
  }
  int signal_number = 0;
  sigwait(&signals, &signal_number);
  std::fprintf(stderr, "dcasgd-ps: signal %d, shutting down\n", signal_number);
  absl::Status status = (*server)->Shutdown(absl::Seconds(10));
  if (!status.ok()) {
    std::fprintf(stderr, "dcasgd-ps: %s\n", status.ToString().c_str());
    return 1;
  }
  return 0;
}
