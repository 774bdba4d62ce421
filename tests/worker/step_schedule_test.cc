#include "services/worker/step_schedule.h"

#include <map>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dcasgd {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Runs `workers` threads that each take `turns_each` turns, reporting as
// staleness the pushes since their previous turn (what a shard would see),
// and returns the order in which slots pushed.
std::vector<int> RunTurns(StepSchedule* schedule, int workers, int turns_each) {
  absl::Mutex mu;
  std::vector<int> order;
  std::vector<uint64_t> pulled(static_cast<size_t>(workers), 0);
  std::vector<std::thread> threads;
  for (int slot = 0; slot < workers; ++slot) {
    threads.emplace_back([&, slot] {
      for (int t = 0; t < turns_each; ++t) {
        ASSERT_TRUE(schedule->AwaitTurn(slot));
        uint64_t staleness = 0;
        {
          absl::MutexLock lock(&mu);
          staleness = order.size() - pulled[static_cast<size_t>(slot)];
          order.push_back(slot);
          pulled[static_cast<size_t>(slot)] = order.size();
        }
        schedule->EndTurn(slot, /*pushed=*/true, staleness);
      }
      schedule->Exit(slot);
    });
  }
  for (std::thread& t : threads) t.join();
  return order;
}

TEST(StepSchedule, RoundRobinGivesEveryPushAfterTheFirstRoundStalenessMMinusOne) {
  constexpr int kWorkers = 5;
  auto schedule = StepSchedule::Create("round-robin", kWorkers, 1);
  ASSERT_TRUE(schedule.ok()) << schedule.status();
  const std::vector<int> order = RunTurns(schedule->get(), kWorkers, 20);
  ASSERT_EQ(order.size(), 100u);
  for (size_t i = 0; i < order.size(); ++i) EXPECT_EQ(order[i], static_cast<int>(i % kWorkers));
  // The first round: 0, 1, ..., M-1 (everyone pulled version 0); then M-1.
  const std::map<uint64_t, uint64_t> expected = {{0, 1}, {1, 1}, {2, 1}, {3, 1}, {4, 96}};
  EXPECT_EQ((*schedule)->staleness_histogram(), expected);
  EXPECT_EQ((*schedule)->pushes(), 100u);
}

TEST(StepSchedule, RandomStalenessHasMeanNearMMinusOneAndATail) {
  constexpr int kWorkers = 8;
  auto schedule = StepSchedule::Create("random", kWorkers, 7);
  ASSERT_TRUE(schedule.ok());
  // Each thread stops after its own count; give them enough that the
  // uniform draws dominate (the last few turns go to fewer slots).
  RunTurns(schedule->get(), kWorkers, 400);
  double sum = 0, count = 0;
  uint64_t max = 0;
  for (const auto& [staleness, n] : (*schedule)->staleness_histogram()) {
    sum += static_cast<double>(staleness * n);
    count += static_cast<double>(n);
    max = std::max(max, staleness);
  }
  EXPECT_NEAR(sum / count, kWorkers - 1, 1.0);
  EXPECT_GT(max, 3u * (kWorkers - 1)) << "geometric staleness has a long tail";
}

TEST(StepSchedule, SlowWorkersPushFTimesLessOftenAndWithLargerStaleness) {
  // Slots 3 and 7 are 4x slower than the others.
  auto schedule = StepSchedule::Create("slow:4", 8, 1);
  ASSERT_TRUE(schedule.ok());
  EXPECT_EQ((*schedule)->name(), "slow:4:4");
  absl::Mutex mu;
  std::vector<int> order;
  std::vector<std::thread> threads;
  // Everyone pushes until 400 pushes are done.
  for (int slot = 0; slot < 8; ++slot) {
    threads.emplace_back([&, slot] {
      while ((*schedule)->AwaitTurn(slot)) {
        bool done = false;
        {
          absl::MutexLock lock(&mu);
          order.push_back(slot);
          done = order.size() >= 400;
        }
        (*schedule)->EndTurn(slot, true, 0);
        if (done) (*schedule)->Stop();
      }
    });
  }
  for (std::thread& t : threads) t.join();
  std::map<int, int> per_slot;
  for (size_t i = 0; i < 400; ++i) ++per_slot[order[i]];
  // In simulated time T, a fast slot pushes T times and a slow one T/4.
  EXPECT_NEAR(per_slot[0], 4 * per_slot[3], 4);
  EXPECT_NEAR(per_slot[3], per_slot[7], 1);
  EXPECT_NEAR(per_slot[1], per_slot[2], 1);
}

TEST(StepSchedule, AWorkerThatStepsOutIsSkippedAndCanComeBack) {
  auto schedule = StepSchedule::Create("round-robin", 3, 1);
  ASSERT_TRUE(schedule.ok());
  StepSchedule& s = **schedule;
  ASSERT_TRUE(s.AwaitTurn(0));
  s.EndTurn(0, true, 0);
  s.Exit(1);  // waiting for a data lease: its turn passes to slot 2
  ASSERT_TRUE(s.AwaitTurn(2));
  s.EndTurn(2, true, 1);
  ASSERT_TRUE(s.AwaitTurn(0));
  s.EndTurn(0, true, 1);
  // Back with a lease: in the cycle again (0, 1, 2), after slot 2 whose
  // turn it already is.
  s.Enter(1);
  ASSERT_TRUE(s.AwaitTurn(2));
  s.EndTurn(2, true, 1);
  ASSERT_TRUE(s.AwaitTurn(0));
  s.EndTurn(0, true, 1);
  ASSERT_TRUE(s.AwaitTurn(1));
  s.EndTurn(1, true, 5);
  EXPECT_EQ(s.pushes(), 6u);
}

TEST(StepSchedule, AFailedPushKeepsTheTurnWithTheSameWorker) {
  auto schedule = StepSchedule::Create("round-robin", 2, 1);
  ASSERT_TRUE(schedule.ok());
  StepSchedule& s = **schedule;
  ASSERT_TRUE(s.AwaitTurn(0));
  s.EndTurn(0, /*pushed=*/false, 0);
  ASSERT_TRUE(s.AwaitTurn(0));  // it pulls, recomputes and pushes again
  s.EndTurn(0, true, 0);
  ASSERT_TRUE(s.AwaitTurn(1));
  s.EndTurn(1, true, 1);
  EXPECT_EQ(s.pushes(), 2u);
}

TEST(StepSchedule, StopReleasesWaitersWithFalse) {
  auto schedule = StepSchedule::Create("round-robin", 2, 1);
  ASSERT_TRUE(schedule.ok());
  // Slot 0's turn is never taken, so slot 1 waits until Stop.
  std::thread waiter([&] { EXPECT_FALSE((*schedule)->AwaitTurn(1)); });
  (*schedule)->Stop();
  waiter.join();
  EXPECT_FALSE((*schedule)->AwaitTurn(0));
}

TEST(StepSchedule, OnPushRunsInsideTheTurnWithThePushCount) {
  auto schedule = StepSchedule::Create("round-robin", 2, 1);
  ASSERT_TRUE(schedule.ok());
  std::vector<uint64_t> seen;
  (*schedule)->set_on_push([&](uint64_t pushes) { seen.push_back(pushes); });
  RunTurns(schedule->get(), 2, 2);
  EXPECT_THAT(seen, ElementsAre(1, 2, 3, 4));
}

TEST(StepSchedule, BadSpecsAreInvalidArgumentNamingTheForms) {
  for (const char* spec : {"", "rr", "slow", "slow:1", "slow:x", "slow:4:0", "slow:4:2:1"}) {
    auto schedule = StepSchedule::Create(spec, 4, 1);
    ASSERT_FALSE(schedule.ok()) << spec;
    EXPECT_EQ(schedule.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(schedule.status().message(), HasSubstr("round-robin, random or slow:K[:F]"));
  }
  EXPECT_FALSE(StepSchedule::Create("random", 0, 1).ok());
  EXPECT_TRUE(StepSchedule::Create("slow:2:3", 4, 1).ok());
}

}  // namespace
}  // namespace dcasgd
