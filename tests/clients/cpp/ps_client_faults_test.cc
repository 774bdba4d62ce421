// PsClient against real dcasgd-ps processes when things break: an answer
// lost between the shard applying a push and the client hearing of it (a
// TCP proxy cuts the connection there), a shard killed and restarted on the
// same port, a shard restarted with SIGTERM while pushes are in flight.
// The shards run plain ASGD, so the weights are exactly the initial values
// minus lr times the sum of the gradients applied.

#include <malloc.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "clients/cpp/ps_client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/ps_process.h"
#include "tests/testing/tcp_proxy.h"

namespace dcasgd {
namespace {

// The value of a metric without labels other than the shard's, or -1.
double Metric(int port, const std::string& name) {
  absl::StatusOr<std::string> text = testing::HttpGet(port, "/metrics");
  if (!text.ok()) return -1;
  for (absl::string_view line : absl::StrSplit(*text, '\n')) {
    if (!absl::StartsWith(line, name + "{") && !absl::StartsWith(line, name + " ")) continue;
    double value = 0;
    if (absl::SimpleAtod(line.substr(line.rfind(' ') + 1), &value)) return value;
  }
  return -1;
}

// "w": 6 elements in chunks of 4, all zero.
std::vector<TensorSpec> Specs() {
  TensorSpec w;
  w.name = "w";
  w.shape = {6};
  w.chunk_elements = 4;
  w.init.kind = Initializer::Kind::kZeros;
  return {w};
}

// One ASGD shard (lr 0.5) with metrics, and a worker talking to it directly.
absl::StatusOr<std::unique_ptr<testing::PsProcess>> StartAsgdShard() {
  return testing::PsProcess::Start(
      {"--update_rule=asgd", "--lr=0.5", "--metrics_address=127.0.0.1:0"});
}

ClientOptions DirectOptions(const testing::PsProcess& shard) {
  ClientOptions options;
  options.shard_addresses = {absl::StrCat("127.0.0.1:", shard.grpc_port())};
  options.worker_name = "w0";
  return options;
}

TensorMap Gradient(float g) { return {{"w", std::vector<float>(6, g)}}; }

TEST(PsClientFaults, APushWhoseAnswerIsLostIsRetriedAndAppliedOnce) {
  auto shard = testing::PsProcess::Start(
      {"--update_rule=asgd", "--lr=0.5", "--metrics_address=127.0.0.1:0"});
  ASSERT_TRUE(shard.ok()) << shard.status();
  auto proxy = testing::TcpProxy::Start((*shard)->grpc_port());
  ASSERT_TRUE(proxy.ok()) << proxy.status();
  ClientOptions options;
  options.shard_addresses = {absl::StrCat("127.0.0.1:", (*proxy)->port())};
  options.worker_name = "w0";
  options.heartbeats = false;  // one call at a time through the proxy
  options.initial_backoff = absl::Milliseconds(10);
  auto client = PsClient::Connect(options);
  ASSERT_TRUE(client.ok()) << client.status();
  ASSERT_TRUE((*client)->Declare(Specs()).ok());
  TensorMap weights;
  ASSERT_TRUE((*client)->Pull({"w"}, &weights).ok());

  float acknowledged = 0;  // sum of the gradients of acknowledged pushes
  for (int i = 1; i <= 6; ++i) {
    // Every other push loses its answer after the shard applied it; the
    // client retries with the same step.
    if (i % 2 == 1) (*proxy)->CutAtNextReply();
    PushStats stats;
    const absl::Status pushed = i % 4 == 0 ? (*client)->Push(Gradient(i), &stats)
                                           : (*client)->PushPull(Gradient(i), &weights, &stats);
    ASSERT_TRUE(pushed.ok()) << "push " << i << ": " << pushed;
    acknowledged += static_cast<float>(i);
    EXPECT_EQ(stats.versions[0], static_cast<uint64_t>(i)) << "one version per push";
  }
  EXPECT_EQ((*proxy)->cuts(), 3) << "the faults happened";
  ClientOptions evaluator_options;
  evaluator_options.shard_addresses = options.shard_addresses;
  auto evaluator = PsClient::Connect(evaluator_options);
  ASSERT_TRUE(evaluator.ok());
  TensorMap final_weights;
  ASSERT_TRUE((*evaluator)->Pull({"w"}, &final_weights).ok());
  // ASGD: w = 0 - lr * (sum of the gradients applied); a push applied twice
  // would subtract its gradient twice.
  EXPECT_EQ(final_weights["w"], std::vector<float>(6, -0.5f * acknowledged));
  EXPECT_EQ(weights["w"], final_weights["w"]) << "the last PushPull answered the final values";
  EXPECT_EQ(Metric((*shard)->metrics_port(), "dcasgd_ps_repeated_pushes_total"), 3);
  EXPECT_EQ(Metric((*shard)->metrics_port(), "dcasgd_ps_pushes_total"), 6);
}

// A replicated shard as the client sees it: member a (here a proxy in front
// of the shard) goes away, first losing the answer of a push the shard
// applied, then for good; the client carries on at member b (the same
// shard, directly) with the same worker id and session, and each push is
// applied once. (With real pairs the state moves with the primary role,
// docs/design.md "Replicated shards"; this is the client's half.)
TEST(PsClientFaults, MovesToTheOtherMemberWithoutRejoiningAndAppliesEachPushOnce) {
  auto shard = StartAsgdShard();
  ASSERT_TRUE(shard.ok()) << shard.status();
  auto proxy = testing::TcpProxy::Start((*shard)->grpc_port());
  ASSERT_TRUE(proxy.ok()) << proxy.status();
  ClientOptions options = DirectOptions(**shard);
  options.replica_addresses = options.shard_addresses;                       // b: the shard itself
  options.shard_addresses = {absl::StrCat("127.0.0.1:", (*proxy)->port())};  // a
  options.heartbeats = false;  // one call at a time through the proxy
  options.initial_backoff = absl::Milliseconds(10);
  auto client = PsClient::Connect(options);
  ASSERT_TRUE(client.ok()) << client.status();
  const uint64_t worker_id = (*client)->worker_id(0);
  ASSERT_TRUE((*client)->Declare(Specs()).ok());
  TensorMap weights;
  ASSERT_TRUE((*client)->Pull({"w"}, &weights).ok());
  float acknowledged = 0;
  for (int i = 1; i <= 8; ++i) {
    if (i == 3) (*proxy)->CutAtNextReply();  // applied, answer lost: retried at b
    if (i == 5) proxy->reset();              // member a is gone for good
    const absl::Status pushed =
        i % 4 == 0 ? (*client)->Push(Gradient(i)) : (*client)->PushPull(Gradient(i), &weights);
    ASSERT_TRUE(pushed.ok()) << "push " << i << ": " << pushed;
    acknowledged += static_cast<float>(i);
  }
  EXPECT_EQ((*client)->worker_id(0), worker_id) << "no re-join";
  TensorMap final_weights;
  ASSERT_TRUE((*client)->Pull({"w"}, &final_weights).ok());
  EXPECT_EQ(final_weights["w"], std::vector<float>(6, -0.5f * acknowledged));
  EXPECT_EQ(Metric((*shard)->metrics_port(), "dcasgd_ps_pushes_total"), 8);
  EXPECT_EQ(Metric((*shard)->metrics_port(), "dcasgd_ps_repeated_pushes_total"), 1);
  auto statuses = (*client)->GetStatus();
  ASSERT_TRUE(statuses.ok()) << statuses.status();
  EXPECT_EQ((*statuses)[0].active_workers, 1u);
}

// Bad member lists are refused before anything connects.
TEST(PsClientFaults, ReplicaAddressesAreOnePerShardAndDifferFromTheFirstMember) {
  ClientOptions options;
  options.shard_addresses = {"127.0.0.1:1", "127.0.0.1:2"};
  options.replica_addresses = {"127.0.0.1:3"};
  auto client = PsClient::Connect(options);
  EXPECT_EQ(client.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(client.status().message(), ::testing::HasSubstr("one per shard"));
  options.replica_addresses = {"127.0.0.1:3", "127.0.0.1:2"};
  client = PsClient::Connect(options);
  EXPECT_EQ(client.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(client.status().message(), ::testing::HasSubstr("shard 1: both members"));
}

TEST(PsClientFaults, OnePushStreamPerShardServesEveryPush) {
  auto shard = StartAsgdShard();
  ASSERT_TRUE(shard.ok()) << shard.status();
  ClientOptions options = DirectOptions(**shard);
  auto client = PsClient::Connect(options);
  ASSERT_TRUE(client.ok()) << client.status();
  ASSERT_TRUE((*client)->Declare(Specs()).ok());
  TensorMap weights;
  ASSERT_TRUE((*client)->Pull({"w"}, &weights).ok());
  for (int i = 1; i <= 20; ++i) {
    ASSERT_TRUE(i % 5 == 0 ? (*client)->Push(Gradient(1)).ok()
                           : (*client)->PushPull(Gradient(1), &weights).ok());
  }
  EXPECT_EQ(Metric((*shard)->metrics_port(), "dcasgd_ps_pushes_total"), 20);
  EXPECT_EQ(Metric((*shard)->metrics_port(), "dcasgd_ps_exchange_streams_total"), 1)
      << "pushes reuse one stream";
}

// A round the shard refuses part-way (--max_push_bytes) is answered while
// most of its messages are still to be written. Those are encoded from the
// caller's gradients only until the answer: once PushPull returned, the
// caller may free them. Here they are freed at once and unmapped (the
// allocator is told to map every block over 1 MiB on its own), so a
// message encoded from them afterwards would crash this test. The stream
// goes on: the next push on it is applied.
TEST(PsClientFaults, ARoundRefusedPartWayNoLongerReadsTheCallersGradients) {
  ASSERT_EQ(mallopt(M_MMAP_THRESHOLD, 1 << 20), 1);
  auto shard =
      testing::PsProcess::Start({"--update_rule=asgd", "--lr=0.5", "--max_push_bytes=2097152",
                                 "--metrics_address=127.0.0.1:0"});
  ASSERT_TRUE(shard.ok()) << shard.status();
  auto client = PsClient::Connect(DirectOptions(**shard));
  ASSERT_TRUE(client.ok()) << client.status();
  constexpr int64_t kBig = int64_t{8} << 20;  // 32 MiB: 33 messages
  TensorSpec big;
  big.name = "big";
  big.shape = {kBig};
  big.chunk_elements = 1 << 16;
  big.init.kind = Initializer::Kind::kZeros;
  ASSERT_TRUE((*client)->Declare({Specs()[0], big}).ok());
  TensorMap weights;
  ASSERT_TRUE((*client)->Pull({"w", "big"}, &weights).ok());

  for (int i = 0; i < 3; ++i) {
    TensorMap gradients = {{"big", std::vector<float>(kBig, 1.0f)}};
    absl::Status refused = (*client)->PushPull(gradients, &weights);
    EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted) << refused;
    EXPECT_THAT(std::string(refused.message()), ::testing::HasSubstr("max_push_bytes"));
    gradients.clear();  // unmapped: the messages left must not be read from it
    ASSERT_TRUE((*client)->PushPull(Gradient(2), &weights).ok()) << "push " << i;
    EXPECT_EQ(weights["w"], std::vector<float>(6, -1.0f * static_cast<float>(i + 1)));
  }
  TensorMap pulled;
  ASSERT_TRUE((*client)->Pull({"big"}, &pulled).ok());
  EXPECT_EQ(pulled["big"], std::vector<float>(kBig, 0.0f)) << "nothing of a refused round applied";
  EXPECT_EQ(Metric((*shard)->metrics_port(), "dcasgd_ps_exchange_streams_total"), 1)
      << "the refused rounds did not break the stream";
}

TEST(PsClientFaults, WithoutThePushStreamEveryPushIsACallOfItsOwn) {
  auto shard = StartAsgdShard();
  ASSERT_TRUE(shard.ok()) << shard.status();
  ClientOptions options = DirectOptions(**shard);
  options.push_stream = false;
  auto client = PsClient::Connect(options);
  ASSERT_TRUE(client.ok()) << client.status();
  ASSERT_TRUE((*client)->Declare(Specs()).ok());
  TensorMap weights;
  ASSERT_TRUE((*client)->Pull({"w"}, &weights).ok());
  ASSERT_TRUE((*client)->Push(Gradient(1)).ok());
  ASSERT_TRUE((*client)->Wait((*client)->PushPullAsync(Gradient(1), &weights)).ok());
  EXPECT_EQ(weights["w"], std::vector<float>(6, -1.0f));
  EXPECT_EQ(Metric((*shard)->metrics_port(), "dcasgd_ps_pushes_total"), 2);
  EXPECT_EQ(Metric((*shard)->metrics_port(), "dcasgd_ps_exchange_streams_total"), 0);
}

// Pushes in a loop on its own thread, pulling again after errors, and
// records when pushes succeed.
class Pusher {
 public:
  explicit Pusher(PsClient* client) : client_(client), thread_([this] { Run(); }) {}
  ~Pusher() {
    stop_.store(true);
    thread_.join();
  }
  // The time of the first successful push after `after`, if any.
  std::optional<absl::Time> FirstSuccessAfter(absl::Time after) {
    absl::MutexLock lock(&mu_);
    for (absl::Time t : successes_) {
      if (t > after) return t;
    }
    return std::nullopt;
  }
  int errors() {
    absl::MutexLock lock(&mu_);
    return errors_;
  }

 private:
  void Run() {
    TensorMap weights;
    while (!stop_.load()) {
      absl::Status s = client_->PushPull(Gradient(1), &weights);
      if (!s.ok()) {
        {
          absl::MutexLock lock(&mu_);
          ++errors_;
        }
        client_->Pull({"w"}, &weights).IgnoreError();
        continue;
      }
      absl::MutexLock lock(&mu_);
      successes_.push_back(absl::Now());
    }
  }

  PsClient* const client_;
  std::atomic<bool> stop_{false};  // set by the test thread, read by the pusher
  absl::Mutex mu_;
  std::vector<absl::Time> successes_ ABSL_GUARDED_BY(mu_);
  int errors_ ABSL_GUARDED_BY(mu_) = 0;
  std::thread thread_;  // last: starts after the fields it uses
};

TEST(PsClientFaults, ARestartedShardIsUsedWithinSecondsOfComingBack) {
  // Issue 13: stalls were 2.5-5x the outage after a shard came back (gRPC's
  // reconnect backoff grows to minutes). The bound asserted here is loose;
  // the client reconnects at least every second.
  absl::StatusOr<std::string> dir = testing::MakeTempDir("client-faults");
  ASSERT_TRUE(dir.ok());
  const int port = testing::FreePort();
  auto shard = testing::PsProcess::Start({"--update_rule=asgd", "--lr=0.01",
                                          absl::StrCat("--listen=127.0.0.1:", port),
                                          "--metrics_address=", "--checkpoint_dir=" + *dir});
  ASSERT_TRUE(shard.ok()) << shard.status();
  ClientOptions options;
  options.shard_addresses = {(*shard)->address()};
  options.worker_name = "w0";
  auto client = PsClient::Connect(options);
  ASSERT_TRUE(client.ok()) << client.status();
  ASSERT_TRUE((*client)->Declare(Specs()).ok());
  TensorMap weights;
  ASSERT_TRUE((*client)->Pull({"w"}, &weights).ok());
  {
    Pusher pusher(client->get());
    ASSERT_TRUE(
        testing::WaitFor([&] { return pusher.FirstSuccessAfter(absl::InfinitePast()).has_value(); },
                         absl::Seconds(10))
            .ok());
    // The restarted shard has the model (not the pushes since).
    ASSERT_TRUE((*client)->Checkpoint().ok());
    ASSERT_TRUE((*shard)->Kill(SIGKILL).ok());
    ASSERT_TRUE((*shard)->WaitExit().ok());
    // The outage: long enough for gRPC's default reconnect backoff to grow
    // past several seconds.
    absl::SleepFor(absl::Seconds(8));
    ASSERT_TRUE((*shard)->Restart().ok()) << (*shard)->Log();
    const absl::Time back = absl::Now();  // the port file exists: it listens
    ASSERT_TRUE(testing::WaitFor([&] { return pusher.FirstSuccessAfter(back).has_value(); },
                                 absl::Seconds(30))
                    .ok())
        << "no push succeeded after the restart";
    const absl::Duration stall = *pusher.FirstSuccessAfter(back) - back;
    std::fprintf(stderr, "first push %s after the shard's port was back\n",
                 absl::FormatDuration(stall).c_str());
    EXPECT_LT(stall, absl::Seconds(3));
    EXPECT_GT(pusher.errors(), 0) << "the outage was seen";
  }
  client->reset();
  testing::RemoveTree(*dir);
}

TEST(PsClientFaults, PushesRideOutASigtermRestart) {
  // Issue 13: a rolling restart made workers exit with "CANCELLED". The
  // client retries CANCELLED; with a checkpoint the shard comes back with
  // every acknowledged update.
  absl::StatusOr<std::string> dir = testing::MakeTempDir("client-faults");
  ASSERT_TRUE(dir.ok());
  const int port = testing::FreePort();
  auto shard = testing::PsProcess::Start({"--update_rule=asgd", "--lr=1",
                                          absl::StrCat("--listen=127.0.0.1:", port),
                                          "--metrics_address=", "--checkpoint_dir=" + *dir});
  ASSERT_TRUE(shard.ok()) << shard.status();
  ClientOptions options;
  options.shard_addresses = {(*shard)->address()};
  options.worker_name = "w0";
  options.max_attempts = 50;
  auto client = PsClient::Connect(options);
  ASSERT_TRUE(client.ok()) << client.status();
  ASSERT_TRUE((*client)->Declare(Specs()).ok());
  TensorMap weights;
  ASSERT_TRUE((*client)->Pull({"w"}, &weights).ok());
  std::atomic<int> acknowledged{0};
  std::atomic<bool> stop{false};
  std::vector<std::string> errors;
  std::thread pusher([&] {
    TensorMap w;
    while (!stop.load()) {
      uint64_t step = (*client)->NextStep();
      // A batch is pushed until it is acknowledged, always with its step.
      while (true) {
        absl::Status s = (*client)->PushPull(Gradient(1), &w, nullptr, step);
        if (s.ok()) break;
        errors.push_back(std::string(s.message()));
        // Lost lease (the restarted shard does not know the worker): the
        // client re-joined; pull and push the batch again.
        ASSERT_TRUE(absl::IsFailedPrecondition(s)) << s;
        ASSERT_TRUE((*client)->Pull({"w"}, &w).ok());
      }
      acknowledged.fetch_add(1);
    }
  });
  ASSERT_TRUE(testing::WaitFor([&] { return acknowledged.load() >= 50; }, absl::Seconds(20)).ok());
  ASSERT_TRUE((*shard)->Kill(SIGTERM).ok());
  absl::StatusOr<int> code = (*shard)->WaitExit();
  ASSERT_TRUE(code.ok());
  EXPECT_EQ(*code, 0) << (*shard)->Log();
  ASSERT_TRUE((*shard)->Restart().ok()) << (*shard)->Log();
  const int at_restart = acknowledged.load();
  ASSERT_TRUE(
      testing::WaitFor([&] { return acknowledged.load() >= at_restart + 50; }, absl::Seconds(20))
          .ok());
  stop.store(true);
  pusher.join();
  ClientOptions evaluator_options;
  evaluator_options.shard_addresses = options.shard_addresses;
  auto evaluator = PsClient::Connect(evaluator_options);
  ASSERT_TRUE(evaluator.ok());
  TensorMap final_weights;
  ASSERT_TRUE((*evaluator)->Pull({"w"}, &final_weights).ok());
  // Every acknowledged push is in the weights exactly once: the final
  // checkpoint kept those before the restart, and none was applied twice.
  EXPECT_EQ(final_weights["w"], std::vector<float>(6, -static_cast<float>(acknowledged.load())))
      << "errors seen: " << errors.size();
  client->reset();
  testing::RemoveTree(*dir);
}

}  // namespace
}  // namespace dcasgd
