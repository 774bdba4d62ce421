#include "auth/health_port.h"

#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"

namespace dcasgd::auth {
namespace {

using ::grpc::health::v1::HealthCheckResponse;
using ::testing::HasSubstr;

// The status `service` reports on 127.0.0.1:`port`, or the call's error
// code as a negative number.
int Check(int port, const std::string& service) {
  auto stub = grpc::health::v1::Health::NewStub(
      grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  HealthCheckResponse response;
  const grpc::Status status = stub->Check(&context, request, &response);
  return status.ok() ? static_cast<int>(response.status()) : -static_cast<int>(status.error_code());
}

TEST(HealthPort, NoAddressMeansNoPortAndNothingToDo) {
  absl::StatusOr<std::unique_ptr<HealthPort>> health = HealthPort::Start("");
  ASSERT_TRUE(health.ok()) << health.status();
  EXPECT_EQ((*health)->port(), 0);
  (*health)->SetServingStatus("x", true);
  (*health)->SetNotServing();
  (*health)->Shutdown();
}

TEST(HealthPort, RepeatsTheStatusesItIsGivenUntilNotServing) {
  absl::StatusOr<std::unique_ptr<HealthPort>> health = HealthPort::Start("127.0.0.1:0");
  ASSERT_TRUE(health.ok()) << health.status();
  const int port = (*health)->port();
  ASSERT_GT(port, 0);
  EXPECT_EQ(Check(port, "dcasgd.test"), -static_cast<int>(grpc::StatusCode::NOT_FOUND));
  (*health)->SetServingStatus("dcasgd.test", true);
  EXPECT_EQ(Check(port, "dcasgd.test"), HealthCheckResponse::SERVING);
  (*health)->SetServingStatus("dcasgd.test", false);
  EXPECT_EQ(Check(port, "dcasgd.test"), HealthCheckResponse::NOT_SERVING);
  (*health)->SetServingStatus("", true);
  (*health)->SetServingStatus("dcasgd.test", true);
  (*health)->SetNotServing();
  EXPECT_EQ(Check(port, ""), HealthCheckResponse::NOT_SERVING);
  EXPECT_EQ(Check(port, "dcasgd.test"), HealthCheckResponse::NOT_SERVING);
  (*health)->Shutdown();
  (*health)->Shutdown();  // idempotent
  EXPECT_EQ(Check(port, ""), -static_cast<int>(grpc::StatusCode::UNAVAILABLE));
}

TEST(HealthPort, AnAddressInUseIsUnavailableNamingIt) {
  absl::StatusOr<std::unique_ptr<HealthPort>> first = HealthPort::Start("127.0.0.1:0");
  ASSERT_TRUE(first.ok()) << first.status();
  const std::string taken = absl::StrCat("127.0.0.1:", (*first)->port());
  absl::StatusOr<std::unique_ptr<HealthPort>> second = HealthPort::Start(taken);
  ASSERT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(second.status().message(), HasSubstr(taken));
  absl::StatusOr<std::unique_ptr<HealthPort>> bad = HealthPort::Start("not an address");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace dcasgd::auth
