#include "base/signals.h"

#include <pthread.h>
#include <signal.h>

#include <cstdio>
#include <thread>

namespace dcasgd {
namespace {

sigset_t ShutdownSignals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  return signals;
}

}  // namespace

void BlockShutdownSignals() {
  const sigset_t signals = ShutdownSignals();
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
}

int WaitForShutdownSignal() {
  const sigset_t signals = ShutdownSignals();
  int signal_number = 0;
  sigwait(&signals, &signal_number);
  return signal_number;
}

void NotifyOnShutdownSignal(absl::Notification* stop, const char* program, const char* what) {
  BlockShutdownSignals();
  std::thread([stop, program, what] {
    const int signal_number = WaitForShutdownSignal();
    std::fprintf(stderr, "%s: signal %d: %s\n", program, signal_number, what);
    stop->Notify();
  }).detach();
}

}  // namespace dcasgd
