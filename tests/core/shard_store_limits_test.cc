// The shard store's limits (docs/security.md): the memory budget and chunk
// limits of declarations, the worker limit, backups only for live workers
// and only when the rule reads them, the gradient bound and weight clamp, and
// checkpoints that would bring NaN or Inf in.
#include <cmath>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "core/shard_store.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/float_bytes.h"

namespace dcasgd {
namespace {

using ::testing::HasSubstr;

using testing::Bytes;
using testing::Floats;

TensorSpec Spec(const std::string& name, std::vector<int64_t> shape, uint32_t chunk = 4,
                float constant = 1.0f) {
  TensorSpec spec;
  spec.name = name;
  spec.shape = std::move(shape);
  spec.chunk_elements = chunk;
  spec.init.kind = Initializer::Kind::kConstant;
  spec.init.a = constant;
  return spec;
}

ShardConfig Config(UpdateRule rule) {
  ShardConfig config;
  config.optimizer.rule = rule;
  config.optimizer.learning_rate = 0.5f;
  config.optimizer.lambda0 = 0.5f;
  config.lease = absl::Seconds(10);
  return config;
}

absl::StatusOr<PushResult> PushNow(ShardStore& store, WorkerId worker,
                                   std::vector<GradientChunk> chunks, bool pull_after = false) {
  std::optional<absl::StatusOr<PushResult>> out;
  // A PushPull's values go to a sink; these tests only look at the weights.
  ShardStore::ChunkSink sink;
  if (pull_after) sink = [](AppliedChunk) {};
  store.SubmitPush(
      worker, /*step=*/0, std::move(chunks), pull_after,
      [&out](absl::StatusOr<PushResult> r) { out = std::move(r); }, std::move(sink));
  if (!out.has_value()) return absl::InternalError("push did not complete synchronously");
  return std::move(*out);
}

void PullAll(ShardStore& store, WorkerId worker) {
  absl::StatusOr<PullPlan> plan = store.PlanPull(worker, {});
  ASSERT_TRUE(plan.ok()) << plan.status();
  for (const ChunkRef& ref : plan->chunks) {
    std::string values;
    store.ReadChunk(*plan, ref, &values);
  }
}

std::vector<float> Weights(ShardStore& store, const std::string& name) {
  absl::StatusOr<PullPlan> plan = store.PlanPull(0, {name});
  EXPECT_TRUE(plan.ok()) << plan.status();
  std::vector<float> all;
  for (const ChunkRef& ref : plan->chunks) {
    std::string values;
    store.ReadChunk(*plan, ref, &values);
    for (float v : Floats(values)) all.push_back(v);
  }
  return all;
}

// --- declarations ------------------------------------------------------------

TEST(ShardStoreLimits, DeclarationBeyondTheMemoryBudgetAllocatesNothing) {
  ShardConfig config = Config(UpdateRule::kDcAsgdAdaptive);
  config.max_workers = 4;
  config.inflight_budget_bytes = 1 << 20;
  // Room for the base, the in-flight budget and a little more.
  config.memory_budget_bytes = kShardBaseBytes + (uint64_t{2} << 20) + 4 * kStreamWindowBytes;
  ShardStore store(config, Clock::Real());
  // 64 Ki floats: 256 KiB weights + 256 KiB MS + 1 MiB backups > 1 MiB left.
  absl::StatusOr<std::vector<TensorSpec>> big = store.Declare({Spec("big", {65536}, 0)});
  ASSERT_EQ(big.status().code(), absl::StatusCode::kResourceExhausted) << big.status();
  EXPECT_THAT(big.status().message(), HasSubstr("memory budget"));
  EXPECT_THAT(big.status().message(), HasSubstr("backups 1.0 MiB"));
  EXPECT_THAT(big.status().message(), HasSubstr("--max_workers=4"));
  EXPECT_TRUE(store.ListTensors().empty());
  EXPECT_EQ(store.Stats().weight_bytes, 0u);
  EXPECT_EQ(store.Stats().owned_chunks, 0u);
  // A small one fits, and the rule now counts it.
  ASSERT_TRUE(store.Declare({Spec("small", {1024}, 0)}).ok());
  const ShardMemory rule = store.MemoryRule();
  EXPECT_EQ(rule.weights, 4096u);
  EXPECT_EQ(rule.optimizer_state, 4096u);
  EXPECT_EQ(rule.backups, 4 * 4096u);
  EXPECT_LE(rule.total(), config.memory_budget_bytes);
  // A request mixing a fitting and a too-large tensor declares neither.
  EXPECT_EQ(store.Declare({Spec("ok", {16}), Spec("big", {65536}, 0)}).status().code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(store.ListTensors().size(), 1u);
}

TEST(ShardStoreLimits, TooManyChunksOrWeightsAboveTheInflightBudgetAreRejected) {
  ShardConfig config = Config(UpdateRule::kAsgd);
  config.inflight_budget_bytes = 1 << 20;
  ShardStore store(config, Clock::Real());
  // 2^21 chunks of one element: above kMaxOwnedChunks, rejected without
  // visiting (let alone allocating) a chunk.
  absl::StatusOr<std::vector<TensorSpec>> many = store.Declare({Spec("many", {1 << 21}, 1)});
  EXPECT_EQ(many.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(many.status().message(), HasSubstr("chunks"));
  // 2^40 elements in default chunks: rejected the same way, at once.
  EXPECT_EQ(store.Declare({Spec("huge", {int64_t{1} << 40}, 0)}).status().code(),
            absl::StatusCode::kResourceExhausted);
  // More weights than one push may carry through the in-flight budget.
  absl::StatusOr<std::vector<TensorSpec>> wide = store.Declare({Spec("wide", {1 << 19}, 0)});
  EXPECT_EQ(wide.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(wide.status().message(), HasSubstr("--max_inflight_bytes"));
  EXPECT_TRUE(store.ListTensors().empty());
}

TEST(ShardStoreLimits, OwnedChunksMatchPlacementOnEveryShard) {
  for (uint32_t count : {1u, 3u, 5u}) {
    uint64_t chunks = 0, bytes = 0;
    for (uint32_t index = 0; index < count; ++index) {
      ShardConfig config = Config(UpdateRule::kAsgd);
      config.shard_index = index;
      config.shard_count = count;
      ShardStore store(config, Clock::Real());
      ASSERT_TRUE(store.Declare({Spec("a", {103}, 10), Spec("b", {7}, 3)}).ok());
      absl::StatusOr<PullPlan> plan = store.PlanPull(0, {});
      ASSERT_TRUE(plan.ok());
      EXPECT_EQ(store.Stats().owned_chunks, plan->chunks.size());
      chunks += store.Stats().owned_chunks;
      bytes += store.Stats().weight_bytes;
    }
    EXPECT_EQ(chunks, 11u + 3u) << count << " shards";
    EXPECT_EQ(bytes, (103u + 7u) * 4) << count << " shards";
  }
}

TEST(ShardStoreLimits, InitialValuesStayWithinTheWeightClamp) {
  ShardConfig config = Config(UpdateRule::kAsgd);
  config.optimizer.max_weight_abs = 10.0f;
  ShardStore store(config, Clock::Real());
  EXPECT_EQ(store.Declare({Spec("big", {4}, 4, 11.0f)}).status().code(),
            absl::StatusCode::kInvalidArgument);
  TensorSpec normal = Spec("normal", {4096}, 0);
  normal.init.kind = Initializer::Kind::kNormal;
  normal.init.a = 0;
  normal.init.b = 100;  // most draws beyond the clamp
  ASSERT_TRUE(store.Declare({normal}).ok());
  for (float w : Weights(store, "normal")) ASSERT_LE(std::fabs(w), 10.0f);
}

// --- workers and backups ----------------------------------------------------

TEST(ShardStoreLimits, JoinBeyondMaxWorkersIsRefusedUnlessALeaseExpired) {
  ManualClock clock;
  ShardConfig config = Config(UpdateRule::kDcAsgdConstant);
  config.max_workers = 2;
  config.lease = absl::Seconds(2);
  ShardStore store(config, &clock);
  ASSERT_TRUE(store.Declare({Spec("w", {8})}).ok());
  const WorkerId a = store.Join("a")->worker_id;
  ASSERT_TRUE(store.Join("b").ok());
  PullAll(store, a);
  const absl::StatusOr<JoinResult> c = store.Join("c");
  EXPECT_EQ(c.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(c.status().message(), HasSubstr("--max_workers"));
  EXPECT_TRUE(store.Join("b").ok()) << "a live name replaces its worker";
  clock.Advance(absl::Seconds(1.5));
  ASSERT_TRUE(store.Heartbeat(store.Join("b")->worker_id).ok());
  clock.Advance(absl::Seconds(1));  // a expired, not yet reaped
  ASSERT_TRUE(store.Join("c").ok()) << "an expired lease makes room";
  EXPECT_EQ(store.Stats().active_workers, 2u);
  EXPECT_EQ(store.Stats().backup_bytes, 0u) << "a's backups went with its lease";
}

TEST(ShardStoreLimits, APullOfAWorkerThatLeftWritesNoBackup) {
  ShardStore store(Config(UpdateRule::kDcAsgdAdaptive), Clock::Real());
  ASSERT_TRUE(store.Declare({Spec("w", {16})}).ok());
  const WorkerId worker = store.Join("a")->worker_id;
  absl::StatusOr<PullPlan> plan = store.PlanPull(worker, {});
  ASSERT_TRUE(plan.ok());
  std::string values;
  store.ReadChunk(*plan, plan->chunks[0], &values);
  EXPECT_EQ(store.Stats().backup_bytes, 16u);
  ASSERT_TRUE(store.Leave(worker).ok());
  EXPECT_EQ(store.Stats().backup_bytes, 0u);
  // The rest of the stream is still sent, but records nothing.
  for (const ChunkRef& ref : plan->chunks) {
    store.ReadChunk(*plan, ref, &values);
    EXPECT_EQ(Floats(values), std::vector<float>(4, 1.0f));
  }
  EXPECT_EQ(store.Stats().backup_bytes, 0u);
}

TEST(ShardStoreLimits, AsgdAndSsgdKeepNoBackupsButCountStaleness) {
  for (SyncMode sync : {SyncMode::kAsync, SyncMode::kSsgd}) {
    ShardConfig config =
        Config(sync == SyncMode::kAsync ? UpdateRule::kAsgd : UpdateRule::kDcAsgdConstant);
    config.sync = sync;
    ShardStore store(config, Clock::Real());
    EXPECT_FALSE(store.keeps_backups());
    ASSERT_TRUE(store.Declare({Spec("w", {8})}).ok());
    const WorkerId a = store.Join("a")->worker_id;
    PullAll(store, a);
    EXPECT_EQ(store.Stats().backup_bytes, 0u);
    EXPECT_EQ(store.MemoryRule().backups, 0u);
    if (sync != SyncMode::kAsync) continue;
    const WorkerId b = store.Join("b")->worker_id;
    PullAll(store, b);
    ASSERT_TRUE(PushNow(store, b, {GradientChunk{"w", 0, Bytes({1, 1, 1, 1})}}).ok());
    absl::StatusOr<PushResult> stale =
        PushNow(store, a, {GradientChunk{"w", 1, Bytes({1, 1, 1, 1})}}, /*pull_after=*/true);
    ASSERT_TRUE(stale.ok()) << stale.status();
    EXPECT_EQ(stale->staleness, 1u);
    EXPECT_EQ(store.Stats().backup_bytes, 0u);
  }
  ShardStore dc(Config(UpdateRule::kDcAsgdConstant), Clock::Real());
  EXPECT_TRUE(dc.keeps_backups());
}

// --- the gradient bound and the weight clamp --------------------------------

TEST(ShardStoreLimits, GradientsBeyondTheBoundAreRejectedAndWeightsStayClamped) {
  ShardConfig config = Config(UpdateRule::kDcAsgdConstant);
  config.optimizer.learning_rate = 10.0f;
  config.optimizer.max_gradient_abs = 1000.0f;
  config.optimizer.max_weight_abs = 100.0f;
  ShardStore store(config, Clock::Real());
  ASSERT_TRUE(store.Declare({Spec("w", {4})}).ok());
  const WorkerId worker = store.Join("a")->worker_id;
  PullAll(store, worker);
  for (float g : {1001.0f, -1e30f, std::numeric_limits<float>::max(),
                  std::numeric_limits<float>::infinity(), std::nanf("")}) {
    absl::StatusOr<PushResult> r =
        PushNow(store, worker, {GradientChunk{"w", 0, Bytes({1, g, 1, 1})}});
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << g;
    EXPECT_THAT(r.status().message(), HasSubstr("max_gradient_abs 1000")) << g;
  }
  EXPECT_EQ(store.version(), 0u);
  for (int i = 0; i < 20; ++i) {
    absl::StatusOr<PushResult> r = PushNow(
        store, worker, {GradientChunk{"w", 0, Bytes({1000, -1000, 1000, 0})}}, /*pull_after=*/true);
    ASSERT_TRUE(r.ok()) << r.status();
  }
  EXPECT_EQ(Weights(store, "w"), (std::vector<float>{-100, 100, -100, 1}));
}

// --- checkpoints --------------------------------------------------------------

TEST(ShardStoreLimits, RestoreRefusesNonFiniteStateAndClampsWeights) {
  ShardConfig config = Config(UpdateRule::kDcAsgdAdaptive);
  config.optimizer.max_weight_abs = 10.0f;
  ShardStore source(config, Clock::Real());
  ASSERT_TRUE(source.Declare({Spec("w", {4})}).ok());
  const ShardSnapshot good = source.Snapshot();
  {
    ShardSnapshot bad = good;
    bad.tensors[0].chunks[0].weights[1] = std::numeric_limits<float>::infinity();
    ShardStore store(config, Clock::Real());
    const absl::Status s = store.Restore(bad);
    EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
    EXPECT_THAT(s.message(), HasSubstr("weight inf"));
  }
  {
    ShardSnapshot bad = good;
    bad.tensors[0].chunks[0].mean_square[0] = -1.0f;
    ShardStore store(config, Clock::Real());
    EXPECT_EQ(store.Restore(bad).code(), absl::StatusCode::kDataLoss);
  }
  {
    ShardSnapshot large = good;
    large.tensors[0].chunks[0].weights = {1e7f, -1e7f, 3, 4};
    ShardStore store(config, Clock::Real());
    ASSERT_TRUE(store.Restore(large).ok());
    EXPECT_EQ(Weights(store, "w"), (std::vector<float>{10, -10, 3, 4}));
    EXPECT_EQ(store.Stats().owned_chunks, 1u);
    EXPECT_EQ(store.Stats().largest_chunk_bytes, 16u);
  }
}

}  // namespace
}  // namespace dcasgd
