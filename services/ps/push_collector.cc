#include "services/ps/push_collector.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_format.h"
#include "base/status_macros.h"
#include "wire/chunk_values.h"
#include "wire/tensor_spec.h"

namespace dcasgd {

PushCollector::PushCollector(ShardStore* store, uint64_t max_push_bytes)
    : store_(store), max_push_bytes_(max_push_bytes) {}

absl::Status PushCollector::Begin(WorkerId worker, uint32_t chunk_count, uint64_t step,
                                  const std::string& session, int wire_dtype) {
  started_ = true;
  worker_ = worker;
  announced_ = chunk_count;
  step_ = step;
  if (worker_ == 0) {
    return absl::InvalidArgumentError(
        "the first PushRequest of a stream must carry the worker_id returned by Join");
  }
  if (announced_ == 0) {
    return absl::InvalidArgumentError(
        "the first PushRequest of a stream must carry chunk_count, the number of gradient "
        "chunks the push sends (>= 1)");
  }
  absl::StatusOr<Dtype> dtype = DtypeFromProto(wire_dtype, "the push's wire_dtype");
  if (!dtype.ok()) return dtype.status();
  wire_dtype_ = *dtype;
  const ShardStats stats = store_->Stats();
  // Unknown tensors are left to the chunk check (NOT_FOUND), so the cap is at
  // least one chunk.
  const uint64_t owned = std::max<uint64_t>(1, stats.owned_chunks);
  if (announced_ > owned) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "the push announces %d chunks but this shard owns %d; send each chunk once, to its "
        "owning shard; nothing was applied",
        announced_, owned));
  }
  // Before anything is buffered: the worker's lease, and that this client is
  // that worker (its session).
  if (absl::Status s = store_->Authenticate(worker_, session); !s.ok()) return s;
  // What the announced chunks can carry at most on this shard.
  limit_ = std::min<uint64_t>(announced_ * stats.largest_chunk_bytes, stats.weight_bytes);
  limit_by_flag_ = max_push_bytes_ < limit_;
  limit_ = std::min<uint64_t>(limit_, max_push_bytes_);
  return absl::OkStatus();
}

absl::Status PushCollector::Add(v1::Chunk* gradient) {
  if (chunks_.size() >= announced_) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "the push carries more chunks than the %d its first message announced (chunk_count); "
        "nothing was applied",
        announced_));
  }
  if (absl::Status s = ValidateName("gradient chunk tensor name", gradient->tensor()); !s.ok()) {
    return s;
  }
  absl::StatusOr<Dtype> dtype = DtypeFromProto(gradient->dtype(), "gradient Chunk.dtype");
  if (!dtype.ok()) return dtype.status();
  // The store counts float32 bytes: a 16-bit chunk is checked at its decoded
  // length (an odd length cannot be one).
  const size_t wire_bytes = gradient->values().size();
  if (*dtype != Dtype::kFloat32 && wire_bytes % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "a %s gradient chunk (Chunk.dtype) holds 2 bytes per element; got %d bytes; nothing was "
        "applied",
        NameOf(kDtypeNames, *dtype), wire_bytes));
  }
  const size_t float_bytes = wire_bytes / DtypeBytes(*dtype) * sizeof(float);
  if (absl::Status s = store_->CheckChunk(gradient->tensor(), gradient->chunk_index(), float_bytes);
      !s.ok()) {
    if (*dtype == Dtype::kFloat32 || !absl::IsInvalidArgument(s)) return s;
    return absl::InvalidArgumentError(
        absl::StrFormat("a %s gradient chunk (Chunk.dtype) holds 2 bytes per element; its %d "
                        "bytes count as %d float32 bytes: %s",
                        NameOf(kDtypeNames, *dtype), wire_bytes, float_bytes, s.message()));
  }
  // The limit bounds what the push holds here: its gradients as float32.
  bytes_ += float_bytes;
  if (bytes_ > limit_) {
    return absl::ResourceExhaustedError(
        limit_by_flag_
            ? absl::StrFormat("the push carries more than %d gradient bytes (the server's "
                              "--max_push_bytes); nothing was applied",
                              limit_)
            : absl::StrFormat("the push carries more than the %d gradient bytes its %d "
                              "announced chunks can hold on this shard; nothing was applied",
                              limit_, announced_));
  }
  GradientChunk& chunk = chunks_.emplace_back();
  chunk.tensor.swap(*gradient->mutable_tensor());
  chunk.chunk_index = gradient->chunk_index();
  chunk.values.swap(*gradient->mutable_values());
  // Decoded at the boundary: everything after this sees float32 (the
  // non-finite and max_gradient_abs checks included), exactly the values
  // the worker sent. Those checks run now, while the values are in the
  // cache (the store skips them at submit).
  RETURN_IF_ERROR(DecodeToFloat32InPlace(*dtype, &chunk.values));
  return store_->CheckGradientValues(&chunk);
}

}  // namespace dcasgd
