// The replication log of a shard store (docs/design.md, "Replicated shards",
// "Ordered turns"): a log recorded from 8 threads of concurrent pushes
// (PushPull included, repeated steps, a pipelined worker), pulls, joins,
// leaves and lease expiries on one store, applied in seq order to a second,
// fresh store, leaves both bit-identical: weights, optimizer state, every
// backup, the version and the worker table. For every rule, sync mode,
// momentum and weight decay, gap-aware damping and backup dtype. And a
// catch-up: a snapshot taken while the threads run, loaded into a third
// store, plus the log after it, reaches the same state too.
#include <atomic>
#include <cstring>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "base/clock.h"
#include "core/replication_log.h"
#include "core/shard_store.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/float_bytes.h"

namespace dcasgd {
namespace {

using testing::Bytes;

// Every entry a store sequences, in order. Append runs under the store's
// sequencer mutex, so the entries arrive in seq order.
class RecordingSink final : public LogSink {
 public:
  void Append(LogEntry entry) override {
    absl::MutexLock lock(&mu_);
    entries_.push_back(std::move(entry));
  }
  std::vector<LogEntry> entries() const {
    absl::MutexLock lock(&mu_);
    return entries_;
  }

 private:
  mutable absl::Mutex mu_;
  std::vector<LogEntry> entries_ ABSL_GUARDED_BY(mu_);
};

struct Case {
  const char* name;
  UpdateRule rule;
  SyncMode sync = SyncMode::kAsync;
  Dtype backup_dtype = Dtype::kFloat32;
  float momentum = 0;
  float weight_decay = 0;
  bool gap_aware = false;
  bool staleness_aware = false;
};

ShardConfig ConfigFor(const Case& c) {
  ShardConfig config;
  config.optimizer = OptimizerConfig::ForRule(c.rule);
  config.optimizer.learning_rate = 0.05f;
  config.optimizer.momentum = c.momentum;
  config.optimizer.weight_decay = c.weight_decay;
  config.optimizer.gap_aware = c.gap_aware;
  config.optimizer.staleness_aware = c.staleness_aware;
  config.optimizer.backup_dtype = c.backup_dtype;
  config.optimizer.max_weight_abs = 1000;
  config.sync = c.sync;
  config.ssp_bound = 2;
  config.lease = absl::Seconds(10);
  config.max_workers = 32;
  return config;
}

std::vector<TensorSpec> Specs() {
  std::vector<TensorSpec> specs(2);
  specs[0].name = "w";
  specs[0].shape = {5, 7};  // 35 values: chunks of 8, the last one shorter
  specs[0].chunk_elements = 8;
  specs[0].init.kind = Initializer::Kind::kUniform;
  specs[0].init.a = -1;
  specs[0].init.b = 1;
  specs[0].init.seed = 3;
  specs[1].name = "b";
  specs[1].shape = {6};
  specs[1].chunk_elements = 4;
  specs[1].init.kind = Initializer::Kind::kConstant;
  specs[1].init.a = 0.5f;
  return specs;
}

// Bit equality of float vectors (-0 and 0 differ, as they would on a copy).
bool SameBits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() &&
         (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

::testing::AssertionResult SameState(const ReplicationSnapshot& a, const ReplicationSnapshot& b) {
  if (a.header.seq != b.header.seq || a.header.version != b.header.version) {
    return ::testing::AssertionFailure()
           << "seq " << a.header.seq << " vs " << b.header.seq << ", version " << a.header.version
           << " vs " << b.header.version;
  }
  if (a.header.tensors != b.header.tensors) return ::testing::AssertionFailure() << "tensors";
  if (a.header.workers.size() != b.header.workers.size()) {
    return ::testing::AssertionFailure()
           << a.header.workers.size() << " vs " << b.header.workers.size() << " workers";
  }
  for (size_t i = 0; i < a.header.workers.size(); ++i) {
    if (!(a.header.workers[i] == b.header.workers[i])) {
      return ::testing::AssertionFailure()
             << "worker record " << a.header.workers[i].worker_id << " differs";
    }
  }
  if (a.chunks.size() != b.chunks.size()) return ::testing::AssertionFailure() << "chunk count";
  for (size_t i = 0; i < a.chunks.size(); ++i) {
    const LogSnapshotChunk& x = a.chunks[i];
    const LogSnapshotChunk& y = b.chunks[i];
    const std::string where = x.tensor + "/" + std::to_string(x.state.index);
    if (x.tensor != y.tensor || x.state.index != y.state.index) {
      return ::testing::AssertionFailure() << "chunk order at " << where;
    }
    if (!SameBits(x.state.weights, y.state.weights)) {
      return ::testing::AssertionFailure() << "weights of " << where;
    }
    if (!SameBits(x.state.mean_square, y.state.mean_square) ||
        !SameBits(x.state.momentum, y.state.momentum) ||
        !SameBits(x.state.gap_scale, y.state.gap_scale)) {
      return ::testing::AssertionFailure() << "optimizer state of " << where;
    }
    if (x.backups.size() != y.backups.size()) {
      return ::testing::AssertionFailure()
             << x.backups.size() << " vs " << y.backups.size() << " backups of " << where;
    }
    for (size_t k = 0; k < x.backups.size(); ++k) {
      if (x.backups[k].worker_id != y.backups[k].worker_id ||
          x.backups[k].step != y.backups[k].step || x.backups[k].values != y.backups[k].values) {
        return ::testing::AssertionFailure() << "backup " << k << " of " << where;
      }
    }
  }
  return ::testing::AssertionSuccess();
}

// What the threads did, to check the log covers every kind of change.
struct Counts {
  std::atomic<int> applied{0}, replayed{0}, pulls{0}, joins{0}, leaves{0}, expired{0};
};

// One thread's worker: joins, pulls, pushes (PushPull and repeats
// included), leaves and joins again; re-joins when its lease ended.
class Worker {
 public:
  Worker(ShardStore* store, int index, Counts* counts)
      : store_(store), index_(index), counts_(counts), rng_(1000 + index) {}

  void Run(int iterations) {
    for (int i = 0; i < iterations; ++i) {
      if (id_ == 0) Join();
      if (store_->Heartbeat(id_).ok() == false) {
        id_ = 0;
        continue;
      }
      const int op = Uniform(0, 9);
      if (op <= 2) {
        Pull();
      } else if (op <= 7) {
        Push(/*repeat=*/op == 7 && step_ > 0);
      } else if (op == 8 && Uniform(0, 3) == 0) {
        if (store_->Leave(id_).ok()) ++counts_->leaves;
        id_ = 0;
      }
    }
    if (id_ != 0 && store_->Leave(id_).ok()) ++counts_->leaves;
  }

 private:
  int Uniform(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }

  void Join() {
    // Thread 0 is a pipelined worker (two bases kept).
    depth_ = index_ == 0 ? 1 : 0;
    absl::StatusOr<JoinResult> joined = store_->Join("worker-" + std::to_string(index_), depth_);
    ASSERT_TRUE(joined.ok()) << joined.status();
    id_ = joined->worker_id;
    step_ = 0;
    last_reply_step_ = 0;
    ++counts_->joins;
    Pull();
  }

  void Pull() {
    absl::StatusOr<PullPlan> plan = store_->PlanPull(id_, {});
    if (!plan.ok()) return;
    std::string values;
    for (const ChunkRef& ref : plan->chunks) store_->ReadChunk(*plan, ref, &values);
    ++counts_->pulls;
  }

  void Push(bool repeat) {
    std::vector<GradientChunk> chunks;
    for (const auto& [tensor, count, elements] :
         {std::tuple<const char*, int, int>{"w", 5, 8}, {"b", 2, 4}}) {
      for (int c = 0; c < count; ++c) {
        if (Uniform(0, 2) == 0) continue;
        const int n = std::string(tensor) == "w" && c == 4 ? 3 : elements;
        std::vector<float> g(n);
        for (float& x : g) x = std::uniform_real_distribution<float>(-1, 1)(rng_);
        chunks.push_back(GradientChunk{tensor, static_cast<uint64_t>(c), Bytes(g)});
      }
    }
    if (chunks.empty()) return;
    const bool pull_after = Uniform(0, 1) == 1;
    const uint64_t step = repeat ? step_ : step_ + 1;
    const uint64_t base = depth_ > 0 && Uniform(0, 1) == 1 ? last_reply_step_ : 0;
    auto done = std::make_shared<absl::Notification>();
    auto result = std::make_shared<absl::StatusOr<PushResult>>();
    std::vector<ChunkValues> replies;
    store_->SubmitPush(
        id_, step, std::move(chunks), pull_after,
        [done, result](absl::StatusOr<PushResult> r) {
          *result = std::move(r);
          done->Notify();
        },
        pull_after ? ShardStore::ChunkSink([](AppliedChunk) {}) : nullptr, base);
    // SSGD and SSP pushes wait for others (or for the reaper to end a
    // worker that never pushes).
    ASSERT_TRUE(done->WaitForNotificationWithTimeout(absl::Seconds(60))) << "push never answered";
    if (!result->ok()) return;
    if ((*result)->replayed) {
      ++counts_->replayed;
    } else {
      ++counts_->applied;
      step_ = step;
      if (pull_after) last_reply_step_ = step;
    }
  }

  ShardStore* const store_;
  const int index_;
  Counts* const counts_;
  std::mt19937 rng_;
  WorkerId id_ = 0;
  uint32_t depth_ = 0;
  uint64_t step_ = 0;
  uint64_t last_reply_step_ = 0;
};

class ShardStoreReplication : public ::testing::TestWithParam<Case> {};

TEST_P(ShardStoreReplication, LogFromEightThreadsReplaysBitIdentically) {
  const ShardConfig config = ConfigFor(GetParam());
  ManualClock clock;
  RecordingSink sink;
  ShardStore primary(config, &clock);
  primary.SetLogSink(&sink);
  ASSERT_TRUE(primary.Declare(Specs()).ok());

  Counts counts;
  constexpr int kThreads = 8;
  std::vector<std::unique_ptr<Worker>> workers;
  for (int t = 0; t < kThreads; ++t) {
    workers.push_back(std::make_unique<Worker>(&primary, t, &counts));
  }
  std::vector<std::thread> threads;
  std::atomic<int> running{kThreads};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      workers[t]->Run(1000);
      --running;
    });
  }
  // The reaper: time passes, idle "ghost" workers (which never push or
  // heartbeat, and so hold SSGD rounds and the SSP bound back) expire, and so
  // does a thread's worker that waited too long. A snapshot is taken midway.
  std::optional<ReplicationSnapshot> midway;
  for (int tick = 0; running.load() > 0 || counts.expired.load() < 3; ++tick) {
    if (tick % 5 == 0) {
      ASSERT_TRUE(primary.Join("ghost-" + std::to_string(tick)).ok());
    }
    clock.Advance(absl::Seconds(3));
    counts.expired += primary.ExpireLeases();
    if (!midway.has_value() && counts.applied.load() > 100) {
      midway = primary.TakeReplicationSnapshot();
    }
    absl::SleepFor(absl::Microseconds(200));
  }
  for (std::thread& t : threads) t.join();
  counts.expired += primary.ExpireLeases();

  // The log covers every kind of change.
  EXPECT_GT(counts.applied.load(), 500);
  EXPECT_GT(counts.replayed.load(), 0);
  EXPECT_GT(counts.joins.load(), kThreads);
  EXPECT_GT(counts.leaves.load(), kThreads);
  EXPECT_GT(counts.expired.load(), 0);
  const std::vector<LogEntry> log = sink.entries();
  ASSERT_EQ(log.size(), primary.last_seq());
  std::set<size_t> kinds;
  for (size_t i = 0; i < log.size(); ++i) {
    ASSERT_EQ(log[i].seq, i + 1) << "seqs are consecutive from 1";
    kinds.insert(log[i].op.index());
  }
  const bool ssgd = config.sync == SyncMode::kSsgd;
  const bool backups = primary.keeps_backups();
  EXPECT_TRUE(kinds.count(LogEntry::Op(LogDeclare{}).index()));
  EXPECT_TRUE(kinds.count(LogEntry::Op(LogJoin{}).index()));
  EXPECT_TRUE(kinds.count(LogEntry::Op(LogLeaseEnd{}).index()));
  EXPECT_TRUE(kinds.count(LogEntry::Op(LogRecordPull{}).index()));
  EXPECT_EQ(kinds.count(LogEntry::Op(LogPullChunk{}).index()), backups ? 1u : 0u);
  EXPECT_EQ(kinds.count(LogEntry::Op(LogPush{}).index()), ssgd ? 0u : 1u);
  EXPECT_EQ(kinds.count(LogEntry::Op(LogSsgdRound{}).index()), ssgd ? 1u : 0u);
  // Repeats answered from backups, which renew the base they resend.
  EXPECT_EQ(kinds.count(LogEntry::Op(LogReplay{}).index()), backups ? 1u : 0u);

  const ReplicationSnapshot expected = primary.TakeReplicationSnapshot();
  EXPECT_EQ(expected.header.version, primary.version());

  // A replica with another clock and other random ids applies the log.
  ManualClock replica_clock;
  replica_clock.Advance(absl::Hours(5));
  ShardStore replica(config, &replica_clock);
  for (const LogEntry& entry : log) {
    ASSERT_TRUE(replica.ApplyEntry(entry).ok())
        << "entry " << entry.seq << " (" << LogEntryKindName(entry.op) << ")";
  }
  EXPECT_TRUE(SameState(expected, replica.TakeReplicationSnapshot()));
  EXPECT_EQ(replica.Stats().backup_bytes, primary.Stats().backup_bytes);
  EXPECT_EQ(replica.Stats().active_workers, primary.Stats().active_workers);

  // Catch-up: the snapshot taken midway, then the rest of the log.
  ASSERT_TRUE(midway.has_value());
  const uint64_t cut = midway->header.seq;
  ASSERT_GT(cut, 0u);
  ASSERT_LT(cut, log.size());
  ShardStore late(config, &replica_clock);
  ASSERT_TRUE(late.LoadReplicationSnapshot(*midway).ok());
  EXPECT_EQ(late.last_seq(), cut);
  for (size_t i = cut; i < log.size(); ++i) {
    ASSERT_TRUE(late.ApplyEntry(log[i]).ok()) << "entry " << log[i].seq;
  }
  EXPECT_TRUE(SameState(expected, late.TakeReplicationSnapshot()));
  EXPECT_EQ(late.Stats().backup_bytes, primary.Stats().backup_bytes);
}

INSTANTIATE_TEST_SUITE_P(
    Rules, ShardStoreReplication,
    ::testing::Values(
        Case{"Asgd", UpdateRule::kAsgd}, Case{"DcAsgdConstant", UpdateRule::kDcAsgdConstant},
        Case{"DcAsgdAdaptive", UpdateRule::kDcAsgdAdaptive},
        Case{"DcAsgdAdaptiveBfloat16", UpdateRule::kDcAsgdAdaptive, SyncMode::kAsync,
             Dtype::kBfloat16},
        Case{"DcAsgdConstantFloat16", UpdateRule::kDcAsgdConstant, SyncMode::kAsync,
             Dtype::kFloat16},
        Case{"DcAsgdAdaptiveMomentumWeightDecay", UpdateRule::kDcAsgdAdaptive, SyncMode::kAsync,
             Dtype::kFloat32, 0.9f, 1e-3f},
        Case{"AsgdGapAwareStalenessAware", UpdateRule::kAsgd, SyncMode::kAsync, Dtype::kBfloat16, 0,
             0, true, true},
        Case{"SsgdMomentum", UpdateRule::kAsgd, SyncMode::kSsgd, Dtype::kFloat32, 0.9f, 1e-3f},
        Case{"SspDcAsgdAdaptive", UpdateRule::kDcAsgdAdaptive, SyncMode::kSsp, Dtype::kFloat16}),
    [](const ::testing::TestParamInfo<Case>& param) { return param.param.name; });

// Applying refuses what would make the copy differ, and changes nothing.
TEST(ShardStoreReplicationApply, GapsAndUnknownsAreRefusedWithNothingApplied) {
  ManualClock clock;
  ShardConfig config = ConfigFor(Case{"", UpdateRule::kDcAsgdAdaptive});
  RecordingSink sink;
  ShardStore primary(config, &clock);
  primary.SetLogSink(&sink);
  ASSERT_TRUE(primary.Declare(Specs()).ok());
  ShardStore replica(config, &clock);
  std::vector<LogEntry> log = sink.entries();
  ASSERT_EQ(log.size(), 1u);

  LogEntry gap = log[0];
  gap.seq = 2;
  absl::Status s = replica.ApplyEntry(gap);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_EQ(replica.ListTensors().size(), 0u);
  ASSERT_TRUE(replica.ApplyEntry(log[0]).ok());
  EXPECT_EQ(replica.ListTensors().size(), 2u);
  s = replica.ApplyEntry(log[0]);  // again: a gap backwards
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;

  LogPush push;
  push.worker_id = 77;
  push.version = 1;
  push.gradients = {GradientChunk{"w", 0, Bytes(std::vector<float>(8, 1.0f))}};
  LogEntry unknown_chunk{2, push};
  std::get<LogPush>(unknown_chunk.op).gradients[0].tensor = "nope";
  s = replica.ApplyEntry(unknown_chunk);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
  LogEntry wrong_version{2, push};
  std::get<LogPush>(wrong_version.op).version = 5;
  s = replica.ApplyEntry(wrong_version);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_EQ(replica.last_seq(), 1u);
  EXPECT_EQ(replica.version(), 0u);

  LogEntry leave{2, LogLeaseEnd{{77}, LogLeaseEnd::Reason::kLeave}};
  s = replica.ApplyEntry(leave);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_EQ(replica.last_seq(), 1u);

  // A snapshot loads only into a fresh store.
  s = replica.LoadReplicationSnapshot(primary.TakeReplicationSnapshot());
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
}

// A repeated PushPull step after a pull makes the step's base the newest
// again on the primary (ShardStore::Replay); the Replay entry does the same
// on the replica, so both keep the same bases in the same order, and the
// pipelined push after it applies on both alike.
TEST(ShardStoreReplicationApply, ARepeatedStepRenewsTheSameBaseOnTheReplica) {
  ManualClock clock;
  const ShardConfig config = ConfigFor(Case{"", UpdateRule::kDcAsgdConstant});
  RecordingSink sink;
  ShardStore primary(config, &clock);
  primary.SetLogSink(&sink);
  ASSERT_TRUE(primary.Declare(Specs()).ok());
  const WorkerId worker = primary.Join("piped", /*pipeline_depth=*/1)->worker_id;
  auto pull = [&] {
    absl::StatusOr<PullPlan> plan = primary.PlanPull(worker, {});
    ASSERT_TRUE(plan.ok()) << plan.status();
    std::string values;
    for (const ChunkRef& ref : plan->chunks) primary.ReadChunk(*plan, ref, &values);
  };
  auto push = [&](uint64_t step, uint64_t base) {
    absl::StatusOr<PushResult> out = absl::UnknownError("not answered");
    primary.SubmitPush(
        worker, step,
        {GradientChunk{"w", 1, Bytes(std::vector<float>(8, 0.25f * step))},
         GradientChunk{"b", 0, Bytes({1, -1, 0.5f, 2})}},
        /*pull_after=*/true, [&out](absl::StatusOr<PushResult> r) { out = std::move(r); },
        [](AppliedChunk) {}, base);
    return out;
  };
  pull();
  ASSERT_TRUE(push(1, 0).ok());
  pull();
  absl::StatusOr<PushResult> again = push(1, 0);
  ASSERT_TRUE(again.ok()) << again.status();
  ASSERT_TRUE(again->replayed);
  const std::vector<LogEntry> log = sink.entries();
  const auto* replay = std::get_if<LogReplay>(&log.back().op);
  ASSERT_NE(replay, nullptr) << LogEntryKindName(log.back().op);
  EXPECT_EQ(replay->worker_id, worker);
  EXPECT_EQ(replay->step, 1u);
  ASSERT_EQ(replay->chunks.size(), 2u);
  EXPECT_EQ(replay->chunks[0].tensor, "w");
  EXPECT_EQ(replay->chunks[0].chunk_index, 1u);

  ShardStore replica(config, &clock);
  for (const LogEntry& entry : log) {
    ASSERT_TRUE(replica.ApplyEntry(entry).ok()) << entry.seq << " " << LogEntryKindName(entry.op);
  }
  const ReplicationSnapshot renewed = primary.TakeReplicationSnapshot();
  ASSERT_EQ(renewed.header.workers.size(), 1u);
  ASSERT_EQ(renewed.header.workers[0].bases.size(), 2u);
  EXPECT_EQ(renewed.header.workers[0].bases.back().step, 1u) << "step 1's base is the newest";
  EXPECT_TRUE(SameState(renewed, replica.TakeReplicationSnapshot()));

  // The pipelined pushes after it name step 1 on both members.
  ASSERT_TRUE(push(2, 1).ok());
  ASSERT_TRUE(push(3, 1).ok());
  const std::vector<LogEntry> rest = sink.entries();
  for (size_t i = log.size(); i < rest.size(); ++i) {
    ASSERT_TRUE(replica.ApplyEntry(rest[i]).ok()) << rest[i].seq;
  }
  EXPECT_TRUE(SameState(primary.TakeReplicationSnapshot(), replica.TakeReplicationSnapshot()));

  // A Replay for a worker the replica does not know: the copies diverged.
  absl::Status s = replica.ApplyEntry(LogEntry{rest.size() + 1, LogReplay{77, 1, {{"w", 1}}}});
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_THAT(std::string(s.message()), ::testing::HasSubstr("diverged"));
  EXPECT_EQ(replica.last_seq(), rest.size());
}

// SnapshotChunk entries (a streamed catch-up) replace a chunk's state and
// backups at their turn; one that does not fit is refused with nothing
// applied.
TEST(ShardStoreReplicationApply, CoordinatorStateTakesASeqAndTouchesNothing) {
  ManualClock clock;
  ShardConfig config = ConfigFor(Case{"", UpdateRule::kDcAsgdAdaptive});
  RecordingSink sink;
  ShardStore primary(config, &clock);
  primary.SetLogSink(&sink);
  ASSERT_TRUE(primary.Declare(Specs()).ok());
  EXPECT_EQ(primary.SequenceCoordinatorState("schedule text"), 2u);
  EXPECT_EQ(primary.last_seq(), 2u);
  EXPECT_EQ(primary.version(), 0u);
  std::vector<LogEntry> log = sink.entries();
  ASSERT_EQ(log.size(), 2u);
  EXPECT_EQ(log[1].seq, 2u);
  const auto* state = std::get_if<LogCoordinatorState>(&log[1].op);
  ASSERT_NE(state, nullptr);
  EXPECT_EQ(state->state, "schedule text");
  ShardStore replica(config, &clock);
  for (const LogEntry& entry : log) ASSERT_TRUE(replica.ApplyEntry(entry).ok());
  EXPECT_EQ(replica.last_seq(), 2u);
  EXPECT_EQ(replica.version(), 0u);
}

TEST(ShardStoreReplicationApply, SnapshotChunkEntriesCarryChunkStateAndBackups) {
  ManualClock clock;
  const ShardConfig config = ConfigFor(Case{"", UpdateRule::kDcAsgdAdaptive});
  RecordingSink sink;
  ShardStore primary(config, &clock);
  primary.SetLogSink(&sink);
  ASSERT_TRUE(primary.Declare(Specs()).ok());
  absl::StatusOr<JoinResult> a = primary.Join("a", 1);
  ASSERT_TRUE(a.ok());
  ShardStore replica(config, &clock);
  for (const LogEntry& entry : sink.entries()) ASSERT_TRUE(replica.ApplyEntry(entry).ok());
  // The primary moves on; the replica gets the chunks' new state as copies
  // instead of the entries (the worker table is the same: a pull recorded
  // nothing the copies do not carry but the pull version, recorded below).
  absl::StatusOr<PullPlan> plan = primary.PlanPull(a->worker_id, {});
  ASSERT_TRUE(plan.ok());
  std::string values;
  for (const ChunkRef& ref : plan->chunks) primary.ReadChunk(*plan, ref, &values);
  const ReplicationSnapshot want = primary.TakeReplicationSnapshot();
  uint64_t seq = replica.last_seq();
  ASSERT_TRUE(replica.ApplyEntry(LogEntry{++seq, LogRecordPull{a->worker_id, 0}}).ok());
  EXPECT_EQ(replica.Stats().backup_bytes, 0u);

  LogSnapshotChunk bad = want.chunks[0];
  bad.backups[0].values.resize(2);
  absl::Status s = replica.ApplyEntry(LogEntry{seq + 1, bad});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  bad = want.chunks[0];
  bad.backups[0].worker_id = 12345;
  s = replica.ApplyEntry(LogEntry{seq + 1, bad});
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_EQ(replica.last_seq(), seq);

  for (const LogSnapshotChunk& copy : want.chunks) {
    // The backups in a second part, as a large chunk would come.
    LogSnapshotChunk first = copy;
    first.backups.clear();
    first.last_part = false;
    LogSnapshotChunk second;
    second.tensor = copy.tensor;
    second.state.index = copy.state.index;
    second.part = 1;
    second.backups = copy.backups;
    ASSERT_TRUE(replica.ApplyEntry(LogEntry{++seq, first}).ok());
    ASSERT_TRUE(replica.ApplyEntry(LogEntry{++seq, second}).ok());
  }
  ReplicationSnapshot got = replica.TakeReplicationSnapshot();
  got.header.seq = want.header.seq;  // the copies took seqs of their own
  EXPECT_TRUE(SameState(want, got));
  EXPECT_EQ(replica.Stats().backup_bytes, primary.Stats().backup_bytes);
  EXPECT_GT(replica.Stats().backup_bytes, 0u);
}

// A single store with no sink numbers its changes all the same, and a
// snapshot with backups and the worker table loads into a fresh store as an
// exact copy.
TEST(ShardStoreReplicationApply, SnapshotWithBackupsLoadsBitIdentically) {
  ManualClock clock;
  for (Dtype dtype : {Dtype::kFloat32, Dtype::kBfloat16, Dtype::kFloat16}) {
    Case c{"", UpdateRule::kDcAsgdAdaptive, SyncMode::kAsync, dtype};
    const ShardConfig config = ConfigFor(c);
    ShardStore primary(config, &clock);
    ASSERT_TRUE(primary.Declare(Specs()).ok());
    absl::StatusOr<JoinResult> a = primary.Join("a", 1);
    absl::StatusOr<JoinResult> b = primary.Join("b");
    ASSERT_TRUE(a.ok() && b.ok());
    for (WorkerId w : {a->worker_id, b->worker_id}) {
      absl::StatusOr<PullPlan> plan = primary.PlanPull(w, {});
      ASSERT_TRUE(plan.ok());
      std::string values;
      for (const ChunkRef& ref : plan->chunks) primary.ReadChunk(*plan, ref, &values);
    }
    bool ok = false;
    primary.SubmitPush(
        a->worker_id, 1, {GradientChunk{"w", 1, Bytes(std::vector<float>(8, 0.25f))}}, true,
        [&ok](absl::StatusOr<PushResult> r) { ok = r.ok(); }, [](AppliedChunk) {});
    ASSERT_TRUE(ok);
    EXPECT_GT(primary.last_seq(), 4u);

    const ReplicationSnapshot snapshot = primary.TakeReplicationSnapshot();
    EXPECT_EQ(snapshot.header.workers.size(), 2u);
    EXPECT_EQ(snapshot.header.chunk_count, snapshot.chunks.size());
    size_t backups = 0;
    for (const LogSnapshotChunk& chunk : snapshot.chunks) backups += chunk.backups.size();
    EXPECT_EQ(backups, 2 * snapshot.chunks.size() + 1);  // a's ring holds two of chunk w/1
    ShardStore copy(config, &clock);
    ASSERT_TRUE(copy.LoadReplicationSnapshot(snapshot).ok());
    EXPECT_TRUE(SameState(snapshot, copy.TakeReplicationSnapshot()));
    EXPECT_EQ(copy.Stats().backup_bytes, primary.Stats().backup_bytes);
    // The copy's workers are the primary's: same sessions, so the same
    // requests authenticate.
    EXPECT_TRUE(copy.Authenticate(a->worker_id, a->session).ok());

    // A backup of the wrong length is refused and changes nothing.
    ReplicationSnapshot bad = snapshot;
    bad.chunks[0].backups[0].values.pop_back();
    ShardStore fresh(config, &clock);
    absl::Status s = fresh.LoadReplicationSnapshot(bad);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_EQ(fresh.ListTensors().size(), 0u);
    EXPECT_EQ(fresh.Stats().active_workers, 0u);
  }
}

}  // namespace
}  // namespace dcasgd
