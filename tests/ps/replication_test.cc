// A replicated shard pair (services/ps/replication_*.h; docs/design.md,
// "Replicated shards") as real processes on loopback: a dcasgd-witness and
// two dcasgd-ps members (--replicas=2), driven by the real C++ client. The
// replica refuses clients with its role, holds the primary's state bit for
// bit, has every acknowledged push before the client hears of it, and takes
// over when the primary dies or hangs; a primary whose replica dies goes on
// alone; a primary that hung and resumed acknowledges nothing; and a pair
// whose primary is SIGKILLed 20 times while workers push loses no
// acknowledged push and applies none twice.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/status_macros.h"
#include "clients/cpp/ps_client.h"
#include "coordinator/coordinator_client.h"
#include "core/checkpoint.h"
#include "dcasgd/v1/ps.grpc.pb.h"
#include "dcasgd/v1/replication.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/create_channel.h"
#include "gtest/gtest.h"
#include "tests/testing/ps_process.h"

namespace dcasgd {
namespace {

using testing::PsProcess;

// Whether every thread of `pid` is stopped (state T in /proc): a SIGSTOP
// takes effect only once one of the process's threads handled it, and the
// others may run meanwhile.
bool AllThreadsStopped(pid_t pid) {
  const std::string dir = absl::StrCat("/proc/", pid, "/task");
  std::error_code error;
  bool any = false;
  for (const auto& task : std::filesystem::directory_iterator(dir, error)) {
    std::ifstream stat(task.path() / "stat");
    std::string line;
    std::getline(stat, line);
    const size_t paren = line.rfind(')');
    if (paren == std::string::npos || paren + 2 >= line.size()) return false;
    if (line[paren + 2] != 'T' && line[paren + 2] != 't') return false;
    any = true;
  }
  return any && !error;
}

// SIGSTOP, and wait until it took effect.
absl::Status Stop(PsProcess& process) {
  RETURN_IF_ERROR(process.Kill(SIGSTOP));
  return testing::WaitFor([&] { return AllThreadsStopped(process.pid()); }, absl::Seconds(10));
}

// Polls the process's /metrics until it shows `line` (the gauges follow
// the member's state within a tick).
bool MetricsShow(PsProcess& process, const std::string& line) {
  return testing::WaitFor(
             [&] {
               absl::StatusOr<std::string> metrics =
                   testing::HttpGet(process.metrics_port(), "/metrics");
               return metrics.ok() && metrics->find(line) != std::string::npos;
             },
             absl::Seconds(10))
      .ok();
}

// The sum of the samples of metric `name` on the process's /metrics (-1
// when it cannot be read).
double MetricSum(PsProcess& process, const std::string& name) {
  absl::StatusOr<std::string> metrics = testing::HttpGet(process.metrics_port(), "/metrics");
  if (!metrics.ok()) return -1;
  double sum = 0;
  for (absl::string_view line : absl::StrSplit(*metrics, '\n')) {
    if (!absl::StartsWith(line, name + "{") && !absl::StartsWith(line, name + " ")) continue;
    double value = 0;
    if (absl::SimpleAtod(line.substr(line.rfind(' ') + 1), &value)) sum += value;
  }
  return sum;
}

struct Timing {
  int lease_ms = 2000;
  int failover_ms = 3000;
};

// A witness and the two members of shard 0/1, checkpointing to temp dirs.
class Pair {
 public:
  // `extra` goes to both members, and its --auth flags to the witness;
  // `token` (if any) is sent with the test's own calls.
  absl::Status Start(Timing timing, std::vector<std::string> extra = {}, std::string token = "") {
    token_ = std::move(token);
    ASSIGN_OR_RETURN(root_, testing::MakeTempDir("replication"));
    // A fixed port: the members' --witness_address survives its restart.
    std::vector<std::string> witness_flags = {
        absl::StrCat("--listen=127.0.0.1:", testing::FreePort()),
        absl::StrCat("--state_dir=", root_, "/witness"), "--shard_count=1", "--metrics_address="};
    for (const std::string& flag : extra) {
      if (flag.rfind("--auth", 0) == 0) witness_flags.push_back(flag);
    }
    ASSIGN_OR_RETURN(witness_, PsProcess::StartBinary(testing::WitnessBinaryPath(), witness_flags));
    const int pa = testing::FreePort();
    const int pb = testing::FreePort();
    address_[0] = absl::StrCat("127.0.0.1:", pa);
    address_[1] = absl::StrCat("127.0.0.1:", pb);
    for (int m = 0; m < 2; ++m) {
      std::vector<std::string> flags = {
          absl::StrCat("--listen=", address_[m]),
          "--replicas=2",
          absl::StrCat("--member=", m == 0 ? "a" : "b"),
          absl::StrCat("--peer_address=", address_[1 - m]),
          absl::StrCat("--witness_address=", witness_->address()),
          "--replication_heartbeat_ms=50",
          absl::StrCat("--replication_lease_ms=", timing.lease_ms),
          absl::StrCat("--failover_timeout_ms=", timing.failover_ms),
          absl::StrCat("--checkpoint_dir=", root_, "/", m == 0 ? "a" : "b"),
          "--checkpoint_interval_seconds=3600",
          "--lease_seconds=60",
      };
      flags.insert(flags.end(), extra.begin(), extra.end());
      ASSIGN_OR_RETURN(member_[m], PsProcess::Start(flags));
    }
    return absl::OkStatus();
  }
  // Start, then waits until member a is the primary of a formed pair; the
  // error carries both members' logs.
  absl::Status StartPaired(Timing timing, std::vector<std::string> extra = {}) {
    RETURN_IF_ERROR(Start(timing, std::move(extra)));
    if (WaitRole(0, "primary")) return absl::OkStatus();
    return absl::DeadlineExceededError(
        absl::StrCat("a never became the primary of a pair\n", member(0).Log(), member(1).Log()));
  }
  ~Pair() {
    member_[0].reset();
    member_[1].reset();
    witness_.reset();
    if (!root_.empty()) testing::RemoveTree(root_);
  }

  PsProcess& member(int m) { return *member_[m]; }
  PsProcess& witness() { return *witness_; }
  std::string witness_state() const { return absl::StrCat(root_, "/witness/witness.state"); }
  const std::string& address(int m) const { return address_[m]; }
  std::string checkpoint(int m) const {
    return absl::StrCat(root_, "/", m == 0 ? "a" : "b", "/shard-0.ckpt");
  }

  // GetStatus of member m (its role and epoch included).
  absl::StatusOr<v1::ShardStatus> Status(int m) {
    auto stub = v1::ParameterShard::NewStub(
        grpc::CreateChannel(address_[m], grpc::InsecureChannelCredentials()));
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(2)));
    if (!token_.empty()) context.AddMetadata("authorization", "Bearer " + token_);
    v1::ShardStatus status;
    grpc::Status s = stub->GetStatus(&context, v1::GetStatusRequest(), &status);
    if (!s.ok()) return absl::UnavailableError(s.error_message());
    return status;
  }
  // Polls until member m reports `role`.
  bool WaitRole(int m, const std::string& role, absl::Duration timeout = absl::Seconds(30)) {
    return testing::WaitFor(
               [&] {
                 absl::StatusOr<v1::ShardStatus> s = Status(m);
                 return s.ok() && s->replication_role() == role;
               },
               timeout)
        .ok();
  }
  // Health "" (the process's liveness) of member m.
  grpc::health::v1::HealthCheckResponse::ServingStatus Health(int m) {
    auto stub = grpc::health::v1::Health::NewStub(
        grpc::CreateChannel(address_[m], grpc::InsecureChannelCredentials()));
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(2)));
    grpc::health::v1::HealthCheckResponse response;
    if (!stub->Check(&context, grpc::health::v1::HealthCheckRequest(), &response).ok()) {
      return grpc::health::v1::HealthCheckResponse::UNKNOWN;
    }
    return response.status();
  }
  // A Join on member m: its status and the dcasgd-role it named.
  std::pair<grpc::Status, std::string> Join(int m) {
    auto stub = v1::ParameterShard::NewStub(
        grpc::CreateChannel(address_[m], grpc::InsecureChannelCredentials()));
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
    v1::JoinRequest request;
    request.set_worker_name("probe");
    v1::JoinResponse response;
    grpc::Status s = stub->Join(&context, request, &response);
    std::string role;
    for (const auto& [key, value] : context.GetServerTrailingMetadata()) {
      if (key == "dcasgd-role") role = std::string(value.data(), value.size());
    }
    return {s, role};
  }

 private:
  std::string root_;
  std::string token_;
  std::unique_ptr<PsProcess> witness_;
  std::unique_ptr<PsProcess> member_[2];
  std::string address_[2];
};

std::unique_ptr<PsClient> Worker(const std::string& address, const std::string& name) {
  ClientOptions options;
  options.shard_addresses = {address};
  options.worker_name = name;
  options.max_attempts = 2;
  auto client = PsClient::Connect(options);
  EXPECT_TRUE(client.ok()) << client.status();
  return client.ok() ? *std::move(client) : nullptr;
}

constexpr int kElements = 4000;

TensorSpec Spec() {
  TensorSpec spec;
  spec.name = "w";
  spec.shape = {kElements};
  spec.chunk_elements = 1000;
  spec.init.kind = Initializer::Kind::kUniform;
  spec.init.a = -1;
  spec.init.b = 1;
  spec.init.seed = 7;
  return spec;
}

// A worker on `address` that declared Spec() and pulled "w" into `weights`;
// null (with a test failure) when a step failed.
std::unique_ptr<PsClient> JoinedWorker(const std::string& address, const std::string& name,
                                       TensorMap* weights) {
  std::unique_ptr<PsClient> worker = Worker(address, name);
  if (worker == nullptr) return nullptr;
  absl::Status status = worker->Declare({Spec()});
  if (status.ok()) status = worker->Pull({"w"}, weights);
  EXPECT_TRUE(status.ok()) << status;
  return status.ok() ? std::move(worker) : nullptr;
}

// "w" as the member at `address` holds it, read by a client that does not
// join.
absl::StatusOr<std::vector<float>> ReadWeights(const std::string& address) {
  ClientOptions options;
  options.shard_addresses = {address};
  ASSIGN_OR_RETURN(std::unique_ptr<PsClient> reader, PsClient::Connect(options));
  RETURN_IF_ERROR(reader->FetchSpecs());
  TensorMap weights;
  RETURN_IF_ERROR(reader->Pull({"w"}, &weights));
  return std::move(weights["w"]);
}

// The gradient of step s: small, different per step and coordinate.
TensorMap Gradient(int s) {
  TensorMap g = {{"w", std::vector<float>(kElements)}};
  for (int i = 0; i < kElements; ++i) {
    g["w"][i] = 0.001f * static_cast<float>((i * 7 + s * 13) % 101) - 0.05f;
  }
  return g;
}

bool SameBits(const std::vector<float>& x, const std::vector<float>& y) {
  return x.size() == y.size() && std::memcmp(x.data(), y.data(), x.size() * sizeof(float)) == 0;
}

// Member a SIGKILLed; b must take over alone and serve `expected` (the
// weights a acknowledged last) bit for bit.
void ExpectBServesAfterAIsKilled(Pair& pair, const std::vector<float>& expected) {
  ASSERT_TRUE(pair.member(0).Kill(SIGKILL).ok());
  ASSERT_TRUE(pair.WaitRole(1, "primary-solo")) << pair.member(1).Log();
  absl::StatusOr<std::vector<float>> on_b = ReadWeights(pair.address(1));
  ASSERT_TRUE(on_b.ok()) << on_b.status();
  EXPECT_TRUE(SameBits(*on_b, expected));
}

TEST(Replication, ReplicaRefusesClientsAndEndsBitIdentical) {
  Pair pair;
  const absl::Status paired = pair.StartPaired(Timing{});
  ASSERT_TRUE(paired.ok()) << paired;
  absl::StatusOr<v1::ShardStatus> b = pair.Status(1);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->replication_role(), "replica");
  EXPECT_EQ(b->member(), "b");
  EXPECT_EQ(b->epoch(), 1u);

  auto [refused, role] = pair.Join(1);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(role, "replica");
  EXPECT_TRUE(
      MetricsShow(pair.member(1), "dcasgd_ps_replication_role{role=\"replica\",shard=\"0\"} 1"));
  EXPECT_TRUE(MetricsShow(pair.member(0), "dcasgd_ps_replication_paired{shard=\"0\"} 1"));
  EXPECT_NE(refused.error_message().find("replica at epoch 1"), std::string::npos)
      << refused.error_message();

  TensorMap weights;
  auto worker = JoinedWorker(pair.address(0), "w0", &weights);
  ASSERT_NE(worker, nullptr);
  for (int s = 1; s <= 40; ++s) {
    absl::Status pushed = s % 2 == 0 ? worker->PushPull(Gradient(s), &weights, nullptr, s)
                                     : worker->Push(Gradient(s), nullptr, s);
    ASSERT_TRUE(pushed.ok()) << s << ": " << pushed;
  }
  absl::StatusOr<v1::ShardStatus> a = pair.Status(0);
  b = pair.Status(1);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->version(), 40u);
  EXPECT_EQ(b->version(), 40u);  // every acknowledged push is applied on b
  EXPECT_EQ(a->last_seq(), b->last_seq());
  worker.reset();

  // The final checkpoints of both members: the same state, bit for bit.
  ASSERT_TRUE(pair.member(1).Kill(SIGTERM).ok());
  EXPECT_EQ(pair.member(1).WaitExit().value_or(-1), 0) << pair.member(1).Log();
  ASSERT_TRUE(pair.member(0).Kill(SIGTERM).ok());
  EXPECT_EQ(pair.member(0).WaitExit().value_or(-1), 0) << pair.member(0).Log();
  absl::StatusOr<ShardSnapshot> ca = ReadCheckpoint(pair.checkpoint(0));
  absl::StatusOr<ShardSnapshot> cb = ReadCheckpoint(pair.checkpoint(1));
  ASSERT_TRUE(ca.ok()) << ca.status();
  ASSERT_TRUE(cb.ok()) << cb.status();
  EXPECT_EQ(ca->version, cb->version);
  ASSERT_EQ(ca->tensors.size(), 1u);
  ASSERT_EQ(cb->tensors.size(), 1u);
  ASSERT_EQ(ca->tensors[0].chunks.size(), cb->tensors[0].chunks.size());
  for (size_t c = 0; c < ca->tensors[0].chunks.size(); ++c) {
    const ChunkState& x = ca->tensors[0].chunks[c];
    const ChunkState& y = cb->tensors[0].chunks[c];
    EXPECT_TRUE(SameBits(x.weights, y.weights)) << "chunk " << c;
    EXPECT_TRUE(SameBits(x.mean_square, y.mean_square)) << "chunk " << c;
    EXPECT_FALSE(x.mean_square.empty());  // dcasgd-a keeps it
  }
}

TEST(Replication, PushIsAcknowledgedOnlyOnceTheReplicaHasIt) {
  Pair pair;
  const absl::Status paired = pair.StartPaired(Timing{});
  ASSERT_TRUE(paired.ok()) << paired;
  TensorMap weights;
  auto worker = JoinedWorker(pair.address(0), "w0", &weights);
  ASSERT_NE(worker, nullptr);
  ASSERT_TRUE(worker->Push(Gradient(1), nullptr, 1).ok());

  ASSERT_TRUE(Stop(pair.member(1)).ok());
  std::atomic<bool> answered{false};
  absl::Status result;
  std::thread push([&] {
    result = worker->Push(Gradient(2), nullptr, 2);
    answered = true;
  });
  // Well within the failover timeout (3 s): a applied the push but the
  // replica has not acknowledged it, so the client hears nothing.
  const bool early =
      testing::WaitFor([&] { return answered.load(); }, absl::Milliseconds(1200)).ok();
  EXPECT_FALSE(early) << pair.member(0).Log();
  absl::StatusOr<v1::ShardStatus> a = pair.Status(0);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->version(), 2u);  // applied on a, not acknowledged
  ASSERT_TRUE(pair.member(1).Kill(SIGCONT).ok());
  push.join();
  EXPECT_TRUE(result.ok()) << result << (early ? " (answered early)" : "");
  absl::StatusOr<v1::ShardStatus> b = pair.Status(1);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->version(), 2u);
  EXPECT_EQ(b->replication_role(), "replica");
  EXPECT_TRUE(pair.WaitRole(0, "primary"));  // still paired: no failover
}

TEST(Replication, KilledPrimaryReplicaTakesOverWithEveryAcknowledgedPush) {
  Pair pair;
  const absl::Status paired = pair.StartPaired(Timing{300, 800});
  ASSERT_TRUE(paired.ok()) << paired;
  TensorMap weights;
  auto worker = JoinedWorker(pair.address(0), "w0", &weights);
  ASSERT_NE(worker, nullptr);
  for (int s = 1; s <= 20; ++s) {
    ASSERT_TRUE(worker->PushPull(Gradient(s), &weights, nullptr, s).ok()) << s;
  }
  const std::vector<float> acknowledged = weights["w"];  // a's weights after push 20
  worker.reset();

  ASSERT_TRUE(pair.member(0).Kill(SIGKILL).ok());
  ASSERT_TRUE(pair.WaitRole(1, "primary-solo")) << pair.member(1).Log();
  absl::StatusOr<v1::ShardStatus> b = pair.Status(1);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->epoch(), 2u);
  EXPECT_EQ(b->version(), 20u);
  EXPECT_TRUE(MetricsShow(pair.member(1), "dcasgd_ps_replication_failovers_total{shard=\"0\"} 1"));
  // The same worker, its session and steps replicated: the last step again
  // is answered from the record, and the weights are a's, bit for bit.
  absl::StatusOr<std::vector<float>> on_b = ReadWeights(pair.address(1));
  ASSERT_TRUE(on_b.ok()) << on_b.status();
  EXPECT_TRUE(SameBits(*on_b, acknowledged));
  // b serves changes now.
  auto [joined, role] = pair.Join(1);
  EXPECT_TRUE(joined.ok()) << joined.error_message();
}

TEST(Replication, KilledReplicaPrimaryGoesOnAlone) {
  Pair pair;
  const absl::Status paired = pair.StartPaired(Timing{300, 800});
  ASSERT_TRUE(paired.ok()) << paired;
  TensorMap weights;
  auto worker = JoinedWorker(pair.address(0), "w0", &weights);
  ASSERT_NE(worker, nullptr);
  ASSERT_TRUE(worker->Push(Gradient(1), nullptr, 1).ok());
  ASSERT_TRUE(pair.member(1).Kill(SIGKILL).ok());
  // Waits for the failover timeout, then a claims alone and acknowledges.
  for (int s = 2; s <= 5; ++s) EXPECT_TRUE(worker->Push(Gradient(s), nullptr, s).ok()) << s;
  absl::StatusOr<v1::ShardStatus> a = pair.Status(0);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->replication_role(), "primary-solo");
  EXPECT_EQ(a->epoch(), 2u);
  EXPECT_EQ(a->version(), 5u);
  // The log line and the gauges follow the role change (polled: they are
  // written just after it).
  EXPECT_TRUE(testing::WaitFor(
                  [&] {
                    absl::StatusOr<std::string> metrics =
                        testing::HttpGet(pair.member(0).metrics_port(), "/metrics");
                    return metrics.ok() &&
                           metrics->find("dcasgd_ps_replication_paired{shard=\"0\"} 0") !=
                               std::string::npos &&
                           metrics->find("dcasgd_ps_replication_epoch{shard=\"0\"} 2") !=
                               std::string::npos;
                  },
                  absl::Seconds(10))
                  .ok());
  EXPECT_TRUE(testing::WaitFor(
                  [&] { return pair.member(0).Log().find("replica b lost") != std::string::npos; },
                  absl::Seconds(10))
                  .ok())
      << pair.member(0).Log();
}

TEST(Replication, RestartedReplicaCatchesUpAndPairsAgain) {
  Pair pair;
  const absl::Status paired = pair.StartPaired(Timing{300, 800});
  ASSERT_TRUE(paired.ok()) << paired;
  TensorMap weights;
  auto worker = JoinedWorker(pair.address(0), "w0", &weights);
  ASSERT_NE(worker, nullptr);
  for (int s = 1; s <= 5; ++s) ASSERT_TRUE(worker->Push(Gradient(s), nullptr, s).ok()) << s;
  ASSERT_TRUE(pair.member(1).Kill(SIGKILL).ok());
  ASSERT_TRUE(pair.member(1).WaitExit().ok());
  for (int s = 6; s <= 8; ++s) ASSERT_TRUE(worker->Push(Gradient(s), nullptr, s).ok()) << s;

  // b restarts with an empty memory: it follows a (the register names a),
  // loads a snapshot with the worker table and its backups, and a pairs again.
  ASSERT_TRUE(pair.member(1).Restart().ok());
  ASSERT_TRUE(pair.WaitRole(1, "replica")) << pair.member(1).Log();
  ASSERT_TRUE(pair.WaitRole(0, "primary")) << pair.member(0).Log();
  // The same worker goes on; its pushes (compensated with the backups b got
  // in the snapshot) reach b before they are acknowledged.
  for (int s = 9; s <= 12; ++s) {
    ASSERT_TRUE(worker->PushPull(Gradient(s), &weights, nullptr, s).ok()) << s;
  }
  absl::StatusOr<v1::ShardStatus> a = pair.Status(0);
  absl::StatusOr<v1::ShardStatus> b = pair.Status(1);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->version(), 12u);
  EXPECT_EQ(b->version(), 12u);
  EXPECT_EQ(a->last_seq(), b->last_seq());
  EXPECT_EQ(b->epoch(), a->epoch());
  EXPECT_EQ(a->epoch(), 2u);  // a went on alone once (epoch 2) and stayed there, paired
  // b now holds a's weights bit for bit: kill a and read them from b.
  worker.reset();
  ExpectBServesAfterAIsKilled(pair, weights["w"]);
}

// The snapshot is cut while a worker keeps pushing: every push after the cut
// reaches the new replica through the log, none twice.
TEST(Replication, CatchUpWhileAWorkerPushes) {
  Pair pair;
  const absl::Status paired = pair.StartPaired(Timing{300, 800});
  ASSERT_TRUE(paired.ok()) << paired;
  TensorMap weights;
  auto worker = JoinedWorker(pair.address(0), "w0", &weights);
  ASSERT_NE(worker, nullptr);
  ASSERT_TRUE(pair.member(1).Kill(SIGKILL).ok());
  ASSERT_TRUE(pair.member(1).WaitExit().ok());
  ASSERT_TRUE(pair.WaitRole(0, "primary-solo")) << pair.member(0).Log();

  std::atomic<bool> stop{false};
  std::atomic<int> pushed{0};
  absl::Status failed;
  std::thread pusher([&] {
    for (int s = 1; !stop.load(); ++s) {
      absl::Status status = worker->PushPull(Gradient(s), &weights, nullptr, s);
      if (!status.ok()) {
        failed = status;
        return;
      }
      pushed = s;
    }
  });
  ASSERT_TRUE(testing::WaitFor([&] { return pushed.load() >= 5; }, absl::Seconds(30)).ok());
  ASSERT_TRUE(pair.member(1).Restart().ok());
  EXPECT_TRUE(pair.WaitRole(0, "primary")) << pair.member(0).Log() << pair.member(1).Log();
  const int paired_at = pushed.load();
  EXPECT_TRUE(
      testing::WaitFor([&] { return pushed.load() >= paired_at + 10; }, absl::Seconds(30)).ok());
  stop = true;
  pusher.join();
  ASSERT_TRUE(failed.ok()) << failed;
  absl::StatusOr<v1::ShardStatus> a = pair.Status(0);
  absl::StatusOr<v1::ShardStatus> b = pair.Status(1);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->version(), static_cast<uint64_t>(pushed.load()));
  EXPECT_EQ(b->version(), a->version());
  EXPECT_EQ(b->last_seq(), a->last_seq());
  worker.reset();
  ExpectBServesAfterAIsKilled(pair, weights["w"]);
}

// Shard 0's data schedule is replicated too: after a failover the data
// leases out (with their secrets) and the completed data shards are the
// same on the new primary.
TEST(Replication, DataScheduleFollowsThePrimary) {
  Pair pair;
  const absl::Status paired = pair.StartPaired(Timing{300, 800});
  ASSERT_TRUE(paired.ok()) << paired;
  CoordinatorClient on_a(pair.address(0), absl::Seconds(5));
  absl::StatusOr<AcquireResult> first = on_a.Acquire("w0", 4, 1);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(std::holds_alternative<DataLease>(*first));
  const DataLease done = std::get<DataLease>(*first);
  ASSERT_TRUE(on_a.Complete(done.lease_id, done.secret).ok());
  absl::StatusOr<AcquireResult> second = on_a.Acquire("w0", 4, 1);
  ASSERT_TRUE(second.ok() && std::holds_alternative<DataLease>(*second));
  const DataLease held = std::get<DataLease>(*second);

  ASSERT_TRUE(pair.member(0).Kill(SIGKILL).ok());
  ASSERT_TRUE(pair.WaitRole(1, "primary-solo")) << pair.member(1).Log();
  CoordinatorClient on_b(pair.address(1), absl::Seconds(5));
  absl::StatusOr<JobProgress> progress = on_b.JobStatus();
  ASSERT_TRUE(progress.ok()) << progress.status();
  EXPECT_TRUE(progress->configured);
  EXPECT_EQ(progress->completed, 1u);
  EXPECT_EQ(progress->leased, 1u);
  // The lease a granted is b's too, secret and all.
  EXPECT_TRUE(on_b.Renew(held.lease_id, held.secret).ok());
  EXPECT_TRUE(on_b.Complete(held.lease_id, held.secret).ok());
  progress = on_b.JobStatus();
  ASSERT_TRUE(progress.ok());
  EXPECT_EQ(progress->completed, 2u);
}

// Renewals of data leases are not replicated: a promoted shard 0 gives every
// data lease out a fresh deadline, as it does every worker lease, so a lease
// its holder renewed with the old primary past the deadline the replica last
// saw does not expire at once (it would be trained twice).
TEST(Replication, APromotedShardZeroGivesDataLeasesAFreshDeadline) {
  Pair pair;
  const absl::Status paired = pair.StartPaired(Timing{300, 800}, {"--lease_seconds=2"});
  ASSERT_TRUE(paired.ok()) << paired;
  CoordinatorClient on_a(pair.address(0), absl::Seconds(5));
  absl::StatusOr<AcquireResult> acquired = on_a.Acquire("w0", 4, 1);
  ASSERT_TRUE(acquired.ok() && std::holds_alternative<DataLease>(*acquired));
  const DataLease held = std::get<DataLease>(*acquired);
  // Renewed on a until past the deadline b holds (from the Acquire entry).
  const absl::Time granted = absl::Now();
  while (absl::Now() < granted + absl::Milliseconds(3000)) {
    ASSERT_TRUE(on_a.Renew(held.lease_id, held.secret).ok());
    absl::SleepFor(absl::Milliseconds(500));  // the holder's renewal period
  }
  ASSERT_TRUE(pair.member(0).Kill(SIGKILL).ok());
  ASSERT_TRUE(pair.WaitRole(1, "primary-solo")) << pair.member(1).Log();
  CoordinatorClient on_b(pair.address(1), absl::Seconds(5));
  EXPECT_TRUE(on_b.Renew(held.lease_id, held.secret).ok());
  absl::StatusOr<JobProgress> progress = on_b.JobStatus();
  ASSERT_TRUE(progress.ok()) << progress.status();
  EXPECT_EQ(progress->reissued, 0u);
  EXPECT_EQ(progress->leased, 1u);
  EXPECT_TRUE(on_b.Complete(held.lease_id, held.secret).ok());
}

// A replica that cannot write the replicated data schedule to its own
// volume (here its file's path is a directory; in the fault suite, a full
// volume) counts a checkpoint failure and stays in its pair: the schedule
// is in its memory and the primary's.
TEST(Replication, AReplicaThatCannotSaveTheScheduleStaysInThePair) {
  Pair pair;
  const absl::Status paired = pair.StartPaired(Timing{300, 800});
  ASSERT_TRUE(paired.ok()) << paired;
  const std::string schedule =
      std::filesystem::path(pair.checkpoint(1)).parent_path() / "coordinator.state";
  std::error_code error;
  std::filesystem::remove(schedule, error);
  ASSERT_TRUE(std::filesystem::create_directory(schedule)) << schedule;
  CoordinatorClient coordinator(absl::StrCat(pair.address(0), "|", pair.address(1)),
                                absl::Seconds(30));
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<AcquireResult> lease = coordinator.Acquire("w0", 4, 1);
    ASSERT_TRUE(lease.ok() && std::holds_alternative<DataLease>(*lease)) << i;
    const DataLease& l = std::get<DataLease>(*lease);
    ASSERT_TRUE(coordinator.Complete(l.lease_id, l.secret).ok()) << i;
  }
  // Each change was committed with b's acknowledgement: still paired.
  absl::StatusOr<v1::ShardStatus> a = pair.Status(0);
  absl::StatusOr<v1::ShardStatus> b = pair.Status(1);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->replication_role(), "primary") << pair.member(1).Log();
  EXPECT_EQ(b->replication_role(), "replica") << pair.member(1).Log();
  EXPECT_NE(pair.member(1).Log().find("cannot save the replicated data schedule"),
            std::string::npos)
      << pair.member(1).Log();
  EXPECT_GE(MetricSum(pair.member(1), "dcasgd_ps_checkpoint_failures_total"), 3.0);
  // b holds the schedule: it goes on with it after a failover.
  ASSERT_TRUE(pair.member(0).Kill(SIGKILL).ok());
  ASSERT_TRUE(pair.WaitRole(1, "primary-solo")) << pair.member(1).Log();
  absl::StatusOr<JobProgress> progress = coordinator.JobStatus();
  ASSERT_TRUE(progress.ok()) << progress.status();
  EXPECT_EQ(progress->completed, 3u);
}

// Shard 0's data coordinator: its schedule and leases (with their secrets'
// digests) travel in the log, also to a replica that rejoins through a
// snapshot; when the primary dies, the promoted member goes on with the same
// schedule, and leases the old primary granted complete there.
TEST(Replication, TheDataScheduleReachesAReplicaThatRejoinedThroughASnapshot) {
  Pair pair;
  const absl::Status paired = pair.StartPaired(Timing{300, 800});
  ASSERT_TRUE(paired.ok()) << paired;
  CoordinatorClient coordinator(absl::StrCat(pair.address(0), "|", pair.address(1)),
                                absl::Seconds(30));
  auto acquire = [&](const std::string& worker) -> DataLease {
    absl::StatusOr<AcquireResult> result = coordinator.Acquire(worker, 4, 1);
    EXPECT_TRUE(result.ok()) << result.status();
    if (!result.ok() || !std::holds_alternative<DataLease>(*result)) return DataLease{};
    return std::get<DataLease>(*result);
  };
  const DataLease first = acquire("w0");
  ASSERT_TRUE(coordinator.Complete(first.lease_id, first.secret).ok());
  // b dies; a goes on alone, granting a lease b never sees as an entry.
  ASSERT_TRUE(pair.member(1).Kill(SIGKILL).ok());
  ASSERT_TRUE(pair.member(1).WaitExit().ok());
  const DataLease second = acquire("w1");
  // b restarts empty and catches up: the schedule follows the snapshot.
  ASSERT_TRUE(pair.member(1).Restart().ok());
  ASSERT_TRUE(pair.WaitRole(1, "replica")) << pair.member(1).Log();
  ASSERT_TRUE(pair.WaitRole(0, "primary")) << pair.member(0).Log();
  const DataLease third = acquire("w2");  // an entry of the log
  ASSERT_TRUE(pair.member(0).Kill(SIGKILL).ok());
  ASSERT_TRUE(pair.WaitRole(1, "primary-solo")) << pair.member(1).Log();

  absl::StatusOr<JobProgress> progress = coordinator.JobStatus();
  ASSERT_TRUE(progress.ok()) << progress.status();
  EXPECT_EQ(progress->completed, 1u);
  EXPECT_EQ(progress->leased, 2u);
  EXPECT_TRUE(coordinator.Complete(second.lease_id, second.secret).ok());
  EXPECT_TRUE(coordinator.Complete(third.lease_id, third.secret).ok());
  const DataLease fourth = acquire("w3");
  std::set<uint32_t> shards = {first.data_shard, second.data_shard, third.data_shard,
                               fourth.data_shard};
  EXPECT_EQ(shards, (std::set<uint32_t>{0, 1, 2, 3})) << "every data shard leased once";
}

TEST(Replication, MemberThatSawAnEpochNeverTakesEpochOneFromALostRegister) {
  Pair pair;
  const absl::Status paired = pair.StartPaired(Timing{300, 800});
  ASSERT_TRUE(paired.ok()) << paired;
  // Everything dies, and the witness comes back without its register.
  for (int m = 0; m < 2; ++m) {
    ASSERT_TRUE(pair.member(m).Kill(SIGKILL).ok());
    ASSERT_TRUE(pair.member(m).WaitExit().ok());
  }
  ASSERT_TRUE(pair.witness().Kill(SIGKILL).ok());
  ASSERT_TRUE(pair.witness().WaitExit().ok());
  ASSERT_EQ(std::remove(pair.witness_state().c_str()), 0);
  ASSERT_TRUE(pair.witness().Restart().ok());
  ASSERT_TRUE(pair.member(0).Restart().ok());
  // a saw epoch 1 (its epoch file): an empty register is a lost one, not a
  // new job, so it waits and says why instead of claiming.
  EXPECT_TRUE(
      testing::WaitFor(
          [&] { return pair.member(0).Log().find("lost its register") != std::string::npos; },
          absl::Seconds(10))
          .ok())
      << pair.member(0).Log();
  absl::StatusOr<v1::ShardStatus> a = pair.Status(0);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->replication_role(), "starting");
  auto [refused, role] = pair.Join(0);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(role, "starting");
}

TEST(Replication, StoppedPrimaryIsDeposedAndAcknowledgesNothing) {
  Pair pair;
  const absl::Status paired = pair.StartPaired(Timing{300, 800});
  ASSERT_TRUE(paired.ok()) << paired;
  TensorMap weights;
  auto worker = JoinedWorker(pair.address(0), "w0", &weights);
  ASSERT_NE(worker, nullptr);
  ASSERT_TRUE(worker->Push(Gradient(1), nullptr, 1).ok());

  ASSERT_TRUE(Stop(pair.member(0)).ok());
  ASSERT_TRUE(pair.WaitRole(1, "primary-solo")) << pair.member(1).Log();
  ASSERT_TRUE(pair.member(0).Kill(SIGCONT).ok());
  // At once after resuming, and for good: nothing is acknowledged.
  auto [first, first_role] = pair.Join(0);
  EXPECT_EQ(first.error_code(), grpc::StatusCode::UNAVAILABLE) << first.error_message();
  EXPECT_TRUE(first_role == "unconfirmed" || first_role == "deposed") << first_role;
  EXPECT_EQ(worker->Push(Gradient(2), nullptr, 2).code(), absl::StatusCode::kUnavailable);
  ASSERT_TRUE(pair.WaitRole(0, "deposed")) << pair.member(0).Log();
  auto [later, later_role] = pair.Join(0);
  EXPECT_EQ(later.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(later_role, "deposed");
  // Its liveness fails (health "" NOT_SERVING), so a supervisor restarts it
  // and it catches up as the replica; the promoted member stays alive.
  EXPECT_EQ(pair.Health(0), grpc::health::v1::HealthCheckResponse::NOT_SERVING);
  EXPECT_EQ(pair.Health(1), grpc::health::v1::HealthCheckResponse::SERVING);
  absl::StatusOr<v1::ShardStatus> a = pair.Status(0);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->version(), 1u);  // the refused push changed nothing
}

// Options of a client that knows both members of `pair` (member a first),
// joining as `worker_name`, with short backoffs.
ClientOptions BothMembers(Pair& pair, const std::string& worker_name) {
  ClientOptions options;
  options.shard_addresses = {pair.address(0)};
  options.replica_addresses = {pair.address(1)};
  options.worker_name = worker_name;
  options.initial_backoff = absl::Milliseconds(20);
  options.max_backoff = absl::Milliseconds(200);
  return options;
}

// A client of a pair pings a member after 1 s without data and allows 2 s
// for the answer (clients/cpp/channel_args.h), so a push sent to a SIGSTOPped
// primary (whose connections stay open and swallow the call) is answered by
// the promoted replica within seconds. With a lone shard's keepalive (10 s,
// 5 s to answer) the same push waited 5-15 s; its deadline is 30 s.
TEST(Replication, AClientOfAPairLeavesAHungPrimaryWithinSeconds) {
  Pair pair;
  const absl::Status paired = pair.StartPaired(Timing{300, 800});
  ASSERT_TRUE(paired.ok()) << paired;
  ClientOptions options = BothMembers(pair, "w0");
  options.rpc_timeout = absl::Seconds(30);
  auto worker = PsClient::Connect(options);
  ASSERT_TRUE(worker.ok()) << worker.status();
  ASSERT_TRUE((*worker)->Declare({Spec()}).ok());
  TensorMap weights;
  ASSERT_TRUE((*worker)->Pull({"w"}, &weights).ok());
  for (int s = 1; s <= 3; ++s) {
    ASSERT_TRUE((*worker)->PushPull(Gradient(s), &weights, nullptr, s).ok()) << s;
  }
  ASSERT_TRUE(Stop(pair.member(0)).ok());
  const absl::Time stopped = absl::Now();
  const absl::Status pushed = (*worker)->PushPull(Gradient(4), &weights, nullptr, 4);
  const absl::Duration took = absl::Now() - stopped;
  ASSERT_TRUE(pair.member(0).Kill(SIGCONT).ok());
  ASSERT_TRUE(pushed.ok()) << pushed << "\n" << pair.member(1).Log();
  std::fprintf(stderr, "push answered %s after the primary stopped\n",
               absl::FormatDuration(took).c_str());
  EXPECT_LT(took, absl::Seconds(7)) << "the push waited for the hung primary";
  absl::StatusOr<v1::ShardStatus> b = pair.Status(1);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->replication_role(), "primary-solo");
  EXPECT_EQ(b->version(), 4u);
}

// With tokens on, the members call each other and the witness with the
// `replication` token (--peer_token_file), and nobody else may replicate.
TEST(Replication, ReplicateNeedsTheReplicationRole) {
  absl::StatusOr<std::string> dir = testing::MakeTempDir("replication-auth");
  ASSERT_TRUE(dir.ok());
  const std::string tokens = *dir + "/tokens";
  const std::string peer_token = *dir + "/peer-token";
  {
    std::ofstream(tokens) << "replication-token-0123456789 replication\n"
                          << "worker-token-0123456789abcdef worker\n"
                          << "reader-token-0123456789abcdef reader\n";
    std::ofstream(peer_token) << "replication-token-0123456789\n";
  }
  Pair pair;
  ASSERT_TRUE(pair.Start(Timing{},
                         {absl::StrCat("--auth_tokens_file=", tokens),
                          absl::StrCat("--peer_token_file=", peer_token)},
                         "reader-token-0123456789abcdef")
                  .ok());
  ASSERT_TRUE(pair.WaitRole(0, "primary")) << pair.member(0).Log() << pair.member(1).Log();
  auto stub = v1::ShardReplication::NewStub(
      grpc::CreateChannel(pair.address(0), grpc::InsecureChannelCredentials()));
  for (const auto& [token, code] : std::vector<std::pair<std::string, grpc::StatusCode>>{
           {"worker-token-0123456789abcdef", grpc::StatusCode::PERMISSION_DENIED},
           {"", grpc::StatusCode::UNAUTHENTICATED}}) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
    if (!token.empty()) context.AddMetadata("authorization", "Bearer " + token);
    auto stream = stub->Replicate(&context);
    v1::ReplicaMessage hello;
    hello.mutable_hello()->set_protocol_version(1);
    stream->Write(hello);
    stream->WritesDone();
    v1::PrimaryMessage message;
    EXPECT_FALSE(stream->Read(&message)) << "the stream answered a caller without the role";
    EXPECT_EQ(stream->Finish().error_code(), code) << token;
  }
  testing::RemoveTree(*dir);
}

// The client's half (clients/cpp/shard_session.h): a worker that knows both
// members (ClientOptions.replica_addresses) pushes on while the primary is
// SIGKILLed. Every push is acknowledged, the worker never re-joins, and every
// reply, before and after the failover, equals bit for bit the reply of an
// unreplicated shard fed the same pushes: none lost, none applied twice.
TEST(Replication, AClientThatKnowsBothMembersRidesThroughAFailover) {
  Pair pair;
  const absl::Status paired = pair.StartPaired(Timing{300, 800});
  ASSERT_TRUE(paired.ok()) << paired;
  auto reference = PsProcess::Start({"--metrics_address="});  // the same rule and rate
  ASSERT_TRUE(reference.ok()) << reference.status();
  ClientOptions options = BothMembers(pair, "w0");
  auto worker = PsClient::Connect(options);
  ASSERT_TRUE(worker.ok()) << worker.status();
  auto alone = Worker((*reference)->address(), "w0");
  ASSERT_NE(alone, nullptr);
  const uint64_t worker_id = (*worker)->worker_id(0);
  ASSERT_TRUE((*worker)->Declare({Spec()}).ok());
  ASSERT_TRUE(alone->Declare({Spec()}).ok());
  TensorMap weights;
  TensorMap expected;
  ASSERT_TRUE((*worker)->Pull({"w"}, &weights).ok());
  ASSERT_TRUE(alone->Pull({"w"}, &expected).ok());
  constexpr int kSteps = 40;
  for (int s = 1; s <= kSteps; ++s) {
    if (s == 16) {
      ASSERT_TRUE(pair.member(0).Kill(SIGKILL).ok());  // mid-training, unannounced
    }
    const absl::Status pushed = (*worker)->PushPull(Gradient(s), &weights, nullptr, s);
    ASSERT_TRUE(pushed.ok()) << "step " << s << ": " << pushed << "\n" << pair.member(1).Log();
    ASSERT_TRUE(alone->PushPull(Gradient(s), &expected, nullptr, s).ok());
    ASSERT_TRUE(SameBits(weights["w"], expected["w"])) << "step " << s;
  }
  EXPECT_EQ((*worker)->worker_id(0), worker_id) << "no re-join";
  absl::StatusOr<v1::ShardStatus> b = pair.Status(1);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->replication_role(), "primary-solo");
  EXPECT_EQ(b->version(), static_cast<uint64_t>(kSteps));
  EXPECT_EQ(b->active_workers(), 1u);
}

// The client reads the role a refusing member names (dcasgd-role): a call
// goes on through a failover however few attempts it may make, since the
// replica's refusals while it takes over do not count. Here one attempt per
// member, and the witness is stopped so that member b cannot take over
// until it has refused the push: without the role, the dead member a's
// failure and that refusal would have ended the push with UNAVAILABLE.
TEST(Replication, RoleHintsCarryACallThroughAFailoverWithOneAttemptPerMember) {
  Pair pair;
  const absl::Status paired = pair.StartPaired(Timing{300, 800});
  ASSERT_TRUE(paired.ok()) << paired;
  ClientOptions options = BothMembers(pair, "w0");
  options.max_attempts = 1;
  auto worker = PsClient::Connect(options);
  ASSERT_TRUE(worker.ok()) << worker.status();
  ASSERT_TRUE((*worker)->Declare({Spec()}).ok());
  TensorMap weights;
  ASSERT_TRUE((*worker)->Pull({"w"}, &weights).ok());
  ASSERT_TRUE((*worker)->PushPull(Gradient(1), &weights, nullptr, 1).ok());
  const double refused_before = MetricSum(pair.member(1), "dcasgd_ps_rejected_requests_total");
  ASSERT_GE(refused_before, 0);
  ASSERT_TRUE(Stop(pair.witness()).ok());
  ASSERT_TRUE(pair.member(0).Kill(SIGKILL).ok());
  absl::Status pushed = absl::UnknownError("not answered");
  std::thread push([&] { pushed = (*worker)->PushPull(Gradient(2), &weights, nullptr, 2); });
  const absl::Status refused = testing::WaitFor(
      [&] {
        return MetricSum(pair.member(1), "dcasgd_ps_rejected_requests_total") > refused_before;
      },
      absl::Seconds(30));
  ASSERT_TRUE(pair.witness().Kill(SIGCONT).ok());
  push.join();
  ASSERT_TRUE(refused.ok()) << "member b never refused the push";
  ASSERT_TRUE(pushed.ok()) << pushed << "\n" << pair.member(1).Log();
  absl::StatusOr<v1::ShardStatus> b = pair.Status(1);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->replication_role(), "primary-solo");
  EXPECT_EQ(b->version(), 2u);
}

// Both members SIGKILLed while paired: neither holds more than its
// checkpoint. Restarted, member a (named by the paired register) learns from
// b's answer that b restarted too, claims, serves its checkpoint (the loss
// is bounded by the checkpoint, as without replicas), and b catches up from
// it. Before, both waited for each other until `failover --force`.
TEST(Replication, BothMembersKilledComeBackFromTheCheckpointWithoutAnOperator) {
  Pair pair;
  const absl::Status paired = pair.StartPaired(Timing{300, 800});
  ASSERT_TRUE(paired.ok()) << paired;
  TensorMap weights;
  auto worker = JoinedWorker(pair.address(0), "w0", &weights);
  ASSERT_NE(worker, nullptr);
  for (int s = 1; s <= 5; ++s) {
    ASSERT_TRUE(worker->PushPull(Gradient(s), &weights, nullptr, s).ok()) << s;
  }
  absl::StatusOr<std::vector<CheckpointResult>> saved = worker->Checkpoint();
  ASSERT_TRUE(saved.ok()) << saved.status();
  ASSERT_EQ(saved->at(0).version, 5u);
  const std::vector<float> checkpointed = weights["w"];
  // Acknowledged after the checkpoint: lost with both copies, as documented.
  for (int s = 6; s <= 7; ++s) ASSERT_TRUE(worker->Push(Gradient(s), nullptr, s).ok()) << s;
  worker.reset();
  // Both at once: the register stays paired at epoch 1, naming a.
  ASSERT_TRUE(pair.member(1).Kill(SIGKILL).ok());
  ASSERT_TRUE(pair.member(0).Kill(SIGKILL).ok());
  ASSERT_TRUE(pair.member(0).WaitExit().ok());
  ASSERT_TRUE(pair.member(1).WaitExit().ok());

  ASSERT_TRUE(pair.member(1).Restart().ok());
  ASSERT_TRUE(pair.member(0).Restart().ok());
  ASSERT_TRUE(pair.WaitRole(0, "primary")) << pair.member(0).Log() << pair.member(1).Log();
  ASSERT_TRUE(pair.WaitRole(1, "replica")) << pair.member(1).Log();
  EXPECT_NE(pair.member(0).Log().find("both members restarted"), std::string::npos)
      << pair.member(0).Log();
  absl::StatusOr<v1::ShardStatus> a = pair.Status(0);
  absl::StatusOr<v1::ShardStatus> b = pair.Status(1);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->version(), 5u) << "the checkpoint's version";
  EXPECT_EQ(b->version(), 5u);
  EXPECT_EQ(a->epoch(), 2u);
  EXPECT_EQ(b->epoch(), 2u);
  absl::StatusOr<std::vector<float>> on_a = ReadWeights(pair.address(0));
  ASSERT_TRUE(on_a.ok()) << on_a.status();
  EXPECT_TRUE(SameBits(*on_a, checkpointed));
}

// The kill test of the issue: several workers push back to back while the
// primary of the pair is SIGKILLed at random moments, 20 times. After each
// kill the survivor goes on alone, the killed member restarts, catches up
// and the pair forms again before the next kill, so both members are killed
// in turn. The rule is ASGD at lr 1 on a tensor of zeros and every gradient
// element is an integer in [-3, 3]: every weight stays an integer far below
// 2^24, so float sums are exact in any order and the final weights must equal
// minus the sum of the acknowledged gradients bit for bit, and the version
// the number of acknowledged pushes. A push lost or applied twice breaks both.
// DCASGD_KILL_SEED=<seed> replays the kill moments of a run (its seed is
// printed).
constexpr int kKillWorkers = 4;
constexpr int kKills = 20;
constexpr int kKillElements = 2000;
// Pushes acknowledged after the pair formed again before the next kill, so
// that every kill lands among pushes that reach a paired primary.
constexpr int kPushesBetweenKills = 3;
// Pushes each worker makes after the last kill: the job continues.
constexpr uint64_t kPushesAfterKills = 10;

// Element i of worker w's gradient at step s: an integer in [-3, 3], mixed
// from (w, s, i) so that a lost or doubled push changes most coordinates.
int IntegerGradient(int w, uint64_t s, int i) {
  uint64_t x = (static_cast<uint64_t>(w) << 56) ^ (s << 16) ^ static_cast<uint64_t>(i);
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return static_cast<int>(x % 7) - 3;
}

// One worker of the kill test: its client, and what its thread saw.
struct KillTestWorker {
  std::unique_ptr<PsClient> client;
  uint64_t worker_id = 0;  // from its Join, before the first kill
  std::thread thread;
  // Atomic: polled by the main thread while the worker's thread pushes.
  std::atomic<uint64_t> acknowledged_count{0};
  // Written by the worker's thread only, read after it was joined.
  std::vector<uint64_t> acknowledged_steps;
  absl::Status failure;
  uint64_t failed_step = 0;
};

// dcasgd_ps_repeated_pushes_total of a member (pushes repeating a step it
// had applied, answered from the record), or -1 when it cannot be read.
int64_t RepeatedPushes(PsProcess& process) {
  absl::StatusOr<std::string> metrics = testing::HttpGet(process.metrics_port(), "/metrics");
  if (!metrics.ok()) return -1;
  const std::string name = "\ndcasgd_ps_repeated_pushes_total{";
  const size_t at = metrics->find(name);
  if (at == std::string::npos) return -1;
  const size_t space = metrics->find(' ', at + name.size());
  const size_t end = metrics->find('\n', space);
  double value = 0;
  if (space == std::string::npos ||
      !absl::SimpleAtod(metrics->substr(space + 1, end - space - 1), &value)) {
    return -1;
  }
  return static_cast<int64_t>(value);
}

// $DCASGD_KILL_SEED, or a random seed when it is unset.
absl::StatusOr<uint64_t> KillSeed() {
  const char* env = std::getenv("DCASGD_KILL_SEED");
  if (env == nullptr || *env == '\0') return std::random_device()();
  uint64_t seed = 0;
  if (!absl::SimpleAtoi(env, &seed)) {
    return absl::InvalidArgumentError(absl::StrCat("DCASGD_KILL_SEED=", env, " is not a number"));
  }
  return seed;
}

TEST(Replication, TwentyKillsOfThePrimaryLoseNoAcknowledgedPush) {
  const absl::Time started = absl::Now();
  const absl::StatusOr<uint64_t> parsed_seed = KillSeed();
  ASSERT_TRUE(parsed_seed.ok()) << parsed_seed.status();
  const uint64_t seed = *parsed_seed;
  std::fprintf(stderr, "TwentyKills: seed %llu (replay with DCASGD_KILL_SEED=%llu)\n",
               static_cast<unsigned long long>(seed), static_cast<unsigned long long>(seed));
  std::mt19937_64 rng(seed);
  Pair pair;
  const absl::Status started_pair =
      pair.Start(Timing{300, 800},
                 {"--update_rule=asgd", "--lr=1", "--gap_aware=false", "--staleness_aware=false"});
  ASSERT_TRUE(started_pair.ok()) << started_pair;
  ASSERT_TRUE(pair.WaitRole(0, "primary")) << pair.member(0).Log() << pair.member(1).Log();
  TensorSpec spec;
  spec.name = "v";
  spec.shape = {kKillElements};
  spec.chunk_elements = 500;
  spec.init.kind = Initializer::Kind::kZeros;

  std::array<KillTestWorker, kKillWorkers> workers;
  for (int w = 0; w < kKillWorkers; ++w) {
    ClientOptions options;
    options.shard_addresses = {pair.address(0)};
    options.replica_addresses = {pair.address(1)};
    options.worker_name = absl::StrCat("w", w);
    options.initial_backoff = absl::Milliseconds(20);
    options.max_backoff = absl::Milliseconds(200);
    auto client = PsClient::Connect(options);
    ASSERT_TRUE(client.ok()) << client.status();
    workers[w].client = *std::move(client);
    workers[w].worker_id = workers[w].client->worker_id(0);
    ASSERT_NE(workers[w].worker_id, 0u);
    ASSERT_TRUE(workers[w].client->Declare({spec}).ok());
  }

  std::atomic<bool> stop{false};         // set by the main thread, read by the workers
  std::atomic<bool> failed{false};       // set by a worker whose push failed
  std::atomic<int64_t> acknowledged{0};  // over all workers, polled by the main thread
  for (int w = 0; w < kKillWorkers; ++w) {
    workers[w].thread = std::thread([&, w] {
      KillTestWorker& worker = workers[w];
      TensorMap weights;
      absl::Status pulled = worker.client->Pull({"v"}, &weights);
      if (!pulled.ok()) {
        worker.failure = pulled;
        failed = true;
        return;
      }
      TensorMap gradient = {{"v", std::vector<float>(kKillElements)}};
      for (uint64_t s = 1; !stop.load(); ++s) {
        for (int i = 0; i < kKillElements; ++i) {
          gradient["v"][i] = static_cast<float>(IntegerGradient(w, s, i));
        }
        const absl::Status pushed = s % 2 == 0
                                        ? worker.client->PushPull(gradient, &weights, nullptr, s)
                                        : worker.client->Push(gradient, nullptr, s);
        if (!pushed.ok()) {
          worker.failure = pushed;
          worker.failed_step = s;
          failed = true;
          return;
        }
        worker.acknowledged_steps.push_back(s);
        worker.acknowledged_count.fetch_add(1);
        acknowledged.fetch_add(1);
      }
    });
  }

  // The kills, while the workers push; an error says which kill and why.
  int kills[2] = {0, 0};  // per member
  // Repeated pushes the killed primaries had answered from the record (each
  // a retry whose first acknowledgement the kill of the one before lost):
  // shown in the summary, to say how often the "none twice" path ran.
  int64_t repeated = 0;
  absl::Duration longest_failover;
  absl::Duration longest_repair;
  auto kill_loop = [&]() -> absl::Status {
    for (int k = 1; k <= kKills; ++k) {
      // A random moment, once a few pushes reached the whole pair.
      const int64_t since = acknowledged.load();
      const absl::Time moment =
          absl::Now() + absl::Milliseconds(std::uniform_int_distribution<int>(50, 400)(rng));
      RETURN_IF_ERROR(testing::WaitFor(
          [&] {
            return failed.load() ||
                   (acknowledged.load() >= since + kPushesBetweenKills && absl::Now() >= moment);
          },
          absl::Seconds(60)));
      if (failed.load()) return absl::AbortedError(absl::StrCat("a push failed before kill ", k));
      int primary = -1;
      for (int m = 0; m < 2; ++m) {
        absl::StatusOr<v1::ShardStatus> status = pair.Status(m);
        if (status.ok() && status->replication_role() == "primary") primary = m;
      }
      if (primary < 0) return absl::InternalError(absl::StrCat("kill ", k, ": no primary"));
      const int survivor = 1 - primary;
      repeated += std::max<int64_t>(0, RepeatedPushes(pair.member(primary)));
      const absl::Time killed = absl::Now();
      RETURN_IF_ERROR(pair.member(primary).Kill(SIGKILL));
      RETURN_IF_ERROR(pair.member(primary).WaitExit().status());
      ++kills[primary];
      if (!pair.WaitRole(survivor, "primary-solo")) {
        return absl::DeadlineExceededError(absl::StrCat(
            "kill ", k, ": member ", survivor, " was not promoted\n", pair.member(survivor).Log()));
      }
      longest_failover = std::max(longest_failover, absl::Now() - killed);
      const absl::Time restarted = absl::Now();
      RETURN_IF_ERROR(pair.member(primary).Restart());
      if (!pair.WaitRole(primary, "replica") || !pair.WaitRole(survivor, "primary")) {
        return absl::DeadlineExceededError(
            absl::StrCat("kill ", k, ": the pair did not form again\n", pair.member(primary).Log(),
                         pair.member(survivor).Log()));
      }
      longest_repair = std::max(longest_repair, absl::Now() - restarted);
    }
    // The job continues: every worker pushes on.
    uint64_t after[kKillWorkers];
    for (int w = 0; w < kKillWorkers; ++w) after[w] = workers[w].acknowledged_count.load();
    return testing::WaitFor(
        [&] {
          if (failed.load()) return true;
          for (int w = 0; w < kKillWorkers; ++w) {
            if (workers[w].acknowledged_count.load() < after[w] + kPushesAfterKills) return false;
          }
          return true;
        },
        absl::Seconds(60));
  };
  const absl::Status killed = kill_loop();
  stop = true;
  for (KillTestWorker& worker : workers) worker.thread.join();
  for (int w = 0; w < kKillWorkers; ++w) {
    EXPECT_TRUE(workers[w].failure.ok())
        << "worker " << w << ", "
        << (workers[w].failed_step == 0 ? std::string("its first pull")
                                        : absl::StrCat("step ", workers[w].failed_step))
        << ": " << workers[w].failure;
  }
  ASSERT_TRUE(killed.ok()) << killed;
  ASSERT_FALSE(failed.load());
  EXPECT_EQ(kills[0], kKills / 2);  // the members alternate as primary
  EXPECT_EQ(kills[1], kKills / 2);

  // Every acknowledged push applied exactly once, on both members.
  int primary = -1;
  for (int m = 0; m < 2; ++m) {
    absl::StatusOr<v1::ShardStatus> status = pair.Status(m);
    if (status.ok() && status->replication_role() == "primary") primary = m;
  }
  ASSERT_GE(primary, 0);
  const int replica = 1 - primary;
  absl::StatusOr<v1::ShardStatus> p = pair.Status(primary);
  absl::StatusOr<v1::ShardStatus> r = pair.Status(replica);
  ASSERT_TRUE(p.ok() && r.ok());
  EXPECT_EQ(r->replication_role(), "replica");
  EXPECT_EQ(p->version(), static_cast<uint64_t>(acknowledged.load()));
  EXPECT_EQ(r->version(), p->version());
  EXPECT_EQ(r->last_seq(), p->last_seq());
  EXPECT_EQ(p->epoch(), static_cast<uint64_t>(1 + kKills));  // one failover per kill
  EXPECT_EQ(p->active_workers(), static_cast<uint32_t>(kKillWorkers)) << "a worker re-joined";
  std::vector<int64_t> sum(kKillElements, 0);
  for (int w = 0; w < kKillWorkers; ++w) {
    EXPECT_EQ(workers[w].client->worker_id(0), workers[w].worker_id) << "worker " << w;
    for (uint64_t s : workers[w].acknowledged_steps) {
      for (int i = 0; i < kKillElements; ++i) sum[i] += IntegerGradient(w, s, i);
    }
  }
  // w = 0 - lr * sum(g), each an integer well below 2^24 (x - x is +0).
  std::vector<float> expected(kKillElements);
  for (int i = 0; i < kKillElements; ++i) {
    ASSERT_LT(std::abs(sum[i]), int64_t{1} << 24);
    expected[i] = static_cast<float>(-sum[i]);
  }
  for (KillTestWorker& worker : workers) worker.client.reset();  // they leave

  ClientOptions options;
  options.shard_addresses = {pair.address(0)};
  options.replica_addresses = {pair.address(1)};
  auto reader = PsClient::Connect(options);
  ASSERT_TRUE(reader.ok()) << reader.status();
  ASSERT_TRUE((*reader)->FetchSpecs().ok());
  auto differences = [&](const std::vector<float>& got) {
    int count = 0;
    std::string first;
    for (int i = 0; i < kKillElements; ++i) {
      if (std::memcmp(&got[i], &expected[i], sizeof(float)) != 0 && count++ == 0) {
        first = absl::StrCat(", the first at ", i, ": ", got[i], " instead of ", expected[i]);
      }
    }
    return absl::StrCat(count, " elements differ", first);
  };
  TensorMap on_primary;
  ASSERT_TRUE((*reader)->Pull({"v"}, &on_primary).ok());
  ASSERT_EQ(on_primary["v"].size(), expected.size());
  EXPECT_TRUE(SameBits(on_primary["v"], expected)) << differences(on_primary["v"]);
  // The replica holds the same weights: kill the primary once more and read.
  repeated += std::max<int64_t>(0, RepeatedPushes(pair.member(primary)));
  ASSERT_TRUE(pair.member(primary).Kill(SIGKILL).ok());
  ASSERT_TRUE(pair.WaitRole(replica, "primary-solo")) << pair.member(replica).Log();
  TensorMap on_replica;
  ASSERT_TRUE((*reader)->Pull({"v"}, &on_replica).ok());
  EXPECT_TRUE(SameBits(on_replica["v"], expected)) << differences(on_replica["v"]);

  std::fprintf(
      stderr,
      "TwentyKills: seed %llu, %d kills (a %d, b %d), %lld acknowledged pushes from %d "
      "workers (%lld of them repeated after a lost answer, answered from the record), longest "
      "failover %s, longest repair %s, %s\n",
      static_cast<unsigned long long>(seed), kills[0] + kills[1], kills[0], kills[1],
      static_cast<long long>(acknowledged.load()), kKillWorkers, static_cast<long long>(repeated),
      absl::FormatDuration(longest_failover).c_str(), absl::FormatDuration(longest_repair).c_str(),
      absl::FormatDuration(absl::Now() - started).c_str());
}

}  // namespace
}  // namespace dcasgd
