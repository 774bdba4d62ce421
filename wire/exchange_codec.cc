#include "wire/exchange_codec.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/check.h"
#include "base/status_macros.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/wire_format_lite.h"
#include "grpc/slice.h"
#include "grpcpp/support/proto_buffer_reader.h"
#include "grpcpp/support/slice.h"
#include "wire/chunk_values.h"

namespace dcasgd {
namespace {

using google::protobuf::internal::WireFormatLite;
using google::protobuf::io::CodedInputStream;
using google::protobuf::io::CodedOutputStream;

uint32_t LengthDelimitedTag(int field) {
  return WireFormatLite::MakeTag(field, WireFormatLite::WIRETYPE_LENGTH_DELIMITED);
}
uint32_t VarintTag(int field) {
  return WireFormatLite::MakeTag(field, WireFormatLite::WIRETYPE_VARINT);
}

// Bytes of a length-delimited field's tag and length.
size_t FieldHeadBytes(int field, size_t length) {
  return CodedOutputStream::VarintSize32(LengthDelimitedTag(field)) +
         CodedOutputStream::VarintSize64(length);
}

uint8_t* WriteFieldHead(int field, size_t length, uint8_t* out) {
  out = CodedOutputStream::WriteVarint32ToArray(LengthDelimitedTag(field), out);
  return CodedOutputStream::WriteVarint64ToArray(length, out);
}

// One Chunk inside an outer message, and the sizes of its encoding. Its
// tensor, chunk_index and dtype are written first, defaults too, so that a
// reader knows where the values go when it reaches them
// (ReadExchangeResponse); an empty `values` is left out, as protobuf leaves
// out an empty bytes field.
struct ChunkFrame {
  ChunkFrame(int outer_field, absl::string_view tensor_in, uint64_t chunk_index_in, Dtype dtype,
             size_t value_bytes_in)
      : outer(outer_field),
        tensor(tensor_in),
        chunk_index(chunk_index_in),
        dtype_number(static_cast<uint32_t>(DtypeToProto(dtype))),
        value_bytes(value_bytes_in) {
    body_bytes =
        FieldHeadBytes(v1::Chunk::kTensorFieldNumber, tensor.size()) + tensor.size() +
        CodedOutputStream::VarintSize32(VarintTag(v1::Chunk::kChunkIndexFieldNumber)) +
        CodedOutputStream::VarintSize64(chunk_index) +
        CodedOutputStream::VarintSize32(VarintTag(v1::Chunk::kDtypeFieldNumber)) +
        CodedOutputStream::VarintSize32(dtype_number) +
        (value_bytes > 0 ? FieldHeadBytes(v1::Chunk::kValuesFieldNumber, value_bytes) + value_bytes
                         : 0);
    total_bytes = FieldHeadBytes(outer, body_bytes) + body_bytes;
  }

  // Writes everything up to the values; returns where they go.
  uint8_t* WriteHead(uint8_t* out) const {
    out = WriteFieldHead(outer, body_bytes, out);
    out = WriteFieldHead(v1::Chunk::kTensorFieldNumber, tensor.size(), out);
    if (!tensor.empty()) std::memcpy(out, tensor.data(), tensor.size());
    out += tensor.size();
    out =
        CodedOutputStream::WriteVarint32ToArray(VarintTag(v1::Chunk::kChunkIndexFieldNumber), out);
    out = CodedOutputStream::WriteVarint64ToArray(chunk_index, out);
    out = CodedOutputStream::WriteVarint32ToArray(VarintTag(v1::Chunk::kDtypeFieldNumber), out);
    out = CodedOutputStream::WriteVarint32ToArray(dtype_number, out);
    if (value_bytes > 0) out = WriteFieldHead(v1::Chunk::kValuesFieldNumber, value_bytes, out);
    return out;
  }

  int outer;
  absl::string_view tensor;  // the caller's string, alive while the frame is
  uint64_t chunk_index;
  uint32_t dtype_number;  // ps.proto Dtype
  size_t value_bytes;
  size_t body_bytes = 0;   // the Chunk message
  size_t total_bytes = 0;  // with its tag and length in the outer message
};

// A slice of `values` that holds a reference to their block (dropped with
// the slice's last reference).
grpc::Slice OwningSlice(const SharedBytes& values) {
  auto* owner = new std::shared_ptr<const void>(values.owner());
  return grpc::Slice(
      const_cast<char*>(values.data()), values.size(),
      [](void* p) { delete static_cast<std::shared_ptr<const void>*>(p); }, owner);
}

absl::Status Malformed(absl::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrCat("cannot parse dcasgd.v1.ExchangeResponse: ", what));
}

bool IsVarint(uint32_t tag) {
  return WireFormatLite::GetTagWireType(tag) == WireFormatLite::WIRETYPE_VARINT;
}
bool IsLengthDelimited(uint32_t tag) {
  return WireFormatLite::GetTagWireType(tag) == WireFormatLite::WIRETYPE_LENGTH_DELIMITED;
}

// Reads values of `dtype` from `in` into `out` (exactly as many as it holds).
bool ReadValues(CodedInputStream* in, Dtype dtype, absl::Span<float> out) {
  if (dtype == Dtype::kFloat32) {
    return out.empty() || in->ReadRaw(out.data(), static_cast<int>(out.size() * sizeof(float)));
  }
  std::array<uint16_t, 2048> block;
  for (size_t i = 0; i < out.size(); i += block.size()) {
    const size_t n = std::min(block.size(), out.size() - i);
    if (!in->ReadRaw(block.data(), static_cast<int>(n * sizeof(uint16_t)))) return false;
    FloatFrom16(dtype, absl::MakeConstSpan(block.data(), n), out.subspan(i, n));
  }
  return true;
}

// One Chunk of a response, `in` limited to it: its values placed when its
// tensor, index and dtype came first, else kept in `unplaced`.
absl::Status ReadChunk(CodedInputStream* in, uint64_t round, ChunkPlacer* placer,
                       std::vector<v1::Chunk>* unplaced) {
  v1::Chunk chunk;
  bool seen_tensor = false, seen_index = false, seen_dtype = false, placed = false;
  const auto changed_after_placing = [&](bool changed) {
    return placed && changed ? Malformed("a chunk's fields after its values change where they go")
                             : absl::OkStatus();
  };
  for (uint32_t tag = in->ReadTag(); tag != 0; tag = in->ReadTag()) {
    const int field = WireFormatLite::GetTagFieldNumber(tag);
    if (field == v1::Chunk::kTensorFieldNumber && IsLengthDelimited(tag)) {
      std::string tensor;
      if (!WireFormatLite::ReadString(in, &tensor)) return Malformed("truncated tensor name");
      RETURN_IF_ERROR(changed_after_placing(tensor != chunk.tensor()));
      chunk.set_tensor(std::move(tensor));
      seen_tensor = true;
    } else if (field == v1::Chunk::kChunkIndexFieldNumber && IsVarint(tag)) {
      uint64_t index = 0;
      if (!in->ReadVarint64(&index)) return Malformed("truncated chunk_index");
      RETURN_IF_ERROR(changed_after_placing(index != chunk.chunk_index()));
      chunk.set_chunk_index(index);
      seen_index = true;
    } else if (field == v1::Chunk::kDtypeFieldNumber && IsVarint(tag)) {
      uint64_t number = 0;
      if (!in->ReadVarint64(&number)) return Malformed("truncated dtype");
      const auto dtype = static_cast<v1::Dtype>(static_cast<int32_t>(number));
      RETURN_IF_ERROR(changed_after_placing(dtype != chunk.dtype()));
      chunk.set_dtype(dtype);
      seen_dtype = true;
    } else if (field == v1::Chunk::kValuesFieldNumber && IsLengthDelimited(tag)) {
      uint32_t bytes = 0;
      if (!in->ReadVarint32(&bytes)) return Malformed("truncated values");
      RETURN_IF_ERROR(changed_after_placing(true));
      absl::StatusOr<Dtype> dtype = DtypeFromProto(chunk.dtype(), "Chunk.dtype");
      if (seen_tensor && seen_index && seen_dtype && round != 0 && dtype.ok() &&
          chunk.values().empty()) {
        ASSIGN_OR_RETURN(absl::Span<float> out,
                         placer->Place(round, chunk.tensor(), chunk.chunk_index(), *dtype, bytes));
        if (!out.empty()) {
          DCASGD_CHECK(WireBytes(*dtype, out.size()) == bytes);
          if (!ReadValues(in, *dtype, out)) return Malformed("truncated values");
          placed = true;
          continue;
        }
      }
      if (!in->ReadString(chunk.mutable_values(), static_cast<int>(bytes))) {
        return Malformed("truncated values");
      }
    } else if (!WireFormatLite::SkipField(in, tag)) {
      return Malformed("a field of a chunk");
    }
  }
  if (!in->ConsumedEntireMessage()) return Malformed("a bad tag in a chunk");
  if (!placed) unplaced->push_back(std::move(chunk));
  return absl::OkStatus();
}

absl::StatusOr<ResponseFields> ReadResponse(grpc::ByteBuffer* bytes, ChunkPlacer* placer,
                                            std::vector<v1::Chunk>* unplaced) {
  grpc::ProtoBufferReader reader(bytes);
  if (!reader.status().ok()) return Malformed("unreadable bytes");
  CodedInputStream in(&reader);
  ResponseFields fields;
  uint64_t number = 0;
  for (uint32_t tag = in.ReadTag(); tag != 0; tag = in.ReadTag()) {
    const int field = WireFormatLite::GetTagFieldNumber(tag);
    if (field == v1::ExchangeResponse::kWeightsFieldNumber && IsLengthDelimited(tag)) {
      uint32_t length = 0;
      if (!in.ReadVarint32(&length)) return Malformed("truncated weights");
      const int start = in.CurrentPosition();
      const CodedInputStream::Limit limit = in.PushLimit(static_cast<int>(length));
      RETURN_IF_ERROR(ReadChunk(&in, fields.round, placer, unplaced));
      in.PopLimit(limit);
      // A limit past the end of the bytes ends the chunk where they end:
      // that is a truncated message, not a shorter chunk.
      if (static_cast<int64_t>(in.CurrentPosition()) - start != static_cast<int64_t>(length)) {
        return Malformed("truncated weights");
      }
    } else if (field == v1::ExchangeResponse::kMessageFieldNumber && IsLengthDelimited(tag)) {
      if (!WireFormatLite::ReadString(&in, &fields.message)) return Malformed("truncated message");
    } else if (IsVarint(tag) && (field == v1::ExchangeResponse::kRoundFieldNumber ||
                                 field == v1::ExchangeResponse::kLastFieldNumber ||
                                 field == v1::ExchangeResponse::kVersionFieldNumber ||
                                 field == v1::ExchangeResponse::kStalenessFieldNumber ||
                                 field == v1::ExchangeResponse::kCodeFieldNumber)) {
      if (!in.ReadVarint64(&number)) return Malformed("a truncated number");
      switch (field) {
        case v1::ExchangeResponse::kRoundFieldNumber:
          fields.round = number;
          break;
        case v1::ExchangeResponse::kLastFieldNumber:
          fields.last = number != 0;
          break;
        case v1::ExchangeResponse::kVersionFieldNumber:
          fields.version = number;
          break;
        case v1::ExchangeResponse::kStalenessFieldNumber:
          fields.staleness = number;
          break;
        default:  // kCodeFieldNumber: an int32 (a negative one takes ten bytes)
          fields.code = static_cast<int32_t>(number);
      }
    } else if (!WireFormatLite::SkipField(&in, tag)) {
      return Malformed("a field");
    }
  }
  if (!in.ConsumedEntireMessage()) return Malformed("a bad tag");
  return fields;
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
    if (owned_last) slices.push_back(OwningSlice(weights[end - 1].values));
    begin = end;
    first = false;
  }
  return grpc::ByteBuffer(slices.data(), slices.size());
}

absl::StatusOr<ResponseFields> ReadExchangeResponse(grpc::ByteBuffer* bytes, ChunkPlacer* placer,
                                                    std::vector<v1::Chunk>* unplaced) {
  absl::StatusOr<ResponseFields> fields = ReadResponse(bytes, placer, unplaced);
  bytes->Clear();  // its slices go now, not with the next message
  return fields;
}

}  // namespace dcasgd
