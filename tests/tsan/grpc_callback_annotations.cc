// Makes the hand-offs of gRPC's callback API visible to ThreadSanitizer.
//
// Debian's libgrpc is not built with -fsanitize=thread. A callback operation
// (a reactor's StartRead, StartWrite, Finish, a unary call's completion) is
// prepared by gRPC's inline C++ code (grpcpp headers, so instrumented) on one
// thread, started with grpc_call_start_batch, and completed on another thread
// by libgrpc calling the tag's functor_run; what orders the two is inside
// libgrpc (its executor and lock-free queues), which TSan cannot see. Every
// field gRPC's CallOpSet and CallbackWithSuccessTag write before the batch and
// read in the callback was therefore reported as a race, and so was every
// field of a dcasgd reactor written before a StartWrite and read in its
// OnWriteDone.
//
// This file, linked into every executable of the `tsan` preset only
// (cmake/sanitizers.cmake), defines grpc_call_start_batch, so the executable's
// definition interposes on libgrpc++'s call of libgrpc's (through the PLT). For
// a CallbackWithSuccessTag (recognised by its functor_run), it tells TSan about
// a release on the tag before the batch starts and swaps the tag's functor_run
// for AcquiringRun, which tells TSan about the matching acquire and puts the
// original back before running it. Other tags (the synchronous and async APIs'
// completion queue tags) pass unchanged.
//
// It also defines grpc::Server::UnrefWithPossibleNotify and
// UnrefAndWaitLocked (under their mangled names, called through the PLT
// inside libgrpc++): every callback call ends with the former, after its
// reactor's OnDone, and Server::Shutdown waits in the latter for all of them.
// libgrpc++ counts them with an atomic TSan cannot see, so without a release
// and an acquire on the server there, a service destroyed after Shutdown was
// reported as racing with the OnDone of its last reactors.
//
// Last, it defines grpc_core::Executor::Run (called through the PLT by
// libgrpc++ and libgrpc): a reactor's OnDone, after its last reaction, is run
// on another thread through it (ServerCallbackCall::ScheduleOnDone), so a
// reactor deleting itself in OnDone was reported as racing with the fields
// its last OnWriteDone or OnReadDone wrote. The closure's callback is
// wrapped like a tag's functor_run above: release when scheduled, acquire
// when it runs.
//
// And it defines grpc::internal::ServerCallbackCall::ScheduleOnDone (called
// through the PLT, from dcasgd's binaries and inside libgrpc++), which runs
// once a server call's count of outstanding reactions reached zero. The
// count's decrements in gRPC's inline code are atomics TSan sees; those in
// libgrpc++'s own copy of MaybeDone (after OnCancel) are not, so when the
// last decrement was libgrpc++'s, what other threads did before their
// decrements (e.g. the completion op's callback reading its std::function)
// was reported as racing with CallOnDone freeing it. An acquire on the
// count, before the call's OnDone is run or scheduled, is the edge TSan
// misses.
#include <dlfcn.h>

#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <utility>

#include "absl/status/status.h"
#include "grpc/grpc.h"
#include "grpcpp/support/callback_common.h"
#include "grpcpp/support/server_callback.h"

extern "C" {
void __tsan_acquire(void* addr);
void __tsan_release(void* addr);
}

namespace {

using FunctorRun = void (*)(grpc_completion_queue_functor*, int);

// CallbackWithSuccessTag::StaticRun is private; an explicit instantiation is
// the one place C++ lets code name it (access is not checked there).
template <FunctorRun kRun>
struct CallbackTagRunOf {
  friend FunctorRun CallbackTagRun() { return kRun; }
};
template struct CallbackTagRunOf<&grpc::internal::CallbackWithSuccessTag::StaticRun>;
FunctorRun CallbackTagRun();

// The functions below read and write gRPC's own tags and closures, which
// libgrpc (not instrumented) hands between threads: they are not instrumented
// either, or TSan would report their accesses against each other.
#define DCASGD_GRPC_OWNED __attribute__((no_sanitize_thread))

DCASGD_GRPC_OWNED void AcquiringRun(grpc_completion_queue_functor* functor, int ok) {
  __tsan_acquire(functor);
  const FunctorRun run = CallbackTagRun();
  functor->functor_run = run;  // the tag may be set up for another batch
  run(functor, ok);
}

// The head of gRPC's (internal) grpc_closure: a scratch word, then the
// callback and its argument; grpc_error_handle is absl::Status in gRPC 1.51.
using ClosureCallback = void (*)(void* arg, absl::Status error);
struct ClosureHead {
  void* scratch;
  ClosureCallback cb;
  void* cb_arg;
};

// A scheduled closure's own callback, restored before it runs (it may
// schedule the closure again, or free it).
struct Hop {
  ClosureHead* closure;
  ClosureCallback cb;
  void* cb_arg;
};

DCASGD_GRPC_OWNED void AcquiringClosure(void* arg, absl::Status error) {
  Hop* hop = static_cast<Hop*>(arg);
  __tsan_acquire(hop);
  const ClosureCallback cb = hop->cb;
  void* const cb_arg = hop->cb_arg;
  hop->closure->cb = cb;
  hop->closure->cb_arg = cb_arg;
  delete hop;
  cb(cb_arg, std::move(error));
}

}  // namespace

extern "C" DCASGD_GRPC_OWNED grpc_call_error grpc_call_start_batch(grpc_call* call,
                                                                   const grpc_op* ops, size_t nops,
                                                                   void* tag, void* reserved) {
  using Real = grpc_call_error (*)(grpc_call*, const grpc_op*, size_t, void*, void*);
  static const Real real = reinterpret_cast<Real>(dlsym(RTLD_NEXT, "grpc_call_start_batch"));
  if (real == nullptr) {
    std::fprintf(stderr,
                 "tsan gRPC annotations: grpc_call_start_batch not found (tests/tsan/README.md)\n");
    std::abort();
  }
  // Every tag libgrpc++ passes is an object (a CallOpSet or a functor), so its
  // first word can be read; only a CallbackWithSuccessTag starts with
  // CallbackWithSuccessTag::StaticRun (or AcquiringRun, if a batch of it
  // failed to start before).
  auto* functor = static_cast<grpc_completion_queue_functor*>(tag);
  if (functor != nullptr &&
      (functor->functor_run == CallbackTagRun() || functor->functor_run == &AcquiringRun)) {
    functor->functor_run = &AcquiringRun;
    __tsan_release(functor);
  }
  return real(call, ops, nops, tag, reserved);
}

extern "C" {

void _ZN4grpc6Server23UnrefWithPossibleNotifyEv(void* server) {
  using Real = void (*)(void*);
  static const Real real =
      reinterpret_cast<Real>(dlsym(RTLD_NEXT, "_ZN4grpc6Server23UnrefWithPossibleNotifyEv"));
  if (real == nullptr) {
    std::fprintf(stderr, "tsan gRPC annotations: Server::UnrefWithPossibleNotify not found\n");
    std::abort();
  }
  __tsan_release(server);
  real(server);
}

void _ZN4grpc6Server18UnrefAndWaitLockedEv(void* server) {
  using Real = void (*)(void*);
  static const Real real =
      reinterpret_cast<Real>(dlsym(RTLD_NEXT, "_ZN4grpc6Server18UnrefAndWaitLockedEv"));
  if (real == nullptr) {
    std::fprintf(stderr, "tsan gRPC annotations: Server::UnrefAndWaitLocked not found\n");
    std::abort();
  }
  real(server);
  __tsan_acquire(server);
}

// ServerCallbackCall is a vtable pointer, then two std::atomic_int:
// on_cancel_conditions_remaining_ and callbacks_outstanding_ (private; gRPC
// 1.51's grpcpp/support/server_callback.h). The size pins that layout.
static_assert(sizeof(grpc::internal::ServerCallbackCall) == sizeof(void*) + 2 * sizeof(int),
              "grpc::internal::ServerCallbackCall changed: re-read its members");

void _ZN4grpc8internal18ServerCallbackCall14ScheduleOnDoneEb(void* call, bool inline_ondone) {
  using Real = void (*)(void*, bool);
  static const Real real = reinterpret_cast<Real>(
      dlsym(RTLD_NEXT, "_ZN4grpc8internal18ServerCallbackCall14ScheduleOnDoneEb"));
  if (real == nullptr) {
    std::fprintf(stderr, "tsan gRPC annotations: ServerCallbackCall::ScheduleOnDone not found\n");
    std::abort();
  }
  void* callbacks_outstanding = static_cast<char*>(call) + sizeof(void*) + sizeof(int);
  __tsan_acquire(callbacks_outstanding);
  real(call, inline_ondone);
}

DCASGD_GRPC_OWNED void
_ZN9grpc_core8Executor3RunEP12grpc_closureN4absl7debian36StatusENS_12ExecutorTypeENS_15ExecutorJobTypeE(
    void* closure, absl::Status error, int type, int job_type) {
  using Real = void (*)(void*, absl::Status, int, int);
  static const Real real = reinterpret_cast<Real>(
      dlsym(RTLD_NEXT,
            "_ZN9grpc_core8Executor3RunEP12grpc_closureN4absl7debian36StatusENS_12ExecutorTypeENS_"
            "15ExecutorJobTypeE"));
  if (real == nullptr) {
    std::fprintf(stderr, "tsan gRPC annotations: grpc_core::Executor::Run not found\n");
    std::abort();
  }
  auto* head = static_cast<ClosureHead*>(closure);
  if (head != nullptr && head->cb != nullptr) {
    Hop* hop = new Hop{head, head->cb, head->cb_arg};
    head->cb = &AcquiringClosure;
    head->cb_arg = hop;
    __tsan_release(hop);
  }
  real(closure, std::move(error), type, job_type);
}

}  // extern "C"
