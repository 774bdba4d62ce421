// Worker sessions against real dcasgd-ps processes (docs/security.md,
// "Worker sessions"): a client that knows another worker's id, but not its
// session, can neither push, pull with a backup, renew nor end that worker's
// lease, nor renew or complete its data leases; the refusals change nothing
// the victim can see, and the session appears in no status, metric, log or
// error.
#include <signal.h>

#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "dcasgd/v1/coordinator.grpc.pb.h"
#include "dcasgd/v1/ps.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "tests/testing/exchange_round.h"
#include "tests/testing/float_bytes.h"
#include "tests/testing/ps_process.h"

namespace dcasgd {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using testing::PsProcess;

using testing::Bytes;

// What a worker sends: its id and a session (right, wrong or missing).
struct Credentials {
  uint64_t worker_id = 0;
  std::string session;
};

// The value of the shard's metric `name` whose labels include `label`, or -1.
double Metric(const PsProcess& ps, const std::string& name, const std::string& label) {
  absl::StatusOr<std::string> text = testing::HttpGet(ps.metrics_port(), "/metrics");
  if (!text.ok()) return -1;
  for (absl::string_view line : absl::StrSplit(*text, '\n')) {
    if (!absl::StartsWith(line, name + "{") || !absl::StrContains(line, label)) continue;
    double value = 0;
    if (absl::SimpleAtod(line.substr(line.rfind(' ') + 1), &value)) return value;
  }
  return -1;
}

// Every form in which a secret could leak into text.
std::vector<std::string> Encodings(const std::string& secret) {
  return {secret, absl::BytesToHexString(secret), absl::Base64Escape(secret),
          absl::WebSafeBase64Escape(secret), absl::CEscape(secret)};
}

class WorkerSessionTest : public ::testing::Test {
 protected:
  void Start(std::vector<std::string> flags) {
    absl::StatusOr<std::unique_ptr<PsProcess>> ps = PsProcess::Start(std::move(flags));
    ASSERT_TRUE(ps.ok()) << ps.status();
    ps_ = *std::move(ps);
    auto channel = grpc::CreateChannel(ps_->address(), grpc::InsecureChannelCredentials());
    stub_ = v1::ParameterShard::NewStub(channel);
    coordinator_ = v1::DataCoordinator::NewStub(channel);
  }

  void Declare(const std::string& name, int64_t elements, uint32_t chunk_elements) {
    v1::DeclareTensorsRequest request;
    v1::TensorSpec* spec = request.add_tensors();
    spec->set_name(name);
    spec->add_shape(elements);
    spec->set_chunk_elements(chunk_elements);
    spec->mutable_init()->mutable_constant()->set_value(1.0f);
    v1::DeclareTensorsResponse response;
    grpc::ClientContext context;
    const grpc::Status status = stub_->DeclareTensors(&context, request, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
  }

  Credentials Join(const std::string& name) {
    v1::JoinRequest request;
    request.set_worker_name(name);
    v1::JoinResponse response;
    grpc::ClientContext context;
    const grpc::Status status = stub_->Join(&context, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(response.session().size(), 16u);
    return Credentials{response.worker_id(), response.session()};
  }

  grpc::Status Heartbeat(const Credentials& as) {
    v1::HeartbeatRequest request;
    request.set_worker_id(as.worker_id);
    request.set_session(as.session);
    v1::HeartbeatResponse response;
    grpc::ClientContext context;
    return stub_->Heartbeat(&context, request, &response);
  }

  grpc::Status Leave(const Credentials& as) {
    v1::LeaveRequest request;
    request.set_worker_id(as.worker_id);
    request.set_session(as.session);
    v1::LeaveResponse response;
    grpc::ClientContext context;
    return stub_->Leave(&context, request, &response);
  }

  // Pulls every chunk; the values of the whole tensor "w" in *values.
  grpc::Status Pull(const Credentials& as, std::vector<float>* values = nullptr) {
    v1::PullRequest request;
    request.set_worker_id(as.worker_id);
    request.set_session(as.session);
    grpc::ClientContext context;
    auto reader = stub_->Pull(&context, request);
    std::map<uint64_t, std::string> chunks;
    v1::PullResponse message;
    while (reader->Read(&message)) chunks[message.chunk().chunk_index()] = message.chunk().values();
    if (values != nullptr) {
      values->clear();
      for (const auto& [index, bytes] : chunks) {
        const size_t old = values->size();
        values->resize(old + bytes.size() / sizeof(float));
        std::memcpy(values->data() + old, bytes.data(), bytes.size());
      }
    }
    return reader->Finish();
  }

  // A push of g to every element of "w" (8 elements in two chunks of 4).
  grpc::Status Push(const Credentials& as, float g, v1::PushResponse* response) {
    grpc::ClientContext context;
    auto writer = stub_->Push(&context, response);
    for (const v1::PushRequest& m : Gradient(as, g)) {
      if (!writer->Write(m)) break;
    }
    writer->WritesDone();
    return writer->Finish();
  }

  grpc::Status PushPull(const Credentials& as, float g) {
    grpc::ClientContext context;
    auto stream = stub_->PushPull(&context);
    for (const v1::PushRequest& m : Gradient(as, g)) {
      if (!stream->Write(m)) break;
    }
    stream->WritesDone();
    v1::PullResponse message;
    while (stream->Read(&message)) {
    }
    return stream->Finish();
  }

  // The same push as one round of an Exchange stream: the stream's status
  // when refused, else the round's.
  grpc::Status ExchangeRound(const Credentials& as, float g) {
    grpc::ClientContext context;
    return testing::ExchangeAll(stub_.get(), &context,
                                {testing::RoundOf(1, Gradient(as, g), /*pull_back=*/true)})
        .RoundStatus(1);
  }

  static std::vector<v1::PushRequest> Gradient(const Credentials& as, float g) {
    std::vector<v1::PushRequest> messages(2);
    for (uint64_t c = 0; c < 2; ++c) {
      messages[c].mutable_gradient()->set_tensor("w");
      messages[c].mutable_gradient()->set_chunk_index(c);
      messages[c].mutable_gradient()->set_values(Bytes({g, g, g, g}));
    }
    messages[0].set_worker_id(as.worker_id);
    messages[0].set_session(as.session);
    messages[0].set_chunk_count(2);
    return messages;
  }

  v1::ShardStatus Status() {
    v1::ShardStatus status;
    grpc::ClientContext context;
    const grpc::Status s = stub_->GetStatus(&context, v1::GetStatusRequest(), &status);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return status;
  }

  std::unique_ptr<PsProcess> ps_;
  std::unique_ptr<v1::ParameterShard::Stub> stub_;
  std::unique_ptr<v1::DataCoordinator::Stub> coordinator_;
};

// Worker B knows worker A's id. With no session, a made-up one, or B's own,
// every call that acts as A is UNAUTHENTICATED, and A's lease, backup and
// pull version are as before: A's next push still sees the staleness of its
// own pull, and A trains on.
TEST_F(WorkerSessionTest, AnotherWorkerCannotActAsAWorkerWhoseIdItKnows) {
  Start({"--update_rule=dcasgd-c"});
  Declare("w", 8, 4);
  const Credentials a = Join("a");
  const Credentials b = Join("b");
  ASSERT_NE(a.session, b.session);
  ASSERT_TRUE(Pull(a).ok());  // A's backup and pull version: version 0
  ASSERT_TRUE(Pull(b).ok());
  v1::PushResponse pushed;
  ASSERT_TRUE(Push(b, 0.5f, &pushed).ok());  // version 1: A's pull is now one behind
  ASSERT_EQ(pushed.version(), 1u);
  const v1::ShardStatus before = Status();
  std::vector<float> weights_before;
  ASSERT_TRUE(Pull(Credentials{}, &weights_before).ok());

  std::string made_up = a.session;
  made_up[0] ^= 0x5a;
  const std::vector<std::pair<std::string, Credentials>> forgeries = {
      {"no session", Credentials{a.worker_id, ""}},
      {"a made-up session", Credentials{a.worker_id, made_up}},
      {"B's own session", Credentials{a.worker_id, b.session}},
      {"a session one byte short", Credentials{a.worker_id, a.session.substr(1)}},
  };
  int refusals = 0;
  for (const auto& [what, forged] : forgeries) {
    v1::PushResponse response;
    std::vector<std::pair<std::string, grpc::Status>> calls = {
        {"Push", Push(forged, 100.0f, &response)},
        {"PushPull", PushPull(forged, 100.0f)},
        {"Exchange", ExchangeRound(forged, 100.0f)},
        {"Pull", Pull(forged)},
        {"Heartbeat", Heartbeat(forged)},
        {"Leave", Leave(forged)},
    };
    for (const auto& [call, status] : calls) {
      EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED)
          << call << " with " << what << ": " << status.error_message();
      EXPECT_THAT(status.error_message(), HasSubstr("session"));
      EXPECT_THAT(status.error_message(), HasSubstr(std::to_string(a.worker_id)));
      for (const std::string& leaked : Encodings(a.session)) {
        EXPECT_THAT(status.error_message(), Not(HasSubstr(leaked))) << call << " with " << what;
      }
      for (const std::string& leaked : Encodings(b.session)) {
        EXPECT_THAT(status.error_message(), Not(HasSubstr(leaked))) << call << " with " << what;
      }
      ++refusals;
    }
  }

  // Nothing changed: version, weights, members, backups.
  const v1::ShardStatus after = Status();
  EXPECT_EQ(after.version(), before.version());
  EXPECT_EQ(after.active_workers(), 2u);
  EXPECT_EQ(after.backup_bytes(), before.backup_bytes());
  std::vector<float> weights_after;
  ASSERT_TRUE(Pull(Credentials{}, &weights_after).ok());
  EXPECT_EQ(weights_after, weights_before);
  EXPECT_EQ(Metric(*ps_, "dcasgd_ps_rejected_requests_total", "reason=\"unauthenticated\""),
            refusals);

  // A's lease lives and its pull version is still 0 (a forged pull would
  // have moved it to 1): its push has staleness 1, and it trains on.
  ASSERT_TRUE(Heartbeat(a).ok());
  v1::PushResponse a_pushed;
  const grpc::Status a_push = Push(a, 0.25f, &a_pushed);
  ASSERT_TRUE(a_push.ok()) << a_push.error_message();
  EXPECT_EQ(a_pushed.version(), 2u);
  EXPECT_EQ(a_pushed.staleness(), 1u) << "A's pull version was moved by a forged pull";
  ASSERT_TRUE(Pull(a).ok());
  ASSERT_TRUE(PushPull(a, 0.25f).ok());
  EXPECT_EQ(Status().version(), 3u);
  EXPECT_TRUE(Leave(a).ok());
  EXPECT_EQ(Status().active_workers(), 1u);
}

// A pull with worker id 0 records nothing and needs no session (the
// evaluator); an unknown or expired worker id is still FAILED_PRECONDITION,
// with or without a session, so clients keep re-joining as before.
TEST_F(WorkerSessionTest, EvaluatorsNeedNoSessionAndUnknownWorkersStillRejoin) {
  Start({"--update_rule=dcasgd-a"});
  Declare("w", 8, 4);
  std::vector<float> values;
  ASSERT_TRUE(Pull(Credentials{0, ""}, &values).ok());
  EXPECT_EQ(values, std::vector<float>(8, 1.0f));
  EXPECT_EQ(Status().backup_bytes(), 0u);
  const Credentials a = Join("a");
  const Credentials unknown{a.worker_id ^ 1, a.session};
  v1::PushResponse response;
  EXPECT_EQ(Push(unknown, 1.0f, &response).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(Pull(unknown).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(Heartbeat(unknown).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(Leave(unknown).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(Heartbeat(Credentials{a.worker_id ^ 1, ""}).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
}

// A re-Join by name (a restarted pod) gives a new worker id and a new
// session; the old ones stop working, and the old session does not work
// with the new id either.
TEST_F(WorkerSessionTest, ReJoinByNameGivesANewSessionAndEndsTheOldOne) {
  Start({"--update_rule=dcasgd-c"});
  Declare("w", 8, 4);
  const Credentials old = Join("pod-0");
  ASSERT_TRUE(Pull(old).ok());
  const Credentials renewed = Join("pod-0");
  EXPECT_NE(renewed.worker_id, old.worker_id);
  EXPECT_NE(renewed.session, old.session);
  EXPECT_EQ(Heartbeat(old).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(Heartbeat(Credentials{renewed.worker_id, old.session}).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  v1::PushResponse response;
  EXPECT_EQ(Push(Credentials{renewed.worker_id, old.session}, 1.0f, &response).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(Heartbeat(renewed).ok());
  ASSERT_TRUE(Pull(renewed).ok());
  EXPECT_TRUE(Push(renewed, 1.0f, &response).ok());
  EXPECT_EQ(Status().active_workers(), 1u);
}

// The session is a secret: it is in no GetStatus, no /metrics text and no
// line the shard logs, in any encoding.
TEST_F(WorkerSessionTest, TheSessionAppearsInNoStatusMetricOrLog) {
  Start({"--update_rule=dcasgd-a"});
  Declare("w", 8, 4);
  const Credentials a = Join("a");
  ASSERT_TRUE(Pull(a).ok());
  v1::PushResponse response;
  ASSERT_TRUE(Push(a, 1.0f, &response).ok());
  ASSERT_TRUE(Heartbeat(a).ok());
  EXPECT_EQ(Heartbeat(Credentials{a.worker_id, "guess"}).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  const std::string status = Status().SerializeAsString();
  absl::StatusOr<std::string> metrics = testing::HttpGet(ps_->metrics_port(), "/metrics");
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  ASSERT_TRUE(Leave(a).ok());
  const std::string log = ps_->Log();
  EXPECT_THAT(log, Not(HasSubstr("CHECK failed")));
  for (const std::string& leaked : Encodings(a.session)) {
    EXPECT_THAT(status, Not(HasSubstr(leaked)));
    EXPECT_THAT(*metrics, Not(HasSubstr(leaked)));
    EXPECT_THAT(log, Not(HasSubstr(leaked)));
  }
}

// Data leases: a lease id is easy to guess (they count up), so another
// worker tries to renew and complete one without its secret, with its own,
// and with none: each UNAUTHENTICATED, and the job does not move. Then shard
// 0 is killed and restarted: the lease is restored with its secret's digest,
// so its holder completes it with the secret from before, and the forgery
// still fails. The secret is not in the saved schedule or the shard's log.
TEST_F(WorkerSessionTest, ADataLeaseIsRenewedAndCompletedOnlyByItsHolderAcrossARestart) {
  absl::StatusOr<std::string> dir = testing::MakeTempDir("worker-session-test");
  ASSERT_TRUE(dir.ok()) << dir.status();
  Start({"--checkpoint_dir=" + *dir});
  auto acquire = [&](const std::string& name) {
    v1::AcquireDataShardRequest request;
    request.set_worker_name(name);
    request.set_num_data_shards(4);
    request.set_epochs(1);
    v1::AcquireDataShardResponse response;
    grpc::ClientContext context;
    const grpc::Status status = coordinator_->AcquireDataShard(&context, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    EXPECT_TRUE(response.has_lease());
    return response.lease();
  };
  auto renew = [&](uint64_t id, const std::string& secret) {
    v1::RenewDataLeaseRequest request;
    request.set_lease_id(id);
    request.set_lease_secret(secret);
    v1::RenewDataLeaseResponse response;
    grpc::ClientContext context;
    return coordinator_->RenewDataLease(&context, request, &response);
  };
  auto complete = [&](uint64_t id, const std::string& secret) {
    v1::CompleteDataShardRequest request;
    request.set_lease_id(id);
    request.set_lease_secret(secret);
    v1::CompleteDataShardResponse response;
    grpc::ClientContext context;
    return coordinator_->CompleteDataShard(&context, request, &response);
  };
  auto job = [&] {
    v1::JobStatus status;
    grpc::ClientContext context;
    EXPECT_TRUE(coordinator_->GetJobStatus(&context, v1::GetJobStatusRequest(), &status).ok());
    return status;
  };
  const v1::DataLease a = acquire("a");
  const v1::DataLease b = acquire("b");
  ASSERT_EQ(a.lease_secret().size(), 16u);
  for (const std::string& forged : {std::string(), b.lease_secret()}) {
    const grpc::Status renewed = renew(a.lease_id(), forged);
    EXPECT_EQ(renewed.error_code(), grpc::StatusCode::UNAUTHENTICATED) << renewed.error_message();
    const grpc::Status completed = complete(a.lease_id(), forged);
    EXPECT_EQ(completed.error_code(), grpc::StatusCode::UNAUTHENTICATED)
        << completed.error_message();
    for (const std::string& leaked : Encodings(a.lease_secret())) {
      EXPECT_THAT(completed.error_message(), Not(HasSubstr(leaked)));
    }
  }
  EXPECT_EQ(job().completed(), 0u);
  EXPECT_EQ(job().leased(), 2u);
  // The saved schedule while both leases are out.
  absl::StatusOr<std::string> saved = [&]() -> absl::StatusOr<std::string> {
    FILE* f = std::fopen((*dir + "/coordinator.state").c_str(), "r");
    if (f == nullptr) return absl::NotFoundError("no coordinator.state");
    std::string text;
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) text.append(buf, n);
    std::fclose(f);
    return text;
  }();
  ASSERT_TRUE(saved.ok()) << saved.status();
  EXPECT_THAT(*saved, HasSubstr("lease "));
  for (const v1::DataLease& lease : {a, b}) {
    for (const std::string& leaked : Encodings(lease.lease_secret())) {
      EXPECT_THAT(*saved, Not(HasSubstr(leaked)));
    }
  }

  ASSERT_TRUE(ps_->Kill(SIGKILL).ok());
  ASSERT_TRUE(ps_->WaitExit().ok());
  ASSERT_TRUE(ps_->Restart().ok()) << ps_->Log();
  auto channel = grpc::CreateChannel(ps_->address(), grpc::InsecureChannelCredentials());
  coordinator_ = v1::DataCoordinator::NewStub(channel);
  EXPECT_EQ(job().leased(), 2u) << "the leases out survive the restart";
  EXPECT_EQ(complete(a.lease_id(), b.lease_secret()).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(renew(a.lease_id(), a.lease_secret()).ok());
  EXPECT_TRUE(complete(a.lease_id(), a.lease_secret()).ok());
  EXPECT_TRUE(complete(b.lease_id(), b.lease_secret()).ok());
  EXPECT_EQ(job().completed(), 2u);

  const std::string log = ps_->Log();
  for (const v1::DataLease& lease : {a, b}) {
    for (const std::string& leaked : Encodings(lease.lease_secret())) {
      EXPECT_THAT(log, Not(HasSubstr(leaked)));
    }
  }
  ps_.reset();
  testing::RemoveTree(*dir);
}

}  // namespace
}  // namespace dcasgd
