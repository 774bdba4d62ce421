#ifndef DCASGD_WIRE_RAW_MESSAGE_H_
#define DCASGD_WIRE_RAW_MESSAGE_H_

// Parsing and serialising the raw request and response bytes of the
// services' raw callback methods. Every method of dcasgd-ps parses its own
// requests, so that a malformed one is INVALID_ARGUMENT with a message
// (gRPC's generated handlers answer a body they cannot parse with a bare
// UNIMPLEMENTED).

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "grpcpp/impl/codegen/proto_utils.h"
#include "grpcpp/support/byte_buffer.h"

namespace dcasgd {

// Parses a raw request; INVALID_ARGUMENT when it is not a valid `Message`.
// Consumes `bytes`.
template <typename Message>
absl::Status ParseMessage(grpc::ByteBuffer* bytes, Message* message) {
  if (!grpc::SerializationTraits<Message>::Deserialize(bytes, message).ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot parse ", message->GetTypeName(),
                     ": malformed bytes or a string field that is not valid UTF-8"));
  }
  return absl::OkStatus();
}

template <typename Message>
absl::Status ParseMessage(const grpc::ByteBuffer& bytes, Message* message) {
  grpc::ByteBuffer copy(bytes);  // shares the slices
  return ParseMessage(&copy, message);
}

template <typename Message>
void SerializeMessage(const Message& message, grpc::ByteBuffer* bytes) {
  bool own_buffer = false;
  bytes->Clear();  // the serializer requires an empty buffer
  grpc::SerializationTraits<Message>::Serialize(message, bytes, &own_buffer);
}

}  // namespace dcasgd

#endif  // DCASGD_WIRE_RAW_MESSAGE_H_
