// Checkpoints on demand are coalesced and rate-limited (issue 9 defect 8:
// 1,000 sequential Checkpoint calls wrote 1,000 checkpoints), and failing
// checkpoint writes are visible (issue 13): counted, the durability age
// grows, the final checkpoint is retried and says what it loses.
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "dcasgd/v1/ps.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "services/ps/checkpointer.h"
#include "services/ps/ps_server.h"
#include "tests/testing/ps_process.h"

namespace dcasgd {
namespace {

using ::testing::HasSubstr;

// The value of an unlabelled (but for the shard) metric in `text`.
double Metric(const std::string& text, const std::string& name) {
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (!absl::StartsWith(line, name + "{")) continue;
    double value = 0;
    if (absl::SimpleAtod(line.substr(line.rfind(' ') + 1), &value)) return value;
  }
  return -1;
}

TensorSpec Spec() {
  TensorSpec spec;
  spec.name = "w";
  spec.shape = {8};
  spec.init.kind = Initializer::Kind::kConstant;
  spec.init.a = 1.0f;
  return spec;
}

// Bumps the store's version by one push of worker `worker`.
void PushOnce(ShardStore* store, WorkerId worker) {
  absl::StatusOr<PullPlan> plan = store->PlanPull(worker, {"w"});
  ASSERT_TRUE(plan.ok());
  std::string values;
  for (const ChunkRef& ref : plan->chunks) store->ReadChunk(*plan, ref, &values);
  std::vector<float> g(8, 0.5f);
  std::vector<GradientChunk> chunks = {
      GradientChunk{"w", 0, std::string(reinterpret_cast<const char*>(g.data()), 32)}};
  bool ok = false;
  store->SubmitPush(worker, 0, std::move(chunks), false,
                    [&ok](absl::StatusOr<PushResult> r) { ok = r.ok(); });
  ASSERT_TRUE(ok);
}

class PsCheckpointTest : public ::testing::Test {
 protected:
  void Start(std::vector<std::string> extra) {
    absl::StatusOr<std::string> dir = testing::MakeTempDir("ps-checkpoint-test");
    ASSERT_TRUE(dir.ok()) << dir.status();
    dir_ = *dir;
    std::vector<std::string> args = {
        "--listen=127.0.0.1:0", "--metrics_address=", "--update_rule=asgd",
        "--checkpoint_dir=" + dir_, "--checkpoint_interval_seconds=3600"};
    args.insert(args.end(), extra.begin(), extra.end());
    absl::StatusOr<PsOptions> options =
        ParsePsOptions(args, [](const std::string&) { return std::optional<std::string>(); });
    ASSERT_TRUE(options.ok()) << options.status();
    absl::StatusOr<std::unique_ptr<PsServer>> server = PsServer::Start(*options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    stub_ = v1::ParameterShard::NewStub(
        grpc::CreateChannel(server_->local_address(), grpc::InsecureChannelCredentials()));
    ASSERT_TRUE(server_->store()->Declare({Spec()}).ok());
    server_->checkpointer()->NoteDeclared();
    worker_ = server_->store()->Join("w0")->worker_id;
  }

  void TearDown() override {
    stub_.reset();
    server_.reset();
    testing::RemoveTree(dir_);
  }

  absl::StatusOr<v1::CheckpointResponse> CheckpointNow() {
    grpc::ClientContext context;
    v1::CheckpointResponse response;
    grpc::Status status = stub_->Checkpoint(&context, v1::CheckpointRequest(), &response);
    if (!status.ok()) return absl::Status(absl::StatusCode(status.error_code()), "failed");
    return response;
  }

  double Writes() {
    return Metric(server_->metrics()->ExpositionText(), "dcasgd_ps_checkpoints_total");
  }

  std::string dir_;
  std::unique_ptr<PsServer> server_;
  std::unique_ptr<v1::ParameterShard::Stub> stub_;
  WorkerId worker_ = 0;
};

TEST_F(PsCheckpointTest, AnUnchangedStateIsNotWrittenAgain) {
  Start({});
  PushOnce(server_->store(), worker_);
  absl::StatusOr<v1::CheckpointResponse> first = CheckpointNow();
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->version(), 1u);
  EXPECT_EQ(Writes(), 1);
  for (int i = 0; i < 300; ++i) {
    absl::StatusOr<v1::CheckpointResponse> again = CheckpointNow();
    ASSERT_TRUE(again.ok()) << again.status();
    EXPECT_EQ(again->version(), 1u);
    EXPECT_EQ(again->path(), first->path());
    EXPECT_EQ(again->bytes(), first->bytes());
  }
  EXPECT_EQ(Writes(), 1) << "300 calls without a change wrote nothing";
}

TEST_F(PsCheckpointTest, ConcurrentRequestsShareOneWrite) {
  Start({"--checkpoint_min_interval_seconds=0.5"});
  ASSERT_TRUE(CheckpointNow().ok());  // the declaration
  const double before = Writes();
  PushOnce(server_->store(), worker_);
  std::vector<std::thread> callers;
  std::vector<uint64_t> versions(16, 0);
  for (int i = 0; i < 16; ++i) {
    callers.emplace_back([&, i] {
      absl::StatusOr<v1::CheckpointResponse> r = CheckpointNow();
      if (r.ok()) versions[i] = r->version();
    });
  }
  for (std::thread& t : callers) t.join();
  EXPECT_THAT(versions, ::testing::Each(1u)) << "every caller got the checkpoint of version 1";
  EXPECT_EQ(Writes(), before + 1) << "16 concurrent requests, one write";
}

TEST_F(PsCheckpointTest, WritesAreRateLimited) {
  Start({"--checkpoint_min_interval_seconds=0.2"});
  ASSERT_TRUE(CheckpointNow().ok());
  const double before = Writes();
  const absl::Time start = absl::Now();
  constexpr int kRounds = 6;
  for (int i = 1; i <= kRounds; ++i) {
    PushOnce(server_->store(), worker_);
    absl::StatusOr<v1::CheckpointResponse> r = CheckpointNow();
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->version(), static_cast<uint64_t>(i)) << "the answer covers the change";
  }
  EXPECT_EQ(Writes(), before + kRounds);
  // Each write after a change waited for the minimum interval since the
  // previous one.
  EXPECT_GE(absl::Now() - start, kRounds * absl::Milliseconds(200) * 0.9);
}

// A writer that fails while `failing` is set (a full disk, for unit tests of
// the failure paths; tests/e2e/test_resilience.py uses a real full tmpfs).
struct FlakyDisk {
  std::atomic<bool> failing{false};
  std::atomic<int> attempts{0};
  Checkpointer::SnapshotWriter Writer() {
    return
        [this](const std::string& path, const ShardSnapshot& snapshot) -> absl::StatusOr<uint64_t> {
          attempts.fetch_add(1);
          if (failing.load()) return absl::ResourceExhaustedError("No space left on device");
          return WriteCheckpoint(path, snapshot);
        };
  }
};

class CheckpointerFailureTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::string> dir = testing::MakeTempDir("checkpointer-test");
    ASSERT_TRUE(dir.ok());
    dir_ = *dir;
    ShardConfig config;
    config.optimizer.rule = UpdateRule::kAsgd;
    store_ = std::make_unique<ShardStore>(config, Clock::Real());
    metrics_ = std::make_unique<ShardMetrics>(0, store_.get());
    checkpointer_ =
        std::make_unique<Checkpointer>(store_.get(), dir_, metrics_.get(), disk_.Writer());
    ASSERT_TRUE(checkpointer_->RestoreIfPresent().ok());
    ASSERT_TRUE(store_->Declare({Spec()}).ok());
    checkpointer_->NoteDeclared();
    worker_ = store_->Join("w0")->worker_id;
  }
  void TearDown() override {
    checkpointer_.reset();
    testing::RemoveTree(dir_);
  }
  std::string Exposition() { return metrics_->ExpositionText(); }

  FlakyDisk disk_;
  std::string dir_;
  std::unique_ptr<ShardStore> store_;
  std::unique_ptr<ShardMetrics> metrics_;
  std::unique_ptr<Checkpointer> checkpointer_;
  WorkerId worker_ = 0;
};

TEST_F(CheckpointerFailureTest, FailuresAreCountedAndTheAgeGrows) {
  PushOnce(store_.get(), worker_);
  ASSERT_TRUE(checkpointer_->Write().ok());
  EXPECT_LT(checkpointer_->DurableAge(), absl::Seconds(1));
  disk_.failing = true;
  PushOnce(store_.get(), worker_);
  absl::SleepFor(absl::Milliseconds(50));
  absl::StatusOr<CheckpointInfo> failed = checkpointer_->Write();
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(checkpointer_->last_version(), 1u) << "the last good checkpoint stays";
  EXPECT_GE(checkpointer_->DurableAge(), absl::Milliseconds(50));
  EXPECT_EQ(Metric(Exposition(), "dcasgd_ps_checkpoint_failures_total"), 1);
  EXPECT_GE(Metric(Exposition(), "dcasgd_ps_checkpoint_age_seconds"), 0.05);
  disk_.failing = false;
  const absl::Time before_write = absl::Now();
  ASSERT_TRUE(checkpointer_->Write().ok());
  // The age restarts at the new checkpoint: at most the time since the
  // write began (not a fixed bound: a loaded machine may take longer than
  // 50 ms for the write itself), plus 1 ms because absl::Now() may step back
  // by a fraction of a microsecond between calls. Without the restart the
  // age would be over 50 ms more.
  EXPECT_LE(checkpointer_->DurableAge(), absl::Now() - before_write + absl::Milliseconds(1));
  EXPECT_EQ(checkpointer_->last_version(), 2u);
}

TEST_F(CheckpointerFailureTest, TheFinalCheckpointRetriesThenSaysWhatIsLost) {
  PushOnce(store_.get(), worker_);
  ASSERT_TRUE(checkpointer_->Write().ok());  // version 1 is durable
  for (int i = 0; i < 3; ++i) PushOnce(store_.get(), worker_);
  disk_.failing = true;
  const int before = disk_.attempts.load();
  absl::StatusOr<CheckpointInfo> final = checkpointer_->WriteFinal(absl::Milliseconds(400));
  EXPECT_EQ(final.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_GE(disk_.attempts.load() - before, 3) << "retried within the budget";
  EXPECT_THAT(final.status().message(), HasSubstr("No space left on device"));
  EXPECT_THAT(final.status().message(),
              HasSubstr("holds version 1, so the 3 updates since (versions 2..4) are lost"));
  // The disk recovers while the final checkpoint retries: it succeeds.
  std::thread recover([this] {
    absl::SleepFor(absl::Milliseconds(250));
    disk_.failing = false;
  });
  final = checkpointer_->WriteFinal(absl::Seconds(10));
  recover.join();
  ASSERT_TRUE(final.ok()) << final.status();
  EXPECT_EQ(final->version, 4u);
  // Nothing changed since: the final checkpoint writes nothing, even on a
  // full disk.
  disk_.failing = true;
  final = checkpointer_->WriteFinal(absl::Seconds(1));
  ASSERT_TRUE(final.ok()) << final.status();
  EXPECT_EQ(final->version, 4u);
}

}  // namespace
}  // namespace dcasgd
