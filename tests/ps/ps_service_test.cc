// The dcasgd-ps service in process, over a real loopback gRPC server, driven
// with the raw generated stub.
#include <cmath>
#include <functional>
#include <limits>
#include <thread>

#include "core/dtype.h"
#include "tests/ps/ps_service_fixture.h"

namespace dcasgd {
namespace ps_test {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST_F(PsServiceTest, DeclareReturnsResolvedSpecsAndIsIdempotent) {
  v1::DeclareTensorsRequest declare;
  v1::TensorSpec* spec = declare.add_tensors();
  spec->set_name("bias");
  spec->add_shape(3);
  v1::DeclareTensorsResponse response;
  {
    grpc::ClientContext context;
    ASSERT_TRUE(stub_->DeclareTensors(&context, declare, &response).ok());
  }
  ASSERT_EQ(response.tensors_size(), 1);
  EXPECT_EQ(response.tensors(0).chunk_elements(), 65536u);
  grpc::ClientContext again;
  EXPECT_TRUE(stub_->DeclareTensors(&again, declare, &response).ok());
  const v1::ShardStatus status = Status();
  EXPECT_EQ(status.tensors_size(), 2);
}

TEST_F(PsServiceTest, JoinReportsLeaseAndShard) {
  v1::JoinRequest request;
  request.set_worker_name("worker-0");
  v1::JoinResponse response;
  grpc::ClientContext context;
  ASSERT_TRUE(stub_->Join(&context, request, &response).ok());
  EXPECT_NE(response.worker_id(), 0u);
  EXPECT_EQ(response.lease_ms(), 30000u);
  EXPECT_EQ(response.shard_index(), 0u);
  EXPECT_EQ(response.shard_count(), 1u);
  // --max_message_bytes, by default 16 MiB: clients cut their messages below.
  EXPECT_EQ(response.max_message_bytes(), uint64_t{16} << 20);
  grpc::ClientContext heartbeat_context;
  v1::HeartbeatRequest heartbeat;
  heartbeat.set_worker_id(response.worker_id());
  heartbeat.set_session(response.session());
  EXPECT_EQ(response.session().size(), 16u);
  v1::HeartbeatResponse renewed;
  EXPECT_TRUE(stub_->Heartbeat(&heartbeat_context, heartbeat, &renewed).ok());
  EXPECT_EQ(renewed.lease_ms(), 30000u);
}

TEST_F(PsServiceTest, PullStreamsOneMessagePerChunkAndRecordsBackup) {
  const uint64_t worker = Join("worker-0");
  EXPECT_EQ(Status().backup_bytes(), 0u);
  PullResult pulled = Pull(worker);
  ASSERT_TRUE(pulled.status.ok()) << pulled.status.error_message();
  ASSERT_EQ(pulled.messages.size(), 3u);
  std::map<uint64_t, size_t> lengths;
  for (const auto& m : pulled.messages) {
    EXPECT_EQ(m.chunk().tensor(), "w");
    EXPECT_EQ(m.version(), 0u);
    for (float v : Floats(m.chunk().values())) EXPECT_EQ(v, 1.0f);
    lengths[m.chunk().chunk_index()] = Floats(m.chunk().values()).size();
  }
  EXPECT_EQ(lengths, (std::map<uint64_t, size_t>{{0, 4}, {1, 4}, {2, 2}}));
  // The backup is exactly the pulled weights: 10 floats.
  EXPECT_EQ(Status().backup_bytes(), 40u);
  // An evaluator's pull records nothing.
  ASSERT_TRUE(Pull(0).status.ok());
  EXPECT_EQ(Status().backup_bytes(), 40u);
}

TEST_F(PsServiceTest, PushAppliesOneUpdateAndReportsStaleness) {
  const uint64_t a = Join("a");
  const uint64_t b = Join("b");
  ASSERT_TRUE(Pull(a).status.ok());
  ASSERT_TRUE(Pull(b).status.ok());
  v1::PushResponse response;
  grpc::Status status = Push(FullGradient(a), &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.version(), 1u);
  EXPECT_EQ(response.staleness(), 0u);
  // w == w_bak for a, so DC-ASGD-c is SGD: 1 - 0.1 * 1.
  for (float v : Weights()) EXPECT_FLOAT_EQ(v, 1.0f - kLr);
  // b pulled before a's push: one version stale.
  status = Push({Gradient(b, "w", 0, {0, 0, 0, 0})}, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.version(), 2u);
  EXPECT_EQ(response.staleness(), 1u);
  EXPECT_EQ(Status().version(), 2u);
}

TEST_F(PsServiceTest, PushPullReturnsTheNewValuesWhichBecomeTheBackup) {
  const uint64_t worker = Join("a");
  ASSERT_TRUE(Pull(worker).status.ok());
  PullResult result = PushPull(FullGradient(worker, 2.0f));
  ASSERT_TRUE(result.status.ok()) << result.status.error_message();
  ASSERT_EQ(result.messages.size(), 3u);
  std::vector<float> returned;
  for (const auto& m : result.messages) {
    EXPECT_EQ(m.version(), 1u);
    for (float v : Floats(m.chunk().values())) returned.push_back(v);
  }
  EXPECT_EQ(returned.size(), 10u);
  for (float v : returned) EXPECT_FLOAT_EQ(v, 1.0f - kLr * 2.0f);
  EXPECT_EQ(Weights(), returned);
  // The new backup equals the weights, so the next push is plain SGD again.
  result = PushPull(FullGradient(worker, 1.0f));
  ASSERT_TRUE(result.status.ok()) << result.status.error_message();
  for (float v : Weights()) EXPECT_FLOAT_EQ(v, 1.0f - kLr * 3.0f);
}

// --backup_dtype=bfloat16: the shard keeps 2 bytes per backup element,
// sends float32 weights, and compensates with the rounding of what it sent.
class PsServiceBfloat16BackupTest : public PsServiceTest {
 protected:
  void SetUp() override { StartServer({"--backup_dtype=bfloat16"}); }
};

TEST_F(PsServiceBfloat16BackupTest, BackupsTakeTwoBytesAndCompensateWithTheRounding) {
  const uint64_t worker = Join("a");
  ASSERT_TRUE(Pull(worker).status.ok());
  EXPECT_EQ(Status().backup_bytes(), 20u) << "10 elements, 2 bytes each";
  PullResult result = PushPull(FullGradient(worker, 2.0f));
  ASSERT_TRUE(result.status.ok()) << result.status.error_message();
  std::vector<float> returned;
  for (const auto& m : result.messages) {
    for (float v : Floats(m.chunk().values())) returned.push_back(v);
  }
  ASSERT_EQ(returned.size(), 10u);
  // w == w_bak == 1 (a bfloat16 value): plain SGD, and the worker gets the
  // float32 result, 0.8, which bfloat16 cannot hold.
  const float w = 1.0f - kLr * 2.0f;
  for (float v : returned) EXPECT_EQ(v, w);
  const float bak = FloatFromBits16(Dtype::kBfloat16, FloatToBits16(Dtype::kBfloat16, w));
  ASSERT_NE(bak, w);
  // The next push is compensated with w - round(w): DC-ASGD-c, lambda0 0.04.
  result = PushPull(FullGradient(worker, 1.0f));
  ASSERT_TRUE(result.status.ok()) << result.status.error_message();
  const float expected = w - kLr * (1.0f + 0.04f * 1.0f * 1.0f * (w - bak));
  EXPECT_GT(std::fabs(expected - (w - kLr)), 1e-6f) << "the rounding is visible";
  for (float v : Weights()) EXPECT_FLOAT_EQ(v, expected);
  EXPECT_EQ(Status().backup_bytes(), 20u);
}

// One bad push: the expected code, a message, and nothing applied.
struct BadPush {
  std::string name;
  std::function<std::vector<v1::PushRequest>(uint64_t worker)> messages;
  grpc::StatusCode code;
  // The chunk_count of the first message; -1: the number of messages.
  int announce = -1;
};

class PsServiceBadPushTest : public PsServiceTest, public ::testing::WithParamInterface<BadPush> {};

TEST_P(PsServiceBadPushTest, IsRejectedWithNothingApplied) {
  const uint64_t worker = Join("a");
  ASSERT_TRUE(Pull(worker).status.ok());
  const std::vector<float> before = Weights();
  const uint64_t backup_before = Status().backup_bytes();
  const std::vector<v1::PushRequest> messages = GetParam().messages(worker);

  v1::PushResponse response;
  grpc::Status status = Push(messages, &response, GetParam().announce);
  EXPECT_EQ(status.error_code(), GetParam().code) << status.error_message();
  EXPECT_FALSE(status.error_message().empty());
  PullResult fused = PushPull(messages, GetParam().announce);
  EXPECT_EQ(fused.status.error_code(), GetParam().code) << fused.status.error_message();
  EXPECT_TRUE(fused.messages.empty());
  // The same push as a round of an Exchange stream: the round's code, or the
  // stream's when the message cannot be parsed; an incomplete round at the
  // half-close is not answered at all.
  if (!messages.empty()) {
    const ExchangeResult exchanged = Exchange({Round(1, messages, true, GetParam().announce)});
    if (GetParam().name == "FewerChunksThanAnnounced") {
      EXPECT_TRUE(exchanged.status.ok()) << exchanged.status.error_message();
      EXPECT_TRUE(exchanged.messages.empty());
    } else if (exchanged.last.count(1) == 1) {
      EXPECT_EQ(exchanged.last.at(1).code(), static_cast<int>(GetParam().code))
          << exchanged.last.at(1).message();
      EXPECT_FALSE(exchanged.last.at(1).message().empty());
      EXPECT_EQ(exchanged.last.at(1).weights_size(), 0);
      EXPECT_TRUE(exchanged.status.ok()) << "a rejected round leaves the stream open";
    } else {
      EXPECT_EQ(exchanged.status.error_code(), GetParam().code) << exchanged.status.error_message();
    }
  }

  EXPECT_EQ(Status().version(), 0u);
  EXPECT_EQ(Weights(), before);
  EXPECT_EQ(Status().backup_bytes(), backup_before);
}

const float kNan = std::numeric_limits<float>::quiet_NaN();
const float kInf = std::numeric_limits<float>::infinity();

INSTANTIATE_TEST_SUITE_P(
    PsService, PsServiceBadPushTest,
    ::testing::Values(
        BadPush{"UnknownTensor",
                [](uint64_t w) {
                  return std::vector{Gradient(w, "nope", 0, {1, 1, 1, 1})};
                },
                grpc::StatusCode::NOT_FOUND},
        BadPush{"UnknownChunk",
                [](uint64_t w) {
                  return std::vector{Gradient(w, "w", 3, {1, 1})};
                },
                grpc::StatusCode::NOT_FOUND},
        BadPush{"WrongLength",
                [](uint64_t w) {
                  return std::vector{Gradient(w, "w", 0, {1, 1, 1})};
                },
                grpc::StatusCode::INVALID_ARGUMENT},
        BadPush{"NanInSecondChunk",
                [](uint64_t w) {
                  return std::vector{Gradient(w, "w", 0, {1, 1, 1, 1}),
                                     Gradient(w, "w", 1, {1, kNan, 1, 1})};
                },
                grpc::StatusCode::INVALID_ARGUMENT},
        BadPush{"Inf",
                [](uint64_t w) {
                  return std::vector{Gradient(w, "w", 2, {kInf, 1})};
                },
                grpc::StatusCode::INVALID_ARGUMENT},
        BadPush{"RepeatedChunk",
                [](uint64_t w) {
                  return std::vector{Gradient(w, "w", 2, {1, 1}), Gradient(w, "w", 2, {1, 1})};
                },
                grpc::StatusCode::INVALID_ARGUMENT},
        BadPush{"EmptyTensorName",
                [](uint64_t w) {
                  return std::vector{Gradient(w, "", 0, {1, 1, 1, 1})};
                },
                grpc::StatusCode::INVALID_ARGUMENT},
        BadPush{"BadUtf8TensorName",
                [](uint64_t w) {
                  return std::vector{Gradient(w, "w\xff", 0, {1, 1, 1, 1})};
                },
                grpc::StatusCode::INVALID_ARGUMENT},
        BadPush{"MalformedSecondMessage",
                [](uint64_t w) {
                  // A valid chunk, then an unparsable one: must not be taken
                  // for the end of the stream.
                  return std::vector{Gradient(w, "w", 0, {1, 1, 1, 1}),
                                     Gradient(w, "\xc3\x28", 1, {1, 1, 1, 1})};
                },
                grpc::StatusCode::INVALID_ARGUMENT},
        BadPush{"NoWorkerIdInFirstMessage",
                [](uint64_t w) {
                  return std::vector{Gradient(0, "w", 0, {1, 1, 1, 1})};
                },
                grpc::StatusCode::INVALID_ARGUMENT},
        BadPush{"EmptyStream", [](uint64_t w) { return std::vector<v1::PushRequest>{}; },
                grpc::StatusCode::INVALID_ARGUMENT},
        BadPush{"UnknownWorker",
                [](uint64_t w) {
                  return std::vector{Gradient(w + 1000, "w", 0, {1, 1, 1, 1})};
                },
                grpc::StatusCode::FAILED_PRECONDITION},
        BadPush{"MoreChunksThanTheShardOwns",
                [](uint64_t w) {
                  return std::vector{Gradient(w, "w", 0, {}), Gradient(w, "w", 1, {}),
                                     Gradient(w, "w", 2, {}), Gradient(w, "w", 0, {})};
                },
                grpc::StatusCode::RESOURCE_EXHAUSTED},
        BadPush{
            "LongerThanTheChunk",
            [](uint64_t w) { return std::vector{Gradient(w, "w", 0, std::vector<float>(17, 1))}; },
            grpc::StatusCode::INVALID_ARGUMENT},
        BadPush{"NoChunkCount",
                [](uint64_t w) {
                  return std::vector{Gradient(w, "w", 0, {1, 1, 1, 1})};
                },
                grpc::StatusCode::INVALID_ARGUMENT, /*announce=*/0},
        BadPush{"FewerChunksThanAnnounced",
                [](uint64_t w) {
                  return std::vector{Gradient(w, "w", 0, {1, 1, 1, 1}),
                                     Gradient(w, "w", 1, {1, 1, 1, 1})};
                },
                grpc::StatusCode::INVALID_ARGUMENT, /*announce=*/3},
        BadPush{"MoreChunksThanAnnounced",
                [](uint64_t w) {
                  return std::vector{Gradient(w, "w", 0, {1, 1, 1, 1}),
                                     Gradient(w, "w", 1, {1, 1, 1, 1})};
                },
                grpc::StatusCode::INVALID_ARGUMENT, /*announce=*/1},
        BadPush{"AnnouncesMoreChunksThanTheShardOwns",
                [](uint64_t w) {
                  return std::vector{Gradient(w, "w", 0, {1, 1, 1, 1})};
                },
                grpc::StatusCode::RESOURCE_EXHAUSTED, /*announce=*/4},
        BadPush{"GradientAboveMaxGradientAbs",
                [](uint64_t w) {
                  return std::vector{Gradient(w, "w", 2, {1, 2e6f})};
                },
                grpc::StatusCode::INVALID_ARGUMENT},
        BadPush{"FiniteButHuge",
                [](uint64_t w) {
                  return std::vector{Gradient(w, "w", 2, {std::numeric_limits<float>::max(), 1})};
                },
                grpc::StatusCode::INVALID_ARGUMENT},
        // Wire dtypes (ps.proto Dtype): decoded at the boundary, so their
        // errors and the non-finite check happen before anything is applied.
        BadPush{"UnknownChunkDtype",
                [](uint64_t w) {
                  auto m = Gradient(w, "w", 2, {1, 1});
                  m.mutable_gradient()->set_dtype(static_cast<v1::Dtype>(7));
                  return std::vector{Gradient(w, "w", 0, {1, 1, 1, 1}), m};
                },
                grpc::StatusCode::INVALID_ARGUMENT},
        BadPush{"UnknownWireDtype",
                [](uint64_t w) {
                  auto m = Gradient(w, "w", 2, {1, 1});
                  m.set_wire_dtype(static_cast<v1::Dtype>(3));
                  return std::vector{m};
                },
                grpc::StatusCode::INVALID_ARGUMENT},
        BadPush{"Bfloat16ShorterThanTheChunk",
                [](uint64_t w) {
                  return std::vector{Gradient16(w, "w", 0, Dtype::kBfloat16, {1, 1, 1})};
                },
                grpc::StatusCode::INVALID_ARGUMENT},
        BadPush{"Bfloat16WithFloat32Length",
                [](uint64_t w) {
                  // 16 bytes: right for 4 float32 values, 8 bfloat16 ones.
                  auto m = Gradient(w, "w", 0, {1, 1, 1, 1});
                  m.mutable_gradient()->set_dtype(v1::DTYPE_BFLOAT16);
                  return std::vector{m};
                },
                grpc::StatusCode::INVALID_ARGUMENT},
        BadPush{"Float16OddLength",
                [](uint64_t w) {
                  auto m = Gradient16(w, "w", 2, Dtype::kFloat16, {1, 1});
                  m.mutable_gradient()->mutable_values()->push_back('\0');
                  return std::vector{m};
                },
                grpc::StatusCode::INVALID_ARGUMENT},
        BadPush{"Float16OverflowIsInf",
                [](uint64_t w) {
                  // 70000 is finite in float32 but beyond float16: Inf.
                  return std::vector{Gradient(w, "w", 0, {1, 1, 1, 1}),
                                     Gradient16(w, "w", 2, Dtype::kFloat16, {70000.0f, 1})};
                },
                grpc::StatusCode::INVALID_ARGUMENT},
        BadPush{"Bfloat16Nan",
                [](uint64_t w) {
                  return std::vector{Gradient16(w, "w", 2, Dtype::kBfloat16, {1, kNan})};
                },
                grpc::StatusCode::INVALID_ARGUMENT}),
    [](const ::testing::TestParamInfo<BadPush>& p) { return p.param.name; });

TEST_F(PsServiceTest, PushAboveMaxPushBytesIsResourceExhausted) {
  // --max_push_bytes=64 in the fixture: a 32-float chunk is 128 bytes.
  v1::DeclareTensorsRequest declare;
  v1::TensorSpec* spec = declare.add_tensors();
  spec->set_name("big");
  spec->add_shape(32);
  v1::DeclareTensorsResponse declared;
  grpc::ClientContext context;
  ASSERT_TRUE(stub_->DeclareTensors(&context, declare, &declared).ok());
  const uint64_t worker = Join("a");
  ASSERT_TRUE(Pull(worker).status.ok());
  v1::PushResponse response;
  const grpc::Status status =
      Push({Gradient(worker, "big", 0, std::vector<float>(32, 1))}, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << status.error_message();
  EXPECT_THAT(status.error_message(), HasSubstr("--max_push_bytes"));
  EXPECT_EQ(Status().version(), 0u);
}

TEST_F(PsServiceTest, PushOfAChunkNeverPulledIsFailedPrecondition) {
  const uint64_t worker = Join("a");  // no pull: no backup for DC-ASGD
  v1::PushResponse response;
  grpc::Status status = Push(FullGradient(worker), &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << status.error_message();
  EXPECT_EQ(Status().version(), 0u);
}

TEST_F(PsServiceTest, BadUnaryRequestsGetTheContractCodes) {
  auto declare = [&](const std::string& name, int64_t dim, std::string values = "") {
    v1::DeclareTensorsRequest request;
    v1::TensorSpec* spec = request.add_tensors();
    spec->set_name(name);
    spec->add_shape(dim);
    if (!values.empty()) spec->mutable_init()->set_values(values);
    v1::DeclareTensorsResponse response;
    grpc::ClientContext context;
    return stub_->DeclareTensors(&context, request, &response).error_code();
  };
  EXPECT_EQ(declare("", 3), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(declare("bad\xff", 3), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(declare("zero", 0), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(declare("ragged", 1, "abc"), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(declare("w", 11), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_EQ(Status().tensors_size(), 1);

  auto join = [&](const std::string& name) {
    v1::JoinRequest request;
    request.set_worker_name(name);
    v1::JoinResponse response;
    grpc::ClientContext context;
    return stub_->Join(&context, request, &response).error_code();
  };
  EXPECT_EQ(join(""), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(join("\xc3\x28"), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Status().active_workers(), 0u);

  v1::HeartbeatRequest heartbeat;
  heartbeat.set_worker_id(12345);
  v1::HeartbeatResponse renewed;
  grpc::ClientContext heartbeat_context;
  EXPECT_EQ(stub_->Heartbeat(&heartbeat_context, heartbeat, &renewed).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);

  EXPECT_EQ(Pull(0, {"nope"}).status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(Pull(0, {""}).status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Pull(0, {"w\xff"}).status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Pull(777).status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(Status().backup_bytes(), 0u);
}

TEST_F(PsServiceTest, LeaveEndsTheLeaseAndFreesBackups) {
  const uint64_t worker = Join("a");
  ASSERT_TRUE(Pull(worker).status.ok());
  EXPECT_EQ(Status().backup_bytes(), 40u);
  v1::LeaveRequest leave;
  leave.set_worker_id(worker);
  leave.set_session(SessionOf(worker));
  v1::LeaveResponse left;
  grpc::ClientContext context;
  ASSERT_TRUE(stub_->Leave(&context, leave, &left).ok());
  EXPECT_EQ(Status().backup_bytes(), 0u);
  EXPECT_EQ(Status().active_workers(), 0u);
  v1::PushResponse response;
  EXPECT_EQ(Push(FullGradient(worker), &response).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
}

TEST_F(PsServiceTest, GetStatusDescribesTheShard) {
  const v1::ShardStatus status = Status();
  EXPECT_EQ(status.shard_count(), 1u);
  EXPECT_EQ(status.weight_bytes(), 40u);
  EXPECT_THAT(status.update_rule(), HasSubstr("dcasgd-c"));
  EXPECT_EQ(status.rule(), "dcasgd-c");
  EXPECT_EQ(status.sync(), "async");
  ASSERT_EQ(status.tensors_size(), 1);
  EXPECT_EQ(status.tensors(0).spec().name(), "w");
  EXPECT_EQ(status.tensors(0).owned_chunks(), 3u);
}

TEST_F(PsServiceTest, CheckpointRpcWritesTheFile) {
  const uint64_t worker = Join("a");
  ASSERT_TRUE(Pull(worker).status.ok());
  v1::PushResponse pushed;
  ASSERT_TRUE(Push(FullGradient(worker), &pushed).ok());
  v1::CheckpointResponse response;
  grpc::ClientContext context;
  grpc::Status status = stub_->Checkpoint(&context, v1::CheckpointRequest(), &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.path(), dir_ + "/ckpt/shard-0.ckpt");
  EXPECT_EQ(response.version(), 1u);
  EXPECT_GT(response.bytes(), 40u);
  absl::StatusOr<ShardSnapshot> snapshot = ReadCheckpoint(response.path());
  ASSERT_TRUE(snapshot.ok()) << snapshot.status();
  EXPECT_EQ(snapshot->version, 1u);
  EXPECT_EQ(Status().checkpoint_version(), 1u);
}

TEST(PsServiceNoCheckpoints, CheckpointRpcIsFailedPrecondition) {
  absl::StatusOr<std::unique_ptr<PsServer>> server =
      StartInProcess({"--listen=127.0.0.1:0", "--metrics_address="});
  ASSERT_TRUE(server.ok()) << server.status();
  EXPECT_EQ((*server)->metrics_port(), 0);
  auto stub = StubFor(**server);
  v1::CheckpointResponse response;
  grpc::ClientContext context;
  grpc::Status status = stub->Checkpoint(&context, v1::CheckpointRequest(), &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(status.error_message(), HasSubstr("--checkpoint_dir"));
}

TEST(PsServiceSsgd, APushWaitsForTheRoundAndShutdownReleasesIt) {
  absl::StatusOr<std::unique_ptr<PsServer>> server = StartInProcess(
      {"--listen=127.0.0.1:0", "--metrics_address=", "--sync=ssgd", "--update_rule=asgd"});
  ASSERT_TRUE(server.ok()) << server.status();
  auto stub = StubFor(**server);
  {
    v1::DeclareTensorsRequest declare;
    declare.add_tensors()->set_name("s");
    v1::DeclareTensorsResponse declared;
    grpc::ClientContext context;
    ASSERT_TRUE(stub->DeclareTensors(&context, declare, &declared).ok());
  }
  {
    v1::GetStatusRequest request;
    v1::ShardStatus status;
    grpc::ClientContext context;
    ASSERT_TRUE(stub->GetStatus(&context, request, &status).ok());
    EXPECT_EQ(status.rule(), "asgd");
    EXPECT_EQ(status.sync(), "ssgd");
  }
  uint64_t ids[2];
  std::string sessions[2];
  for (int i = 0; i < 2; ++i) {
    v1::JoinRequest join;
    join.set_worker_name("w" + std::to_string(i));
    v1::JoinResponse joined;
    grpc::ClientContext context;
    ASSERT_TRUE(stub->Join(&context, join, &joined).ok());
    ids[i] = joined.worker_id();
    sessions[i] = joined.session();
  }
  // Worker 0 pushes alone: its push waits for worker 1's, which never comes.
  grpc::Status waited;
  std::thread pusher([&] {
    v1::PushResponse response;
    grpc::ClientContext context;
    auto writer = stub->Push(&context, &response);
    v1::PushRequest only = Gradient(ids[0], "s", 0, {1});
    only.set_chunk_count(1);
    only.set_session(sessions[0]);
    writer->Write(only);
    writer->WritesDone();
    waited = writer->Finish();
  });
  // The push is in the server once its bytes are counted; then shut down.
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  while ((*server)->metrics()->ExpositionText().find(
             "dcasgd_ps_received_bytes_total{shard=\"0\"} 4") == std::string::npos &&
         absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  EXPECT_EQ((*server)->store()->version(), 0u);
  EXPECT_TRUE((*server)->Shutdown(absl::Seconds(5)).ok());
  pusher.join();
  EXPECT_EQ(waited.error_code(), grpc::StatusCode::UNAVAILABLE) << waited.error_message();
  EXPECT_EQ((*server)->store()->version(), 0u);
}

TEST(PsServiceLeases, AnExpiredLeaseIsReapedAndCounted) {
  absl::StatusOr<std::unique_ptr<PsServer>> server =
      StartInProcess({"--listen=127.0.0.1:0", "--metrics_address=", "--lease_seconds=0.2"});
  ASSERT_TRUE(server.ok()) << server.status();
  auto stub = StubFor(**server);
  v1::JoinRequest join;
  join.set_worker_name("sleepy");
  v1::JoinResponse joined;
  grpc::ClientContext context;
  ASSERT_TRUE(stub->Join(&context, join, &joined).ok());
  EXPECT_EQ((*server)->store()->Stats().active_workers, 1u);
  // The reaper runs every lease/4; poll (bounded) for the expiry.
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  while ((*server)->store()->Stats().active_workers != 0 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_EQ((*server)->store()->Stats().active_workers, 0u);
  EXPECT_THAT((*server)->metrics()->ExpositionText(),
              HasSubstr("dcasgd_ps_lease_expirations_total{shard=\"0\"} 1"));
  v1::HeartbeatRequest heartbeat;
  heartbeat.set_worker_id(joined.worker_id());
  heartbeat.set_session(joined.session());
  v1::HeartbeatResponse renewed;
  grpc::ClientContext heartbeat_context;
  EXPECT_EQ(stub->Heartbeat(&heartbeat_context, heartbeat, &renewed).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
}

}  // namespace
}  // namespace ps_test
}  // namespace dcasgd
