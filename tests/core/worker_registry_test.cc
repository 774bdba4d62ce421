#include "core/worker_registry.h"

#include <algorithm>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dcasgd {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::UnorderedElementsAre;

// Hands out ids from a fixed list (then repeats the last), so collisions can
// be forced.
class ListRandom final : public RandomSource {
 public:
  explicit ListRandom(std::vector<uint64_t> values) : values_(std::move(values)) {}
  uint64_t Next64() override {
    const uint64_t v = values_[std::min(next_, values_.size() - 1)];
    ++next_;
    return v;
  }

 private:
  std::vector<uint64_t> values_;
  size_t next_ = 0;
};

class WorkerRegistryTest : public ::testing::Test {
 protected:
  WorkerRegistry Make(uint32_t max_workers, std::vector<uint64_t> ids) {
    random_ = std::make_unique<ListRandom>(std::move(ids));
    return WorkerRegistry(absl::Seconds(10), max_workers, /*shard_index=*/3, &clock_,
                          random_.get());
  }
  ManualClock clock_;
  std::unique_ptr<ListRandom> random_;
};

TEST_F(WorkerRegistryTest, JoinGivesRandomNonZeroUniqueIdsAndTheVersionAsPull) {
  // 0 is never an id; an id in use is drawn again.
  random_ = std::make_unique<ListRandom>(std::vector<uint64_t>{0, 7, 7, 9});
  WorkerRegistry registry(absl::Seconds(10), 4, 0, &clock_, random_.get());
  std::vector<WorkerId> ended;
  absl::StatusOr<JoinResult> a = registry.Join("a", 5, &ended);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->worker_id, 7u);
  EXPECT_EQ(a->lease, absl::Seconds(10));
  absl::StatusOr<JoinResult> b = registry.Join("b", 6, &ended);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->worker_id, 9u);
  EXPECT_THAT(ended, IsEmpty());
  EXPECT_EQ(registry.PullVersion(7), 5u);
  EXPECT_EQ(registry.PullVersion(9), 6u);
  EXPECT_EQ(registry.size(), 2u);
  EXPECT_EQ(registry.Join("", 0, &ended).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(WorkerRegistry, JoinOfTheSameNameReplacesAndEndsTheOldLease) {
  ManualClock clock;
  ListRandom random({1, 2});
  WorkerRegistry registry(absl::Seconds(10), 4, 0, &clock, &random);
  std::vector<WorkerId> ended;
  const WorkerId first = registry.Join("a", 0, &ended)->worker_id;
  std::shared_ptr<WorkerLiveness> liveness = registry.Liveness(first);
  ASSERT_NE(liveness, nullptr);
  const WorkerId second = registry.Join("a", 0, &ended)->worker_id;
  EXPECT_NE(first, second);
  EXPECT_THAT(ended, ElementsAre(first));
  EXPECT_FALSE(liveness->live.load()) << "a pull still streaming must not write a backup";
  EXPECT_EQ(registry.Check(first).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(registry.Check(second).ok());
  EXPECT_EQ(registry.Liveness(first), nullptr);
}

TEST_F(WorkerRegistryTest, MaxWorkersIsEnforcedAndExpiredLeasesMakeRoom) {
  WorkerRegistry registry = Make(2, {1, 2, 3, 4});
  std::vector<WorkerId> ended;
  ASSERT_TRUE(registry.Join("a", 0, &ended).ok());
  clock_.Advance(absl::Seconds(6));
  ASSERT_TRUE(registry.Join("b", 0, &ended).ok());
  absl::StatusOr<JoinResult> c = registry.Join("c", 0, &ended);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(c.status().message(), HasSubstr("shard 3 already has 2 workers"));
  EXPECT_THAT(ended, IsEmpty()) << "a refused join ends nothing while all leases live";
  // a's lease (10 s) has expired; the reaper has not run: c takes its place.
  clock_.Advance(absl::Seconds(5));
  c = registry.Join("c", 0, &ended);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_THAT(ended, ElementsAre(1u));
  EXPECT_EQ(registry.size(), 2u);
}

TEST_F(WorkerRegistryTest, HeartbeatRenewsAndExpiryEndsLeases) {
  WorkerRegistry registry = Make(4, {1, 2});
  std::vector<WorkerId> ended;
  ASSERT_TRUE(registry.Join("a", 0, &ended).ok());
  ASSERT_TRUE(registry.Join("b", 0, &ended).ok());
  clock_.Advance(absl::Seconds(8));
  ASSERT_TRUE(registry.Heartbeat(1).ok());
  clock_.Advance(absl::Seconds(3));  // b: 11 s since its join; a: 3 s since
  EXPECT_EQ(registry.Check(2).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(registry.Heartbeat(2).code(), absl::StatusCode::kFailedPrecondition);
  std::shared_ptr<WorkerLiveness> b = registry.Liveness(2);
  EXPECT_THAT(registry.ExpireLeases(), ElementsAre(2u));
  EXPECT_FALSE(b->live.load());
  EXPECT_THAT(registry.ExpireLeases(), IsEmpty());
  EXPECT_TRUE(registry.Check(1).ok());
  EXPECT_TRUE(registry.Leave(1).ok());
  EXPECT_EQ(registry.Leave(1).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(registry.size(), 0u);
}

TEST_F(WorkerRegistryTest, PullVersionsAndSspClocks) {
  WorkerRegistry registry = Make(4, {1, 2, 3});
  std::vector<WorkerId> ended;
  ASSERT_TRUE(registry.Join("a", 0, &ended).ok());
  ASSERT_TRUE(registry.Join("b", 0, &ended).ok());
  uint64_t pull = 99;
  registry.RecordPull(1, 4);
  ASSERT_TRUE(registry.Check(1, &pull).ok());
  EXPECT_EQ(pull, 4u);
  registry.RecordApplied(1, 5, /*pulled=*/false);
  EXPECT_EQ(registry.PullVersion(1), 4u) << "a Push is not a pull";
  registry.RecordApplied(1, 6, /*pulled=*/true);
  EXPECT_EQ(registry.PullVersion(1), 6u) << "a PushPull is";
  registry.RecordApplied(2, 7, false);
  absl::flat_hash_map<WorkerId, uint64_t> clocks = registry.Clocks();
  EXPECT_EQ(clocks[1], 2u);
  EXPECT_EQ(clocks[2], 1u);
  // A newcomer starts at the slowest clock, not at zero.
  ASSERT_TRUE(registry.Join("c", 7, &ended).ok());
  EXPECT_EQ(registry.Clocks()[3], 1u);
  // Unknown workers: nothing recorded, pull version 0.
  registry.RecordPull(42, 9);
  registry.RecordApplied(42, 9, true);
  EXPECT_EQ(registry.PullVersion(42), 0u);
  EXPECT_EQ(registry.Clocks().size(), 3u);
  EXPECT_TRUE(registry.All([](WorkerId id) { return id <= 3; }));
  EXPECT_FALSE(registry.All([](WorkerId id) { return id != 2; }));
}

TEST_F(WorkerRegistryTest, StepsAreClaimedInOrderAndRepeatsReplayed) {
  WorkerRegistry registry = Make(4, {1});
  std::vector<WorkerId> ended;
  ASSERT_TRUE(registry.Join("a", 0, &ended).ok());
  absl::StatusOr<StepClaim> claim = registry.ClaimStep(1, 1);
  ASSERT_TRUE(claim.ok());
  EXPECT_EQ(claim->outcome, StepClaim::Outcome::kApply);
  // While step 1 is being applied: itself and the next step must wait.
  EXPECT_EQ(registry.ClaimStep(1, 1).status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(registry.ClaimStep(1, 2).status().code(), absl::StatusCode::kUnavailable);
  registry.FinishStep(1, 1, /*applied=*/true, /*version=*/8, /*staleness=*/3);
  claim = registry.ClaimStep(1, 1);
  ASSERT_TRUE(claim.ok());
  EXPECT_EQ(claim->outcome, StepClaim::Outcome::kReplay);
  EXPECT_EQ(claim->version, 8u);
  EXPECT_EQ(claim->staleness, 3u);
  // A rejected step may be retried.
  ASSERT_EQ(registry.ClaimStep(1, 2)->outcome, StepClaim::Outcome::kApply);
  registry.FinishStep(1, 2, /*applied=*/false, 0, 0);
  ASSERT_EQ(registry.ClaimStep(1, 2)->outcome, StepClaim::Outcome::kApply);
  registry.FinishStep(1, 2, true, 9, 0);
  absl::StatusOr<StepClaim> late = registry.ClaimStep(1, 1);
  EXPECT_EQ(late.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(late.status().message(), HasSubstr("older than its last applied step 2"));
  // An unknown worker's push goes on to validation, which refuses it.
  EXPECT_EQ(registry.ClaimStep(77, 1)->outcome, StepClaim::Outcome::kApply);
}

TEST_F(WorkerRegistryTest, RenewBaseMakesAKeptBaseTheNewest) {
  WorkerRegistry registry = Make(4, {1, 2});
  std::vector<WorkerId> ended;
  ASSERT_TRUE(registry.Join("piped", /*version=*/3, &ended, /*pipeline_depth=*/1).ok());
  registry.RecordApplied(1, 4, /*pulled=*/true, /*step=*/1);
  registry.RecordPull(1, 5);  // kept bases: step 1 (version 4), the pull (5)
  EXPECT_EQ(registry.PullVersion(1), 5u);
  ASSERT_TRUE(registry.RenewBase(1, 1));
  EXPECT_EQ(registry.PullVersion(1), 4u) << "step 1's reply is the newest again";
  registry.RecordApplied(1, 6, true, 2);  // evicts the oldest: the pull
  EXPECT_EQ(*registry.BaseVersion(1, 1), 4u);
  EXPECT_EQ(registry.BaseVersion(1, 0).status().code(), absl::StatusCode::kFailedPrecondition);
  // A base not kept, and a worker of depth 0 (one base): nothing changes.
  ASSERT_TRUE(registry.RenewBase(1, 9));
  EXPECT_EQ(registry.PullVersion(1), 6u);
  ASSERT_TRUE(registry.Join("flat", 7, &ended).ok());
  registry.RecordApplied(2, 8, true, 1);
  registry.RecordPull(2, 9);
  ASSERT_TRUE(registry.RenewBase(2, 1));
  EXPECT_EQ(registry.PullVersion(2), 9u);
  EXPECT_FALSE(registry.RenewBase(42, 1)) << "unknown worker";
}

}  // namespace
}  // namespace dcasgd

namespace dcasgd {
namespace {

TEST(WorkerRegistrySessions, AuthenticateNeedsTheSessionOfThatWorker) {
  ManualClock clock;
  ListRandom random({7, 9, 11});  // ids only: sessions come from the CSPRNG
  WorkerRegistry registry(absl::Seconds(10), 4, 0, &clock, &random);
  std::vector<WorkerId> ended;
  const JoinResult a = *registry.Join("a", 0, &ended);
  const JoinResult b = *registry.Join("b", 0, &ended);
  EXPECT_EQ(a.session.size(), 16u);
  EXPECT_NE(a.session, b.session);
  EXPECT_TRUE(registry.Authenticate(a.worker_id, a.session).ok());
  for (const std::string& forged : {std::string(), b.session, a.session.substr(1)}) {
    const absl::Status refused = registry.Authenticate(a.worker_id, forged);
    EXPECT_EQ(refused.code(), absl::StatusCode::kUnauthenticated) << refused;
    EXPECT_THAT(std::string(refused.message()), ::testing::HasSubstr("worker 7"));
  }
  // Unknown or expired: FAILED_PRECONDITION (re-join), whatever the session.
  EXPECT_EQ(registry.Authenticate(12345, a.session).code(), absl::StatusCode::kFailedPrecondition);
  // A replacing Join ends the old session; the new one works.
  const JoinResult again = *registry.Join("a", 0, &ended);
  EXPECT_NE(again.session, a.session);
  EXPECT_EQ(registry.Authenticate(a.worker_id, a.session).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(registry.Authenticate(again.worker_id, a.session).code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_TRUE(registry.Authenticate(again.worker_id, again.session).ok());
  clock.Advance(absl::Seconds(11));
  EXPECT_EQ(registry.Authenticate(again.worker_id, again.session).code(),
            absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace dcasgd
