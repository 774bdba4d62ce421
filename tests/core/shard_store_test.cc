#include "core/shard_store.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <optional>
#include <set>
#include <thread>

#include "absl/synchronization/notification.h"
#include "core/placement.h"
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

ShardConfig Config(UpdateRule rule, float lr = 0.5f, float lambda0 = 0.5f) {
  ShardConfig config;
  config.optimizer.rule = rule;
  config.optimizer.learning_rate = lr;
  config.optimizer.lambda0 = lambda0;
  config.lease = absl::Seconds(10);
  return config;
}

// A push's result with the new values a PushPull's sink received, in order.
struct Pushed : PushResult {
  std::vector<ChunkValues> new_values;
};

// A sink that appends each chunk's values to `*into`.
ShardStore::ChunkSink CollectInto(std::vector<ChunkValues>* into) {
  return [into](AppliedChunk c) { into->push_back(std::move(c.values)); };
}

// Runs SubmitPush (step `step`) and returns its result; fails the test if
// `done` is not called synchronously (async mode).
absl::StatusOr<Pushed> PushNow(ShardStore& store, WorkerId worker,
                               std::vector<GradientChunk> chunks, bool pull_after = false,
                               uint64_t step = 0) {
  std::optional<absl::StatusOr<PushResult>> out;
  std::vector<ChunkValues> values;
  store.SubmitPush(
      worker, step, std::move(chunks), pull_after,
      [&out](absl::StatusOr<PushResult> r) { out = std::move(r); },
      pull_after ? CollectInto(&values) : nullptr);
  EXPECT_TRUE(out.has_value()) << "push did not complete synchronously";
  if (!out.has_value()) return absl::InternalError("not completed");
  if (!out->ok()) return out->status();
  Pushed pushed;
  static_cast<PushResult&>(pushed) = **out;
  pushed.new_values = std::move(values);
  return pushed;
}

std::vector<GradientChunk> Grad(const std::string& tensor, uint64_t chunk,
                                const std::vector<float>& values) {
  return {GradientChunk{tensor, chunk, Bytes(values)}};
}

// Pulls every chunk of every tensor for `worker` into name -> flat values.
std::map<std::string, std::vector<float>> PullAll(ShardStore& store, WorkerId worker) {
  std::map<std::string, std::vector<float>> out;
  auto plan = store.PlanPull(worker, {});
  EXPECT_TRUE(plan.ok()) << plan.status();
  for (const ChunkRef& ref : plan->chunks) {
    std::string values;
    store.ReadChunk(*plan, ref, &values);
    auto f = Floats(values);
    auto& dst = out[*ref.tensor];
    dst.insert(dst.end(), f.begin(), f.end());
  }
  return out;
}

bool SameSnapshot(const ShardSnapshot& a, const ShardSnapshot& b) {
  if (a.version != b.version || a.tensors.size() != b.tensors.size()) return false;
  for (size_t t = 0; t < a.tensors.size(); ++t) {
    if (a.tensors[t].spec != b.tensors[t].spec) return false;
    if (a.tensors[t].chunks.size() != b.tensors[t].chunks.size()) return false;
    for (size_t c = 0; c < a.tensors[t].chunks.size(); ++c) {
      const ChunkState& x = a.tensors[t].chunks[c];
      const ChunkState& y = b.tensors[t].chunks[c];
      if (x.index != y.index ||
          std::memcmp(x.weights.data(), y.weights.data(), x.weights.size() * 4) != 0 ||
          x.weights.size() != y.weights.size() || x.mean_square != y.mean_square ||
          x.momentum != y.momentum) {
        return false;
      }
    }
  }
  return true;
}

TEST(ShardStore, DeclareIsIdempotentAndConflictsDeclareNothing) {
  ShardStore store(Config(UpdateRule::kAsgd), Clock::Real());
  ASSERT_TRUE(store.Declare({Spec("w", {2, 3})}).ok());
  ASSERT_TRUE(store.Declare({Spec("w", {2, 3})}).ok());
  EXPECT_EQ(store.Stats().weight_bytes, 6 * 4u);

  auto conflict = store.Declare({Spec("new", {5}), Spec("w", {3, 2})});
  EXPECT_EQ(conflict.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(conflict.status().message(), HasSubstr("'w'"));
  EXPECT_EQ(store.ListTensors().size(), 1u) << "'new' must not be declared";

  auto bad = store.Declare({Spec("x", {0})});
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ShardStore, DefaultChunkElementsResolved) {
  ShardStore store(Config(UpdateRule::kAsgd), Clock::Real());
  auto specs = store.Declare({Spec("w", {10}, /*chunk=*/0)});
  ASSERT_TRUE(specs.ok());
  EXPECT_EQ((*specs)[0].chunk_elements, kDefaultChunkElements);
}

TEST(ShardStore, ShardsOwnEveryChunkExactlyOnce) {
  for (uint32_t count : {1u, 2u, 3u}) {
    uint64_t total = 0;
    for (uint32_t i = 0; i < count; ++i) {
      ShardConfig config = Config(UpdateRule::kAsgd);
      config.shard_index = i;
      config.shard_count = count;
      ShardStore store(config, Clock::Real());
      ASSERT_TRUE(store.Declare({Spec("a", {17}), Spec("b", {1}), Spec("c", {4, 4})}).ok());
      for (const char* name : {"a", "b", "c"}) {
        auto plan = store.PlanPull(0, {name});
        ASSERT_TRUE(plan.ok());
        for (const ChunkRef& ref : plan->chunks) {
          EXPECT_EQ(ShardOfChunk(name, ref.chunk_index, count), i);
        }
        total += plan->chunks.size();
      }
    }
    EXPECT_EQ(total, 5u + 1u + 4u) << count << " shards";
  }
}

TEST(ShardStore, PullRecordsBackupForWorkersOnly) {
  ShardStore store(Config(UpdateRule::kDcAsgdConstant), Clock::Real());
  ASSERT_TRUE(store.Declare({Spec("w", {8})}).ok());
  PullAll(store, 0);
  EXPECT_EQ(store.Stats().backup_bytes, 0u) << "an evaluator pull records nothing";
  auto worker = store.Join("pod-a");
  ASSERT_TRUE(worker.ok());
  auto values = PullAll(store, worker->worker_id);
  EXPECT_EQ(values["w"], std::vector<float>(8, 1.0f));
  EXPECT_EQ(store.Stats().backup_bytes, 8 * 4u);
  PullAll(store, worker->worker_id);
  EXPECT_EQ(store.Stats().backup_bytes, 8 * 4u) << "a second pull reuses the backup";
}

TEST(ShardStore, DcAsgdUsesTheBackupTakenAtThisWorkersPull) {
  // Worker A pulls w0; worker B then moves w; A's push must be compensated
  // with (w_now - w0), the delay since A's pull (not since B's, not w - 0).
  const float lr = 0.5f, lambda = 0.5f;
  ShardStore store(Config(UpdateRule::kDcAsgdConstant, lr, lambda), Clock::Real());
  ASSERT_TRUE(store.Declare({Spec("w", {4}, 4, 1.0f)}).ok());
  WorkerId a = store.Join("a")->worker_id;
  WorkerId b = store.Join("b")->worker_id;
  PullAll(store, a);  // w_bak(a) = 1
  PullAll(store, b);  // w_bak(b) = 1
  std::vector<float> gb = {1, 2, 3, 4};
  auto rb = PushNow(store, b, Grad("w", 0, gb));
  ASSERT_TRUE(rb.ok()) << rb.status();
  EXPECT_EQ(rb->staleness, 0u);
  std::vector<float> w(4);
  for (int i = 0; i < 4; ++i) w[i] = 1.0f - lr * gb[i];  // w - w_bak(b) = 0 here
  std::vector<float> ga = {0.5f, -1.0f, 2.0f, 0.25f};
  auto ra = PushNow(store, a, Grad("w", 0, ga));
  ASSERT_TRUE(ra.ok()) << ra.status();
  EXPECT_EQ(ra->staleness, 1u);
  EXPECT_EQ(ra->version, 2u);
  for (int i = 0; i < 4; ++i) {
    const float d = ga[i] + lambda * ga[i] * ga[i] * (w[i] - 1.0f);
    w[i] = w[i] - lr * d;
  }
  auto now = PullAll(store, 0)["w"];
  for (int i = 0; i < 4; ++i) EXPECT_FLOAT_EQ(now[i], w[i]) << i;
}

TEST(ShardStore, GapAwareDampsByTheGapSinceThisWorkersPull) {
  // Plain ASGD with gap-aware damping: worker B's step (the chunk's first)
  // starts the mean step C = |step| undamped; A, stale by that one step,
  // sees a gap of exactly one C and so its full gradient; after two steps by
  // B the gap is about two mean steps and A's gradient counts about a half.
  const float lr = 0.5f;
  ShardConfig config = Config(UpdateRule::kAsgd, lr);
  config.optimizer.gap_aware = true;
  ShardStore store(config, Clock::Real());
  ASSERT_TRUE(store.Declare({Spec("w", {4}, 4, 1.0f)}).ok());
  EXPECT_EQ(store.Stats().optimizer_state_bytes, 4 * 4u) << "one gap-scale vector";
  WorkerId a = store.Join("a")->worker_id;
  WorkerId b = store.Join("b")->worker_id;
  PullAll(store, a);
  PullAll(store, b);
  EXPECT_EQ(store.Stats().backup_bytes, 2 * 4 * 4u) << "ASGD keeps backups when gap-aware";
  ASSERT_TRUE(PushNow(store, b, Grad("w", 0, {1, 1, 1, 1})).ok());  // w = 0.5, C = 0.5
  ASSERT_TRUE(PushNow(store, a, Grad("w", 0, {1, 1, 1, 1})).ok());  // gap 0.5 = C: undamped
  std::vector<float> w = PullAll(store, 0)["w"];
  for (float x : w) EXPECT_FLOAT_EQ(x, 0.0f);

  // A pulls at w = 0 (C = 0.5); B pushes twice more from its old backup.
  PullAll(store, a);
  PullAll(store, b);
  ASSERT_TRUE(PushNow(store, b, Grad("w", 0, {0.2f, 0.2f, 0.2f, 0.2f})).ok());
  // B's second push is stale by one: the gap 0.1 is below its mean step.
  ASSERT_TRUE(PushNow(store, b, Grad("w", 0, {0.2f, 0.2f, 0.2f, 0.2f})).ok());
  double c = 0.5;
  c = 0.999 * c + 0.001 * 0.5;  // A's step
  c = 0.999 * c + 0.001 * 0.1;  // B's first
  c = 0.999 * c + 0.001 * 0.1;  // B's second
  // w = -0.2: A's gap is 0.2, below C: no damping either.
  ASSERT_TRUE(PushNow(store, a, Grad("w", 0, {1, 1, 1, 1})).ok());
  w = PullAll(store, 0)["w"];
  for (float x : w) EXPECT_NEAR(x, -0.2 - lr * 1.0, 1e-6);
  c = 0.999 * c + 0.001 * 0.5;

  // A gap of many mean steps: B pulls, then A moves w by 0.2 twenty times
  // (each fresh), and B's push is damped by |w - w_bak(b)| / C, about 8.
  PullAll(store, b);
  const std::vector<float> bak_b = PullAll(store, 0)["w"];
  for (int i = 0; i < 20; ++i) {
    PullAll(store, a);
    ASSERT_TRUE(PushNow(store, a, Grad("w", 0, {0.4f, 0.4f, 0.4f, 0.4f})).ok());
    c = 0.999 * c + 0.001 * 0.2;
  }
  const std::vector<float> before = PullAll(store, 0)["w"];
  ASSERT_TRUE(PushNow(store, b, Grad("w", 0, {1, 1, 1, 1})).ok());
  const std::vector<float> after = PullAll(store, 0)["w"];
  const double gap = std::fabs(before[0] - bak_b[0]) / c;
  ASSERT_GT(gap, 7.0);
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(after[i], before[i] - lr / gap, 1e-5) << i;
  c = 0.999 * c + 0.001 * (lr / gap);

  // The state survives a snapshot and a restore, bit for bit.
  const ShardSnapshot snapshot = store.Snapshot();
  ASSERT_EQ(snapshot.tensors.size(), 1u);
  ASSERT_EQ(snapshot.tensors[0].chunks[0].gap_scale.size(), 4u);
  EXPECT_NEAR(snapshot.tensors[0].chunks[0].gap_scale[0], c, 1e-5);
  ShardStore restored(config, Clock::Real());
  ShardSnapshot copy = snapshot;
  ASSERT_TRUE(restored.Restore(std::move(copy)).ok());
  EXPECT_EQ(restored.Snapshot().tensors[0].chunks[0].gap_scale,
            snapshot.tensors[0].chunks[0].gap_scale);
}

TEST(ShardStore, GapAwareIsRefusedUnderSsgd) {
  ShardConfig config = Config(UpdateRule::kAsgd);
  config.optimizer.gap_aware = true;
  config.sync = SyncMode::kSsgd;
  const absl::Status status = config.Validate();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("gap-aware"));
  config.sync = SyncMode::kSsp;
  EXPECT_TRUE(config.Validate().ok());
}

TEST(ShardStore, DcAsgdPushWithoutPullIsFailedPrecondition) {
  ShardStore store(Config(UpdateRule::kDcAsgdAdaptive), Clock::Real());
  ASSERT_TRUE(store.Declare({Spec("w", {4})}).ok());
  WorkerId a = store.Join("a")->worker_id;
  auto r = PushNow(store, a, Grad("w", 0, {1, 1, 1, 1}));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(r.status().message(), HasSubstr("Pull before pushing"));
  EXPECT_EQ(store.version(), 0u);
}

TEST(ShardStore, PushPullReturnsNewValuesThatBecomeTheBackup) {
  ShardStore store(Config(UpdateRule::kDcAsgdConstant, 1.0f, 1.0f), Clock::Real());
  ASSERT_TRUE(store.Declare({Spec("w", {6}, 4, 2.0f)}).ok());
  WorkerId a = store.Join("a")->worker_id;
  PullAll(store, a);
  std::vector<GradientChunk> g = Grad("w", 0, {1, 1, 1, 1});
  g.push_back(GradientChunk{"w", 1, Bytes({2, 2})});
  auto r = PushNow(store, a, g, /*pull_after=*/true);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->new_values.size(), 2u);
  EXPECT_EQ(r->new_values[0].chunk_index, 0u);
  EXPECT_EQ(Floats(r->new_values[0].values), std::vector<float>(4, 1.0f));
  EXPECT_EQ(Floats(r->new_values[1].values), std::vector<float>(2, 0.0f));
  // Next push: the backup is the returned values, so w - w_bak = 0 and the
  // update is plain SGD even with a huge lambda.
  auto r2 = PushNow(store, a, Grad("w", 0, {1, 1, 1, 1}), true);
  ASSERT_TRUE(r2.ok());
  EXPECT_EQ(r2->staleness, 0u);
  EXPECT_EQ(Floats(r2->new_values[0].values), std::vector<float>(4, 0.0f));
}

// A reply's block is also the worker's backup (float32): later pushes and
// pulls write new blocks, never into one that a reply on the wire still holds.
TEST(ShardStore, AReplyStillHeldKeepsItsValuesWhileLaterUpdatesApply) {
  ShardStore store(Config(UpdateRule::kDcAsgdAdaptive, 0.5f, 0.5f), Clock::Real());
  ASSERT_TRUE(store.Declare({Spec("w", {4}, 4, 1.0f)}).ok());
  WorkerId a = store.Join("a")->worker_id;
  WorkerId b = store.Join("b")->worker_id;
  PullAll(store, a);
  PullAll(store, b);
  auto first = PushNow(store, a, Grad("w", 0, {1, 2, 3, 4}), /*pull_after=*/true);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_EQ(first->new_values.size(), 1u);
  const std::vector<float> sent = Floats(first->new_values[0].values);
  // The same worker's next PushPull replaces that backup; another worker's
  // push and a pull of `a` move the weights and write backups again.
  auto second = PushNow(store, a, Grad("w", 0, {4, 3, 2, 1}), true);
  ASSERT_TRUE(second.ok()) << second.status();
  ASSERT_TRUE(PushNow(store, b, Grad("w", 0, {1, 1, 1, 1}), true).ok());
  const std::vector<float> now = PullAll(store, a)["w"];
  EXPECT_EQ(Floats(first->new_values[0].values), sent);
  EXPECT_NE(Floats(second->new_values[0].values), sent);
  EXPECT_NE(now, sent);
  EXPECT_FALSE(second->new_values[0].values.SameBlock(first->new_values[0].values));
}

TEST(ShardStore, SinkReceivesEachUpdatedChunkBeforeDone) {
  ShardStore store(Config(UpdateRule::kAsgd, 1.0f), Clock::Real());
  ASSERT_TRUE(store.Declare({Spec("w", {10}, 4, 1.0f)}).ok());
  WorkerId a = store.Join("a")->worker_id;
  WorkerId b = store.Join("b")->worker_id;
  PullAll(store, a);
  ASSERT_TRUE(PushNow(store, b, Grad("w", 0, {0, 0, 0, 0})).ok());  // a is now 1 stale
  std::vector<GradientChunk> g;
  g.push_back(GradientChunk{"w", 2, Bytes({1, 1})});
  g.push_back(GradientChunk{"w", 0, Bytes({2, 2, 2, 2})});
  std::vector<AppliedChunk> streamed;
  std::optional<absl::StatusOr<PushResult>> result;
  store.SubmitPush(
      a, /*step=*/0, g, /*pull_after=*/true,
      [&](absl::StatusOr<PushResult> r) {
        EXPECT_EQ(streamed.size(), 2u) << "every chunk reaches the sink before done";
        result = std::move(r);
      },
      [&](AppliedChunk c) { streamed.push_back(std::move(c)); });
  ASSERT_TRUE(result.has_value() && result->ok());
  ASSERT_EQ(streamed.size(), 2u);
  EXPECT_EQ(streamed[0].values.chunk_index, 2u);
  EXPECT_EQ(Floats(streamed[0].values.values), std::vector<float>(2, 0.0f));
  EXPECT_EQ(streamed[1].values.chunk_index, 0u);
  EXPECT_EQ(Floats(streamed[1].values.values), std::vector<float>(4, -1.0f));
  for (const AppliedChunk& c : streamed) {
    EXPECT_EQ(c.version, 2u);
    EXPECT_EQ(c.staleness, 1u);
    EXPECT_EQ(c.values.tensor, "w");
  }
  EXPECT_EQ((*result)->version, 2u);
}

TEST(ShardStore, StalenessCountsVersionsSinceThisWorkersPull) {
  ShardStore store(Config(UpdateRule::kAsgd), Clock::Real());
  ASSERT_TRUE(store.Declare({Spec("w", {4})}).ok());
  WorkerId a = store.Join("a")->worker_id;
  WorkerId b = store.Join("b")->worker_id;
  PullAll(store, a);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(PushNow(store, b, Grad("w", 0, {0, 0, 0, 0})).ok());
  auto r = PushNow(store, a, Grad("w", 0, {0, 0, 0, 0}));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->staleness, 3u);
  EXPECT_EQ(r->version, 4u);
}

class BadPushTest : public ::testing::Test {
 protected:
  BadPushTest() : store_(Config(UpdateRule::kDcAsgdAdaptive), Clock::Real()) {
    EXPECT_TRUE(store_.Declare({Spec("w", {8}), Spec("v", {3})}).ok());
    worker_ = store_.Join("a")->worker_id;
    PullAll(store_, worker_);
    before_ = store_.Snapshot();
  }
  void ExpectRejected(std::vector<GradientChunk> chunks, absl::StatusCode code,
                      const std::string& text) {
    auto r = PushNow(store_, worker_, std::move(chunks), true);
    EXPECT_EQ(r.status().code(), code) << r.status();
    EXPECT_THAT(r.status().message(), HasSubstr(text));
    EXPECT_TRUE(SameSnapshot(before_, store_.Snapshot())) << "state changed";
  }
  ShardStore store_;
  WorkerId worker_ = 0;
  ShardSnapshot before_;
};

TEST_F(BadPushTest, UnknownTensorIsNotFound) {
  ExpectRejected(Grad("nope", 0, {1, 1, 1, 1}), absl::StatusCode::kNotFound, "'nope'");
}

TEST_F(BadPushTest, UnknownChunkIsNotFound) {
  ExpectRejected(Grad("w", 2, {1, 1, 1, 1}), absl::StatusCode::kNotFound, "chunk 2");
}

TEST_F(BadPushTest, WrongLengthIsInvalidArgument) {
  ExpectRejected(Grad("v", 0, {1, 1}), absl::StatusCode::kInvalidArgument, "expected 12");
}

TEST_F(BadPushTest, NanInALaterChunkAppliesNothing) {
  auto chunks = Grad("w", 0, {1, 1, 1, 1});
  chunks.push_back(GradientChunk{"w", 1, Bytes({1, std::nanf(""), 1, 1})});
  ExpectRejected(chunks, absl::StatusCode::kInvalidArgument,
                 "has element 1 = nan: NaN, Inf or beyond the shard's max_gradient_abs");
}

TEST_F(BadPushTest, InfIsInvalidArgument) {
  ExpectRejected(Grad("v", 0, {1, 1, std::numeric_limits<float>::infinity()}),
                 absl::StatusCode::kInvalidArgument, "NaN, Inf or beyond");
}

TEST_F(BadPushTest, ValuesCheckedOnArrivalFailAsAtSubmitAndStayUnmarked) {
  GradientChunk bad{"w", 1, Bytes({1, std::nanf(""), 1, 1})};
  const absl::Status arrival = store_.CheckGradientValues(&bad);
  EXPECT_FALSE(bad.values_checked);
  const auto submitted = PushNow(store_, worker_, {bad}, true);
  EXPECT_EQ(arrival.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(arrival, submitted.status());
  EXPECT_TRUE(SameSnapshot(before_, store_.Snapshot())) << "state changed";

  GradientChunk beyond{"v", 0, Bytes({1, 2e6f, 1})};  // max_gradient_abs is 1e6
  EXPECT_EQ(store_.CheckGradientValues(&beyond).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(beyond.values_checked);
}

TEST_F(BadPushTest, ChunksCheckedOnArrivalApplyAsUncheckedOnes) {
  // The same push, checked as it arrives or only at submit, leaves the
  // same state: the mark skips a second reading of the values, nothing else.
  ShardStore other(Config(UpdateRule::kDcAsgdAdaptive), Clock::Real());
  ASSERT_TRUE(other.Declare({Spec("w", {8}), Spec("v", {3})}).ok());
  const WorkerId other_worker = other.Join("a")->worker_id;
  PullAll(other, other_worker);
  std::vector<GradientChunk> checked = Grad("w", 0, {1, -2, 3, -4});
  checked.push_back(GradientChunk{"v", 0, Bytes({0.5f, 0.25f, -1})});
  std::vector<GradientChunk> unchecked = checked;
  for (GradientChunk& g : checked) {
    ASSERT_TRUE(store_.CheckGradientValues(&g).ok());
    EXPECT_TRUE(g.values_checked);
  }
  ASSERT_TRUE(PushNow(store_, worker_, std::move(checked)).ok());
  ASSERT_TRUE(PushNow(other, other_worker, std::move(unchecked)).ok());
  EXPECT_FALSE(SameSnapshot(before_, store_.Snapshot()));  // it was applied
  EXPECT_TRUE(SameSnapshot(store_.Snapshot(), other.Snapshot()));
}

TEST_F(BadPushTest, RepeatedChunkIsInvalidArgument) {
  auto chunks = Grad("w", 0, {1, 1, 1, 1});
  chunks.push_back(chunks[0]);
  ExpectRejected(chunks, absl::StatusCode::kInvalidArgument, "twice");
}

TEST_F(BadPushTest, EmptyPushIsInvalidArgument) {
  ExpectRejected({}, absl::StatusCode::kInvalidArgument, "no gradient chunks");
}

TEST_F(BadPushTest, UnknownWorkerIsFailedPrecondition) {
  worker_ = 999;
  ExpectRejected(Grad("w", 0, {1, 1, 1, 1}), absl::StatusCode::kFailedPrecondition, "Join again");
}

TEST(ShardStore, ChunkOfAnotherShardIsNotFound) {
  ShardConfig config = Config(UpdateRule::kAsgd);
  config.shard_count = 2;
  config.shard_index = ShardOfChunk("w", 0, 2) == 0 ? 1 : 0;  // not the owner of chunk 0
  ShardStore store(config, Clock::Real());
  ASSERT_TRUE(store.Declare({Spec("w", {8})}).ok());
  WorkerId a = store.Join("a")->worker_id;
  auto r = PushNow(store, a, Grad("w", 0, {1, 1, 1, 1}));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(r.status().message(), HasSubstr("belongs to shard"));
}

TEST(ShardStore, ExpiredLeaseFreesBackups) {
  ManualClock clock;
  ShardConfig config = Config(UpdateRule::kDcAsgdConstant);
  config.lease = absl::Seconds(2);
  ShardStore store(config, &clock);
  ASSERT_TRUE(store.Declare({Spec("w", {16})}).ok());
  WorkerId a = store.Join("a")->worker_id;
  WorkerId b = store.Join("b")->worker_id;
  PullAll(store, a);
  PullAll(store, b);
  EXPECT_EQ(store.Stats().backup_bytes, 2 * 16 * 4u);
  clock.Advance(absl::Seconds(1.5));
  ASSERT_TRUE(store.Heartbeat(b).ok());
  clock.Advance(absl::Seconds(1));
  EXPECT_EQ(store.ExpireLeases(), 1);
  EXPECT_EQ(store.Stats().active_workers, 1u);
  EXPECT_EQ(store.Stats().backup_bytes, 16 * 4u) << "a's backups freed, b's kept";
  EXPECT_EQ(store.Heartbeat(a).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(PushNow(store, a, Grad("w", 0, {0, 0, 0, 0})).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(PushNow(store, b, Grad("w", 0, {0, 0, 0, 0})).ok());
}

TEST(ShardStore, JoinWithLiveNameReplacesTheOldWorker) {
  ShardStore store(Config(UpdateRule::kDcAsgdConstant), Clock::Real());
  ASSERT_TRUE(store.Declare({Spec("w", {4})}).ok());
  WorkerId old_id = store.Join("pod-0")->worker_id;
  PullAll(store, old_id);
  WorkerId new_id = store.Join("pod-0")->worker_id;
  EXPECT_NE(old_id, new_id);
  EXPECT_EQ(store.Stats().active_workers, 1u);
  EXPECT_EQ(store.Stats().backup_bytes, 0u);
  EXPECT_EQ(store.Heartbeat(old_id).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store.Join("").status().code(), absl::StatusCode::kInvalidArgument);
}

// Hands out scripted numbers, then counts up from 1000.
class ScriptedRandom final : public RandomSource {
 public:
  explicit ScriptedRandom(std::vector<uint64_t> script) : script_(std::move(script)) {}
  uint64_t Next64() override {
    absl::MutexLock lock(&mu_);
    if (next_ < script_.size()) return script_[next_++];
    return 1000 + next_++;
  }

 private:
  absl::Mutex mu_;
  std::vector<uint64_t> script_ ABSL_GUARDED_BY(mu_);
  size_t next_ ABSL_GUARDED_BY(mu_) = 0;
};

TEST(ShardStore, WorkerIdsAreNotReusedAfterARestart) {
  // Issue 13: ids restarted at 1 with the shard, so a worker joining a
  // restarted shard got the id another worker still used.
  std::set<WorkerId> before;
  {
    ShardStore store(Config(UpdateRule::kDcAsgdConstant), Clock::Real());
    for (const char* name : {"a", "b", "c"}) before.insert(store.Join(name)->worker_id);
  }
  ShardStore restarted(Config(UpdateRule::kDcAsgdConstant), Clock::Real());
  for (const char* name : {"d", "e", "f"}) {
    const WorkerId id = restarted.Join(name)->worker_id;
    EXPECT_NE(id, 0u);
    EXPECT_EQ(before.count(id), 0u) << "id " << id << " of '" << name << "' was used before";
  }
}

TEST(ShardStore, WorkerIdsSkipZeroAndLiveIds) {
  ScriptedRandom random({7, 0, 7, 7, 9});
  ShardStore store(Config(UpdateRule::kDcAsgdConstant), Clock::Real(), &random);
  EXPECT_EQ(store.Join("a")->worker_id, 7u);
  EXPECT_EQ(store.Join("b")->worker_id, 9u) << "0 and the live id 7 are skipped";
}

class PushStepTest : public ::testing::Test {
 protected:
  explicit PushStepTest(UpdateRule rule = UpdateRule::kAsgd)
      : store_(Config(rule), Clock::Real()) {}
  void SetUp() override {
    ASSERT_TRUE(store_.Declare({Spec("w", {6})}).ok());  // chunks of 4 and 2
    worker_ = store_.Join("a")->worker_id;
    PullAll(store_, worker_);
  }
  absl::StatusOr<Pushed> Push(uint64_t step, float g, bool pull_after = false) {
    std::vector<GradientChunk> chunks;
    chunks.push_back(GradientChunk{"w", 0, Bytes({g, g, g, g})});
    chunks.push_back(GradientChunk{"w", 1, Bytes({g, g})});
    return PushNow(store_, worker_, std::move(chunks), pull_after, step);
  }
  std::vector<float> Weights() { return PullAll(store_, 0)["w"]; }

  ShardStore store_;
  WorkerId worker_ = 0;
};

TEST_F(PushStepTest, ARepeatedStepIsAnsweredAndNotAppliedAgain) {
  absl::StatusOr<Pushed> first = Push(1, 2.0f);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_FALSE(first->replayed);
  const std::vector<float> after_first = Weights();
  EXPECT_EQ(after_first, std::vector<float>(6, 0.0f)) << "1 - 0.5 * 2";
  // The acknowledgement was lost; the client sends the same step again (even
  // with other values, e.g. recomputed): the shard answers, applies nothing.
  absl::StatusOr<Pushed> again = Push(1, 5.0f);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(again->replayed);
  EXPECT_EQ(again->version, first->version);
  EXPECT_EQ(again->staleness, first->staleness);
  EXPECT_EQ(store_.version(), 1u);
  EXPECT_EQ(Weights(), after_first);
  ASSERT_TRUE(Push(2, 1.0f).ok());
  EXPECT_EQ(store_.version(), 2u);
  absl::StatusOr<Pushed> late = Push(1, 2.0f);
  EXPECT_EQ(late.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(late.status().message(), HasSubstr("older than its last applied step 2"));
  EXPECT_EQ(store_.version(), 2u);
  // Step 0 opts out: every push is applied.
  ASSERT_TRUE(Push(0, 1.0f).ok());
  ASSERT_TRUE(Push(0, 1.0f).ok());
  EXPECT_EQ(store_.version(), 4u);
}

// A rule that keeps backups (ASGD keeps none).
class PushStepWithBackupsTest : public PushStepTest {
 protected:
  PushStepWithBackupsTest() : PushStepTest(UpdateRule::kDcAsgdConstant) {}
};

TEST_F(PushStepWithBackupsTest, ARepeatedPushPullReturnsTheValuesFirstSent) {
  absl::StatusOr<Pushed> first = Push(3, 1.0f, /*pull_after=*/true);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_EQ(first->new_values.size(), 2u);
  // Another worker moves the weights on; the repeated step still answers
  // with what this worker was sent (its backup), not the current weights.
  WorkerId other = store_.Join("b")->worker_id;
  PullAll(store_, other);
  ASSERT_TRUE(PushNow(store_, other, Grad("w", 0, {1, 1, 1, 1})).ok());
  absl::StatusOr<Pushed> again = Push(3, 1.0f, /*pull_after=*/true);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(again->replayed);
  EXPECT_EQ(again->version, first->version);
  ASSERT_EQ(again->new_values.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(again->new_values[i].chunk_index, first->new_values[i].chunk_index);
    EXPECT_EQ(Floats(again->new_values[i].values), Floats(first->new_values[i].values));
    // With a float32 backup the answer is the backup's block itself: the
    // block first sent, not a copy.
    EXPECT_TRUE(again->new_values[i].values.SameBlock(first->new_values[i].values));
  }
  EXPECT_EQ(store_.version(), 2u);
  // Through a sink, the replayed chunks are streamed like applied ones.
  std::vector<AppliedChunk> streamed;
  std::optional<absl::StatusOr<PushResult>> result;
  store_.SubmitPush(
      worker_, 3, Grad("w", 1, {1, 1}), true,
      [&](absl::StatusOr<PushResult> r) { result = std::move(r); },
      [&](AppliedChunk c) { streamed.push_back(std::move(c)); });
  ASSERT_TRUE(result.has_value() && result->ok());
  ASSERT_EQ(streamed.size(), 1u);
  EXPECT_EQ(streamed[0].version, first->version);
  EXPECT_EQ(Floats(streamed[0].values.values), std::vector<float>(2, 0.5f));
}

TEST_F(PushStepTest, ARepeatedPushPullWithoutBackupsReturnsTheCurrentWeights) {
  absl::StatusOr<Pushed> first = Push(3, 1.0f, /*pull_after=*/true);
  ASSERT_TRUE(first.ok()) << first.status();
  WorkerId other = store_.Join("b")->worker_id;
  PullAll(store_, other);
  ASSERT_TRUE(PushNow(store_, other, Grad("w", 0, {1, 1, 1, 1})).ok());
  // ASGD keeps no backups: the repeated step is answered like a pull of the
  // current weights, and still not applied again.
  absl::StatusOr<Pushed> again = Push(3, 1.0f, /*pull_after=*/true);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(again->replayed);
  EXPECT_EQ(again->version, first->version);
  EXPECT_EQ(store_.version(), 2u);
  ASSERT_EQ(again->new_values.size(), 2u);
  const std::vector<float> now = Weights();
  EXPECT_EQ(Floats(again->new_values[0].values), std::vector<float>(now.begin(), now.begin() + 4));
  EXPECT_EQ(Floats(again->new_values[1].values), std::vector<float>(now.begin() + 4, now.end()));
  EXPECT_NE(Floats(again->new_values[0].values), Floats(first->new_values[0].values));
}

TEST_F(PushStepTest, ARejectedPushDoesNotUseUpItsStep) {
  std::vector<GradientChunk> nan;
  nan.push_back(GradientChunk{"w", 0, Bytes({1, std::nanf(""), 1, 1})});
  std::optional<absl::StatusOr<PushResult>> out;
  store_.SubmitPush(worker_, 1, std::move(nan), false,
                    [&out](absl::StatusOr<PushResult> r) { out = std::move(r); });
  ASSERT_TRUE(out.has_value());
  EXPECT_EQ(out->status().code(), absl::StatusCode::kInvalidArgument);
  absl::StatusOr<PushResult> fixed = Push(1, 1.0f);
  ASSERT_TRUE(fixed.ok()) << fixed.status();
  EXPECT_FALSE(fixed->replayed);
  EXPECT_EQ(store_.version(), 1u);
}

TEST(ShardStore, AStepStillWaitingIsUnavailableThenAnswered) {
  ShardConfig config = Config(UpdateRule::kAsgd);
  config.sync = SyncMode::kSsgd;
  ShardStore store(config, Clock::Real());
  ASSERT_TRUE(store.Declare({Spec("w", {4})}).ok());
  WorkerId a = store.Join("a")->worker_id;
  WorkerId b = store.Join("b")->worker_id;
  std::optional<absl::StatusOr<PushResult>> waiting, retried;
  store.SubmitPush(a, 5, Grad("w", 0, {1, 1, 1, 1}), false,
                   [&](absl::StatusOr<PushResult> r) { waiting = std::move(r); });
  EXPECT_FALSE(waiting.has_value()) << "waits for b's push";
  store.SubmitPush(a, 5, Grad("w", 0, {1, 1, 1, 1}), false,
                   [&](absl::StatusOr<PushResult> r) { retried = std::move(r); });
  ASSERT_TRUE(retried.has_value());
  EXPECT_EQ(retried->status().code(), absl::StatusCode::kUnavailable);
  ASSERT_TRUE(PushNow(store, b, Grad("w", 0, {3, 3, 3, 3})).ok()) << "completes the round";
  ASSERT_TRUE(waiting.has_value());
  ASSERT_TRUE(waiting->ok()) << waiting->status();
  retried.reset();
  store.SubmitPush(a, 5, Grad("w", 0, {1, 1, 1, 1}), false,
                   [&](absl::StatusOr<PushResult> r) { retried = std::move(r); });
  ASSERT_TRUE(retried.has_value() && retried->ok());
  EXPECT_TRUE((*retried)->replayed);
  EXPECT_EQ((*retried)->version, (*waiting)->version);
  EXPECT_EQ(store.version(), 1u);
}

TEST(ShardStore, ConcurrentPushesLoseNoUpdate) {
  // Plain SGD with lr = 1: the final weights are init minus the exact sum of
  // every pushed gradient. Values are small integers, so float sums are exact.
  constexpr int kThreads = 8, kPushes = 200;
  ShardStore store(Config(UpdateRule::kAsgd, 1.0f), Clock::Real());
  ASSERT_TRUE(store.Declare({Spec("w", {1000}, 64, 0.0f)}).ok());
  const uint64_t chunks = 16;  // ceil(1000 / 64)
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&store, t] {
      WorkerId id = store.Join("worker-" + std::to_string(t))->worker_id;
      for (int p = 0; p < kPushes; ++p) {
        std::vector<GradientChunk> g;
        for (uint64_t c = 0; c < chunks; ++c) {
          const size_t n = c + 1 < chunks ? 64 : 1000 - 64 * (chunks - 1);
          g.push_back(GradientChunk{"w", c, Bytes(std::vector<float>(n, float(t + 1)))});
        }
        auto r = PushNow(store, id, std::move(g), p % 2 == 0);
        ASSERT_TRUE(r.ok()) << r.status();
      }
    });
  }
  for (auto& th : threads) th.join();
  float expected = 0;
  for (int t = 0; t < kThreads; ++t) expected -= float(t + 1) * kPushes;
  auto w = PullAll(store, 0)["w"];
  ASSERT_EQ(w.size(), 1000u);
  for (float x : w) ASSERT_EQ(x, expected);
  EXPECT_EQ(store.version(), uint64_t{kThreads} * kPushes);
}

TEST(ShardStore, MaxStalenessAbortsTooStalePushes) {
  ShardConfig config = Config(UpdateRule::kAsgd);
  config.max_staleness = 1;
  ShardStore store(config, Clock::Real());
  ASSERT_TRUE(store.Declare({Spec("w", {4})}).ok());
  WorkerId a = store.Join("a")->worker_id;
  WorkerId b = store.Join("b")->worker_id;
  PullAll(store, a);
  ASSERT_TRUE(PushNow(store, b, Grad("w", 0, {1, 1, 1, 1})).ok());
  ASSERT_TRUE(PushNow(store, b, Grad("w", 0, {1, 1, 1, 1})).ok());
  auto before = store.Snapshot();
  auto r = PushNow(store, a, Grad("w", 0, {1, 1, 1, 1}));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kAborted);
  EXPECT_THAT(r.status().message(), HasSubstr("2 versions stale"));
  EXPECT_TRUE(SameSnapshot(before, store.Snapshot()));
}

TEST(ShardStore, SsgdAveragesOneRoundAndAppliesOnce) {
  ShardConfig config = Config(UpdateRule::kAsgd, 1.0f);
  config.sync = SyncMode::kSsgd;
  ShardStore store(config, Clock::Real());
  ASSERT_TRUE(store.Declare({Spec("w", {4}, 4, 0.0f)}).ok());
  WorkerId a = store.Join("a")->worker_id;
  WorkerId b = store.Join("b")->worker_id;
  std::optional<absl::StatusOr<PushResult>> ra, rb;
  std::vector<ChunkValues> va, vb;
  store.SubmitPush(
      a, /*step=*/0, Grad("w", 0, {2, 2, 2, 2}), true,
      [&](absl::StatusOr<PushResult> r) { ra = std::move(r); }, CollectInto(&va));
  EXPECT_FALSE(ra.has_value()) << "the round waits for b";
  EXPECT_EQ(store.version(), 0u);
  // A second push of a in the same round is refused.
  auto dup = PushNow(store, a, Grad("w", 0, {1, 1, 1, 1}));
  EXPECT_EQ(dup.status().code(), absl::StatusCode::kFailedPrecondition);
  store.SubmitPush(
      b, /*step=*/0, Grad("w", 0, {4, 4, 4, 4}), true,
      [&](absl::StatusOr<PushResult> r) { rb = std::move(r); }, CollectInto(&vb));
  ASSERT_TRUE(ra.has_value() && rb.has_value());
  ASSERT_TRUE(ra->ok() && rb->ok());
  EXPECT_EQ((*ra)->version, 1u);
  ASSERT_EQ(va.size(), 1u);
  ASSERT_EQ(vb.size(), 1u);
  EXPECT_EQ(Floats(va[0].values), std::vector<float>(4, -3.0f));
  EXPECT_EQ(Floats(vb[0].values), std::vector<float>(4, -3.0f));
}

TEST(ShardStore, SsgdRoundDoesNotWaitForALeavingWorker) {
  ShardConfig config = Config(UpdateRule::kAsgd, 1.0f);
  config.sync = SyncMode::kSsgd;
  ShardStore store(config, Clock::Real());
  ASSERT_TRUE(store.Declare({Spec("w", {4}, 4, 0.0f)}).ok());
  WorkerId a = store.Join("a")->worker_id;
  WorkerId b = store.Join("b")->worker_id;
  WorkerId c = store.Join("c")->worker_id;
  int done = 0;
  store.SubmitPush(a, /*step=*/0, Grad("w", 0, {1, 1, 1, 1}), false,
                   [&](auto r) { done += r.ok(); });
  store.SubmitPush(b, /*step=*/0, Grad("w", 0, {3, 3, 3, 3}), false,
                   [&](auto r) { done += r.ok(); });
  EXPECT_EQ(done, 0);
  ASSERT_TRUE(store.Leave(c).ok());
  EXPECT_EQ(done, 2);
  EXPECT_EQ(PullAll(store, 0)["w"], std::vector<float>(4, -2.0f));
}

TEST(ShardStore, SspWaitHoldsAWorkerAheadOfTheBound) {
  ShardConfig config = Config(UpdateRule::kAsgd, 1.0f);
  config.sync = SyncMode::kSsp;
  config.ssp_bound = 1;
  ShardStore store(config, Clock::Real());
  ASSERT_TRUE(store.Declare({Spec("w", {4}, 4, 0.0f)}).ok());
  WorkerId fast = store.Join("fast")->worker_id;
  WorkerId slow = store.Join("slow")->worker_id;
  int applied = 0;
  auto count = [&](absl::StatusOr<PushResult> r) { applied += r.ok(); };
  store.SubmitPush(fast, /*step=*/0, Grad("w", 0, {1, 1, 1, 1}), false, count);  // clock 0 -> 1
  store.SubmitPush(fast, /*step=*/0, Grad("w", 0, {1, 1, 1, 1}), false, count);  // clock 1 -> 2
  EXPECT_EQ(applied, 2);
  store.SubmitPush(fast, /*step=*/0, Grad("w", 0, {1, 1, 1, 1}), false, count);  // 2 > 0 + 1: waits
  EXPECT_EQ(applied, 2);
  EXPECT_EQ(store.version(), 2u);
  store.SubmitPush(slow, /*step=*/0, Grad("w", 0, {1, 1, 1, 1}), false, count);  // releases fast
  EXPECT_EQ(applied, 4);
  EXPECT_EQ(store.version(), 4u);
}

TEST(ShardStore, SspRejectAbortsAWorkerAheadOfTheBound) {
  ShardConfig config = Config(UpdateRule::kAsgd, 1.0f);
  config.sync = SyncMode::kSsp;
  config.ssp_bound = 0;
  config.ssp_policy = SspPolicy::kReject;
  ShardStore store(config, Clock::Real());
  ASSERT_TRUE(store.Declare({Spec("w", {4}, 4, 0.0f)}).ok());
  WorkerId fast = store.Join("fast")->worker_id;
  ASSERT_TRUE(store.Join("slow").ok());
  ASSERT_TRUE(PushNow(store, fast, Grad("w", 0, {1, 1, 1, 1})).ok());
  auto r = PushNow(store, fast, Grad("w", 0, {1, 1, 1, 1}));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kAborted);
  EXPECT_EQ(store.version(), 1u);
}

TEST(ShardStore, CancelWaitingFailsWaitersWithUnavailable) {
  ShardConfig config = Config(UpdateRule::kAsgd, 1.0f);
  config.sync = SyncMode::kSsgd;
  ShardStore store(config, Clock::Real());
  ASSERT_TRUE(store.Declare({Spec("w", {4})}).ok());
  WorkerId a = store.Join("a")->worker_id;
  ASSERT_TRUE(store.Join("b").ok());
  std::optional<absl::Status> status;
  store.SubmitPush(a, /*step=*/0, Grad("w", 0, {1, 1, 1, 1}), false,
                   [&](absl::StatusOr<PushResult> r) { status = r.status(); });
  store.CancelWaiting();
  ASSERT_TRUE(status.has_value());
  EXPECT_EQ(status->code(), absl::StatusCode::kUnavailable);
}

TEST(ShardStore, SnapshotRestoreRoundTrip) {
  ShardConfig config = Config(UpdateRule::kDcAsgdAdaptive);
  config.optimizer.momentum = 0.9f;
  ShardStore store(config, Clock::Real());
  TensorSpec normal = Spec("n", {100}, 16);
  normal.init.kind = Initializer::Kind::kNormal;
  normal.init.a = 0;
  normal.init.b = 1;
  normal.init.seed = 7;
  ASSERT_TRUE(store.Declare({normal, Spec("c", {3})}).ok());
  EXPECT_EQ(store.Stats().optimizer_state_bytes, 2 * 103 * 4u);
  WorkerId a = store.Join("a")->worker_id;
  PullAll(store, a);
  ASSERT_TRUE(PushNow(store, a, Grad("n", 0, std::vector<float>(16, 0.5f))).ok());
  ShardSnapshot snap = store.Snapshot();
  EXPECT_EQ(snap.version, 1u);

  ShardStore restored(config, Clock::Real());
  ASSERT_TRUE(restored.Restore(snap).ok());
  EXPECT_TRUE(SameSnapshot(snap, restored.Snapshot()));
  EXPECT_EQ(restored.version(), 1u);
  EXPECT_EQ(restored.Stats().weight_bytes, store.Stats().weight_bytes);

  ShardConfig other = config;
  other.shard_count = 2;
  ShardStore wrong(other, Clock::Real());
  EXPECT_EQ(wrong.Restore(snap).code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace dcasgd
