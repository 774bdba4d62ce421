#ifndef DCASGD_SERVICES_PS_PUSH_COLLECTOR_H_
#define DCASGD_SERVICES_PS_PUSH_COLLECTOR_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "core/dtype.h"
#include "core/push.h"
#include "core/shard_store.h"
#include "dcasgd/v1/ps.pb.h"

namespace dcasgd {

// The checks of one push as its messages arrive, before anything of it is
// handed to the store: the head (worker id and session, chunk count, step),
// then every gradient chunk (name, owner, length, the announced count, the
// byte limits). Shared by the Push/PushPull streams and the rounds of an
// Exchange stream (services/ps/ps_streams.cc, ps_exchange.cc) and by the
// fuzz target, so the rules of docs/security.md are written once. Every error leaves nothing
// applied: the caller drops the collector.
//
// Not thread-safe: one push, fed by one stream's read callbacks.
class PushCollector {
 public:
  // `store` must outlive the collector. Counting the bytes received is the
  // caller's (the fuzz target, tests/fuzz/ps_requests_fuzz.cc, has no
  // metrics).
  PushCollector(ShardStore* store, uint64_t max_push_bytes);

  // The push's head. INVALID_ARGUMENT without a worker id or chunk count, or
  // for an unknown `wire_dtype` (the dtype of its replies, ps.proto Dtype);
  // RESOURCE_EXHAUSTED for more chunks than this shard owns; the worker's
  // lease and session (ShardStore::Authenticate) before anything is kept.
  absl::Status Begin(WorkerId worker, uint32_t chunk_count, uint64_t step,
                     const std::string& session, int wire_dtype = v1::DTYPE_FLOAT32);

  // One gradient chunk, after Begin; its strings are moved out of
  // `gradient`, and its values decoded to float32 from their wire dtype
  // (Chunk.dtype; wire/chunk_values.h). INVALID_ARGUMENT beyond the
  // announced count, for a bad name, an unknown dtype or a length that is
  // not the chunk's elements times the dtype's size; the other errors of
  // ShardStore::CheckChunk and of ShardStore::CheckGradientValues (NaN, Inf
  // or beyond max_gradient_abs); RESOURCE_EXHAUSTED beyond the byte limit
  // (limit(), counted in decoded float32 bytes: what the push holds here).
  absl::Status Add(v1::Chunk* gradient);

  bool started() const { return started_; }
  // Every announced chunk arrived.
  bool complete() const { return started_ && chunks_.size() == announced_; }
  uint32_t announced() const { return announced_; }
  size_t received() const { return chunks_.size(); }
  WorkerId worker() const { return worker_; }
  uint64_t step() const { return step_; }
  // The dtype its replies travel in (PushPull, pull_back rounds).
  Dtype wire_dtype() const { return wire_dtype_; }
  // The most gradient bytes (float32, as decoded) the push may hold here
  // (known after Begin):
  // what its announced chunks can hold, capped by max_push_bytes. It also
  // bounds its PushPull replies, so it is what a push reserves in flight.
  uint64_t limit() const { return limit_; }

  // The collected chunks (the collector is spent).
  std::vector<GradientChunk> TakeChunks() { return std::move(chunks_); }

 private:
  ShardStore* const store_;
  const uint64_t max_push_bytes_;

  bool started_ = false;
  WorkerId worker_ = 0;
  uint32_t announced_ = 0;
  uint64_t step_ = 0;
  Dtype wire_dtype_ = Dtype::kFloat32;
  uint64_t limit_ = 0;
  bool limit_by_flag_ = false;
  uint64_t bytes_ = 0;
  std::vector<GradientChunk> chunks_;
};

}  // namespace dcasgd

#endif  // DCASGD_SERVICES_PS_PUSH_COLLECTOR_H_
