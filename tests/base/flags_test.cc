#include "base/flags.h"

#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

ABSL_FLAG(std::string, color, "red", "a color");
ABSL_FLAG(int64_t, count, 3, "how many");
ABSL_FLAG(bool, loud, false, "shout");

namespace dcasgd {
namespace {

using ::testing::HasSubstr;

EnvLookup Env(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](const std::string& name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

const FlagSet& Flags() {
  static const FlagSet* flags = new FlagSet("flags_test", __FILE__);
  return *flags;
}

absl::StatusOr<std::set<std::string>> Parse(std::vector<std::string> args,
                                            std::map<std::string, std::string> env = {}) {
  return Flags().Parse(args, Env(std::move(env)));
}

TEST(FlagSet, HoldsExactlyTheFlagsOfItsFile) {
  const std::string usage = Flags().Usage("summary line");
  EXPECT_THAT(usage, HasSubstr("summary line"));
  EXPECT_THAT(usage, HasSubstr("--color (DCASGD_COLOR)"));
  EXPECT_THAT(usage, HasSubstr("--count (DCASGD_COUNT)"));
  EXPECT_THAT(usage, HasSubstr("--loud (DCASGD_LOUD)"));
  // Flags of other files (gtest's, absl's own) are not part of it.
  EXPECT_THAT(usage, ::testing::Not(HasSubstr("--flagfile")));
  EXPECT_EQ(Parse({"--flagfile=x"}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(FlagSet, EveryFormOfFlag) {
  absl::StatusOr<std::set<std::string>> given = Parse({"--color=blue", "-count", "7", "--loud"});
  ASSERT_TRUE(given.ok()) << given.status();
  EXPECT_EQ(*given, (std::set<std::string>{"color", "count", "loud"}));
  EXPECT_EQ(absl::GetFlag(FLAGS_color), "blue");
  EXPECT_EQ(absl::GetFlag(FLAGS_count), 7);
  EXPECT_TRUE(absl::GetFlag(FLAGS_loud));
  ASSERT_TRUE(Parse({"--noloud"}, {{"DCASGD_LOUD", "true"}}).ok());
  EXPECT_FALSE(absl::GetFlag(FLAGS_loud));
}

TEST(FlagSet, EnvironmentFillsInAndTheCommandLineWins) {
  absl::StatusOr<std::set<std::string>> given =
      Parse({"--count=9"}, {{"DCASGD_COUNT", "1"}, {"DCASGD_COLOR", "green"}});
  ASSERT_TRUE(given.ok()) << given.status();
  EXPECT_EQ(*given, (std::set<std::string>{"color", "count"}));
  EXPECT_EQ(absl::GetFlag(FLAGS_count), 9);
  EXPECT_EQ(absl::GetFlag(FLAGS_color), "green");
}

TEST(FlagSet, RepeatedParsesStartFromTheDefaults) {
  ASSERT_TRUE(Parse({"--color=blue", "--count=5"}).ok());
  absl::StatusOr<std::set<std::string>> given = Parse({});
  ASSERT_TRUE(given.ok()) << given.status();
  EXPECT_TRUE(given->empty());
  EXPECT_EQ(absl::GetFlag(FLAGS_color), "red");
  EXPECT_EQ(absl::GetFlag(FLAGS_count), 3);
}

TEST(FlagSet, ErrorsNameTheCulprit) {
  struct Case {
    std::vector<std::string> args;
    std::map<std::string, std::string> env;
    std::string message;
  };
  for (const Case& c : std::vector<Case>{{{"--nothing=1"}, {}, "unknown flag --nothing"},
                                         {{"stray"}, {}, "unexpected argument 'stray'"},
                                         {{"--count=many"}, {}, "--count='many'"},
                                         {{}, {{"DCASGD_COUNT", "x"}}, "DCASGD_COUNT"},
                                         {{"--count"}, {}, "needs a value"},
                                         {{"--nocount"}, {}, "unknown flag --nocount"}}) {
    absl::StatusOr<std::set<std::string>> given = Parse(c.args, c.env);
    ASSERT_EQ(given.status().code(), absl::StatusCode::kInvalidArgument) << c.message;
    EXPECT_THAT(given.status().message(), HasSubstr(c.message));
  }
}

TEST(FlagSet, HelpIsAskedForByItsUsualSpellings) {
  EXPECT_TRUE(WantsHelp({"--help"}));
  EXPECT_TRUE(WantsHelp({"--lr=1", "-help"}));
  EXPECT_TRUE(WantsHelp({"--helpfull"}));
  EXPECT_FALSE(WantsHelp({"--helper=1"}));
  EXPECT_FALSE(WantsHelp({}));
}

}  // namespace
}  // namespace dcasgd
