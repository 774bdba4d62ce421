#include "base/backoff.h"

#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"

namespace dcasgd {
namespace {

TEST(Backoff, DoublesUpToTheCapWithoutJitter) {
  Backoff backoff({absl::Milliseconds(50), absl::Milliseconds(300), 2.0, 0.0});
  EXPECT_EQ(backoff.Next(), absl::Milliseconds(50));
  EXPECT_EQ(backoff.Next(), absl::Milliseconds(100));
  EXPECT_EQ(backoff.Next(), absl::Milliseconds(200));
  EXPECT_EQ(backoff.Next(), absl::Milliseconds(300));
  EXPECT_EQ(backoff.Next(), absl::Milliseconds(300));
}

TEST(Backoff, InitialAboveTheCapIsCapped) {
  Backoff backoff({absl::Seconds(5), absl::Seconds(1), 2.0, 0.0});
  EXPECT_EQ(backoff.Next(), absl::Seconds(1));
  EXPECT_EQ(backoff.Next(), absl::Seconds(1));
}

TEST(Backoff, JitterStaysWithinItsBandAndUnderTheCap) {
  const double jitter = 0.25;
  Backoff backoff({absl::Milliseconds(100), absl::Milliseconds(1000), 2.0, jitter}, /*seed=*/7);
  absl::Duration base = absl::Milliseconds(100);
  bool varied = false;
  for (int n = 0; n < 12; ++n) {
    const absl::Duration delay = backoff.Next();
    EXPECT_GE(delay, base * (1 - jitter)) << "attempt " << n;
    EXPECT_LE(delay, std::min(base * (1 + jitter), absl::Milliseconds(1000))) << "attempt " << n;
    varied = varied || delay != base;
    base = std::min(base * 2, absl::Milliseconds(1000));
  }
  EXPECT_TRUE(varied);
}

TEST(Backoff, SameSeedSameSequenceOtherSeedDiffers) {
  const Backoff::Options options{absl::Milliseconds(10), absl::Seconds(10), 2.0, 0.5};
  Backoff a(options, 1), b(options, 1), c(options, 2);
  bool differs = false;
  for (int n = 0; n < 8; ++n) {
    const absl::Duration da = a.Next();
    EXPECT_EQ(da, b.Next());
    differs = differs || da != c.Next();
  }
  EXPECT_TRUE(differs);
}

// A policy that retries at once (no real waiting in the tests below).
RetryPolicy Quick(absl::Duration patience = absl::Minutes(1)) {
  return RetryPolicy{{absl::ZeroDuration(), absl::ZeroDuration(), 2.0, 0.0}, patience};
}

TEST(RetryWithBackoff, RetriesTransientErrorsUntilSuccess) {
  std::vector<absl::Status> answers = {absl::UnavailableError("down"),
                                       absl::DeadlineExceededError("hung"),
                                       absl::CancelledError("shutting down"), absl::OkStatus()};
  size_t calls = 0;
  std::vector<std::string> logged;
  const absl::Status s = RetryWithBackoff(
      Quick(), [&] { return answers[calls++]; }, IsTransient,
      [&](const absl::Status& e) { logged.emplace_back(e.message()); });
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_EQ(calls, 4u);
  EXPECT_EQ(logged, (std::vector<std::string>{"down", "hung", "shutting down"}));
}

TEST(RetryWithBackoff, ReturnsAnErrorItMayNotRetryAtOnce) {
  int calls = 0;
  const absl::Status s = RetryWithBackoff(
      Quick(),
      [&] {
        ++calls;
        return absl::InvalidArgumentError("bad request");
      },
      IsTransient, [](const absl::Status&) { ADD_FAILURE() << "no retry expected"; });
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(calls, 1);
}

TEST(RetryWithBackoff, GivesUpAfterItsPatience) {
  int calls = 0;
  const absl::Status s = RetryWithBackoff(
      RetryPolicy{{absl::Milliseconds(1), absl::Milliseconds(1), 2.0, 0.0}, absl::Milliseconds(30)},
      [&] {
        ++calls;
        return absl::UnavailableError("down");
      },
      IsTransient, [](const absl::Status&) {});
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_GT(calls, 1);
  EXPECT_LT(calls, 1000) << "each attempt waits at least a millisecond";
}

TEST(RetryWithBackoff, StopEndsTheWaitWithTheLastError) {
  absl::Notification stop;
  int calls = 0;
  std::thread stopper([&] { stop.Notify(); });
  const absl::Status s = RetryWithBackoff(
      RetryPolicy{{absl::Hours(1), absl::Hours(1), 2.0, 0.0}, absl::Hours(2)},
      [&] {
        ++calls;
        return absl::UnavailableError("down");
      },
      IsTransient, [](const absl::Status&) {}, &stop);
  stopper.join();
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(calls, 1) << "the hour-long wait ended when stop was notified";
}

TEST(IsTransient, OnlyTheCodesOfAPeerRestartingOrHung) {
  EXPECT_TRUE(IsTransient(absl::UnavailableError("")));
  EXPECT_TRUE(IsTransient(absl::CancelledError("")));
  EXPECT_TRUE(IsTransient(absl::DeadlineExceededError("")));
  EXPECT_FALSE(IsTransient(absl::OkStatus()));
  EXPECT_FALSE(IsTransient(absl::FailedPreconditionError("")));
  EXPECT_FALSE(IsTransient(absl::AbortedError("")));
  EXPECT_FALSE(IsTransient(absl::InternalError("")));
}

}  // namespace
}  // namespace dcasgd
