#include "services/ps/push_collector.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_format.h"
#include "wire/tensor_spec.h"

namespace dcasgd {

PushCollector::PushCollector(ShardStore* store, uint64_t max_push_bytes)
    : store_(store), max_push_bytes_(max_push_bytes) {}

absl::Status PushCollector::Begin(WorkerId worker, uint32_t chunk_count, uint64_t step,
                                  const std::string& session) {
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
  if (absl::Status s = store_->CheckChunk(gradient->tensor(), gradient->chunk_index(),
                                          gradient->values().size());
      !s.ok()) {
    return s;
  }
  bytes_ += gradient->values().size();
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
  return absl::OkStatus();
}

}  // namespace dcasgd
