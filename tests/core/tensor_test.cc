#include "core/tensor.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "absl/types/span.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dcasgd {
namespace {

using ::testing::HasSubstr;

TensorSpec Spec(std::vector<int64_t> shape, uint32_t chunk_elements) {
  TensorSpec spec;
  spec.name = "t";
  spec.shape = std::move(shape);
  spec.chunk_elements = chunk_elements;
  return spec;
}

std::vector<float> Chunk(const TensorSpec& spec, uint64_t index) {
  std::vector<float> out(spec.chunk_length(index));
  InitializeChunk(spec, index, absl::MakeSpan(out));
  return out;
}

// The whole tensor, assembled chunk by chunk.
std::vector<float> Assemble(const TensorSpec& spec) {
  std::vector<float> all;
  for (uint64_t c = 0; c < spec.num_chunks(); ++c) {
    const std::vector<float> chunk = Chunk(spec, c);
    EXPECT_EQ(spec.chunk_offset(c), all.size());
    all.insert(all.end(), chunk.begin(), chunk.end());
  }
  return all;
}

TEST(TensorSpec, ScalarHasOneElementInOneChunk) {
  const TensorSpec spec = ResolveDefaults(Spec({}, 0));
  EXPECT_EQ(spec.num_elements(), 1u);
  EXPECT_EQ(spec.num_chunks(), 1u);
  EXPECT_EQ(spec.chunk_length(0), 1u);
  EXPECT_EQ(spec.chunk_offset(0), 0u);
}

TEST(TensorSpec, LastChunkIsShorter) {
  const TensorSpec spec = Spec({5, 2}, 4);  // 10 elements: 4, 4, 2
  EXPECT_EQ(spec.num_elements(), 10u);
  ASSERT_EQ(spec.num_chunks(), 3u);
  EXPECT_EQ(spec.chunk_length(0), 4u);
  EXPECT_EQ(spec.chunk_length(1), 4u);
  EXPECT_EQ(spec.chunk_length(2), 2u);
  EXPECT_EQ(spec.chunk_offset(2), 8u);
}

TEST(TensorSpec, ExactMultipleHasFullLastChunk) {
  const TensorSpec spec = Spec({3, 4}, 4);
  ASSERT_EQ(spec.num_chunks(), 3u);
  EXPECT_EQ(spec.chunk_length(2), 4u);
  uint64_t total = 0;
  for (uint64_t c = 0; c < spec.num_chunks(); ++c) total += spec.chunk_length(c);
  EXPECT_EQ(total, spec.num_elements());
}

TEST(TensorSpec, ResolveDefaultsFillsOnlyZeroChunkSize) {
  EXPECT_EQ(ResolveDefaults(Spec({10}, 0)).chunk_elements, kDefaultChunkElements);
  EXPECT_EQ(ResolveDefaults(Spec({10}, 3)).chunk_elements, 3u);
  const TensorSpec big = ResolveDefaults(Spec({784, 256}, 0));  // 200704 elements
  EXPECT_EQ(big.num_chunks(), (784u * 256u + kDefaultChunkElements - 1) / kDefaultChunkElements);
  EXPECT_EQ(big.chunk_length(big.num_chunks() - 1),
            784u * 256u - (big.num_chunks() - 1) * kDefaultChunkElements);
}

TEST(TensorSpec, EqualityComparesEveryField) {
  const TensorSpec a = Spec({2, 3}, 4);
  TensorSpec b = a;
  EXPECT_EQ(a, b);
  b.init.seed = 1;
  EXPECT_NE(a, b);
  b = a;
  b.shape = {3, 2};
  EXPECT_NE(a, b);
  b = a;
  b.chunk_elements = 5;
  EXPECT_NE(a, b);
  b = a;
  b.name = "u";
  EXPECT_NE(a, b);
}

TEST(ShapeString, FormatsDimensions) {
  EXPECT_EQ(ShapeString({784, 256}), "[784, 256]");
  EXPECT_EQ(ShapeString({7}), "[7]");
  EXPECT_EQ(ShapeString({}), "[]");
}

TEST(ValidateTensorSpec, AcceptsWellFormedSpecs) {
  EXPECT_TRUE(ValidateTensorSpec(Spec({}, 0)).ok());
  EXPECT_TRUE(ValidateTensorSpec(Spec({784, 256}, 0)).ok());
  TensorSpec uniform = Spec({10}, 4);
  uniform.init.kind = Initializer::Kind::kUniform;
  uniform.init.a = -0.1f;
  uniform.init.b = 0.1f;
  EXPECT_TRUE(ValidateTensorSpec(uniform).ok());
  TensorSpec values = Spec({2, 2}, 3);
  values.init.kind = Initializer::Kind::kValues;
  values.init.values = {1, 2, 3, 4};
  EXPECT_TRUE(ValidateTensorSpec(values).ok());
  // Exactly 2^40 elements is the largest allowed.
  EXPECT_TRUE(ValidateTensorSpec(Spec({int64_t{1} << 20, int64_t{1} << 20}, 0)).ok());
}

TEST(ValidateTensorSpec, RejectsEachBadField) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  struct Case {
    std::string what;
    TensorSpec spec;
    std::string message;
  };
  std::vector<Case> cases;
  {
    TensorSpec s = Spec({3}, 0);
    s.name = "";
    cases.push_back({"empty name", s, "name"});
  }
  cases.push_back({"zero dimension", Spec({3, 0}, 0), "dimension"});
  cases.push_back({"negative dimension", Spec({-1}, 0), "dimension"});
  cases.push_back(
      {"too many elements", Spec({int64_t{1} << 20, (int64_t{1} << 20) + 1}, 0), "2^40"});
  cases.push_back({"overflowing product",
                   Spec({int64_t{1} << 40, int64_t{1} << 40, int64_t{1} << 40}, 0), "2^40"});
  {
    TensorSpec s = Spec({3}, 0);
    s.init.kind = Initializer::Kind::kConstant;
    s.init.a = nan;
    cases.push_back({"NaN constant", s, "constant"});
  }
  {
    TensorSpec s = Spec({3}, 0);
    s.init.kind = Initializer::Kind::kUniform;
    s.init.a = 1.0f;
    s.init.b = 1.0f;
    cases.push_back({"empty uniform range", s, "uniform"});
  }
  {
    TensorSpec s = Spec({3}, 0);
    s.init.kind = Initializer::Kind::kNormal;
    s.init.b = -1.0f;
    cases.push_back({"negative stddev", s, "stddev"});
  }
  {
    TensorSpec s = Spec({2, 2}, 0);
    s.init.kind = Initializer::Kind::kValues;
    s.init.values = {1, 2, 3};
    cases.push_back({"too few values", s, "3 elements"});
  }
  {
    TensorSpec s = Spec({2}, 0);
    s.init.kind = Initializer::Kind::kValues;
    s.init.values = {1, std::numeric_limits<float>::infinity()};
    cases.push_back({"infinite value", s, "NaN or Inf"});
  }
  {
    TensorSpec s = Spec({3}, 0);
    s.name = std::string(kMaxNameBytes + 1, 'n');
    cases.push_back({"name above the limit", s, "longer than 256 bytes"});
  }
  cases.push_back(
      {"too many dimensions", Spec(std::vector<int64_t>(kMaxRank + 1, 1), 0), "33 dimensions"});
  for (const Case& c : cases) {
    const absl::Status status = ValidateTensorSpec(c.spec);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.what;
    EXPECT_THAT(std::string(status.message()), HasSubstr(c.message)) << c.what;
    EXPECT_LT(status.message().size(), 512u) << c.what;
  }
  TensorSpec longest = Spec(std::vector<int64_t>(kMaxRank, 1), 0);
  longest.name = std::string(kMaxNameBytes, 'n');
  EXPECT_TRUE(ValidateTensorSpec(longest).ok());
}

TEST(QuotedName, ShortNamesWholeLongNamesCutAtACharacter) {
  EXPECT_EQ(QuotedName("w"), "'w'");
  EXPECT_EQ(QuotedName(std::string(64, 'a')), "'" + std::string(64, 'a') + "'");
  EXPECT_EQ(QuotedName(std::string(1 << 20, 'a')),
            "'" + std::string(64, 'a') + "...' (1048576 bytes)");
  // 63 ASCII bytes then a 2-byte character across the cut: the character is
  // left out whole, never split.
  const std::string name = std::string(63, 'a') + "\xc3\xa9" + std::string(10, 'b');
  EXPECT_EQ(QuotedName(name), "'" + std::string(63, 'a') + "...' (75 bytes)");
}

TEST(InitializeChunk, ZerosAndConstant) {
  TensorSpec spec = Spec({10}, 4);
  EXPECT_EQ(Assemble(spec), std::vector<float>(10, 0.0f));
  spec.init.kind = Initializer::Kind::kConstant;
  spec.init.a = 0.25f;
  EXPECT_EQ(Assemble(spec), std::vector<float>(10, 0.25f));
}

TEST(InitializeChunk, ExplicitValuesAreSlicedByChunk) {
  TensorSpec spec = Spec({7}, 3);
  spec.init.kind = Initializer::Kind::kValues;
  spec.init.values = {1, 2, 3, 4, 5, 6, 7};
  EXPECT_EQ(Chunk(spec, 2), std::vector<float>({7}));
  EXPECT_EQ(Assemble(spec), spec.init.values);
}

TEST(InitializeChunk, UniformIsDeterministicAndInRange) {
  TensorSpec spec = Spec({1000}, 256);
  spec.init.kind = Initializer::Kind::kUniform;
  spec.init.a = -0.5f;
  spec.init.b = 0.25f;
  spec.init.seed = 42;
  const std::vector<float> once = Assemble(spec);
  EXPECT_EQ(Assemble(spec), once);
  for (float v : once) {
    ASSERT_GE(v, -0.5f);
    ASSERT_LT(v, 0.25f);
  }
  // Chunks are seeded separately: the first two chunks differ.
  EXPECT_NE(std::vector<float>(once.begin(), once.begin() + 256),
            std::vector<float>(once.begin() + 256, once.begin() + 512));
  spec.init.seed = 43;
  EXPECT_NE(Assemble(spec), once);
}

TEST(InitializeChunk, NormalHasRequestedMoments) {
  TensorSpec spec = Spec({20000}, 4096);
  spec.init.kind = Initializer::Kind::kNormal;
  spec.init.a = 1.0f;
  spec.init.b = 0.5f;
  spec.init.seed = 7;
  const std::vector<float> all = Assemble(spec);
  double sum = 0, sum_sq = 0;
  for (float v : all) {
    sum += v;
    sum_sq += static_cast<double>(v) * v;
  }
  const double mean = sum / all.size();
  const double stddev = std::sqrt(sum_sq / all.size() - mean * mean);
  // Standard error of the mean is 0.5 / sqrt(20000) ~ 0.0035.
  EXPECT_NEAR(mean, 1.0, 0.02);
  EXPECT_NEAR(stddev, 0.5, 0.02);
}

TEST(InitializeChunk, ValuesDoNotDependOnWhichShardInitialisesWhichChunk) {
  // A shard initialises only the chunks it owns, in any order; the tensor
  // must come out the same as when one process initialises every chunk.
  TensorSpec spec = Spec({10, 100}, 128);
  spec.init.kind = Initializer::Kind::kNormal;
  spec.init.b = 1.0f;
  spec.init.seed = 0x123456789abcdefULL;
  const std::vector<float> whole = Assemble(spec);
  std::vector<float> scattered(whole.size(), 0.0f);
  for (uint64_t c = spec.num_chunks(); c-- > 0;) {  // reverse order, chunk by chunk
    std::vector<float> chunk(spec.chunk_length(c));
    InitializeChunk(spec, c, absl::MakeSpan(chunk));
    std::copy(chunk.begin(), chunk.end(), scattered.begin() + spec.chunk_offset(c));
  }
  EXPECT_EQ(scattered, whole);
  // The values of a chunk depend on its index and the seed, not on the name.
  TensorSpec renamed = spec;
  renamed.name = "other";
  EXPECT_EQ(Chunk(renamed, 3), Chunk(spec, 3));
}

TEST(InitializeChunk, HighSeedBitsMatter) {
  TensorSpec spec = Spec({64}, 64);
  spec.init.kind = Initializer::Kind::kUniform;
  spec.init.a = 0.0f;
  spec.init.b = 1.0f;
  spec.init.seed = 1;
  const std::vector<float> low = Chunk(spec, 0);
  spec.init.seed = 1 | (uint64_t{1} << 32);
  EXPECT_NE(Chunk(spec, 0), low);
}

}  // namespace
}  // namespace dcasgd
