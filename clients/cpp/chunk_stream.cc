#include "clients/cpp/chunk_stream.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "grpcpp/client_context.h"
#include "wire/chunk_values.h"
#include "wire/status.h"

namespace dcasgd {
namespace client {
namespace {

// Reads a response stream to its end into `receiver`, then finishes it. A
// bad chunk cancels the stream and is the result.
template <typename Stream>
absl::Status ReceiveAndFinish(Stream* stream, grpc::ClientContext* context, ChunkReceiver* receiver,
                              absl::string_view label, absl::Time* first_read = nullptr) {
  v1::PullResponse response;
  absl::Status accepted;
  while (stream->Read(&response)) {
    if (first_read != nullptr && *first_read == absl::InfinitePast()) *first_read = absl::Now();
    accepted = receiver->Accept(response.chunk(), response.version(), response.staleness());
    if (!accepted.ok()) {
      context->TryCancel();
      break;
    }
  }
  const grpc::Status finished = stream->Finish();
  RETURN_IF_ERROR(accepted);
  RETURN_IF_ERROR(FromGrpcCall(finished, *context, label));
  return receiver->Finish();
}

// Streams `chunks` as PushRequests and half-closes; the worker id, its
// session and the chunk count go in the first message only (the shard applies the push only
// when exactly that many chunks arrive and the stream is half-closed). A
// broken stream is left to Finish to report.
template <typename Stream>
void WriteGradients(Stream* stream, const WorkerCredentials& worker, uint64_t step,
                    uint64_t base_step, const CallTensors& tensors,
                    const std::vector<PlannedChunk>& chunks) {
  v1::PushRequest request;
  request.set_worker_id(worker.worker_id);
  request.set_session(worker.session);
  request.set_chunk_count(static_cast<uint32_t>(chunks.size()));
  request.set_step(step);
  request.set_base_step(base_step);
  request.set_wire_dtype(DtypeToProto(tensors.wire_dtype));
  v1::Chunk* gradient = request.mutable_gradient();
  gradient->set_dtype(DtypeToProto(tensors.wire_dtype));
  for (const PlannedChunk& c : chunks) {
    gradient->set_tensor(tensors.layouts[c.tensor].name);
    gradient->set_chunk_index(c.index);
    // Straight into the message's bytes, reusing the previous chunk's buffer.
    EncodeValues(tensors.wire_dtype,
                 absl::MakeConstSpan(tensors.sources[c.tensor] + c.offset, c.length),
                 gradient->mutable_values());
    if (!stream->Write(request)) return;
    request.set_worker_id(0);
    request.clear_session();
    request.set_chunk_count(0);
    request.set_step(0);
    request.set_base_step(0);
    request.set_wire_dtype(v1::DTYPE_FLOAT32);
  }
  stream->WritesDone();
}

}  // namespace

ChunkReceiver::ChunkReceiver(const CallTensors& tensors, const std::vector<PlannedChunk>& expected,
                             absl::string_view shard_label)
    : tensors_(tensors),
      shard_label_(shard_label),
      expected_count_(expected.size()),
      wanted_(tensors.layouts.size()) {
  for (size_t t = 0; t < wanted_.size(); ++t) {
    wanted_[t].assign(tensors.layouts[t].num_chunks(), 0);
  }
  for (const PlannedChunk& c : expected) wanted_[c.tensor][c.index] = 1;
}

absl::Status ChunkReceiver::Accept(const v1::Chunk& chunk, uint64_t version, uint64_t staleness) {
  absl::StatusOr<Dtype> dtype = DtypeFromProto(chunk.dtype(), "Chunk.dtype");
  if (!dtype.ok()) {
    // Named after the chunk when it is one that was asked for.
    RETURN_IF_ERROR(Find(chunk.tensor(), chunk.chunk_index()).status());
    return Error(absl::StrCat("sent chunk ", chunk.chunk_index(), " of '", chunk.tensor(),
                              "': ", dtype.status().message()));
  }
  ASSIGN_OR_RETURN(absl::Span<float> out,
                   Place(chunk.tensor(), chunk.chunk_index(), *dtype, chunk.values().size()));
  // Place checked the length: decoding cannot fail.
  RETURN_IF_ERROR(DecodeValues(*dtype, chunk.values(), out));
  version_ = std::max<uint64_t>(version_, version);
  staleness_ = std::max<uint64_t>(staleness_, staleness);
  return absl::OkStatus();
}

absl::StatusOr<size_t> ChunkReceiver::Find(absl::string_view tensor, uint64_t index) const {
  auto it = tensors_.index.find(tensor);
  if (it == tensors_.index.end()) {
    return Error(absl::StrCat("sent unrequested tensor '", tensor, "'"));
  }
  const size_t t = it->second;
  if (index >= wanted_[t].size() || wanted_[t][index] != 1) {
    return Error(absl::StrCat("sent unrequested or duplicate chunk ", index, " of '",
                              tensors_.layouts[t].name, "'"));
  }
  return t;
}

absl::StatusOr<absl::Span<float>> ChunkReceiver::Place(absl::string_view tensor,
                                                       uint64_t chunk_index, Dtype dtype,
                                                       size_t bytes) {
  ASSIGN_OR_RETURN(const size_t t, Find(tensor, chunk_index));
  const TensorLayout& layout = tensors_.layouts[t];
  const uint64_t length = layout.chunk_length(chunk_index);
  if (bytes != WireBytes(dtype, length)) {
    return Error(absl::StrCat("sent chunk ", chunk_index, " of '", layout.name, "' with ", bytes,
                              " bytes of ", NameOf(kDtypeNames, dtype), " values; expected ",
                              WireBytes(dtype, length), " (", length, " elements)"));
  }
  wanted_[t][chunk_index] = 2;
  ++received_;
  return absl::MakeSpan(tensors_.destinations[t] + layout.chunk_offset(chunk_index), length);
}

absl::Status ChunkReceiver::Finish() const {
  if (received_ == expected_count_) return absl::OkStatus();
  return Error(absl::StrCat("sent ", received_, " of ", expected_count_, " chunks"));
}

absl::Status ChunkReceiver::Error(absl::string_view what) const {
  return absl::InternalError(absl::StrCat(shard_label_, ": ", what));
}

CallTensors::CallTensors(std::vector<TensorLayout> tensor_layouts)
    : layouts(std::move(tensor_layouts)),
      sources(layouts.size(), nullptr),
      destinations(layouts.size(), nullptr) {
  for (size_t t = 0; t < layouts.size(); ++t) index.emplace(layouts[t].name, t);
}

absl::Status PullChunks(ShardSession& session, const WorkerCredentials& worker,
                        const CallTensors& tensors, const std::vector<PlannedChunk>& chunks,
                        ShardReply* reply) {
  v1::PullRequest request;
  request.set_worker_id(worker.worker_id);
  if (worker.worker_id != 0) request.set_session(worker.session);
  request.set_wire_dtype(DtypeToProto(tensors.wire_dtype));
  // Only the tensors this shard has chunks of.
  std::vector<bool> listed(tensors.layouts.size(), false);
  for (const PlannedChunk& c : chunks) {
    if (!listed[c.tensor]) request.add_tensors(tensors.layouts[c.tensor].name);
    listed[c.tensor] = true;
  }
  grpc::ClientContext context;
  session.SetDeadline(&context);
  ChunkReceiver receiver(tensors, chunks, session.label());
  auto stream = session.stub()->Pull(&context, request);
  RETURN_IF_ERROR(ReceiveAndFinish(stream.get(), &context, &receiver, session.label()));
  reply->version = receiver.version();
  return absl::OkStatus();
}

absl::Status PushChunks(ShardSession& session, const WorkerCredentials& worker, uint64_t step,
                        uint64_t base_step, const CallTensors& tensors,
                        const std::vector<PlannedChunk>& chunks, bool pull_back,
                        ShardReply* reply) {
  grpc::ClientContext context;
  session.SetDeadline(&context);
  const absl::Time start = absl::Now();
  if (!pull_back) {
    v1::PushResponse response;
    auto stream = session.stub()->Push(&context, &response);
    WriteGradients(stream.get(), worker, step, base_step, tensors, chunks);
    const absl::Time sent = absl::Now();
    RETURN_IF_ERROR(FromGrpcCall(stream->Finish(), context, session.label()));
    reply->version = response.version();
    reply->staleness = response.staleness();
    reply->send_time = sent - start;
    reply->wait_time = absl::Now() - sent;
    return absl::OkStatus();
  }
  ChunkReceiver receiver(tensors, chunks, session.label());
  auto stream = session.stub()->PushPull(&context);
  WriteGradients(stream.get(), worker, step, base_step, tensors, chunks);
  const absl::Time sent = absl::Now();
  absl::Time first_read = absl::InfinitePast();
  RETURN_IF_ERROR(
      ReceiveAndFinish(stream.get(), &context, &receiver, session.label(), &first_read));
  const absl::Time done = absl::Now();
  reply->send_time = sent - start;
  reply->wait_time = first_read - sent;
  reply->receive_time = done - first_read;
  reply->version = receiver.version();
  reply->staleness = receiver.staleness();
  return absl::OkStatus();
}

}  // namespace client
}  // namespace dcasgd
