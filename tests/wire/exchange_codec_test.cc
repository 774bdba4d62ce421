#include "wire/exchange_codec.h"

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/exchange_round.h"
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
  EXPECT_EQ(SlicesOf(bytes).size(), 1u);  // one allocation, one copy of the values
  v1::ExchangeRequest parsed;
  ASSERT_TRUE(ParseMessage(bytes, &parsed).ok());
  EXPECT_EQ(Canonical(parsed), Canonical(expected));
  ASSERT_EQ(parsed.gradients_size(), 4);
  std::vector<float> back(b.size());
  ASSERT_TRUE(
      DecodeValues(Dtype::kBfloat16, parsed.gradients(1).values(), absl::MakeSpan(back)).ok());
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
  std::string values;
  EncodeValues(dtype, v, &values);
  return EncodedChunk{std::move(tensor), index, dtype, SharedBytes(std::move(values))};
}

// A last answer with chunks in every dtype: small ones (copied beside the
// fields) and large ones (65,536 values: a slice of their own).
struct SampleResponse {
  SampleResponse() {
    rest.set_round(9);
    rest.set_last(true);
    rest.set_version(123456);
    rest.set_staleness(3);
    weights.push_back(Encoded("w", 0, Dtype::kFloat32, small));
    weights.push_back(Encoded("w", 1, Dtype::kFloat32, large));
    weights.push_back(Encoded("w", 2, Dtype::kFloat16, small));
    weights.push_back(Encoded("v", 0, Dtype::kBfloat16, large));  // 128 KiB: its own slice too
  }
  const std::vector<float> small = Ramp(100, 1.0f), large = Ramp(65536, 1e-4f);
  v1::ExchangeResponse rest;
  std::vector<EncodedChunk> weights;
};

TEST(ExchangeCodecTest, ResponseParsesAsTheMessageAndLargeValuesAreNotCopied) {
  SampleResponse sample;
  const std::vector<float>& large = sample.large;
  const v1::ExchangeResponse& rest = sample.rest;
  std::vector<EncodedChunk>& weights = sample.weights;
  weights.push_back(Encoded("u", 5, Dtype::kFloat32, {}));

  const v1::ExchangeResponse expected = testing::ResponseOf(rest, weights);
  const void* large_data = weights[1].values.data();
  const void* large16_data = weights[3].values.data();

  const grpc::ByteBuffer bytes = EncodeExchangeResponse(rest, std::move(weights));
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
  const v1::ExchangeResponse expected = testing::ResponseOf(rest, weights);
  const grpc::ByteBuffer bytes = EncodeExchangeResponse(rest, std::move(weights));
  EXPECT_EQ(SlicesOf(bytes).size(), 4u);
  v1::ExchangeResponse parsed;
  ASSERT_TRUE(ParseMessage(bytes, &parsed).ok());
  EXPECT_EQ(Canonical(parsed), Canonical(expected));
}

// Places chunks into buffers of its own, as the client places them into the
// caller's tensors.
class TestPlacer : public ChunkPlacer {
 public:
  void Expect(const std::string& tensor, uint64_t index, size_t elements) {
    buffers_[{tensor, index}].assign(elements, -99.0f);
  }
  absl::StatusOr<absl::Span<float>> Place(uint64_t round, absl::string_view tensor,
                                          uint64_t chunk_index, Dtype dtype,
                                          size_t bytes) override {
    ++calls;
    last_round = round;
    if (!error.ok()) return error;
    auto it = buffers_.find({std::string(tensor), chunk_index});
    if (it == buffers_.end() || WireBytes(dtype, it->second.size()) != bytes) {
      return absl::Span<float>();
    }
    return absl::MakeSpan(it->second);
  }
  const std::vector<float>& Values(const std::string& tensor, uint64_t index) {
    return buffers_[{tensor, index}];
  }
  int calls = 0;
  uint64_t last_round = 0;
  absl::Status error;

 private:
  std::map<std::pair<std::string, uint64_t>, std::vector<float>> buffers_;
};

// What reading `bytes` (one slice) gives, `placer` placing the values.
absl::Status ReadStatus(const std::string& bytes, TestPlacer* placer) {
  grpc::Slice slice(bytes);
  grpc::ByteBuffer buffer(&slice, 1);
  std::vector<v1::Chunk> unplaced;
  return ReadExchangeResponse(&buffer, placer, &unplaced).status();
}

std::vector<float> Decoded(Dtype dtype, const std::string& bytes, size_t n) {
  std::vector<float> out(n);
  EXPECT_TRUE(DecodeValues(dtype, bytes, absl::MakeSpan(out)).ok());
  return out;
}

TEST(ExchangeCodecReadTest, ValuesGoStraightToWhereThePlacerPutsThem) {
  SampleResponse sample;
  const std::vector<float>& small = sample.small;
  const std::vector<float>& large = sample.large;
  v1::ExchangeResponse& rest = sample.rest;
  rest.set_code(-2);  // any int32, even one no status has
  rest.set_message("m");
  std::vector<EncodedChunk>& weights = sample.weights;
  const std::string f16(weights[2].values.view()), bf16(weights[3].values.view());
  grpc::ByteBuffer bytes = EncodeExchangeResponse(rest, std::move(weights));

  TestPlacer placer;
  placer.Expect("w", 0, small.size());
  placer.Expect("w", 1, large.size());
  placer.Expect("w", 2, small.size());
  placer.Expect("v", 0, large.size());
  std::vector<v1::Chunk> unplaced;
  absl::StatusOr<ResponseFields> fields = ReadExchangeResponse(&bytes, &placer, &unplaced);
  ASSERT_TRUE(fields.ok()) << fields.status();
  EXPECT_EQ(bytes.Length(), 0u);  // consumed
  EXPECT_EQ(fields->round, 9u);
  EXPECT_TRUE(fields->last);
  EXPECT_EQ(fields->version, 123456u);
  EXPECT_EQ(fields->staleness, 3u);
  EXPECT_EQ(fields->code, -2);
  EXPECT_EQ(fields->message, "m");
  EXPECT_TRUE(unplaced.empty());
  EXPECT_EQ(placer.calls, 4);
  EXPECT_EQ(placer.last_round, 9u);
  EXPECT_EQ(placer.Values("w", 0), small);
  EXPECT_EQ(placer.Values("w", 1), large);
  EXPECT_EQ(placer.Values("w", 2), Decoded(Dtype::kFloat16, f16, small.size()));
  EXPECT_EQ(placer.Values("v", 0), Decoded(Dtype::kBfloat16, bf16, large.size()));
}

TEST(ExchangeCodecReadTest, ChunksInProtobufsOwnOrderOrNotPlacedComeWhole) {
  // protobuf writes a chunk's dtype after its values and leaves out index 0:
  // where the values go is not known when they are reached.
  v1::ExchangeResponse message;
  message.set_round(4);
  v1::Chunk* a = message.add_weights();
  a->set_tensor("w");
  a->set_dtype(v1::DTYPE_BFLOAT16);
  EncodeValues(Dtype::kBfloat16, Ramp(10, 1.0f), a->mutable_values());
  v1::Chunk* b = message.add_weights();
  b->set_tensor("w");
  b->set_chunk_index(3);
  EncodeValues(Dtype::kFloat32, Ramp(5, 1.0f), b->mutable_values());
  grpc::ByteBuffer bytes;
  SerializeMessage(message, &bytes);
  TestPlacer placer;
  placer.Expect("w", 0, 10);
  placer.Expect("w", 3, 5);
  std::vector<v1::Chunk> unplaced;
  absl::StatusOr<ResponseFields> fields = ReadExchangeResponse(&bytes, &placer, &unplaced);
  ASSERT_TRUE(fields.ok()) << fields.status();
  EXPECT_EQ(fields->round, 4u);
  EXPECT_EQ(placer.calls, 0);  // neither said its dtype before its values
  ASSERT_EQ(unplaced.size(), 2u);
  EXPECT_EQ(Canonical(unplaced[0]), Canonical(message.weights(0)));
  EXPECT_EQ(Canonical(unplaced[1]), Canonical(message.weights(1)));
}

TEST(ExchangeCodecReadTest, ChunksBeforeTheRoundAreNotPlaced) {
  std::string bytes;
  v1::ExchangeResponse chunks;
  v1::Chunk* c = chunks.add_weights();
  c->set_tensor("w");
  c->set_chunk_index(1);
  c->set_values(std::string(8, '\0'));
  v1::ExchangeResponse round;
  round.set_round(6);
  bytes = chunks.SerializeAsString() + round.SerializeAsString();  // round last
  grpc::Slice slice(bytes);
  grpc::ByteBuffer buffer(&slice, 1);
  TestPlacer placer;
  placer.Expect("w", 1, 2);
  std::vector<v1::Chunk> unplaced;
  absl::StatusOr<ResponseFields> fields = ReadExchangeResponse(&buffer, &placer, &unplaced);
  ASSERT_TRUE(fields.ok());
  EXPECT_EQ(fields->round, 6u);
  EXPECT_EQ(placer.calls, 0);
  EXPECT_EQ(unplaced.size(), 1u);
}

TEST(ExchangeCodecReadTest, ThePlacersErrorStopsTheReading) {
  std::vector<EncodedChunk> weights;
  weights.push_back(Encoded("w", 0, Dtype::kFloat32, Ramp(4, 1.0f)));
  v1::ExchangeResponse rest;
  rest.set_round(1);
  grpc::ByteBuffer bytes = EncodeExchangeResponse(rest, std::move(weights));
  TestPlacer placer;
  placer.error = absl::InternalError("shard 0: sent unrequested tensor 'w'");
  std::vector<v1::Chunk> unplaced;
  EXPECT_EQ(ReadExchangeResponse(&bytes, &placer, &unplaced).status(), placer.error);
}

TEST(ExchangeCodecReadTest, MalformedBytesAreInvalidArgument) {
  std::vector<EncodedChunk> weights;
  weights.push_back(Encoded("w", 0, Dtype::kFloat32, Ramp(1000, 1.0f)));
  v1::ExchangeResponse rest;
  rest.set_round(1);
  rest.set_message("done");
  std::string whole;
  ASSERT_TRUE(ParseMessage(EncodeExchangeResponse(rest, std::move(weights)), &rest).ok());
  whole = rest.SerializeAsString();
  for (const std::string& bad :
       {whole.substr(0, whole.size() / 2), whole.substr(0, whole.size() - 1), std::string("\xff"),
        std::string("\x12\x05\x0a\x10xy"), std::string("\x00", 1),
        // a chunk that claims 16 bytes, of which 7 arrive
        std::string("\x08\x01\x12\x10\x0a\x01w\x10\x00\x20\x00", 11)}) {
    TestPlacer placer;
    placer.Expect("w", 0, 1000);
    const absl::Status status = ReadStatus(bad, &placer);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << bad.size() << " " << status;
  }
}

TEST(ExchangeCodecReadTest, ADtypeAfterPlacedValuesThatChangesThemIsRejected) {
  // Fields of one chunk merged from three encodings: its dtype first, then
  // values placed as float16, then a second dtype.
  v1::Chunk head, values, later;
  head.set_tensor("w");
  head.set_chunk_index(1);
  head.set_dtype(v1::DTYPE_FLOAT16);
  EncodeValues(Dtype::kFloat16, Ramp(2, 1.0f), values.mutable_values());
  later.set_dtype(v1::DTYPE_BFLOAT16);
  const std::string body =
      head.SerializeAsString() + values.SerializeAsString() + later.SerializeAsString();
  ASSERT_LT(body.size(), 128u);
  v1::ExchangeResponse round;
  round.set_round(2);
  const std::string bytes =
      round.SerializeAsString() + "\x12" + std::string(1, static_cast<char>(body.size())) + body;
  TestPlacer placer;
  placer.Expect("w", 1, 2);
  const absl::Status status = ReadStatus(bytes, &placer);
  EXPECT_EQ(placer.calls, 1);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_THAT(std::string(status.message()), ::testing::HasSubstr("change where they go"));
}

}  // namespace
}  // namespace dcasgd
