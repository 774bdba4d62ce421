#ifndef DCASGD_BASE_MEMORY_H_
#define DCASGD_BASE_MEMORY_H_

namespace dcasgd {

// Hands memory the allocator holds but does not use back to the operating
// system (glibc: malloc_trim, which also releases free pages inside the heap
// and its per-thread arenas). Without it, glibc keeps the freed backups of
// departed workers, and the buffers of a burst of pushes, resident for good.
// Thread-safe; takes each arena's lock briefly. A no-op elsewhere.
void ReturnFreeMemoryToSystem();

}  // namespace dcasgd

#endif  // DCASGD_BASE_MEMORY_H_
