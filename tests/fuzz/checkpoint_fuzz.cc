// Fuzz target: checkpoint files (core/checkpoint.h, docs/checkpoint-format.md)
// from arbitrary bytes, read and restored the way dcasgd-ps does at start:
// ReadCheckpoint, then ShardStore::Restore into a shard of the checkpoint's
// index and count. The first input byte picks the shard's update rule (which
// decides what optimizer state Restore expects); the rest is the file.
//
// Checks: no crash, leak or undefined behaviour, and no allocation the
// file's claims could inflate beyond its size (ASan's and libFuzzer's memory
// limits); a file is read or refused with DATA_LOSS naming it; what restores
// is checkpointed again, and that checkpoint reads and restores to the same
// weights.

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/clock.h"
#include "base/file.h"
#include "core/checkpoint.h"
#include "core/shard_store.h"
#include "tests/fuzz/fuzz_input.h"

namespace dcasgd::fuzz {
namespace {

std::vector<std::vector<float>> Weights(const ShardSnapshot& snapshot) {
  std::vector<std::vector<float>> out;
  for (const TensorState& t : snapshot.tensors) {
    for (const ChunkState& c : t.chunks) out.push_back(c.weights);
  }
  return out;
}

void Run(const uint8_t* data, size_t size) {
  FuzzInput in(data, size);
  constexpr UpdateRule kRules[] = {UpdateRule::kAsgd, UpdateRule::kDcAsgdConstant,
                                   UpdateRule::kDcAsgdAdaptive};
  const uint8_t choice = in.Byte();
  const std::string path = absl::StrCat(ScratchDir(), "/in.ckpt");
  if (!WriteFileAtomically(path, in.Rest(), /*durable=*/false).ok()) {
    Fail("cannot write the fuzz input");
  }
  absl::StatusOr<ShardSnapshot> read = ReadCheckpoint(path);
  if (!read.ok()) {
    if (!absl::IsDataLoss(read.status()) ||
        read.status().message().find(path) == absl::string_view::npos) {
      Fail("a corrupt checkpoint is not DATA_LOSS naming the file", read.status());
    }
    return;
  }
  ShardConfig config;
  config.shard_index = read->shard_index;
  config.shard_count = read->shard_count;
  config.optimizer = OptimizerConfig::ForRule(kRules[choice % 3]);
  config.optimizer.momentum = (choice & 0x10) ? 0.5f : 0.0f;
  if (!config.Validate().ok()) return;  // a shard this checkpoint cannot belong to
  ManualClock clock;
  ShardStore store(config, &clock);
  absl::Status restored = store.Restore(*std::move(read));
  if (!restored.ok()) {
    if (!absl::IsDataLoss(restored) && !absl::IsFailedPrecondition(restored)) {
      Fail("a checkpoint that does not fit the shard is neither DATA_LOSS nor FAILED_PRECONDITION",
           restored);
    }
    return;
  }
  // What a restored shard checkpoints next must restore to the same state.
  const ShardSnapshot snapshot = store.Snapshot();
  const std::string out = absl::StrCat(ScratchDir(), "/out.ckpt");
  if (absl::StatusOr<uint64_t> written = WriteCheckpoint(out, snapshot); !written.ok()) {
    Fail("a restored shard cannot checkpoint", written.status());
  }
  absl::StatusOr<ShardSnapshot> again = ReadCheckpoint(out);
  if (!again.ok()) Fail("a checkpoint of a restored shard does not read", again.status());
  if (again->version != snapshot.version || Weights(*again) != Weights(snapshot)) {
    Fail("a checkpoint of a restored shard reads back differently");
  }
  ShardStore second(config, &clock);
  if (absl::Status s = second.Restore(*std::move(again)); !s.ok()) {
    Fail("a checkpoint of a restored shard does not restore", s);
  }
}

}  // namespace
}  // namespace dcasgd::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  dcasgd::fuzz::Run(data, size);
  return 0;
}
