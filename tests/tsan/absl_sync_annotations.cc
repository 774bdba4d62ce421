// Makes Debian's abseil synchronization visible to ThreadSanitizer.
//
// Debian's libabsl_synchronization.so is not built with -fsanitize=thread, so
// TSan never sees absl::Mutex, absl::CondVar or absl::Notification order two
// threads, and reports every field guarded by an absl::Mutex as a data race
// (gRPC's own grpc_core::Mutex is an absl::Mutex too). This file, linked into
// every executable of the `tsan` preset only (CMakeLists.txt, DCASGD_TSAN),
// defines the exported lock and wait functions of that library under their
// mangled names, so the executable's definitions interpose on every caller
// (dcasgd and gRPC alike, both call them through the PLT). Each one calls the
// library's function (dlsym(RTLD_NEXT)) and tells TSan the happens-before
// edge it creates: a release of the mutex's address before anything unlocks
// it, an acquire after anything locks it. Readers are modelled like writers
// (their unlock also releases): that can only hide a race between two
// readers, which cannot write under a reader lock anyway.
//
// The names carry Debian's inline namespace (`absl::debian3`, libabsl
// 20220623); a library without them stops the process at the first lock with
// a message saying so, rather than letting TSan report nonsense.
#include <dlfcn.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>

// Only for absl::Condition's layout and inline constructors: every call into
// the library goes through Real() below, so that this file links into every
// executable without a dependency of its own.
#include "absl/synchronization/mutex.h"

extern "C" {
void __tsan_acquire(void* addr);
void __tsan_release(void* addr);
}

namespace {

// absl::Duration and absl::Time are passed by value: {int64 rep_hi, uint32
// rep_lo}, 16 bytes, returned in two registers like this struct.
struct Duration {
  int64_t hi;
  uint32_t lo;
};

template <typename F>
F Real(const char* mangled) {
  void* f = dlsym(RTLD_NEXT, mangled);
  if (f == nullptr) {
    std::fprintf(stderr,
                 "tsan absl annotations: %s is not in the abseil library this process loaded "
                 "(tests/tsan/README.md)\n",
                 mangled);
    std::abort();
  }
  return reinterpret_cast<F>(f);
}

// The happens-before edges of a lock: everything before an unlock is visible
// after the next lock of the same mutex.
void Acquired(void* mu) { __tsan_acquire(mu); }
void Releasing(void* mu) { __tsan_release(mu); }

// A waiter's condition is evaluated inside the library with the mutex held
// but before the wrappers below can say so: by the waiter when it wakes up
// inside Await or LockWhen, and by whichever thread unlocks the mutex (absl
// evaluates the waiters' conditions on Unlock), and the library may release
// the mutex again right after (the condition was false). The wrappers
// therefore pass the library an AcquiringCondition instead, which tells TSan
// about the acquire, evaluates the caller's condition and tells it about the
// release. Without it every
// field a condition reads is reported as a race with the writer that made it
// true (seen on Checkpointer::Loop's wake-up condition).
class AcquiringCondition {
 public:
  AcquiringCondition(void* mu, const void* cond)
      : mu_(mu), cond_(cond), wrapped_(&AcquiringCondition::Eval, this) {}
  const void* get() const { return &wrapped_; }

 private:
  static bool Eval(AcquiringCondition* self) {
    static const auto eval = Real<bool (*)(const void*)>("_ZNK4absl7debian39Condition4EvalEv");
    Acquired(self->mu_);
    const bool r = eval(self->cond_);
    // The library may release the mutex again without returning (the
    // condition was false): what the condition read happens before the next
    // holder's writes.
    Releasing(self->mu_);
    return r;
  }

  void* const mu_;
  const void* const cond_;
  const absl::Condition wrapped_;
};

}  // namespace

#define DCASGD_REAL(type, name) static const auto real = Real<type>(#name)

extern "C" {

// Mutex: lock, unlock, try-lock, reader variants.
void _ZN4absl7debian35Mutex4LockEv(void* mu) {
  DCASGD_REAL(void (*)(void*), _ZN4absl7debian35Mutex4LockEv);
  real(mu);
  Acquired(mu);
}
void _ZN4absl7debian35Mutex10ReaderLockEv(void* mu) {
  DCASGD_REAL(void (*)(void*), _ZN4absl7debian35Mutex10ReaderLockEv);
  real(mu);
  Acquired(mu);
}
void _ZN4absl7debian35Mutex6UnlockEv(void* mu) {
  DCASGD_REAL(void (*)(void*), _ZN4absl7debian35Mutex6UnlockEv);
  Releasing(mu);
  real(mu);
}
void _ZN4absl7debian35Mutex12ReaderUnlockEv(void* mu) {
  DCASGD_REAL(void (*)(void*), _ZN4absl7debian35Mutex12ReaderUnlockEv);
  Releasing(mu);
  real(mu);
}
bool _ZN4absl7debian35Mutex7TryLockEv(void* mu) {
  DCASGD_REAL(bool (*)(void*), _ZN4absl7debian35Mutex7TryLockEv);
  const bool locked = real(mu);
  if (locked) Acquired(mu);
  return locked;
}
bool _ZN4absl7debian35Mutex13ReaderTryLockEv(void* mu) {
  DCASGD_REAL(bool (*)(void*), _ZN4absl7debian35Mutex13ReaderTryLockEv);
  const bool locked = real(mu);
  if (locked) Acquired(mu);
  return locked;
}

// Mutex: conditions. Await may release and re-acquire the mutex (which it
// holds before and after); the LockWhen family acquires it, with or without a
// timeout (they return with the mutex held either way).
void _ZN4absl7debian35Mutex5AwaitERKNS0_9ConditionE(void* mu, const void* cond) {
  DCASGD_REAL(void (*)(void*, const void*), _ZN4absl7debian35Mutex5AwaitERKNS0_9ConditionE);
  Releasing(mu);
  real(mu, AcquiringCondition(mu, cond).get());
  Acquired(mu);
}
bool _ZN4absl7debian35Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE(void* mu,
                                                                              const void* cond,
                                                                              Duration d) {
  DCASGD_REAL(bool (*)(void*, const void*, Duration),
              _ZN4absl7debian35Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE);
  Releasing(mu);
  const bool r = real(mu, AcquiringCondition(mu, cond).get(), d);
  Acquired(mu);
  return r;
}
bool _ZN4absl7debian35Mutex17AwaitWithDeadlineERKNS0_9ConditionENS0_4TimeE(void* mu,
                                                                           const void* cond,
                                                                           Duration t) {
  DCASGD_REAL(bool (*)(void*, const void*, Duration),
              _ZN4absl7debian35Mutex17AwaitWithDeadlineERKNS0_9ConditionENS0_4TimeE);
  Releasing(mu);
  const bool r = real(mu, AcquiringCondition(mu, cond).get(), t);
  Acquired(mu);
  return r;
}
void _ZN4absl7debian35Mutex8LockWhenERKNS0_9ConditionE(void* mu, const void* cond) {
  DCASGD_REAL(void (*)(void*, const void*), _ZN4absl7debian35Mutex8LockWhenERKNS0_9ConditionE);
  real(mu, AcquiringCondition(mu, cond).get());
  Acquired(mu);
}
void _ZN4absl7debian35Mutex14ReaderLockWhenERKNS0_9ConditionE(void* mu, const void* cond) {
  DCASGD_REAL(void (*)(void*, const void*),
              _ZN4absl7debian35Mutex14ReaderLockWhenERKNS0_9ConditionE);
  real(mu, AcquiringCondition(mu, cond).get());
  Acquired(mu);
}
#define DCASGD_LOCK_WHEN_TIMED(name)                                \
  bool name(void* mu, const void* cond, Duration d) {               \
    DCASGD_REAL(bool (*)(void*, const void*, Duration), name);      \
    const bool r = real(mu, AcquiringCondition(mu, cond).get(), d); \
    Acquired(mu);                                                   \
    return r;                                                       \
  }
DCASGD_LOCK_WHEN_TIMED(_ZN4absl7debian35Mutex19LockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE)
DCASGD_LOCK_WHEN_TIMED(_ZN4absl7debian35Mutex20LockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE)
DCASGD_LOCK_WHEN_TIMED(
    _ZN4absl7debian35Mutex25ReaderLockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE)
DCASGD_LOCK_WHEN_TIMED(
    _ZN4absl7debian35Mutex26ReaderLockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE)

// CondVar: a wait releases the mutex and re-acquires it before returning.
void _ZN4absl7debian37CondVar4WaitEPNS0_5MutexE(void* cv, void* mu) {
  DCASGD_REAL(void (*)(void*, void*), _ZN4absl7debian37CondVar4WaitEPNS0_5MutexE);
  Releasing(mu);
  real(cv, mu);
  Acquired(mu);
}
bool _ZN4absl7debian37CondVar15WaitWithTimeoutEPNS0_5MutexENS0_8DurationE(void* cv, void* mu,
                                                                          Duration d) {
  DCASGD_REAL(bool (*)(void*, void*, Duration),
              _ZN4absl7debian37CondVar15WaitWithTimeoutEPNS0_5MutexENS0_8DurationE);
  Releasing(mu);
  const bool r = real(cv, mu, d);
  Acquired(mu);
  return r;
}
bool _ZN4absl7debian37CondVar16WaitWithDeadlineEPNS0_5MutexENS0_4TimeE(void* cv, void* mu,
                                                                       Duration t) {
  DCASGD_REAL(bool (*)(void*, void*, Duration),
              _ZN4absl7debian37CondVar16WaitWithDeadlineEPNS0_5MutexENS0_4TimeE);
  Releasing(mu);
  const bool r = real(cv, mu, t);
  Acquired(mu);
  return r;
}

// Notification: Notify releases, a wait that saw the notification acquires.
// HasBeenNotified() is inline (an acquire load of the flag, which this file
// cannot see): code that polls it rather than waiting gets no edge.
void _ZN4absl7debian312Notification6NotifyEv(void* n) {
  DCASGD_REAL(void (*)(void*), _ZN4absl7debian312Notification6NotifyEv);
  Releasing(n);
  real(n);
}
void _ZNK4absl7debian312Notification19WaitForNotificationEv(const void* n) {
  DCASGD_REAL(void (*)(const void*), _ZNK4absl7debian312Notification19WaitForNotificationEv);
  real(n);
  Acquired(const_cast<void*>(n));
}
bool _ZNK4absl7debian312Notification30WaitForNotificationWithTimeoutENS0_8DurationE(const void* n,
                                                                                    Duration d) {
  DCASGD_REAL(bool (*)(const void*, Duration),
              _ZNK4absl7debian312Notification30WaitForNotificationWithTimeoutENS0_8DurationE);
  const bool notified = real(n, d);
  if (notified) Acquired(const_cast<void*>(n));
  return notified;
}
bool _ZNK4absl7debian312Notification31WaitForNotificationWithDeadlineENS0_4TimeE(const void* n,
                                                                                 Duration t) {
  DCASGD_REAL(bool (*)(const void*, Duration),
              _ZNK4absl7debian312Notification31WaitForNotificationWithDeadlineENS0_4TimeE);
  const bool notified = real(n, t);
  if (notified) Acquired(const_cast<void*>(n));
  return notified;
}

}  // extern "C"
