// The sync policy alone, with a recording Applier in place of the store and
// a real WorkerRegistry: when pushes are applied, held, released, rejected.
#include "core/sync_policy.h"

#include <optional>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dcasgd {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

// Applies nothing: records the order of applied workers and, like the store,
// advances the worker's clock in the registry.
class RecordingApplier final : public SyncPolicy::Applier {
 public:
  explicit RecordingApplier(WorkerRegistry* registry) : registry_(registry) {}
  PushResult Apply(HeldPush& push) override {
    applied.push_back(push.worker);
    registry_->RecordApplied(push.worker, ++version, false);
    PushResult r;
    r.version = version;
    return r;
  }
  std::vector<PushResult> ApplyRound(std::vector<std::unique_ptr<HeldPush>>& round) override {
    ++version;
    std::vector<WorkerId> workers;
    for (const auto& p : round) {
      workers.push_back(p->worker);
      registry_->RecordApplied(p->worker, version, false);
    }
    rounds.push_back(workers);
    PushResult r;
    r.version = version;
    return std::vector<PushResult>(round.size(), r);
  }

  uint64_t version = 0;
  std::vector<WorkerId> applied;
  std::vector<std::vector<WorkerId>> rounds;

 private:
  WorkerRegistry* registry_;
};

class SyncPolicyTest : public ::testing::Test {
 protected:
  SyncPolicyTest() : registry_(absl::Seconds(10), 8, 0, &clock_, RandomSource::Secure()) {}

  WorkerId Join(const std::string& name) {
    std::vector<WorkerId> ended;
    return registry_.Join(name, applier_.version, &ended)->worker_id;
  }
  // Submits a push of `worker`; its outcome lands in the returned slot.
  std::shared_ptr<std::optional<absl::StatusOr<PushResult>>> Submit(SyncPolicy& policy,
                                                                    WorkerId worker) {
    auto out = std::make_shared<std::optional<absl::StatusOr<PushResult>>>();
    auto push = std::make_unique<HeldPush>();
    push->worker = worker;
    push->done = [out](absl::StatusOr<PushResult> r) { *out = std::move(r); };
    if (policy.holds_pushes()) {
      policy.Hold(std::move(push));
    } else {
      policy.ApplyNow(*push, applier_.version);
    }
    return out;
  }

  ManualClock clock_;
  WorkerRegistry registry_;
  RecordingApplier applier_{&registry_};
};

TEST_F(SyncPolicyTest, AsyncAppliesAtOnceUnlessTooStale) {
  SyncConfig config;
  config.max_staleness = 1;
  SyncPolicy policy(config, &registry_, &applier_);
  const WorkerId a = Join("a");
  const WorkerId b = Join("b");
  ASSERT_TRUE(Submit(policy, a)->value().ok());
  ASSERT_TRUE(Submit(policy, a)->value().ok());  // b is now 2 versions behind
  auto stale = Submit(policy, b);
  ASSERT_TRUE(stale->has_value());
  EXPECT_EQ(stale->value().status().code(), absl::StatusCode::kAborted);
  EXPECT_THAT(stale->value().status().message(), HasSubstr("2 versions stale"));
  EXPECT_THAT(applier_.applied, ElementsAre(a, a));
}

TEST_F(SyncPolicyTest, SspHoldsAWorkerAheadUntilTheSlowestCatchesUp) {
  SyncConfig config;
  config.mode = SyncMode::kSsp;
  config.ssp_bound = 1;
  SyncPolicy policy(config, &registry_, &applier_);
  const WorkerId fast = Join("fast");
  const WorkerId slow = Join("slow");
  ASSERT_TRUE(Submit(policy, fast)->has_value());  // clock 0 -> 1
  ASSERT_TRUE(Submit(policy, fast)->has_value());  // 1 <= 0 + 1: clock 1 -> 2
  auto held = Submit(policy, fast);                // 2 > 0 + 1: waits
  EXPECT_FALSE(held->has_value());
  // One waiting push per worker.
  auto second = Submit(policy, fast);
  ASSERT_TRUE(second->has_value());
  EXPECT_EQ(second->value().status().code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(Submit(policy, slow)->has_value());  // slow 0 -> 1 releases fast
  ASSERT_TRUE(held->has_value());
  EXPECT_TRUE(held->value().ok());
  EXPECT_THAT(applier_.applied, ElementsAre(fast, fast, slow, fast));
}

TEST_F(SyncPolicyTest, SspRejectPolicyAbortsInsteadOfWaiting) {
  SyncConfig config;
  config.mode = SyncMode::kSsp;
  config.ssp_bound = 0;
  config.ssp_policy = SspPolicy::kReject;
  SyncPolicy policy(config, &registry_, &applier_);
  const WorkerId fast = Join("fast");
  Join("slow");
  ASSERT_TRUE(Submit(policy, fast)->value().ok());
  auto rejected = Submit(policy, fast);
  ASSERT_TRUE(rejected->has_value());
  EXPECT_EQ(rejected->value().status().code(), absl::StatusCode::kAborted);
  EXPECT_THAT(rejected->value().status().message(), HasSubstr("SSP bound"));
}

TEST_F(SyncPolicyTest, SsgdRoundWaitsForEveryLiveWorkerAndNotForOneThatLeft) {
  SyncConfig config;
  config.mode = SyncMode::kSsgd;
  SyncPolicy policy(config, &registry_, &applier_);
  const WorkerId a = Join("a");
  const WorkerId b = Join("b");
  const WorkerId c = Join("c");
  auto ra = Submit(policy, a);
  auto rb = Submit(policy, b);
  EXPECT_FALSE(ra->has_value());
  EXPECT_THAT(applier_.rounds, IsEmpty());
  ASSERT_TRUE(registry_.Leave(c).ok());
  policy.Release();  // what the store does after a membership change
  ASSERT_TRUE(ra->has_value() && rb->has_value());
  EXPECT_EQ(ra->value()->version, 1u);
  EXPECT_EQ(rb->value()->version, 1u);
  ASSERT_EQ(applier_.rounds.size(), 1u);
  EXPECT_THAT(applier_.rounds[0], ElementsAre(a, b));
}

TEST_F(SyncPolicyTest, AWaiterWhoseWorkerLeftFailsAndCancelFailsTheRest) {
  SyncConfig config;
  config.mode = SyncMode::kSsp;
  config.ssp_bound = 0;
  SyncPolicy policy(config, &registry_, &applier_);
  const WorkerId fast = Join("fast");
  const WorkerId other = Join("other");
  Join("slow");
  ASSERT_TRUE(Submit(policy, fast)->value().ok());
  ASSERT_TRUE(Submit(policy, other)->value().ok());
  auto left = Submit(policy, fast);
  auto waiting = Submit(policy, other);
  EXPECT_FALSE(left->has_value());
  ASSERT_TRUE(registry_.Leave(fast).ok());
  policy.Release();
  ASSERT_TRUE(left->has_value());
  EXPECT_EQ(left->value().status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(left->value().status().message(), HasSubstr("Join again"));
  EXPECT_FALSE(waiting->has_value());
  policy.CancelWaiting();
  ASSERT_TRUE(waiting->has_value());
  EXPECT_EQ(waiting->value().status().code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace dcasgd
