// Pipelined pushes (ClientOptions.pipeline_depth, base_step) against real
// dcasgd-ps processes on loopback: the base travels in the Exchange round
// header, the shards compensate from it and report the staleness it adds.
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "clients/cpp/ps_client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/ps_process.h"

namespace dcasgd {
namespace {

using ::testing::HasSubstr;

constexpr float kLr = 0.5f;
constexpr float kLambda = 2.0f;
const std::vector<std::string> kDcAsgdFlags = {"--update_rule=dcasgd-c", "--lr=0.5", "--lambda0=2",
                                               "--metrics_address="};

std::vector<std::unique_ptr<testing::PsProcess>> StartOrDie(int shards) {
  auto started = testing::StartShards(shards, kDcAsgdFlags);
  if (!started.ok()) ADD_FAILURE() << started.status();
  return started.ok() ? std::move(started).value()
                      : std::vector<std::unique_ptr<testing::PsProcess>>();
}

ClientOptions Options(const std::vector<std::unique_ptr<testing::PsProcess>>& shards,
                      uint32_t depth) {
  ClientOptions options;
  options.shard_addresses = testing::Addresses(shards);
  options.worker_name = "pod-a";
  options.rpc_timeout = absl::Seconds(20);
  options.pipeline_depth = depth;
  return options;
}

// "w": 10 elements in chunks of 4 (3 chunks over the shards), 0.1 * i.
std::vector<TensorSpec> Specs() {
  TensorSpec w;
  w.name = "w";
  w.shape = {10};
  w.chunk_elements = 4;
  w.init.kind = Initializer::Kind::kValues;
  for (int i = 0; i < 10; ++i) w.init.values.push_back(0.1f * static_cast<float>(i));
  return {w};
}

std::vector<float> Gradient(float scale) {
  std::vector<float> g(10);
  for (int i = 0; i < 10; ++i) g[i] = scale * static_cast<float>((i % 3) - 1) + 0.05f * i;
  return g;
}

// DC-ASGD-c: w - lr * (g + lambda * g*g * (w - backup)), in double.
std::vector<double> Update(const std::vector<float>& w, const std::vector<float>& g,
                           const std::vector<float>& backup) {
  std::vector<double> out(w.size());
  for (size_t i = 0; i < w.size(); ++i) {
    const double gi = g[i];
    out[i] = w[i] - kLr * (gi + kLambda * gi * gi * (double{w[i]} - backup[i]));
  }
  return out;
}

void ExpectNear(const std::vector<float>& actual, const std::vector<double>& expected,
                const std::string& what) {
  ASSERT_EQ(actual.size(), expected.size()) << what;
  for (size_t i = 0; i < actual.size(); ++i) {
    EXPECT_NEAR(actual[i], expected[i], 1e-6 * (1 + std::fabs(expected[i])))
        << what << "[" << i << "]";
  }
}

// On the Exchange stream and on the per-call path (push_stream = false),
// which both carry the base.
class PsClientPipelinePaths : public ::testing::TestWithParam<bool> {};

TEST_P(PsClientPipelinePaths, TwoPushesInFlightOnOneBaseAreCompensatedFromIt) {
  auto shards = StartOrDie(2);
  ASSERT_EQ(shards.size(), 2u);
  ClientOptions options = Options(shards, /*depth=*/1);
  options.push_stream = GetParam();
  auto connected = PsClient::Connect(options);
  ASSERT_TRUE(connected.ok()) << connected.status();
  PsClient& client = **connected;
  ASSERT_TRUE(client.Declare(Specs()).ok());
  TensorMap pulled;
  ASSERT_TRUE(client.Pull({"w"}, &pulled).ok());
  const std::vector<float> w0 = pulled["w"];

  // Both computed on w0 (the pull, base 0), the second started before the
  // first was answered.
  const TensorMap g1{{"w", Gradient(1.0f)}}, g2{{"w", Gradient(-2.0f)}};
  TensorMap r1, r2;
  PushStats s1, s2;
  const PushTicket t1 = client.PushPullAsync(g1, &r1, &s1, /*step=*/0, /*base_step=*/0);
  const PushTicket t2 = client.PushPullAsync(g2, &r2, &s2, /*step=*/0, /*base_step=*/0);
  ASSERT_TRUE(client.Wait(t1).ok());
  ASSERT_TRUE(client.Wait(t2).ok());

  const std::vector<double> expected1 = Update(w0, g1.at("w"), w0);
  ExpectNear(r1["w"], expected1, "step 1");
  EXPECT_EQ(s1.max_staleness, 0u);
  // Step 2 applies to w1 and is compensated from w0, the base it names.
  const std::vector<double> expected2 = Update(r1["w"], g2.at("w"), w0);
  ExpectNear(r2["w"], expected2, "step 2");
  EXPECT_EQ(s2.max_staleness, 1u) << "the shards count from the base: one step";
  EXPECT_EQ(s2.shards_touched, 2u);
  // Compensated from the newest backup (w1) instead, it would differ.
  const std::vector<double> newest = Update(r1["w"], g2.at("w"), r1["w"]);
  double gap = 0;
  for (size_t i = 0; i < newest.size(); ++i)
    gap = std::max(gap, std::fabs(newest[i] - expected2[i]));
  EXPECT_GT(gap, 1e-3);
}

INSTANTIATE_TEST_SUITE_P(PsClientPipeline, PsClientPipelinePaths, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& param) {
                           return param.param ? "ExchangeStream" : "PerCall";
                         });

// Pushes as the pipelined trainer makes them (step t+1 computed on the reply
// to step t-1) and returns the staleness each push reported.
std::vector<uint64_t> PipelinedStaleness(PsClient& client, int pushes) {
  TensorMap weights;
  EXPECT_TRUE(client.Pull({"w"}, &weights).ok());
  std::vector<uint64_t> staleness;
  uint64_t base = 0;  // the step whose reply `weights` holds (0: the pull)
  PushStats in_flight_stats;
  TensorMap in_flight_reply;
  PushTicket in_flight = 0;
  TensorMap gradient;
  for (int k = 0; k < pushes; ++k) {
    TensorMap next{{"w", Gradient(0.1f * (k + 1))}};
    const uint64_t next_base = base;
    if (in_flight != 0) {
      EXPECT_TRUE(client.Wait(in_flight).ok());
      staleness.push_back(in_flight_stats.max_staleness);
      weights = in_flight_reply;
      base = in_flight_stats.step;
    }
    gradient = std::move(next);
    in_flight = client.PushPullAsync(gradient, &in_flight_reply, &in_flight_stats, 0, next_base);
  }
  EXPECT_TRUE(client.Wait(in_flight).ok());
  staleness.push_back(in_flight_stats.max_staleness);
  return staleness;
}

TEST(PsClientPipeline, StalenessShowsTheExtraStepOfDepthOne) {
  auto shards = StartOrDie(2);
  ASSERT_EQ(shards.size(), 2u);
  {
    auto client = PsClient::Connect(Options(shards, 1));
    ASSERT_TRUE(client.ok()) << client.status();
    ASSERT_TRUE((*client)->Declare(Specs()).ok());
    EXPECT_THAT(PipelinedStaleness(**client, 6), ::testing::ElementsAre(0, 1, 1, 1, 1, 1));
    ASSERT_TRUE((*client)->Leave().ok());
  }
  // Depth 0: compute, push, wait: every push is on the weights just received.
  auto client = PsClient::Connect(Options(shards, 0));
  ASSERT_TRUE(client.ok()) << client.status();
  TensorMap weights;
  ASSERT_TRUE((*client)->Pull({"w"}, &weights).ok());
  for (int k = 0; k < 4; ++k) {
    PushStats stats;
    ASSERT_TRUE((*client)->PushPull({{"w", Gradient(0.1f)}}, &weights, &stats).ok());
    EXPECT_EQ(stats.max_staleness, 0u) << "push " << k;
  }
}

TEST(PsClientPipeline, ABaseTheShardsDoNotKeepIsRefusedAndNothingApplied) {
  auto shards = StartOrDie(1);
  ASSERT_EQ(shards.size(), 1u);
  auto client = PsClient::Connect(Options(shards, 1));
  ASSERT_TRUE(client.ok()) << client.status();
  ASSERT_TRUE((*client)->Declare(Specs()).ok());
  TensorMap weights;
  ASSERT_TRUE((*client)->Pull({"w"}, &weights).ok());
  auto status = (*client)->GetStatus();
  ASSERT_TRUE(status.ok());
  const uint64_t version = (*status)[0].version;
  absl::Status refused = (*client)->PushPull({{"w", Gradient(1)}}, &weights, nullptr, 0, 41);
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition) << refused;
  EXPECT_THAT(refused.message(), HasSubstr("base step 41"));
  status = (*client)->GetStatus();
  ASSERT_TRUE(status.ok());
  EXPECT_EQ((*status)[0].version, version) << "nothing applied";
}

TEST(PsClientPipeline, OptionsAreChecked) {
  ClientOptions options;
  options.shard_addresses = {"127.0.0.1:1"};
  options.worker_name = "pod-a";
  options.pipeline_depth = kMaxPipelineDepth + 1;
  auto client = PsClient::Connect(options);
  EXPECT_EQ(client.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(client.status().message(), HasSubstr("pipeline_depth"));
}

}  // namespace
}  // namespace dcasgd
