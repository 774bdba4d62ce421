#ifndef DCASGD_BASE_PROCESS_SETUP_H_
#define DCASGD_BASE_PROCESS_SETUP_H_

namespace dcasgd {

// Process-wide settings that every dcasgd service (dcasgd-ps, dcasgd-worker,
// dcasgd-witness) and the benchmarks that stand in for them make first
// thing in main, before any other thread starts:
// - Abseil's lock-order tracking off. Debian's Abseil is built as a debug
//   build, so every absl::Mutex::Lock records the lock in a process-wide
//   graph, under one process-wide spin lock (about 4x the cost of an
//   uncontended lock and unlock, bench/lock_bench.cc), in memory it maps itself
//   and aborts when it cannot: a declaration that runs a shard out of
//   memory could abort it instead of failing with RESOURCE_EXHAUSTED
//   (tests/hostile). Lock order is the job of the sanitizer builds, the
//   thread-safety annotations and the tests (which keep the tracking).
// - The allocator tuned for large messages (base/memory.h,
//   TuneAllocatorForLargeMessages).
void PrepareServiceProcess();

}  // namespace dcasgd

#endif  // DCASGD_BASE_PROCESS_SETUP_H_
