#include "coordinator/schedule_file.h"

#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>
#include <variant>

#include "base/file.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dcasgd {
namespace {

using ::testing::HasSubstr;

class ScheduleFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char templ[] = "/tmp/dcasgd_schedule_file_test.XXXXXX";
    ASSERT_NE(mkdtemp(templ), nullptr);
    dir_ = templ;
    path_ = dir_ + "/" + kScheduleFileName;
  }
  void TearDown() override { std::system(("rm -rf " + dir_).c_str()); }

  std::string dir_;
  std::string path_;
  ManualClock clock_;
};

DataLease MustLease(absl::StatusOr<AcquireResult> r) {
  EXPECT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r.ok() && std::holds_alternative<DataLease>(*r));
  return r.ok() && std::holds_alternative<DataLease>(*r) ? std::get<DataLease>(*r) : DataLease{};
}

TEST_F(ScheduleFileTest, WithoutADirectoryNothingIsWritten) {
  absl::StatusOr<OpenedCoordinator> opened = OpenDataCoordinator(absl::Seconds(10), &clock_, "");
  ASSERT_TRUE(opened.ok()) << opened.status();
  MustLease(opened->coordinator->Acquire("w", 2, 1));
  EXPECT_TRUE(opened->restored.empty());
  EXPECT_EQ(access(path_.c_str(), F_OK), -1);
}

TEST_F(ScheduleFileTest, EveryChangeIsSavedAndARestartRestoresIt) {
  DataLease out_lease;
  {
    absl::StatusOr<OpenedCoordinator> opened =
        OpenDataCoordinator(absl::Seconds(10), &clock_, dir_);
    ASSERT_TRUE(opened.ok()) << opened.status();
    EXPECT_TRUE(opened->restored.empty()) << "no file yet";
    DataCoordinator& c = *opened->coordinator;
    const DataLease first = MustLease(c.Acquire("a", 3, 2));
    ASSERT_TRUE(c.Complete(first.lease_id, first.secret).ok());
    out_lease = MustLease(c.Acquire("b", 3, 2));
    // Saved before the lease took effect: the file already holds it.
    absl::StatusOr<std::string> saved = ReadWholeFile(path_);
    ASSERT_TRUE(saved.ok()) << saved.status();
    EXPECT_EQ(*saved, c.SerializeProgress());
  }
  absl::StatusOr<OpenedCoordinator> reopened =
      OpenDataCoordinator(absl::Seconds(10), &clock_, dir_);
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  EXPECT_EQ(reopened->restored, "data schedule 1 of 6 data shards done, 1 leased");
  const JobProgress p = reopened->coordinator->Progress();
  EXPECT_EQ(p.completed, 1u);
  EXPECT_EQ(p.leased, 1u);
  // The lease out at the restart is still its holder's, and only its
  // holder's: the secret from before the restart works, none other does.
  EXPECT_EQ(reopened->coordinator->Complete(out_lease.lease_id, "").code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_TRUE(reopened->coordinator->Complete(out_lease.lease_id, out_lease.secret).ok());
}

TEST_F(ScheduleFileTest, ACorruptFileStopsTheStartNamingIt) {
  std::ofstream(path_) << "not a schedule\n";
  absl::StatusOr<OpenedCoordinator> opened = OpenDataCoordinator(absl::Seconds(10), &clock_, dir_);
  ASSERT_FALSE(opened.ok());
  EXPECT_EQ(opened.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(opened.status().message(), HasSubstr(path_));
  absl::StatusOr<std::string> kept = ReadWholeFile(path_);
  ASSERT_TRUE(kept.ok());
  EXPECT_EQ(*kept, "not a schedule\n") << "the corrupt file is left for the operator";
}

TEST_F(ScheduleFileTest, AFailedSaveGrantsNoLease) {
  absl::StatusOr<OpenedCoordinator> opened = OpenDataCoordinator(absl::Seconds(10), &clock_, dir_);
  ASSERT_TRUE(opened.ok()) << opened.status();
  // The directory disappears (a lost volume): the save fails, nothing is
  // granted, and the coordinator says so with UNAVAILABLE (retry).
  std::system(("rm -rf " + dir_).c_str());
  absl::StatusOr<AcquireResult> r = opened->coordinator->Acquire("a", 2, 1);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
  EXPECT_EQ(opened->coordinator->Progress().leased, 0u);
}

}  // namespace
}  // namespace dcasgd
