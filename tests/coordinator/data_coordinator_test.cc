#include "coordinator/data_coordinator.h"

#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "base/secret.h"
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
    ASSERT_TRUE(c.Complete(l.lease_id, l.secret).ok());
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
  ASSERT_TRUE(c.Renew(alive.lease_id, alive.secret).ok());
  clock.Advance(absl::Seconds(6));  // dead's deadline passed, alive renewed
  DataLease again = MustLease(c.Acquire("lives", 3, 1));
  EXPECT_EQ(again.data_shard, dead.data_shard);
  EXPECT_EQ(c.Complete(dead.lease_id, dead.secret).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(c.Renew(dead.lease_id, dead.secret).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(c.Complete(alive.lease_id, alive.secret).ok());
  EXPECT_TRUE(c.Complete(again.lease_id, again.secret).ok());
  DataLease last = MustLease(c.Acquire("lives", 3, 1));
  EXPECT_TRUE(c.Complete(last.lease_id, last.secret).ok());
  JobProgress p = c.Progress();
  EXPECT_TRUE(p.done);
  EXPECT_EQ(p.reissued, 1u);
  EXPECT_EQ(p.completed, 3u);
}

// A replica promoted to serve shard 0 holds the deadlines of the last
// schedule change it applied; RenewAllLeases gives every lease out a fresh
// one, so leases whose holders renewed with the old primary do not expire
// at once on the new one.
TEST(DataCoordinator, RenewAllLeasesGivesEveryLeaseAFreshDeadline) {
  ManualClock clock;
  DataCoordinator c(absl::Seconds(10), &clock);
  DataLease first = MustLease(c.Acquire("a", 4, 1));
  clock.Advance(absl::Seconds(8));
  DataLease second = MustLease(c.Acquire("b", 4, 1));
  clock.Advance(absl::Seconds(1));
  c.RenewAllLeases();
  // Past first's old deadline (t=10), within the fresh one (t=19).
  clock.Advance(absl::Seconds(9));
  EXPECT_TRUE(c.Renew(first.lease_id, first.secret).ok());
  EXPECT_TRUE(c.Complete(second.lease_id, second.secret).ok());
  EXPECT_EQ(c.Progress().reissued, 0u);
  // Fresh deadlines still expire: first was renewed at t=18, so by t=29 it
  // is reissued.
  clock.Advance(absl::Seconds(11));
  DataLease again = MustLease(c.Acquire("b", 4, 1));
  EXPECT_EQ(again.data_shard, first.data_shard);
  EXPECT_EQ(c.Progress().reissued, 1u);
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

TEST(DataCoordinator, ProgressAndLeasesSurviveARestart) {
  ManualClock clock;
  DataCoordinator before(absl::Seconds(10), &clock);
  EXPECT_TRUE(
      DataCoordinator(absl::Seconds(1), &clock).RestoreProgress(before.SerializeProgress()).ok())
      << "an unconfigured coordinator round-trips";
  std::set<std::pair<uint32_t, uint32_t>> done;
  for (int i = 0; i < 4; ++i) {
    DataLease l = MustLease(before.Acquire("a", 3, 2));
    ASSERT_TRUE(before.Complete(l.lease_id, l.secret).ok());
    done.insert({l.epoch, l.data_shard});
  }
  // Leased, not done, when shard 0 dies; a worker name with a space and a
  // newline round-trips.
  DataLease out = MustLease(before.Acquire("pod 7\nx", 3, 2));
  const std::string saved = before.SerializeProgress();

  clock.Advance(absl::Seconds(8));
  DataCoordinator after(absl::Seconds(10), &clock);
  ASSERT_TRUE(after.RestoreProgress(saved).ok());
  JobProgress p = after.Progress();
  EXPECT_TRUE(p.configured);
  EXPECT_EQ(p.completed, 4u);
  EXPECT_EQ(p.leased, 1u) << "issue 13: leases out at a crash survive it";
  EXPECT_EQ(p.current_epoch, 1u);
  EXPECT_EQ(after.Acquire("a", 4, 2).status().code(), absl::StatusCode::kFailedPrecondition)
      << "the restored job keeps its shape";
  // The holder renews and completes its lease after the restart (with a
  // fresh deadline: 8 s had passed before the restart).
  clock.Advance(absl::Seconds(5));
  ASSERT_TRUE(after.Renew(out.lease_id, out.secret).ok());
  ASSERT_TRUE(after.Complete(out.lease_id, out.secret).ok());
  done.insert({out.epoch, out.data_shard});
  // The rest of the job hands out exactly the items not done, with new ids.
  while (true) {
    auto r = after.Acquire("b", 3, 2);
    ASSERT_TRUE(r.ok());
    if (std::holds_alternative<JobDone>(*r)) break;
    DataLease l = std::get<DataLease>(*r);
    EXPECT_GT(l.lease_id, out.lease_id) << "lease ids are not reused";
    EXPECT_TRUE(done.insert({l.epoch, l.data_shard}).second) << "item handed out twice";
    ASSERT_TRUE(after.Complete(l.lease_id, l.secret).ok());
  }
  EXPECT_EQ(done.size(), 6u);
  EXPECT_EQ(after.Progress().reissued, 0u);
}

TEST(DataCoordinator, ARestoredLeaseWhoseHolderDiedIsReissued) {
  ManualClock clock;
  DataCoordinator before(absl::Seconds(10), &clock);
  DataLease out = MustLease(before.Acquire("dies", 2, 1));
  DataCoordinator after(absl::Seconds(10), &clock);
  ASSERT_TRUE(after.RestoreProgress(before.SerializeProgress()).ok());
  clock.Advance(absl::Seconds(11));
  DataLease again = MustLease(after.Acquire("b", 2, 1));
  EXPECT_EQ(again.data_shard, out.data_shard);
  EXPECT_EQ(after.Progress().reissued, 1u);
}

TEST(DataCoordinator, ReadsTheFormerFormatWithoutLeases) {
  ManualClock clock;
  DataCoordinator c(absl::Seconds(10), &clock);
  ASSERT_TRUE(c.RestoreProgress("dcasgd-data-coordinator 1\njob 2 1 3\nepoch 0 10\n").ok());
  JobProgress p = c.Progress();
  EXPECT_EQ(p.completed, 1u);
  EXPECT_EQ(p.reissued, 3u);
  DataLease l = MustLease(c.Acquire("a", 2, 1));
  EXPECT_EQ(l.data_shard, 1u);
}

// A save that fails while `failing` is set, recording what was saved.
struct FlakySaver {
  bool failing = false;
  std::vector<std::string> saved;
  DataCoordinator::StateSaver Saver() {
    return [this](const std::string& text) {
      if (failing) return absl::ResourceExhaustedError("No space left on device");
      saved.push_back(text);
      return absl::OkStatus();
    };
  }
};

TEST(DataCoordinator, ALeaseThatCannotBeSavedIsNotGranted) {
  // Issue 13: a full checkpoint volume made AcquireDataShard fail after the
  // lease was granted, orphaning it until it expired.
  ManualClock clock;
  FlakySaver disk;
  disk.failing = true;
  DataCoordinator c(absl::Seconds(10), &clock, disk.Saver());
  auto first = c.Acquire("a", 2, 1);
  EXPECT_EQ(first.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(first.status().message(), ::testing::HasSubstr("No space left on device"));
  JobProgress p = c.Progress();
  EXPECT_FALSE(p.configured) << "nothing changed";
  EXPECT_EQ(p.leased, 0u);
  disk.failing = false;
  DataLease l = MustLease(c.Acquire("a", 2, 1));
  EXPECT_EQ(l.data_shard, 0u) << "the first data shard, not lost";
  ASSERT_EQ(disk.saved.size(), 1u);
  EXPECT_THAT(disk.saved.back(), ::testing::HasSubstr("lease " + std::to_string(l.lease_id)));
  disk.failing = true;
  auto second = c.Acquire("b", 2, 1);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(c.Progress().leased, 1u);
  // A completion that cannot be saved leaves the lease with its worker, and
  // counts as a renewal (the worker is alive while it retries).
  clock.Advance(absl::Seconds(8));
  EXPECT_EQ(c.Complete(l.lease_id, l.secret).code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(c.Progress().completed, 0u);
  clock.Advance(absl::Seconds(8));  // 16 s after the grant, 8 after the attempt
  EXPECT_TRUE(c.Renew(l.lease_id, l.secret).ok()) << "still held";
  disk.failing = false;
  EXPECT_TRUE(c.Complete(l.lease_id, l.secret).ok());
  DataLease next = MustLease(c.Acquire("b", 2, 1));
  EXPECT_EQ(next.data_shard, 1u);
  EXPECT_TRUE(c.Complete(next.lease_id, next.secret).ok());
  EXPECT_TRUE(c.Progress().done);
  // The last save is the whole job, done.
  DataCoordinator restored(absl::Seconds(10), &clock);
  ASSERT_TRUE(restored.RestoreProgress(disk.saved.back()).ok());
  EXPECT_TRUE(restored.Progress().done);
}

TEST(DataCoordinator, MalformedProgressIsDataLossAndChangesNothing) {
  ManualClock clock;
  DataCoordinator c(absl::Seconds(10), &clock);
  MustLease(c.Acquire("a", 2, 1));
  for (const char* text :
       {"", "garbage", "dcasgd-data-coordinator 1\njob 2 1 0\n",
        "dcasgd-data-coordinator 1\njob 2 1 0\nepoch 0 1\n",
        "dcasgd-data-coordinator 1\njob 2 1 0\nepoch 0 1x\n", "dcasgd-data-coordinator 4\n",
        // Format 3: a lease line without a digest, a short one, one not hex.
        "dcasgd-data-coordinator 3\njob 2 1 0 5\nepoch 0 00\nlease 2 0 1 w\n",
        "dcasgd-data-coordinator 3\njob 2 1 0 5\nepoch 0 00\nlease 2 0 1 abcd w\n",
        "dcasgd-data-coordinator 3\njob 2 1 0 5\nepoch 0 00\nlease 2 0 1 "
        "zz00000000000000000000000000000000000000000000000000000000000000 w\n",
        "dcasgd-data-coordinator 2\njob 2 1 0 5\nepoch 0 00\nlease 7 0 0 w\n",
        "dcasgd-data-coordinator 2\njob 2 1 0 5\nepoch 0 10\nlease 2 0 0 w\n",
        "dcasgd-data-coordinator 2\njob 2 1 0 5\nepoch 0 00\nlease 2 0 1 w\nlease 3 0 1 v\n",
        "dcasgd-data-coordinator 2\njob 2 1 0 5\nepoch 0 00\nlease 2 0 1\n"}) {
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

namespace dcasgd {
namespace {

// Lease ids count up, so another worker can guess one: without the lease's
// secret it can neither renew nor complete it, and nothing changes.
TEST(DataCoordinatorSecrets, ALeaseNeedsItsSecret) {
  ManualClock clock;
  DataCoordinator c(absl::Seconds(10), &clock);
  const DataLease mine = MustLease(c.Acquire("a", 2, 1));
  const DataLease theirs = MustLease(c.Acquire("b", 2, 1));
  EXPECT_EQ(mine.secret.size(), kSecretBytes);
  EXPECT_NE(mine.secret, theirs.secret);
  clock.Advance(absl::Seconds(6));
  std::string flipped = mine.secret;
  flipped.back() ^= 1;
  for (const std::string& forged : {std::string(), flipped, theirs.secret}) {
    const absl::Status renewed = c.Renew(mine.lease_id, forged);
    EXPECT_EQ(renewed.code(), absl::StatusCode::kUnauthenticated) << renewed;
    EXPECT_THAT(renewed.message(), ::testing::HasSubstr("data lease"));
    EXPECT_EQ(c.Complete(mine.lease_id, forged).code(), absl::StatusCode::kUnauthenticated);
  }
  EXPECT_EQ(c.Progress().completed, 0u);
  EXPECT_EQ(c.Progress().leased, 2u);
  // The forged renewals did not extend the lease: it expires 10 s after it
  // was granted, and its item goes back to the queue.
  ASSERT_TRUE(c.Renew(theirs.lease_id, theirs.secret).ok());
  clock.Advance(absl::Seconds(5));
  EXPECT_EQ(c.Renew(mine.lease_id, mine.secret).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(c.Progress().reissued, 1u);
  EXPECT_TRUE(c.Complete(theirs.lease_id, theirs.secret).ok());
}

// The saved schedule holds the SHA-256 of each lease's secret, never the
// secret: a restored coordinator accepts the same secret and refuses others.
TEST(DataCoordinatorSecrets, TheSavedStateHoldsADigestThatSurvivesARestart) {
  ManualClock clock;
  DataCoordinator before(absl::Seconds(10), &clock);
  const DataLease out = MustLease(before.Acquire("a", 2, 1));
  const std::string saved = before.SerializeProgress();
  EXPECT_THAT(saved, ::testing::HasSubstr("dcasgd-data-coordinator 3"));
  EXPECT_THAT(saved, ::testing::HasSubstr(absl::BytesToHexString(SecretDigest(out.secret))));
  for (const std::string& leaked : {out.secret, absl::BytesToHexString(out.secret),
                                    absl::CEscape(out.secret), absl::Base64Escape(out.secret)}) {
    EXPECT_THAT(saved, ::testing::Not(::testing::HasSubstr(leaked)));
  }
  DataCoordinator after(absl::Seconds(10), &clock);
  ASSERT_TRUE(after.RestoreProgress(saved).ok());
  EXPECT_EQ(after.Renew(out.lease_id, "guess").code(), absl::StatusCode::kUnauthenticated);
  EXPECT_TRUE(after.Renew(out.lease_id, out.secret).ok());
  EXPECT_TRUE(after.Complete(out.lease_id, out.secret).ok());
}

// A format-2 state kept no secrets, so its leases cannot be checked: their
// items are handed out again (as re-issued), each exactly once.
TEST(DataCoordinatorSecrets, LeasesOfAFormat2StateGoBackToTheQueue) {
  ManualClock clock;
  DataCoordinator c(absl::Seconds(10), &clock);
  ASSERT_TRUE(
      c.RestoreProgress("dcasgd-data-coordinator 2\njob 3 1 0 5\nepoch 0 100\nlease 4 0 2 w\n")
          .ok());
  JobProgress p = c.Progress();
  EXPECT_EQ(p.leased, 0u);
  EXPECT_EQ(p.reissued, 1u);
  EXPECT_EQ(p.completed, 1u);
  std::set<uint32_t> handed;
  for (int i = 0; i < 2; ++i) {
    const DataLease l = MustLease(c.Acquire("a", 3, 1));
    EXPECT_GE(l.lease_id, 5u);
    EXPECT_TRUE(handed.insert(l.data_shard).second);
  }
  EXPECT_EQ(handed, (std::set<uint32_t>{1, 2}));
  auto more = c.Acquire("a", 3, 1);
  ASSERT_TRUE(more.ok());
  EXPECT_TRUE(std::holds_alternative<RetryLater>(*more));
}

}  // namespace
}  // namespace dcasgd
