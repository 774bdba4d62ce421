// Fuzz target: an Exchange answer from a shard, as the C++ client reads it
// (wire/exchange_codec.h ReadExchangeResponse): arbitrary bytes, cut into
// gRPC slices at places the input chooses, with a placer that puts a few
// expected chunks into buffers of their own, as the client puts them into a
// caller's tensors.
//
// Checks: no crash, read past a slice or undefined behaviour, and nothing
// written outside the placed buffers (AddressSanitizer); an error is
// INVALID_ARGUMENT with a message; bytes it reads are a protobuf
// ExchangeResponse whose fields and chunks it reports as protobuf parses
// them: the fields agree, the chunks it places plus those it returns whole
// are the message's weights, and placed values are the chunk's values decoded.
//
// Input: a byte giving the number of cuts (0-3), that many bytes placing
// them, then the message bytes.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/slice.h"
#include "tests/fuzz/fuzz_input.h"
#include "wire/chunk_values.h"
#include "wire/exchange_codec.h"

namespace dcasgd::fuzz {
namespace {

// Chunks ("w", 0..3) of 4 floats and ("b", 0) of 1 float are expected.
class Placer : public ChunkPlacer {
 public:
  Placer() {
    for (uint64_t i = 0; i < 4; ++i) buffers_[{"w", i}].assign(4, 0.0f);
    buffers_[{"b", 0}].assign(1, 0.0f);
  }
  absl::StatusOr<absl::Span<float>> Place(uint64_t /*round*/, absl::string_view tensor,
                                          uint64_t chunk_index, Dtype dtype,
                                          size_t bytes) override {
    auto it = buffers_.find({std::string(tensor), chunk_index});
    if (it == buffers_.end() || placed_.count(it->first) > 0) return absl::Span<float>();
    if (WireBytes(dtype, it->second.size()) != bytes) return absl::Span<float>();
    placed_[it->first] = dtype;
    return absl::MakeSpan(it->second);
  }
  std::map<std::pair<std::string, uint64_t>, std::vector<float>> buffers_;
  std::map<std::pair<std::string, uint64_t>, Dtype> placed_;
};

void Run(const uint8_t* data, size_t size) {
  FuzzInput in(data, size);
  const int cuts = in.Byte() % 4;
  std::vector<uint8_t> at;
  for (int i = 0; i < cuts; ++i) at.push_back(in.Byte());
  const std::string bytes(in.Rest());
  std::vector<size_t> offsets;
  for (uint8_t a : at) offsets.push_back(bytes.empty() ? 0 : a % (bytes.size() + 1));
  offsets.push_back(0);
  offsets.push_back(bytes.size());
  std::sort(offsets.begin(), offsets.end());
  std::vector<grpc::Slice> slices;
  for (size_t i = 0; i + 1 < offsets.size(); ++i) {
    slices.emplace_back(bytes.data() + offsets[i], offsets[i + 1] - offsets[i]);
  }
  grpc::ByteBuffer buffer(slices.data(), slices.size());

  Placer placer;
  std::vector<v1::Chunk> unplaced;
  absl::StatusOr<ResponseFields> fields = ReadExchangeResponse(&buffer, &placer, &unplaced);
  if (!fields.ok()) {
    if (!absl::IsInvalidArgument(fields.status()) || fields.status().message().empty()) {
      Fail("a reply that cannot be read is not INVALID_ARGUMENT with a message", fields.status());
    }
    return;
  }
  // Strings protobuf checks as UTF-8 (proto3 `string`) the reader takes as
  // bytes: compare only where protobuf parses too.
  v1::ExchangeResponse parsed;
  if (!parsed.ParseFromString(bytes)) return;
  if (fields->round != parsed.round() || fields->last != parsed.last() ||
      fields->version != parsed.version() || fields->staleness != parsed.staleness() ||
      fields->code != parsed.code() || fields->message != parsed.message()) {
    Fail("the reader's fields differ from protobuf's");
  }
  if (placer.placed_.size() + unplaced.size() != static_cast<size_t>(parsed.weights_size())) {
    Fail("placed and whole chunks are not the message's weights");
  }
  // Each placed chunk is one of the message's chunks of its name and index
  // (the others come whole), decoded bit for bit.
  for (const auto& placed : placer.placed_) {
    const std::pair<std::string, uint64_t>& key = placed.first;
    const Dtype dtype = placed.second;
    size_t occurrences = 0;
    bool matches = false;
    for (const v1::Chunk& chunk : parsed.weights()) {
      if (chunk.tensor() != key.first || chunk.chunk_index() != key.second) continue;
      ++occurrences;
      const std::vector<float>& got = placer.buffers_[key];
      std::vector<float> want(got.size());
      matches =
          matches || (static_cast<int>(chunk.dtype()) == static_cast<int>(DtypeToProto(dtype)) &&
                      DecodeValues(dtype, chunk.values(), absl::MakeSpan(want)).ok() &&
                      std::memcmp(want.data(), got.data(), got.size() * sizeof(float)) == 0);
    }
    const size_t whole = std::count_if(unplaced.begin(), unplaced.end(), [&](const v1::Chunk& c) {
      return c.tensor() == key.first && c.chunk_index() == key.second;
    });
    if (!matches) Fail("a placed chunk's values are not those of a chunk protobuf reads");
    if (occurrences != whole + 1) Fail("a chunk was placed twice or lost");
  }
}

}  // namespace
}  // namespace dcasgd::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  dcasgd::fuzz::Run(data, size);
  return 0;
}
