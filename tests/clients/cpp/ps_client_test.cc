// PsClient against real dcasgd-ps processes on loopback (tests/testing).
// The shards run plain ASGD with lr = 1, so every update is w <- w - g and the
// expected values are exact.

#include "clients/cpp/ps_client.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmath>
#include <csignal>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/ps_process.h"

namespace dcasgd {
namespace {

using ::testing::HasSubstr;

const std::vector<std::string> kAsgdFlags = {"--update_rule=asgd", "--lr=1", "--metrics_address="};

std::vector<std::unique_ptr<testing::PsProcess>> StartOrDie(
    int shards, std::vector<std::string> flags = kAsgdFlags) {
  auto started = testing::StartShards(shards, flags);
  if (!started.ok()) ADD_FAILURE() << started.status();
  return started.ok() ? std::move(started).value()
                      : std::vector<std::unique_ptr<testing::PsProcess>>();
}

ClientOptions Options(const std::vector<std::unique_ptr<testing::PsProcess>>& shards,
                      std::string worker_name) {
  ClientOptions options;
  options.shard_addresses = testing::Addresses(shards);
  options.worker_name = std::move(worker_name);
  options.rpc_timeout = absl::Seconds(20);
  options.initial_backoff = absl::Milliseconds(10);
  options.max_backoff = absl::Milliseconds(200);
  return options;
}

std::unique_ptr<PsClient> ConnectOrDie(ClientOptions options) {
  auto client = PsClient::Connect(std::move(options));
  if (!client.ok()) ADD_FAILURE() << client.status();
  return client.ok() ? std::move(client).value() : nullptr;
}

// "w": 10 elements in chunks of 4 (3 chunks over the shards), explicit
// values 0, 1, ..., 9. "b": a scalar-like [3] of constant 0.5, one chunk.
std::vector<TensorSpec> Specs() {
  TensorSpec w;
  w.name = "w";
  w.shape = {2, 5};
  w.chunk_elements = 4;
  w.init.kind = Initializer::Kind::kValues;
  for (int i = 0; i < 10; ++i) w.init.values.push_back(static_cast<float>(i));
  TensorSpec b;
  b.name = "b";
  b.shape = {3};
  b.chunk_elements = 8;
  b.init.kind = Initializer::Kind::kConstant;
  b.init.a = 0.5f;
  return {w, b};
}

// A client of `shards` named `name` that declared Specs() and pulled them
// into `weights`; null (with a test failure) when any step fails.
std::unique_ptr<PsClient> DeclaredOrDie(
    const std::vector<std::unique_ptr<testing::PsProcess>>& shards, const std::string& name,
    TensorMap* weights) {
  auto client = ConnectOrDie(Options(shards, name));
  if (client == nullptr) return nullptr;
  if (absl::Status declared = client->Declare(Specs()); !declared.ok()) {
    ADD_FAILURE() << declared;
    return nullptr;
  }
  if (absl::Status pulled = client->Pull({}, weights); !pulled.ok()) {
    ADD_FAILURE() << pulled;
    return nullptr;
  }
  return client;
}

// Shards whose leases last half a second, and a worker that sends no
// heartbeats: the shards' reapers drop it unless it pushes.
std::vector<std::string> ShortLeaseFlags() {
  std::vector<std::string> flags = kAsgdFlags;
  flags.push_back("--lease_seconds=0.5");
  return flags;
}

ClientOptions SleepyOptions(const std::vector<std::unique_ptr<testing::PsProcess>>& shards) {
  ClientOptions options = Options(shards, "sleepy");
  options.heartbeats = false;
  return options;
}

// Polls (up to 20 s) until no shard counts an active worker: the leases of
// a worker without heartbeats were reaped.
bool LeasesExpired(PsClient* client) {
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (absl::Now() < deadline) {
    const auto statuses = client->GetStatus();
    if (!statuses.ok()) return false;
    bool none = true;
    for (const ShardStatus& shard : *statuses) none = none && shard.active_workers == 0;
    if (none) return true;
    absl::SleepFor(absl::Milliseconds(50));
  }
  return false;
}

std::vector<float> Minus(std::vector<float> a, const std::vector<float>& b) {
  for (size_t i = 0; i < a.size(); ++i) a[i] -= b[i];
  return a;
}

TEST(PsClient, DeclarePullPushPushPullRoundTrip) {
  auto shards = StartOrDie(2);
  ASSERT_EQ(shards.size(), 2u);
  auto client = ConnectOrDie(Options(shards, "worker-a"));
  ASSERT_NE(client, nullptr);
  EXPECT_EQ(client->shard_count(), 2u);
  EXPECT_NE(client->worker_id(0), 0u);
  EXPECT_NE(client->worker_id(1), 0u);
  ASSERT_TRUE(client->Declare(Specs()).ok());

  TensorMap weights;
  ASSERT_TRUE(client->Pull({"w", "b"}, &weights).ok());
  const std::vector<float> w0 = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
  EXPECT_EQ(weights["w"], w0);
  EXPECT_EQ(weights["b"], std::vector<float>(3, 0.5f));

  TensorMap gradients;
  gradients["w"] = {0.5f, -1, 2, 0.25f, 1, 1, -3, 0, 4, 8};
  gradients["b"] = {0.25f, 0.5f, -0.5f};
  PushStats stats;
  ASSERT_TRUE(client->Push(gradients, &stats).ok());
  EXPECT_EQ(stats.shards_touched, 2u);  // w's 3 chunks span both shards
  ASSERT_EQ(stats.versions.size(), 2u);
  EXPECT_EQ(stats.versions[0], 1u);
  EXPECT_EQ(stats.versions[1], 1u);
  EXPECT_EQ(stats.max_staleness, 0u);

  TensorMap after_push;
  ASSERT_TRUE(client->Pull({}, &after_push).ok());  // empty: every tensor
  const std::vector<float> w1 = Minus(w0, gradients["w"]);
  const std::vector<float> b1 = Minus(std::vector<float>(3, 0.5f), gradients["b"]);
  EXPECT_EQ(after_push["w"], w1);
  EXPECT_EQ(after_push["b"], b1);

  TensorMap after_pushpull;
  ASSERT_TRUE(client->PushPull(gradients, &after_pushpull, &stats).ok());
  EXPECT_EQ(after_pushpull["w"], Minus(w1, gradients["w"]));
  EXPECT_EQ(after_pushpull["b"], Minus(b1, gradients["b"]));
  EXPECT_EQ(stats.versions[0], 2u);
  EXPECT_EQ(stats.versions[1], 2u);
  EXPECT_EQ(stats.max_staleness, 0u);
  EXPECT_GT(stats.send_time, absl::ZeroDuration());
  EXPECT_GE(stats.wait_time, absl::ZeroDuration());
  EXPECT_GT(stats.receive_time + stats.wait_time, absl::ZeroDuration());

  // PushPull again from the values PushPull returned: its backup.
  TensorMap only_b;
  only_b["b"] = {1, 1, 1};
  TensorMap b_weights;
  ASSERT_TRUE(client->PushPull(only_b, &b_weights, &stats).ok());
  EXPECT_EQ(b_weights.size(), 1u);
  EXPECT_EQ(b_weights["b"], Minus(Minus(b1, gradients["b"]), only_b["b"]));
  EXPECT_EQ(stats.shards_touched, 1u);  // b is one chunk

  const auto statuses = client->GetStatus();
  ASSERT_TRUE(statuses.ok()) << statuses.status();
  ASSERT_EQ(statuses->size(), 2u);
  EXPECT_EQ((*statuses)[0].shard_index, 0u);
  EXPECT_EQ((*statuses)[1].shard_index, 1u);
  EXPECT_EQ((*statuses)[0].active_workers, 1u);
  EXPECT_EQ((*statuses)[0].version + (*statuses)[1].version, 5u);  // 2 + 2 + 1
  // The layouts as the shards chunked them, each chunk owned by one shard.
  uint64_t owned_w = 0, owned_b = 0;
  for (const ShardStatus& shard : *statuses) {
    EXPECT_EQ(shard.shard_count, 2u);
    EXPECT_FALSE(shard.update_rule.empty());
    for (const ShardStatus::Tensor& tensor : shard.tensors) {
      if (tensor.layout.name == "w") {
        EXPECT_EQ(tensor.layout.num_elements, 10u);
        EXPECT_EQ(tensor.layout.chunk_elements, 4u);
        owned_w += tensor.owned_chunks;
      } else {
        EXPECT_EQ(tensor.layout.name, "b");
        owned_b += tensor.owned_chunks;
      }
    }
  }
  EXPECT_EQ(owned_w, 3u);
  EXPECT_EQ(owned_b, 1u);

  ASSERT_TRUE(client->Leave().ok());
  const auto after_leave = client->GetStatus();
  ASSERT_TRUE(after_leave.ok());
  EXPECT_EQ((*after_leave)[0].active_workers, 0u);
  EXPECT_EQ(client->Push(gradients).code(), absl::StatusCode::kFailedPrecondition);
}

TEST(PsClient, CheckpointAnswersWithEachShardsFile) {
  char templ[] = "/tmp/dcasgd_ps_client_checkpoint.XXXXXX";
  ASSERT_NE(mkdtemp(templ), nullptr);
  const std::string dir = templ;
  std::vector<std::string> flags = kAsgdFlags;
  flags.push_back("--checkpoint_dir=" + dir);
  {
    auto shards = StartOrDie(2, flags);
    ASSERT_EQ(shards.size(), 2u);
    auto client = ConnectOrDie(Options(shards, "checkpointer"));
    ASSERT_NE(client, nullptr);
    ASSERT_TRUE(client->Declare(Specs()).ok());
    TensorMap gradients;
    gradients["w"] = std::vector<float>(10, 1.0f);
    ASSERT_TRUE(client->Push(gradients).ok());
    const auto written = client->Checkpoint();
    ASSERT_TRUE(written.ok()) << written.status();
    ASSERT_EQ(written->size(), 2u);
    const auto statuses = client->GetStatus();
    ASSERT_TRUE(statuses.ok()) << statuses.status();
    for (size_t s = 0; s < 2; ++s) {
      EXPECT_EQ((*written)[s].path, dir + "/shard-" + std::to_string(s) + ".ckpt");
      EXPECT_GT((*written)[s].bytes, 0u);
      EXPECT_EQ((*written)[s].version, (*statuses)[s].version);
      EXPECT_EQ((*statuses)[s].checkpoint_version, (*statuses)[s].version);
    }
  }
  std::system(("rm -rf " + dir).c_str());

  // Without a checkpoint directory the shards say so (the trainer's final
  // checkpoint request relies on the code).
  auto shards = StartOrDie(1);
  ASSERT_EQ(shards.size(), 1u);
  auto client = ConnectOrDie(Options(shards, ""));
  ASSERT_NE(client, nullptr);
  EXPECT_EQ(client->Checkpoint().status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(PsClient, SingleShardOwnsEverything) {
  auto shards = StartOrDie(1);
  ASSERT_EQ(shards.size(), 1u);
  auto client = ConnectOrDie(Options(shards, "solo"));
  ASSERT_NE(client, nullptr);
  ASSERT_TRUE(client->Declare(Specs()).ok());
  TensorMap gradients;
  gradients["w"] = std::vector<float>(10, 1.0f);
  TensorMap weights;
  ASSERT_TRUE(client->Pull({"w"}, &weights).ok());
  ASSERT_TRUE(client->PushPull(gradients, &weights).ok());
  EXPECT_EQ(weights["w"], (std::vector<float>{-1, 0, 1, 2, 3, 4, 5, 6, 7, 8}));
}

TEST(PsClient, EvaluatorLearnsSpecsAndCannotPush) {
  auto shards = StartOrDie(2);
  ASSERT_EQ(shards.size(), 2u);
  auto worker = ConnectOrDie(Options(shards, "worker"));
  ASSERT_NE(worker, nullptr);
  ASSERT_TRUE(worker->Declare(Specs()).ok());

  auto evaluator = ConnectOrDie(Options(shards, ""));
  ASSERT_NE(evaluator, nullptr);
  EXPECT_FALSE(evaluator->is_worker());
  EXPECT_EQ(evaluator->worker_id(0), 0u);
  TensorMap weights;
  // Never declared by this client: Pull fetches the specs itself.
  ASSERT_TRUE(evaluator->Pull({"w"}, &weights).ok());
  EXPECT_EQ(weights["w"], (std::vector<float>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}));
  EXPECT_EQ(weights.count("b"), 0u);

  TensorMap gradients;
  gradients["w"] = std::vector<float>(10, 1.0f);
  const absl::Status pushed = evaluator->Push(gradients);
  EXPECT_EQ(pushed.code(), absl::StatusCode::kFailedPrecondition);
  const auto statuses = evaluator->GetStatus();
  ASSERT_TRUE(statuses.ok());
  EXPECT_EQ((*statuses)[0].active_workers, 1u);  // the evaluator did not join
}

TEST(PsClient, ValidatesGradientsBeforeSending) {
  auto shards = StartOrDie(2);
  ASSERT_EQ(shards.size(), 2u);
  TensorMap weights;
  auto client = DeclaredOrDie(shards, "worker", &weights);
  ASSERT_NE(client, nullptr);

  TensorMap gradients;
  gradients["w"] = std::vector<float>(9, 1.0f);
  absl::Status status = client->Push(gradients);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("'w'"));
  EXPECT_THAT(status.message(), HasSubstr("expected 10"));
  status = client->PushPull(gradients, &weights);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);

  TensorMap unknown;
  unknown["nope"] = {1};
  EXPECT_EQ(client->Push(unknown).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(client->Pull({"nope"}, &weights).code(), absl::StatusCode::kNotFound);

  // Nothing reached the shards.
  const auto statuses = client->GetStatus();
  ASSERT_TRUE(statuses.ok());
  EXPECT_EQ((*statuses)[0].version, 0u);
  EXPECT_EQ((*statuses)[1].version, 0u);
}

TEST(PsClient, ShardErrorsKeepTheCodeAndNameTheShard) {
  auto shards = StartOrDie(2);
  ASSERT_EQ(shards.size(), 2u);
  auto client = ConnectOrDie(Options(shards, "worker"));
  ASSERT_NE(client, nullptr);
  ASSERT_TRUE(client->Declare(Specs()).ok());
  std::vector<TensorSpec> changed = Specs();
  changed[0].shape = {10, 1};
  const absl::Status status = client->Declare(changed);
  EXPECT_EQ(status.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(status.message(), HasSubstr(shards[0]->address()));

  // A gradient with NaN is rejected by the shards (INVALID_ARGUMENT), not
  // retried, and leaves the model unchanged.
  TensorMap weights;
  ASSERT_TRUE(client->Pull({}, &weights).ok());
  TensorMap gradients;
  gradients["b"] = {0, std::nanf(""), 0};
  const absl::Status nan = client->Push(gradients);
  EXPECT_EQ(nan.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(nan.message(), HasSubstr("shard "));
}

TEST(PsClient, ShardsListedInTheWrongOrderAreRejected) {
  auto shards = StartOrDie(2);
  ASSERT_EQ(shards.size(), 2u);
  ClientOptions options = Options(shards, "worker");
  std::swap(options.shard_addresses[0], options.shard_addresses[1]);
  const auto client = PsClient::Connect(options);
  EXPECT_EQ(client.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(client.status().message(), HasSubstr("says it is shard 1 of 2"));
}

TEST(PsClient, RejoinsAfterTheLeaseExpired) {
  auto shards = StartOrDie(2, ShortLeaseFlags());
  ASSERT_EQ(shards.size(), 2u);
  auto client = ConnectOrDie(SleepyOptions(shards));
  ASSERT_NE(client, nullptr);
  ASSERT_TRUE(client->Declare(Specs()).ok());
  TensorMap weights;
  ASSERT_TRUE(client->Pull({}, &weights).ok());
  const uint64_t old_id = client->worker_id(0);

  // Without heartbeats the shards' lease reapers drop the worker.
  ASSERT_TRUE(LeasesExpired(client.get()));

  TensorMap gradients;
  gradients["w"] = std::vector<float>(10, 1.0f);
  const absl::Status lost = client->Push(gradients);
  EXPECT_EQ(lost.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(lost.message(), HasSubstr("re-joined; pull again"));
  EXPECT_NE(client->worker_id(0), 0u);
  EXPECT_NE(client->worker_id(0), old_id);

  // What the caller does next: pull, recompute, push.
  ASSERT_TRUE(client->Pull({"w"}, &weights).ok());
  ASSERT_TRUE(client->PushPull(gradients, &weights).ok());
  EXPECT_EQ(weights["w"], (std::vector<float>{-1, 0, 1, 2, 3, 4, 5, 6, 7, 8}));
}

TEST(PsClient, HeartbeatsKeepTheLease) {
  auto shards = StartOrDie(2, ShortLeaseFlags());
  ASSERT_EQ(shards.size(), 2u);
  TensorMap weights;
  auto client = DeclaredOrDie(shards, "alive", &weights);
  ASSERT_NE(client, nullptr);
  const uint64_t id0 = client->worker_id(0), id1 = client->worker_id(1);
  // Time passing is what is tested here: four leases.
  absl::SleepFor(absl::Seconds(2));
  TensorMap gradients;
  gradients["w"] = std::vector<float>(10, 1.0f);
  ASSERT_TRUE(client->Push(gradients).ok());
  EXPECT_EQ(client->worker_id(0), id0);
  EXPECT_EQ(client->worker_id(1), id1);
}

TEST(PsClient, StalenessOfInterleavedWorkers) {
  auto shards = StartOrDie(2);
  ASSERT_EQ(shards.size(), 2u);
  auto a = ConnectOrDie(Options(shards, "a"));
  auto b = ConnectOrDie(Options(shards, "b"));
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  ASSERT_TRUE(a->Declare(Specs()).ok());
  TensorMap wa, wb;
  ASSERT_TRUE(a->Pull({"w"}, &wa).ok());
  ASSERT_TRUE(b->Pull({"w"}, &wb).ok());
  TensorMap gradients;
  gradients["w"] = std::vector<float>(10, 1.0f);
  PushStats stats;
  ASSERT_TRUE(b->Push(gradients, &stats).ok());
  EXPECT_EQ(stats.max_staleness, 0u);
  ASSERT_TRUE(a->PushPull(gradients, &wa, &stats).ok());
  EXPECT_EQ(stats.max_staleness, 1u);  // b's push came between a's pull and push
  EXPECT_DOUBLE_EQ(stats.mean_staleness, 1.0);
  EXPECT_EQ(wa["w"], (std::vector<float>{-2, -1, 0, 1, 2, 3, 4, 5, 6, 7}));
}

// A port nobody listens on (yet).
int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

TEST(PsClient, RetriesUntilALateShardComesUp) {
  const int port = FreePort();
  ClientOptions options;
  options.shard_addresses = {absl::StrCat("127.0.0.1:", port)};
  options.worker_name = "early";
  options.max_attempts = 100;
  options.initial_backoff = absl::Milliseconds(20);
  options.max_backoff = absl::Milliseconds(100);
  absl::StatusOr<std::unique_ptr<PsClient>> client;
  std::thread connect([&] { client = PsClient::Connect(options); });
  // Start the shard only after the client has begun retrying.
  absl::SleepFor(absl::Milliseconds(300));
  std::vector<std::string> flags = kAsgdFlags;
  flags.push_back(absl::StrCat("--listen=127.0.0.1:", port));
  auto shard = testing::PsProcess::Start(flags);
  connect.join();
  ASSERT_TRUE(shard.ok()) << shard.status();
  ASSERT_TRUE(client.ok()) << client.status();
  EXPECT_NE((*client)->worker_id(0), 0u);
}

TEST(PsClient, GivesUpOnAnUnreachableShardAndNamesIt) {
  ClientOptions options;
  const std::string address = absl::StrCat("127.0.0.1:", FreePort());
  options.shard_addresses = {address};
  options.worker_name = "lonely";
  options.max_attempts = 3;
  options.initial_backoff = absl::Milliseconds(1);
  options.max_backoff = absl::Milliseconds(5);
  const auto client = PsClient::Connect(options);
  EXPECT_EQ(client.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(client.status().message(), HasSubstr(address));
}

TEST(PsClient, ConnectRejectsBadOptions) {
  ClientOptions options;
  EXPECT_EQ(PsClient::Connect(options).status().code(), absl::StatusCode::kInvalidArgument);
  options.shard_addresses = {"127.0.0.1:1"};
  options.max_attempts = 0;
  EXPECT_EQ(PsClient::Connect(options).status().code(), absl::StatusCode::kInvalidArgument);
  options.max_attempts = 1;
  options.max_message_bytes = 1 << 20;  // below a shard's 1 MiB answers
  const absl::Status small = PsClient::Connect(options).status();
  EXPECT_EQ(small.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(small.message(), HasSubstr("max_message_bytes must be >= 2 MiB"));
}

// The Exchange stream sends up to 1 MiB of values per message, but never
// more than half the limit the shard told at Join: against a shard that
// takes messages of at most 600,000 bytes, a 2 MiB model (eight default
// chunks) travels a chunk per message, and every round is applied.
TEST(PsClient, ExchangeMessagesStayBelowTheShardsLimit) {
  std::vector<std::string> flags = kAsgdFlags;
  flags.push_back("--max_message_bytes=600000");
  auto shards = StartOrDie(1, flags);
  ASSERT_EQ(shards.size(), 1u);
  auto client = ConnectOrDie(Options(shards, "worker-a"));
  ASSERT_NE(client, nullptr);
  TensorSpec w;
  w.name = "w";
  w.shape = {8, 65536};
  w.init.kind = Initializer::Kind::kConstant;
  w.init.a = 1.0f;
  ASSERT_TRUE(client->Declare({w}).ok());
  TensorMap gradients, weights;
  gradients["w"] = std::vector<float>(8 * 65536, 0.25f);
  for (int round = 1; round <= 2; ++round) {
    ASSERT_TRUE(client->PushPull(gradients, &weights).ok()) << "round " << round;
    ASSERT_EQ(weights["w"].size(), 8u * 65536);
    EXPECT_EQ(weights["w"].front(), 1.0f - 0.25f * round);
    EXPECT_EQ(weights["w"].back(), 1.0f - 0.25f * round);
  }
}

// ps-lite's ticket and Wait: pushes start at once and finish in order.
TEST(PsClient, AsyncPushesFinishInTicketOrder) {
  auto shards = StartOrDie(2);
  ASSERT_EQ(shards.size(), 2u);
  TensorMap weights;
  auto client = DeclaredOrDie(shards, "async", &weights);
  ASSERT_NE(client, nullptr);
  std::vector<TensorMap> gradients(3), answers(3);
  std::vector<PushStats> stats(3);
  std::vector<PushTicket> tickets;
  for (int i = 0; i < 3; ++i) {
    gradients[i]["w"] = std::vector<float>(10, static_cast<float>(i + 1));
    tickets.push_back(client->PushPullAsync(gradients[i], &answers[i], &stats[i]));
  }
  EXPECT_LT(tickets[0], tickets[1]);
  EXPECT_LT(tickets[1], tickets[2]);
  // Waiting for the last finishes the others first; their results are kept.
  ASSERT_TRUE(client->Wait(tickets[2]).ok());
  ASSERT_TRUE(client->Wait(tickets[0]).ok());
  ASSERT_TRUE(client->Wait(tickets[1]).ok());
  float applied = 0;
  for (int i = 0; i < 3; ++i) {
    applied += static_cast<float>(i + 1);
    std::vector<float> expected;
    for (int e = 0; e < 10; ++e) expected.push_back(static_cast<float>(e) - applied);
    EXPECT_EQ(answers[i]["w"], expected) << "push " << i;
    EXPECT_EQ(stats[i].step, static_cast<uint64_t>(i + 1));
    for (uint64_t version : stats[i].versions) {
      if (version != 0) {
        EXPECT_EQ(version, static_cast<uint64_t>(i + 1));
      }
    }
  }
  EXPECT_EQ(client->Wait(tickets[0]).code(), absl::StatusCode::kNotFound)
      << "a ticket is waited for once";
  EXPECT_EQ(client->Wait(999).code(), absl::StatusCode::kNotFound);
  // The synchronous calls go on after asynchronous ones.
  ASSERT_TRUE(client->PushPull(gradients[0], &weights).ok());
  EXPECT_EQ(weights["w"][0], -7.0f);
}

TEST(PsClient, AsyncPushErrorsArriveAtWait) {
  auto shards = StartOrDie(2);
  ASSERT_EQ(shards.size(), 2u);
  TensorMap weights;
  auto client = DeclaredOrDie(shards, "async", &weights);
  ASSERT_NE(client, nullptr);
  TensorMap unknown = {{"nope", {1}}};
  TensorMap short_gradient = {{"w", {1, 2}}};
  TensorMap good = {{"w", std::vector<float>(10, 1.0f)}};
  const PushTicket a = client->PushPullAsync(unknown, &weights);
  const PushTicket b = client->PushAsync(short_gradient);
  const PushTicket c = client->PushPullAsync(good, nullptr);
  const PushTicket d = client->PushPullAsync(good, &weights);
  EXPECT_EQ(client->Wait(a).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(client->Wait(b).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(client->Wait(c).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(client->Wait(d).ok());
  EXPECT_EQ(weights["w"][0], -1.0f) << "only the good push was applied";

  auto evaluator = ConnectOrDie(Options(shards, ""));
  ASSERT_NE(evaluator, nullptr);
  EXPECT_EQ(evaluator->Wait(evaluator->PushAsync(good)).code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(PsClient, AsyncPushRejoinsWhenTheLeaseWasLostInFlight) {
  auto shards = StartOrDie(2, ShortLeaseFlags());
  ASSERT_EQ(shards.size(), 2u);
  auto client = ConnectOrDie(SleepyOptions(shards));
  ASSERT_NE(client, nullptr);
  ASSERT_TRUE(client->Declare(Specs()).ok());
  TensorMap weights;
  ASSERT_TRUE(client->Pull({}, &weights).ok());
  TensorMap gradients = {{"w", std::vector<float>(10, 1.0f)}};
  ASSERT_TRUE(client->Wait(client->PushPullAsync(gradients, &weights)).ok());
  const uint64_t old_id = client->worker_id(0);
  ASSERT_TRUE(LeasesExpired(client.get()));
  // Two pushes in flight over the open streams when the lease is gone.
  TensorMap first, second;
  const PushTicket t1 = client->PushPullAsync(gradients, &first);
  const PushTicket t2 = client->PushPullAsync(gradients, &second);
  const absl::Status lost = client->Wait(t1);
  EXPECT_EQ(lost.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(lost.message(), HasSubstr("re-joined; pull again"));
  EXPECT_NE(client->worker_id(0), old_id);
  // The second was sent with the old id too: also refused, nothing applied.
  EXPECT_EQ(client->Wait(t2).code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(client->Pull({"w"}, &weights).ok());
  EXPECT_EQ(weights["w"], (std::vector<float>{-1, 0, 1, 2, 3, 4, 5, 6, 7, 8}));
  ASSERT_TRUE(client->Wait(client->PushPullAsync(gradients, &weights)).ok());
  EXPECT_EQ(weights["w"], (std::vector<float>{-2, -1, 0, 1, 2, 3, 4, 5, 6, 7}));
}

// A push stuck on a stopped shard is given up at once by Cancel; pushed
// again with its step once the shard runs, it is applied exactly once.
TEST(PsClient, AsyncPushCanBeCancelledAndPushedAgainWithItsStep) {
  auto shards = StartOrDie(1);
  ASSERT_EQ(shards.size(), 1u);
  ClientOptions options = Options(shards, "canceller");
  options.heartbeats = false;
  auto client = ConnectOrDie(options);
  ASSERT_NE(client, nullptr);
  ASSERT_TRUE(client->Declare(Specs()).ok());
  TensorMap weights;
  ASSERT_TRUE(client->Pull({}, &weights).ok());
  TensorMap gradients = {{"w", std::vector<float>(10, 1.0f)}};
  ASSERT_TRUE(client->Wait(client->PushPullAsync(gradients, &weights)).ok());

  ASSERT_TRUE(shards[0]->Kill(SIGSTOP).ok());
  PushStats stats;
  const PushTicket stuck = client->PushPullAsync(gradients, &weights, &stats);
  EXPECT_EQ(client->Cancel(stuck), absl::OkStatus());
  const absl::Time before = absl::Now();
  const absl::Status cancelled = client->Wait(stuck);
  EXPECT_EQ(cancelled.code(), absl::StatusCode::kCancelled) << cancelled;
  EXPECT_THAT(cancelled.message(), HasSubstr("may or may not have applied"));
  EXPECT_LT(absl::Now() - before, absl::Seconds(10)) << "Wait waited for the stopped shard";
  EXPECT_EQ(client->Cancel(stuck).code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(shards[0]->Kill(SIGCONT).ok());

  // The same batch again, with the cancelled push's step.
  const absl::Status again = client->PushPull(gradients, &weights, nullptr, stats.step);
  ASSERT_TRUE(again.ok()) << again;
  EXPECT_EQ(weights["w"], (std::vector<float>{-2, -1, 0, 1, 2, 3, 4, 5, 6, 7}))
      << "applied exactly once";
}

}  // namespace
}  // namespace dcasgd
