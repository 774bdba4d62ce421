#include "core/data_coordinator.h"

#include <set>
#include <utility>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dcasgd {
namespace {

DataLease MustLease(absl::StatusOr<AcquireResult> r) {
  EXPECT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(std::holds_alternative<DataLease>(*r));
  return std::get<DataLease>(*r);
}

TEST(DataCoordinator, EveryEpochCoversEveryShardOnce) {
  ManualClock clock;
  DataCoordinator c(absl::Seconds(10), &clock);
  std::map<uint32_t, std::multiset<uint32_t>> seen;
  for (int i = 0; i < 3 * 5; ++i) {
    DataLease l = MustLease(c.Acquire(i % 2 ? "a" : "b", 5, 3));
    seen[l.epoch].insert(l.data_shard);
    ASSERT_TRUE(c.Complete(l.lease_id).ok());
  }
  for (uint32_t e = 0; e < 3; ++e) {
    EXPECT_EQ(seen[e], (std::multiset<uint32_t>{0, 1, 2, 3, 4})) << "epoch " << e;
  }
  auto done = c.Acquire("a", 5, 3);
  ASSERT_TRUE(done.ok());
  EXPECT_TRUE(std::holds_alternative<JobDone>(*done));
  EXPECT_TRUE(c.Progress().done);
  EXPECT_EQ(c.Progress().current_epoch, 3u);
}

TEST(DataCoordinator, ExpiredLeaseIsReissuedFirst) {
  ManualClock clock;
  DataCoordinator c(absl::Seconds(10), &clock);
  DataLease dead = MustLease(c.Acquire("dies", 3, 1));
  DataLease alive = MustLease(c.Acquire("lives", 3, 1));
  clock.Advance(absl::Seconds(6));
  ASSERT_TRUE(c.Renew(alive.lease_id).ok());
  clock.Advance(absl::Seconds(6));  // dead's deadline passed, alive renewed
  DataLease again = MustLease(c.Acquire("lives", 3, 1));
  EXPECT_EQ(again.data_shard, dead.data_shard);
  EXPECT_EQ(c.Complete(dead.lease_id).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(c.Renew(dead.lease_id).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(c.Complete(alive.lease_id).ok());
  EXPECT_TRUE(c.Complete(again.lease_id).ok());
  DataLease last = MustLease(c.Acquire("lives", 3, 1));
  EXPECT_TRUE(c.Complete(last.lease_id).ok());
  JobProgress p = c.Progress();
  EXPECT_TRUE(p.done);
  EXPECT_EQ(p.reissued, 1u);
  EXPECT_EQ(p.completed, 3u);
}

TEST(DataCoordinator, RetryLaterWhileTheLastLeasesAreOut) {
  ManualClock clock;
  DataCoordinator c(absl::Seconds(2), &clock);
  DataLease only = MustLease(c.Acquire("a", 1, 1));
  auto r = c.Acquire("b", 1, 1);
  ASSERT_TRUE(r.ok());
  ASSERT_TRUE(std::holds_alternative<RetryLater>(*r));
  EXPECT_GT(std::get<RetryLater>(*r).after, absl::ZeroDuration());
  clock.Advance(absl::Seconds(3));
  DataLease taken_over = MustLease(c.Acquire("b", 1, 1));
  EXPECT_EQ(taken_over.data_shard, only.data_shard);
}

TEST(DataCoordinator, JobIsFixedByTheFirstCall) {
  ManualClock clock;
  DataCoordinator c(absl::Seconds(2), &clock);
  EXPECT_EQ(c.Acquire("a", 0, 1).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(c.Acquire("", 1, 1).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(c.Progress().configured);
  MustLease(c.Acquire("a", 4, 2));
  auto other = c.Acquire("b", 5, 2);
  EXPECT_EQ(other.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(other.status().message(), ::testing::HasSubstr("4 data shards x 2 epochs"));
}

TEST(DataCoordinator, ProgressSurvivesARestart) {
  ManualClock clock;
  DataCoordinator before(absl::Seconds(10), &clock);
  EXPECT_TRUE(
      DataCoordinator(absl::Seconds(1), &clock).RestoreProgress(before.SerializeProgress()).ok())
      << "an unconfigured coordinator round-trips";
  std::set<std::pair<uint32_t, uint32_t>> done;
  for (int i = 0; i < 4; ++i) {
    DataLease l = MustLease(before.Acquire("a", 3, 2));
    ASSERT_TRUE(before.Complete(l.lease_id).ok());
    done.insert({l.epoch, l.data_shard});
  }
  DataLease out = MustLease(before.Acquire("a", 3, 2));  // leased, not done
  const uint64_t generation = before.generation();
  const std::string saved = before.SerializeProgress();

  DataCoordinator after(absl::Seconds(10), &clock);
  ASSERT_TRUE(after.RestoreProgress(saved).ok());
  JobProgress p = after.Progress();
  EXPECT_TRUE(p.configured);
  EXPECT_EQ(p.completed, 4u);
  EXPECT_EQ(p.leased, 0u) << "leases do not survive; their items are pending again";
  EXPECT_EQ(p.current_epoch, 1u);
  EXPECT_EQ(after.Acquire("a", 4, 2).status().code(), absl::StatusCode::kFailedPrecondition)
      << "the restored job keeps its shape";
  // The rest of the job hands out exactly the items not done, the one that
  // was out first.
  DataLease first = MustLease(after.Acquire("b", 3, 2));
  EXPECT_EQ(std::make_pair(first.epoch, first.data_shard),
            std::make_pair(out.epoch, out.data_shard));
  ASSERT_TRUE(after.Complete(first.lease_id).ok());
  done.insert({first.epoch, first.data_shard});
  while (true) {
    auto r = after.Acquire("b", 3, 2);
    ASSERT_TRUE(r.ok());
    if (std::holds_alternative<JobDone>(*r)) break;
    DataLease l = std::get<DataLease>(*r);
    EXPECT_TRUE(done.insert({l.epoch, l.data_shard}).second) << "item handed out twice";
    ASSERT_TRUE(after.Complete(l.lease_id).ok());
  }
  EXPECT_EQ(done.size(), 6u);
  EXPECT_GT(after.generation(), 0u);
  EXPECT_GT(generation, 0u);
}

TEST(DataCoordinator, MalformedProgressIsDataLossAndChangesNothing) {
  ManualClock clock;
  DataCoordinator c(absl::Seconds(10), &clock);
  MustLease(c.Acquire("a", 2, 1));
  for (const char* text :
       {"", "garbage", "dcasgd-data-coordinator 1\njob 2 1 0\n",
        "dcasgd-data-coordinator 1\njob 2 1 0\nepoch 0 1\n",
        "dcasgd-data-coordinator 1\njob 2 1 0\nepoch 0 1x\n", "dcasgd-data-coordinator 2\n"}) {
    EXPECT_EQ(c.RestoreProgress(text).code(), absl::StatusCode::kDataLoss) << text;
  }
  EXPECT_EQ(c.Progress().leased, 1u);
}

// A job beyond the limits is refused before anything is fixed or allocated:
// the coordinator stays unconfigured and works for the next, valid job.
TEST(DataCoordinator, HugeJobsAreRejectedAndLeaveNothingBehind) {
  ManualClock clock;
  DataCoordinator c(absl::Seconds(10), &clock);
  for (auto [shards, epochs] : {std::pair<uint32_t, uint32_t>{4000000000u, 4000000000u},
                                {DataCoordinator::kMaxDataShards + 1, 1},
                                {1, DataCoordinator::kMaxEpochs + 1},
                                {1u << 12, 1u << 12}}) {  // each fine alone, 2^24 items together
    auto r = c.Acquire("a", shards, epochs);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << shards << " x " << epochs;
    EXPECT_THAT(r.status().message(), ::testing::HasSubstr("too large"));
    EXPECT_FALSE(c.Progress().configured);
  }
  // The largest job allowed is held as bits, not as a list of items.
  DataLease first = MustLease(c.Acquire("a", DataCoordinator::kMaxDataShards, 4));
  EXPECT_EQ(first.epoch, 0u);
  EXPECT_EQ(first.data_shard, 0u);
  EXPECT_EQ(c.Progress().num_data_shards, DataCoordinator::kMaxDataShards);
  EXPECT_LT(c.SerializeProgress().size(), size_t{5} << 20);
  for (const char* text : {"dcasgd-data-coordinator 1\njob 4194305 1 0\nepoch 0 1\n",
                           "dcasgd-data-coordinator 1\njob 1 65537 0\n"}) {
    EXPECT_EQ(c.RestoreProgress(text).code(), absl::StatusCode::kDataLoss) << text;
  }
}

TEST(DataCoordinator, LeasesOutAtOnceAreBounded) {
  ManualClock clock;
  DataCoordinator c(absl::Seconds(10), &clock);
  for (size_t i = 0; i < DataCoordinator::kMaxLeases; ++i) {
    auto r = c.Acquire("greedy", 1u << 17, 1);
    ASSERT_TRUE(r.ok() && std::holds_alternative<DataLease>(*r)) << i;
  }
  auto refused = c.Acquire("greedy", 1u << 17, 1);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  // Expired leases free their slots (and go back to the front of the queue).
  clock.Advance(absl::Seconds(11));
  DataLease again = MustLease(c.Acquire("honest", 1u << 17, 1));
  EXPECT_EQ(again.data_shard, 0u);
}

}  // namespace
}  // namespace dcasgd
