// Test helpers for the Exchange RPC of dcasgd-ps (protos/dcasgd/v1/ps.proto):
// a push written as push messages turned into one round, and one round sent
// on its own stream. Shared by the service, hostile, session and security
// tests, which all send the same push both ways.
#ifndef DCASGD_TESTS_TESTING_EXCHANGE_ROUND_H_
#define DCASGD_TESTS_TESTING_EXCHANGE_ROUND_H_

#include <cstdint>
#include <map>
#include <vector>

#include "dcasgd/v1/ps.grpc.pb.h"
#include "grpcpp/client_context.h"
#include "grpcpp/support/status.h"
#include "wire/chunk_values.h"
#include "wire/exchange_codec.h"

namespace dcasgd {
namespace testing {

// The message EncodeExchangeResponse(rest, weights) encodes, built by
// protobuf (wire/exchange_codec.h).
inline v1::ExchangeResponse ResponseOf(v1::ExchangeResponse rest,
                                       const std::vector<EncodedChunk>& weights) {
  for (const EncodedChunk& w : weights) {
    v1::Chunk* chunk = rest.add_weights();
    chunk->set_tensor(w.tensor);
    chunk->set_chunk_index(w.chunk_index);
    chunk->set_dtype(DtypeToProto(w.dtype));
    chunk->set_values(w.values.data(), w.values.size());
  }
  return rest;
}

// One message of round `round` carrying every gradient of `messages`, the
// messages of one Push stream. With `header`, the round's header (worker id,
// session, step, chunk count, wire dtype, base) is the first message's; without,
// the message is a later one of its round.
inline v1::ExchangeRequest RoundOf(uint64_t round, const std::vector<v1::PushRequest>& messages,
                                   bool pull_back, bool header = true) {
  v1::ExchangeRequest request;
  request.set_round(round);
  if (messages.empty()) return request;
  const v1::PushRequest& first = messages.front();
  if (header) {
    v1::RoundHeader* h = request.mutable_header();
    h->set_worker_id(first.worker_id());
    h->set_session(first.session());
    h->set_step(first.step());
    h->set_chunk_count(first.chunk_count());
    h->set_pull_back(pull_back);
    h->set_wire_dtype(first.wire_dtype());
    h->set_base_step(first.base_step());
  }
  for (const v1::PushRequest& m : messages) *request.add_gradients() = m.gradient();
  return request;
}

// What one Exchange stream returned.
struct ExchangeResult {
  grpc::Status status;  // of the stream
  std::vector<v1::ExchangeResponse> messages;
  std::map<uint64_t, v1::ExchangeResponse> last;  // each round's final answer

  // The stream's status when it failed, else the answer of round `round`
  // (UNKNOWN when that round got no final answer).
  grpc::Status RoundStatus(uint64_t round) const {
    if (!status.ok()) return status;
    const auto it = last.find(round);
    if (it == last.end()) return grpc::Status(grpc::StatusCode::UNKNOWN, "no final answer");
    return grpc::Status(static_cast<grpc::StatusCode>(it->second.code()), it->second.message());
  }
};

// Writes `requests` on one Exchange stream of `context`, half-closes and
// reads to the end.
inline ExchangeResult ExchangeAll(v1::ParameterShard::StubInterface* stub,
                                  grpc::ClientContext* context,
                                  const std::vector<v1::ExchangeRequest>& requests) {
  auto stream = stub->Exchange(context);
  for (const v1::ExchangeRequest& r : requests) {
    if (!stream->Write(r)) break;  // the shard already ended the stream
  }
  stream->WritesDone();
  ExchangeResult result;
  v1::ExchangeResponse message;
  while (stream->Read(&message)) {
    result.messages.push_back(message);
    if (message.last()) result.last[message.round()] = message;
  }
  result.status = stream->Finish();
  return result;
}

}  // namespace testing
}  // namespace dcasgd

#endif  // DCASGD_TESTS_TESTING_EXCHANGE_ROUND_H_
