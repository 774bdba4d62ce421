#include "client/retry.h"

#include "gtest/gtest.h"

namespace dcasgd {
namespace client {
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

}  // namespace
}  // namespace client
}  // namespace dcasgd
