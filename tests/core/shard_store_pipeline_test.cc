// Pipelined workers (ps.proto JoinRequest.pipeline_depth, PushRequest.base_step):
// the ring of backups per worker, the base each push names, the staleness
// counted from it, and what the ring costs in memory.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/shard_store.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/core/update_reference.h"
#include "tests/testing/float_bytes.h"

namespace dcasgd {
namespace {

using ::testing::HasSubstr;

using testing::Bytes;
using testing::Floats;

constexpr size_t kN = 64;

// One tensor "w" of kN uniform random weights in one chunk.
TensorSpec RandomSpec() {
  TensorSpec spec;
  spec.name = "w";
  spec.shape = {static_cast<int64_t>(kN)};
  spec.chunk_elements = kN;
  spec.init.kind = Initializer::Kind::kUniform;
  spec.init.a = -1.0f;
  spec.init.b = 1.0f;
  spec.init.seed = 7;
  return spec;
}

ShardConfig Config(UpdateRule rule, Dtype backup_dtype = Dtype::kFloat32) {
  ShardConfig config;
  config.optimizer.rule = rule;
  config.optimizer.learning_rate = 0.5f;
  config.optimizer.lambda0 = 2.0f;
  config.optimizer.backup_dtype = backup_dtype;
  if (backup_dtype == Dtype::kFloat16) config.optimizer.max_weight_abs = 1000;  // float16's range
  config.lease = absl::Seconds(30);
  return config;
}

struct Pushed {
  PushResult result;
  std::vector<float> reply;  // the new weights (PushPull)
};

// A PushPull of `g` with `step` and `base_step`, answered synchronously.
absl::StatusOr<Pushed> PushPull(ShardStore& store, WorkerId worker, uint64_t step,
                                uint64_t base_step, const std::vector<float>& g) {
  std::optional<absl::StatusOr<PushResult>> out;
  Pushed pushed;
  store.SubmitPush(
      worker, step, {GradientChunk{"w", 0, Bytes(g)}}, /*pull_after=*/true,
      [&out](absl::StatusOr<PushResult> r) { out = std::move(r); },
      [&pushed](AppliedChunk c) { pushed.reply = Floats(c.values.values); }, base_step);
  EXPECT_TRUE(out.has_value());
  if (!out.has_value()) return absl::InternalError("not answered");
  if (!out->ok()) return out->status();
  pushed.result = **out;
  return pushed;
}

std::vector<float> Pull(ShardStore& store, WorkerId worker) {
  absl::StatusOr<PullPlan> plan = store.PlanPull(worker, {"w"});
  EXPECT_TRUE(plan.ok()) << plan.status();
  std::string values;
  store.ReadChunk(*plan, plan->chunks.at(0), &values);
  return Floats(values);
}

std::vector<float> Gradient(uint32_t seed) { return update_reference::RandomChunk(kN, seed).g; }

// `values` as the shard keeps a backup of them in `dtype`.
std::vector<float> AsBackup(Dtype dtype, const std::vector<float>& values) {
  if (dtype == Dtype::kFloat32) return values;
  std::vector<uint16_t> b16(values.size());
  FloatTo16(dtype, values, absl::MakeSpan(b16));
  std::vector<float> out(values.size());
  FloatFrom16(dtype, b16, absl::MakeSpan(out));
  return out;
}

// The reference update of weights `w` with gradient `g` against `backup`.
std::vector<float> Reference(const OptimizerConfig& config, const std::vector<float>& w,
                             const std::vector<float>& g, const std::vector<float>& backup) {
  update_reference::Chunk c = update_reference::RandomChunk(kN, 1);
  c.w = w;
  c.g = g;
  c.backup = backup;
  update_reference::ReferenceUpdate(config, config.learning_rate, c);
  return c.w;
}

class PipelineBaseTest : public ::testing::TestWithParam<Dtype> {};

TEST_P(PipelineBaseTest, EachPushIsCompensatedFromTheBackupItNames) {
  // A worker of depth 1, as the pipelined trainer runs it: the gradient of
  // step t+1 is computed on the reply to step t-1 (or the pull) while step t
  // is in flight, so push t+1 names that reply as its base.
  const Dtype dtype = GetParam();
  ShardStore store(Config(UpdateRule::kDcAsgdConstant, dtype), Clock::Real());
  ASSERT_TRUE(store.Declare({RandomSpec()}).ok());
  const WorkerId worker = store.Join("pod-a", /*pipeline_depth=*/1)->worker_id;
  const std::vector<float> w0 = Pull(store, worker);  // base 0
  const OptimizerConfig& rule = store.config().optimizer;

  const std::vector<float> g1 = Gradient(11);
  absl::StatusOr<Pushed> p1 = PushPull(store, worker, 1, /*base_step=*/0, g1);
  ASSERT_TRUE(p1.ok()) << p1.status();
  update_reference::ExpectVectorsNear(p1->reply, Reference(rule, w0, g1, AsBackup(dtype, w0)),
                                      "step 1");
  EXPECT_EQ(p1->result.staleness, 0u);

  // Step 2 was computed on w0 too (while step 1 was in flight): its base is
  // the pull, although the shard has sent the worker w1 since.
  const std::vector<float> g2 = Gradient(12);
  absl::StatusOr<Pushed> p2 = PushPull(store, worker, 2, /*base_step=*/0, g2);
  ASSERT_TRUE(p2.ok()) << p2.status();
  const std::vector<float> expected2 = Reference(rule, p1->reply, g2, AsBackup(dtype, w0));
  update_reference::ExpectVectorsNear(p2->reply, expected2, "step 2 (base: the pull)");
  EXPECT_EQ(p2->result.staleness, 1u) << "one version since the pull it was computed on";
  // The test can fail: compensating from the newest backup (w1) differs.
  const std::vector<float> wrong = Reference(rule, p1->reply, g2, AsBackup(dtype, p1->reply));
  double gap = 0;
  for (size_t i = 0; i < kN; ++i) gap = std::max(gap, std::fabs(double{wrong[i]} - expected2[i]));
  EXPECT_GT(gap, 1e-4) << "the two bases must give different updates for this test to mean much";

  // Step 3 was computed on w1, the reply to step 1.
  const std::vector<float> g3 = Gradient(13);
  absl::StatusOr<Pushed> p3 = PushPull(store, worker, 3, /*base_step=*/1, g3);
  ASSERT_TRUE(p3.ok()) << p3.status();
  update_reference::ExpectVectorsNear(
      p3->reply, Reference(rule, p2->reply, g3, AsBackup(dtype, p1->reply)), "step 3 (base 1)");
  EXPECT_EQ(p3->result.staleness, 1u);
}

INSTANTIATE_TEST_SUITE_P(BackupDtypes, PipelineBaseTest,
                         ::testing::Values(Dtype::kFloat32, Dtype::kBfloat16, Dtype::kFloat16),
                         [](const ::testing::TestParamInfo<Dtype>& param) {
                           return std::string(NameOf(kDtypeNames, param.param));
                         });

TEST(ShardStorePipeline, GapAwareDampingUsesTheNamedBase) {
  // Plain ASGD with gap-aware damping: the gap is w - w_bak of the base.
  ShardConfig config = Config(UpdateRule::kAsgd);
  config.optimizer.gap_aware = true;
  ShardStore named(config, Clock::Real());
  ShardStore newest(config, Clock::Real());
  std::vector<float> after_named, after_newest;
  for (ShardStore* store : {&named, &newest}) {
    ASSERT_TRUE(store->Declare({RandomSpec()}).ok());
    const WorkerId worker = store->Join("pod-a", 1)->worker_id;
    Pull(*store, worker);
    ASSERT_TRUE(PushPull(*store, worker, 1, 0, Gradient(21)).ok());
    ASSERT_TRUE(PushPull(*store, worker, 2, 1, Gradient(22)).ok());
    // Base 1 (two versions back) on one shard, base 2 (the newest) on the other.
    absl::StatusOr<Pushed> p = PushPull(*store, worker, 3, store == &named ? 1 : 2, Gradient(23));
    ASSERT_TRUE(p.ok()) << p.status();
    EXPECT_EQ(p->result.staleness, store == &named ? 1u : 0u);
    (store == &named ? after_named : after_newest) = p->reply;
  }
  EXPECT_NE(after_named, after_newest) << "the damping must depend on the base named";
}

TEST(ShardStorePipeline, TheRingKeepsDepthPlusOneBackupsAndEvictsTheOldest) {
  ShardStore store(Config(UpdateRule::kDcAsgdConstant), Clock::Real());
  ASSERT_TRUE(store.Declare({RandomSpec()}).ok());
  const WorkerId worker = store.Join("pod-a", 1)->worker_id;
  Pull(store, worker);
  const uint64_t one = kN * sizeof(float);
  EXPECT_EQ(store.Stats().backup_bytes, one);
  ASSERT_TRUE(PushPull(store, worker, 1, 0, Gradient(1)).ok());
  EXPECT_EQ(store.Stats().backup_bytes, 2 * one) << "the pull's and step 1's";
  ASSERT_TRUE(PushPull(store, worker, 2, 0, Gradient(2)).ok());
  EXPECT_EQ(store.Stats().backup_bytes, 2 * one) << "step 2's took the pull's place";

  // The pull's backup fell out: naming it applies nothing.
  const uint64_t version = store.version();
  const std::vector<float> before = Pull(store, 0);
  absl::StatusOr<Pushed> stale = PushPull(store, worker, 3, 0, Gradient(3));
  ASSERT_EQ(stale.status().code(), absl::StatusCode::kFailedPrecondition) << stale.status();
  EXPECT_THAT(stale.status().message(), HasSubstr("base step 0"));
  EXPECT_THAT(stale.status().message(), HasSubstr("kept bases: 1, 2"));
  // A base never sent is refused the same way.
  absl::StatusOr<Pushed> unknown = PushPull(store, worker, 3, 9, Gradient(3));
  ASSERT_EQ(unknown.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store.version(), version);
  EXPECT_EQ(Pull(store, 0), before);
  // The step was not consumed: it applies with a kept base.
  absl::StatusOr<Pushed> kept = PushPull(store, worker, 3, 1, Gradient(3));
  ASSERT_TRUE(kept.ok()) << kept.status();
  EXPECT_EQ(kept->result.staleness, 1u);
}

TEST(ShardStorePipeline, DepthZeroKeepsOneBackupNamedByZeroOrItsStep) {
  ShardStore store(Config(UpdateRule::kDcAsgdConstant), Clock::Real());
  ASSERT_TRUE(store.Declare({RandomSpec()}).ok());
  const WorkerId worker = store.Join("pod-a")->worker_id;
  Pull(store, worker);
  ASSERT_TRUE(PushPull(store, worker, 1, 0, Gradient(1)).ok());
  EXPECT_EQ(store.Stats().backup_bytes, kN * sizeof(float)) << "one backup, as before";
  absl::StatusOr<Pushed> by_zero = PushPull(store, worker, 2, 0, Gradient(2));
  ASSERT_TRUE(by_zero.ok()) << by_zero.status();
  EXPECT_EQ(by_zero->result.staleness, 0u);
  absl::StatusOr<Pushed> by_step = PushPull(store, worker, 3, 2, Gradient(3));
  ASSERT_TRUE(by_step.ok()) << by_step.status();
  EXPECT_EQ(PushPull(store, worker, 4, 1, Gradient(4)).status().code(),
            absl::StatusCode::kFailedPrecondition)
      << "step 1's reply is not kept at depth 0";
}

TEST(ShardStorePipeline, ReplayResendsTheReplyOfTheRepeatedStep) {
  ShardStore store(Config(UpdateRule::kDcAsgdConstant), Clock::Real());
  ASSERT_TRUE(store.Declare({RandomSpec()}).ok());
  const WorkerId worker = store.Join("pod-a", 2)->worker_id;
  Pull(store, worker);
  ASSERT_TRUE(PushPull(store, worker, 1, 0, Gradient(1)).ok());
  absl::StatusOr<Pushed> first = PushPull(store, worker, 2, 0, Gradient(2));
  ASSERT_TRUE(first.ok());
  const uint64_t version = store.version();
  absl::StatusOr<Pushed> again = PushPull(store, worker, 2, 0, Gradient(2));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(again->result.replayed);
  EXPECT_EQ(again->result.staleness, first->result.staleness);
  EXPECT_EQ(again->reply, first->reply) << "step 2's reply, not another backup of the ring";
  EXPECT_EQ(store.version(), version);
}

// A worker whose push failed on another shard pulls, then pushes the same
// step again; here, where that step was applied, the repeat is answered with
// the step's first reply, which the worker computes on next. That base must
// be the newest again: the pull had made base 0 the newest, and the next push
// would evict the base the pipelined push after it names.
TEST_P(PipelineBaseTest, ARepeatedStepAfterAPullIsTheNewestBaseAgain) {
  const Dtype dtype = GetParam();
  ShardStore store(Config(UpdateRule::kDcAsgdConstant, dtype), Clock::Real());
  ASSERT_TRUE(store.Declare({RandomSpec()}).ok());
  const WorkerId worker = store.Join("pod-a", 1)->worker_id;
  Pull(store, worker);
  absl::StatusOr<Pushed> first = PushPull(store, worker, 1, 0, Gradient(1));
  ASSERT_TRUE(first.ok()) << first.status();
  Pull(store, worker);  // after a failure elsewhere: kept bases 1, 0
  absl::StatusOr<Pushed> again = PushPull(store, worker, 1, 0, Gradient(1));
  ASSERT_TRUE(again.ok()) << again.status();
  ASSERT_TRUE(again->result.replayed);
  EXPECT_EQ(again->reply, AsBackup(dtype, first->reply)) << "step 1's reply, as kept";

  // Step 2 from step 1's reply; step 3 computed beside it from the same
  // reply (depth 1) is compensated from that reply, not refused.
  ASSERT_TRUE(PushPull(store, worker, 2, 1, Gradient(2)).ok());
  const std::vector<float> before = Pull(store, 0);
  absl::StatusOr<Pushed> third = PushPull(store, worker, 3, 1, Gradient(3));
  ASSERT_TRUE(third.ok()) << third.status();
  EXPECT_EQ(third->result.staleness, 1u);
  update_reference::ExpectVectorsNear(
      third->reply, Reference(store.config().optimizer, before, Gradient(3), again->reply),
      "step 3 (base 1, renewed by the repeat)");

  // The base the pull left is the oldest now: it fell out.
  absl::StatusOr<Pushed> stale = PushPull(store, worker, 4, 0, Gradient(4));
  ASSERT_EQ(stale.status().code(), absl::StatusCode::kFailedPrecondition) << stale.status();
  EXPECT_THAT(stale.status().message(), HasSubstr("kept bases: 2, 3"));
}

TEST(ShardStorePipeline, JoinBoundsTheDepth) {
  ShardStore store(Config(UpdateRule::kDcAsgdConstant), Clock::Real());
  absl::StatusOr<JoinResult> deep = store.Join("pod-a", kMaxPipelineDepth + 1);
  ASSERT_EQ(deep.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(deep.status().message(), HasSubstr("pipeline_depth"));
  EXPECT_EQ(store.Stats().active_workers, 0u);
  EXPECT_TRUE(store.Join("pod-a", kMaxPipelineDepth).ok());
}

TEST(ShardStorePipeline, TheSizingRuleCountsTheRingAndJoinChecksTheBudget) {
  ShardConfig config = Config(UpdateRule::kDcAsgdConstant);
  config.max_workers = 2;
  // Room for what the rule counts with two one-backup workers, and not for
  // one more backup of the model.
  ShardStore probe(config, Clock::Real());
  ASSERT_TRUE(probe.Declare({RandomSpec()}).ok());
  const uint64_t one_backup = kN * sizeof(float) + kBackupOverheadBytes;
  config.memory_budget_bytes = probe.MemoryRule().total() + one_backup / 2;

  ShardStore store(config, Clock::Real());
  ASSERT_TRUE(store.Declare({RandomSpec()}).ok());
  const uint64_t rule_before = store.MemoryRule().backups;
  absl::StatusOr<JoinResult> deep = store.Join("pod-a", 1);
  ASSERT_EQ(deep.status().code(), absl::StatusCode::kResourceExhausted) << deep.status();
  EXPECT_THAT(deep.status().message(), HasSubstr("pipeline_depth 1"));
  EXPECT_THAT(deep.status().message(), HasSubstr("memory budget"));
  EXPECT_EQ(store.Stats().active_workers, 0u) << "a refused Join registers nothing";
  ASSERT_TRUE(store.Join("pod-a", 0).ok()) << "depth 0 fits, as before";

  // Without a budget the ring is counted while its worker lives.
  config.memory_budget_bytes = 0;
  ShardStore free_store(config, Clock::Real());
  ASSERT_TRUE(free_store.Declare({RandomSpec()}).ok());
  const WorkerId worker = free_store.Join("pod-b", 2)->worker_id;
  EXPECT_EQ(free_store.MemoryRule().backups, rule_before + 2 * kN * sizeof(float));
  Pull(free_store, worker);
  ASSERT_TRUE(PushPull(free_store, worker, 1, 0, Gradient(1)).ok());
  ASSERT_TRUE(PushPull(free_store, worker, 2, 0, Gradient(2)).ok());
  EXPECT_EQ(free_store.Stats().backup_bytes, 3 * kN * sizeof(float));
  // Leave frees the whole ring, and the rule stops counting it.
  ASSERT_TRUE(free_store.Leave(worker).ok());
  EXPECT_EQ(free_store.Stats().backup_bytes, 0u);
  EXPECT_EQ(free_store.MemoryRule().backups, rule_before);
}

TEST(ShardStorePipeline, ReJoinAndLeaseExpiryFreeTheRing) {
  ManualClock clock;
  ShardStore store(Config(UpdateRule::kDcAsgdConstant), &clock);
  ASSERT_TRUE(store.Declare({RandomSpec()}).ok());
  WorkerId worker = store.Join("pod-a", 1)->worker_id;
  Pull(store, worker);
  ASSERT_TRUE(PushPull(store, worker, 1, 0, Gradient(1)).ok());
  EXPECT_EQ(store.Stats().backup_bytes, 2 * kN * sizeof(float));
  worker = store.Join("pod-a", 1)->worker_id;  // a restarted pod
  EXPECT_EQ(store.Stats().backup_bytes, 0u);
  Pull(store, worker);
  ASSERT_TRUE(PushPull(store, worker, 1, 0, Gradient(1)).ok());
  EXPECT_EQ(store.Stats().backup_bytes, 2 * kN * sizeof(float));
  clock.Advance(absl::Seconds(31));
  EXPECT_EQ(store.ExpireLeases(), 1);
  EXPECT_EQ(store.Stats().backup_bytes, 0u);
}

}  // namespace
}  // namespace dcasgd
