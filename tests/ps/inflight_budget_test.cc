#include "services/ps/inflight_budget.h"

#include <vector>

#include "gtest/gtest.h"

namespace dcasgd {
namespace {

TEST(InflightBudget, TakesWhatFitsAndQueuesTheRestInOrder) {
  InflightBudget budget(100);
  std::vector<int> granted;
  EXPECT_EQ(budget.AcquireOrWait(60, [&] { granted.push_back(0); }), 0u) << "fits: taken now";
  EXPECT_EQ(budget.in_use(), 60u);
  const auto big = budget.AcquireOrWait(50, [&] { granted.push_back(1); });
  EXPECT_NE(big, 0u);
  // A small request that would fit waits behind the large one (no starvation).
  const auto small = budget.AcquireOrWait(10, [&] { granted.push_back(2); });
  EXPECT_NE(small, 0u);
  EXPECT_TRUE(granted.empty());
  budget.Release(60);
  EXPECT_EQ(granted, (std::vector<int>{1, 2}));
  EXPECT_EQ(budget.in_use(), 60u);
  EXPECT_FALSE(budget.Cancel(big)) << "already granted";
  budget.Release(50);
  budget.Release(10);
  EXPECT_EQ(budget.in_use(), 0u);
}

TEST(InflightBudget, CancelWithdrawsAWaiterAndLetsOthersThrough) {
  InflightBudget budget(100);
  EXPECT_EQ(budget.AcquireOrWait(90, [] {}), 0u);
  bool big_granted = false, small_granted = false;
  const auto big = budget.AcquireOrWait(100, [&] { big_granted = true; });
  const auto small = budget.AcquireOrWait(10, [&] { small_granted = true; });
  EXPECT_FALSE(small_granted);
  EXPECT_TRUE(budget.Cancel(big)) << "still queued";
  EXPECT_FALSE(big_granted);
  EXPECT_TRUE(small_granted) << "no longer behind the withdrawn waiter";
  EXPECT_FALSE(budget.Cancel(small));
  EXPECT_EQ(budget.in_use(), 100u);
}

TEST(InflightBudget, AWholeBudgetRequestWaitsForEverything) {
  InflightBudget budget(64);
  EXPECT_EQ(budget.AcquireOrWait(1, [] {}), 0u);
  bool granted = false;
  EXPECT_NE(budget.AcquireOrWait(64, [&] { granted = true; }), 0u);
  budget.Release(1);
  EXPECT_TRUE(granted);
  EXPECT_EQ(budget.in_use(), 64u);
}

TEST(InflightBudget, IdleAfterReleaseOncePerBurstWhenNothingIsInFlight) {
  InflightBudget budget(100);
  uint64_t mark = 0;
  EXPECT_FALSE(budget.IdleAfterRelease(&mark)) << "nothing was ever released";
  EXPECT_EQ(budget.AcquireOrWait(60, [] {}), 0u);
  EXPECT_EQ(budget.AcquireOrWait(30, [] {}), 0u);
  budget.Release(60);
  EXPECT_FALSE(budget.IdleAfterRelease(&mark)) << "30 bytes still in flight";
  budget.Release(30);
  EXPECT_TRUE(budget.IdleAfterRelease(&mark));
  EXPECT_FALSE(budget.IdleAfterRelease(&mark)) << "the same burst again";
  EXPECT_EQ(budget.AcquireOrWait(10, [] {}), 0u);
  budget.Release(10);
  EXPECT_TRUE(budget.IdleAfterRelease(&mark));
}

}  // namespace
}  // namespace dcasgd
