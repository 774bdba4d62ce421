// The shard store with 16-bit backups (--backup_dtype): workers are sent
// float32 weights, the shard keeps their rounding as the backup and
// compensates with it; pulls, PushPulls, staleness, repeated steps, the
// byte counts and the sizing rule (a budget admits about twice the workers),
// and checkpoints (backups are not in them, so a 16-bit shard's checkpoint
// restores into a float32 one and back).
#include <cmath>
#include <cstring>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "absl/types/span.h"
#include "core/dtype.h"
#include "core/shard_store.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/float_bytes.h"

namespace dcasgd {
namespace {

using ::testing::HasSubstr;

using testing::Bytes;
using testing::Floats;

// One tensor "w" of kN normal draws in chunks of 300 (4 chunks, the last
// shorter): values that 16 bits do not hold exactly.
constexpr size_t kN = 1000;

TensorSpec Normal() {
  TensorSpec spec;
  spec.name = "w";
  spec.shape = {static_cast<int64_t>(kN)};
  spec.chunk_elements = 300;
  spec.init.kind = Initializer::Kind::kNormal;
  spec.init.a = 0;
  spec.init.b = 1;
  spec.init.seed = 3;
  return spec;
}

ShardConfig Config(Dtype dtype, UpdateRule rule, bool gap_aware) {
  ShardConfig config;
  config.optimizer = OptimizerConfig::ForRule(rule);
  config.optimizer.learning_rate = 0.1f;
  config.optimizer.gap_aware = gap_aware;
  config.optimizer.backup_dtype = dtype;
  config.optimizer.max_weight_abs = 1000.0f;
  config.lease = absl::Seconds(30);
  return config;
}

std::vector<float> Pull(ShardStore& store, WorkerId worker) {
  absl::StatusOr<PullPlan> plan = store.PlanPull(worker, {});
  EXPECT_TRUE(plan.ok()) << plan.status();
  std::vector<float> all;
  for (const ChunkRef& ref : plan->chunks) {
    std::string values;
    store.ReadChunk(*plan, ref, &values);
    for (float v : Floats(values)) all.push_back(v);
  }
  return all;
}

struct Pushed {
  PushResult result;
  std::vector<float> values;  // a PushPull's new weights, in chunk order
};

// The whole tensor pushed as its 4 chunks.
absl::StatusOr<Pushed> Push(ShardStore& store, WorkerId worker, const std::vector<float>& g,
                            bool pull_after, uint64_t step = 0) {
  std::vector<GradientChunk> chunks;
  for (uint64_t c = 0; c * 300 < kN; ++c) {
    const size_t end = std::min(kN, (c + 1) * 300);
    chunks.push_back(
        GradientChunk{"w", c, Bytes(std::vector<float>(g.begin() + c * 300, g.begin() + end))});
  }
  std::optional<absl::StatusOr<PushResult>> out;
  Pushed pushed;
  store.SubmitPush(
      worker, step, std::move(chunks), pull_after,
      [&out](absl::StatusOr<PushResult> r) { out = std::move(r); },
      pull_after ? ShardStore::ChunkSink([&pushed](AppliedChunk c) {
        for (float v : Floats(c.values.values)) pushed.values.push_back(v);
      })
                 : nullptr);
  if (!out.has_value()) return absl::InternalError("push did not complete synchronously");
  if (!out->ok()) return out->status();
  pushed.result = **out;
  return pushed;
}

std::vector<float> Gradient(float scale, int seed) {
  std::vector<float> g(kN);
  for (size_t i = 0; i < kN; ++i) g[i] = scale * std::sin(0.37f * static_cast<float>(i) + seed);
  return g;
}

std::vector<uint16_t> Round(Dtype dtype, const std::vector<float>& v) {
  std::vector<uint16_t> bits(v.size());
  FloatTo16(dtype, v, absl::MakeSpan(bits));
  return bits;
}

std::vector<float> Widen(Dtype dtype, const std::vector<uint16_t>& bits) {
  std::vector<float> v(bits.size());
  FloatFrom16(dtype, bits, absl::MakeSpan(v));
  return v;
}

// What the shard must hold: its chunks updated one by one with the kernel,
// compensated with a worker's rounded backup.
struct Mirror {
  explicit Mirror(const OptimizerConfig& c, std::vector<float> w0)
      : config(c), w(std::move(w0)), ms(kN, 0.0f), gap(kN, kGapScaleUnset) {}
  void Apply(const std::vector<float>& g, const std::vector<uint16_t>& backup) {
    for (size_t start = 0; start < kN; start += 300) {
      const size_t n = std::min<size_t>(300, kN - start);
      ChunkVectors v;
      v.n = n;
      v.weights = w.data() + start;
      v.gradient = g.data() + start;
      v.backup16 = backup.data() + start;
      v.mean_square = ms.data() + start;
      v.gap_scale = gap.data() + start;
      ApplyUpdate(config, config.learning_rate, v);
    }
  }
  OptimizerConfig config;
  std::vector<float> w, ms, gap;
};

using Param = std::tuple<Dtype, UpdateRule, bool>;
class Backup16StoreTest : public ::testing::TestWithParam<Param> {};

TEST_P(Backup16StoreTest, PullPushAndStalenessWithRoundedBackups) {
  const auto [dtype, rule, gap_aware] = GetParam();
  const ShardConfig config = Config(dtype, rule, gap_aware);
  ShardStore store(config, Clock::Real());
  ASSERT_TRUE(store.Declare({Normal()}).ok());
  const WorkerId a = store.Join("a")->worker_id;
  const WorkerId b = store.Join("b")->worker_id;

  // Workers are sent float32 weights, not their rounding.
  const std::vector<float> w0 = Pull(store, a);
  ASSERT_EQ(w0.size(), kN);
  EXPECT_EQ(Pull(store, b), w0);
  const std::vector<uint16_t> bak0 = Round(dtype, w0);
  size_t inexact = 0;
  for (size_t i = 0; i < kN; ++i) inexact += Widen(dtype, bak0)[i] != w0[i];
  EXPECT_GT(inexact, kN / 2) << "the sent weights are not 16-bit values";
  EXPECT_EQ(store.Stats().backup_bytes, 2 * kN * 2);

  // B pushes (staleness 0), then A (staleness 1), each compensated with the
  // rounding of what it was sent.
  Mirror mirror(config.optimizer, w0);
  const std::vector<float> gb = Gradient(0.5f, 1), ga = Gradient(0.5f, 2);
  absl::StatusOr<Pushed> pb = Push(store, b, gb, false);
  ASSERT_TRUE(pb.ok()) << pb.status();
  EXPECT_EQ(pb->result.staleness, 0u);
  mirror.Apply(gb, bak0);
  absl::StatusOr<Pushed> pa = Push(store, a, ga, /*pull_after=*/true, /*step=*/7);
  ASSERT_TRUE(pa.ok()) << pa.status();
  EXPECT_EQ(pa->result.staleness, 1u);
  EXPECT_EQ(pa->result.version, 2u);
  mirror.Apply(ga, bak0);
  const std::vector<float> w2 = Pull(store, 0);
  EXPECT_EQ(w2, mirror.w) << "the shard compensates with the rounded backup";
  EXPECT_EQ(pa->values, w2) << "a PushPull returns the float32 weights";

  // A repeated step is answered with what the shard kept: the rounding.
  absl::StatusOr<Pushed> again = Push(store, a, ga, /*pull_after=*/true, /*step=*/7);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(again->result.replayed);
  EXPECT_EQ(again->values, Widen(dtype, Round(dtype, w2)));
  EXPECT_EQ(store.version(), 2u);

  // A's backup is now the rounding of w2 (its PushPull), B's still of w0.
  const std::vector<float> g3 = Gradient(0.25f, 3);
  absl::StatusOr<Pushed> pa2 = Push(store, a, g3, false);
  ASSERT_TRUE(pa2.ok()) << pa2.status();
  EXPECT_EQ(pa2->result.staleness, 0u);
  mirror.Apply(g3, Round(dtype, w2));
  absl::StatusOr<Pushed> pb2 = Push(store, b, g3, false);
  ASSERT_TRUE(pb2.ok()) << pb2.status();
  EXPECT_EQ(pb2->result.staleness, 3u);  // B pulled at version 0; the shard is at 3
  mirror.Apply(g3, bak0);
  EXPECT_EQ(Pull(store, 0), mirror.w);

  // Two bytes per element per worker; a departed worker's are freed.
  EXPECT_EQ(store.Stats().backup_bytes, 2 * kN * 2);
  ASSERT_TRUE(store.Leave(b).ok());
  EXPECT_EQ(store.Stats().backup_bytes, kN * 2);
}

std::string ParamName(const ::testing::TestParamInfo<Param>& info) {
  std::string rule = NameOf(kUpdateRuleNames, std::get<1>(info.param));
  for (char& ch : rule) {
    if (ch == '-') ch = '_';
  }
  return absl::StrCat(NameOf(kDtypeNames, std::get<0>(info.param)), "_", rule,
                      std::get<2>(info.param) ? "_gap" : "");
}

INSTANTIATE_TEST_SUITE_P(Rules, Backup16StoreTest,
                         ::testing::Combine(::testing::Values(Dtype::kBfloat16, Dtype::kFloat16),
                                            ::testing::Values(UpdateRule::kDcAsgdConstant,
                                                              UpdateRule::kDcAsgdAdaptive),
                                            ::testing::Bool()),
                         ParamName);

// Gap-aware ASGD reads the backup only for |w - w_bak|.
INSTANTIATE_TEST_SUITE_P(GapAsgd, Backup16StoreTest,
                         ::testing::Combine(::testing::Values(Dtype::kBfloat16, Dtype::kFloat16),
                                            ::testing::Values(UpdateRule::kAsgd),
                                            ::testing::Values(true)),
                         ParamName);

// A budget sized for M workers with float32 backups holds 2M with 16-bit
// ones, up to the per-worker terms that do not shrink (the stream window,
// bookkeeping): here the budget is for 2M 16-bit workers, which float32
// backups exceed by about M backups.
TEST(Backup16Store, TheBudgetAdmitsTwiceTheWorkers) {
  constexpr uint32_t kWorkers = 16;
  TensorSpec spec = Normal();
  spec.shape = {1 << 20};  // 4 MiB of weights
  spec.chunk_elements = 0;
  ShardConfig bf16 = Config(Dtype::kBfloat16, UpdateRule::kDcAsgdAdaptive, false);
  bf16.max_workers = kWorkers;
  bf16.inflight_budget_bytes = 16 << 20;
  ShardConfig f32 = bf16;
  f32.optimizer.backup_dtype = Dtype::kFloat32;
  // The rule for this tensor with 16 bf16 workers, exactly.
  {
    ShardStore probe(bf16, Clock::Real());
    ASSERT_TRUE(probe.Declare({spec}).ok());
    bf16.memory_budget_bytes = probe.MemoryRule().total();
    EXPECT_EQ(probe.MemoryRule().backups, uint64_t{kWorkers} * (1 << 20) * 2);
  }
  f32.memory_budget_bytes = bf16.memory_budget_bytes;
  ShardStore half(bf16, Clock::Real());
  ASSERT_TRUE(half.Declare({spec}).ok());
  ShardStore full(f32, Clock::Real());
  absl::StatusOr<std::vector<TensorSpec>> refused = full.Declare({spec});
  ASSERT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(refused.status().message(), HasSubstr("backups 64.0 MiB"));
  // Float32 backups fit half the workers in the same budget.
  f32.max_workers = kWorkers / 2;
  ShardStore fewer(f32, Clock::Real());
  EXPECT_TRUE(fewer.Declare({spec}).ok());
  EXPECT_EQ(fewer.MemoryRule().backups, half.MemoryRule().backups);
}

// Backups are not checkpointed (core/checkpoint.h): a snapshot of a 16-bit
// shard restores into a float32 one and back, weights and optimizer state
// bit for bit, and every worker must pull again before pushing.
TEST(Backup16Store, CheckpointsCarryNoBackupsSoTheDtypeMayChange) {
  for (Dtype from : {Dtype::kFloat32, Dtype::kBfloat16, Dtype::kFloat16}) {
    for (Dtype to : {Dtype::kFloat32, Dtype::kBfloat16, Dtype::kFloat16}) {
      ShardStore store(Config(from, UpdateRule::kDcAsgdAdaptive, true), Clock::Real());
      ASSERT_TRUE(store.Declare({Normal()}).ok());
      const WorkerId a = store.Join("a")->worker_id;
      Pull(store, a);
      ASSERT_TRUE(Push(store, a, Gradient(0.5f, 1), false).ok());
      const ShardSnapshot snap = store.Snapshot();
      ShardStore restored(Config(to, UpdateRule::kDcAsgdAdaptive, true), Clock::Real());
      ASSERT_TRUE(restored.Restore(snap).ok());
      EXPECT_EQ(Pull(restored, 0), Pull(store, 0));
      const ShardSnapshot again = restored.Snapshot();
      ASSERT_EQ(again.tensors.size(), 1u);
      for (size_t c = 0; c < again.tensors[0].chunks.size(); ++c) {
        EXPECT_EQ(again.tensors[0].chunks[c].mean_square, snap.tensors[0].chunks[c].mean_square);
        EXPECT_EQ(again.tensors[0].chunks[c].gap_scale, snap.tensors[0].chunks[c].gap_scale);
      }
      EXPECT_EQ(restored.Stats().backup_bytes, 0u);
      const WorkerId b = restored.Join("a")->worker_id;
      absl::StatusOr<Pushed> early = Push(restored, b, Gradient(0.5f, 2), false);
      EXPECT_EQ(early.status().code(), absl::StatusCode::kFailedPrecondition);
      EXPECT_THAT(early.status().message(), HasSubstr("Pull before pushing"));
      Pull(restored, b);
      EXPECT_TRUE(Push(restored, b, Gradient(0.5f, 2), false).ok());
      EXPECT_EQ(restored.Stats().backup_bytes, kN * DtypeBytes(to));
    }
  }
}

}  // namespace
}  // namespace dcasgd
