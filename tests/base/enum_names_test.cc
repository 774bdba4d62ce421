#include "base/enum_names.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dcasgd {
namespace {

using ::testing::HasSubstr;

enum class Color { kRed, kGreen, kBlue };
constexpr EnumName<Color> kColorNames[] = {
    {Color::kRed, "red"},
    {Color::kGreen, "green"},
    {Color::kBlue, "blue"},
    {Color::kRed, "crimson"},  // an alias
};

TEST(EnumNames, EveryCanonicalNameRoundTrips) {
  for (Color c : {Color::kRed, Color::kGreen, Color::kBlue}) {
    const absl::StatusOr<Color> parsed = ParseEnum("color", kColorNames, NameOf(kColorNames, c));
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(*parsed, c);
  }
}

TEST(EnumNames, AnAliasParsesButTheCanonicalNameIsShown) {
  EXPECT_EQ(ParseEnum("color", kColorNames, "crimson").value(), Color::kRed);
  EXPECT_EQ(std::string(NameOf(kColorNames, Color::kRed)), "red");
}

TEST(EnumNames, AnUnknownNameListsTheCanonicalOnes) {
  for (const char* bad : {"", "Red", "purple", "red "}) {
    const absl::StatusOr<Color> parsed = ParseEnum("color", kColorNames, bad);
    ASSERT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument) << "'" << bad << "'";
    EXPECT_THAT(parsed.status().message(), HasSubstr("unknown color"));
    EXPECT_THAT(parsed.status().message(), HasSubstr("red | green | blue"));
    EXPECT_THAT(parsed.status().message(), ::testing::Not(HasSubstr("crimson")));
  }
}

TEST(EnumNames, AValueWithoutARowIsAQuestionMark) {
  EXPECT_EQ(std::string(NameOf(kColorNames, static_cast<Color>(7))), "?");
}

}  // namespace
}  // namespace dcasgd
