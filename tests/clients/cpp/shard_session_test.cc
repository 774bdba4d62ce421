// One shard session against a real dcasgd-ps: join, the checks of Join, the
// call policy per kind of call, heartbeats and Leave.
#include "clients/cpp/shard_session.h"

#include <memory>
#include <string>
#include <vector>

#include "clients/cpp/channel_args.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/ps_process.h"
#include "wire/status.h"

namespace dcasgd {
namespace client {
namespace {

using ::testing::HasSubstr;

CallPolicy FastPolicy() {
  CallPolicy policy;
  policy.rpc_timeout = absl::Seconds(20);
  policy.max_attempts = 3;
  policy.initial_backoff = absl::Milliseconds(10);
  policy.max_backoff = absl::Milliseconds(50);
  return policy;
}

std::unique_ptr<ShardSession> Session(const testing::PsProcess& shard, uint32_t index,
                                      uint32_t count, std::string worker_name) {
  grpc::ChannelArguments args;
  SetResilienceArgs(&args);
  return std::make_unique<ShardSession>(index, count, std::vector<std::string>{shard.address()},
                                        args, std::move(worker_name), FastPolicy());
}

// Nothing listens there: connections are refused at once.
constexpr char kRefusingAddress[] = "127.0.0.1:1";

// A replicated shard's session whose first member is down (or not the
// primary) and whose second is `shard`.
std::unique_ptr<ShardSession> PairSession(const testing::PsProcess& shard,
                                          std::string worker_name) {
  grpc::ChannelArguments args;
  SetResilienceArgs(&args);
  return std::make_unique<ShardSession>(0, 1,
                                        std::vector<std::string>{kRefusingAddress, shard.address()},
                                        args, std::move(worker_name), FastPolicy());
}

class ShardSessionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto started = testing::PsProcess::Start(
        {"--update_rule=asgd", "--metrics_address=", "--lease_seconds=1"});
    ASSERT_TRUE(started.ok()) << started.status();
    shard_ = std::move(started).value();
  }
  // Heartbeat of `worker_id` with `session`'s current session secret, as the
  // shard sees it.
  absl::Status BeatAs(ShardSession& session, uint64_t worker_id) {
    v1::HeartbeatRequest request;
    request.set_worker_id(worker_id);
    request.set_session(session.credentials().session);
    v1::HeartbeatResponse response;
    grpc::ClientContext context;
    session.SetDeadline(&context);
    return FromGrpcStatus(session.stub()->Heartbeat(&context, request, &response), session.label());
  }

  // Workers the shard counts (GetStatus renews no lease).
  uint32_t ActiveWorkers(ShardSession& session) {
    v1::ShardStatus status;
    grpc::ClientContext context;
    session.SetDeadline(&context);
    if (!session.stub()->GetStatus(&context, v1::GetStatusRequest(), &status).ok()) return ~0u;
    return status.active_workers();
  }

  std::unique_ptr<testing::PsProcess> shard_;
};

TEST_F(ShardSessionTest, JoinRecordsTheWorkerIdAndLease) {
  auto session = Session(*shard_, 0, 1, "w");
  EXPECT_EQ(session->worker_id(), 0u);
  EXPECT_EQ(session->label(), "shard 0 (" + shard_->address() + ")");
  ASSERT_TRUE(session->Join().ok());
  EXPECT_NE(session->worker_id(), 0u);
  EXPECT_EQ(session->lease(), absl::Seconds(1));
  EXPECT_TRUE(BeatAs(*session, session->worker_id()).ok());
}

TEST_F(ShardSessionTest, JoinRefusesAShardWithAnotherIndexOrCount) {
  auto wrong_count = Session(*shard_, 0, 2, "w");
  const absl::Status status = wrong_count->Join();
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
  EXPECT_THAT(status.message(), HasSubstr("says it is shard 0 of 1"));
  EXPECT_EQ(wrong_count->worker_id(), 0u);
}

TEST_F(ShardSessionTest, APushNeedsAWorkerId) {
  auto evaluator = Session(*shard_, 0, 1, "");
  int attempts = 0;
  const absl::Status status = evaluator->Call(CallKind::kPush, [&](const WorkerCredentials&) {
    ++attempts;
    return absl::OkStatus();
  });
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(attempts, 0) << "nothing is sent";
}

TEST_F(ShardSessionTest, TransientErrorsAreRetriedUpToMaxAttempts) {
  auto session = Session(*shard_, 0, 1, "w");
  int attempts = 0;
  const absl::Status status = session->Call(CallKind::kRead, [&](const WorkerCredentials&) {
    ++attempts;
    return absl::UnavailableError("restarting");
  });
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(attempts, 3);
  attempts = 0;
  EXPECT_EQ(session
                ->Call(CallKind::kRead,
                       [&](const WorkerCredentials&) {
                         ++attempts;
                         return absl::InvalidArgumentError("bad");
                       })
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(attempts, 1) << "other errors are not retried";
}

// Two members: every retry goes to the other member, max_attempts per member.
TEST_F(ShardSessionTest, TwoMembersAreTriedAlternatelyMaxAttemptsEach) {
  auto session = PairSession(*shard_, "w");
  EXPECT_EQ(session->members(), 2u);
  EXPECT_EQ(session->label(), "shard 0 (127.0.0.1:1|" + shard_->address() + ")");
  std::vector<size_t> tried;
  const absl::Status status = session->Call(CallKind::kRead, [&](const WorkerCredentials&) {
    tried.push_back(session->current_member());
    return absl::UnavailableError("not the primary");
  });
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(tried, (std::vector<size_t>{0, 1, 0, 1, 0, 1}));
}

// Refusals that name a role (a member that is not the primary) move to the
// other member at once and, within failover_wait, do not count against
// max_attempts; once it has passed they count as any transient error.
TEST_F(ShardSessionTest, RefusalsNamingARoleDoNotCountWithinFailoverWait) {
  auto session = PairSession(*shard_, "w");
  std::vector<size_t> tried;
  const absl::Status status = session->Call(CallKind::kRead, [&](const WorkerCredentials&) {
    tried.push_back(session->current_member());
    if (tried.size() == 10) return absl::OkStatus();
    absl::Status refused = absl::UnavailableError("member b is catching-up");
    SetRefusingRole(&refused, "catching-up");
    return refused;
  });
  EXPECT_TRUE(status.ok()) << status;
  EXPECT_EQ(tried, (std::vector<size_t>{0, 1, 0, 1, 0, 1, 0, 1, 0, 1})) << "3 attempts per member";

  CallPolicy no_wait = FastPolicy();
  no_wait.failover_wait = absl::ZeroDuration();
  grpc::ChannelArguments args;
  SetResilienceArgs(&args);
  ShardSession strict(0, 1, {kRefusingAddress, shard_->address()}, args, "w", no_wait);
  int attempts = 0;
  const absl::Status refused = strict.Call(CallKind::kRead, [&](const WorkerCredentials&) {
    ++attempts;
    absl::Status s = absl::UnavailableError("member b is replica");
    SetRefusingRole(&s, "replica");
    return s;
  });
  EXPECT_EQ(refused.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(RefusingRole(refused), "replica") << "the last refusal, role and all";
  EXPECT_EQ(attempts, 6);
}

// A member that refuses connections: the session joins at the other member,
// and stays with it, so later calls need no retry.
TEST_F(ShardSessionTest, ASessionMovesToTheMemberThatAnswersAndStays) {
  auto session = PairSession(*shard_, "w");
  ASSERT_TRUE(session->Join().ok());
  EXPECT_NE(session->worker_id(), 0u);
  EXPECT_EQ(session->current_member(), 1u);
  EXPECT_EQ(ActiveWorkers(*session), 1u);
  int attempts = 0;
  ASSERT_TRUE(session
                  ->Call(CallKind::kPush,
                         [&](const WorkerCredentials& worker) {
                           ++attempts;
                           return BeatAs(*session, worker.worker_id);
                         })
                  .ok());
  EXPECT_EQ(attempts, 1);
  EXPECT_EQ(session->current_member(), 1u);
  // The push stream opens at the current member.
  EXPECT_NE(session->Exchange(), nullptr);
  ASSERT_TRUE(session->Leave(3).ok());
  EXPECT_EQ(ActiveWorkers(*session), 0u);
}

// A refused session is returned as it is: neither retried nor re-joined.
TEST_F(ShardSessionTest, UnauthenticatedIsNeitherRetriedNorRejoined) {
  auto session = Session(*shard_, 0, 1, "w");
  ASSERT_TRUE(session->Join().ok());
  const uint64_t id = session->worker_id();
  for (CallKind kind : {CallKind::kRead, CallKind::kPull, CallKind::kPush}) {
    int attempts = 0;
    const absl::Status status = session->Call(kind, [&](const WorkerCredentials&) {
      ++attempts;
      return absl::UnauthenticatedError("session wrong");
    });
    EXPECT_EQ(status.code(), absl::StatusCode::kUnauthenticated);
    EXPECT_EQ(attempts, 1);
    EXPECT_EQ(session->worker_id(), id);
  }
}

TEST_F(ShardSessionTest, ALostLeaseRejoinsPullsRetryAndPushesSayPullAgain) {
  auto session = Session(*shard_, 0, 1, "w");
  ASSERT_TRUE(session->Join().ok());
  const uint64_t first = session->worker_id();
  const std::string first_session = session->credentials().session;
  EXPECT_EQ(first_session.size(), 16u);
  std::vector<WorkerCredentials> sent;
  const absl::Status pulled = session->Call(CallKind::kPull, [&](const WorkerCredentials& worker) {
    sent.push_back(worker);
    return sent.size() == 1 ? absl::FailedPreconditionError("lease lost") : absl::OkStatus();
  });
  EXPECT_TRUE(pulled.ok()) << pulled;
  ASSERT_EQ(sent.size(), 2u);
  EXPECT_EQ(sent[0].worker_id, first);
  EXPECT_EQ(sent[0].session, first_session);
  EXPECT_NE(sent[1].worker_id, first) << "the retry runs with the new worker id";
  EXPECT_NE(sent[1].session, first_session) << "and the new session";
  EXPECT_TRUE(BeatAs(*session, sent[1].worker_id).ok()) << "the shard accepts the new session";

  const absl::Status pushed = session->Call(CallKind::kPush, [&](const WorkerCredentials&) {
    return absl::FailedPreconditionError("no backup");
  });
  EXPECT_EQ(pushed.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(pushed.message(), HasSubstr("re-joined; pull again"));

  // Reads never re-join.
  const uint64_t before_read = session->worker_id();
  EXPECT_EQ(session
                ->Call(CallKind::kRead,
                       [&](const WorkerCredentials&) { return absl::FailedPreconditionError("x"); })
                .code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(session->worker_id(), before_read);
}

TEST_F(ShardSessionTest, BeatsKeepTheLeaseAndABeatAfterExpiryRejoins) {
  auto session = Session(*shard_, 0, 1, "w");
  ASSERT_TRUE(session->Join().ok());
  const uint64_t first = session->worker_id();
  for (int i = 0; i < 8; ++i) {
    absl::SleepFor(absl::Milliseconds(250));
    session->Beat(absl::Seconds(5));
  }
  EXPECT_EQ(session->worker_id(), first) << "2 s of beats every 250 ms keep a 1 s lease";
  // Without beats the lease expires (the shard reaps every lease/4); then a
  // beat finds it gone and re-joins.
  ASSERT_TRUE(
      testing::WaitFor([&] { return ActiveWorkers(*session) == 0; }, absl::Seconds(10)).ok());
  session->Beat(absl::Seconds(5));
  EXPECT_NE(session->worker_id(), first);
  EXPECT_NE(session->worker_id(), 0u);
}

TEST_F(ShardSessionTest, LeaveEndsTheLeaseAndNeverRejoins) {
  auto session = Session(*shard_, 0, 1, "w");
  ASSERT_TRUE(session->Join().ok());
  const uint64_t id = session->worker_id();
  ASSERT_TRUE(session->Leave(3).ok());
  EXPECT_EQ(session->worker_id(), 0u);
  EXPECT_EQ(BeatAs(*session, id).code(), absl::StatusCode::kFailedPrecondition)
      << "the shard forgot the worker";
  EXPECT_EQ(session->Rejoin(0).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(session->Leave(3).ok()) << "idempotent";
}

}  // namespace
}  // namespace client
}  // namespace dcasgd
