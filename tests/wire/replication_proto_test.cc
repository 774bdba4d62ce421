// The costs docs/design.md ("Replicated shards") claims for the replication
// log, measured on the messages of protos/dcasgd/v1/replication.proto: what a
// replica's link pays per pulled chunk and per pushed chunk.
#include <cstdint>
#include <string>

#include "dcasgd/v1/replication.pb.h"
#include "gtest/gtest.h"

namespace dcasgd {
namespace {

// A 64-bit random worker id and a late sequence number: the largest varints
// an entry carries in practice.
constexpr uint64_t kWorkerId = 0xfedcba9876543210u;
constexpr uint64_t kSeq = uint64_t{1} << 40;
constexpr size_t kChunkBytes = size_t{65536} * sizeof(float);  // the default chunk

// A pull costs the replica one PullChunk entry per chunk instead of the
// chunk's values: "a few dozen bytes" for a tensor name of ordinary length.
TEST(ReplicationProto, PullChunkEntryIsAFewDozenBytes) {
  v1::LogEntry entry;
  entry.set_seq(kSeq);
  v1::LogEntry::PullChunk* pull = entry.mutable_pull_chunk();
  pull->set_worker_id(kWorkerId);
  pull->set_tensor("layer2/dense/kernel");
  pull->set_chunk_index(1000);
  pull->set_live(true);
  v1::EntryBatch batch;
  *batch.add_entries() = entry;
  EXPECT_LE(batch.ByteSizeLong(), 64u);
  EXPECT_LT(batch.ByteSizeLong() * 1000, kChunkBytes);
}

// A push costs the replica its gradient bytes plus a constant: the entry
// adds only the worker, step, version, staleness and chunk names.
TEST(ReplicationProto, PushEntryAddsAConstantToTheGradient) {
  for (int chunks : {1, 4}) {
    v1::LogEntry entry;
    entry.set_seq(kSeq);
    v1::LogEntry::Push* push = entry.mutable_push();
    push->set_worker_id(kWorkerId);
    push->set_step(uint64_t{1} << 30);
    push->set_version(uint64_t{1} << 35);
    push->set_staleness(64);
    push->set_pull_back(true);
    for (int i = 0; i < chunks; ++i) {
      v1::Chunk* g = push->add_gradients();
      g->set_tensor("layer2/dense/kernel");
      g->set_chunk_index(static_cast<uint64_t>(i));
      g->set_values(std::string(kChunkBytes, '\x01'));
    }
    const size_t overhead = entry.ByteSizeLong() - chunks * kChunkBytes;
    EXPECT_LE(overhead, 48u + 32u * static_cast<size_t>(chunks)) << chunks << " chunks";
  }
}

}  // namespace
}  // namespace dcasgd
