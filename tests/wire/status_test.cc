#include "wire/status.h"

#include <string>

#include "gtest/gtest.h"

namespace dcasgd {
namespace {

TEST(ToGrpcStatus, KeepsCodeAndMessageForEveryCode) {
  for (int code = 0; code <= 16; ++code) {
    const absl::Status status(static_cast<absl::StatusCode>(code),
                              code == 0 ? "" : "message " + std::to_string(code));
    const grpc::Status converted = ToGrpcStatus(status);
    EXPECT_EQ(static_cast<int>(converted.error_code()), code);
    EXPECT_EQ(converted.error_message(), std::string(status.message()));
  }
  EXPECT_EQ(ToGrpcStatus(absl::NotFoundError("w")).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(ToGrpcStatus(absl::ResourceExhaustedError("big")).error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);
}

TEST(FromGrpcStatus, OkStaysOk) {
  EXPECT_TRUE(FromGrpcStatus(grpc::Status::OK, "shard 0 (a:1)").ok());
}

TEST(FromGrpcStatus, KeepsEveryCodeAndNamesTheShard) {
  for (int code = 1; code <= 16; ++code) {
    const grpc::Status status(static_cast<grpc::StatusCode>(code), "unknown tensor 'w'");
    const absl::Status converted = FromGrpcStatus(status, "shard 1 (10.0.0.2:7000)");
    EXPECT_EQ(static_cast<int>(converted.code()), code);
    EXPECT_EQ(converted.message(), "shard 1 (10.0.0.2:7000): unknown tensor 'w'");
  }
  EXPECT_EQ(FromGrpcStatus(grpc::Status(grpc::StatusCode::UNAVAILABLE, "x"), "s").code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(FromGrpcStatus(grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "x"), "s").code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(Status, RoundTripKeepsCodeAndMessage) {
  for (int code = 1; code <= 16; ++code) {
    const absl::Status status(static_cast<absl::StatusCode>(code), "why");
    const absl::Status back = FromGrpcStatus(ToGrpcStatus(status), "peer");
    EXPECT_EQ(back.code(), status.code());
    EXPECT_EQ(back.message(), "peer: why");
  }
}

// A call that never reached a server has no trailers: no role. (A real
// refusal with one: Replication.RoleHintsCarryACallThroughAFailover... in
// tests/ps/replication_test.cc.)
TEST(FromGrpcCall, WithoutTrailersIsFromGrpcStatusAndNamesNoRole) {
  grpc::ClientContext context;
  const absl::Status converted =
      FromGrpcCall(grpc::Status(grpc::StatusCode::UNAVAILABLE, "gone"), context, "shard 0 (a:1)");
  EXPECT_EQ(converted.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(converted.message(), "shard 0 (a:1): gone");
  EXPECT_EQ(RefusingRole(converted), "");
  EXPECT_TRUE(FromGrpcCall(grpc::Status::OK, context, "s").ok());
}

TEST(RefusingRole, IsWhatSetRefusingRoleKept) {
  absl::Status status = absl::UnavailableError("member b is replica");
  EXPECT_EQ(RefusingRole(status), "");
  SetRefusingRole(&status, "catching-up");
  EXPECT_EQ(RefusingRole(status), "catching-up");
  EXPECT_EQ(status.message(), "member b is replica") << "the message is unchanged";
  EXPECT_EQ(RefusingRole(absl::UnavailableError("member b is replica")), "");
}

}  // namespace
}  // namespace dcasgd
