// The Exchange stream (ps.proto): rounds of pushes over one long-lived
// stream, against the in-process service over real loopback gRPC. The bad
// pushes of ps_service_test.cc are also sent as rounds there.
#include <limits>
#include <string>
#include <vector>

#include "tests/ps/ps_service_fixture.h"

namespace dcasgd {
namespace ps_test {
namespace {

using ::testing::HasSubstr;

std::vector<float> Values(const v1::ExchangeResponse& response) {
  std::map<uint64_t, std::vector<float>> chunks;
  for (const v1::Chunk& chunk : response.weights()) {
    chunks[chunk.chunk_index()] = Floats(chunk.values());
  }
  std::vector<float> all;
  for (const auto& [index, values] : chunks) all.insert(all.end(), values.begin(), values.end());
  return all;
}

TEST_F(PsServiceTest, ExchangeAppliesItsRoundsInOrderOnOneStream) {
  const uint64_t worker = Join("a");
  ASSERT_TRUE(Pull(worker).status.ok());
  // Three PushPull rounds, then a Push round, all on one stream: each
  // PushPull's answer becomes the backup, so with DC-ASGD-c every round is
  // plain SGD.
  const ExchangeResult result = Exchange(
      {Round(1, FullGradient(worker, 1.0f), true), Round(2, FullGradient(worker, 2.0f), true),
       Round(5, FullGradient(worker, 3.0f), true), Round(6, FullGradient(worker, 4.0f), false)});
  ASSERT_TRUE(result.status.ok()) << result.status.error_message();
  ASSERT_EQ(result.last.size(), 4u);
  float expected = 1.0f;
  uint64_t version = 0;
  for (const auto& [round, g] : std::vector<std::pair<uint64_t, float>>{{1, 1}, {2, 2}, {5, 3}}) {
    const v1::ExchangeResponse& answer = result.last.at(round);
    EXPECT_EQ(answer.code(), 0) << answer.message();
    EXPECT_EQ(answer.version(), ++version);
    EXPECT_EQ(answer.staleness(), 0u);
    expected -= kLr * g;
    for (float v : Values(answer)) EXPECT_FLOAT_EQ(v, expected) << "round " << round;
    EXPECT_EQ(Values(answer).size(), 10u);
  }
  EXPECT_EQ(result.last.at(6).version(), 4u);
  EXPECT_EQ(result.last.at(6).weights_size(), 0) << "a Push round sends no weights";
  for (float v : Weights()) EXPECT_FLOAT_EQ(v, expected - kLr * 4.0f);
  // Small chunks travel together: every round was answered by one message.
  EXPECT_EQ(result.messages.size(), 4u);
}

TEST_F(PsServiceTest, ExchangeRejectedRoundLeavesTheStreamOpenAndAppliesNothing) {
  const uint64_t worker = Join("a");
  ASSERT_TRUE(Pull(worker).status.ok());
  const ExchangeResult result =
      Exchange({Round(1, {Gradient(worker, "w", 0, {1, 1, 1})}, true),  // wrong length
                Round(2, FullGradient(worker, 1.0f), true)});
  ASSERT_TRUE(result.status.ok()) << result.status.error_message();
  EXPECT_EQ(result.last.at(1).code(), static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));
  EXPECT_THAT(result.last.at(1).message(), HasSubstr("expected 16"));
  EXPECT_EQ(result.last.at(2).code(), 0) << result.last.at(2).message();
  EXPECT_EQ(result.last.at(2).version(), 1u) << "the rejected round applied nothing";
  for (float v : Weights()) EXPECT_FLOAT_EQ(v, 1.0f - kLr);
}

TEST_F(PsServiceTest, ExchangeDropsTheRestOfARejectedRound) {
  const uint64_t worker = Join("a");
  ASSERT_TRUE(Pull(worker).status.ok());
  // Round 1 spread over three messages; its second chunk is bad, so its third
  // message is dropped without a second answer.
  v1::ExchangeRequest first = Round(1, FullGradient(worker), true);
  v1::ExchangeRequest second;
  second.set_round(1);
  *second.add_gradients() =
      Gradient(worker, "w", 1, {1, std::numeric_limits<float>::quiet_NaN(), 1, 1}).gradient();
  v1::ExchangeRequest third;
  third.set_round(1);
  *third.add_gradients() = first.gradients(2);
  first.mutable_gradients()->DeleteSubrange(1, 2);
  const ExchangeResult result =
      Exchange({first, second, third, Round(2, FullGradient(worker, 1.0f), true)});
  ASSERT_TRUE(result.status.ok()) << result.status.error_message();
  ASSERT_EQ(result.messages.size(), 2u);
  EXPECT_EQ(result.last.at(1).code(), static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));
  EXPECT_EQ(result.last.at(2).version(), 1u);
}

TEST_F(PsServiceTest, ExchangeRoundNumbersMustIncrease) {
  const uint64_t worker = Join("a");
  ASSERT_TRUE(Pull(worker).status.ok());
  const ExchangeResult result =
      Exchange({Round(3, FullGradient(worker), true), Round(2, FullGradient(worker), true)});
  EXPECT_EQ(result.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(result.status.error_message(), HasSubstr("must increase"));
  // Round 3 was complete, so it was applied and answered before the end.
  EXPECT_EQ(result.last.at(3).version(), 1u);
  EXPECT_EQ(Status().version(), 1u);
  EXPECT_EQ(Exchange({Round(0, FullGradient(worker), true)}).status.error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Status().version(), 1u);
}

TEST_F(PsServiceTest, ExchangeRoundWithoutHeaderOrSessionIsRejected) {
  const uint64_t worker = Join("a");
  ASSERT_TRUE(Pull(worker).status.ok());
  v1::ExchangeRequest headless = Round(1, FullGradient(worker), true);
  headless.clear_header();
  v1::ExchangeRequest wrong_session = Round(2, FullGradient(worker), true);
  wrong_session.mutable_header()->set_session(std::string(16, 'x'));
  const ExchangeResult result =
      Exchange({headless, wrong_session, Round(3, FullGradient(worker), true)});
  ASSERT_TRUE(result.status.ok()) << result.status.error_message();
  EXPECT_EQ(result.last.at(1).code(), static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));
  EXPECT_EQ(result.last.at(2).code(), static_cast<int>(grpc::StatusCode::UNAUTHENTICATED));
  EXPECT_EQ(result.last.at(3).version(), 1u);
}

TEST_F(PsServiceTest, ExchangeRepeatedStepOnANewStreamIsAnsweredNotApplied) {
  const uint64_t worker = Join("a");
  ASSERT_TRUE(Pull(worker).status.ok());
  std::vector<v1::PushRequest> gradient = FullGradient(worker, 2.0f);
  gradient[0].set_step(7);
  const ExchangeResult first = Exchange({Round(1, gradient, true)});
  ASSERT_EQ(first.last.at(1).code(), 0) << first.last.at(1).message();
  // Its answer was "lost": the client sends the same step on a new stream.
  const ExchangeResult again = Exchange({Round(1, gradient, true)});
  ASSERT_EQ(again.last.at(1).code(), 0) << again.last.at(1).message();
  EXPECT_EQ(again.last.at(1).version(), 1u);
  EXPECT_EQ(Values(again.last.at(1)), Values(first.last.at(1)));
  EXPECT_EQ(Status().version(), 1u);
  for (float v : Weights()) EXPECT_FLOAT_EQ(v, 1.0f - kLr * 2.0f);
}

// A shard whose pushes may carry 64 KiB (the fixture allows 64 bytes).
class PsExchangeLargePushTest : public PsServiceTest {
 protected:
  void SetUp() override { StartServer({"--max_push_bytes=65536"}); }
};

TEST_F(PsExchangeLargePushTest, ManySmallTensorsTravelInOneMessageEachWay) {
  // 40 tensors of 3 floats: one request message and one answer.
  v1::DeclareTensorsRequest declare;
  for (int t = 0; t < 40; ++t) {
    v1::TensorSpec* spec = declare.add_tensors();
    spec->set_name("t" + std::to_string(t));
    spec->add_shape(3);
  }
  v1::DeclareTensorsResponse declared;
  grpc::ClientContext context;
  ASSERT_TRUE(stub_->DeclareTensors(&context, declare, &declared).ok());
  const uint64_t worker = Join("a");
  ASSERT_TRUE(Pull(worker).status.ok());
  std::vector<v1::PushRequest> gradient;
  for (int t = 0; t < 40; ++t)
    gradient.push_back(Gradient(worker, "t" + std::to_string(t), 0, {1, 1, 1}));
  const ExchangeResult result = Exchange({Round(1, gradient, true)});
  ASSERT_TRUE(result.status.ok()) << result.status.error_message();
  ASSERT_EQ(result.messages.size(), 1u);
  EXPECT_EQ(result.messages[0].code(), 0) << result.messages[0].message();
  EXPECT_EQ(result.messages[0].weights_size(), 40);
}

TEST_F(PsServiceTest, ExchangeStreamsAreCountedInTheMetrics) {
  const uint64_t worker = Join("a");
  ASSERT_TRUE(Pull(worker).status.ok());
  ASSERT_TRUE(Exchange({Round(1, FullGradient(worker), true)}).status.ok());
  ASSERT_TRUE(Exchange({Round(1, FullGradient(worker), true)}).status.ok());
  EXPECT_THAT(server_->metrics()->ExpositionText(),
              HasSubstr("dcasgd_ps_exchange_streams_total{shard=\"0\"} 2"));
}

}  // namespace
}  // namespace ps_test
}  // namespace dcasgd
