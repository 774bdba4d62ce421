// client::MemberCursor: which member of a shard calls go to.

#include "clients/cpp/member_cursor.h"

#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace dcasgd {
namespace client {
namespace {

TEST(MemberCursor, OneMemberNeverMoves) {
  MemberCursor cursor(1);
  cursor.MoveOn(0);
  EXPECT_EQ(cursor.current(), 0u);
}

TEST(MemberCursor, AFailureMovesToTheOtherMemberAndBack) {
  MemberCursor cursor(2);
  EXPECT_EQ(cursor.current(), 0u);
  cursor.MoveOn(0);
  EXPECT_EQ(cursor.current(), 1u);
  cursor.MoveOn(1);
  EXPECT_EQ(cursor.current(), 0u);
}

TEST(MemberCursor, AFailureAtAMemberNoLongerCurrentChangesNothing) {
  MemberCursor cursor(2);
  cursor.MoveOn(0);  // now at 1
  cursor.MoveOn(0);  // a late report of the same failure
  EXPECT_EQ(cursor.current(), 1u);
}

// Many calls that failed at member 0 at once move the cursor once, not once
// each (which would bounce it between the members).
TEST(MemberCursor, ConcurrentFailuresAtOneMemberMoveOnce) {
  for (int round = 0; round < 50; ++round) {
    MemberCursor cursor(2);
    std::vector<std::thread> calls;
    for (int t = 0; t < 8; ++t) calls.emplace_back([&] { cursor.MoveOn(0); });
    for (std::thread& t : calls) t.join();
    ASSERT_EQ(cursor.current(), 1u) << "round " << round;
  }
}

}  // namespace
}  // namespace client
}  // namespace dcasgd
