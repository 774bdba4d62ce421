// The coordinator over gRPC: the service shard 0 hosts and the client the
// workers use, against each other on loopback.
#include <memory>
#include <string>
#include <variant>

#include "absl/strings/str_cat.h"
#include "coordinator/coordinator_client.h"
#include "coordinator/coordinator_service.h"
#include "gmock/gmock.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "gtest/gtest.h"

namespace dcasgd {
namespace {

using ::testing::HasSubstr;

class CoordinatorRpcTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_NE(port, 0);
    address_ = absl::StrCat("127.0.0.1:", port);
    client_ = std::make_unique<CoordinatorClient>(address_, absl::Seconds(2));
  }
  void TearDown() override { server_->Shutdown(); }

  ManualClock clock_;
  DataCoordinator coordinator_{absl::Seconds(30), &clock_};
  DataCoordinatorService service_{&coordinator_};
  std::unique_ptr<grpc::Server> server_;
  std::string address_;
  std::unique_ptr<CoordinatorClient> client_;
};

TEST_F(CoordinatorRpcTest, AJobFromFirstLeaseToDone) {
  absl::StatusOr<AcquireResult> first = client_->Acquire("w0", 1, 1);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(std::holds_alternative<DataLease>(*first));
  const DataLease lease = std::get<DataLease>(*first);
  EXPECT_EQ(lease.data_shard, 0u);
  EXPECT_EQ(lease.epoch, 0u);
  EXPECT_EQ(lease.lease, absl::Seconds(30)) << "the duration crosses the wire in ms";

  // The only item is out: another worker is told when to ask again.
  absl::StatusOr<AcquireResult> second = client_->Acquire("w1", 1, 1);
  ASSERT_TRUE(second.ok()) << second.status();
  ASSERT_TRUE(std::holds_alternative<RetryLater>(*second));
  EXPECT_GT(std::get<RetryLater>(*second).after, absl::ZeroDuration());

  EXPECT_TRUE(client_->Renew(lease.lease_id, lease.secret).ok());
  absl::StatusOr<JobProgress> mid = client_->JobStatus();
  ASSERT_TRUE(mid.ok()) << mid.status();
  EXPECT_TRUE(mid->configured);
  EXPECT_EQ(mid->leased, 1u);
  EXPECT_FALSE(mid->done);

  ASSERT_TRUE(client_->Complete(lease.lease_id, lease.secret).ok());
  absl::StatusOr<JobProgress> done = client_->JobStatus();
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(done->num_data_shards, 1u);
  EXPECT_EQ(done->epochs, 1u);
  EXPECT_EQ(done->completed, 1u);
  EXPECT_TRUE(done->done);
  absl::StatusOr<AcquireResult> after = client_->Acquire("w1", 1, 1);
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_TRUE(std::holds_alternative<JobDone>(*after));
}

// The lease secret crosses the wire; a guessed lease id without it is
// refused (not retried) and renews nothing.
TEST_F(CoordinatorRpcTest, ALeaseIsRenewedAndCompletedOnlyWithItsSecret) {
  absl::StatusOr<AcquireResult> first = client_->Acquire("w0", 2, 1);
  ASSERT_TRUE(first.ok()) << first.status();
  const DataLease lease = std::get<DataLease>(*first);
  EXPECT_EQ(lease.secret.size(), 16u);
  const absl::Status guessed = client_->Complete(lease.lease_id, "guessed");
  EXPECT_EQ(guessed.code(), absl::StatusCode::kUnauthenticated) << guessed;
  EXPECT_THAT(guessed.message(), HasSubstr("CompleteDataShard"));
  EXPECT_EQ(client_->Renew(lease.lease_id, "").code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(coordinator_.Progress().completed, 0u);
  EXPECT_TRUE(client_->Complete(lease.lease_id, lease.secret).ok());
  EXPECT_EQ(coordinator_.Progress().completed, 1u);
}

TEST_F(CoordinatorRpcTest, ErrorsKeepTheirCodeAndNameTheCoordinator) {
  const absl::Status unknown = client_->Renew(12345, "");
  EXPECT_EQ(unknown.code(), absl::StatusCode::kFailedPrecondition) << unknown;
  EXPECT_THAT(unknown.message(),
              HasSubstr("coordinator (shard 0, " + address_ + ") RenewDataLease"));
  EXPECT_EQ(client_->Complete(12345, "").code(), absl::StatusCode::kFailedPrecondition);

  // Validated at the boundary: an empty worker name changes nothing.
  absl::StatusOr<AcquireResult> nameless = client_->Acquire("", 2, 1);
  EXPECT_EQ(nameless.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(coordinator_.Progress().configured);
  EXPECT_EQ(client_->Acquire("w", 0, 1).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(coordinator_.Progress().configured);
}

// A replicated shard 0 ("a|b"): a member that refuses connections (down, or
// not the primary) is passed over, and calls stay with the one that answers.
TEST_F(CoordinatorRpcTest, CallsMoveToTheMemberThatAnswers) {
  CoordinatorClient pair("127.0.0.1:1|" + address_, absl::Seconds(5));
  absl::StatusOr<AcquireResult> first = pair.Acquire("w0", 2, 1);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(std::holds_alternative<DataLease>(*first));
  const DataLease lease = std::get<DataLease>(*first);
  // Renew tries once: it reaches the coordinator only because the client
  // stayed with the member that answered.
  EXPECT_TRUE(pair.Renew(lease.lease_id, lease.secret).ok());
  EXPECT_TRUE(pair.Complete(lease.lease_id, lease.secret).ok());
  EXPECT_EQ(coordinator_.Progress().completed, 1u);
}

TEST(CoordinatorClient, AnUnreachableCoordinatorIsUnavailableAfterItsPatience) {
  // Port 1 on loopback: nothing listens there.
  CoordinatorClient client("127.0.0.1:1", absl::Milliseconds(300));
  const absl::Time start = absl::Now();
  absl::StatusOr<JobProgress> status = client.JobStatus();
  EXPECT_EQ(status.status().code(), absl::StatusCode::kUnavailable) << status.status();
  EXPECT_THAT(status.status().message(), HasSubstr("coordinator (shard 0, 127.0.0.1:1)"));
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(300)) << "retried for its patience";
}

}  // namespace
}  // namespace dcasgd
