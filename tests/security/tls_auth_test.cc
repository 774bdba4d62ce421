// TLS, mutual TLS, bearer tokens and roles against real dcasgd-ps processes
// (docs/security.md). The certificates are made at test time by
// tests/security/make-certs.sh with the openssl CLI; every client goes
// through the production client code (auth/tls.h ClientCredentials).
#include <signal.h>
#include <sys/stat.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "auth/tls.h"
#include "clients/cpp/ps_client.h"
#include "coordinator/coordinator_client.h"
#include "dcasgd/v1/coordinator.grpc.pb.h"
#include "dcasgd/v1/ps.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpc/grpc.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "tests/testing/exchange_round.h"
#include "tests/testing/ps_process.h"

namespace dcasgd {
namespace {

using ::testing::HasSubstr;
using testing::PsProcess;

constexpr char kReaderToken[] = "reader-token-0123456789abcdef";
constexpr char kWorkerToken[] = "worker-token-0123456789abcdef";
constexpr char kAdminToken[] = "admin-token-0123456789abcdef";
constexpr char kReplicationToken[] = "replication-token-0123456789ab";
constexpr char kUnknownToken[] = "nobody-knows-this-token-0123";

void WriteFile(const std::string& path, const std::string& text) {
  const std::string temp = path + ".tmp";
  {
    std::ofstream out(temp, std::ios::binary | std::ios::trunc);
    out << text;
  }
  // Atomic, as a Secret volume update is: the shard never reads half a file.
  std::filesystem::rename(temp, path);
}

// The certificates and token files, made once for the whole binary.
class SecurityTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<std::string> dir = testing::MakeTempDir("dcasgd-security");
    ASSERT_TRUE(dir.ok()) << dir.status();
    dir_ = new std::string(*dir);
    const std::string command =
        absl::StrCat(DCASGD_SOURCE_DIR "/tests/security/make-certs.sh ", *dir_);
    ASSERT_EQ(std::system(command.c_str()), 0) << command;
    WriteFile(Path("tokens"),
              absl::StrCat("# token role name\n", kReaderToken, " reader evaluator\n", kWorkerToken,
                           " worker trainer\n", kAdminToken, " admin operator\n", kReplicationToken,
                           " replication members\n"));
    for (const auto& [name, token] :
         std::map<std::string, std::string>{{"reader.token", kReaderToken},
                                            {"worker.token", kWorkerToken},
                                            {"admin.token", kAdminToken},
                                            {"replication.token", kReplicationToken},
                                            {"unknown.token", kUnknownToken}}) {
      WriteFile(Path(name), token + "\n");
    }
  }
  static void TearDownTestSuite() {
    if (dir_ != nullptr) testing::RemoveTree(*dir_);
    delete dir_;
    dir_ = nullptr;
  }

  static std::string Path(const std::string& name) { return absl::StrCat(*dir_, "/", name); }

  // Shard flags: TLS with the test CA's server certificate and the tokens.
  static std::vector<std::string> TlsTokenFlags() {
    return {"--tls_cert=" + Path("server.pem"), "--tls_key=" + Path("server.key"),
            "--auth_tokens_file=" + Path("tokens"), "--auth_reload_seconds=0.2"};
  }

  static std::unique_ptr<PsProcess> StartShard(std::vector<std::string> flags) {
    absl::StatusOr<std::unique_ptr<PsProcess>> ps = PsProcess::Start(std::move(flags));
    EXPECT_TRUE(ps.ok()) << ps.status();
    return ps.ok() ? *std::move(ps) : nullptr;
  }

  // A TLS client of the test CA (a client certificate `client`, e.g.
  // "worker", and a token file `token`, e.g. "worker.token", when given).
  static auth::ClientSecurity Tls(const std::string& token = "", const std::string& client = "",
                                  const std::string& ca = "ca") {
    auth::ClientSecurity security;
    security.ca = Path(ca + ".pem");
    if (!client.empty()) {
      security.cert = Path(client + ".pem");
      security.key = Path(client + ".key");
    }
    if (!token.empty()) security.token_file = Path(token);
    return security;
  }

  static std::shared_ptr<grpc::Channel> Channel(const std::string& address,
                                                const auth::ClientSecurity& security) {
    absl::StatusOr<std::shared_ptr<const auth::ClientCredentials>> credentials =
        auth::ClientCredentials::Load(security);
    EXPECT_TRUE(credentials.ok()) << credentials.status();
    grpc::ChannelArguments args;
    // A fresh connection per channel: a handshake per test step.
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    return (*credentials)->NewChannel(address, args);
  }

  static std::string* dir_;
};

std::string* SecurityTest::dir_ = nullptr;

void SetDeadline(grpc::ClientContext* context) {
  context->set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
}

grpc::Status HealthCheck(const std::shared_ptr<grpc::Channel>& channel) {
  auto stub = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext context;
  SetDeadline(&context);
  grpc::health::v1::HealthCheckResponse response;
  return stub->Check(&context, grpc::health::v1::HealthCheckRequest(), &response);
}

template <typename Request>
grpc::Status PushStream(v1::ParameterShard::Stub* stub, bool push_pull, const Request& request) {
  grpc::ClientContext context;
  SetDeadline(&context);
  if (push_pull) {
    auto stream = stub->PushPull(&context);
    stream->Write(request);
    stream->WritesDone();
    v1::PullResponse reply;
    while (stream->Read(&reply)) {
    }
    return stream->Finish();
  }
  v1::PushResponse response;
  auto stream = stub->Push(&context, &response);
  stream->Write(request);
  stream->WritesDone();
  return stream->Finish();
}

// One Exchange round as worker 12345: the stream's status when the call was
// refused, else the round's.
grpc::Status ExchangeRound(v1::ParameterShard::Stub* stub) {
  grpc::ClientContext context;
  SetDeadline(&context);
  v1::PushRequest push;
  push.set_worker_id(12345);
  push.set_chunk_count(1);
  push.mutable_gradient()->set_tensor("t");
  return testing::ExchangeAll(stub, &context, {testing::RoundOf(1, {push}, /*pull_back=*/false)})
      .RoundStatus(1);
}

grpc::Status Pull(v1::ParameterShard::Stub* stub, uint64_t worker_id) {
  grpc::ClientContext context;
  SetDeadline(&context);
  v1::PullRequest request;
  request.set_worker_id(worker_id);
  auto stream = stub->Pull(&context, request);
  v1::PullResponse reply;
  while (stream->Read(&reply)) {
  }
  return stream->Finish();
}

// Every RPC of ParameterShard and DataCoordinator once, by name, with a
// request that is valid on its own (ids that may not exist): what matters is
// whether the call got past the caller check.
std::map<std::string, grpc::StatusCode> CallEverything(
    const std::shared_ptr<grpc::Channel>& channel) {
  auto shard = v1::ParameterShard::NewStub(channel);
  auto coordinator = v1::DataCoordinator::NewStub(channel);
  std::map<std::string, grpc::StatusCode> codes;
  const auto unary = [&](const std::string& name, auto call) {
    grpc::ClientContext context;
    SetDeadline(&context);
    codes[name] = call(&context).error_code();
  };
  unary("DeclareTensors", [&](grpc::ClientContext* c) {
    v1::DeclareTensorsRequest request;
    v1::TensorSpec* spec = request.add_tensors();
    spec->set_name("t");
    spec->add_shape(4);
    v1::DeclareTensorsResponse response;
    return shard->DeclareTensors(c, request, &response);
  });
  unary("Join", [&](grpc::ClientContext* c) {
    v1::JoinRequest request;
    request.set_worker_name("caller-check");
    v1::JoinResponse response;
    return shard->Join(c, request, &response);
  });
  unary("Heartbeat", [&](grpc::ClientContext* c) {
    v1::HeartbeatRequest request;
    request.set_worker_id(12345);
    v1::HeartbeatResponse response;
    return shard->Heartbeat(c, request, &response);
  });
  unary("Leave", [&](grpc::ClientContext* c) {
    v1::LeaveRequest request;
    request.set_worker_id(12345);
    v1::LeaveResponse response;
    return shard->Leave(c, request, &response);
  });
  unary("GetStatus", [&](grpc::ClientContext* c) {
    v1::ShardStatus response;
    return shard->GetStatus(c, v1::GetStatusRequest(), &response);
  });
  unary("Checkpoint", [&](grpc::ClientContext* c) {
    v1::CheckpointResponse response;
    return shard->Checkpoint(c, v1::CheckpointRequest(), &response);
  });
  unary("AcquireDataShard", [&](grpc::ClientContext* c) {
    v1::AcquireDataShardRequest request;
    request.set_worker_name("caller-check");
    request.set_num_data_shards(4);
    request.set_epochs(1);
    v1::AcquireDataShardResponse response;
    return coordinator->AcquireDataShard(c, request, &response);
  });
  unary("RenewDataLease", [&](grpc::ClientContext* c) {
    v1::RenewDataLeaseRequest request;
    request.set_lease_id(12345);
    v1::RenewDataLeaseResponse response;
    return coordinator->RenewDataLease(c, request, &response);
  });
  unary("CompleteDataShard", [&](grpc::ClientContext* c) {
    v1::CompleteDataShardRequest request;
    request.set_lease_id(12345);
    v1::CompleteDataShardResponse response;
    return coordinator->CompleteDataShard(c, request, &response);
  });
  unary("GetJobStatus", [&](grpc::ClientContext* c) {
    v1::JobStatus response;
    return coordinator->GetJobStatus(c, v1::GetJobStatusRequest(), &response);
  });
  codes["Pull(worker_id 0)"] = Pull(shard.get(), 0).error_code();
  codes["Pull(worker_id 12345)"] = Pull(shard.get(), 12345).error_code();
  v1::PushRequest push;
  push.set_worker_id(12345);
  push.set_chunk_count(1);
  push.mutable_gradient()->set_tensor("t");
  codes["Push"] = PushStream(shard.get(), /*push_pull=*/false, push).error_code();
  codes["PushPull"] = PushStream(shard.get(), /*push_pull=*/true, push).error_code();
  codes["Exchange"] = ExchangeRound(shard.get()).error_code();
  return codes;
}

TEST_F(SecurityTest, PlaintextClientCannotTalkToATlsShard) {
  std::unique_ptr<PsProcess> ps = StartShard(TlsTokenFlags());
  ASSERT_NE(ps, nullptr);
  auth::ClientSecurity plaintext;
  plaintext.token_file = Path("admin.token");
  const grpc::Status health = HealthCheck(Channel(ps->address(), plaintext));
  EXPECT_EQ(health.error_code(), grpc::StatusCode::UNAVAILABLE) << health.error_message();
  for (const auto& [rpc, code] : CallEverything(Channel(ps->address(), plaintext))) {
    EXPECT_EQ(code, grpc::StatusCode::UNAVAILABLE) << rpc;
  }
  // The same client over TLS is served.
  EXPECT_TRUE(HealthCheck(Channel(ps->address(), Tls("admin.token"))).ok());
}

TEST_F(SecurityTest, ClientOfAnotherCaRefusesTheShard) {
  std::unique_ptr<PsProcess> ps = StartShard(TlsTokenFlags());
  ASSERT_NE(ps, nullptr);
  const grpc::Status health =
      HealthCheck(Channel(ps->address(), Tls("admin.token", "", "other-ca")));
  EXPECT_EQ(health.error_code(), grpc::StatusCode::UNAVAILABLE) << health.error_message();
}

TEST_F(SecurityTest, WithoutATokenEveryCallButHealthIsUnauthenticated) {
  std::unique_ptr<PsProcess> ps = StartShard(TlsTokenFlags());
  ASSERT_NE(ps, nullptr);
  const std::shared_ptr<grpc::Channel> channel = Channel(ps->address(), Tls());
  EXPECT_TRUE(HealthCheck(channel).ok());
  const std::map<std::string, grpc::StatusCode> codes = CallEverything(channel);
  EXPECT_EQ(codes.size(), 15u);
  for (const auto& [rpc, code] : codes) {
    EXPECT_EQ(code, grpc::StatusCode::UNAUTHENTICATED) << rpc;
  }
  // The message says what to do.
  auto stub = v1::ParameterShard::NewStub(channel);
  grpc::ClientContext context;
  SetDeadline(&context);
  v1::ShardStatus status;
  const grpc::Status s = stub->GetStatus(&context, v1::GetStatusRequest(), &status);
  EXPECT_THAT(s.error_message(), HasSubstr("bearer token"));
  EXPECT_THAT(s.error_message(), HasSubstr("--auth_token_file"));
}

TEST_F(SecurityTest, AnUnknownTokenIsUnauthenticated) {
  std::unique_ptr<PsProcess> ps = StartShard(TlsTokenFlags());
  ASSERT_NE(ps, nullptr);
  for (const auto& [rpc, code] : CallEverything(Channel(ps->address(), Tls("unknown.token")))) {
    EXPECT_EQ(code, grpc::StatusCode::UNAUTHENTICATED) << rpc;
  }
}

TEST_F(SecurityTest, ReaderMayOnlyRead) {
  std::unique_ptr<PsProcess> ps = StartShard(TlsTokenFlags());
  ASSERT_NE(ps, nullptr);
  std::map<std::string, grpc::StatusCode> codes =
      CallEverything(Channel(ps->address(), Tls("reader.token")));
  for (const std::string rpc : {"Pull(worker_id 0)", "GetStatus", "GetJobStatus"}) {
    EXPECT_EQ(codes[rpc], grpc::StatusCode::OK) << rpc;
  }
  for (const std::string rpc :
       {"DeclareTensors", "Join", "Heartbeat", "Leave", "Pull(worker_id 12345)", "Push", "PushPull",
        "Exchange", "Checkpoint", "AcquireDataShard", "RenewDataLease", "CompleteDataShard"}) {
    EXPECT_EQ(codes[rpc], grpc::StatusCode::PERMISSION_DENIED) << rpc;
  }
  // Nothing a reader tried changed the shard.
  auto stub = v1::ParameterShard::NewStub(Channel(ps->address(), Tls("admin.token")));
  grpc::ClientContext context;
  SetDeadline(&context);
  v1::ShardStatus status;
  ASSERT_TRUE(stub->GetStatus(&context, v1::GetStatusRequest(), &status).ok());
  EXPECT_EQ(status.tensors_size(), 0);
  EXPECT_EQ(status.active_workers(), 0u);
}

TEST_F(SecurityTest, PermissionDeniedNamesTheCallerAndTheRoleNeeded) {
  std::unique_ptr<PsProcess> ps = StartShard(TlsTokenFlags());
  ASSERT_NE(ps, nullptr);
  auto stub = v1::ParameterShard::NewStub(Channel(ps->address(), Tls("reader.token")));
  grpc::ClientContext context;
  SetDeadline(&context);
  v1::JoinRequest request;
  request.set_worker_name("w");
  v1::JoinResponse response;
  const grpc::Status s = stub->Join(&context, request, &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(s.error_message(), HasSubstr("'evaluator' has role reader"));
  EXPECT_THAT(s.error_message(), HasSubstr("needs role worker"));
}

ClientOptions WorkerOptions(const PsProcess& ps, std::shared_ptr<const auth::ClientCredentials> c,
                            const std::string& worker_name) {
  ClientOptions options;
  options.shard_addresses = {ps.address()};
  options.worker_name = worker_name;
  options.rpc_timeout = absl::Seconds(10);
  options.max_attempts = 2;
  options.credentials = std::move(c);
  return options;
}

// A worker connected with `options` that declared "w" (4 elements, all 1)
// and pulled it into `weights`; null (with a test failure) when a step fails.
std::unique_ptr<PsClient> DeclaredWorker(const ClientOptions& options, TensorMap* weights) {
  absl::StatusOr<std::unique_ptr<PsClient>> connected = PsClient::Connect(options);
  if (!connected.ok()) {
    ADD_FAILURE() << connected.status();
    return nullptr;
  }
  std::unique_ptr<PsClient> worker = std::move(connected).value();
  TensorSpec spec;
  spec.name = "w";
  spec.shape = {4};
  spec.init.kind = Initializer::Kind::kConstant;
  spec.init.a = 1.0f;
  if (absl::Status s = worker->Declare({spec}); !s.ok()) {
    ADD_FAILURE() << s;
    return nullptr;
  }
  if (absl::Status s = worker->Pull({"w"}, weights); !s.ok()) {
    ADD_FAILURE() << s;
    return nullptr;
  }
  return worker;
}

TEST_F(SecurityTest, WorkerTrainsButMayNotCheckpointAndAdminMay) {
  absl::StatusOr<std::string> checkpoints = testing::MakeTempDir("dcasgd-security-ckpt");
  ASSERT_TRUE(checkpoints.ok());
  std::vector<std::string> flags = TlsTokenFlags();
  flags.push_back("--checkpoint_dir=" + *checkpoints);
  flags.push_back("--checkpoint_min_interval_seconds=0");
  flags.push_back("--update_rule=asgd");
  flags.push_back("--lr=1");
  std::unique_ptr<PsProcess> ps = StartShard(flags);
  ASSERT_NE(ps, nullptr);

  auto worker_credentials = auth::ClientCredentials::Load(Tls("worker.token"));
  ASSERT_TRUE(worker_credentials.ok()) << worker_credentials.status();
  TensorMap weights;
  std::unique_ptr<PsClient> worker =
      DeclaredWorker(WorkerOptions(*ps, *worker_credentials, "trainer-0"), &weights);
  ASSERT_NE(worker, nullptr);
  TensorMap gradients{{"w", {0.5f, 0.5f, 0.5f, 0.5f}}};
  ASSERT_TRUE(worker->PushPull(gradients, &weights).ok());
  EXPECT_THAT(weights["w"], ::testing::ElementsAre(0.5f, 0.5f, 0.5f, 0.5f));

  // The data coordinator takes the worker's token too.
  CoordinatorClient coordinator(ps->address(), absl::Seconds(5), *worker_credentials);
  absl::StatusOr<AcquireResult> lease = coordinator.Acquire("trainer-0", 2, 1);
  ASSERT_TRUE(lease.ok()) << lease.status();
  ASSERT_TRUE(std::holds_alternative<DataLease>(*lease));
  const DataLease& granted = std::get<DataLease>(*lease);
  EXPECT_TRUE(coordinator.Complete(granted.lease_id, granted.secret).ok());

  absl::StatusOr<std::vector<CheckpointResult>> refused = worker->Checkpoint();
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kPermissionDenied) << refused.status();

  auto admin_credentials = auth::ClientCredentials::Load(Tls("admin.token"));
  ASSERT_TRUE(admin_credentials.ok());
  ClientOptions admin_options = WorkerOptions(*ps, *admin_credentials, "");
  absl::StatusOr<std::unique_ptr<PsClient>> admin = PsClient::Connect(admin_options);
  ASSERT_TRUE(admin.ok()) << admin.status();
  absl::StatusOr<std::vector<CheckpointResult>> written = (*admin)->Checkpoint();
  ASSERT_TRUE(written.ok()) << written.status();
  EXPECT_EQ(written->at(0).version, 1u);
  struct stat st {};
  EXPECT_EQ(::stat(written->at(0).path.c_str(), &st), 0) << written->at(0).path;
  worker->Leave().IgnoreError();
  testing::RemoveTree(*checkpoints);
}

TEST_F(SecurityTest, TokensWorkWithoutTlsForLocalRuns) {
  std::unique_ptr<PsProcess> ps =
      StartShard({"--auth_tokens_file=" + Path("tokens"), "--auth_reload_seconds=0.2"});
  ASSERT_NE(ps, nullptr);
  auth::ClientSecurity reader;
  reader.token_file = Path("reader.token");
  std::map<std::string, grpc::StatusCode> codes = CallEverything(Channel(ps->address(), reader));
  EXPECT_EQ(codes["GetStatus"], grpc::StatusCode::OK);
  EXPECT_EQ(codes["Join"], grpc::StatusCode::PERMISSION_DENIED);
  codes = CallEverything(Channel(ps->address(), auth::ClientSecurity()));
  EXPECT_EQ(codes["GetStatus"], grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(ps->Log(), HasSubstr("serving without TLS"));
}

TEST_F(SecurityTest, PlaintextWithoutAuthenticationSaysSoLoudly) {
  std::unique_ptr<PsProcess> ps = StartShard({});
  ASSERT_NE(ps, nullptr);
  EXPECT_THAT(ps->Log(), HasSubstr(absl::StrCat(
                             "serving without TLS or authentication: anyone who reaches port ",
                             ps->grpc_port(), " can read and change the model")));
  EXPECT_EQ(CallEverything(Channel(ps->address(), auth::ClientSecurity()))["GetStatus"],
            grpc::StatusCode::OK);
}

TEST_F(SecurityTest, RotatedTokenFileIsReloaded) {
  const std::string tokens = Path("rotating-tokens");
  WriteFile(tokens, absl::StrCat(kReaderToken, " reader\n"));
  std::unique_ptr<PsProcess> ps =
      StartShard({"--auth_tokens_file=" + tokens, "--auth_reload_seconds=0.2"});
  ASSERT_NE(ps, nullptr);
  auth::ClientSecurity reader;
  reader.token_file = Path("reader.token");
  auth::ClientSecurity admin;
  admin.token_file = Path("admin.token");
  const auto get_status = [&](const auth::ClientSecurity& who) {
    auto stub = v1::ParameterShard::NewStub(Channel(ps->address(), who));
    grpc::ClientContext context;
    SetDeadline(&context);
    v1::ShardStatus status;
    return stub->GetStatus(&context, v1::GetStatusRequest(), &status).error_code();
  };
  EXPECT_EQ(get_status(reader), grpc::StatusCode::OK);
  EXPECT_EQ(get_status(admin), grpc::StatusCode::UNAUTHENTICATED);

  // Rotation: the admin token is added and the reader's removed.
  WriteFile(tokens, absl::StrCat(kAdminToken, " admin\n"));
  EXPECT_TRUE(testing::WaitFor([&] { return get_status(admin) == grpc::StatusCode::OK; },
                               absl::Seconds(20), absl::Milliseconds(100))
                  .ok());
  EXPECT_EQ(get_status(reader), grpc::StatusCode::UNAUTHENTICATED);

  // A broken file keeps the previous tokens.
  WriteFile(tokens, "not a token file\n");
  EXPECT_TRUE(
      testing::WaitFor(
          [&] { return ps->Log().find("keeping the previous tokens") != std::string::npos; },
          absl::Seconds(20), absl::Milliseconds(100))
          .ok())
      << ps->Log();
  EXPECT_EQ(get_status(admin), grpc::StatusCode::OK);
}

std::vector<std::string> MutualTlsFlags(const std::string& dir_path_ca,
                                        std::vector<std::string> extra) {
  extra.push_back("--tls_ca=" + dir_path_ca);
  return extra;
}

TEST_F(SecurityTest, MutualTlsRequiresAClientCertificateOfTheCa) {
  std::unique_ptr<PsProcess> ps = StartShard(MutualTlsFlags(Path("ca.pem"), TlsTokenFlags()));
  ASSERT_NE(ps, nullptr);
  // No client certificate: the handshake fails, even for health.
  grpc::Status s = HealthCheck(Channel(ps->address(), Tls("admin.token")));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();
  // A client certificate of another CA: the same.
  s = HealthCheck(Channel(ps->address(), Tls("admin.token", "other-client")));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();
  // A good certificate: served, and the token still decides the role.
  std::map<std::string, grpc::StatusCode> codes =
      CallEverything(Channel(ps->address(), Tls("reader.token", "worker")));
  EXPECT_EQ(codes["GetStatus"], grpc::StatusCode::OK);
  EXPECT_EQ(codes["Join"], grpc::StatusCode::PERMISSION_DENIED);
  codes = CallEverything(Channel(ps->address(), Tls("", "worker")));
  EXPECT_EQ(codes["GetStatus"], grpc::StatusCode::UNAUTHENTICATED);
}

// A replicated pair (dcasgd-ps --replicas=2) where the members, the witness
// and the clients all require mutual TLS and tokens: each member's own
// calls (to the witness, and the replica's stream to the primary) present a
// client certificate of the CA (--peer_tls_cert) and the replication token.
// The pair forms, a worker's push reaches both members, and the replica
// takes over when the primary is killed.
TEST_F(SecurityTest, ReplicatedPairUnderMutualTls) {
  absl::StatusOr<std::string> dir = testing::MakeTempDir("dcasgd-security-pair");
  ASSERT_TRUE(dir.ok()) << dir.status();
  const std::vector<std::string> server_tls = {
      "--tls_cert=" + Path("server.pem"), "--tls_key=" + Path("server.key"),
      "--tls_ca=" + Path("ca.pem"), "--auth_tokens_file=" + Path("tokens")};
  std::vector<std::string> witness_flags = {"--listen=127.0.0.1:0", "--state_dir=" + *dir,
                                            "--shard_count=1", "--metrics_address="};
  witness_flags.insert(witness_flags.end(), server_tls.begin(), server_tls.end());
  absl::StatusOr<std::unique_ptr<PsProcess>> witness =
      PsProcess::StartBinary(testing::WitnessBinaryPath(), witness_flags);
  ASSERT_TRUE(witness.ok()) << witness.status();
  const std::string address[2] = {absl::StrCat("127.0.0.1:", testing::FreePort()),
                                  absl::StrCat("127.0.0.1:", testing::FreePort())};
  std::unique_ptr<PsProcess> member[2];
  for (int m = 0; m < 2; ++m) {
    std::vector<std::string> flags = {"--listen=" + address[m],
                                      "--replicas=2",
                                      absl::StrCat("--member=", m == 0 ? "a" : "b"),
                                      "--peer_address=" + address[1 - m],
                                      "--witness_address=" + (*witness)->address(),
                                      "--replication_heartbeat_ms=50",
                                      "--replication_lease_ms=300",
                                      "--failover_timeout_ms=800",
                                      "--update_rule=asgd",
                                      "--lr=1",
                                      "--peer_tls_ca=" + Path("ca.pem"),
                                      "--peer_tls_cert=" + Path("worker.pem"),
                                      "--peer_tls_key=" + Path("worker.key"),
                                      "--peer_token_file=" + Path("replication.token")};
    flags.insert(flags.end(), server_tls.begin(), server_tls.end());
    member[m] = StartShard(flags);
    ASSERT_NE(member[m], nullptr);
  }
  auto role = [&](int m) {
    auto stub = v1::ParameterShard::NewStub(Channel(address[m], Tls("admin.token", "worker")));
    grpc::ClientContext context;
    SetDeadline(&context);
    v1::ShardStatus status;
    return stub->GetStatus(&context, v1::GetStatusRequest(), &status).ok()
               ? status.replication_role()
               : std::string("unanswered");
  };
  ASSERT_TRUE(testing::WaitFor([&] { return role(0) == "primary"; }, absl::Seconds(30)).ok())
      << member[0]->Log() << member[1]->Log();
  EXPECT_EQ(role(1), "replica");

  auto credentials = auth::ClientCredentials::Load(Tls("worker.token", "worker"));
  ASSERT_TRUE(credentials.ok()) << credentials.status();
  ClientOptions options = WorkerOptions(*member[0], *credentials, "trainer-0");
  options.replica_addresses = {address[1]};
  options.max_attempts = 8;
  options.initial_backoff = absl::Milliseconds(20);
  options.max_backoff = absl::Milliseconds(200);
  TensorMap weights;
  std::unique_ptr<PsClient> worker = DeclaredWorker(options, &weights);
  ASSERT_NE(worker, nullptr);
  TensorMap gradients{{"w", {0.5f, 0.5f, 0.5f, 0.5f}}};
  ASSERT_TRUE(worker->PushPull(gradients, &weights).ok());
  // Acknowledged, so b has it: kill a, and b answers the next push.
  ASSERT_TRUE(member[0]->Kill(SIGKILL).ok());
  ASSERT_TRUE(worker->PushPull(gradients, &weights).ok()) << member[1]->Log();
  EXPECT_THAT(weights["w"], ::testing::ElementsAre(0.0f, 0.0f, 0.0f, 0.0f));
  EXPECT_EQ(role(1), "primary-solo");
  worker.reset();
  member[1].reset();
  witness->reset();
  testing::RemoveTree(*dir);
}

TEST_F(SecurityTest, CertificateIdentitiesCarryRoles) {
  std::unique_ptr<PsProcess> ps =
      StartShard({"--tls_cert=" + Path("server.pem"), "--tls_key=" + Path("server.key"),
                  "--tls_ca=" + Path("ca.pem"), "--auth_cert_roles=worker-client=worker"});
  ASSERT_NE(ps, nullptr);
  std::map<std::string, grpc::StatusCode> codes =
      CallEverything(Channel(ps->address(), Tls("", "worker")));
  EXPECT_EQ(codes["Join"], grpc::StatusCode::OK);
  EXPECT_EQ(codes["GetStatus"], grpc::StatusCode::OK);
  EXPECT_EQ(codes["Checkpoint"], grpc::StatusCode::PERMISSION_DENIED);
  // A certificate of the CA without a role.
  codes = CallEverything(Channel(ps->address(), Tls("", "reader")));
  EXPECT_EQ(codes["GetStatus"], grpc::StatusCode::PERMISSION_DENIED);
}

TEST_F(SecurityTest, ReplacedServerCertificateIsPickedUp) {
  absl::StatusOr<std::string> dir = testing::MakeTempDir("dcasgd-security-rotate");
  ASSERT_TRUE(dir.ok());
  const std::string cert = *dir + "/tls.crt";
  const std::string key = *dir + "/tls.key";
  std::filesystem::copy_file(Path("other-server.pem"), cert);
  std::filesystem::copy_file(Path("other-server.key"), key);
  std::unique_ptr<PsProcess> ps =
      StartShard({"--tls_cert=" + cert, "--tls_key=" + key, "--tls_reload_seconds=1"});
  ASSERT_NE(ps, nullptr);
  // The client trusts only the test CA; the shard's certificate is of
  // another one.
  const grpc::Status before = HealthCheck(Channel(ps->address(), Tls()));
  EXPECT_EQ(before.error_code(), grpc::StatusCode::UNAVAILABLE) << before.error_message();

  // Rotation as a Secret volume does it: a new directory swapped in whole.
  // Here the key is written first and then the certificate; gRPC ignores the
  // pair until both match.
  std::filesystem::copy_file(Path("server.key"), key + ".new");
  std::filesystem::rename(key + ".new", key);
  std::filesystem::copy_file(Path("server.pem"), cert + ".new");
  std::filesystem::rename(cert + ".new", cert);
  EXPECT_TRUE(testing::WaitFor([&] { return HealthCheck(Channel(ps->address(), Tls())).ok(); },
                               absl::Seconds(30), absl::Milliseconds(200))
                  .ok());
  testing::RemoveTree(*dir);
}

TEST_F(SecurityTest, PlaintextHealthPortAnswersOnlyHealth) {
  std::vector<std::string> flags = TlsTokenFlags();
  flags.push_back("--health_listen=127.0.0.1:0");
  std::unique_ptr<PsProcess> ps = StartShard(flags);
  ASSERT_NE(ps, nullptr);
  ASSERT_GT(ps->health_port(), 0);
  const std::string health_address = absl::StrCat("127.0.0.1:", ps->health_port());
  // What Kubernetes' gRPC probes do: plaintext, no token.
  auth::ClientSecurity plaintext;
  const grpc::Status health = HealthCheck(Channel(health_address, plaintext));
  EXPECT_TRUE(health.ok()) << health.error_message();
  auto stub = grpc::health::v1::Health::NewStub(Channel(health_address, plaintext));
  grpc::ClientContext context;
  SetDeadline(&context);
  grpc::health::v1::HealthCheckRequest request;
  request.set_service("dcasgd.checkpoint");
  grpc::health::v1::HealthCheckResponse response;
  ASSERT_TRUE(stub->Check(&context, request, &response).ok());
  EXPECT_EQ(response.status(), grpc::health::v1::HealthCheckResponse::SERVING);
  // No dcasgd service there, even with a token.
  plaintext.token_file = Path("admin.token");
  for (const auto& [rpc, code] : CallEverything(Channel(health_address, plaintext))) {
    EXPECT_EQ(code, grpc::StatusCode::UNIMPLEMENTED) << rpc;
  }
}

TEST_F(SecurityTest, BadTlsFlagsStopTheShardWithTheReason) {
  // A certificate without its key: a flag error.
  absl::StatusOr<std::unique_ptr<PsProcess>> ps =
      PsProcess::Start({"--tls_cert=" + Path("server.pem")}, absl::Seconds(10));
  ASSERT_FALSE(ps.ok());
  EXPECT_THAT(std::string(ps.status().message()), HasSubstr("--tls_key"));
  // A key that is not the certificate's.
  ps = PsProcess::Start({"--tls_cert=" + Path("server.pem"), "--tls_key=" + Path("worker.key")},
                        absl::Seconds(10));
  ASSERT_FALSE(ps.ok());
  EXPECT_THAT(std::string(ps.status().message()), HasSubstr("is not the key of"));
  // A token file with a short token.
  const std::string tokens = Path("short-tokens");
  WriteFile(tokens, "short reader\n");
  ps = PsProcess::Start({"--auth_tokens_file=" + tokens}, absl::Seconds(10));
  ASSERT_FALSE(ps.ok());
  EXPECT_THAT(std::string(ps.status().message()), HasSubstr("token file line 1"));
  EXPECT_THAT(std::string(ps.status().message()), ::testing::Not(HasSubstr("short reader")));
}

}  // namespace
}  // namespace dcasgd
