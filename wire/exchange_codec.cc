#include "wire/exchange_codec.h"

#include <cstring>
#include <utility>

#include "base/check.h"
#include "google/protobuf/io/coded_stream.h"
#include "grpc/slice.h"
#include "grpcpp/support/slice.h"
#include "wire/chunk_values.h"

namespace dcasgd {
namespace {

using google::protobuf::io::CodedOutputStream;

uint32_t LengthDelimitedTag(int field) { return (static_cast<uint32_t>(field) << 3) | 2; }

// Bytes of a length-delimited field's tag and length.
size_t FieldHeadBytes(int field, size_t length) {
  return CodedOutputStream::VarintSize32(LengthDelimitedTag(field)) +
         CodedOutputStream::VarintSize64(length);
}

uint8_t* WriteFieldHead(int field, size_t length, uint8_t* out) {
  out = CodedOutputStream::WriteVarint32ToArray(LengthDelimitedTag(field), out);
  return CodedOutputStream::WriteVarint64ToArray(length, out);
}

// One Chunk inside an outer message: its fields but the values (encoded by
// protobuf), and the sizes of its encoding.
struct ChunkFrame {
  ChunkFrame(int outer_field, absl::string_view tensor, uint64_t chunk_index, Dtype dtype,
             size_t value_bytes_in)
      : outer(outer_field), value_bytes(value_bytes_in) {
    fields.set_tensor(std::string(tensor));
    fields.set_chunk_index(chunk_index);
    fields.set_dtype(DtypeToProto(dtype));
    // An empty `values` is left out, as protobuf leaves out an empty bytes
    // field.
    body_bytes =
        fields.ByteSizeLong() +
        (value_bytes > 0 ? FieldHeadBytes(v1::Chunk::kValuesFieldNumber, value_bytes) + value_bytes
                         : 0);
    total_bytes = FieldHeadBytes(outer, body_bytes) + body_bytes;
  }

  // Writes everything up to the values; returns where they go.
  uint8_t* WriteHead(uint8_t* out) const {
    out = WriteFieldHead(outer, body_bytes, out);
    out = fields.SerializeWithCachedSizesToArray(out);
    if (value_bytes > 0) out = WriteFieldHead(v1::Chunk::kValuesFieldNumber, value_bytes, out);
    return out;
  }

  int outer;
  v1::Chunk fields;  // tensor, chunk_index, dtype
  size_t value_bytes;
  size_t body_bytes = 0;   // the Chunk message
  size_t total_bytes = 0;  // with its tag and length in the outer message
};

// A slice that owns `values` (deleted with the slice's last reference).
grpc::Slice OwningSlice(std::string values) {
  auto* owned = new std::string(std::move(values));
  return grpc::Slice(
      owned->data(), owned->size(), [](void* p) { delete static_cast<std::string*>(p); }, owned);
}

}  // namespace

grpc::ByteBuffer EncodeExchangeRequest(const v1::ExchangeRequest& head,
                                       absl::Span<const OutgoingChunk> gradients) {
  const size_t head_bytes = head.ByteSizeLong();
  std::vector<ChunkFrame> frames;
  frames.reserve(gradients.size());
  size_t total = head_bytes;
  for (const OutgoingChunk& g : gradients) {
    frames.emplace_back(v1::ExchangeRequest::kGradientsFieldNumber, g.tensor, g.chunk_index,
                        g.dtype, WireBytes(g.dtype, g.values.size()));
    total += frames.back().total_bytes;
  }
  grpc_slice raw = grpc_slice_malloc(total);
  uint8_t* out = GRPC_SLICE_START_PTR(raw);
  out = head.SerializeWithCachedSizesToArray(out);
  for (size_t i = 0; i < gradients.size(); ++i) {
    out = frames[i].WriteHead(out);
    EncodeValuesTo(gradients[i].dtype, gradients[i].values, reinterpret_cast<char*>(out));
    out += frames[i].value_bytes;
  }
  DCASGD_CHECK(out == GRPC_SLICE_END_PTR(raw));
  grpc::Slice slice(raw, grpc::Slice::STEAL_REF);
  return grpc::ByteBuffer(&slice, 1);
}

grpc::ByteBuffer EncodeExchangeResponse(const v1::ExchangeResponse& rest,
                                        std::vector<EncodedChunk> weights) {
  const size_t rest_bytes = rest.ByteSizeLong();
  std::vector<ChunkFrame> frames;
  frames.reserve(weights.size());
  for (const EncodedChunk& w : weights) {
    frames.emplace_back(v1::ExchangeResponse::kWeightsFieldNumber, w.tensor, w.chunk_index, w.dtype,
                        w.values.size());
  }
  const auto owns_slice = [&](size_t i) { return weights[i].values.size() >= kOwnSliceBytes; };
  // Segments of copied bytes: `rest`'s fields (in the first), then chunks up
  // to and including the head of the next chunk whose values get a slice of
  // their own, which follows the segment.
  std::vector<grpc::Slice> slices;
  size_t begin = 0;
  bool first = true;
  while (first || begin < weights.size()) {
    size_t bytes = first ? rest_bytes : 0;
    size_t end = begin;
    bool owned_last = false;
    while (end < weights.size() && !owned_last) {
      owned_last = owns_slice(end);
      bytes += frames[end].total_bytes - (owned_last ? frames[end].value_bytes : 0);
      ++end;
    }
    grpc_slice raw = grpc_slice_malloc(bytes);
    uint8_t* out = GRPC_SLICE_START_PTR(raw);
    if (first) out = rest.SerializeWithCachedSizesToArray(out);
    for (size_t i = begin; i < end; ++i) {
      out = frames[i].WriteHead(out);
      if (owned_last && i + 1 == end) break;
      if (frames[i].value_bytes > 0)
        std::memcpy(out, weights[i].values.data(), frames[i].value_bytes);
      out += frames[i].value_bytes;
    }
    DCASGD_CHECK(out == GRPC_SLICE_END_PTR(raw));
    slices.emplace_back(raw, grpc::Slice::STEAL_REF);
    if (owned_last) slices.push_back(OwningSlice(std::move(weights[end - 1].values)));
    begin = end;
    first = false;
  }
  return grpc::ByteBuffer(slices.data(), slices.size());
}

}  // namespace dcasgd
