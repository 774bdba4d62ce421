// Metrics exposition (checked by promtool), gRPC health and reflection of an
// in-process dcasgd-ps.
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "dcasgd/v1/ps.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "services/ps/ps_server.h"
#include "tests/testing/ps_process.h"

namespace dcasgd {
namespace {

using ::testing::HasSubstr;

grpc::ByteBuffer ToBuffer(const std::string& bytes) {
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
}

std::string ToString(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  std::string out;
  if (!buffer.Dump(&slices).ok()) return out;
  for (const grpc::Slice& s : slices)
    out.append(reinterpret_cast<const char*>(s.begin()), s.size());
  return out;
}

// A hand-encoded protobuf string field (tag `field`, wire type 2); the
// health and reflection protos are not compiled into the tests.
std::string StringField(int field, const std::string& value) {
  return std::string(1, static_cast<char>(field << 3 | 2)) +
         std::string(1, static_cast<char>(value.size())) + value;
}

// A raw streaming call: sends one request, half-closes and collects every
// response until the call ends.
class RawStream final : public grpc::ClientBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  RawStream(grpc::GenericStub* stub, const std::string& method, const std::string& request)
      : request_(ToBuffer(request)) {
    stub->PrepareBidiStreamingCall(&context_, method, grpc::StubOptions(), this);
    StartWriteLast(&request_, grpc::WriteOptions());
    StartRead(&response_);
    StartCall();
  }
  ~RawStream() override {
    context_.TryCancel();
    Finish();
  }

  void OnReadDone(bool ok) override {
    if (!ok) return;
    {
      absl::MutexLock lock(&mu_);
      messages_.push_back(ToString(response_));
    }
    StartRead(&response_);
  }
  void OnDone(const grpc::Status& status) override {
    absl::MutexLock lock(&mu_);
    status_ = status;
    done_ = true;
  }

  // The next message, waiting (bounded) for it; empty when the call ended.
  std::string Next(absl::Duration timeout = absl::Seconds(20)) {
    absl::MutexLock lock(&mu_);
    auto ready = [this]()
                     ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !messages_.empty() || done_; };
    mu_.AwaitWithTimeout(absl::Condition(&ready), timeout);
    if (messages_.empty()) return "";
    std::string next = std::move(messages_.front());
    messages_.pop_front();
    return next;
  }

  grpc::Status Finish() {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(&done_));
    return status_;
  }

 private:
  grpc::ClientContext context_;
  grpc::ByteBuffer request_;
  grpc::ByteBuffer response_;
  absl::Mutex mu_;
  std::deque<std::string> messages_ ABSL_GUARDED_BY(mu_);
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status status_ ABSL_GUARDED_BY(mu_);
};

// grpc.health.v1 ServingStatus values as encoded in a HealthCheckResponse.
const std::string kServing = std::string("\x08\x01", 2);
const std::string kNotServing = std::string("\x08\x02", 2);

grpc::Status HealthCheck(grpc::GenericStub* stub, const std::string& service,
                         std::string* response) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(20)));
  const grpc::ByteBuffer request = ToBuffer(service.empty() ? "" : StringField(1, service));
  grpc::ByteBuffer reply;
  absl::Mutex mu;
  bool done = false;
  grpc::Status result;
  stub->UnaryCall(&context, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request, &reply,
                  [&](grpc::Status status) {
                    absl::MutexLock lock(&mu);
                    result = std::move(status);
                    done = true;
                  });
  absl::MutexLock lock(&mu);
  mu.Await(absl::Condition(&done));
  *response = ToString(reply);
  return result;
}

class PsObservabilityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<PsOptions> options =
        ParsePsOptions({"--listen=127.0.0.1:0", "--metrics_address=127.0.0.1:0",
                        "--update_rule=asgd", "--shard_index=1", "--shard_count=2"},
                       [](const std::string&) { return std::optional<std::string>(); });
    ASSERT_TRUE(options.ok()) << options.status();
    absl::StatusOr<std::unique_ptr<PsServer>> server = PsServer::Start(*options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    channel_ = grpc::CreateChannel(server_->local_address(), grpc::InsecureChannelCredentials());
    stub_ = v1::ParameterShard::NewStub(channel_);
    generic_ = std::make_unique<grpc::GenericStub>(channel_);
  }

  std::unique_ptr<PsServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::ParameterShard::Stub> stub_;
  std::unique_ptr<grpc::GenericStub> generic_;
};

TEST_F(PsObservabilityTest, MetricsPassPromtoolAndCountTraffic) {
  ASSERT_GT(server_->metrics_port(), 0);
  // One applied push and one rejected request.
  v1::DeclareTensorsRequest declare;
  v1::TensorSpec* spec = declare.add_tensors();
  spec->set_name("w");
  spec->add_shape(64);
  spec->set_chunk_elements(1);
  v1::DeclareTensorsResponse declared;
  {
    grpc::ClientContext context;
    ASSERT_TRUE(stub_->DeclareTensors(&context, declare, &declared).ok());
  }
  v1::JoinRequest join;
  join.set_worker_name("a");
  v1::JoinResponse joined;
  {
    grpc::ClientContext context;
    ASSERT_TRUE(stub_->Join(&context, join, &joined).ok());
  }
  // Find a chunk this shard (1 of 2) owns.
  uint64_t owned_chunk = 0;
  {
    v1::PullRequest pull;
    pull.set_worker_id(joined.worker_id());
    pull.set_session(joined.session());
    grpc::ClientContext context;
    auto reader = stub_->Pull(&context, pull);
    v1::PullResponse message;
    ASSERT_TRUE(reader->Read(&message));
    owned_chunk = message.chunk().chunk_index();
    while (reader->Read(&message)) {
    }
    ASSERT_TRUE(reader->Finish().ok());
  }
  {
    v1::PushResponse response;
    grpc::ClientContext context;
    auto writer = stub_->Push(&context, &response);
    v1::PushRequest push;
    push.set_worker_id(joined.worker_id());
    push.set_session(joined.session());
    push.set_chunk_count(1);
    push.mutable_gradient()->set_tensor("w");
    push.mutable_gradient()->set_chunk_index(owned_chunk);
    const float g = 1.0f;
    push.mutable_gradient()->set_values(std::string(reinterpret_cast<const char*>(&g), 4));
    writer->Write(push);
    writer->WritesDone();
    ASSERT_TRUE(writer->Finish().ok());
  }
  {
    v1::PullRequest pull;
    pull.add_tensors("missing");
    grpc::ClientContext context;
    auto reader = stub_->Pull(&context, pull);
    v1::PullResponse message;
    while (reader->Read(&message)) {
    }
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::NOT_FOUND);
  }

  absl::StatusOr<std::string> text = testing::HttpGet(server_->metrics_port(), "/metrics");
  ASSERT_TRUE(text.ok()) << text.status();
  for (const char* family :
       {"dcasgd_ps_staleness", "dcasgd_ps_pushes_total", "dcasgd_ps_pulls_total",
        "dcasgd_ps_received_bytes_total", "dcasgd_ps_sent_bytes_total",
        "dcasgd_ps_update_duration_seconds", "dcasgd_ps_model_version", "dcasgd_ps_active_workers",
        "dcasgd_ps_weight_bytes", "dcasgd_ps_backup_bytes", "dcasgd_ps_optimizer_state_bytes",
        "dcasgd_ps_rejected_requests_total", "dcasgd_ps_checkpoints_total",
        "dcasgd_ps_lease_expirations_total"}) {
    EXPECT_THAT(*text, HasSubstr(std::string("# HELP ") + family + " ")) << family;
  }
  EXPECT_THAT(*text, HasSubstr("dcasgd_ps_pushes_total{shard=\"1\"} 1\n"));
  EXPECT_THAT(*text, HasSubstr("dcasgd_ps_model_version{shard=\"1\"} 1\n"));
  EXPECT_THAT(*text, HasSubstr("dcasgd_ps_active_workers{shard=\"1\"} 1\n"));
  EXPECT_THAT(*text, HasSubstr("dcasgd_ps_received_bytes_total{shard=\"1\"} 4\n"));
  EXPECT_THAT(*text, HasSubstr("dcasgd_ps_staleness_bucket{shard=\"1\",le=\"0\"} 1\n"));
  EXPECT_THAT(*text,
              HasSubstr("dcasgd_ps_rejected_requests_total{shard=\"1\",reason=\"not_found\"} 1\n"));
  EXPECT_THAT(*text, HasSubstr("reason=\"resource_exhausted\""));

  absl::StatusOr<std::string> dir = testing::MakeTempDir("ps-metrics");
  ASSERT_TRUE(dir.ok()) << dir.status();
  const std::string file = *dir + "/metrics.txt";
  std::ofstream(file) << *text;
  const int status = std::system(("promtool check metrics < " + file + " 2>&1").c_str());
  testing::RemoveTree(*dir);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "promtool check metrics failed on:\n" << *text;
}

TEST_F(PsObservabilityTest, HealthIsServingThenNotServingAtShutdown) {
  std::string response;
  for (const std::string service : {"", "dcasgd.v1.ParameterShard"}) {
    grpc::Status status = HealthCheck(generic_.get(), service, &response);
    ASSERT_TRUE(status.ok()) << service << ": " << status.error_message();
    EXPECT_EQ(response, kServing) << service;
  }
  grpc::Status unknown = HealthCheck(generic_.get(), "no.such.Service", &response);
  EXPECT_EQ(unknown.error_code(), grpc::StatusCode::NOT_FOUND);

  RawStream watch(generic_.get(), "/grpc.health.v1.Health/Watch",
                  StringField(1, "dcasgd.v1.ParameterShard"));
  EXPECT_EQ(watch.Next(), kServing);
  std::thread shutdown([this] { EXPECT_TRUE(server_->Shutdown(absl::Seconds(1)).ok()); });
  EXPECT_EQ(watch.Next(), kNotServing);
  shutdown.join();
}

TEST_F(PsObservabilityTest, ReflectionListsTheService) {
  // ServerReflectionRequest{list_services: "*"} (field 7).
  RawStream reflection(generic_.get(),
                       "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                       StringField(7, "*"));
  const std::string response = reflection.Next();
  EXPECT_THAT(response, HasSubstr("dcasgd.v1.ParameterShard"));
  EXPECT_THAT(response, HasSubstr("grpc.health.v1.Health"));
  EXPECT_TRUE(reflection.Finish().ok());
}

}  // namespace
}  // namespace dcasgd
