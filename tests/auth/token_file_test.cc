// The token file's format and the role table (auth/token_file.h, roles.h).
#include "auth/token_file.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "auth/authorizer.h"
#include "auth/roles.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dcasgd::auth {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(TokenTable, FindsEachCallerByToken) {
  absl::StatusOr<TokenTable> table = TokenTable::Parse(
      "# comment\n\n  reader-token-0123456789 reader dashboards\n"
      "worker-token-0123456789\tworker\nadmin-token-01234567890 admin ops \n");
  ASSERT_TRUE(table.ok()) << table.status();
  EXPECT_EQ(table->size(), 3u);
  const Caller* reader = table->Find("reader-token-0123456789");
  ASSERT_NE(reader, nullptr);
  EXPECT_EQ(reader->role, Role::kReader);
  EXPECT_EQ(reader->name, "dashboards");
  const Caller* worker = table->Find("worker-token-0123456789");
  ASSERT_NE(worker, nullptr);
  EXPECT_EQ(worker->role, Role::kWorker);
  EXPECT_EQ(worker->name, "worker");  // the role when no name is given
  EXPECT_EQ(table->Find("admin-token-01234567890")->name, "ops");
  EXPECT_EQ(table->Find("reader-token-012345678"), nullptr);  // a prefix is not the token
  EXPECT_EQ(table->Find(""), nullptr);
}

TEST(TokenTable, EmptyFileHasNoCallers) {
  absl::StatusOr<TokenTable> table = TokenTable::Parse("");
  ASSERT_TRUE(table.ok());
  EXPECT_EQ(table->size(), 0u);
}

TEST(TokenTable, RejectsBadLinesNamingTheLineButNotTheToken) {
  struct Case {
    std::string text;
    std::string why;
  };
  for (const Case& c : {
           Case{"short-token reader\n", "line 1: a token has 11 characters"},
           Case{"\nlong-enough-token-123 superuser\n", "line 2: unknown role 'superuser'"},
           Case{"long-enough-token-123\n", "has 1 fields"},
           Case{"long-enough-token-123 reader a b\n", "has 4 fields"},
           Case{"long-enough-token-123 reader\nlong-enough-token-123 admin\n",
                "line 2: repeats the token"},
           Case{"long-enough-token-\x01\x02 reader\n", "visible ASCII"},
           Case{absl::StrCat("long-enough-token-123 reader ", std::string(200, 'n'), "\n"),
                "name is longer"},
       }) {
    absl::StatusOr<TokenTable> table = TokenTable::Parse(c.text);
    ASSERT_FALSE(table.ok()) << c.text;
    EXPECT_EQ(table.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(table.status().message()), HasSubstr(c.why));
    EXPECT_THAT(std::string(table.status().message()), Not(HasSubstr("long-enough-token")));
  }
}

TEST(TokenTable, RejectsAFileAboveTheBound) {
  const std::string text(kMaxTokenFileBytes + 1, '#');
  EXPECT_EQ(TokenTable::Parse(text).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(TokenDigest, IsSha256) {
  // SHA-256("abc"), FIPS 180-2 appendix B.1.
  const std::string digest = TokenDigest("abc");
  ASSERT_EQ(digest.size(), 32u);
  EXPECT_EQ(static_cast<unsigned char>(digest[0]), 0xbau);
  EXPECT_EQ(static_cast<unsigned char>(digest[31]), 0xadu);
}

TEST(Roles, EachRoleIncludesTheOneBefore) {
  EXPECT_TRUE(RoleAllows(Role::kReader, Action::kPullReadOnly));
  EXPECT_TRUE(RoleAllows(Role::kReader, Action::kGetStatus));
  EXPECT_TRUE(RoleAllows(Role::kReader, Action::kGetJobStatus));
  EXPECT_FALSE(RoleAllows(Role::kReader, Action::kPullAsWorker));
  EXPECT_FALSE(RoleAllows(Role::kReader, Action::kJoin));
  EXPECT_FALSE(RoleAllows(Role::kReader, Action::kDeclareTensors));
  EXPECT_TRUE(RoleAllows(Role::kWorker, Action::kPushPull));
  EXPECT_TRUE(RoleAllows(Role::kWorker, Action::kAcquireDataShard));
  EXPECT_TRUE(RoleAllows(Role::kWorker, Action::kGetStatus));
  EXPECT_FALSE(RoleAllows(Role::kWorker, Action::kCheckpoint));
  EXPECT_TRUE(RoleAllows(Role::kAdmin, Action::kCheckpoint));
  EXPECT_TRUE(RoleAllows(Role::kAdmin, Action::kJoin));
}

TEST(Roles, ReplicationStandsOutsideTheChain) {
  // The members' role: the stream and the witness's Claim, SetPaired and
  // GetRegister, nothing a worker or a reader does.
  for (Action action : {Action::kReplicate, Action::kWitnessClaim, Action::kWitnessSetPaired,
                        Action::kWitnessGetRegister}) {
    EXPECT_TRUE(RoleAllows(Role::kReplication, action)) << ActionName(action);
    EXPECT_TRUE(RoleAllows(Role::kAdmin, action)) << ActionName(action);
    EXPECT_FALSE(RoleAllows(Role::kWorker, action)) << ActionName(action);
    EXPECT_FALSE(RoleAllows(Role::kReader, action)) << ActionName(action);
  }
  for (Action action : {Action::kPullReadOnly, Action::kGetStatus, Action::kJoin, Action::kPush,
                        Action::kAcquireDataShard, Action::kCheckpoint}) {
    EXPECT_FALSE(RoleAllows(Role::kReplication, action)) << ActionName(action);
  }
  // Force overrides the witness's rule: an operator's act, admin only.
  EXPECT_FALSE(RoleAllows(Role::kReplication, Action::kWitnessForce));
  EXPECT_FALSE(RoleAllows(Role::kWorker, Action::kWitnessForce));
  EXPECT_TRUE(RoleAllows(Role::kAdmin, Action::kWitnessForce));
}

TEST(Roles, DeniedReplicationCallSaysAdminWouldDo) {
  const absl::Status denied =
      Authorizer::Check(Caller{Role::kWorker, "worker-1"}, Action::kWitnessClaim);
  EXPECT_EQ(denied.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(std::string(denied.message()), HasSubstr("needs role replication or admin"));
  EXPECT_TRUE(Authorizer::Check(Caller{Role::kReplication, "ps-1"}, Action::kWitnessClaim).ok());
}

TEST(TokenTable, ReadsTheReplicationRole) {
  absl::StatusOr<TokenTable> table =
      TokenTable::Parse("replication-token-0123 replication shards\n");
  ASSERT_TRUE(table.ok()) << table.status();
  EXPECT_EQ(table->Find("replication-token-0123")->role, Role::kReplication);
}

TEST(CertRoles, ParsesIdentityRolePairs) {
  auto roles = ParseCertRoles(" worker-1=worker , dash.example.com=reader");
  ASSERT_TRUE(roles.ok()) << roles.status();
  EXPECT_EQ(roles->size(), 2u);
  EXPECT_EQ(roles->at("worker-1"), Role::kWorker);
  EXPECT_EQ(roles->at("dash.example.com"), Role::kReader);
  EXPECT_TRUE(ParseCertRoles("")->empty());
  EXPECT_THAT(std::string(ParseCertRoles("worker-1").status().message()),
              HasSubstr("not identity=role"));
  EXPECT_THAT(std::string(ParseCertRoles("x=root").status().message()),
              HasSubstr("unknown role 'root'"));
}

}  // namespace
}  // namespace dcasgd::auth
