#include "clients/cpp/chunk_plan.h"

#include <cstdint>
#include <string>
#include <tuple>
#include <vector>

#include "core/placement.h"
#include "gtest/gtest.h"

namespace dcasgd {
namespace client {
namespace {

constexpr uint32_t kChunk = 4;

// (elements, shard count).
class PlanChunksTest : public ::testing::TestWithParam<std::tuple<uint64_t, uint32_t>> {};

TEST_P(PlanChunksTest, CoversEveryElementOnceOnTheOwningShard) {
  const auto [elements, shards] = GetParam();
  const std::vector<TensorLayout> tensors = {{"layer1/weights", elements, kChunk},
                                             {"b", 3, kChunk}};
  const auto plan = PlanChunks(tensors, shards);
  ASSERT_EQ(plan.size(), shards);

  std::vector<std::vector<int>> covered(tensors.size());
  for (size_t t = 0; t < tensors.size(); ++t) covered[t].assign(tensors[t].num_elements, 0);
  for (uint32_t s = 0; s < shards; ++s) {
    for (const PlannedChunk& c : plan[s]) {
      ASSERT_LT(c.tensor, tensors.size());
      EXPECT_EQ(ShardOfChunk(tensors[c.tensor].name, c.index, shards), s);
      EXPECT_EQ(c.offset, c.index * kChunk);
      ASSERT_GE(c.length, 1u);
      ASSERT_LE(c.length, kChunk);
      for (uint64_t e = c.offset; e < c.offset + c.length; ++e) ++covered[c.tensor].at(e);
    }
  }
  for (size_t t = 0; t < tensors.size(); ++t) {
    for (uint64_t e = 0; e < tensors[t].num_elements; ++e) {
      EXPECT_EQ(covered[t][e], 1) << tensors[t].name << " element " << e;
    }
  }
}

TEST_P(PlanChunksTest, ChunkCountAndLastLength) {
  const auto [elements, shards] = GetParam();
  const std::vector<TensorLayout> tensors = {{"w", elements, kChunk}};
  const uint64_t expected_chunks = (elements + kChunk - 1) / kChunk;
  EXPECT_EQ(tensors[0].num_chunks(), expected_chunks);
  const auto plan = PlanChunks(tensors, shards);
  uint64_t total = 0;
  for (const auto& chunks : plan) {
    total += chunks.size();
    for (const PlannedChunk& c : chunks) {
      const uint64_t want = c.index + 1 == expected_chunks ? elements - c.index * kChunk : kChunk;
      EXPECT_EQ(c.length, want) << "chunk " << c.index;
    }
  }
  EXPECT_EQ(total, expected_chunks);
}

// 0 elements, 1, one short of a chunk multiple, an exact multiple, one more.
INSTANTIATE_TEST_SUITE_P(Sizes, PlanChunksTest,
                         ::testing::Combine(::testing::Values<uint64_t>(0, 1, kChunk - 1, kChunk,
                                                                        kChunk + 1, 3 * kChunk,
                                                                        3 * kChunk + 1),
                                            ::testing::Values<uint32_t>(1, 2, 3)));

TEST(PlanChunks, SingleShardTakesEverythingInOrder) {
  const std::vector<TensorLayout> tensors = {{"a", 9, kChunk}, {"b", 4, kChunk}};
  const auto plan = PlanChunks(tensors, 1);
  ASSERT_EQ(plan.size(), 1u);
  ASSERT_EQ(plan[0].size(), 4u);
  EXPECT_EQ(plan[0][0].tensor, 0u);
  EXPECT_EQ(plan[0][2].index, 2u);
  EXPECT_EQ(plan[0][2].length, 1u);
  EXPECT_EQ(plan[0][3].tensor, 1u);
  EXPECT_EQ(plan[0][3].length, 4u);
}

TEST(PlanChunks, ConsecutiveChunksGoRoundRobin) {
  const std::vector<TensorLayout> tensors = {{"embedding", 10 * kChunk, kChunk}};
  const auto plan = PlanChunks(tensors, 3);
  const uint32_t first = ShardOfChunk("embedding", 0, 3);
  for (uint64_t i = 0; i < 10; ++i) {
    const uint32_t shard = (first + i) % 3;
    bool found = false;
    for (const PlannedChunk& c : plan[shard]) found = found || c.index == i;
    EXPECT_TRUE(found) << "chunk " << i << " not on shard " << shard;
  }
  // 10 chunks over 3 shards: 4, 3, 3 in some order.
  size_t largest = 0, smallest = 100;
  for (const auto& chunks : plan) {
    largest = std::max(largest, chunks.size());
    smallest = std::min(smallest, chunks.size());
  }
  EXPECT_EQ(largest, 4u);
  EXPECT_EQ(smallest, 3u);
}

TEST(PlanChunks, PlacementMatchesTheWireContract) {
  // ps.proto: shard = (fnv1a64(name) + i) mod N. FNV-1a of "a" is a published
  // test vector.
  EXPECT_EQ(Fnv1a64("a"), 0xaf63dc4c8601ec8cULL);
  const std::vector<TensorLayout> tensors = {{"a", 2, 1}};
  const auto plan = PlanChunks(tensors, 3);
  const uint32_t shard0 = static_cast<uint32_t>(0xaf63dc4c8601ec8cULL % 3);
  ASSERT_EQ(plan[shard0].size(), 1u);
  EXPECT_EQ(plan[shard0][0].index, 0u);
  ASSERT_EQ(plan[(shard0 + 1) % 3].size(), 1u);
  EXPECT_EQ(plan[(shard0 + 1) % 3][0].index, 1u);
}

}  // namespace
}  // namespace client
}  // namespace dcasgd
