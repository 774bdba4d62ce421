#ifndef DCASGD_BASE_MEMORY_H_
#define DCASGD_BASE_MEMORY_H_

namespace dcasgd {

// Hands memory the allocator holds but does not use back to the operating
// system (glibc: malloc_trim, which also releases free pages inside the heap
// and its per-thread arenas). Without it, glibc keeps the freed backups of
// departed workers, and the buffers of a burst of pushes, resident for good.
// Thread-safe; takes each arena's lock briefly. A no-op elsewhere.
void ReturnFreeMemoryToSystem();

// Keeps glibc's malloc from mapping each large allocation (a message of
// hundreds of KB, a chunk being updated) with mmap and unmapping it on
// free, and from shrinking the heap after every burst: by default both
// happen on every round, and the page faults and zeroing that follow cost
// more than moving the bytes (about 3x the PushPull MB/s of one worker with
// 1M-10M floats, docs/benchmarks.md, "The allocator"). Freed memory stays
// in the heap for the next round; ReturnFreeMemoryToSystem still hands it
// back when backups are freed. Call once at the start of main, before other
// threads. DCASGD_MALLOC_DEFAULTS=1 in the environment keeps glibc's
// defaults (the benchmark's baseline). A no-op without glibc.
void TuneAllocatorForLargeMessages();

}  // namespace dcasgd

#endif  // DCASGD_BASE_MEMORY_H_
