#include "wire/exchange_codec.h"

#include <cstdint>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "wire/chunk_values.h"
#include "wire/raw_message.h"

namespace dcasgd {
namespace {

std::vector<float> Ramp(size_t n, float scale) {
  std::vector<float> values(n);
  for (size_t i = 0; i < n; ++i) values[i] = scale * static_cast<float>(i) - 3.25f;
  return values;
}

// The bytes protobuf itself gives the message (fields in number order).
std::string Canonical(const google::protobuf::MessageLite& message) {
  std::string bytes;
  EXPECT_TRUE(message.SerializeToString(&bytes));
  return bytes;
}

std::vector<grpc::Slice> SlicesOf(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  EXPECT_TRUE(buffer.Dump(&slices).ok());
  return slices;
}

TEST(ExchangeCodecTest, RequestParsesAsTheMessageProtobufWouldBuild) {
  const std::vector<float> a = Ramp(1000, 0.5f), b = Ramp(70000, 1e-3f), c = Ramp(3, 2.0f);
  v1::ExchangeRequest head;
  head.set_round(7);
  v1::RoundHeader* header = head.mutable_header();
  header->set_worker_id(0x1234567890ull);
  header->set_session(std::string(16, '\xab'));
  header->set_step(300);  // a varint of two bytes
  header->set_chunk_count(4);
  header->set_pull_back(true);
  header->set_wire_dtype(v1::DTYPE_BFLOAT16);
  header->set_base_step(299);
  const std::vector<OutgoingChunk> chunks = {
      {"dense/weights", 0, Dtype::kFloat32, a},
      {"dense/weights", 1, Dtype::kBfloat16, b},
      {"bias", 12345678901ull, Dtype::kFloat16, c},
      {"empty", 2, Dtype::kFloat32, {}},
  };

  v1::ExchangeRequest expected = head;
  for (const OutgoingChunk& chunk : chunks) {
    v1::Chunk* g = expected.add_gradients();
    g->set_tensor(std::string(chunk.tensor));
    g->set_chunk_index(chunk.chunk_index);
    g->set_dtype(DtypeToProto(chunk.dtype));
    EncodeValues(chunk.dtype, chunk.values, g->mutable_values());
  }

  const grpc::ByteBuffer bytes = EncodeExchangeRequest(head, chunks);
  EXPECT_EQ(bytes.Length(), expected.ByteSizeLong());
  EXPECT_EQ(SlicesOf(bytes).size(), 1u);  // one allocation, one copy of the values
  v1::ExchangeRequest parsed;
  ASSERT_TRUE(ParseMessage(bytes, &parsed).ok());
  EXPECT_EQ(Canonical(parsed), Canonical(expected));
  ASSERT_EQ(parsed.gradients_size(), 4);
  std::vector<float> back(b.size());
  ASSERT_TRUE(DecodeValues(Dtype::kBfloat16, parsed.gradients(1).values(), absl::MakeSpan(back))
                  .ok());
  EXPECT_NEAR(back[69999], b[69999], 0.5f);
}

TEST(ExchangeCodecTest, RequestWithoutChunksIsTheHeadAlone) {
  v1::ExchangeRequest head;
  head.set_round(1);
  const grpc::ByteBuffer bytes = EncodeExchangeRequest(head, {});
  v1::ExchangeRequest parsed;
  ASSERT_TRUE(ParseMessage(bytes, &parsed).ok());
  EXPECT_EQ(Canonical(parsed), Canonical(head));
}

EncodedChunk Encoded(std::string tensor, uint64_t index, Dtype dtype, const std::vector<float>& v) {
  EncodedChunk chunk{std::move(tensor), index, dtype, {}};
  EncodeValues(dtype, v, &chunk.values);
  return chunk;
}

TEST(ExchangeCodecTest, ResponseParsesAsTheMessageAndLargeValuesAreNotCopied) {
  const std::vector<float> small = Ramp(100, 1.0f), large = Ramp(65536, 1e-4f);
  v1::ExchangeResponse rest;
  rest.set_round(9);
  rest.set_last(true);
  rest.set_version(123456);
  rest.set_staleness(3);
  std::vector<EncodedChunk> weights;
  weights.push_back(Encoded("w", 0, Dtype::kFloat32, small));
  weights.push_back(Encoded("w", 1, Dtype::kFloat32, large));
  weights.push_back(Encoded("w", 2, Dtype::kFloat16, small));
  weights.push_back(Encoded("v", 0, Dtype::kBfloat16, large));  // 128 KiB: its own slice too
  weights.push_back(Encoded("u", 5, Dtype::kFloat32, {}));

  v1::ExchangeResponse expected = rest;
  for (const EncodedChunk& w : weights) {
    v1::Chunk* chunk = expected.add_weights();
    chunk->set_tensor(w.tensor);
    chunk->set_chunk_index(w.chunk_index);
    chunk->set_dtype(DtypeToProto(w.dtype));
    chunk->set_values(w.values);
  }
  const void* large_data = weights[1].values.data();
  const void* large16_data = weights[3].values.data();

  const grpc::ByteBuffer bytes = EncodeExchangeResponse(rest, std::move(weights));
  EXPECT_EQ(bytes.Length(), expected.ByteSizeLong());
  v1::ExchangeResponse parsed;
  ASSERT_TRUE(ParseMessage(bytes, &parsed).ok());
  EXPECT_EQ(Canonical(parsed), Canonical(expected));

  // Copied fields, the large values' own slice, copied fields, its own
  // slice, the rest: the large values are the store's buffers themselves.
  const std::vector<grpc::Slice> slices = SlicesOf(bytes);
  ASSERT_EQ(slices.size(), 5u);
  EXPECT_EQ(static_cast<const void*>(slices[1].begin()), large_data);
  EXPECT_EQ(static_cast<const void*>(slices[3].begin()), large16_data);
  EXPECT_EQ(slices[1].size(), large.size() * 4);
}

TEST(ExchangeCodecTest, ResponseWithoutWeightsCarriesTheStatus) {
  v1::ExchangeResponse rest;
  rest.set_round(2);
  rest.set_last(true);
  rest.set_code(9);
  rest.set_message("worker 5 has no backup of chunk 0 of tensor \"w\"");
  const grpc::ByteBuffer bytes = EncodeExchangeResponse(rest, {});
  EXPECT_EQ(SlicesOf(bytes).size(), 1u);
  v1::ExchangeResponse parsed;
  ASSERT_TRUE(ParseMessage(bytes, &parsed).ok());
  EXPECT_EQ(Canonical(parsed), Canonical(rest));
}

TEST(ExchangeCodecTest, ResponseOfOnlyLargeChunksStartsWithItsFields) {
  v1::ExchangeResponse rest;
  rest.set_round(4);
  std::vector<EncodedChunk> weights;
  weights.push_back(Encoded("w", 0, Dtype::kFloat32, Ramp(5000, 1.0f)));
  weights.push_back(Encoded("w", 1, Dtype::kFloat32, Ramp(5000, 2.0f)));
  v1::ExchangeResponse expected = rest;
  for (const EncodedChunk& w : weights) {
    v1::Chunk* chunk = expected.add_weights();
    chunk->set_tensor(w.tensor);
    chunk->set_chunk_index(w.chunk_index);
    chunk->set_dtype(DtypeToProto(w.dtype));
    chunk->set_values(w.values);
  }
  const grpc::ByteBuffer bytes = EncodeExchangeResponse(rest, std::move(weights));
  EXPECT_EQ(SlicesOf(bytes).size(), 4u);
  v1::ExchangeResponse parsed;
  ASSERT_TRUE(ParseMessage(bytes, &parsed).ok());
  EXPECT_EQ(Canonical(parsed), Canonical(expected));
}

}  // namespace
}  // namespace dcasgd
