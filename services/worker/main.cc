// dcasgd-worker: a stateless trainer (--role=train), the evaluator
// (--role=eval) or a one-shot health check of every shard (--role=healthcheck).
// SIGTERM/SIGINT: finish the step in progress, Leave, exit 0. Exit 2 for bad
// flags, 1 for any other error.
#include <cstdio>
#include <string>
#include <vector>

#include "absl/synchronization/notification.h"
#include "base/flags.h"
#include "base/process_setup.h"
#include "base/signals.h"
#include "services/worker/worker.h"

int main(int argc, char** argv) {
  dcasgd::PrepareServiceProcess();
  const std::vector<std::string> args(argv + 1, argv + argc);
  if (dcasgd::WantsHelp(args)) {
    std::fputs(dcasgd::WorkerOptionsUsage().c_str(), stdout);
    return 0;
  }
  auto options = dcasgd::ParseWorkerOptions(args, dcasgd::ProcessEnv());
  if (!options.ok()) {
    std::fprintf(stderr, "dcasgd-worker: %s\n", std::string(options.status().message()).c_str());
    return 2;
  }
  absl::Notification stop;
  dcasgd::NotifyOnShutdownSignal(&stop, "dcasgd-worker", "finishing the current step");
  if (absl::Status s = dcasgd::RunWorker(*options, &stop); !s.ok()) {
    std::fprintf(stderr, "dcasgd-worker: %s: %s\n", absl::StatusCodeToString(s.code()).c_str(),
                 std::string(s.message()).c_str());
    return 1;
  }
  return 0;
}
