#ifndef DCASGD_BASE_SIGNALS_H_
#define DCASGD_BASE_SIGNALS_H_

#include "absl/synchronization/notification.h"

namespace dcasgd {

// SIGTERM and SIGINT, the signals that ask a dcasgd process to shut down
// (Kubernetes sends SIGTERM). No code of dcasgd runs in a signal handler: the
// signals are blocked in every thread and taken with sigwait(2).

// Blocks the shutdown signals in the calling thread and so in every thread it
// starts later (gRPC's, prometheus-cpp's). Call first in main, before any
// other thread exists.
void BlockShutdownSignals();

// Waits until a shutdown signal arrives and returns its number. Requires
// BlockShutdownSignals().
int WaitForShutdownSignal();

// Blocks the shutdown signals (BlockShutdownSignals) and starts a detached
// thread that logs "<program>: signal N: <what>" and notifies `stop` when
// one arrives. `stop` must live until exit.
void NotifyOnShutdownSignal(absl::Notification* stop, const char* program, const char* what);

}  // namespace dcasgd

#endif  // DCASGD_BASE_SIGNALS_H_
