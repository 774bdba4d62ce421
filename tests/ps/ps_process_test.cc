// dcasgd-ps as a process (PsProcess): SIGTERM writes the final checkpoint and
// exits 0; a restart restores it; a corrupt checkpoint stops the start.
#include "tests/testing/ps_process.h"

#include <signal.h>

#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/checkpoint.h"
#include "dcasgd/v1/ps.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"

namespace dcasgd {
namespace {

using ::testing::HasSubstr;

std::unique_ptr<v1::ParameterShard::Stub> Connect(const testing::PsProcess& ps) {
  return v1::ParameterShard::NewStub(
      grpc::CreateChannel(ps.address(), grpc::InsecureChannelCredentials()));
}

std::vector<float> PullAll(v1::ParameterShard::Stub* stub, uint64_t worker,
                           const std::string& session = "") {
  v1::PullRequest request;
  request.set_worker_id(worker);
  request.set_session(session);
  grpc::ClientContext context;
  auto reader = stub->Pull(&context, request);
  std::vector<float> values;
  v1::PullResponse message;
  while (reader->Read(&message)) {
    const std::string& bytes = message.chunk().values();
    const size_t old = values.size();
    values.resize(old + bytes.size() / 4);
    std::memcpy(values.data() + old, bytes.data(), bytes.size());
  }
  EXPECT_TRUE(reader->Finish().ok());
  return values;
}

class PsProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::string> dir = testing::MakeTempDir("ps-process-test");
    ASSERT_TRUE(dir.ok()) << dir.status();
    dir_ = *dir;
  }
  void TearDown() override { testing::RemoveTree(dir_); }
  std::string dir_;
};

TEST_F(PsProcessTest, SigtermWritesTheFinalCheckpointWhichARestartRestores) {
  absl::StatusOr<std::unique_ptr<testing::PsProcess>> ps = testing::PsProcess::Start(
      {"--update_rule=asgd", "--lr=0.5", "--checkpoint_dir=" + dir_, "--metrics_address="});
  ASSERT_TRUE(ps.ok()) << ps.status();
  auto stub = Connect(**ps);
  {
    v1::DeclareTensorsRequest declare;
    v1::TensorSpec* spec = declare.add_tensors();
    spec->set_name("w");
    spec->add_shape(3);
    spec->mutable_init()->mutable_constant()->set_value(2.0f);
    v1::DeclareTensorsResponse declared;
    grpc::ClientContext context;
    ASSERT_TRUE(stub->DeclareTensors(&context, declare, &declared).ok());
  }
  v1::JoinResponse joined;
  {
    v1::JoinRequest join;
    join.set_worker_name("a");
    grpc::ClientContext context;
    ASSERT_TRUE(stub->Join(&context, join, &joined).ok());
  }
  ASSERT_EQ(PullAll(stub.get(), joined.worker_id(), joined.session()),
            (std::vector<float>{2, 2, 2}));
  {
    v1::PushResponse response;
    grpc::ClientContext context;
    auto writer = stub->Push(&context, &response);
    v1::PushRequest push;
    push.set_worker_id(joined.worker_id());
    push.set_session(joined.session());
    push.set_chunk_count(1);
    push.mutable_gradient()->set_tensor("w");
    const float g[3] = {1, 2, 4};
    push.mutable_gradient()->set_values(std::string(reinterpret_cast<const char*>(g), 12));
    writer->Write(push);
    writer->WritesDone();
    ASSERT_TRUE(writer->Finish().ok());
    EXPECT_EQ(response.version(), 1u);
  }
  const std::vector<float> trained = {2 - 0.5f * 1, 2 - 0.5f * 2, 2 - 0.5f * 4};
  ASSERT_EQ(PullAll(stub.get(), 0), trained);

  // The client stays connected: shutdown must still finish and exit 0.
  ASSERT_TRUE((*ps)->Kill(SIGTERM).ok());
  absl::StatusOr<int> exit_code = (*ps)->WaitExit();
  ASSERT_TRUE(exit_code.ok()) << exit_code.status();
  EXPECT_EQ(*exit_code, 0) << (*ps)->Log();
  EXPECT_THAT((*ps)->Log(), HasSubstr("final checkpoint"));
  absl::StatusOr<ShardSnapshot> snapshot = ReadCheckpoint(dir_ + "/shard-0.ckpt");
  ASSERT_TRUE(snapshot.ok()) << snapshot.status();
  EXPECT_EQ(snapshot->version, 1u);

  ASSERT_TRUE((*ps)->Restart().ok()) << (*ps)->Log();
  stub = Connect(**ps);
  v1::ShardStatus status;
  {
    grpc::ClientContext context;
    ASSERT_TRUE(stub->GetStatus(&context, v1::GetStatusRequest(), &status).ok());
  }
  EXPECT_EQ(status.version(), 1u);
  EXPECT_EQ(status.checkpoint_version(), 1u);
  EXPECT_EQ(PullAll(stub.get(), 0), trained);
}

uint64_t JoinAs(v1::ParameterShard::Stub* stub, const std::string& name) {
  v1::JoinRequest join;
  join.set_worker_name(name);
  v1::JoinResponse joined;
  grpc::ClientContext context;
  EXPECT_TRUE(stub->Join(&context, join, &joined).ok());
  return joined.worker_id();
}

TEST_F(PsProcessTest, WorkerIdsAreNotReusedAfterARestart) {
  // Issue 13: ids restarted at 1, so after a SIGKILL a worker joining the
  // restarted shard could get the id another worker still used; the two then
  // shared one lease and one backup.
  absl::StatusOr<std::unique_ptr<testing::PsProcess>> ps =
      testing::PsProcess::Start({"--checkpoint_dir=" + dir_, "--metrics_address="});
  ASSERT_TRUE(ps.ok()) << ps.status();
  auto stub = Connect(**ps);
  std::vector<uint64_t> before;
  for (const char* name : {"a", "b", "c"}) before.push_back(JoinAs(stub.get(), name));
  ASSERT_TRUE((*ps)->Kill(SIGKILL).ok());
  ASSERT_TRUE((*ps)->WaitExit().ok());
  ASSERT_TRUE((*ps)->Restart().ok()) << (*ps)->Log();
  stub = Connect(**ps);
  for (const char* name : {"d", "e", "f"}) {
    const uint64_t id = JoinAs(stub.get(), name);
    EXPECT_NE(id, 0u);
    EXPECT_THAT(before, ::testing::Not(::testing::Contains(id))) << name << " got a used id";
  }
  // The old ids are unknown to the restarted shard: their workers re-join.
  v1::HeartbeatRequest beat;
  beat.set_worker_id(before[0]);
  v1::HeartbeatResponse response;
  grpc::ClientContext context;
  EXPECT_EQ(stub->Heartbeat(&context, beat, &response).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
}

TEST_F(PsProcessTest, ACorruptCheckpointStopsTheStartWithAClearMessage) {
  std::ofstream(dir_ + "/shard-0.ckpt") << "this is not a checkpoint";
  absl::StatusOr<std::unique_ptr<testing::PsProcess>> ps =
      testing::PsProcess::Start({"--checkpoint_dir=" + dir_});
  ASSERT_FALSE(ps.ok());
  EXPECT_THAT(std::string(ps.status().message()), HasSubstr("exited with 1"));
  EXPECT_THAT(std::string(ps.status().message()), HasSubstr("shard-0.ckpt"));
}

TEST_F(PsProcessTest, BadFlagsExitWithTwo) {
  absl::StatusOr<std::unique_ptr<testing::PsProcess>> ps =
      testing::PsProcess::Start({"--update_rule=adam"});
  ASSERT_FALSE(ps.ok());
  EXPECT_THAT(std::string(ps.status().message()), HasSubstr("exited with 2"));
  EXPECT_THAT(std::string(ps.status().message()), HasSubstr("update_rule"));
}

TEST_F(PsProcessTest, APortInUseStopsTheStartInsteadOfBeingShared) {
  absl::StatusOr<std::unique_ptr<testing::PsProcess>> first =
      testing::PsProcess::Start({"--health_listen=127.0.0.1:0"});
  ASSERT_TRUE(first.ok()) << first.status();
  // gRPC's default (SO_REUSEPORT) would let both bind and split the
  // connections between two shards.
  for (const std::string& flag :
       {absl::StrCat("--listen=127.0.0.1:", (*first)->grpc_port()),
        absl::StrCat("--health_listen=127.0.0.1:", (*first)->health_port())}) {
    absl::StatusOr<std::unique_ptr<testing::PsProcess>> second = testing::PsProcess::Start({flag});
    ASSERT_FALSE(second.ok()) << flag;
    EXPECT_THAT(std::string(second.status().message()), HasSubstr("exited with 1")) << flag;
    EXPECT_THAT(std::string(second.status().message()), HasSubstr("address in use")) << flag;
  }
}

TEST_F(PsProcessTest, StartShardsNumbersThem) {
  absl::StatusOr<std::vector<std::unique_ptr<testing::PsProcess>>> shards =
      testing::StartShards(2, {"--metrics_address="}, dir_);
  ASSERT_TRUE(shards.ok()) << shards.status();
  ASSERT_EQ(testing::Addresses(*shards).size(), 2u);
  for (uint32_t i = 0; i < 2; ++i) {
    auto stub = Connect(*(*shards)[i]);
    v1::ShardStatus status;
    grpc::ClientContext context;
    ASSERT_TRUE(stub->GetStatus(&context, v1::GetStatusRequest(), &status).ok());
    EXPECT_EQ(status.shard_index(), i);
    EXPECT_EQ(status.shard_count(), 2u);
  }
}

}  // namespace
}  // namespace dcasgd
