#include "core/placement.h"

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace dcasgd {
namespace {

TEST(Fnv1a64, KnownVectors) {
  // Published FNV-1a 64-bit test vectors: clients in other languages must
  // produce the same numbers.
  EXPECT_EQ(Fnv1a64(""), 0xcbf29ce484222325ULL);
  EXPECT_EQ(Fnv1a64("a"), 0xaf63dc4c8601ec8cULL);
  EXPECT_EQ(Fnv1a64("foobar"), 0x85944171f73967e8ULL);
}

TEST(Fnv1a64, HashesBytesNotCStrings) {
  // Embedded NULs and bytes >= 0x80 are hashed like any other byte.
  const std::string with_nul("a\0b", 3);
  EXPECT_NE(Fnv1a64(with_nul), Fnv1a64("a"));
  EXPECT_NE(Fnv1a64(with_nul), Fnv1a64("ab"));
  EXPECT_NE(Fnv1a64("\xff"), Fnv1a64("\x7f"));
  // One byte: (basis ^ byte) * prime, the definition of FNV-1a.
  const uint64_t expected = (0xcbf29ce484222325ULL ^ 0xffULL) * 0x100000001b3ULL;
  EXPECT_EQ(Fnv1a64("\xff"), expected);
}

TEST(Fnv1a64, ContinuesFromAGivenHash) {
  EXPECT_EQ(Fnv1a64("bar", Fnv1a64("foo")), Fnv1a64("foobar"));
  EXPECT_EQ(Fnv1a64("", Fnv1a64("a")), Fnv1a64("a"));
  EXPECT_EQ(Fnv1a64("a", kFnv1a64Offset), Fnv1a64("a"));
}

TEST(ShardOfChunk, SingleShardOwnsEverything) {
  for (uint64_t chunk :
       {uint64_t{0}, uint64_t{1}, uint64_t{12345}, std::numeric_limits<uint64_t>::max()}) {
    EXPECT_EQ(ShardOfChunk("layer1/weights", chunk, 1), 0u) << chunk;
  }
}

TEST(ShardOfChunk, ConsecutiveChunksGoRoundRobin) {
  for (uint32_t shards : {2u, 3u, 7u, 16u}) {
    for (const char* tensor : {"w", "fc1/bias", "conv2/kernel"}) {
      const uint32_t first = ShardOfChunk(tensor, 0, shards);
      ASSERT_LT(first, shards);
      for (uint64_t chunk = 1; chunk < 3 * shards; ++chunk) {
        EXPECT_EQ(ShardOfChunk(tensor, chunk, shards), (first + chunk) % shards)
            << tensor << " chunk " << chunk << " of " << shards << " shards";
      }
    }
  }
}

TEST(ShardOfChunk, SpreadsChunksEvenly) {
  const uint32_t shards = 5;
  const uint64_t chunks_per_shard = 4;
  std::vector<int> owned(shards, 0);
  for (uint64_t chunk = 0; chunk < shards * chunks_per_shard; ++chunk) {
    ++owned[ShardOfChunk("embedding", chunk, shards)];
  }
  for (uint32_t shard = 0; shard < shards; ++shard) {
    EXPECT_EQ(owned[shard], static_cast<int>(chunks_per_shard)) << "shard " << shard;
  }
}

TEST(ShardOfChunk, StartShardDependsOnTensorName) {
  // Chunk 0 of many single-chunk tensors should not all land on one shard.
  const uint32_t shards = 4;
  std::vector<int> first_chunks(shards, 0);
  for (int t = 0; t < 64; ++t) {
    ++first_chunks[ShardOfChunk("tensor" + std::to_string(t), 0, shards)];
  }
  for (uint32_t shard = 0; shard < shards; ++shard) {
    EXPECT_GT(first_chunks[shard], 0) << "shard " << shard;
  }
}

TEST(ShardOfChunk, SumWrapsModuloTwoToThe64) {
  // The contract is (hash + chunk) mod 2^64 mod shards; a client that widened
  // the sum would disagree exactly when it wraps.
  const std::string tensor = "wrap";
  const uint64_t hash = Fnv1a64(tensor);
  const uint64_t wraps_to_zero = 0 - hash;  // hash + this == 2^64 == 0 (mod 2^64)
  for (uint32_t shards : {3u, 5u, 7u}) {
    EXPECT_EQ(ShardOfChunk(tensor, wraps_to_zero, shards), 0u) << shards;
    EXPECT_EQ(ShardOfChunk(tensor, wraps_to_zero + 1, shards), 1u % shards) << shards;
    EXPECT_EQ(ShardOfChunk(tensor, 0, shards), hash % shards) << shards;
  }
}

// OwnedChunkRuns against the definition, chunk by chunk, including hashes
// whose sum with the chunk index wraps past 2^64.
TEST(OwnedChunkRuns, MatchesTheDefinitionEvenWhenTheSumWraps) {
  const uint64_t max = std::numeric_limits<uint64_t>::max();
  for (uint64_t hash : {uint64_t{0}, uint64_t{1}, uint64_t{12345}, Fnv1a64("layer1/weights"), max,
                        max - 1, max - 6, max - 40}) {
    for (uint32_t shards : {1u, 2u, 3u, 7u}) {
      for (uint64_t chunks : {uint64_t{0}, uint64_t{1}, uint64_t{5}, uint64_t{50}}) {
        std::vector<uint64_t> expected[8];
        for (uint64_t i = 0; i < chunks; ++i) expected[(hash + i) % shards].push_back(i);
        for (uint32_t shard = 0; shard < shards; ++shard) {
          ChunkRun runs[2];
          const int n = OwnedChunkRuns(hash, chunks, shard, shards, runs);
          std::vector<uint64_t> owned;
          uint64_t counted = 0;
          for (int r = 0; r < n; ++r) {
            counted += runs[r].count(shards);
            for (uint64_t i = runs[r].first; i < runs[r].end; i += shards) owned.push_back(i);
          }
          EXPECT_EQ(owned, expected[shard]) << hash << " " << shards << " " << chunks;
          EXPECT_EQ(counted, owned.size());
        }
      }
    }
  }
}

}  // namespace
}  // namespace dcasgd
