#ifndef DCASGD_CORE_PUSH_H_
#define DCASGD_CORE_PUSH_H_

#include <cstdint>
#include <string>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "base/shared_bytes.h"

namespace dcasgd {

// A worker's id on one shard: random, non-zero, unique among live workers
// (core/worker_registry.h).
using WorkerId = uint64_t;

// The deepest pipeline a worker may ask for (ps.proto JoinRequest): each
// level is one more backup of the whole model per worker on every shard.
inline constexpr uint32_t kMaxPipelineDepth = 4;

// One chunk of a pushed gradient: little-endian float32 bytes.
struct GradientChunk {
  std::string tensor;
  uint64_t chunk_index = 0;
  std::string values;
  // Set by ShardStore::CheckGradientValues once every value passed the
  // shard's bound, so that SubmitPush does not read them again; SubmitPush
  // checks every chunk without it.
  bool values_checked = false;
};

// One chunk of weights as sent on the wire.
struct ChunkValues {
  std::string tensor;
  uint64_t chunk_index = 0;
  // Little-endian float32. A block the shard may also keep as the worker's
  // backup: never written once shared (base/shared_bytes.h).
  SharedBytes values;
};

// One chunk of a PushPull reply, handed to the caller as soon as it is applied
// (before the whole push is), so it can be on the wire while the next chunk
// is updated.
struct AppliedChunk {
  uint64_t version = 0;    // the version this push creates
  uint64_t staleness = 0;  // of this push
  ChunkValues values;      // new weights, which are also the worker's backup
};

// The outcome of one push. The new weights of a PushPull are not here: they
// go to the push's ChunkSink, chunk by chunk.
struct PushResult {
  uint64_t version = 0;      // shard version after the update
  uint64_t staleness = 0;    // versions applied since this worker's pull
  double apply_seconds = 0;  // time spent in the update kernels
  // The push repeated an already applied step: nothing was applied now; the
  // version and staleness are those recorded for that step.
  bool replayed = false;
};

// Runs exactly once with a push's outcome.
using PushDone = absl::AnyInvocable<void(absl::StatusOr<PushResult>)>;
// Receives a PushPull's chunks as they are applied, on the applying thread
// and with store locks held: it must not call back into the store or block.
using ChunkSink = absl::AnyInvocable<void(AppliedChunk)>;

}  // namespace dcasgd

#endif  // DCASGD_CORE_PUSH_H_
