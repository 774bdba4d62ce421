// The fixture of the in-process dcasgd-ps service tests (ps_service_test.cc,
// ps_exchange_test.cc): a real loopback gRPC server driven with the raw
// generated stub.
#ifndef DCASGD_TESTS_PS_PS_SERVICE_FIXTURE_H_
#define DCASGD_TESTS_PS_PS_SERVICE_FIXTURE_H_

#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "core/dtype.h"
#include "dcasgd/v1/ps.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "services/ps/ps_server.h"
#include "tests/testing/exchange_round.h"
#include "tests/testing/float_bytes.h"
#include "tests/testing/ps_process.h"

namespace dcasgd {
namespace ps_test {

inline constexpr float kLr = 0.1f;

using testing::Bytes;
using testing::Floats;

inline v1::PushRequest Gradient(uint64_t worker, const std::string& tensor, uint64_t chunk,
                                const std::vector<float>& values) {
  v1::PushRequest request;
  request.set_worker_id(worker);
  request.mutable_gradient()->set_tensor(tensor);
  request.mutable_gradient()->set_chunk_index(chunk);
  request.mutable_gradient()->set_values(Bytes(values));
  return request;
}

using testing::ExchangeResult;

// A gradient chunk encoded in a 16-bit `dtype` (rounded to nearest even).
inline v1::PushRequest Gradient16(uint64_t worker, const std::string& tensor, uint64_t chunk,
                                  Dtype dtype, const std::vector<float>& values) {
  v1::PushRequest request = Gradient(worker, tensor, chunk, {});
  std::string bytes(values.size() * 2, '\0');
  for (size_t i = 0; i < values.size(); ++i) {
    const uint16_t bits = FloatToBits16(dtype, values[i]);
    std::memcpy(bytes.data() + 2 * i, &bits, 2);
  }
  request.mutable_gradient()->set_values(bytes);
  request.mutable_gradient()->set_dtype(dtype == Dtype::kBfloat16 ? v1::DTYPE_BFLOAT16
                                                                  : v1::DTYPE_FLOAT16);
  return request;
}

// A chunk's values as float32, decoded from its Chunk.dtype.
inline std::vector<float> Decoded(const v1::Chunk& chunk) {
  if (chunk.dtype() == v1::DTYPE_FLOAT32) return Floats(chunk.values());
  const Dtype dtype = chunk.dtype() == v1::DTYPE_BFLOAT16 ? Dtype::kBfloat16 : Dtype::kFloat16;
  std::vector<float> values(chunk.values().size() / 2);
  for (size_t i = 0; i < values.size(); ++i) {
    uint16_t bits;
    std::memcpy(&bits, chunk.values().data() + 2 * i, 2);
    values[i] = FloatFromBits16(dtype, bits);
  }
  return values;
}

struct PullResult {
  grpc::Status status;
  std::vector<v1::PullResponse> messages;
};

// Starts an in-process shard with `args` (no environment variables).
inline absl::StatusOr<std::unique_ptr<PsServer>> StartInProcess(
    const std::vector<std::string>& args) {
  absl::StatusOr<PsOptions> options =
      ParsePsOptions(args, [](const std::string&) { return std::optional<std::string>(); });
  if (!options.ok()) return options.status();
  return PsServer::Start(*options);
}

inline std::unique_ptr<v1::ParameterShard::Stub> StubFor(const PsServer& server) {
  return v1::ParameterShard::NewStub(
      grpc::CreateChannel(server.local_address(), grpc::InsecureChannelCredentials()));
}

// A shard of one: tensor "w" (10 elements, chunks of 4 -> 3 chunks, all
// ones) declared; DC-ASGD-c, so a push right after the pushing worker's own
// pull is plain SGD (w == w_bak), which gives exact expected values.
class PsServiceTest : public ::testing::Test {
 protected:
  void SetUp() override { StartServer({}); }

  void StartServer(std::vector<std::string> extra) {
    absl::StatusOr<std::string> dir = testing::MakeTempDir("ps-service-test");
    ASSERT_TRUE(dir.ok()) << dir.status();
    dir_ = *dir;
    std::vector<std::string> args = {
        "--listen=127.0.0.1:0",   "--metrics_address=",
        "--update_rule=dcasgd-c", "--lr=0.1",
        "--max_push_bytes=64",    "--checkpoint_dir=" + dir_ + "/ckpt"};
    args.insert(args.end(), extra.begin(), extra.end());
    absl::StatusOr<std::unique_ptr<PsServer>> server = StartInProcess(args);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    channel_ = grpc::CreateChannel(server_->local_address(), grpc::InsecureChannelCredentials());
    stub_ = v1::ParameterShard::NewStub(channel_);

    v1::DeclareTensorsRequest declare;
    v1::TensorSpec* spec = declare.add_tensors();
    spec->set_name("w");
    spec->add_shape(10);
    spec->set_chunk_elements(4);
    spec->mutable_init()->mutable_constant()->set_value(1.0f);
    v1::DeclareTensorsResponse declared;
    grpc::ClientContext context;
    ASSERT_TRUE(stub_->DeclareTensors(&context, declare, &declared).ok());
  }

  void TearDown() override {
    stub_.reset();
    server_.reset();
    testing::RemoveTree(dir_);
  }

  uint64_t Join(const std::string& name) {
    v1::JoinRequest request;
    request.set_worker_name(name);
    v1::JoinResponse response;
    grpc::ClientContext context;
    grpc::Status status = stub_->Join(&context, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    sessions_[response.worker_id()] = response.session();
    return response.worker_id();
  }

  // The session Join gave `worker` (empty for one this fixture never joined).
  std::string SessionOf(uint64_t worker) const {
    auto it = sessions_.find(worker);
    return it == sessions_.end() ? std::string() : it->second;
  }

  PullResult Pull(uint64_t worker, std::vector<std::string> tensors = {},
                  v1::Dtype wire_dtype = v1::DTYPE_FLOAT32) {
    v1::PullRequest request;
    request.set_worker_id(worker);
    request.set_session(SessionOf(worker));
    request.set_wire_dtype(wire_dtype);
    for (const std::string& t : tensors) request.add_tensors(t);
    grpc::ClientContext context;
    auto reader = stub_->Pull(&context, request);
    PullResult result;
    v1::PullResponse message;
    while (reader->Read(&message)) result.messages.push_back(message);
    result.status = reader->Finish();
    return result;
  }

  // The whole tensor "w" as an evaluator sees it (no backup recorded).
  std::vector<float> Weights() {
    PullResult pulled = Pull(0, {"w"});
    EXPECT_TRUE(pulled.status.ok()) << pulled.status.error_message();
    std::map<uint64_t, std::vector<float>> chunks;
    for (const auto& m : pulled.messages)
      chunks[m.chunk().chunk_index()] = Floats(m.chunk().values());
    std::vector<float> all;
    for (const auto& [index, values] : chunks) all.insert(all.end(), values.begin(), values.end());
    return all;
  }

  // `messages` with the first one announcing `announce` chunks, or (-1) as
  // many as there are, unless it already announces some; and carrying its
  // worker's session.
  std::vector<v1::PushRequest> Announced(std::vector<v1::PushRequest> messages,
                                         int announce) const {
    if (messages.empty()) return messages;
    messages[0].set_session(SessionOf(messages[0].worker_id()));
    if (announce >= 0) {
      messages[0].set_chunk_count(static_cast<uint32_t>(announce));
    } else if (messages[0].chunk_count() == 0) {
      messages[0].set_chunk_count(static_cast<uint32_t>(messages.size()));
    }
    return messages;
  }

  grpc::Status Push(const std::vector<v1::PushRequest>& unannounced, v1::PushResponse* response,
                    int announce = -1) {
    const std::vector<v1::PushRequest> messages = Announced(unannounced, announce);
    grpc::ClientContext context;
    auto writer = stub_->Push(&context, response);
    for (const auto& m : messages) {
      if (!writer->Write(m)) break;  // the server already answered
    }
    writer->WritesDone();
    return writer->Finish();
  }

  PullResult PushPull(const std::vector<v1::PushRequest>& unannounced, int announce = -1) {
    const std::vector<v1::PushRequest> messages = Announced(unannounced, announce);
    grpc::ClientContext context;
    auto stream = stub_->PushPull(&context);
    for (const auto& m : messages) {
      if (!stream->Write(m)) break;
    }
    stream->WritesDone();
    PullResult result;
    v1::PullResponse message;
    while (stream->Read(&message)) result.messages.push_back(message);
    result.status = stream->Finish();
    return result;
  }

  // One Exchange round made of a push's messages (as Push takes them,
  // announced as Announced does), every chunk in one message.
  v1::ExchangeRequest Round(uint64_t round, const std::vector<v1::PushRequest>& unannounced,
                            bool pull_back, int announce = -1) const {
    return testing::RoundOf(round, Announced(unannounced, announce), pull_back);
  }

  // One Exchange stream: writes `requests`, half-closes, reads to the end.
  ExchangeResult Exchange(const std::vector<v1::ExchangeRequest>& requests) {
    grpc::ClientContext context;
    return testing::ExchangeAll(stub_.get(), &context, requests);
  }

  v1::ShardStatus Status() {
    v1::ShardStatus status;
    grpc::ClientContext context;
    EXPECT_TRUE(stub_->GetStatus(&context, v1::GetStatusRequest(), &status).ok());
    return status;
  }

  // A full, valid gradient of ones for "w".
  std::vector<v1::PushRequest> FullGradient(uint64_t worker, float g = 1.0f) {
    return {Gradient(worker, "w", 0, {g, g, g, g}), Gradient(worker, "w", 1, {g, g, g, g}),
            Gradient(worker, "w", 2, {g, g})};
  }

  std::map<uint64_t, std::string> sessions_;  // by worker id, from Join
  std::string dir_;
  std::unique_ptr<PsServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::ParameterShard::Stub> stub_;
};

}  // namespace ps_test
}  // namespace dcasgd

#endif  // DCASGD_TESTS_PS_PS_SERVICE_FIXTURE_H_
