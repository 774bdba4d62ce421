// 16-bit wire dtypes (ps.proto Dtype) at the shard: gradients decoded before
// anything is applied, replies (Pull, PushPull, Exchange, a repeated step)
// encoded in the dtype each request asks for. In process, over real loopback
// gRPC, driven with the raw generated stub. The malformed 16-bit pushes are
// in the bad-push list of ps_service_test.cc.
#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "tests/ps/ps_service_fixture.h"

namespace dcasgd {
namespace ps_test {
namespace {

// The rounding of `values` to `dtype` (identity for float32).
std::vector<float> Rounded(Dtype dtype, std::vector<float> values) {
  if (dtype == Dtype::kFloat32) return values;
  for (float& v : values) v = FloatFromBits16(dtype, FloatToBits16(dtype, v));
  return values;
}

// Bit-for-bit equality (EXPECT_EQ on floats would also accept -0 == 0).
void ExpectSameBits(const std::vector<float>& got, const std::vector<float>& want) {
  ASSERT_EQ(got.size(), want.size());
  EXPECT_EQ(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)), 0)
      << "first: " << got[0] << " vs " << want[0];
}

// A chunk-ordered concatenation of the chunks of `messages`.
std::vector<float> Joined(const std::vector<v1::PullResponse>& messages, v1::Dtype expected) {
  std::map<uint64_t, std::vector<float>> chunks;
  for (const v1::PullResponse& m : messages) {
    EXPECT_EQ(m.chunk().dtype(), expected);
    const size_t element_bytes = expected == v1::DTYPE_FLOAT32 ? 4 : 2;
    EXPECT_EQ(m.chunk().values().size() % element_bytes, 0u);
    chunks[m.chunk().chunk_index()] = Decoded(m.chunk());
  }
  std::vector<float> all;
  for (const auto& [index, values] : chunks) all.insert(all.end(), values.begin(), values.end());
  return all;
}

class PsWireDtypeTest : public PsServiceTest {
 protected:
  // Moves "w" off values every format holds (1 - 0.1 * 0.3), so that the
  // roundings differ from the float32 values.
  void MakeWeightsInexact() {
    const uint64_t worker = Join("setup");
    ASSERT_TRUE(Pull(worker).status.ok());
    v1::PushResponse response;
    ASSERT_TRUE(Push(FullGradient(worker, 0.3f), &response).ok());
    const std::vector<float> w = Weights();
    ASSERT_NE(Rounded(Dtype::kBfloat16, w), w);
    ASSERT_NE(Rounded(Dtype::kFloat16, w), w);
  }

  // Every tensor, with the replies in `dtype`.
  PullResult PullAs(uint64_t worker, v1::Dtype dtype) { return Pull(worker, {}, dtype); }

  // `messages` asking for their replies in `dtype`, with `step`.
  static std::vector<v1::PushRequest> Asking(std::vector<v1::PushRequest> messages, v1::Dtype dtype,
                                             uint64_t step = 0) {
    messages[0].set_wire_dtype(dtype);
    messages[0].set_step(step);
    return messages;
  }
};

TEST_F(PsWireDtypeTest, PullInEachDtypeIsTheRoundingOfTheFloat32Pull) {
  MakeWeightsInexact();
  const std::vector<float> w = Weights();
  for (const auto& [wire, dtype] :
       std::vector<std::pair<v1::Dtype, Dtype>>{{v1::DTYPE_FLOAT32, Dtype::kFloat32},
                                                {v1::DTYPE_BFLOAT16, Dtype::kBfloat16},
                                                {v1::DTYPE_FLOAT16, Dtype::kFloat16}}) {
    SCOPED_TRACE(NameOf(kDtypeNames, dtype));
    const PullResult evaluator = PullAs(0, wire);
    ASSERT_TRUE(evaluator.status.ok()) << evaluator.status.error_message();
    ASSERT_EQ(evaluator.messages.size(), 3u);
    ExpectSameBits(Joined(evaluator.messages, wire), Rounded(dtype, w));
    const uint64_t worker = Join(std::string("worker-") + NameOf(kDtypeNames, dtype));
    const PullResult pulled = PullAs(worker, wire);
    ASSERT_TRUE(pulled.status.ok()) << pulled.status.error_message();
    ExpectSameBits(Joined(pulled.messages, wire), Rounded(dtype, w));
  }
}

TEST_F(PsWireDtypeTest, PullWithAnUnknownWireDtypeIsInvalidArgumentAndRecordsNothing) {
  const uint64_t worker = Join("a");
  const PullResult pulled = PullAs(worker, static_cast<v1::Dtype>(5));
  EXPECT_EQ(pulled.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(pulled.status.error_message(), ::testing::HasSubstr("PullRequest.wire_dtype"));
  EXPECT_TRUE(pulled.messages.empty());
  EXPECT_EQ(Status().backup_bytes(), 0u) << "no backup recorded";
}

// A bfloat16 gradient is the float32 gradient of its rounding: after the
// worker's own pull DC-ASGD-c is plain SGD, w - lr * round(g).
TEST_F(PsWireDtypeTest, Bfloat16PushPullAppliesTheDecodedGradientAndRepliesInBfloat16) {
  const uint64_t worker = Join("a");
  ASSERT_TRUE(Pull(worker).status.ok());
  const float g = 0.3f;
  const float g16 = Rounded(Dtype::kBfloat16, {g})[0];
  ASSERT_NE(g16, g);
  std::vector<v1::PushRequest> push;
  for (uint64_t chunk : {0, 1, 2}) {
    push.push_back(Gradient16(worker, "w", chunk, Dtype::kBfloat16,
                              std::vector<float>(chunk == 2 ? 2 : 4, g)));
  }
  const PullResult result = PushPull(Asking(push, v1::DTYPE_BFLOAT16));
  ASSERT_TRUE(result.status.ok()) << result.status.error_message();
  const std::vector<float> w = Weights();
  for (float v : w) EXPECT_FLOAT_EQ(v, 1.0f - kLr * g16);
  ExpectSameBits(Joined(result.messages, v1::DTYPE_BFLOAT16), Rounded(Dtype::kBfloat16, w));
}

// float16 holds |x| <= 65504: a larger gradient element arrives as Inf and is
// refused by the shard's finiteness check, after decoding, with nothing
// applied.
TEST_F(PsWireDtypeTest, Float16OverflowIsRejectedAsANonFiniteGradient) {
  const uint64_t worker = Join("a");
  ASSERT_TRUE(Pull(worker).status.ok());
  const std::vector<float> before = Weights();
  v1::PushResponse response;
  const grpc::Status status = Push({Gradient16(worker, "w", 0, Dtype::kFloat16, {1, 1, 1, 1}),
                                    Gradient16(worker, "w", 2, Dtype::kFloat16, {1, 70000.0f})},
                                   &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), ::testing::HasSubstr("= inf: NaN, Inf or beyond"));
  EXPECT_EQ(Status().version(), 0u);
  ExpectSameBits(Weights(), before);
  // 65504 itself is finite in float16 and goes through.
  ASSERT_TRUE(Push({Gradient16(worker, "w", 2, Dtype::kFloat16, {1, 65504.0f})}, &response).ok());
  EXPECT_EQ(Status().version(), 1u);
}

TEST_F(PsWireDtypeTest, ARepeatedStepIsAnsweredInTheDtypeItsRetryAsks) {
  MakeWeightsInexact();
  const uint64_t worker = Join("a");
  ASSERT_TRUE(Pull(worker).status.ok());
  const PullResult first = PushPull(Asking(FullGradient(worker, 0.7f), v1::DTYPE_BFLOAT16, 1));
  ASSERT_TRUE(first.status.ok()) << first.status.error_message();
  const uint64_t version = Status().version();
  const std::vector<float> w = Weights();
  ExpectSameBits(Joined(first.messages, v1::DTYPE_BFLOAT16), Rounded(Dtype::kBfloat16, w));
  // The same step again (its answer was lost): nothing applied, and the
  // backup (the float32 weights it was sent) comes back in each dtype.
  for (const auto& [wire, dtype] :
       std::vector<std::pair<v1::Dtype, Dtype>>{{v1::DTYPE_BFLOAT16, Dtype::kBfloat16},
                                                {v1::DTYPE_FLOAT32, Dtype::kFloat32},
                                                {v1::DTYPE_FLOAT16, Dtype::kFloat16}}) {
    SCOPED_TRACE(NameOf(kDtypeNames, dtype));
    const PullResult again = PushPull(Asking(FullGradient(worker, 0.7f), wire, 1));
    ASSERT_TRUE(again.status.ok()) << again.status.error_message();
    ExpectSameBits(Joined(again.messages, wire), Rounded(dtype, w));
    const ExchangeResult round = Exchange({Round(1, Asking(FullGradient(worker, 0.7f), wire, 1),
                                                 /*pull_back=*/true)});
    ASSERT_EQ(round.last.count(1), 1u);
    EXPECT_EQ(round.last.at(1).code(), 0) << round.last.at(1).message();
    std::vector<v1::PullResponse> as_pull;
    for (const v1::Chunk& chunk : round.last.at(1).weights()) {
      as_pull.emplace_back();
      *as_pull.back().mutable_chunk() = chunk;
    }
    ExpectSameBits(Joined(as_pull, wire), Rounded(dtype, w));
  }
  EXPECT_EQ(Status().version(), version);
  ExpectSameBits(Weights(), w);
}

TEST_F(PsWireDtypeTest, ExchangeRoundsReplyInTheirOwnDtypes) {
  MakeWeightsInexact();
  const uint64_t worker = Join("a");
  ASSERT_TRUE(Pull(worker).status.ok());
  std::vector<v1::PushRequest> push;
  for (uint64_t chunk : {0, 1, 2}) {
    push.push_back(Gradient16(worker, "w", chunk, Dtype::kFloat16,
                              std::vector<float>(chunk == 2 ? 2 : 4, 0.25f)));
  }
  // Round 1 asks for float16 weights, round 2 (float32 gradients) for float32.
  const ExchangeResult result =
      Exchange({Round(1, Asking(push, v1::DTYPE_FLOAT16), true),
                Round(2, Asking(FullGradient(worker, 0.5f), v1::DTYPE_FLOAT32), true)});
  ASSERT_TRUE(result.status.ok()) << result.status.error_message();
  ASSERT_EQ(result.last.size(), 2u);
  for (const v1::ExchangeResponse& m : result.messages) {
    for (const v1::Chunk& chunk : m.weights()) {
      EXPECT_EQ(chunk.dtype(), m.round() == 1 ? v1::DTYPE_FLOAT16 : v1::DTYPE_FLOAT32);
      EXPECT_EQ(chunk.values().size(),
                (chunk.chunk_index() == 2 ? 2u : 4u) * (m.round() == 1 ? 2u : 4u));
    }
  }
  EXPECT_EQ(result.last.at(2).code(), 0) << result.last.at(2).message();
  EXPECT_EQ(Status().version(), 3u);
}

}  // namespace
}  // namespace ps_test
}  // namespace dcasgd
