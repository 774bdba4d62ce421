// Integration: real dcasgd-ps processes on loopback driven through the C++
// client: DC-ASGD with two shards and two workers against a reference
// computed here, staleness in the metrics, lease expiry freeing backups, and
// crash recovery from periodic checkpoints.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmath>
#include <csignal>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "clients/cpp/ps_client.h"
#include "core/checkpoint.h"
#include "gtest/gtest.h"
#include "tests/testing/ps_process.h"

namespace dcasgd {
namespace {

// Sum of every sample of `name` in a Prometheus text exposition.
double MetricSum(const std::string& exposition, const std::string& name) {
  double total = 0;
  for (absl::string_view line : absl::StrSplit(exposition, '\n')) {
    if (!absl::StartsWith(line, name + "{") && !absl::StartsWith(line, name + " ")) continue;
    double v = 0;
    if (absl::SimpleAtod(line.substr(line.rfind(' ') + 1), &v)) total += v;
  }
  return total;
}

// A client without a worker name: pulls record no backup.
std::unique_ptr<PsClient> Evaluator(const std::vector<std::string>& addresses) {
  ClientOptions options;
  options.shard_addresses = addresses;
  auto client = PsClient::Connect(options);
  EXPECT_TRUE(client.ok()) << client.status();
  return client.ok() ? *std::move(client) : nullptr;
}

std::unique_ptr<PsClient> Worker(const std::vector<std::string>& addresses, const std::string& name,
                                 bool heartbeats = true) {
  ClientOptions options;
  options.shard_addresses = addresses;
  options.worker_name = name;
  options.heartbeats = heartbeats;
  auto client = PsClient::Connect(options);
  EXPECT_TRUE(client.ok()) << client.status();
  return client.ok() ? *std::move(client) : nullptr;
}

uint64_t TotalBackupBytes(PsClient& client) {
  auto status = client.GetStatus();
  EXPECT_TRUE(status.ok()) << status.status();
  uint64_t total = 0;
  if (status.ok()) {
    for (const auto& s : *status) total += s.backup_bytes;
  }
  return total;
}

template <typename Predicate>
bool PollUntil(Predicate predicate, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    if (predicate()) return true;
    absl::SleepFor(absl::Milliseconds(20));
  }
  return predicate();
}

TEST(PsCluster, DelayCompensationAcrossTwoShardsMatchesTheReference) {
  constexpr float kLr = 0.5f, kLambda = 0.25f;
  auto shards = testing::StartShards(
      2, {"--update_rule=dcasgd-c", "--lr=0.5", "--lambda0=0.25", "--lease_seconds=30"});
  ASSERT_TRUE(shards.ok()) << shards.status();
  const std::vector<std::string> addresses = testing::Addresses(*shards);
  auto a = Worker(addresses, "a");
  auto b = Worker(addresses, "b");
  ASSERT_TRUE(a && b);

  // 4 chunks of 1000 floats: both shards own some.
  TensorSpec spec;
  spec.name = "w";
  spec.shape = {4000};
  spec.chunk_elements = 1000;
  spec.init.kind = Initializer::Kind::kUniform;
  spec.init.a = -1;
  spec.init.b = 1;
  spec.init.seed = 42;
  ASSERT_TRUE(a->Declare({spec}).ok());
  ASSERT_TRUE(b->Declare({spec}).ok());

  TensorMap wa, wb;
  ASSERT_TRUE(a->Pull({"w"}, &wa).ok());  // w_bak(a) = w0
  ASSERT_TRUE(b->Pull({"w"}, &wb).ok());  // w_bak(b) = w0
  ASSERT_EQ(wa["w"], wb["w"]);
  const std::vector<float> w0 = wa["w"];

  TensorMap gb = {{"w", std::vector<float>(4000)}};
  TensorMap ga = {{"w", std::vector<float>(4000)}};
  for (int i = 0; i < 4000; ++i) {
    gb["w"][i] = 0.001f * static_cast<float>(i % 97) - 0.05f;
    ga["w"][i] = 0.002f * static_cast<float>(i % 89) - 0.08f;
  }
  PushStats sb, sa;
  ASSERT_TRUE(b->PushPull(gb, &wb, &sb).ok());
  EXPECT_EQ(sb.max_staleness, 0u);
  ASSERT_TRUE(a->PushPull(ga, &wa, &sa).ok());
  EXPECT_EQ(sa.max_staleness, 1u) << "b's push landed between a's pull and a's push";
  EXPECT_EQ(sa.shards_touched, 2u);

  // Reference: b's update has w - w_bak(b) = 0; a's is compensated by
  // w_now - w_bak(a) = w1 - w0 (paper eq. 10, DC-ASGD-c).
  for (int i = 0; i < 4000; ++i) {
    const float w1 = w0[i] - kLr * gb["w"][i];
    const float g = ga["w"][i];
    const float w2 = w1 - kLr * (g + kLambda * g * g * (w1 - w0[i]));
    ASSERT_FLOAT_EQ(wa["w"][i], w2) << i;
  }
  TensorMap now;
  auto evaluator = Evaluator(addresses);
  ASSERT_TRUE(evaluator);
  ASSERT_TRUE(evaluator->Pull({"w"}, &now).ok());
  EXPECT_EQ(now["w"], wa["w"]) << "PushPull returned the shards' values";

  // Staleness is recorded in the shards' metrics.
  double staleness_sum = 0, staleness_count = 0;
  for (const auto& shard : *shards) {
    auto text = testing::HttpGet(shard->metrics_port(), "/metrics");
    ASSERT_TRUE(text.ok()) << text.status();
    staleness_sum += MetricSum(*text, "dcasgd_ps_staleness_sum");
    staleness_count += MetricSum(*text, "dcasgd_ps_staleness_count");
  }
  EXPECT_EQ(staleness_count, 4);  // 2 pushes x 2 shards
  EXPECT_EQ(staleness_sum, 2);    // a's push was 1 stale on each shard
}

TEST(PsCluster, ExpiredLeaseFreesTheWorkersBackupsOnEveryShard) {
  auto shards = testing::StartShards(2, {"--update_rule=dcasgd-a", "--lease_seconds=0.5"});
  ASSERT_TRUE(shards.ok()) << shards.status();
  const std::vector<std::string> addresses = testing::Addresses(*shards);
  auto stays = Worker(addresses, "stays");
  ASSERT_TRUE(stays);
  TensorSpec spec;
  spec.name = "w";
  spec.shape = {3000};
  spec.chunk_elements = 1000;
  ASSERT_TRUE(stays->Declare({spec}).ok());
  TensorMap w;
  ASSERT_TRUE(stays->Pull({"w"}, &w).ok());
  const uint64_t one_backup = TotalBackupBytes(*stays);
  EXPECT_EQ(one_backup, 3000 * sizeof(float));

  auto dies = Worker(addresses, "dies", /*heartbeats=*/false);
  ASSERT_TRUE(dies);
  ASSERT_TRUE(dies->Pull({"w"}, &w).ok());
  EXPECT_EQ(TotalBackupBytes(*stays), 2 * one_backup);
  // "dies" stops heartbeating: within a few lease periods its backups are
  // freed on both shards; the heartbeating worker keeps its own.
  EXPECT_TRUE(PollUntil([&] { return TotalBackupBytes(*stays) == one_backup; }, absl::Seconds(10)));
  auto status = stays->GetStatus();
  ASSERT_TRUE(status.ok());
  for (const auto& s : *status) EXPECT_EQ(s.active_workers, 1u);
  // Its next push is refused; the client re-joins and asks for a pull.
  TensorMap g = {{"w", std::vector<float>(3000, 0.1f)}};
  absl::Status pushed = dies->Push(g);
  EXPECT_EQ(pushed.code(), absl::StatusCode::kFailedPrecondition) << pushed;
  EXPECT_TRUE(stays->Push(g).ok());
}

TEST(PsCluster, KillNineLosesAtMostTheCheckpointIntervalAndRestoresBitForBit) {
  auto dir = testing::MakeTempDir("dcasgd-crash");
  ASSERT_TRUE(dir.ok());
  // A fixed port, so the worker's channel reaches the restarted shard (as a
  // StatefulSet pod keeps its DNS name).
  const int port = testing::FreePort();
  ASSERT_GT(port, 0);
  auto ps = testing::PsProcess::Start(
      {"--listen=127.0.0.1:" + std::to_string(port), "--update_rule=dcasgd-a", "--lr=0.05",
       "--checkpoint_dir=" + *dir, "--checkpoint_interval_seconds=0.3"});
  ASSERT_TRUE(ps.ok()) << ps.status();
  auto worker = Worker({(*ps)->address()}, "w0");
  ASSERT_TRUE(worker);
  TensorSpec spec;
  spec.name = "w";
  spec.shape = {2500};
  spec.chunk_elements = 1000;
  spec.init.kind = Initializer::Kind::kNormal;
  spec.init.b = 1;
  spec.init.seed = 3;
  ASSERT_TRUE(worker->Declare({spec}).ok());
  TensorMap w;
  ASSERT_TRUE(worker->Pull({"w"}, &w).ok());

  // One worker: every push is one version; remember the weights of each.
  std::map<uint64_t, std::vector<float>> by_version = {{0, w["w"]}};
  auto push = [&](int step) {
    TensorMap g = {{"w", std::vector<float>(2500)}};
    for (int i = 0; i < 2500; ++i) g["w"][i] = std::sin(0.01f * i + step);
    PushStats stats;
    ASSERT_TRUE(worker->PushPull(g, &w, &stats).ok());
    by_version[stats.versions[0]] = w["w"];
  };
  for (int step = 0; step < 20; ++step) push(step);
  // Wait for a periodic checkpoint of the latest version...
  const uint64_t checkpointed = by_version.rbegin()->first;
  ASSERT_TRUE(PollUntil(
      [&] {
        auto s = worker->GetStatus();
        return s.ok() && (*s)[0].checkpoint_version == checkpointed;
      },
      absl::Seconds(10)));
  // ...then train on and crash without a final checkpoint.
  for (int step = 20; step < 30; ++step) push(step);
  ASSERT_TRUE((*ps)->Kill(SIGKILL).ok());
  ASSERT_TRUE((*ps)->WaitExit().ok());

  auto on_disk = ReadCheckpoint(*dir + "/shard-0.ckpt");
  ASSERT_TRUE(on_disk.ok()) << on_disk.status();
  EXPECT_GE(on_disk->version, checkpointed) << "a checkpointed update was lost";

  ASSERT_TRUE((*ps)->Restart().ok()) << (*ps)->Log();
  auto evaluator = Evaluator({(*ps)->address()});
  ASSERT_TRUE(evaluator);
  auto status = evaluator->GetStatus();
  ASSERT_TRUE(status.ok());
  const uint64_t restored = (*status)[0].version;
  EXPECT_EQ(restored, on_disk->version);
  ASSERT_TRUE(by_version.count(restored));
  TensorMap after;
  ASSERT_TRUE(evaluator->Pull({"w"}, &after).ok());
  ASSERT_EQ(after["w"].size(), 2500u);
  EXPECT_EQ(std::memcmp(after["w"].data(), by_version[restored].data(), 2500 * sizeof(float)), 0)
      << "weights of version " << restored << " restored bit for bit";
  // The old worker id is gone (backups are not checkpointed): its next push
  // is refused and the client re-joins; after a pull it trains on.
  TensorMap g = {{"w", std::vector<float>(2500, 0.01f)}};
  EXPECT_EQ(worker->PushPull(g, &w).code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(worker->Pull({"w"}, &w).ok());
  EXPECT_TRUE(worker->PushPull(g, &w).ok());
  testing::RemoveTree(*dir);
}

}  // namespace
}  // namespace dcasgd
