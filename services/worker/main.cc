// dcasgd-worker: a stateless trainer (--role=train), the evaluator
// (--role=eval) or a one-shot health check of every shard (--role=healthcheck).
// SIGTERM/SIGINT: finish the step in progress, Leave, exit 0.
#include <csignal>
#include <cstdio>
#include <thread>

#include "absl/synchronization/notification.h"
#include "services/worker/worker.h"

int main(int argc, char** argv) {
  auto options = dcasgd::ParseWorkerOptions(argc, argv);
  if (!options.ok()) {
    std::fprintf(stderr, "dcasgd-worker: %s\n", std::string(options.status().message()).c_str());
    return 2;
  }
  absl::Notification stop;
  dcasgd::StopOnSignals(&stop);
  absl::Status s = dcasgd::RunWorker(*options, &stop);
  if (!s.ok()) {
    std::fprintf(stderr, "dcasgd-worker: %s: %s\n", absl::StatusCodeToString(s.code()).c_str(),
                 std::string(s.message()).c_str());
    return 1;
  }
  return 0;
}
