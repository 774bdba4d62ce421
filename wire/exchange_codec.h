#ifndef DCASGD_WIRE_EXCHANGE_CODEC_H_
#define DCASGD_WIRE_EXCHANGE_CODEC_H_

// The messages of an Exchange stream (ps.proto ExchangeRequest and
// ExchangeResponse) written straight into gRPC byte buffers, so that chunk
// values cross between the model, the store and the wire with as few copies
// as the transport allows:
// - a request's values are encoded from the caller's float32 buffers into
//   the message's one slice (one copy, where building the message and
//   serialising it cost three: zero-filling its bytes, filling them, and
//   copying them into the serialised message);
// - a response's large values travel in slices that own the strings the
//   store filled (no copy before the transport's own).
// The bytes are the protobuf encoding of the same message (a message's
// fields followed by its repeated chunks, which a protobuf parser merges), so
// any client or shard, in any language, parses them. Thread-safe (pure
// functions).

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "base/shared_bytes.h"
#include "core/dtype.h"
#include "dcasgd/v1/ps.pb.h"
#include "grpcpp/support/byte_buffer.h"

namespace dcasgd {

// A chunk to send, its values still float32 (the caller's buffer).
struct OutgoingChunk {
  absl::string_view tensor;
  uint64_t chunk_index = 0;
  Dtype dtype = Dtype::kFloat32;  // the wire dtype its values are encoded in
  absl::Span<const float> values;
};

// `head` (the message's fields but its gradients: round, header) followed by
// `gradients` as its Chunk messages, in one slice. The result parses as
// `head` with `gradients` appended.
grpc::ByteBuffer EncodeExchangeRequest(const v1::ExchangeRequest& head,
                                       absl::Span<const OutgoingChunk> gradients);

// A chunk to answer with, its values already in their wire dtype.
struct EncodedChunk {
  std::string tensor;
  uint64_t chunk_index = 0;
  Dtype dtype = Dtype::kFloat32;
  SharedBytes values;  // may be the shard's backup too: only read
};

// Values of at least this many bytes travel in a slice of their own that
// holds a reference to their block; smaller ones are copied beside the
// message's fields.
inline constexpr size_t kOwnSliceBytes = size_t{16} << 10;

// `rest` (the response's fields but its weights) followed by `weights`, whose
// blocks the message then refers to. The result parses as `rest` with `weights` appended.
grpc::ByteBuffer EncodeExchangeResponse(const v1::ExchangeResponse& rest,
                                        std::vector<EncodedChunk> weights);

// An ExchangeResponse's fields other than its weights.
struct ResponseFields {
  uint64_t round = 0;
  bool last = false;
  uint64_t version = 0;
  uint64_t staleness = 0;
  int32_t code = 0;
  std::string message;
};

// Decides where the values of each weights chunk of a response go, as they
// are reached in the bytes.
class ChunkPlacer {
 public:
  virtual ~ChunkPlacer() = default;
  // The values of chunk `chunk_index` of `tensor`, `bytes` long in `dtype`,
  // of round `round` (0 if the response has not said yet). Returns the
  // floats they are decoded into (exactly as many as they hold), or an
  // empty span to get them as bytes instead (ReadExchangeResponse's
  // `unplaced`); an error stops the reading.
  virtual absl::StatusOr<absl::Span<float>> Place(uint64_t round, absl::string_view tensor,
                                                  uint64_t chunk_index, Dtype dtype,
                                                  size_t bytes) = 0;
};

// Reads an ExchangeResponse from `bytes` (consumed), decoding each weights
// chunk's values straight from the buffer into where `placer` puts them
// (one copy, where parsing the message and then decoding it cost two). A
// chunk whose values come before its name, index or dtype (any order is
// valid protobuf), or that `placer` does not place, is returned whole in
// `unplaced`. INVALID_ARGUMENT for bytes that are not an ExchangeResponse,
// or whose dtype, given after values already placed, changes their meaning;
// `placer`'s errors as they are.
absl::StatusOr<ResponseFields> ReadExchangeResponse(grpc::ByteBuffer* bytes, ChunkPlacer* placer,
                                                    std::vector<v1::Chunk>* unplaced);

}  // namespace dcasgd

#endif  // DCASGD_WIRE_EXCHANGE_CODEC_H_
