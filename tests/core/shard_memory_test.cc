#include "core/shard_memory.h"

#include <cstdint>
#include <limits>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dcasgd {
namespace {

using ::testing::HasSubstr;

TEST(ShardMemoryFor, EveryTermOfTheRule) {
  ShardFootprint footprint;
  footprint.weight_elements = 1 << 20;
  footprint.chunks = 16;
  footprint.spec_bytes = 1000;
  ShardMemoryConfig config;
  config.state_vectors = 2;
  config.backups = true;
  config.max_workers = 8;
  config.inflight_bytes = 32 << 20;
  const ShardMemory m = ShardMemoryFor(footprint, config);
  EXPECT_EQ(m.base, kShardBaseBytes);
  EXPECT_EQ(m.weights, uint64_t{4} << 20);
  EXPECT_EQ(m.optimizer_state, uint64_t{8} << 20);
  EXPECT_EQ(m.backups, uint64_t{32} << 20);
  EXPECT_EQ(m.chunk_overhead, 16 * (kChunkOverheadBytes + 8 * kBackupOverheadBytes));
  EXPECT_EQ(m.specs, 1000u);
  EXPECT_EQ(m.inflight, uint64_t{32} << 20);
  EXPECT_EQ(m.transport, 8 * kStreamWindowBytes);
  EXPECT_EQ(m.total(), m.base + m.weights + m.optimizer_state + m.backups + m.chunk_overhead +
                           m.specs + m.inflight + m.transport);
  EXPECT_THAT(m.DebugString(), HasSubstr("backups 32.0 MiB"));
}

// --backup_dtype=bfloat16|float16: 2 bytes per backup element, nothing else
// changes; for a large model the same budget then holds about twice the
// workers (the per-worker stream window and bookkeeping do not shrink).
TEST(ShardMemoryFor, SixteenBitBackupsHalveTheBackupsTerm) {
  ShardFootprint footprint;
  footprint.weight_elements = uint64_t{1} << 28;  // a 1 GiB model
  footprint.chunks = 4096;
  ShardMemoryConfig config;
  config.state_vectors = 1;
  config.backups = true;
  config.max_workers = 8;
  config.inflight_bytes = 256 << 20;
  const ShardMemory full = ShardMemoryFor(footprint, config);
  config.backup_element_bytes = 2;
  const ShardMemory half = ShardMemoryFor(footprint, config);
  EXPECT_EQ(half.backups, full.backups / 2);
  EXPECT_EQ(half.total(), full.total() - full.backups / 2);
  // The most workers a 16 GiB budget admits, per backup dtype.
  auto most_workers = [&](uint32_t element_bytes) {
    config.backup_element_bytes = element_bytes;
    uint32_t workers = 0;
    for (uint32_t m = 1; m <= 256; ++m) {
      config.max_workers = m;
      if (ShardMemoryFor(footprint, config).total() <= (uint64_t{16} << 30)) workers = m;
    }
    return workers;
  };
  const uint32_t f32 = most_workers(4), b16 = most_workers(2);
  // 16 GiB - 48 MiB base - 1 GiB weights - 1 GiB mean square - 256 MiB in
  // flight leaves 13.7 GiB: 13 backups of 1 GiB, 27 of 512 MiB.
  EXPECT_EQ(f32, 13u);
  EXPECT_EQ(b16, 27u);
}

TEST(ShardMemoryFor, NoBackupsWhenTheRuleReadsNone) {
  ShardFootprint footprint;
  footprint.weight_elements = 1000;
  footprint.chunks = 1;
  ShardMemoryConfig config;
  config.backups = false;  // ASGD, SSGD
  config.max_workers = 64;
  const ShardMemory m = ShardMemoryFor(footprint, config);
  EXPECT_EQ(m.backups, 0u);
  EXPECT_EQ(m.chunk_overhead, kChunkOverheadBytes);
}

TEST(ShardMemoryFor, SynchronousModesCountOneWaitingPushPerWorker) {
  ShardFootprint footprint;
  footprint.weight_elements = 1000;
  ShardMemoryConfig config;
  config.max_workers = 8;
  EXPECT_EQ(ShardMemoryFor(footprint, config).waiting, 0u);
  config.waiting_pushes = true;  // ssgd, ssp
  const ShardMemory m = ShardMemoryFor(footprint, config);
  EXPECT_EQ(m.waiting, 8 * 4000u);
  EXPECT_EQ(m.total(), m.base + m.weights + m.waiting + m.chunk_overhead + m.transport);
}

TEST(ShardMemoryFor, SaturatesInsteadOfOverflowing) {
  ShardFootprint footprint;
  footprint.weight_elements = uint64_t{1} << 62;
  footprint.chunks = uint64_t{1} << 62;
  ShardMemoryConfig config;
  config.backups = true;
  config.max_workers = 1 << 16;
  const ShardMemory m = ShardMemoryFor(footprint, config);
  EXPECT_EQ(m.total(), std::numeric_limits<uint64_t>::max());
  EXPECT_THAT(m.DebugString(), HasSubstr("more than 16 EiB"));
}

TEST(HumanBytes, Units) {
  EXPECT_EQ(HumanBytes(0), "0 B");
  EXPECT_EQ(HumanBytes(1023), "1023 B");
  EXPECT_EQ(HumanBytes(1536), "1.5 KiB");
  EXPECT_EQ(HumanBytes(uint64_t{3} << 30), "3.0 GiB");
}

}  // namespace
}  // namespace dcasgd
