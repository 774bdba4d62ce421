#include "core/chunk_layout.h"

#include "core/tensor.h"
#include "gtest/gtest.h"

namespace dcasgd {
namespace {

TEST(ChunkLayout, CountsOffsetsAndLengths) {
  EXPECT_EQ(NumChunks(0, 4), 0u);
  EXPECT_EQ(NumChunks(1, 4), 1u);
  EXPECT_EQ(NumChunks(8, 4), 2u);
  EXPECT_EQ(NumChunks(9, 4), 3u);
  EXPECT_EQ(NumChunks(uint64_t{1} << 40, 65536), uint64_t{1} << 24);
  EXPECT_EQ(ChunkOffset(4, 2), 8u);
  EXPECT_EQ(ChunkOffset(65536, uint64_t{1} << 30), uint64_t{1} << 46) << "no 32-bit overflow";
  EXPECT_EQ(ChunkLength(9, 4, 0), 4u);
  EXPECT_EQ(ChunkLength(9, 4, 2), 1u) << "the last chunk is shorter";
  EXPECT_EQ(ChunkLength(8, 4, 1), 4u);
}

TEST(ChunkLayout, ChunksTileTheTensorExactly) {
  for (uint64_t n : {1u, 2u, 7u, 64u, 65u, 1000u}) {
    for (uint32_t c : {1u, 3u, 64u, 65536u}) {
      const TensorLayout layout{"t", n, c};
      uint64_t next = 0;
      for (uint64_t i = 0; i < layout.num_chunks(); ++i) {
        EXPECT_EQ(layout.chunk_offset(i), next);
        EXPECT_GE(layout.chunk_length(i), 1u);
        next += layout.chunk_length(i);
      }
      EXPECT_EQ(next, n) << n << " elements in chunks of " << c;
    }
  }
}

TEST(ChunkLayout, TheShardsSpecAndTheClientsLayoutAgree) {
  TensorSpec spec;
  spec.name = "w";
  spec.shape = {7, 3};
  spec.chunk_elements = 5;
  const TensorLayout layout = spec.layout();
  EXPECT_EQ(layout.name, "w");
  EXPECT_EQ(layout.num_elements, 21u);
  ASSERT_EQ(layout.num_chunks(), spec.num_chunks());
  for (uint64_t i = 0; i < spec.num_chunks(); ++i) {
    EXPECT_EQ(layout.chunk_offset(i), spec.chunk_offset(i));
    EXPECT_EQ(layout.chunk_length(i), spec.chunk_length(i));
  }
}

}  // namespace
}  // namespace dcasgd
